"""In-situ presets against aihwkit 1.1.0's transfer compounds (issue 11): the amount Tiki-Taka v1 moves per
transfer against the nominal lr * A e_k, c-TTv2's auto-scale definition, and choppers that flip and are applied.

No torch needed: InsituTile on a bare Tile.
"""
from __future__ import annotations

import numpy as np
import pytest

from aimc.config import BoundManagement, IOConfig, NoiseManagement
from aimc.insitu import InsituTile, UpdateConfig, insitu
from aimc.tile import Tile
from device_models.pulsed import ConstantStep

QUIET = dict(dw_min_std=0.0, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, w_max=1.0,
             w_min=-1.0)
EXACT = UpdateConfig(pulse_type="none")


@pytest.fixture(autouse=True)
def one_numba_thread():
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def _tile(cfg, shape, seed=0):
    t = Tile(shape[0], shape[1], cfg, seed=seed)
    t.set_weights(np.zeros(shape, np.float32))
    return InsituTile(t, cfg, seed=seed, tile_id="p")


def test_tiki_taka_preset_is_aihwkits_transfer_compound():
    c = insitu("tiki-taka", device="idealized")
    assert c.fast_lr == 1.0 and c.scale_fast_lr is False                     # absolute fast LR (aihwkit 1.1.0)
    assert c.transfer_update == UpdateConfig()                              # BL 31, update + BL management
    assert c.transfer_update.desired_bl == 31 and c.transfer_update.update_management
    assert c.transfer_forward.noise_management == NoiseManagement.NONE
    assert c.transfer_forward.bound_management == BoundManagement.NONE
    assert c.transfer_forward.out_noise == IOConfig().out_noise and not c.transfer_forward.is_perfect
    assert c.transfer_lr == 1.0 and c.scale_transfer_lr and c.n_reads_per_transfer == 1 and c.units_in_mbatch


def test_tiki_taka_transfers_the_nominal_amount():
    """One transfer of column k moves C[:, k] by lr * A[:, k] (nominal): regression slope within 3 % of 1 over
    8 transfers of 256 devices, through the default noisy read (out_noise 0.06, 9-bit ADC). Expected error of the
    slope ~1 % (stochastic pulse counts and read noise). The former preset (BL 1, no update management) moved
    14 % of it here (slope 0.136)."""
    dw, lr = 0.001, 0.02                    # k = lr max|v| / dw = 10 < BL 31: no saturation of the pulse trains
    cfg = insitu("tiki-taka", device=ConstantStep(dw_min=dw, **QUIET))
    it = _tile(cfg, (256, 8), seed=4)
    A = np.random.default_rng(0).uniform(-0.5, 0.5, (256, 8)).astype(np.float32)
    it.A.set_weights(A)
    zx, zd = np.zeros((10, 8), np.float32), np.zeros((10, 256), np.float32)
    it.update(zx, zd, lr)                   # no gradient: A stays; one transfer (column 0)
    dC = it.C.visible.copy()
    assert np.all(dC[:, 1:] == 0) and np.any(dC[:, 0] != 0) and it.transfers == 1
    for _ in range(7):
        it.update(zx, zd, lr)
    np.testing.assert_array_equal(it.A.visible, A)
    dC = it.C.visible
    slope = float((dC * A).sum() / (lr * (A * A).sum()))
    assert abs(slope - 1.0) < 0.03, slope
    resid = dC - lr * A                      # per device: a few pulses of spread, no bias
    assert abs(float(resid.mean())) < 0.2 * dw and float(resid.std()) < 3 * dw


def test_tiki_taka_saturates_at_desired_bl_pulses_per_transfer():
    dw, lr = 0.001, 0.5                     # k = 250 > 31: update management clips at BL 31 pulses
    it = _tile(insitu("tiki-taka", device=ConstantStep(dw_min=dw, **QUIET)), (64, 2), seed=1)
    it.A.set_weights(np.full((64, 2), 0.5, np.float32))
    it.update(np.zeros((1, 2), np.float32), np.zeros((1, 64), np.float32), lr)
    np.testing.assert_allclose(it.C.visible[:, 0], 31 * dw, rtol=1e-4)


def _ema(values, m, tau):
    out = []
    for v in values:
        if m <= 0:
            m = v
        elif v > 0:
            m = (1 - tau) * m + tau * v
        out.append(m)
    return m, out


def test_c_ttv2_auto_scale_is_the_running_average_of_per_sample_maxima():
    """aihwkit (CPU, v1.1.0): m <- (1 - tau) m + tau max|v_b| per sample, tau = (1 - auto_momentum)/batch, the first
    sample sets m, zero samples are skipped; lr_A,b = fast_lr * desired_bl * dw_min_A / (x_bar_b d_bar_b)."""
    dw = 0.01
    cfg = insitu("c-ttv2", device=ConstantStep(dw_min=dw, **QUIET))
    assert cfg.auto_scale and cfg.auto_momentum == 0.99 and cfg.fast_lr == 0.1 and cfg.update.desired_bl == 5
    it = _tile(cfg, (4, 6))
    rng = np.random.default_rng(1)
    mx = md = bx = 0.0
    tau = (1 - 0.99) / 5
    for step in range(4):
        x = rng.uniform(-1, 1, (5, 6)).astype(np.float32) * rng.uniform(0.1, 3, (5, 1)).astype(np.float32)
        d = rng.normal(0, 0.1, (5, 4)).astype(np.float32) * rng.uniform(0.1, 3, (5, 1)).astype(np.float32)
        if step == 1:
            x[2] = 0.0                                                     # a zero sample is skipped
        lr_a = it._fast_lr(x, d, 0.3)
        mx, xs = _ema(np.abs(x).max(1), mx, tau)
        md, ds = _ema(np.abs(d).max(1), md, tau)
        np.testing.assert_allclose([it._xbar, it._dbar], [mx, md], rtol=1e-5)
        np.testing.assert_allclose(lr_a, 0.1 * 5 * dw / (np.array(xs) * np.array(ds)), rtol=1e-5)
        bx, _ = _ema([np.abs(x).max()], bx if step else 0.0, 0.01)
    assert bx > 1.3 * mx        # the former definition (EMA of the batch maximum) is clearly different here


def test_c_ttv2_choppers_flip_and_are_applied_to_update_and_read():
    """A chopped column c_j = -1 receives the sign-flipped gradient on A, and its read enters the buffer H with c_j,
    so H (and C) see the unchopped gradient; after its read each column's chopper flips with in_chop_prob."""
    dev = ConstantStep(dw_min=0.01, **QUIET)
    kw = dict(update=EXACT, transfer_forward=IOConfig(is_perfect=True), auto_scale=False, in_chop_prob=1.0)
    chopped, plain = (_tile(insitu("c-ttv2", device=dev, **kw), (4, 6)) for _ in range(2))
    c = np.array([1, -1, 1, -1, -1, 1], np.float32)
    chopped.chop[:] = c
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (3, 6)).astype(np.float32)
    d = rng.normal(0, 0.5, (3, 4)).astype(np.float32)
    for it in (chopped, plain):
        it.update(x, d, 0.2)                          # 3 MVMs: columns 0, 1, 2 read after the A update
    np.testing.assert_allclose(chopped.A.visible, plain.A.visible * c[None, :], atol=1e-6)
    assert np.any(plain.A.visible[:, 1] != 0)
    np.testing.assert_allclose(chopped.H, plain.H, atol=1e-5)       # the sign is recovered at the read
    assert np.any(plain.H[:, :3] != 0)
    np.testing.assert_allclose(chopped.C.visible, plain.C.visible, atol=1e-6)
    np.testing.assert_array_equal(chopped.chop, c * np.array([-1, -1, -1, 1, 1, 1]))   # read columns flipped
    np.testing.assert_array_equal(plain.chop, [-1, -1, -1, 1, 1, 1])


def test_c_ttv2_chopper_flip_rate():
    it = _tile(insitu("c-ttv2", device=ConstantStep(dw_min=0.01, **QUIET), in_chop_prob=0.3), (2, 50), seed=5)
    flips = 0
    reads = 0
    z = np.zeros((25, 50), np.float32), np.zeros((25, 2), np.float32)
    for _ in range(40):                               # 25 reads per call, 1000 in all
        before = it.chop.copy()
        it.update(*z, 0.1)
        flips += int((it.chop != before).sum())
        reads += 25
    p, se = flips / reads, np.sqrt(0.3 * 0.7 / reads)
    assert abs(p - 0.3) < 4 * se, p
