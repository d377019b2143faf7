"""Bit slicing (MappingKind.SLICED) and bit-serial inputs: exact with ideal converters, noise per read."""
import numpy as np
import pytest

from aimc import Tile, load_chip, save_chip
from aimc import mapping as _map
from aimc.config import ArrayConfig, ConfigError, InferenceConfig, IOConfig, MappingConfig, TileConfig

PERFECT = IOConfig(is_perfect=True)


def quantised(W, bits):
    L = 2 ** (bits - 1) - 1
    a = np.abs(W).max()
    return np.rint(W.astype(np.float64) / a * L) * a / L


def quantised_rows(x, bits):
    M = 2 ** (bits - 1) - 1
    a = np.abs(x).max(axis=1, keepdims=True)
    return np.rint(x.astype(np.float64) / a * M) * a / M


@pytest.mark.parametrize("B, b, ib, s", [(8, 1, 0, 1), (8, 2, 0, 1), (8, 4, 8, 1), (8, 3, 8, 2), (7, 6, 5, 4),
                                         (4, 1, 3, 2)])
def test_sliced_reads_with_ideal_converters_equal_the_quantised_product(rng, B, b, ib, s):
    m = MappingConfig(kind="sliced", weight_bits=B, bits_per_cell=b, input_bits=ib, input_bits_per_cycle=s)
    tile = Tile(6, 11, TileConfig(forward=PERFECT, backward=PERFECT, mapping=m))
    W = rng.uniform(-1, 1, (6, 11)).astype(np.float32)
    tile.set_weights(W)
    x = rng.uniform(-1, 1, (5, 11)).astype(np.float32)
    d = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    xq = quantised_rows(x, ib) if ib else x
    dq = quantised_rows(d, ib) if ib else d
    Wq = quantised(W, B)
    assert np.abs(tile.forward(x) - xq @ Wq.T).max() <= 2e-6 * np.abs(xq @ Wq.T).max()
    assert np.abs(tile.backward(d) - dq @ Wq).max() <= 2e-6 * np.abs(dq @ Wq).max()
    assert len(tile._fwd_parts) == -(-(B - 1) // b)
    # the conductances: every cell on [g_min, g_max], one device of each pair at g_min
    G, _ = _map.to_conductances(W, m)
    assert G.shape[0] == 2 * m.n_slices and G.min() >= m.g_min and G.max() <= m.g_max
    assert np.all((G[0::2] == m.g_min) | (G[1::2] == m.g_min))


def test_output_noise_is_drawn_per_read_and_shift_added(rng):
    """Each slice and input cycle is one ADC read with its own output noise sigma: the sliced result's noise
    variance is sigma^2 sum over reads of (shift factor)^2 (moment test, 3 standard errors)."""
    sigma = 0.05
    io = IOConfig(inp_bits=0, out_bits=0, out_bound=0, out_noise=sigma, noise_management="none",
                  bound_management="none")
    m = MappingConfig(kind="sliced", weight_bits=7, bits_per_cell=2, input_bits=4, input_bits_per_cycle=1)
    tile = Tile(8, 16, TileConfig(forward=io, backward=PERFECT, mapping=m), seed=7)
    W = rng.uniform(-1, 1, (8, 16)).astype(np.float32)
    tile.set_weights(W)
    x = np.tile(rng.uniform(-1, 1, (1, 16)).astype(np.float32), (4000, 1))
    err = tile.forward(x) - quantised_rows(x, 4) @ quantised(W, 7).T
    ck = [f * (m.g_max - m.g_min) / _map.to_conductances(W, m)[1]["scale"] for f in m.pair_factors]
    cc = [2.0 ** c * 1 / (2 ** 3 - 1) for c in range(3)]
    a = np.abs(x[0]).max()
    var = sigma ** 2 * sum(c * c for c in ck) * sum(c * c for c in cc) * a * a
    est = err.var()
    assert abs(est - var) <= 3 * var * np.sqrt(2 / err.size)
    assert abs(err.mean()) <= 3 * np.sqrt(var / err.size)


def test_sliced_programmed_tile_drifts_and_round_trips(rng, tmp_path):
    m = MappingConfig(kind="sliced", weight_bits=8, bits_per_cell=2)
    cfg = TileConfig(mapping=m, inference=InferenceConfig())
    tile = Tile(5, 9, cfg, seed=2)
    W = rng.uniform(-1, 1, (5, 9)).astype(np.float32)
    tile.program(W)
    assert tile.conductances().shape == (8, 5, 9)
    tile.drift(86400.0)
    x = rng.uniform(-1, 1, (3, 9)).astype(np.float32)
    y = tile.forward(x)
    save_chip(tile, tmp_path / "s.h5")
    again = load_chip(tmp_path / "s.h5", Tile(5, 9, cfg, seed=0))
    assert np.array_equal(again.conductances(), tile.conductances())
    assert np.array_equal(again.read_weights(), tile.read_weights())
    assert np.array_equal(again.forward(x), tile.forward(x))  # the reloaded chip continues the same stream
    assert np.isfinite(y).all()


def test_sliced_with_circuit_reads_each_slice_through_the_array(rng):
    m = MappingConfig(kind="sliced", weight_bits=8, bits_per_cell=2)
    a = ArrayConfig(model="circuit", wire_row_ohm=300.0, wire_col_ohm=300.0)
    W = rng.uniform(-1, 1, (6, 12)).astype(np.float32)
    x = rng.uniform(-1, 1, (4, 12)).astype(np.float32)
    ys = {}
    for r in (1e-4, 300.0):
        t = Tile(6, 12, TileConfig(forward=PERFECT, backward=PERFECT, mapping=m,
                                   array=a.replace(wire_row_ohm=r, wire_col_ohm=r)))
        t.set_weights(W)
        ys[r] = t.forward(x)
    ref = x @ quantised(W, 8).T
    assert np.abs(ys[1e-4] - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.abs(ys[300.0] - ref).max() > 1e-2 * np.abs(ref).max()
    # ... equal to the sum of the slices' own circuit reads (per-slice effective matrices)
    t = Tile(6, 12, TileConfig(forward=PERFECT, backward=PERFECT, mapping=m, array=a))
    t.set_weights(W)
    manual = sum(c * (x @ v.W.T) for c, v in t._fwd_parts)
    assert np.allclose(t.forward(x), manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, field", [(dict(kind="sliced", weight_bits=4, bits_per_cell=4), "bits_per_cell"),
                                       (dict(input_bits=1), "input_bits"),
                                       (dict(input_bits=4, input_bits_per_cycle=4), "input_bits_per_cycle"),
                                       (dict(weight_bits=1), "weight_bits")])
def test_slicing_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        MappingConfig(**kw)
    with pytest.raises(ConfigError, match="sinh"):
        TileConfig(mapping=MappingConfig(kind="sliced"), array=ArrayConfig(model="circuit", cell="sinh"))


@pytest.mark.parametrize("io", [
    IOConfig(bound_management="none"),
    IOConfig(bound_management="none", w_noise=0.02, w_noise_type="pcm_read", ir_drop=1.0, out_nonlinearity=0.1),
    IOConfig(bound_management="none", adc="sar", adc_cap_mismatch=0.05, adc_gain_std=0.02, dac_unit_mismatch=0.01),
])
@pytest.mark.parametrize("enc", ["balanced", "offset"])
def test_fused_slice_reads_equal_one_read_per_slice(rng, monkeypatch, io, enc):
    """``periphery.mvm_slices`` (one input stage shared by the slices) gives the values, counts and clip counts
    of one ``mvm`` per slice: the same stream calls in the same order and the same arithmetic."""
    import aimc.core.tile as tile_mod
    m = MappingConfig(kind="sliced", weight_bits=8, bits_per_cell=2, slice_encoding=enc, input_bits=5,
                      input_bits_per_cycle=2)
    W = rng.uniform(-1, 1, (12, 20)).astype(np.float32)
    x = rng.uniform(-1, 1, (9, 20)).astype(np.float32)
    x[2] = 0.0
    d = rng.uniform(-1, 1, (9, 12)).astype(np.float32)
    calls = []
    real = tile_mod.mvm_slices
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(tile_mod, "slices_fusable", (lambda io: True) if fused else (lambda io: False))
        monkeypatch.setattr(tile_mod, "mvm_slices", lambda *a, **k: calls.append(1) or real(*a, **k))
        tile = Tile(12, 20, TileConfig(forward=io, backward=io, mapping=m), seed=3)
        tile.program(W)
        out[fused] = (tile.forward(x), tile.backward(d), tile.counts.to_dict(), tile.counts_backward.to_dict(),
                      tile.clip_counts())
    assert len(calls) == 2 * 2  # forward and backward, 2 input cycles (4 magnitude bits) each
    for a, b in zip(out[True], out[False]):
        np.testing.assert_array_equal(a, b) if isinstance(a, np.ndarray) else (a == b or pytest.fail(f"{a} != {b}"))
