"""Pulse-response device models (device_models.pulsed) and fits to measured data (device_models.fit).

Closed forms with noise off, moment tests (3 standard errors) for the noise, bounds over 10^6 pulses,
the measured ReRAM fit (skips when shared/data is absent), errors that name the field, reproducibility.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import device_models as dm
from device_models import fit
from device_models.pulsed import (
    ConstantStep,
    DeviceArray,
    ExpStep,
    LinearStep,
    PiecewiseStep,
    PowStep,
    PulsedLookupTable,
    SoftBounds,
    SoftBoundsPmax,
)

NO_NOISE = dict(dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, dw_min_std=0.0)
PULSED_FAMILIES = ("constant-step", "linear-step", "soft-bounds", "soft-bounds-pmax", "exp-step", "pow-step",
                   "piecewise", "pulsed-lookup-table")
CARDS = ("reram-es", "reram-sb", "capacitor", "ecram-li", "ecram-mo", "idealized", "gokmen-vlasov", "pcm-pulsed",
         "reram-array-om", "reram-array-hfo2", "reram-gong2018-measured")

DATA = fit.default_data_path()
needs_data = pytest.mark.skipif(DATA is None, reason=f"shared/data/{fit.DATA_NAME} not present (outside this "
                                                      "environment); the measured-device checks need it")


def lut(**kw):
    base = dict(w_nodes=[-1.0, 0.0, 1.0], up=[2.0, 1.0, 0.5], down=[0.5, 1.0, 2.0], dw_min=0.01, w_min=-1.0,
                w_max=1.0)
    return PulsedLookupTable(**{**base, **kw})


def se_std(sigma, n):
    """Standard error of a sample standard deviation of n normal draws."""
    return sigma / math.sqrt(2 * (n - 1))


# ----------------------------------------------------------------------------------------------------------
# registry and cards
# ----------------------------------------------------------------------------------------------------------

def test_families_and_cards_registered():
    for f in PULSED_FAMILIES:
        assert f in dm.FAMILIES
    assert set(CARDS) <= set(dm.available("pulsed"))
    for name in CARDS:
        card = dm.read_card(name)
        assert card["kind"] == "pulsed" and card["citation"] and card["provenance"]
        dev = dm.load(name)
        assert dev.card == name and dev.states > 1
        devs = dev.sample_devices((8, 4), 0)
        for k in ("dw_up", "dw_down", "w_max", "w_min", "reference"):
            a = devs[k]
            assert a.shape == (8, 4) and a.dtype == np.float32
        assert np.all(devs.dw_up >= 0) and np.all(devs.dw_down >= 0)
        assert np.all(devs.w_min <= devs.w_max)


def test_card_numbers_follow_physics_table():
    es = dm.load("reram-es")
    assert (es.dw_min, es.up_down, es.A_up, es.A_down, es.gamma_up, es.a) == (0.00135, 0.259359, -1.18445,
                                                                             -0.081404, 5.0, -0.5)
    assert dm.load("idealized").states == pytest.approx(10000)
    assert dm.load("gokmen-vlasov").states == pytest.approx(1250)
    pcm = dm.load("pcm-pulsed")
    assert (pcm.w_min, pcm.w_max, pcm.dw_min_std_add, pcm.dw_min_std_slope) == (0.0, 2.0, 0.042, 0.108)
    om = dm.load("reram-array-om")
    assert om.dw_min_dtod_log_normal and om.subtract_symmetry_point and not om.mult_noise


# ----------------------------------------------------------------------------------------------------------
# closed forms, noise off
# ----------------------------------------------------------------------------------------------------------

def test_constant_step_counts_until_bound():
    dev = ConstantStep(dw_min=0.01, w_max=1.0, w_min=-1.0, dw_min_dtod=0.3, up_down_dtod=0.05, w_max_dtod=0.2,
                       w_min_dtod=0.2, dw_min_std=0.0)
    devs = dev.sample_devices((50,), 3)
    tr = dev.response_curve(150, 0, w0=np.zeros(50), devs=devs, rng=1)  # rng given, σ = 0: still exact
    n = np.arange(151)[:, None]
    expect = np.minimum(n * devs.dw_up.astype(np.float64), devs.w_max)
    np.testing.assert_allclose(tr, expect, rtol=2e-6, atol=2e-6)
    # and down to the lower bound
    w = dev.apply_pulses(np.zeros(50, np.float32), np.full(50, -400), devs)
    np.testing.assert_array_equal(w, devs.w_min)


def test_soft_bounds_closed_form():
    dev = SoftBounds(dw_min=0.01, w_max=1.2, w_min=-0.8, dw_min_dtod=0.3, up_down=0.1, up_down_dtod=0.05,
                     w_max_dtod=0.2, w_min_dtod=0.2, dw_min_std=0.0)
    devs = dev.sample_devices((40,), 5)
    tr = dev.response_curve(500, 0, w0=np.zeros(40), devs=devs).astype(np.float64)
    n = np.arange(501)[:, None]
    b, d = devs.w_max.astype(np.float64), devs.dw_up.astype(np.float64)
    np.testing.assert_allclose(tr, b * (1 - (1 - d / b) ** n), rtol=1e-5, atol=1e-5)
    # down from 0 toward w_min: w_n = w_min(1 - (1 - dw_down/|w_min|)^n)
    tr = dev.response_curve(0, 500, w0=np.zeros(40), devs=devs).astype(np.float64)
    bm, dd = devs.w_min.astype(np.float64), devs.dw_down.astype(np.float64)
    np.testing.assert_allclose(tr, bm * (1 - (1 - dd / -bm) ** n), rtol=1e-5, atol=1e-5)


def test_soft_bounds_pmax_mapping():
    dev = SoftBoundsPmax()  # p_max 1000, alpha 5e-4, range ±1 (physics.md §9)
    assert dev.B == pytest.approx(2 / (1 - math.exp(-0.5)))
    assert dev.B == pytest.approx(5.083, abs=5e-4)
    assert dev.w_max == pytest.approx(4.083, abs=5e-4)
    assert dev.w_min == -1.0
    assert dev.dw_min == pytest.approx(2.541e-3, abs=5e-7)
    assert dev.up_down == pytest.approx(0.6065, abs=5e-5)
    # documented dynamics under this module's rule: rate 2α toward w_max (up) and w_min (down)
    d = SoftBoundsPmax(**{k: v for k, v in NO_NOISE.items()})
    p = np.arange(301)
    up = d.response_curve(300, 0, w0=0.0).astype(np.float64)
    np.testing.assert_allclose(up, d.w_max - d.w_max * (1 - 2 * d.alpha) ** p, rtol=1e-5, atol=1e-5)
    down = d.response_curve(0, 300, w0=0.0).astype(np.float64)
    np.testing.assert_allclose(down, d.w_min - d.w_min * (1 - 2 * d.alpha) ** p, rtol=1e-5, atol=1e-5)


def test_linear_step_affine_recurrence():
    dev = LinearStep(dw_min=0.01, gamma_up=0.5, gamma_down=0.3, w_max=1.0, w_min=-1.0, gamma_up_dtod=0.0,
                     gamma_down_dtod=0.0, **NO_NOISE)
    s = -0.5 / 1.0
    w0 = -0.2
    n = np.arange(201)
    expect = np.minimum((w0 + 1 / s) * (1 + 0.01 * s) ** n - 1 / s, 1.0)  # w_{n+1} = w_n + dw(1 + s w_n)
    np.testing.assert_allclose(dev.response_curve(200, 0, w0=w0), expect, rtol=1e-5, atol=1e-6)
    f = dev.step_factor(np.float32(0.5), -1, dev.nominal_devices(()))
    assert f == pytest.approx(1 + 0.3 * 0.5)  # slope^- = -|γ_down|/w_min = +0.3: larger far from w_min


def test_exp_pow_piecewise_lookup_single_pulse_formulas():
    w = np.array([-0.9, -0.3, 0.2, 0.8], dtype=np.float32)
    es = ExpStep(dw_min=0.01, A_up=-1.2, A_down=-0.08, gamma_up=5.0, gamma_down=4.0, a=-0.5, b=-0.5,
                 w_max=1.0, w_min=-1.0, **NO_NOISE)
    devs = es.nominal_devices((4,))
    z = 2 * -0.5 * w.astype(np.float64) / 2.0 - 0.5
    np.testing.assert_allclose(es.pulse(w, 1, devs), w + 0.01 * (1 + 1.2 * np.exp(5 * z)), rtol=1e-6)
    np.testing.assert_allclose(es.pulse(w, -1, devs), w - 0.01 * (1 + 0.08 * np.exp(-4 * z)), rtol=1e-6)

    ps = PowStep(dw_min=0.01, pow_gamma=2.0, pow_gamma_dtod=0.0, pow_up_down=0.25, w_max=1.0, w_min=-1.0,
                 **NO_NOISE)
    devs = ps.nominal_devices((4,))
    om = (1.0 - w.astype(np.float64)) / 2.0
    np.testing.assert_allclose(ps.step_factor(w, 1, devs), om ** (2 * 1.25), rtol=1e-5)
    np.testing.assert_allclose(ps.step_factor(w, -1, devs), (1 - om) ** (2 * 0.75), rtol=1e-5)

    pw = PiecewiseStep(piecewise_up=[2.0, 1.0, 0.0], piecewise_down=[0.0, 1.0, 3.0], w_max=1.0, w_min=-1.0,
                       **NO_NOISE)
    devs = pw.nominal_devices((5,))
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_allclose(pw.step_factor(x, 1, devs), [2.0, 1.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(pw.step_factor(x, -1, devs), [0.0, 0.5, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(pw.step_factor(x, np.array([1, -1, 0, 1, -1]), devs), [2.0, 0.5, 0.0, 0.5, 3.0])

    lt = lut(**NO_NOISE)
    devs = lt.nominal_devices((5,))
    np.testing.assert_allclose(lt.step_factor(x, 1, devs), [2.0, 1.5, 1.0, 0.75, 0.5])
    np.testing.assert_allclose(lt.pulse(x, -1, devs), np.clip(x - 0.01 * np.interp(x, [-1, 0, 1], [0.5, 1, 2]),
                                                              -1, 1), rtol=1e-6)
    assert lt.symmetry_point == pytest.approx(0.0, abs=1e-6)


def test_symmetry_point_closed_form_matches_bisection():
    dev = SoftBounds(dw_min=0.01, up_down=0.2, w_max=1.0, w_min=-1.0, w_max_dtod=0.2, w_min_dtod=0.2)
    devs = dev.sample_devices((200,), 9)
    closed = dev.symmetry_points(devs)
    generic = super(SoftBounds, dev).symmetry_points(devs)
    np.testing.assert_allclose(closed, generic, atol=1e-5)
    nominal = (0.012 - 0.008) / (0.012 / 1.0 + 0.008 / 1.0)
    assert dev.symmetry_point == pytest.approx(nominal, rel=1e-5)
    assert ConstantStep().symmetry_point is None


def test_xi_parity_and_per_pulse_formula():
    """pulse(xi=...) is the documented rule, for multiplicative, additive and extended noise."""
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.5, 0.5, 64).astype(np.float32)
    xi = rng.standard_normal(64).astype(np.float32)
    d = rng.choice([-1, 0, 1], 64)
    for dev in (SoftBounds(dw_min=0.01, dw_min_std=0.5),
                SoftBounds(dw_min=0.01, dw_min_std=0.5, mult_noise=False),
                ExpStep(dw_min=0.01, dw_min_std=0.6, dw_min_std_add=0.04, dw_min_std_slope=0.1)):
        devs = dev.sample_devices((64,), 1)
        dw = np.where(d > 0, devs.dw_up, devs.dw_down).astype(np.float64)
        f = dev.step_factor(w, d, devs).astype(np.float64)
        if isinstance(dev, ExpStep):
            s = 0.6 * (0.04 + dw * f + 0.1 * np.abs(w))
        elif dev.mult_noise:
            s = 0.5 * dw * f
        else:
            s = 0.5 * dw
        expect = np.where(d != 0, np.clip(w + d * (dw * f + s * xi), devs.w_min, devs.w_max), w)
        np.testing.assert_allclose(dev.pulse(w, d, devs, xi=xi), expect, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# bounds, NaN, many pulses
# ----------------------------------------------------------------------------------------------------------

EXTRA_DEVICES = [
    SoftBoundsPmax(dw_min_std=2.0),
    PowStep(pow_gamma=3.0, pow_gamma_dtod=0.5, pow_up_down=0.3, dw_min=0.02, dw_min_std=3.0),
    PiecewiseStep(piecewise_up=[3.0, 1.0, 0.2, 0.0], piecewise_down=[0.0, 0.5, 1.0, 4.0], dw_min=0.02,
                  dw_min_std=3.0, corrupt_devices_prob=0.1),
    LinearStep(gamma_up=2.0, gamma_down=2.0, allow_increasing=True, dw_min=0.02, dw_min_std=3.0),
    ExpStep(dw_min=0.02, dw_min_std=5.0, dw_min_dtod=1.0, dw_min_dtod_log_normal=True),
    ConstantStep(dw_min=0.05, dw_min_std=10.0, mult_noise=False, corrupt_devices_prob=0.2),
]


@pytest.mark.parametrize("dev", [dm.load(c) for c in CARDS] + EXTRA_DEVICES,
                         ids=list(CARDS) + [type(d).__name__ for d in EXTRA_DEVICES])
def test_million_pulses_stay_in_bounds(dev):
    shape = (32, 32)
    devs = dev.sample_devices(shape, 7)
    rng = np.random.Generator(np.random.Philox(11))
    w = dev.clip(np.zeros(shape, np.float32), devs)
    total = 0
    while total < 1_000_000:
        n = rng.integers(-200, 201, shape)
        w = dev.apply_pulses(w, n, devs, rng)
        total += int(np.abs(n).sum())
        assert w.dtype == np.float32
        assert np.all(np.isfinite(w))
        assert np.all(w >= devs.w_min) and np.all(w <= devs.w_max)
    v = dev.visible(w, devs, rng)
    assert np.all(np.isfinite(v))


# ----------------------------------------------------------------------------------------------------------
# noise moments
# ----------------------------------------------------------------------------------------------------------

def test_c2c_noise_matches_dw_min_std_multiplicative():
    sigma, n = 0.3, 100_000
    dev = ConstantStep(dw_min=0.001, dw_min_std=sigma, dw_min_dtod=0.0, up_down_dtod=0.0, w_max=100.0,
                       w_min=-100.0, w_max_dtod=0.0, w_min_dtod=0.0)
    devs = dev.sample_devices((n,), 0)
    steps = dev.pulse(np.zeros(n, np.float32), 1, devs, rng=1).astype(np.float64) / 0.001
    assert abs(steps.mean() - 1) < 3 * sigma / math.sqrt(n)
    assert abs(steps.std() - sigma) < 3 * se_std(sigma, n)
    down = -dev.pulse(np.zeros(n, np.float32), -1, devs, rng=2).astype(np.float64) / 0.001
    assert abs(down.std() - sigma) < 3 * se_std(sigma, n)


def test_c2c_noise_additive_and_extended():
    n = 100_000
    sb = SoftBounds(dw_min=0.001, dw_min_std=2.0, mult_noise=False, w_max=1.0, w_min=-1.0, dw_min_dtod=0.0,
                    up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    devs = sb.nominal_devices((n,))
    w0 = np.full(n, 0.5, np.float32)  # f^+ = 0.5; additive noise amplitude σ·dw regardless of f
    steps = (sb.pulse(w0, 1, devs, rng=3).astype(np.float64) - 0.5) / 0.001
    assert abs(steps.mean() - 0.5) < 3 * 2.0 / math.sqrt(n)
    assert abs(steps.std() - 2.0) < 3 * se_std(2.0, n)

    es = ExpStep(dw_min=0.001, dw_min_std=0.6, dw_min_std_add=0.004, dw_min_std_slope=0.01, w_max=1.0,
                 w_min=-1.0, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    devs = es.nominal_devices((n,))
    w0 = np.full(n, -0.4, np.float32)
    f = float(es.step_factor(w0[:1], 1, es.nominal_devices((1,)))[0])
    expect_sd = 0.6 * (0.004 + 0.001 * f + 0.01 * 0.4)
    steps = es.pulse(w0, 1, devs, rng=4).astype(np.float64) + 0.4
    assert abs(steps.mean() - 0.001 * f) < 3 * expect_sd / math.sqrt(n)
    assert abs(steps.std() - expect_sd) < 3 * se_std(expect_sd, n)


def test_d2d_moments():
    n = 200_000
    dev = ConstantStep(dw_min=0.002, dw_min_dtod=0.3, up_down=0.1, up_down_dtod=0.05, w_max=0.6, w_min=-0.5,
                       w_max_dtod=0.1, w_min_dtod=0.2)
    devs = dev.sample_devices((n,), 42)
    up = devs.dw_up.astype(np.float64) / 0.002
    sd = math.hypot(0.3, 0.05)
    assert abs(up.mean() - 1.1) < 3 * sd / math.sqrt(n)
    assert abs(up.std() - sd) < 3 * se_std(sd, n)
    down = devs.dw_down.astype(np.float64) / 0.002
    assert abs(down.mean() - 0.9) < 3 * sd / math.sqrt(n)
    bmax = devs.w_max.astype(np.float64)
    assert abs(bmax.mean() - 0.6) < 3 * 0.06 / math.sqrt(n)
    assert abs(bmax.std() - 0.06) < 3 * se_std(0.06, n)
    bmin = devs.w_min.astype(np.float64)
    assert abs(bmin.mean() + 0.5) < 3 * 0.1 / math.sqrt(n)
    assert abs(bmin.std() - 0.1) < 3 * se_std(0.1, n)
    # up-down bias: dw_up - dw_down = 2·dw_min·β_ij
    beta = (devs.dw_up - devs.dw_down).astype(np.float64) / (2 * 0.002)
    assert abs(beta.std() - 0.05) < 3 * se_std(0.05, n)

    ln = ConstantStep(dw_min=0.002, dw_min_dtod=0.7, dw_min_dtod_log_normal=True, up_down_dtod=0.0)
    logs = np.log(ln.sample_devices((n,), 1).dw_up.astype(np.float64) / 0.002)
    assert abs(logs.mean()) < 3 * 0.7 / math.sqrt(n)
    assert abs(logs.std() - 0.7) < 3 * se_std(0.7, n)


def test_corrupt_devices_and_consistency():
    n = 100_000
    dev = SoftBounds(corrupt_devices_prob=0.1, corrupt_devices_range=0.05, w_max_dtod=1.5, w_min_dtod=1.5,
                     dw_min_dtod=2.0)
    devs = dev.sample_devices((n,), 3)
    stuck = devs.w_max == devs.w_min
    frac = stuck.mean()
    assert abs(frac - 0.1) < 3 * math.sqrt(0.1 * 0.9 / n)
    assert np.all(np.abs(devs.w_max[stuck]) <= 0.05)
    assert np.all(devs.w_min <= devs.w_max)
    assert np.all(devs.w_max[~stuck] >= 0) and np.all(devs.w_min[~stuck] <= 0)
    assert np.all(devs.dw_up > 0) and np.all(devs.dw_down > 0)
    w = dev.apply_pulses(np.full(n, 0.3, np.float32), np.ones(n, int), devs, 0)
    np.testing.assert_array_equal(w[stuck], devs.w_max[stuck])


def test_write_noise_visible_and_hidden():
    n = 100_000
    dev = ConstantStep(dw_min=0.002, write_noise_std=50.0, dw_min_std=0.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                       w_max_dtod=0.0, w_min_dtod=0.0)
    devs = dev.nominal_devices((n,))
    w = np.zeros(n, np.float32)
    v = dev.visible(w, devs, 5).astype(np.float64)
    assert abs(v.std() - 0.1) < 3 * se_std(0.1, n)
    np.testing.assert_array_equal(dev.visible(w, devs), w)  # no rng: no write noise
    touched = np.arange(n) % 2 == 0
    v2 = dev.visible(w, devs, 6, previous=v, touched=touched)
    np.testing.assert_array_equal(v2[~touched], v[~touched].astype(np.float32))
    assert np.all(v2[touched] != v[touched].astype(np.float32))
    # pulses act on the hidden weight: with σ = 0 the hidden trace is exact whatever the write noise
    w = dev.apply_pulses(w, np.full(n, 3), devs, 1)
    np.testing.assert_allclose(w, 0.006, rtol=1e-6)
    tr = dev.response_curve(5, 0, w0=0.0, rng=2, hidden=True)
    np.testing.assert_allclose(tr, 0.002 * np.arange(6), atol=1e-7)


def test_reference_subtraction_zero_shifts_symmetry_point():
    dev = SoftBounds(dw_min=0.01, up_down=0.2, subtract_symmetry_point=True, reference_std=0.0)
    devs = dev.sample_devices((1000,), 2)
    ws = dev.symmetry_points(devs)
    np.testing.assert_allclose(dev.visible(ws, devs), 0.0, atol=1e-6)
    noisy = SoftBounds(reference_mean=0.1, reference_std=0.05).sample_devices((100_000,), 3).reference
    assert abs(noisy.mean() - 0.1) < 3 * 0.05 / math.sqrt(1e5)
    assert abs(noisy.std() - 0.05) < 3 * se_std(0.05, 100_000)


def test_reset_decay_diffusion():
    dev = dm.load("pcm-pulsed")
    devs = dev.sample_devices((1000,), 1)
    w = dev.apply_pulses(np.zeros(1000, np.float32), np.full(1000, 5), devs, 2)
    mask = np.arange(1000) < 500
    r = dev.apply_reset(w, devs, rng=3, mask=mask)
    np.testing.assert_array_equal(r[~mask], w[~mask])
    assert abs(r[mask].mean() - 0.01) < 0.005  # reset 0.01 ± 0.01 noise, clipped at 0
    cap = dm.load("capacitor")
    cd = cap.nominal_devices((3,))
    w = np.array([0.5, -0.5, 0.0], np.float32)
    np.testing.assert_allclose(cap.decay(w, cd), w * (1 - 1e-6), rtol=1e-6)
    np.testing.assert_allclose(cap.decay(w, cd, alpha=1e5), w * 0.9, rtol=1e-5)
    diff = ConstantStep(diffusion=0.01, diffusion_dtod=0.0, w_max=10.0, w_min=-10.0)
    dd = diff.nominal_devices((100_000,))
    x = diff.diffuse(np.zeros(100_000, np.float32), dd, 4).astype(np.float64)
    assert abs(x.std() - 0.01) < 3 * se_std(0.01, 100_000)


# ----------------------------------------------------------------------------------------------------------
# reproducibility and bad input
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_result():
    dev = dm.load("reram-es")
    runs = []
    for seed in (5, 5, 6):
        devs = dev.sample_devices((16, 8), seed)
        g = np.random.Generator(np.random.Philox(seed))
        w = dev.apply_pulses(np.zeros((16, 8), np.float32), g.integers(-20, 21, (16, 8)), devs, g)
        runs.append((devs.dw_up.copy(), w, dev.visible(w, devs, g)))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0]) and not np.array_equal(runs[0][1], runs[2][1])
    np.testing.assert_array_equal(dev.response_curve(30, 30, rng=9), dev.response_curve(30, 30, rng=9))
    import pickle

    devs = dev.sample_devices((4, 3), 1)
    back = pickle.loads(pickle.dumps(devs))
    assert back.family == devs.family and back.shape == devs.shape
    for k in devs.keys():
        np.testing.assert_array_equal(back[k], devs[k])
    assert pickle.loads(pickle.dumps(dev)) == dev


@pytest.mark.parametrize("cls, kw, field", [
    (ConstantStep, {"dw_min": -0.001}, "dw_min"),
    (ConstantStep, {"dw_min": float("nan")}, "dw_min"),
    (ConstantStep, {"dw_min_std": -1.0}, "dw_min_std"),
    (ConstantStep, {"up_down": 1.5}, "up_down"),
    (ConstantStep, {"w_max": -1.0, "w_min": 0.0}, "w_max"),
    (ConstantStep, {"corrupt_devices_prob": 1.2}, "corrupt_devices_prob"),
    (ConstantStep, {"lifetime": 0.5}, "lifetime"),
    (ConstantStep, {"mult_noise": "yes"}, "mult_noise"),
    (LinearStep, {"gamma_up_dtod": -0.1}, "gamma_up_dtod"),
    (SoftBounds, {"w_min": 0.0}, "w_min"),
    (SoftBounds, {"reference_std": -1.0}, "reference_std"),
    (SoftBoundsPmax, {"alpha": 0.0}, "alpha"),
    (SoftBoundsPmax, {"range_min": 0.5}, "range_min"),
    (SoftBoundsPmax, {"p_max": 10.5}, "p_max"),
    (ExpStep, {"gamma_up": -1.0}, "gamma_up"),
    (PowStep, {"pow_gamma": 0.0}, "pow_gamma"),
    (PiecewiseStep, {"piecewise_up": [1.0, -2.0], "piecewise_down": [1.0, 1.0]}, "piecewise_up[1]"),
    (PiecewiseStep, {"piecewise_up": [1.0, 2.0], "piecewise_down": [1.0]}, "piecewise_down"),
    (PulsedLookupTable, {"w_nodes": [0.0, -1.0], "up": [1, 1], "down": [1, 1], "dw_min": 0.1}, "w_nodes"),
    (PulsedLookupTable, {"w_nodes": [0.0, 1.0], "up": [1, 1, 1], "down": [1, 1], "dw_min": 0.1}, "up"),
    (PulsedLookupTable, {"w_nodes": [0.0, 1.0], "up": [1, 1], "down": [1, 1]}, "dw_min"),
    (PulsedLookupTable, {"csv": "/nonexistent/file.csv"}, "csv"),   # the class reads no file (cards do)
    (PulsedLookupTable, {"w_nodes": [0.0, 1.0], "up": [1, 1], "down": [1, 1], "dw_min": 0.1, "n_nodes": 4},
     "n_nodes"),
])
def test_bad_parameters_name_the_field(cls, kw, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        cls(**kw)


def test_bad_cards_and_params_name_the_field(tmp_path: Path):
    with pytest.raises(ValueError, match="dw_min"):
        dm.from_params("soft-bounds-pmax", {"dw_min": 0.01})  # derived, cannot be set
    with pytest.raises(ValueError, match="gamma_upp"):
        dm.load("ecram-li", gamma_upp=0.1)
    with pytest.raises(ValueError, match="dw_min_std"):
        dm.load("reram-es", dw_min_std=-2.0)
    card = tmp_path / "bad.toml"
    card.write_text('name = "bad"\nkind = "pulsed"\nfamily = "soft-bounds"\ncitation = "x"\nprovenance = "y"\n'
                    "[params]\nw_max = 1.0\nw_min = 0.5\n")
    with pytest.raises(ValueError, match="w_min"):
        dm.load(card)
    card.write_text('name = "bad"\nkind = "pulsed"\nfamily = "no-such-family"\ncitation = "x"\nprovenance = "y"\n'
                    "[params]\n")
    with pytest.raises(ValueError, match="family"):
        dm.load(card)


def test_bad_inputs():
    dev = SoftBounds()
    devs = dev.sample_devices((4, 3), 0)
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        dev.pulse(np.zeros((3, 4)), 1, devs)
    with pytest.raises(ValueError, match="NaN"):
        dev.pulse(np.full((4, 3), np.nan), 1, devs)
    with pytest.raises(ValueError, match="direction"):
        dev.pulse(w, 2, devs)
    with pytest.raises(TypeError, match="n must be"):
        dev.apply_pulses(w, np.full((4, 3), 0.5), devs)
    with pytest.raises(ValueError, match="family"):
        dev.pulse(w, 1, ConstantStep().sample_devices((4, 3), 0))
    with pytest.raises(TypeError, match="rng"):
        dev.sample_devices((2,), "seed")
    with pytest.raises(ValueError, match="shape"):
        dev.sample_devices((-1, 2), 0)
    with pytest.raises(ValueError, match="n_up"):
        dev.response_curve(-1, 0)
    with pytest.raises(ValueError, match="previous"):
        dev.visible(w, devs, 0, touched=np.ones((4, 3), bool))
    assert isinstance(devs, DeviceArray)
    with pytest.raises(AttributeError, match="no array"):
        devs.not_there
    with pytest.raises(ValueError):
        devs.dw_up[0, 0] = 1.0  # read only


def test_apply_pulses_order_and_zero():
    dev = SoftBounds(dw_min=0.05, **NO_NOISE)
    devs = dev.nominal_devices((3,))
    w0 = np.zeros(3, np.float32)
    w = dev.apply_pulses(w0, np.array([5, -5, 0]), devs)
    one = w0
    for _ in range(5):
        one = dev.pulse(one, np.array([1, -1, 0]), devs)
    np.testing.assert_array_equal(w, one)
    assert w[2] == 0.0


# ----------------------------------------------------------------------------------------------------------
# the measured device (Gong et al. 2018)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gong():
    if DATA is None:
        pytest.skip(f"shared/data/{fit.DATA_NAME} not present (outside this environment)")
    up, down = fit.load_pulse_response(DATA)
    return up, down, fit.fit_lookup_table(up, down)


@needs_data
def test_measured_card_equals_refit(gong):
    up, down, p = gong
    card = dm.read_card("reram-gong2018-measured")["params"]
    for k in ("dw_min", "w_min", "w_max", "dw_min_std", "write_noise_std"):
        assert card[k] == pytest.approx(p[k], rel=1e-4), k
    for k in ("w_nodes", "up", "down"):
        np.testing.assert_allclose(card[k], p[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert card["mult_noise"] is False


@needs_data
def test_measured_fit_reproduces_shape_asymmetry_and_step(gong):
    up, down, p = gong
    dev = dm.load("reram-gong2018-measured")
    info = p["info"]
    ev = fit.evaluate(dev, up, down, info["w0_up"], info["w0_down"])
    assert ev["rms_smooth"] < 0.03 * ev["data_range"]           # shape: 0.048 of a 2.77 range
    assert ev["rms"] < 1.15 * ev["rms_noise_floor"]               # no worse than the read noise itself
    su, sd = fit.smooth(up, True), fit.smooth(down, False)
    mid = 0.5 * (dev.w_min + dev.w_max)
    # asymmetry: pulses spent in the lower and the upper half of the range, up and down, model vs data
    # (data: up 334/~480, down 718/243; the single trace has random-walk plateaus and jumps that a smooth
    # mean-step table does not follow, hence 25 %)
    for model, sm, direction in ((ev["model_up"], su, +1), (ev["model_down"], sd, -1)):
        lo_hi = [(max(sm.lo, dev.w_min) + 0.05, mid), (mid, min(sm.hi, dev.w_max) - 0.05)]
        for a, b in lo_hi:
            data_n = abs(sm.pulse_at(b) - sm.pulse_at(a))
            model_n = np.count_nonzero((model > a) & (model <= b))
            assert model_n == pytest.approx(data_n, rel=0.25), (direction, a, b)
    # the up/down asymmetry itself: up is fast low and slow high, down the reverse
    f_up = dev.step_factor(np.array([-0.9, 0.9], np.float32), 1, dev.nominal_devices((2,)))
    f_dn = dev.step_factor(np.array([-0.9, 0.9], np.float32), -1, dev.nominal_devices((2,)))
    assert f_up[0] > 2 * f_up[1] and f_dn[1] > 5 * f_dn[0]
    # step near the symmetry point: the data's mean step over w* ± 0.2 (pulse counts of the smooth)
    ws = dev.symmetry_point
    assert ws is not None and dev.w_min < ws < dev.w_max
    for sm in (su, sd):
        data_step = 0.4 / abs(sm.pulse_at(ws + 0.2) - sm.pulse_at(ws - 0.2))
        assert dev.dw_min == pytest.approx(data_step, rel=0.35)


@needs_data
def test_measured_fit_reproduces_noise(gong):
    up, down, p = gong
    dev = dm.load("reram-gong2018-measured")
    info = p["info"]
    devs = dev.nominal_devices((16,))
    tu = dev.response_curve(len(up), 0, w0=np.full(16, info["w0_up"], np.float32), devs=devs, rng=1)[1:]
    td = dev.response_curve(0, len(down), w0=np.full(16, info["w0_down"], np.float32), devs=devs, rng=2)[1:]
    data_diff = math.sqrt((np.diff(up).var() + np.diff(down).var()) / 2)
    sim_diff = math.sqrt((np.diff(tu, axis=0).var() + np.diff(td, axis=0).var()) / 2)
    assert sim_diff == pytest.approx(data_diff, rel=0.05)      # the scatter of consecutive reads
    ms = [fit.noise_moments(tu[:, i], td[:, i]) for i in range(16)]
    sim_step = np.mean([m["sigma_step"] for m in ms])
    assert sim_step == pytest.approx(info["sigma_step"], rel=0.25)  # the random walk, same estimator


@needs_data
def test_soft_bounds_and_exp_step_fits(gong):
    up, down, p = gong
    lut_rms = fit.evaluate(fit.lookup_device(p), up, down, p["info"]["w0_up"], p["info"]["w0_down"])["rms"]
    for fitter in (fit.fit_soft_bounds, fit.fit_exp_step):
        r = fitter(up, down, max_nfev=12)  # converged to within 1 % of the 60-evaluation rms
        assert r.rms_smooth < 0.05 * r.data_range, r.family
        assert r.rms < 1.1 * lut_rms, r.family
        dev = r.device
        assert isinstance(dev, (SoftBounds, ExpStep))


def test_lookup_from_csv_without_code(tmp_path: Path):
    """A user's CSV (up then down responses) becomes a device through a card alone."""
    truth = SoftBounds(dw_min=0.01, up_down=0.1, w_max=1.0, w_min=-1.0, dw_min_std=0.0, write_noise_std=2.0,
                       dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    tu = truth.response_curve(300, 0, w0=-0.9, rng=1)[1:]
    td = truth.response_curve(0, 300, w0=0.9, rng=2)[1:]
    csv = tmp_path / "meas.csv"
    np.savetxt(csv, np.column_stack([tu, td]), delimiter=",")
    card = tmp_path / "mine.toml"
    card.write_text('name = "mine"\nkind = "pulsed"\nfamily = "pulsed-lookup-table"\ncitation = "own data"\n'
                    f'provenance = "measured"\n[params]\ncsv = "{csv}"\nn_nodes = 12\ndw_min_dtod = 0.0\n')
    dev = dm.load(card)
    assert len(dev.w_nodes) == 12 and dev.mult_noise is False
    ws = dev.symmetry_point
    assert ws == pytest.approx(truth.symmetry_point, abs=0.1)
    step = float(dev.step_factor(np.float32(0.0), 1, dev.nominal_devices(())) * dev.dw_min)
    assert step == pytest.approx(0.011, rel=0.2)  # truth: dw_min(1 + up_down)(1 - 0/1)
    assert dev.write_noise_std * dev.dw_min == pytest.approx(0.02, rel=0.25)
    with pytest.raises(ValueError, match="either csv"):
        dm.from_params("pulsed-lookup-table", {"csv": str(csv), "w_nodes": [0, 1], "up": [1, 1], "down": [1, 1]})
    with pytest.raises(ValueError, match=r"does not read files.*from_params"):  # the class never reads a file
        PulsedLookupTable(csv=str(csv))
