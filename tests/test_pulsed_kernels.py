"""Pulsed update kernels (aimc/kernels/pulsed.py) through ``aimc.insitu.PulsedArray``.

Closed forms with noise off, kernel == numpy oracle (device_models.pulsed) for the same pulses, expected
coincidence counts = lr x d / dw_min in mean (3 standard errors), train statistics, bounds over 10^6 pulses,
management formulas (physics.md §6), identical results on 1 and 2 numba threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest

import device_models as dm
from aimc.insitu import PulsedArray, UpdateConfig
from aimc.kernels import pulsed as K
from device_models.pulsed import (ConstantStep, ExpStep, LinearStep, PiecewiseStep, PowStep, PulsedLookupTable,
                                  SoftBounds, SoftBoundsPmax)

NO_D2D = dict(dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)

FAMILIES = {
    "constant-step": lambda **k: ConstantStep(dw_min=0.01, **k),
    "linear-step": lambda **k: LinearStep(dw_min=0.01, gamma_up=0.3, gamma_down=0.5, **k),
    "soft-bounds": lambda **k: SoftBounds(dw_min=0.01, **k),
    "soft-bounds-pmax": lambda **k: SoftBoundsPmax(alpha=0.01, p_max=100, **k),
    "exp-step": lambda **k: ExpStep(dw_min=0.01, **k),
    "pow-step": lambda **k: PowStep(dw_min=0.01, pow_gamma=1.7, **k),
    "piecewise": lambda **k: PiecewiseStep(dw_min=0.01, piecewise_up=(1.0, 0.5, 0.3, 0.1),
                                           piecewise_down=(0.2, 0.6, 0.9, 1.2), **k),
    "pulsed-lookup-table": lambda **k: PulsedLookupTable(w_nodes=(-0.6, -0.2, 0.3, 0.6), up=(1.2, 1.0, 0.5, 0.1),
                                                         down=(0.1, 0.8, 1.0, 1.3), dw_min=0.01, **k),
}
# transcendental steps: numpy's SIMD exp/pow and libm differ in the last bit
ATOL = {"exp-step": 1e-6, "pow-step": 1e-6}


def data(rng, b, n, m):
    return (rng.uniform(-1, 1, (b, n)).astype(np.float32), rng.normal(0, 1, (b, m)).astype(np.float32))


# ------------------------------------------------------------------------------------------- closed forms

def test_constant_step_closed_form():
    dev = ConstantStep(dw_min=0.01, dw_min_std=0.0, up_down_dtod=0.0, w_max=0.6, w_min=-0.6)
    pa = PulsedArray(dev, (4, 5), seed=0)
    pa.set_weights(np.zeros((4, 5), np.float32))
    for n in (1, 7, 30, 200):
        pa.set_weights(np.zeros((4, 5), np.float32))
        pa.apply_counts(np.full((4, 5), n))
        expect = np.minimum(n * pa.DWUD[0].astype(np.float64), pa.w_max)
        np.testing.assert_allclose(pa.w, expect, rtol=2e-5, atol=1e-7)
    pa.apply_counts(np.full((4, 5), -5000))
    np.testing.assert_array_equal(pa.w, pa.w_min)           # down to the bound, not beyond


def test_soft_bounds_closed_form():
    dev = SoftBounds(dw_min=0.01, dw_min_std=0.0, up_down_dtod=0.0, w_max=0.6, w_min=-0.6)
    pa = PulsedArray(dev, (3, 4), seed=1)
    b = pa.w_max.astype(np.float64)
    dw = pa.DWUD[0].astype(np.float64)
    for n in (1, 10, 100, 1000):
        pa.set_weights(np.zeros((3, 4), np.float32))
        pa.apply_counts(np.full((3, 4), n))
        np.testing.assert_allclose(pa.w, b * (1 - (1 - dw / b) ** n), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------- oracle parity

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kernel_equals_oracle(family):
    rng = np.random.default_rng(7)
    dev = FAMILIES[family](dw_min_std=0.0)
    pa = PulsedArray(dev, (13, 37), seed=3)
    atol = ATOL.get(family, 0.0)
    for ucfg in (UpdateConfig(), UpdateConfig(desired_bl=2), UpdateConfig(desired_bl=40),
                 UpdateConfig(pulse_type="deterministic_implicit")):
        pa.set_weights(rng.uniform(-0.5, 0.5, (13, 37)).astype(np.float32))
        w = pa.w.copy()
        x, d = data(rng, 4, 37, 13)
        rec = np.zeros((4, 13, 37), np.int32)
        pa.update(x, d, 0.5, ucfg, record=rec)
        assert np.abs(rec).sum() > 100
        for b in range(4):                                   # sample by sample, the same coincidences
            w = dev.apply_pulses(w, rec[b], pa.devs)
        np.testing.assert_allclose(pa.w, w, rtol=0, atol=atol)
        assert pa.n_pulses >= np.abs(rec).sum()
    n = rng.integers(-6, 7, (13, 37))
    expect = dev.apply_pulses(pa.w, n, pa.devs)
    pa.apply_counts(n)
    np.testing.assert_allclose(pa.w, expect, rtol=0, atol=atol)


def test_coincidence_signs_follow_minus_x_d():
    rng = np.random.default_rng(1)
    pa = PulsedArray(ConstantStep(dw_min=0.001, dw_min_std=0.0, w_max=10, w_min=-10), (6, 9), seed=0)
    x, d = data(rng, 20, 9, 6)
    rec = np.zeros((20, 6, 9), np.int32)
    pa.update(x, d, 0.05, UpdateConfig(), record=rec)
    prod = -np.einsum("bi,bj->bij", d, x)
    nz = rec != 0
    assert nz.sum() > 100
    assert np.all(np.sign(rec[nz]) == np.sign(prod[nz]))


# ------------------------------------------------------------------------------------------- statistics

@pytest.mark.parametrize("bl,um", [(31, True), (1, True), (5, True), (40, True), (31, False)])
def test_expected_counts_match_lr_x_d_over_dw_min(bl, um):
    """E[signed coincidences] = -lr x_j d_i / dw_min (k <= desired_bl, so no probability is capped)."""
    m, n, B = 5, 8, 3000
    rng = np.random.default_rng(bl)
    dev = ConstantStep(dw_min=0.001, dw_min_std=0.0, w_max=1e3, w_min=-1e3, **NO_D2D)
    pa = PulsedArray(dev, (m, n), seed=bl)
    x1 = rng.uniform(-1, 1, n).astype(np.float32)
    d1 = rng.normal(0, 1, m).astype(np.float32)
    k_target = 0.8 * bl
    lr = k_target * 0.001 / (np.abs(x1).max() * np.abs(d1).max())
    ucfg = UpdateConfig(desired_bl=bl, update_management=um, update_bl_management=um)
    if not um:  # without management p = sqrt(lr/(dw_min BL)) |v| must stay <= 1
        lr = 0.9 ** 2 * 0.001 * bl / max(np.abs(x1).max(), np.abs(d1).max()) ** 2
    x = np.tile(x1, (B, 1))
    d = np.tile(d1, (B, 1))
    rec = np.zeros((B, m, n), np.int32)
    pa.update(x, d, lr, ucfg, record=rec)
    mean = rec.mean(0)
    se = rec.std(0, ddof=1) / math.sqrt(B)
    expect = -lr * np.outer(d1, x1) / 0.001
    z = (mean - expect) / np.maximum(se, 1e-12)
    assert np.abs(z).max() < 4.5            # 40 cells: the max of 40 |z| stays below 4.5 w.p. > 99.9 %
    assert np.sqrt((z ** 2).mean()) < 1.5    # and the rms is ~1
    # the signed total over all cells (one statistic): within 3 standard errors
    tot = (rec * np.sign(expect)).reshape(B, -1).sum(1)
    assert abs(tot.mean() - np.abs(expect).sum()) < 3 * tot.std(ddof=1) / math.sqrt(B)


def test_train_bits_are_bernoulli():
    """row_trains: per-slot firing rate p (3 SE), nothing beyond BL, p = 0 and p >= 1 exact."""
    rng = np.random.default_rng(3)
    n = 4000
    v = np.concatenate([np.zeros(10), np.full(10, 5.0), rng.uniform(0.05, 1.0, n - 20)]).astype(np.float32)
    p = np.minimum(np.abs(v) * 0.7, 1.0)
    for bl in (1, 3, 7, 15, 16, 31, 32):
        out = np.empty(n, np.uint32)
        counts = np.zeros(bl)
        reps = 40
        tot = np.zeros(n)
        for r in range(reps):
            K.row_trains(v, np.float32(0.7), bl, r, 0, np.uint32(11), np.uint32(5), np.uint32(9), out)
            if bl < 32:
                assert not np.any(out >> np.uint32(bl))
            bits = (out[:, None] >> np.arange(bl, dtype=np.uint32)) & 1
            counts += bits[20:].sum(0)
            tot += bits.sum(1)
        assert np.all(tot[:10] == 0) and np.all(tot[10:20] == reps * bl)
        rate = counts / (reps * (n - 20))
        pm = p[20:].mean()
        se = math.sqrt((p[20:] * (1 - p[20:])).mean() / (reps * (n - 20)))
        assert np.all(np.abs(rate - pm) < 4 * se), (bl, rate, pm)
        # per element: total count over slots and repeats ~ bl * reps * p (chi-square style)
        mean_e = tot[20:] / (reps * bl)
        zz = (mean_e - p[20:]) / np.sqrt(p[20:] * (1 - p[20:]) / (reps * bl) + 1e-12)
        assert abs(zz.mean()) < 0.1 and 0.8 < zz.std() < 1.25


def test_management_formulas():
    x = np.array([[0.5, -1.0, 0.25]], np.float32)
    d = np.array([[0.02, -0.01]], np.float32)
    BL = np.empty(1, np.int32)
    sx = np.empty(1, np.float32)
    sd = np.empty(1, np.float32)
    lr, dw = 0.1, 0.001
    K.management(x, d, lr, dw, 31, True, True, 1.0, True, BL, sx, sd)
    k = lr * 1.0 * 0.02 / dw                       # = 2
    assert BL[0] == math.ceil(k)
    assert math.isclose(sx[0] * 1.0, math.sqrt(k / BL[0]), rel_tol=1e-6)   # p_x(x_max) = sqrt(k/BL)
    assert math.isclose(sd[0] * 0.02, math.sqrt(k / BL[0]), rel_tol=1e-6)
    assert math.isclose(BL[0] * sx[0] * sd[0] * dw, lr, rel_tol=1e-6)        # E update = lr |x d|
    K.management(x, d, 10.0, dw, 31, True, True, 1.0, True, BL, sx, sd)       # k = 200 > 31: d side clips
    assert BL[0] == 31 and math.isclose(sx[0] * 1.0, 1.0, rel_tol=1e-6) and sd[0] * 0.02 > 1
    K.management(x, d, lr, dw, 31, False, False, 1.0, True, BL, sx, sd)
    assert BL[0] == 31 and math.isclose(sx[0], math.sqrt(lr / (dw * 31)), rel_tol=1e-6) and sx[0] == sd[0]
    K.management(x * 0, d, lr, dw, 31, True, True, 1.0, True, BL, sx, sd)
    assert BL[0] == 0


def test_implicit_counts_are_rint_bl_qx_qd():
    pa = PulsedArray(ConstantStep(dw_min=0.001, dw_min_std=0.0, w_max=10, w_min=-10), (3, 4), seed=0)
    x = np.array([[0.3, -1.0, 0.55, 0.0]], np.float32)
    d = np.array([[1.0, -0.4, 0.05]], np.float32)
    rec = np.zeros((1, 3, 4), np.int32)
    ucfg = UpdateConfig(pulse_type="deterministic_implicit", desired_bl=31)
    pa.update(x, d, 0.02, ucfg, record=rec)
    BL = np.empty(1, np.int32)
    sx = np.empty(1, np.float32)
    sd = np.empty(1, np.float32)
    K.management(x, d, 0.02, 0.001, 31, True, True, 1.0, True, BL, sx, sd)
    qx = np.round(np.minimum(sx[0] * np.abs(x[0]), 1) / 0.01) * 0.01
    qd = np.round(np.minimum(sd[0] * np.abs(d[0]), 1) / 0.01) * 0.01
    n = np.rint(BL[0] * np.outer(qd, qx)) * -np.sign(np.outer(d[0], x[0]))
    np.testing.assert_array_equal(rec[0], n)


# ------------------------------------------------------------------------------------------- robustness

@pytest.mark.parametrize("card", ["reram-es", "reram-sb", "ecram-li", "pcm-pulsed"])
def test_bounds_hold_over_a_million_pulses(card):
    dev = dm.load(card, dw_min_std=3.0)       # large c2c noise: steps may point the wrong way
    pa = PulsedArray(dev, (20, 25), seed=5)   # 500 devices x 2000 pulses = 10^6
    rng = np.random.default_rng(0)
    for _ in range(4):
        pa.apply_counts(rng.choice([-500, 500], (20, 25)))
        assert np.all(np.isfinite(pa.w)) and np.all(np.isfinite(pa.visible))
        assert np.all(pa.w <= pa.w_max) and np.all(pa.w >= pa.w_min)
    assert pa.n_pulses == 10 ** 6 and pa.pulses.sum() == 10 ** 6
    x, d = data(rng, 64, 25, 20)
    pa.update(x * 50, d * 50, 10.0, UpdateConfig())  # saturated trains
    assert np.all(pa.w <= pa.w_max) and np.all(pa.w >= pa.w_min) and np.all(np.isfinite(pa.w))


def test_same_seed_same_weights_on_1_and_2_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    rng = np.random.default_rng(2)
    x, d = data(rng, 48, 70, 33)
    counts = rng.integers(-3, 4, (33, 70))
    results = []
    old = numba.get_num_threads()
    try:
        for th in (1, 2):
            numba.set_num_threads(th)
            pa = PulsedArray(dm.load("reram-es"), (33, 70), seed=9)   # c2c and write noise on
            pa.update(x, d, 0.05, UpdateConfig())
            pa.update(x, d, 0.05, UpdateConfig(desired_bl=40))
            pa.update(x, d, 0.05, UpdateConfig(pulse_type="deterministic_implicit"))
            pa.apply_counts(counts)
            results.append((pa.w.copy(), pa.visible.copy(), pa.pulses.copy()))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
