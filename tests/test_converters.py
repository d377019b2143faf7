"""Ramp ADC (INL/DNL), DAC unit mismatch, ADC sharing, offset slicing, per-slice / per-ADC calibration."""
import json

import numpy as np
import pytest

from aimc import Tile, load_chip, save_chip
from aimc import mapping as _map
from aimc.calibration import adc_bound
from aimc.config import ArrayConfig, CalibrationConfig, ConfigError, InferenceConfig, IOConfig, MappingConfig, TileConfig
from aimc.periphery import draw_dac, ramp_inl
from aimc.rng import Stream

IDEAL_IN = dict(inp_bits=0, out_noise=0.0, noise_management="none", bound_management="none")
PERFECT = IOConfig(is_perfect=True)


def tile_with(io, W, seed=0, tile_id=0, mapping=None):
    cfg = TileConfig(forward=io, backward=PERFECT, mapping=mapping or MappingConfig())
    t = Tile(W.shape[0], W.shape[1], cfg, seed=seed, tile_id=tile_id)
    t.set_weights(W)
    return t


# ------------------------------------------------------------------------------------------- ramp ADC

def test_ramp_without_errors_is_the_ideal_mid_rise_quantiser_and_equals_sar(rng):
    W = rng.uniform(-1, 1, (12, 30)).astype(np.float32)
    x = rng.uniform(-1, 1, (60, 30)).astype(np.float32)
    for bits, bound in ((3, 2.0), (6, 8.0)):
        io = IOConfig(out_bits=bits, out_bound=bound, adc="ramp", **IDEAL_IN)
        y = tile_with(io, W).forward(x)
        lv = 2 * bound / 2 ** bits
        ref = np.clip(np.floor((x @ W.T + bound) / lv), 0, 2 ** bits - 1) * lv + lv / 2 - bound
        assert np.abs(y - ref).max() <= 1e-5 * bound
        assert np.array_equal(y, tile_with(io.replace(adc="sar"), W).forward(x))


def test_ramp_dnl_and_inl_moments_match_the_brownian_bridge():
    """Many drawn ramps: the DNL of the inner codes has sigma^2 (1 - 1/(N-2)); INL at transition k has
    variance sigma^2 (k-1)(N-1-k)/(N-2) (end-point fit of a random walk); the end points are exact."""
    bits, sigma, n = 5, 0.3, 4000
    N = 2 ** bits
    st = Stream(11, "ramps")
    inl = np.stack([ramp_inl(bits, sigma, 0.0, st) for _ in range(n)]).astype(np.float64)
    assert inl.shape == (n, N - 1)
    assert np.abs(inl[:, [0, -1]]).max() <= 1e-5
    dnl = np.diff(inl, axis=1)             # N - 2 inner code widths minus 1 LSB
    var_d = sigma ** 2 * (1 - 1 / (N - 2))
    assert abs(dnl.var() / var_d - 1) <= 4 * np.sqrt(2 / dnl.size) * 3  # rows are correlated: loose by 3
    assert abs(dnl[:, 7].std() / np.sqrt(var_d) - 1) <= 3 * np.sqrt(0.5 / n)
    k = np.arange(1, N)
    var_i = sigma ** 2 * (k - 1) * (N - 1 - k) / (N - 2)
    mid = N // 2
    assert abs(inl[:, mid - 1].var() / var_i[mid - 1] - 1) <= 3 * np.sqrt(2 / n)
    q = N // 4
    assert abs(inl[:, q - 1].var() / var_i[q - 1] - 1) <= 3 * np.sqrt(2 / n)
    assert np.abs(inl.mean(axis=0)).max() <= 4 * np.sqrt(var_i.max() / n)


def test_ramp_bow_is_the_stated_parabola():
    bits, bow = 6, 1.5
    N = 2 ** bits
    inl = ramp_inl(bits, 0.0, bow, Stream(0, "b")).astype(np.float64)
    u = (np.arange(1, N) - 1) / (N - 2)
    assert np.allclose(inl, bow * 4 * u * (1 - u), atol=1e-6)
    assert abs(inl.max() - bow) <= bow * 4 / (N - 2) ** 2 + 1e-6  # peak at mid-scale


def test_ramp_is_monotonic_whatever_its_dnl_and_converts_at_the_drawn_transitions(rng):
    """A sweep through the range: outputs never decrease even with DNL sigma 1.5 LSB (non-monotonic ramp
    steps: the counter stops at the first crossing); the code equals #{k: max_(j<=k) T_j <= input}."""
    bits, bound = 5, 4.0
    N, Q = 2 ** bits, 2 * 4.0 / 2 ** bits
    W = np.full((6, 1), 5.0, np.float32)          # y = 5 x sweeps +-5 (the DAC clips x at +-1)
    x = np.linspace(-1, 1, 3001, dtype=np.float32)[:, None]
    io = IOConfig(out_bits=bits, out_bound=bound, adc="ramp", adc_dnl_std=1.5, adc_inl_bow=0.7,
                  adc_comparator_offset=0.05, columns_per_adc=3, **IDEAL_IN)
    t = tile_with(io, W, seed=3)
    y = t.forward(x)
    assert (np.diff(y, axis=0) >= 0).all()
    conv = t._conv["forward"]
    assert conv["inl"].shape == (N - 1,) and conv["comp"].shape == (2,)
    pmax = np.maximum.accumulate(np.arange(1, N) + conv["inl"].astype(np.float64))
    for i in range(6):
        tlsb = ((x[:, 0] * np.float32(5)).astype(np.float64) + conv["comp"][i // 3] * bound + bound) / Q
        code = np.searchsorted(pmax, tlsb, side="right")
        assert np.allclose(y[:, i], (code + 0.5) * Q - bound, atol=1e-5)
    # the columns of one ADC share its comparator: identical transfer; the two ADCs differ
    assert np.array_equal(y[:, 0], y[:, 2]) and not np.array_equal(y[:, 0], y[:, 3])
    assert len(np.unique(y)) < N  # missing codes where a step is negative


# ------------------------------------------------------------------------------------------- DAC

def test_dac_levels_are_a_brownian_bridge_with_exact_end_points():
    io = IOConfig(inp_bits=6, dac_unit_mismatch=0.05)
    L = 2 ** 5 - 1
    T = draw_dac(io, 20000, Stream(2, "dac")).astype(np.float64)
    assert T.shape == (20000, L + 1)
    assert np.abs(T[:, 0]).max() == 0 and np.abs(T[:, -1] - L).max() <= 1e-4
    c = np.arange(L + 1)
    inl = T - c
    var = 0.05 ** 2 * c * (L - c) / L
    for cc in (1, L // 2, 3 * L // 4):
        assert abs(inl[:, cc].var() / var[cc] - 1) <= 3 * np.sqrt(2 / 20000)
    assert np.abs(inl.mean(axis=0)).max() <= 4 * np.sqrt(var.max() / 20000)


def test_dac_errors_apply_per_input_line_to_the_quantised_inputs(rng):
    W = rng.uniform(-1, 1, (5, 9)).astype(np.float32)
    x = rng.uniform(-1, 1, (40, 9)).astype(np.float32)
    io = IOConfig(inp_bits=5, out_bits=0, out_bound=0.0, out_noise=0.0, noise_management="none",
                  bound_management="none", dac_unit_mismatch=0.1)
    t = tile_with(io, W, seed=5)
    y = t.forward(x)
    T = t._conv["forward"]["dac"]
    step = io.inp_step
    code = np.rint(np.abs(x) / np.float32(step)).astype(int)
    v = np.sign(x) * T[np.arange(9)[None, :], code] * step
    assert np.allclose(y, v @ W.T, rtol=1e-5, atol=1e-5)
    ideal = tile_with(io.replace(dac_unit_mismatch=0.0), W, seed=5).forward(x)
    assert np.allclose(ideal, (np.sign(x) * code * step) @ W.T, rtol=1e-5, atol=1e-5)
    assert np.abs(y - ideal).max() > 1e-3


def test_drawn_ramp_and_dac_round_trip_through_the_chip_image(rng, tmp_path):
    W = rng.uniform(-1, 1, (9, 11)).astype(np.float32)
    x = rng.uniform(-1, 1, (4, 11)).astype(np.float32)
    io = IOConfig(adc="ramp", out_bits=6, out_bound=6.0, adc_dnl_std=0.4, adc_inl_bow=-0.5,
                  adc_comparator_offset=0.01, columns_per_adc=4, dac_unit_mismatch=0.02)
    t = tile_with(io, W, seed=8, tile_id="a")
    save_chip(t, tmp_path / "r.h5")
    other = tile_with(io, W, seed=9, tile_id="a")
    assert not np.array_equal(other._conv_of("forward")["inl"], t._conv["forward"]["inl"])
    load_chip(tmp_path / "r.h5", other)
    for k in ("gain", "offset", "comp", "inl", "dac"):
        assert np.array_equal(other._conv["forward"][k], t._conv["forward"][k])
    assert np.array_equal(other.forward(x), t.forward(x))


# ------------------------------------------------------------------------------------------- offset slicing

def quantised(W, bits):
    L = 2 ** (bits - 1) - 1
    a = np.abs(W).max()
    return np.rint(W.astype(np.float64) / a * L) * a / L


def quantised_rows(x, bits):
    M = 2 ** (bits - 1) - 1
    a = np.abs(x).max(axis=1, keepdims=True)
    return np.rint(x.astype(np.float64) / a * M) * a / M


@pytest.mark.parametrize("B, b, ib, s, gmin", [(8, 1, 0, 1, 0.0), (8, 2, 0, 1, 2.0), (8, 4, 8, 1, 0.0),
                                               (8, 3, 8, 2, 1.0), (8, 8, 0, 1, 0.0), (5, 2, 4, 3, 0.5)])
def test_offset_sliced_reads_with_ideal_converters_equal_the_quantised_product(rng, B, b, ib, s, gmin):
    m = MappingConfig(kind="sliced", slice_encoding="offset", weight_bits=B, bits_per_cell=b, input_bits=ib,
                      input_bits_per_cycle=s, g_min=gmin)
    assert m.n_slices == -(-B // b) and _map.n_devices(m) == m.n_slices
    tile = Tile(6, 11, TileConfig(forward=PERFECT, backward=PERFECT, mapping=m))
    W = rng.uniform(-1, 1, (6, 11)).astype(np.float32)
    tile.set_weights(W)
    x = rng.uniform(-1, 1, (5, 11)).astype(np.float32)
    d = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    xq = quantised_rows(x, ib) if ib else x
    dq = quantised_rows(d, ib) if ib else d
    Wq = quantised(W, B)
    assert np.abs(tile.forward(x) - xq @ Wq.T).max() <= 1e-5 * np.abs(xq @ Wq.T).max()
    assert np.abs(tile.backward(d) - dq @ Wq).max() <= 1e-5 * np.abs(dq @ Wq).max()
    G, params = _map.to_conductances(W, m)
    assert G.shape[0] == m.n_slices and G.min() >= m.g_min - 1e-6 and G.max() <= m.g_max + 1e-6
    assert np.allclose(_map.from_conductances(G, params, m), Wq, atol=1e-5)


def test_offset_equals_balanced_through_a_quantising_dac(rng):
    """The digital offset is removed with the inputs as the DAC codes them, so with an ideal ADC the offset
    encoding gives the balanced encoding's result (both: quantised weights times the DAC's inputs)."""
    io = IOConfig(inp_bits=6, out_bits=0, out_bound=0.0, out_noise=0.0, bound_management="none")
    W = rng.uniform(-1, 1, (7, 13)).astype(np.float32)
    x = rng.uniform(-1, 1, (20, 13)).astype(np.float32)
    ys = {}
    for enc in ("balanced", "offset"):
        m = MappingConfig(kind="sliced", slice_encoding=enc, weight_bits=8, bits_per_cell=2)
        ys[enc] = tile_with(io, W, mapping=m).forward(x)
    assert np.abs(ys["offset"] - ys["balanced"]).max() <= 1e-4 * np.abs(ys["balanced"]).max()


def test_offset_sliced_programmed_tile_round_trips(rng, tmp_path):
    m = MappingConfig(kind="sliced", slice_encoding="offset", weight_bits=8, bits_per_cell=2)
    cfg = TileConfig(mapping=m, inference=InferenceConfig())
    t = Tile(5, 9, cfg, seed=2)
    t.program(rng.uniform(-1, 1, (5, 9)).astype(np.float32))
    assert t.conductances().shape == (4, 5, 9)
    t.drift(3600.0)
    x = rng.uniform(-1, 1, (3, 9)).astype(np.float32)
    save_chip(t, tmp_path / "o.h5")
    again = load_chip(tmp_path / "o.h5", Tile(5, 9, cfg, seed=0))
    assert np.array_equal(again.forward(x), t.forward(x))


# ------------------------------------------------------------------------------------------- calibration

def test_adc_ranges_are_calibrated_per_slice_and_round_trip(rng, tmp_path):
    m = MappingConfig(kind="sliced", weight_bits=7, bits_per_cell=2)
    io = IOConfig(inp_bits=7, out_bits=6, out_noise=0.0, bound_management="none")
    cfg = TileConfig(forward=io, backward=PERFECT, mapping=m, inference=InferenceConfig(device="none"))
    W = rng.uniform(-1, 1, (6, 20)).astype(np.float32)
    t = Tile(6, 20, cfg, seed=1)
    t.program(W)
    x = rng.uniform(-1, 1, (300, 20)).astype(np.float32)
    cal = CalibrationConfig(inp="max", out="max", slice_ranges="free")
    rep = t.calibrate(x, cal)
    b = t.calibration["adc_range"]
    assert b.shape == (3, 6) and np.asarray(rep["adc_range"]).shape == (3, 6)
    r = float(np.abs(x).max())
    for k, (_, view) in enumerate(t._fwd_parts):   # each slice's range = max |its analog outputs|
        v = np.clip(np.rint(x / r * 63), -63, 63) / 63
        assert np.allclose(b[k], np.abs(v @ view.W.T).max(axis=0), rtol=1e-5)
    assert len({tuple(np.round(row, 4)) for row in b}) == 3
    y = t.forward(x[:5])
    save_chip(t, tmp_path / "c.h5")
    again = load_chip(tmp_path / "c.h5", Tile(6, 20, cfg, seed=0))
    assert np.array_equal(again.calibration["adc_range"], b)
    t2 = Tile(6, 20, cfg, seed=1)
    t2.program(W)
    t2.calibrate(x, cal)
    assert np.array_equal(t2.forward(x[:5]), y)
    # a per-slice range replaces the slice's ADC: the calibrated sliced read clips nothing on its own data
    t.reset_clip_counts()
    t.forward(x)
    assert t.clip_counts()[0] == 0


@pytest.mark.parametrize("out", ["max", "mse"])
def test_slice_ranges_are_power_of_two_apart_by_default(rng, out):
    """Default ``slice_ranges`` 'pow2': every slice's range is the most significant slice's times 2^e (e integer,
    per column), that slice keeps its own range, and each range is the free one rounded in log2 (up for 'max',
    so no slice clips more than its free range would; to the nearest power for 'mse')."""
    m = MappingConfig(kind="sliced", weight_bits=7, bits_per_cell=2)
    io = IOConfig(inp_bits=7, out_bits=6, out_noise=0.0, bound_management="none")
    cfg = TileConfig(forward=io, backward=PERFECT, mapping=m, inference=InferenceConfig(device="none"))
    W = rng.uniform(-1, 1, (6, 20)).astype(np.float32)
    x = rng.uniform(-1, 1, (300, 20)).astype(np.float32)
    b = {}
    for mode in ("free", "pow2"):
        t = Tile(6, 20, cfg, seed=1)
        t.program(W)
        t.calibrate(x, CalibrationConfig(inp="max", out=out, slice_ranges=mode))
        b[mode] = t.calibration["adc_range"].astype(np.float64)
    assert CalibrationConfig().slice_ranges == "pow2"
    assert np.array_equal(b["pow2"][-1], b["free"][-1])
    e = np.log2(b["pow2"] / b["pow2"][-1])
    assert np.allclose(e, np.rint(e), atol=1e-5) and not np.allclose(b["free"], b["pow2"])
    r = b["free"] / b["pow2"]
    if out == "max":
        assert np.all(r <= 1 + 1e-6) and np.all(r > 0.5 - 1e-6)
    else:
        assert np.all(np.abs(np.log2(r)) <= 0.5 + 1e-6)
    # the free ranges of the lower slices are not powers of two apart here: the rounding did something
    ef = np.log2(b["free"][:-1] / b["free"][-1])
    assert not np.allclose(ef, np.rint(ef), atol=1e-3)


def test_adc_ranges_are_calibrated_per_adc_when_columns_share_one(rng):
    y = rng.normal(0, 1, (500, 10)).astype(np.float32) * np.arange(1, 11, dtype=np.float32)
    io = IOConfig(out_bits=8, columns_per_adc=4)
    b = adc_bound(y, CalibrationConfig(out="max"), io, "adc", 4)
    ref = np.repeat([np.abs(y[:, 0:4]).max(), np.abs(y[:, 4:8]).max(), np.abs(y[:, 8:]).max()], [4, 4, 2])
    assert np.allclose(b, ref)
    assert np.allclose(adc_bound(y, CalibrationConfig(out="max"), io, "adc", 1), np.abs(y).max(axis=0))
    W = rng.uniform(-1, 1, (10, 12)).astype(np.float32)
    cfg = TileConfig(forward=IOConfig(out_bits=8, columns_per_adc=4, out_noise=0.0), backward=PERFECT,
                     inference=InferenceConfig(device="none"),
                     calibration=CalibrationConfig(out="percentile", out_granularity="adc"))
    t = Tile(10, 12, cfg)
    t.program(W)
    t.calibrate(rng.uniform(-1, 1, (200, 12)).astype(np.float32))
    b = t.calibration["adc_range"]
    assert b.shape == (10,) and len(np.unique(b[:4])) == 1 and len(np.unique(b[4:8])) == 1 and b[0] != b[4]


# ------------------------------------------------------------------------------------------- config

def test_new_converter_fields_round_trip_through_json():
    cfg = TileConfig(forward=IOConfig(adc="ramp", out_bits=6, adc_dnl_std=0.2, adc_inl_bow=-0.3,
                                      columns_per_adc=8, dac_unit_mismatch=0.01),
                     mapping=MappingConfig(kind="sliced", slice_encoding="offset", bits_per_cell=4),
                     calibration=CalibrationConfig(out_granularity="adc"))
    again = TileConfig.from_json(cfg.to_json())
    assert again == cfg and again.forward.adc.value == "ramp" and again.mapping.slice_encoding.value == "offset"


def test_old_adc_group_json_loads_into_columns_per_adc():
    d = json.loads(TileConfig().to_json())
    sar = dict(d, forward=dict(d["forward"], adc="sar", adc_group=16))
    sar["forward"].pop("columns_per_adc")
    assert TileConfig.from_dict(sar).forward.columns_per_adc == 16
    assert TileConfig.normalised_dict(sar)["forward"]["columns_per_adc"] == 16
    uni = dict(d, forward=dict(d["forward"], adc_group=8))
    uni["forward"].pop("columns_per_adc")
    assert TileConfig.from_dict(uni).forward.columns_per_adc == 1   # it had no effect on a uniform ADC
    with pytest.raises(ConfigError, match="adc_group.*columns_per_adc"):
        TileConfig.from_dict(dict(d, forward=dict(d["forward"], adc="sar", adc_group=8, columns_per_adc=4)))


@pytest.mark.parametrize("kw, field", [(dict(adc="ramp", out_bits=20), "out_bits"),
                                       (dict(adc="ramp", out_bound=0.0), "out_bound"),
                                       (dict(adc="sar", adc_dnl_std=0.1), "adc_dnl_std"),
                                       (dict(adc="ramp", adc_dnl_std=-0.1), "adc_dnl_std"),
                                       (dict(adc="ramp", adc_inl_bow=float("nan")), "adc_inl_bow"),
                                       (dict(dac_unit_mismatch=0.1, inp_bits=0), "dac_unit_mismatch"),
                                       (dict(dac_unit_mismatch=2.0), "dac_unit_mismatch"),
                                       (dict(columns_per_adc=0), "columns_per_adc")])
def test_converter_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        IOConfig(**kw)


@pytest.mark.parametrize("kw, field", [(dict(kind="sliced", slice_encoding="twos"), "slice_encoding"),
                                       (dict(kind="sliced", slice_encoding="offset", weight_bits=4,
                                             bits_per_cell=5), "bits_per_cell")])
def test_slice_encoding_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        MappingConfig(**kw)
    MappingConfig(kind="sliced", slice_encoding="offset", weight_bits=4, bits_per_cell=4)  # 4 bits fit offset


def test_an_image_with_sar_adcs_written_before_columns_per_adc_still_loads():
    """tests/data/chip_sar_adc_group.h5 was written by aimc 1b3c33a (field ``adc_group`` 8): it loads into a
    tile built with today's field (``columns_per_adc`` 8) and into one built from the old JSON, with the same
    drawn converters; one built with another sharing is refused, naming the field."""
    from pathlib import Path

    from aimc.chip import ChipImageError
    data = Path(__file__).parent / "data"
    ref = np.load(data / "chip_sar_adc_group.npz")
    old = TileConfig.from_json(str(ref["config"]))
    assert old.forward.columns_per_adc == 8 and "adc_group" in json.loads(str(ref["config"]))["forward"]
    new = TileConfig(forward=IOConfig(adc="sar", out_bits=6, out_bound=8.0, adc_cap_mismatch=0.05,
                                      adc_comparator_offset=0.01, columns_per_adc=8, adc_gain_std=0.01),
                     backward=PERFECT)
    # equal up to the array's solver settings (the image recorded the tol of its day, 1e-5), which are no part
    # of a chip's identity
    solver = {f: getattr(new.array, f) for f in ArrayConfig.SOLVER_FIELDS}
    assert new == old.replace(array=old.array.replace(**solver))
    for cfg in (old, new):
        t = load_chip(data / "chip_sar_adc_group.h5", Tile(20, 9, cfg, seed=0, tile_id="sar"))
        for k in ("gain", "offset", "caps", "comp"):
            assert np.array_equal(t._conv["forward"][k], ref[k])
        assert np.array_equal(t.read_weights(), ref["W"])
        assert np.isfinite(t.forward(np.ones((2, 9), np.float32))).all()
    other = new.replace(forward=new.forward.replace(columns_per_adc=4))
    with pytest.raises(ChipImageError, match="columns_per_adc"):
        load_chip(data / "chip_sar_adc_group.h5", Tile(20, 9, other, seed=0, tile_id="sar"))


def test_layer_wide_ranges_are_one_per_slice_over_all_tiles(rng):
    from aimc import TileArray
    m = MappingConfig(kind="sliced", weight_bits=7, bits_per_cell=3, max_in=8, max_out=4)
    io = IOConfig(inp_bits=7, out_bits=6, out_noise=0.0, bound_management="none")
    cfg = TileConfig(forward=io, backward=PERFECT, mapping=m, inference=InferenceConfig(device="none"),
                     calibration=CalibrationConfig(inp="max", out="max", out_granularity="layer", slice_ranges="free"))
    arr = TileArray(6, 14, cfg, seed=2, name="fc")
    arr.program(rng.uniform(-1, 1, (6, 14)).astype(np.float32))
    x = rng.uniform(-1, 1, (100, 14)).astype(np.float32)
    rep = arr.calibrate(x)
    tiles = list(arr.all_tiles())
    assert len(tiles) == 4 and all(np.asarray(r).shape == (2, 1) for r in rep["adc_range"])
    b = tiles[0].calibration["adc_range"]
    assert all(np.array_equal(t.calibration["adc_range"], b) for t in tiles)
    # slice k's layer range = max over every tile of its slice-k analog outputs (2 slices of 3 bits)
    for k in range(2):
        top = max(float(np.abs(t.analog_reads(np.ascontiguousarray(x[:, cs]),
                                              inp_range=t.calibration["input_range"])[k]).max())
                  for (_, cs, t) in arr._blocks())
        assert abs(b[k, 0] - top) <= 1e-5 * top
