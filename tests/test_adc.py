"""Converter models with per-chip errors (IOConfig.adc*, periphery.draw_adc, kernels/periphery.adc_stage)."""
import numpy as np
import pytest

from aimc import Tile, load_chip, save_chip
from aimc.config import ConfigError, IOConfig, TileConfig
from aimc.periphery import draw_adc
from aimc.rng import Stream

IDEAL_IN = dict(inp_bits=0, out_noise=0.0, noise_management="none", bound_management="none")


def tile_with(io, W, seed=0, tile_id=0):
    t = Tile(W.shape[0], W.shape[1], TileConfig(forward=io, backward=IOConfig(is_perfect=True)), seed=seed,
             tile_id=tile_id)
    t.set_weights(W)
    return t


def test_sar_without_errors_is_the_ideal_mid_rise_quantiser(rng):
    """CrossSim's SAR output grid (circuits_and_cost.md C.3): 2^B levels 2 V (code + 1/2) / 2^B - V,
    thresholds midway; inputs beyond the range give the end codes."""
    W = rng.uniform(-1, 1, (12, 30)).astype(np.float32)
    x = rng.uniform(-1, 1, (50, 30)).astype(np.float32)
    for bits, bound in ((4, 3.0), (7, 8.0)):
        y = tile_with(IOConfig(out_bits=bits, out_bound=bound, adc="sar", **IDEAL_IN), W).forward(x)
        lv = 2 * bound / 2 ** bits
        ref = np.clip(np.floor((x @ W.T + bound) / lv), 0, 2 ** bits - 1) * lv + lv / 2 - bound
        assert np.abs(y - ref).max() <= 1e-5 * bound
        assert len(np.unique(np.round(y / lv - 0.5))) <= 2 ** bits


def test_sar_mismatch_is_shared_by_the_columns_of_one_adc_group(rng):
    row = rng.uniform(-1, 1, (1, 40)).astype(np.float32)
    W = np.repeat(row, 16, axis=0)             # every column computes the same value
    x = np.linspace(-1, 1, 400)[:, None].astype(np.float32) * np.sign(row)  # a ramp through the range
    io = IOConfig(out_bits=5, out_bound=float(np.abs(row).sum()), adc="sar", adc_cap_mismatch=0.2,
                  adc_comparator_offset=0.02, columns_per_adc=8, **IDEAL_IN)
    y = tile_with(io, W).forward(x)
    assert np.array_equal(y[:, :8], np.repeat(y[:, :1], 8, axis=1))
    assert np.array_equal(y[:, 8:], np.repeat(y[:, 8:9], 8, axis=1))
    assert not np.array_equal(y[:, 0], y[:, 8])  # the two ADCs have different transfer curves


def test_per_column_gain_and_offset_moments_and_drawn_once():
    io = IOConfig(adc_gain_std=0.03, adc_offset_std=0.01, out_bound=10.0)
    d = draw_adc(io, 20000, Stream(3, "x"))
    se = 1 / np.sqrt(20000)
    assert abs(d["gain"].mean() - 1) <= 3 * 0.03 * se and abs(d["gain"].std() / 0.03 - 1) <= 3 * np.sqrt(0.5) * se
    assert abs(d["offset"].mean()) <= 3 * 0.1 * se and abs(d["offset"].std() / 0.1 - 1) <= 3 * np.sqrt(0.5) * se
    assert np.array_equal(draw_adc(io, 20000, Stream(3, "x"))["gain"], d["gain"])


def test_gain_offset_apply_before_the_adc_and_do_not_move_the_main_stream(rng):
    W = rng.uniform(-1, 1, (10, 12)).astype(np.float32)
    x = rng.uniform(-1, 1, (5, 12)).astype(np.float32)
    io = IOConfig(out_bits=0, out_bound=0.0, adc_gain_std=0.05, **IDEAL_IN)
    t = tile_with(io, W, seed=4)
    y = t.forward(x)
    g = t._conv["forward"]["gain"]
    assert np.allclose(y, (x @ W.T) * g, rtol=1e-5, atol=1e-6)
    plain = tile_with(IOConfig(out_bits=0, out_bound=0.0, **IDEAL_IN), W, seed=4)
    plain.forward(x)
    assert plain.stream.state() == t.stream.state()


def test_converter_errors_round_trip_through_the_chip_image(rng, tmp_path):
    W = rng.uniform(-1, 1, (9, 11)).astype(np.float32)
    io = IOConfig(adc="sar", adc_cap_mismatch=0.1, adc_comparator_offset=0.01, adc_gain_std=0.02)
    t = tile_with(io, W, seed=8, tile_id="a")
    save_chip(t, tmp_path / "adc.h5")
    other = tile_with(io, W, seed=9, tile_id="a")   # another chip (seed): other draws
    assert not np.array_equal(other._conv_of("forward")["caps"], t._conv["forward"]["caps"])
    load_chip(tmp_path / "adc.h5", other)
    for k in ("gain", "offset", "caps", "comp"):
        assert np.array_equal(other._conv["forward"][k], t._conv["forward"][k])


@pytest.mark.parametrize("kw, field", [(dict(adc="flash"), "adc"), (dict(adc_cap_mismatch=-0.1), "adc_cap_mismatch"),
                                       (dict(adc="sar", out_bits=0), "sar"), (dict(columns_per_adc=0), "columns_per_adc"),
                                       (dict(adc_gain_std=0.1, out_sto_round=True), "out_sto_round")])
def test_adc_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        IOConfig(**kw)
