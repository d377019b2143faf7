"""Programmed tiles over time: program (noise drawn once) -> drift(t) -> drift compensation (physics.md §3, §4).

The fused kernels (aimc.kernels.drift) are held equal to the device_models formulas by rebuilding every
normal they drew (counter-based: ``fill_normal`` at the same key and call) and evaluating the model's public
statistics with those normals.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest

import device_models as dm
from aimc import Tile, TileArray
from aimc.config import (ConfigError, DriftCompensation, InferenceConfig, IOConfig, MappingConfig, MappingKind,
                         TileConfig)
from aimc.inference import DeviceArray, inline_family
from aimc.kernels import drift as kd
from aimc.kernels.rng import fill_normal
from aimc.rng import Stream

PERFECT = IOConfig(is_perfect=True)
DET = {"prog_noise_scale": 0.0, "read_noise_scale": 0.0, "nu_std": 0.0}   # deterministic drift fixture


def cfg(inference=None, mapping=None, forward=PERFECT):
    return TileConfig(forward=forward, backward=PERFECT, mapping=mapping or MappingConfig(), inference=inference)


def weights(out, inp, seed=0, scale=0.3):
    return (np.random.default_rng(seed).standard_normal((out, inp)) * scale).astype(np.float32)


def normals(shape2d, key, call):
    out = np.empty(shape2d, np.float32)
    fill_normal(out, key[0], key[1], np.uint64(call))
    return out


# ----------------------------------------------------------------------------------------- kernels = oracle

@pytest.mark.parametrize("card, params", [
    ("pcm-joshi2020", {}),
    ("pcm-joshi2020", {"prog_noise_scale": 0.7, "drift_scale": 1.3, "read_noise_scale": 2.0, "g_max": 20.0}),
    ("state-independent", {"nu_std": 0.02}),
    ("hermes-2dev", {}),          # statistics as arrays from the model
    ("pcm-lut-example", {}),      # lookup table (arrays)
])
def test_fused_kernels_equal_device_model_formulas(card, params):
    model = dm.load(card, **params)
    rng = np.random.default_rng(3)
    g_t = (model.g_min + rng.random((2, 24, 37)) * (model.g_max - model.g_min)).astype(np.float32)
    g_t[0, 0, :5] = [model.g_min, model.g_max, model.g_min, model.g_max, model.g_min]   # range ends
    stream = Stream(11, "k")
    dev = DeviceArray.program(model, g_t, stream)
    assert dev.fused
    key, c = stream.key, 0
    z1, z2 = normals((48, 37), key, c), normals((48, 37), key, c + 1)
    sig = model.programming_noise_std(g_t.astype(np.float64))
    mu, sd = model.drift_exponent_stats(g_t.astype(np.float64))
    g_prog = np.maximum(g_t + sig * z1.reshape(g_t.shape), 0)
    nu = np.abs(mu + sd * z2.reshape(g_t.shape))
    np.testing.assert_allclose(dev.cells.g_prog, g_prog, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dev.cells.nu, nu, rtol=1e-5, atol=1e-6)
    assert dev.cells.g_prog.dtype == np.float32 and dev.cells.g_prog.shape == g_t.shape
    for t in (0.0, 1.0, 3600.0, 86400.0, 3.15e7):
        call = stream.call
        g = dev.read(t, stream)
        z = normals((48, 37), key, call).reshape(g_t.shape)
        cells = dev.cells
        want = np.maximum(model.drift_mean(cells, t).astype(np.float64) + model.read_noise_std(cells, t) * z, 0)
        np.testing.assert_allclose(g, want, rtol=2e-5, atol=1e-5)


def test_inline_statistics_equal_the_model():
    for card in ("pcm-joshi2020", "state-independent"):
        model = dm.load(card, drift_scale=1.2)
        fam, p = inline_family(model)
        assert fam != kd.FAM_ARRAYS
        g = np.linspace(0, model.g_max, 1001, dtype=np.float32).reshape(7, 143)
        sig, mu, sd = (np.empty_like(g) for _ in range(3))
        kd.powerlaw_stats(g, fam, p, sig, mu, sd)
        m_mu, m_sd = model.drift_exponent_stats(g)
        np.testing.assert_allclose(sig, model.programming_noise_std(g), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mu, m_mu, rtol=1e-5)
        np.testing.assert_allclose(sd, m_sd, rtol=1e-5)
        rel = np.empty_like(g)
        gp = np.linspace(0, 1.3 * model.g_max, 1001, dtype=np.float32).reshape(7, 143)
        kd.powerlaw_rel(gp, np.zeros(gp.shape, bool), fam, p, rel)
        np.testing.assert_allclose(rel, model.read_noise_scale * model.read_noise_relative(gp), rtol=2e-6)


@pytest.mark.parametrize("card", ["pcm-joshi2020", "hermes-1dev"])
def test_fused_verify_equals_the_model_semantics(card):
    """Each device retries while |g - g_T| > tol (up to max_iter), keeping its best shot: rebuilt exactly."""
    model = dm.load(card, verify_tol=0.4, verify_max_iter=4)
    g_t = np.random.default_rng(1).uniform(0, model.g_max, (30, 41)).astype(np.float32)
    stream = Stream(5, "v")
    dev = DeviceArray.program(model, g_t, stream)
    assert stream.call == 2 + 4          # first shot, nu, 4 verify calls reserved
    sig = model.programming_noise_std(g_t)
    g = np.maximum(g_t + sig * normals(g_t.shape, stream.key, 0), 0)
    first = g.copy()
    for k in range(4):
        cand = np.maximum(g_t + sig * normals(g_t.shape, stream.key, 2 + k), 0)
        upd = (np.abs(g - g_t) > 0.4) & (np.abs(cand - g_t) < np.abs(g - g_t))
        g = np.where(upd, cand, g)
    np.testing.assert_allclose(dev.cells.g_prog, g, rtol=1e-6, atol=1e-6)
    assert (np.abs(g - g_t) <= np.abs(first - g_t)).all()
    assert (np.abs(g - g_t) > 0.4).mean() < 0.5 * (np.abs(first - g_t) > 0.4).mean()


def test_engines_agree_in_distribution():
    """Fused kernels and the device_models engine draw different numbers from the same physics."""
    W = weights(96, 96, 2)
    stats = []
    for fused in (None, False):
        t = Tile(96, 96, cfg(InferenceConfig(compensation="none")), seed=1)
        t._fused = fused
        t.program(W)
        t.drift(86400.0)
        assert t._device.fused is (fused is None)
        g = t.conductances()
        stats.append((g.mean() / t.cells.g_target.mean(), np.std(t.read_weights() - W)))
    assert stats[0][0] == pytest.approx(stats[1][0], rel=0.02)
    assert stats[0][1] == pytest.approx(stats[1][1], rel=0.1)


# ----------------------------------------------------------------------------------------- compensation

@pytest.mark.parametrize("kind", ["global", "per_column", "global_exact"])
@pytest.mark.parametrize("split", [False, True])
def test_deterministic_drift_compensation_restores_the_undrifted_output(kind, split):
    inf = InferenceConfig(device="state-independent", device_params=DET, compensation=kind)
    mapping = MappingConfig(max_in=20, max_out=16) if split else MappingConfig()
    arr = TileArray(40, 50, cfg(inf, mapping), seed=4)
    W = weights(40, 50, 1)
    x = np.random.default_rng(2).uniform(-1, 1, (8, 50)).astype(np.float32)
    arr.program(W)
    y0 = arr.forward(x)
    np.testing.assert_allclose(y0, x @ W.T, rtol=1e-4, atol=1e-5)
    arr.drift(86400.0)
    factor = ((86400.0 + 20.0) / 20.0) ** -0.1
    np.testing.assert_allclose(arr.read_weights(), factor * W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arr.forward(x), y0, rtol=1e-5, atol=1e-5)   # compensated == undrifted
    arr.compensate = False
    np.testing.assert_allclose(arr.forward(x), factor * y0, rtol=1e-5, atol=1e-5)
    arr.compensate = True
    for tile in arr.all_tiles():
        a = np.asarray(tile.compensation_alpha)
        assert a.shape == ((tile.out_size,) if kind == "per_column" else ())
        np.testing.assert_allclose(a, 1 / factor, rtol=1e-5)


def test_compensation_with_noisy_periphery_and_pcm_reduces_the_drift_error():
    W = weights(32, 64, 5, 0.3)
    x = np.random.default_rng(3).uniform(-1, 1, (64, 64)).astype(np.float32)
    tile = Tile(32, 64, cfg(InferenceConfig(), forward=IOConfig()), seed=2)
    tile.program(W)
    tile.drift(3.15e7)
    ref = x @ W.T
    on = np.abs(tile.forward(x) - ref).mean()
    tile.compensate = False
    off = np.abs(tile.forward(x) - ref).mean()
    assert on < 0.6 * off, (on, off)
    assert 1.5 < float(tile.compensation_alpha) < 2.5   # mean drift factor ~0.5 after a year


@pytest.mark.parametrize("bits, warns", [(4, True), (9, False)])
def test_a_coarse_adc_that_cannot_resolve_the_compensation_readout_warns(bits, warns):
    # one-hot readout: each output is a single weight; a 4-bit ADC (step 2*10/14) reads nearly all of them as 0
    W = weights(32, 64, 5, 0.3)
    tile = Tile(32, 64, cfg(InferenceConfig(), forward=IOConfig(out_bits=bits)), seed=2)
    import warnings
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tile.program(W)
    msgs = [str(r.message) for r in rec if "compensation readout" in str(r.message)]
    assert bool(msgs) == warns, msgs
    if warns:
        assert f"{bits}-bit ADC" in msgs[0] and "unreliable" in msgs[0]


def test_backward_never_compensates_and_no_inference_keeps_the_old_behaviour():
    W = weights(12, 9)
    d = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    inf = InferenceConfig(device="state-independent", device_params=DET)
    t = Tile(12, 9, cfg(inf), seed=0)
    t.program(W)
    t.drift(1e5)
    factor = ((1e5 + 20) / 20) ** -0.1
    np.testing.assert_allclose(t.backward(d), factor * d @ W, rtol=1e-5, atol=1e-6)
    plain = Tile(12, 9, cfg(None), seed=0)
    plain.program(W)
    assert plain.time == 0.0 and plain.compensation_alpha is None and plain.cells is not None
    plain.drift(1e6)
    np.testing.assert_allclose(plain.read_weights(), W, rtol=1e-5, atol=1e-6)
    assert plain.time == 1e6
    none = Tile(12, 9, cfg(InferenceConfig(device="none")), seed=0)
    none.program(W)
    none.drift(10.0)
    np.testing.assert_allclose(none.read_weights(), W, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- clock & state

def test_clock_errors_name_the_problem():
    inf = InferenceConfig(device="state-independent")
    arr = TileArray(20, 30, cfg(inf, MappingConfig(max_in=16)), seed=0)
    with pytest.raises(RuntimeError, match="program"):
        arr.drift(1.0)
    with pytest.raises(RuntimeError, match="program"):
        arr.tiles[0][0].drift(1.0)
    arr.program(weights(20, 30))
    assert arr.time == 0.0
    arr.drift(100.0)
    arr.drift(100.0)                     # equal time: allowed (a fresh read)
    w100 = arr.read_weights()
    with pytest.raises(ValueError, match="earlier than the clock"):
        arr.drift(50.0)
    with pytest.raises(ValueError, match="earlier than the tile's clock"):
        arr.tiles[0][1].drift(50.0)
    for bad, exc, msg in [(-1.0, ValueError, ">= 0"), (float("nan"), ValueError, "NaN"),
                          (float("inf"), ValueError, "beyond"), ("1 fortnight", ValueError, "bad time"),
                              (1e300, ValueError, "1000 years"), ("1e300y", ValueError, "1000 years"),
                          (np.array([1.0, 2.0]), TypeError, "scalar time"), (True, TypeError, "scalar time")]:
        with pytest.raises(exc, match=msg):
            arr.drift(bad)
    np.testing.assert_array_equal(arr.read_weights(), w100)    # nothing moved
    assert all(t.time == 100.0 for t in arr.all_tiles())
    arr.program(weights(20, 30))                                # re-programming restarts the clock
    assert arr.time == 0.0
    arr.drift(50.0)


def test_read_noise_is_redrawn_per_drift_call_not_per_forward():
    W = weights(16, 16, 3)
    tile = Tile(16, 16, cfg(InferenceConfig(compensation="none")), seed=3)
    tile.program(W)
    tile.drift(60.0)
    g1 = tile.conductances().copy()
    x = np.eye(16, dtype=np.float32)
    np.testing.assert_array_equal(tile.forward(x), tile.forward(x))   # perfect IO: same weights per forward
    tile.drift(60.0)
    g2 = tile.conductances()
    assert not np.array_equal(g1, g2)
    sigma = tile._device.model.read_noise_std(tile.cells, 60.0)
    assert (np.abs(g1 - g2) <= 12 * sigma + 1e-6).all()          # only the read noise differs


def test_set_weights_returns_to_the_exact_state():
    W = weights(10, 8)
    tile = Tile(10, 8, cfg(InferenceConfig()), seed=1)
    tile.program(W)
    tile.drift(10.0)
    tile.set_weights(W)
    assert tile.time is None and tile.cells is None and tile.compensation_alpha is None
    assert not tile.programmed
    np.testing.assert_array_equal(tile.read_weights(), W)
    with pytest.raises(RuntimeError, match="program"):
        tile.drift(20.0)


def test_program_and_verify_reduces_the_weight_error():
    W = weights(48, 48, 7)
    errs = []
    for tol in (0.0, 0.3):
        t = Tile(48, 48, cfg(InferenceConfig(verify_tol=tol, verify_max_iter=20, compensation="none")), seed=9)
        t.program(W)
        c = t.cells
        errs.append((np.sqrt(np.mean((c.g_prog - c.g_target) ** 2)), np.sqrt(np.mean((t.read_weights() - W) ** 2))))
    assert errs[1][0] < 0.5 * errs[0][0]
    assert errs[1][1] < 0.8 * errs[0][1]


@pytest.mark.parametrize("kind, sig", [("differential", (1.0,)), ("n_pairs", (1.0, 3.0)), ("single_offset", (1.0,))])
def test_mapping_kinds_program_and_drift(kind, sig):
    mapping = MappingConfig(kind=kind, significance=sig)
    W = weights(20, 24, 4)
    det = Tile(20, 24, cfg(InferenceConfig(device="state-independent", device_params=DET), mapping), seed=0)
    det.program(W)
    nd = {"differential": 2, "n_pairs": 4, "single_offset": 1}[kind]
    assert det.conductances().shape == (nd, 20, 24) and det.cells.g_prog.shape == (nd, 20, 24)
    np.testing.assert_allclose(det.read_weights(), W, rtol=1e-4, atol=1e-5)
    det.drift(3600.0)
    f = ((3600.0 + 20) / 20) ** -0.1
    want = f * W if kind != "single_offset" else f * (W - W.min()) + W.min()
    np.testing.assert_allclose(det.read_weights(), want, rtol=1e-4, atol=1e-5)
    # noisy: every device slice gets its own programming noise
    noisy = Tile(20, 24, cfg(InferenceConfig(compensation="none"), mapping), seed=0)
    noisy.program(W)
    c = noisy.cells
    dev = c.g_prog - c.g_target
    for k in range(1, nd):
        assert not np.allclose(dev[0], dev[k])
    noisy.drift(3600.0)
    assert np.isfinite(noisy.read_weights()).all()
    # (single_offset: the digital offset assumes undrifted devices, so weights shift; they stay correlated)
    assert np.corrcoef(noisy.read_weights().ravel(), W.ravel())[0, 1] > 0.9


def test_numpy_engine_families_and_the_device_range_check():
    mapping = MappingConfig(kind="single_offset", g_min=9.0, g_max=88.2)
    inf = InferenceConfig(device="reram-cmo-falcone2025", compensation="per_column")
    W = weights(16, 12, 2)
    t = Tile(16, 12, cfg(inf, mapping), seed=3)
    t.program(W)
    assert not t._device.fused
    t.drift(3600.0)
    assert t.compensation_alpha.shape == (16,)
    assert np.abs(t.read_weights() - W).mean() < 0.3 * np.abs(W).mean()
    with pytest.raises(ValueError, match=r"outside the range .* of device 'reram-cmo-falcone2025'"):
        Tile(4, 4, cfg(inf), seed=0).program(np.ones((4, 4), np.float32))
    wan = Tile(8, 8, cfg(InferenceConfig(device="reram-wan2022", compensation="none")), seed=0)
    wan.program(weights(8, 8))
    wan.drift(86400.0)
    with pytest.raises(ValueError, match="tabulated"):
        wan.drift(90000.0)
    assert wan.time == 86400.0


def test_faults_use_the_model_and_read_back_stuck_values():
    inf = InferenceConfig(device_params={"stuck_on_prob": 0.1, "stuck_off_prob": 0.1}, compensation="none")
    t = Tile(30, 30, cfg(inf), seed=1)
    t.program(weights(30, 30))
    assert t._device.fused and t.cells.stuck.mean() > 0.1
    t.drift(1e6)
    st = t.cells.stuck
    np.testing.assert_array_equal(t.conductances()[st], t.cells.g_prog[st])


# ----------------------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("card", ["pcm-joshi2020", "hermes-2dev", "reram-wan2022"])
def test_same_seed_same_chip_on_any_thread_count(card):
    mapping = MappingConfig(g_max=20.7) if card.startswith("hermes") else MappingConfig()
    inf = InferenceConfig(device=card, verify_tol=0.5 if card != "reram-wan2022" else 0.0)
    W = weights(70, 90, 8)
    t_end = 86400.0 if card == "reram-wan2022" else 3600.0
    res = []
    n0 = numba.get_num_threads()
    try:
        for threads, seed in ((1, 5), (min(2, numba.config.NUMBA_NUM_THREADS), 5), (1, 6)):
            numba.set_num_threads(threads)
            arr = TileArray(70, 90, cfg(inf, mapping, forward=IOConfig()), seed=seed)
            arr.program(W)
            arr.drift(t_end)
            x = np.random.default_rng(0).uniform(-1, 1, (4, 90)).astype(np.float32)
            res.append((arr.read_weights(), arr.forward(x)))
    finally:
        numba.set_num_threads(n0)
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])
    assert not np.array_equal(res[0][0], res[2][0])


# ----------------------------------------------------------------------------------------- config

def test_inference_config_validation_and_json_round_trip():
    c = TileConfig(inference=InferenceConfig(device="state-independent", device_params={"nu_std": 0.0},
                                             compensation="per_column", verify_tol=0.2, verify_max_iter=3))
    assert TileConfig.from_json(c.to_json()) == c
    assert c.diff()["inference"]["compensation"] == "per_column"
    assert "per_column" in str(c)
    assert TileConfig.from_json(TileConfig().to_json()).inference is None
    assert InferenceConfig().compensation == DriftCompensation.GLOBAL
    for kw, msg in [({"device": "nonexistent"}, "unknown device card"),
                    ({"device": "capacitor"}, "not an inference card"),
                    ({"device_params": {"bogus": 1}}, "bogus"),
                    ({"device_params": {"prog_noise_scale": -1}}, "prog_noise_scale"),
                    ({"device_params": {"verify_tol": 1}}, "use InferenceConfig.verify_tol"),
                    ({"device": "none", "device_params": {"g_max": 1}}, "none"),
                    ({"compensation": "sometimes"}, "compensation"),
                    ({"verify_tol": -1}, "verify_tol"), ({"verify_max_iter": 1.5}, "verify_max_iter"),
                    ({"device": 3}, "device")]:
        with pytest.raises(ConfigError, match=msg):
            InferenceConfig(**kw)
    with pytest.raises(ConfigError, match="TileConfig.inference"):
        TileConfig(inference={"device": "pcm-joshi2020"})


def test_kernel_exp_accuracy():
    """The vectorisable float32 exp used by the drift kernel (checked through powerlaw_read, no noise)."""
    nu = np.linspace(0, 3, 4000, dtype=np.float32).reshape(40, 100)
    g = np.ones_like(nu)
    out = np.empty_like(nu)
    for L in (0.0, 0.37, 5.0, 25.0):
        kd.powerlaw_read(g, nu, np.zeros_like(nu), L, 0.0, np.uint32(0), np.uint32(0), np.uint64(0), out)
        x32 = -(nu * np.float32(L))            # the float32 argument the kernel forms
        np.testing.assert_allclose(out, np.exp(x32.astype(np.float64)), rtol=3e-7, atol=1e-30)
    assert math.isclose(float(out[0, 0]), 1.0)
