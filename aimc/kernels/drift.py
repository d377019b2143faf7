"""Fused programming and drift of power-law-drift devices (PCM-like families, physics.md §3.1, §3.5).

The numpy families in ``device_models.inference`` are the oracle; these kernels evaluate the same formulas
in one sweep over the array with counter-based normals (``aimc.kernels.rng``), so a 10^7-device array is
programmed and read in tens of milliseconds on any thread count with identical numbers.

Arrays are 2-D float32 views (rows, n) of the device array; the normal for element (r, j) at stream call c
is the one ``fill_normal(out, k0, k1, c)`` writes at out[r, j] (``_normal_at`` reproduces it alone), so a
test can rebuild every draw. Calls used by one ``powerlaw_program`` with base call c: c for the first shot,
c + 1 for the drift exponent, c + 2 + k for the k-th program-and-verify retry.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint32, uint64

from .rng import box_muller, normals_row, philox


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


@njit(parallel=True, cache=True)
def powerlaw_program(g_t, sig, mu, sd, tol, max_iter, k0, k1, call, g_prog, nu):
    """Program targets ``g_t`` (uS): g = max(g_t + sig*xi, 0), with program-and-verify; nu = |mu + sd*xi'|.

    Program-and-verify (``tol`` > 0): while |g - g_t| > tol, up to ``max_iter`` fresh shots; the device keeps
    its best attempt (``device_models.InferenceModel`` semantics). ``sig``, ``mu``, ``sd`` are the family's
    statistics at the targets (``programming_noise_std``, ``drift_exponent_stats``).
    """
    rows, n = g_t.shape
    tol = np.float32(tol)
    zero = np.float32(0.0)
    for r in prange(rows):
        buf = np.empty(n, np.float32)
        normals_row(buf, k0, k1, call, r)
        for j in range(n):
            g = g_t[r, j] + sig[r, j] * buf[j]
            g = g if g > zero else zero
            if tol > 0:
                err = abs(g - g_t[r, j])
                k = 0
                while err > tol and k < max_iter:
                    z = _normal_at(k0, k1, call + uint64(2 + k), r, j)
                    g2 = g_t[r, j] + sig[r, j] * z
                    g2 = g2 if g2 > zero else zero
                    e2 = abs(g2 - g_t[r, j])
                    if e2 < err:
                        g = g2
                        err = e2
                    k += 1
            g_prog[r, j] = g
        normals_row(buf, k0, k1, call + uint64(1), r)
        for j in range(n):
            nu[r, j] = abs(mu[r, j] + sd[r, j] * buf[j])


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
            gd = g_prog[r, j] * math.exp(-nu[r, j] * L)
            g = gd + abs(gd) * rel[r, j] * F * buf[j]
            out[r, j] = g if g > zero else zero
