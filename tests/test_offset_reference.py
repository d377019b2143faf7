"""The reference column of the offset slice encoding (``MappingConfig.offset_reference`` 'column'): exact with
ideal devices and converters, tracks drifted cells (no constant error), round-trips through chip images, and
images written before it existed keep loading with the digital offset removal they were written with."""
from pathlib import Path

import numpy as np
import pytest

from aimc import Tile, load_chip, save_chip
from aimc import mapping as _map
from aimc.chip import ChipImageError, check_tile_state
from aimc.config import (ArrayConfig, CalibrationConfig, InferenceConfig, IOConfig, MappingConfig, OffsetReference,
                         TileConfig)

PERFECT = IOConfig(is_perfect=True)
DATA = Path(__file__).parent / "data"


def quantised(W, bits):
    L = 2 ** (bits - 1) - 1
    a = np.abs(W).max()
    return np.rint(W.astype(np.float64) / a * L) * a / L


def offset_mapping(B=8, b=2, ref="column", **kw):
    return MappingConfig(kind="sliced", slice_encoding="offset", weight_bits=B, bits_per_cell=b,
                         offset_reference=ref, **kw)


@pytest.mark.parametrize("B, b", [(8, 1), (8, 2), (8, 3), (8, 8), (5, 2)])
def test_reference_column_holds_the_offset_digits(B, b):
    """Slice k of the reference column holds digit k of 2^(B-1) in base 2^b (a weight of 0 as stored), so
    sum_k 2^(k b) (G_ref,k - g_min) / (g_max - g_min) (2^b - 1) = 2^(B-1)."""
    m = offset_mapping(B, b, g_min=1.5)
    G = _map.reference_conductances(m, 7)
    assert G.shape == (m.n_slices, 1, 7) and G.dtype == np.float32
    assert np.all(G == G[:, :, :1])
    digits = (G[:, 0, 0].astype(np.float64) - m.g_min) / (m.g_max - m.g_min) * (2 ** b - 1)
    np.testing.assert_allclose(digits, np.rint(digits), atol=1e-5)
    assert sum(2 ** (k * b) * d for k, d in enumerate(np.rint(digits))) == 2 ** (B - 1)
    # the same cells a zero weight gets
    G0, _ = _map.to_conductances(np.array([[0.0, 1.0]], np.float32), m)
    np.testing.assert_array_equal(G0[:, 0, 0], G[:, 0, 0])


@pytest.mark.parametrize("B, b, ib, gmin", [(8, 1, 0, 0.0), (8, 2, 0, 2.0), (8, 4, 8, 0.0), (8, 8, 0, 1.0),
                                            (5, 2, 4, 0.5)])
@pytest.mark.parametrize("programmed", [False, True])
def test_reference_column_reads_with_ideal_devices_equal_the_quantised_product(rng, B, b, ib, gmin, programmed):
    m = offset_mapping(B, b, input_bits=ib, g_min=gmin)
    cfg = TileConfig(forward=PERFECT, backward=PERFECT, mapping=m, inference=InferenceConfig(device="none"))
    tile = Tile(6, 11, cfg, seed=1)
    W = rng.uniform(-1, 1, (6, 11)).astype(np.float32)
    tile.program(W) if programmed else tile.set_weights(W)
    assert tile._reference()
    x = rng.uniform(-1, 1, (5, 11)).astype(np.float32)
    if ib:
        M = 2 ** (ib - 1) - 1
        a = np.abs(x).max(axis=1, keepdims=True)
        xq = np.rint(x.astype(np.float64) / a * M) * a / M
    else:
        xq = x
    Wq = quantised(W, B)
    assert np.abs(tile.forward(x) - xq @ Wq.T).max() <= 1e-5 * np.abs(xq @ Wq.T).max()
    # the forward read of every slice has one more column: the reference, same inputs, same pass
    assert all(v.W.shape == (7, 11) for _, v in tile._fwd_parts)
    if programmed:  # the weights read back with the reference column in place of the programmed offset
        np.testing.assert_allclose(tile.read_weights(), Wq, atol=1e-5)


def uniform_drift_config(ref, io=PERFECT, nu=0.05):
    """A device whose every cell drifts by the same factor ((t + t0) / t0)^-nu: no programming or read noise,
    one drift exponent."""
    inf = InferenceConfig(device="state-independent", compensation="none",
                          device_params={"prog_noise_scale": 0.0, "read_noise_scale": 0.0, "nu_mean": nu,
                                         "nu_std": 0.0})
    return TileConfig(forward=io, backward=PERFECT, mapping=offset_mapping(8, 2, ref, g_min=1.0), inference=inf)


def test_with_uniform_drift_the_output_scales_by_the_drift_factor(rng):
    """Every cell (weights and reference) drifts by d = ((t + t0) / t0)^-nu: the reference column's read
    shrinks with the offset it removes, so y(t) = d x.W_q exactly (no constant error); the digital removal
    subtracts the undrifted offset and misses by (1 - d) (2^(B-1) + g_min floor) sum_j x_j."""
    W = rng.uniform(-1, 1, (8, 24)).astype(np.float32)
    x = rng.uniform(0, 1, (16, 24)).astype(np.float32)  # positive inputs: a large offset term sum_j x_j
    ideal = x @ quantised(W, 8).T
    t, t0, nu = 3.15e7, 20.0, 0.05   # the state-independent card's t0
    d = ((t + t0) / t0) ** -nu
    assert d < 0.6
    err = {}
    for ref in ("column", "digital"):
        tile = Tile(8, 24, uniform_drift_config(ref), seed=4)
        tile.program(W)
        assert np.abs(tile.forward(x) - ideal).max() <= 1e-5 * np.abs(ideal).max()   # t = 0: exact
        tile.drift(t)
        G = tile.conductances()
        np.testing.assert_allclose(G, _map.to_conductances(W, tile.config.mapping)[0] * d, rtol=1e-5)
        err[ref] = np.abs(tile.forward(x) - d * ideal).max() / np.abs(ideal).max()
    assert err["column"] <= 1e-5
    assert err["digital"] > 0.5   # the constant error the reference column removes (> 1000x larger)


def test_reference_is_subtracted_after_its_own_adc_conversion(rng):
    """The reference column is one more column of each slice's read: its output goes through the slice's ADC
    (its own conversion, the same step) before the subtraction, so with a coarse ADC the result is a
    difference of two quantised codes per slice, not the quantised difference."""
    io = IOConfig(inp_bits=0, out_bits=5, out_bound=30.0, out_noise=0.0, noise_management="none",
                  bound_management="none")
    m = offset_mapping(8, 4)
    tile = Tile(3, 10, TileConfig(forward=io, backward=PERFECT, mapping=m), seed=0)
    W = rng.uniform(-1, 1, (3, 10)).astype(np.float32)
    tile.set_weights(W)
    x = rng.uniform(0, 1, (6, 10)).astype(np.float32)
    step = io.out_step
    y = np.zeros((6, 4))
    for c, v in tile._fwd_parts:
        q = np.clip(np.rint((x @ v.W.T.astype(np.float64)) / step) * step, -io.out_bound, io.out_bound)
        y += c * q
    manual = y[:, :3] - y[:, 3:]
    np.testing.assert_allclose(tile.forward(x), manual, rtol=1e-5, atol=1e-5)
    assert tile.counts.adc == 6 * 4 * 2   # 3 columns + the reference, 2 slices


def test_pcm_drift_with_the_reference_column_keeps_the_product(rng):
    """PCM (programming noise, drift-exponent spread, read noise) over one year with global drift
    compensation: the reference column keeps the relative error within a small factor of that at 1 s (PCM's
    drift exponent depends on the conductance, so reference and weight cells do not drift alike: 0.15 -> 0.28
    here, the balanced encoding's 0.08 -> 0.12); the digital removal's error grows past the signal (5.6)."""
    W = rng.uniform(-1, 1, (16, 64)).astype(np.float32)
    x = rng.uniform(0, 1, (32, 64)).astype(np.float32)
    ideal = x @ quantised(W, 8).T
    rel = {}
    for ref in ("column", "digital"):
        cfg = TileConfig(forward=PERFECT, backward=PERFECT, mapping=offset_mapping(8, 2, ref),
                         inference=InferenceConfig(device="pcm-joshi2020"))
        tile = Tile(16, 64, cfg, seed=5)
        tile.program(W)
        for t in (1.0, 3.15e7):
            tile.drift(t)
            rel[ref, t] = np.linalg.norm(tile.forward(x) - ideal) / np.linalg.norm(ideal)
    assert rel["column", 3.15e7] < 0.45 and rel["column", 3.15e7] < 2.5 * rel["column", 1.0]
    assert rel["digital", 3.15e7] > 1.0


def test_reference_column_through_the_circuit_model(rng):
    """With the circuit model the reference column is one more column of each slice's array (wires
    included): near-zero wires give the quantised product, and the slices' effective matrices have out + 1
    rows."""
    a = ArrayConfig(model="circuit", wire_row_ohm=1e-4, wire_col_ohm=1e-4)
    tile = Tile(5, 9, TileConfig(forward=PERFECT, backward=PERFECT, mapping=offset_mapping(), array=a))
    W = rng.uniform(-1, 1, (5, 9)).astype(np.float32)
    tile.set_weights(W)
    x = rng.uniform(-1, 1, (4, 9)).astype(np.float32)
    ref = x @ quantised(W, 8).T
    assert np.abs(tile.forward(x) - ref).max() <= 1e-4 * np.abs(ref).max()
    assert all(v.W.shape == (6, 9) for _, v in tile._fwd_parts)


def pcm_config(**io_kw):
    io = IOConfig(inp_bits=8, out_bits=8, out_noise=0.01, adc="sar", adc_cap_mismatch=0.02, adc_gain_std=0.01,
                  **io_kw)
    return TileConfig(forward=io, mapping=offset_mapping(), inference=InferenceConfig(device="pcm-joshi2020"),
                      calibration=CalibrationConfig(inp="max", out="max", out_granularity="column"))


def test_reference_column_round_trips_through_a_chip_image(rng, tmp_path):
    cfg = pcm_config()
    t = Tile(6, 10, cfg, seed=3, tile_id="off")
    t.program(rng.uniform(-1, 1, (6, 10)).astype(np.float32))
    t.calibrate(rng.uniform(-1, 1, (64, 10)).astype(np.float32))
    t.drift(86400.0)
    S = cfg.mapping.n_slices
    assert t.calibration["adc_range"].shape == (S, 7)          # a range for the reference column too
    assert t._conv_of("forward")["gain"].shape == (7,)          # and its own ADC
    meta, arrays = t._get_state()
    assert arrays["ref_G"].shape == (S, 1, 10) and arrays["ref_nu"].shape == (S, 1, 10)
    save_chip(t, tmp_path / "r.h5")
    again = load_chip(tmp_path / "r.h5", Tile(6, 10, cfg, seed=0, tile_id="off"))
    assert again._reference()
    np.testing.assert_array_equal(again.reference_conductances(), t.reference_conductances())
    x = rng.uniform(-1, 1, (4, 10)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), t.forward(x))
    for tile in (t, again):   # the reference cells keep drifting from their stored state
        tile.drift(3.15e7)
    np.testing.assert_array_equal(again.reference_conductances(), t.reference_conductances())
    np.testing.assert_array_equal(again.forward(x), t.forward(x))


def test_a_state_with_part_of_the_reference_column_is_refused(rng):
    cfg = pcm_config()
    t = Tile(6, 10, cfg, seed=3, tile_id="off")
    t.program(rng.uniform(-1, 1, (6, 10)).astype(np.float32))
    meta, arrays = t._get_state()
    model = t.device_model()
    check_tile_state(t, meta, arrays, model, "t")
    with pytest.raises(ChipImageError, match="reference column.*all or none"):
        check_tile_state(t, meta, {k: v for k, v in arrays.items() if k != "ref_nu"}, model, "t")
    # without its reference cells, the drawn ADCs must be those of the weight columns alone
    no_ref = {k: v for k, v in arrays.items() if not k.startswith("ref_")}
    with pytest.raises(ChipImageError, match="adc_forward_gain.*without its reference column"):
        check_tile_state(t, meta, no_ref, model, "t")


def test_an_image_written_before_the_reference_column_loads_with_digital_removal():
    """tests/data/chip_sliced_offset_digital.h5 was written by aimc 4c006ce (offset encoding, digital offset
    removal, PCM at 1 day, per-column calibrated ranges, SAR ADCs drawn for the 6 weight columns): its config
    JSON has no ``offset_reference``, so it reads as today's default 'column', yet the chip has no reference
    cells: it loads and reads as it was written (digital removal), bit for bit."""
    ref = np.load(DATA / "chip_sliced_offset_digital.npz")
    cfg = TileConfig.from_json(str(ref["config"]))
    assert cfg.mapping.offset_reference == OffsetReference.COLUMN
    t = load_chip(DATA / "chip_sliced_offset_digital.h5", Tile(6, 10, cfg, seed=0, tile_id="off"))
    assert not t._reference() and t.reference_conductances() is None
    np.testing.assert_array_equal(t.read_weights(), ref["read_weights"])
    np.testing.assert_array_equal(t.calibration["adc_range"], ref["adc_range"])
    np.testing.assert_array_equal(t.forward(ref["x"]), ref["y"])
    t.drift(3.15e7)   # and keeps drifting without one
    assert np.isfinite(t.forward(ref["x"])).all()


def test_offset_reference_config_round_trips_and_names_the_field():
    from aimc.config import ConfigError
    m = offset_mapping(ref="digital")
    assert not m.reference_column and offset_mapping().reference_column
    assert not MappingConfig(kind="sliced", offset_reference="column").reference_column  # balanced: no offset
    cfg = TileConfig(mapping=m)
    assert TileConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="offset_reference"):
        offset_mapping(ref="analog")
