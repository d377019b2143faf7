"""Fused programming and drift of power-law-drift devices (PCM-like families, physics.md §3.1, §3.5).

The numpy families in ``device_models.inference`` are the oracle; these kernels evaluate the same formulas
in one sweep over the array with counter-based normals (``aimc.kernels.rng``), so a 10^7-device array is
programmed and read in tens of milliseconds on any thread count with identical numbers.

Arrays are 2-D float32 views (rows, n) of the device array; the normal for element (r, j) at stream call c
is the one ``fill_normal(out, k0, k1, c)`` writes at out[r, j] (``_normal_at`` reproduces it alone), so a
test can rebuild every draw. Calls used by one ``powerlaw_program`` with base call c: c for the first shot,
c + 1 for the drift exponent, c + 2 + k for the k-th program-and-verify retry.

Statistics at the targets: either given as arrays (any power-law family: the model's public
``programming_noise_std`` / ``drift_exponent_stats`` / ``read_noise_relative``), or, for the families
re-expressed here (``FAM_PCM``, ``FAM_STATE_INDEPENDENT``), evaluated inline from a parameter vector built
by ``aimc.inference`` (layout ``P_*`` below); tests hold both equal to ``device_models``.

First run: ``powerlaw_program`` and ``powerlaw_program_inline`` call a variant compiled with or without
program-and-verify (``tol > 0``), a compile-time constant, so a run without verify never compiles the
retry loop and its generator (the same code minus a dead branch: the same values).
"""
from __future__ import annotations

import numpy as np
from numba import prange, uint32, uint64

from . import njit, variant  # numba.njit; parallel kernels bind per aimc.kernels.mode()
from .rng import _bits_f32, _log, box_muller, normals_row, philox


FAM_ARRAYS, FAM_PCM, FAM_STATE_INDEPENDENT = -1, 0, 1
# parameter vector layout (float64)
P_GMAX, P_C0, P_C1, P_C2, P_PROG_SCALE, P_DRIFT_SCALE, P_READ_SCALE, P_NU_MEAN, P_NU_STD = range(9)
N_PARAMS = 9


@njit(inline="always", fastmath=True, cache=True)
def _ln(x):
    """float32 natural log of a positive float32 (vectorisable polynomial; x floored at 1e-30)."""
    return _log(max(x, np.float32(1e-30)))


@njit(inline="always", fastmath=True, cache=True)
def _exp(x):
    """float32 exp(x) for -87 < x < 88 that LLVM vectorises: 2^k * e^y, k = rint(x / ln 2), y = x - k ln 2
    (Cody-Waite split), e^y by its degree-7 Taylor polynomial on |y| <= ln2/2 (relative error < 1e-7)."""
    f32 = np.float32
    x = min(max(x, f32(-87.0)), f32(88.0))
    k = np.float32(np.rint(x * f32(1.4426950408889634)))
    y = (x - k * f32(0.693359375)) - k * f32(-2.12194440e-4)
    p = f32(1.0) + y * (f32(1.0) + y * (f32(0.5) + y * (f32(1.0 / 6) + y * (f32(1.0 / 24) + y * (
        f32(1.0 / 120) + y * (f32(1.0 / 720) + y * f32(1.0 / 5040)))))))
    return p * _bits_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(inline="always", fastmath=True, cache=True)
def _stats(fam, p, g):
    """(sigma_prog, mu_nu, sd_nu) at target g (uS, float32) for an inline family, in float32.

    PCM (Nandakumar et al. 2019; Joshi et al. 2020): sigma = (c0 + c1 gh + c2 gh^2) * prog_scale (c already
    rescaled by g_max/g_ref), gh = g/g_max; mu = clip(-0.0155 ln gh + 0.0244, 0.049, 0.1), sd =
    clip(-0.0125 ln gh - 0.0059, 0.008, 0.045), gh clamped >= 1e-7, both x drift_scale.
    State-independent: sigma = |c0 + c1 gh + c2 gh^2| * prog_scale; mu, sd = nu_mean, nu_std x drift_scale.
    """
    f32 = np.float32
    gh = g / f32(p[P_GMAX])
    poly = f32(p[P_C0]) + gh * (f32(p[P_C1]) + gh * f32(p[P_C2]))
    ds = f32(p[P_DRIFT_SCALE])
    if fam == FAM_PCM:
        lg = _ln(max(gh, f32(1e-7)))
        mu = min(max(f32(-0.0155) * lg + f32(0.0244), f32(0.049)), f32(0.1))
        sd = min(max(f32(-0.0125) * lg - f32(0.0059), f32(0.008)), f32(0.045))
        return poly * f32(p[P_PROG_SCALE]), mu * ds, sd * ds
    return abs(poly) * f32(p[P_PROG_SCALE]), f32(p[P_NU_MEAN]) * ds, f32(p[P_NU_STD]) * ds


@njit(inline="always", fastmath=True, cache=True)
def _qs(fam, p, g_prog):
    """Q_s at the programmed |g| (float32): PCM min(0.0088 / max(gh^0.65, 1e-3), 0.2); state-independent
    1/g_max."""
    f32 = np.float32
    if fam == FAM_PCM:
        gh = abs(g_prog) / f32(p[P_GMAX])
        pw = _exp(f32(0.65) * _ln(gh)) if gh > 0 else f32(0.0)
        return min(f32(0.0088) / max(f32(pw), f32(1e-3)), f32(0.2))
    return f32(1.0 / p[P_GMAX])


@njit(parallel=True, cache=True)
def powerlaw_stats(g_t, fam, p, sig, mu, sd):
    """The inline family's statistics at targets ``g_t`` into ``sig``, ``mu``, ``sd`` (for tests/oracles)."""
    rows, n = g_t.shape
    for r in prange(rows):
        for j in range(n):
            a, b, c = _stats(fam, p, g_t[r, j])
            sig[r, j] = a
            mu[r, j] = b
            sd[r, j] = c


@njit(parallel=True, fastmath=True, cache=True)
def powerlaw_rel(g_prog, stuck, fam, p, out):
    """out = read_scale * Q_s(|g_prog|), 0 where stuck (a pure function of the cells: recomputed, not stored)."""
    rows, n = g_prog.shape
    for r in prange(rows):
        for j in range(n):
            out[r, j] = 0.0 if stuck[r, j] else np.float32(p[P_READ_SCALE]) * _qs(fam, p, g_prog[r, j])


@njit(inline="always", cache=True)
def _normal_at(k0, k1, call, row, j):
    """The standard normal ``fill_normal`` puts at column j of row ``row`` for (key, call)."""
    blk = j // 4
    c0, c1, c2, c3 = philox(uint32(blk), uint32(row), uint32(call), uint32(uint64(call) >> uint64(32)), k0, k1)
    q = j - 4 * blk
    if q < 2:
        z0, z1 = box_muller(c0, c1)
    else:
        z0, z1 = box_muller(c2, c3)
    return z0 if (q & 1) == 0 else z1


@njit(inline="always", cache=True)
def _verify_row(g_t, sig, g_prog, r, tol, max_iter, k0, k1, call):
    """Program-and-verify of row r: while |g - g_t| > tol, up to max_iter fresh shots (calls call + 2 + k),
    each device keeping its best attempt."""
    zero = np.float32(0.0)
    for j in range(g_t.shape[1]):
        gt = g_t[r, j]
        g = g_prog[r, j]
        err = abs(g - gt)
        k = 0
        while err > tol and k < max_iter:
            z = _normal_at(k0, k1, call + uint64(2 + k), r, j)
            g2 = gt + sig[r, j] * z
            g2 = g2 if g2 > zero else zero
            e2 = abs(g2 - gt)
            if e2 < err:
                g = g2
                err = e2
            k += 1
        g_prog[r, j] = g


def powerlaw_program(g_t, sig, mu, sd, tol, max_iter, k0, k1, call, g_prog, nu):
    """Program targets ``g_t`` (uS): g = max(g_t + sig*xi, 0), with program-and-verify; nu = |mu + sd*xi'|.

    Program-and-verify (``tol`` > 0): while |g - g_t| > tol, up to ``max_iter`` fresh shots; the device keeps
    its best attempt (``device_models.InferenceModel`` semantics). ``sig``, ``mu``, ``sd`` are the family's
    statistics at the targets (``programming_noise_std``, ``drift_exponent_stats``).
    """
    _powerlaw_program(bool(np.float32(tol) > 0))(g_t, sig, mu, sd, tol, max_iter, k0, k1, call, g_prog, nu)


@variant
def _powerlaw_program(VERIFY):
    @njit(parallel=True, fastmath=True, cache=True)
    def powerlaw_program(g_t, sig, mu, sd, tol, max_iter, k0, k1, call, g_prog, nu):
        rows, n = g_t.shape
        tol = np.float32(tol)
        zero = np.float32(0.0)
        for r in prange(rows):
            buf = np.empty(n, np.float32)
            buf2 = np.empty(n, np.float32)
            for c in range(2):   # one inlined generator for both draws (half the code to compile)
                normals_row(buf if c == 0 else buf2, k0, k1, call + uint64(c), r)
            for j in range(n):
                g = g_t[r, j] + sig[r, j] * buf[j]
                g_prog[r, j] = g if g > zero else zero
                nu[r, j] = abs(mu[r, j] + sd[r, j] * buf2[j])
            if VERIFY:
                _verify_row(g_t, sig, g_prog, r, tol, max_iter, k0, k1, call)

    return powerlaw_program


def powerlaw_program_inline(g_t, fam, p, tol, max_iter, k0, k1, call, g_prog, nu, sig):
    """``powerlaw_program`` with the statistics of an inline family evaluated in the sweep (no faults here:
    cards with stuck-at probabilities use the model). ``sig`` is scratch (rows, n) used only with
    program-and-verify (may be (0, 0) otherwise)."""
    _powerlaw_program_inline(bool(np.float32(tol) > 0))(g_t, fam, p, tol, max_iter, k0, k1, call, g_prog, nu, sig)


@variant
def _powerlaw_program_inline(VERIFY):
    @njit(parallel=True, fastmath=True, cache=True)
    def powerlaw_program_inline(g_t, fam, p, tol, max_iter, k0, k1, call, g_prog, nu, sig):
        rows, n = g_t.shape
        tol = np.float32(tol)
        zero = np.float32(0.0)
        for r in prange(rows):
            buf = np.empty(n, np.float32)
            buf2 = np.empty(n, np.float32)
            for c in range(2):   # one inlined generator for both draws (half the code to compile)
                normals_row(buf if c == 0 else buf2, k0, k1, call + uint64(c), r)
            for j in range(n):
                sg, m32, d32 = _stats(fam, p, g_t[r, j])
                g = g_t[r, j] + sg * buf[j]
                g_prog[r, j] = g if g > zero else zero
                nu[r, j] = abs(m32 + d32 * buf2[j])
                if VERIFY:
                    sig[r, j] = sg
            if VERIFY:
                _verify_row(g_t, sig, g_prog, r, tol, max_iter, k0, k1, call)

    return powerlaw_program_inline


@njit(parallel=True, fastmath=True, cache=True)
def powerlaw_read(g_prog, nu, rel, log_ratio, factor, k0, k1, call, out):
    """out = max(g_d + |g_d|*rel*factor*xi, 0), g_d = g_prog * exp(-nu * log_ratio).

    ``log_ratio`` = ln((t + t0)/t0) (0 at t = 0), ``factor`` = sqrt(ln((t + t0 + t_read)/(2 t_read))) (the
    accumulated 1/f read-noise factor), ``rel`` = read_noise_scale * Q_s(|g_prog|) per device (0 for stuck
    devices, whose nu is 0 too, so they read back g_prog).
    """
    rows, n = g_prog.shape
    L = np.float32(log_ratio)
    F = np.float32(factor)
    zero = np.float32(0.0)
    for r in prange(rows):
        buf = np.empty(n, np.float32)
        normals_row(buf, k0, k1, call, r)
        for j in range(n):
            gd = g_prog[r, j] * _exp(-nu[r, j] * L)
            g = gd + abs(gd) * rel[r, j] * F * buf[j]
            out[r, j] = g if g > zero else zero
