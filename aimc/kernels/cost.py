"""Cost counting of an analog read in one sweep over the applied inputs (``aimc.cost``, issue 10).

``input_sums`` reads the applied (DAC-converted) inputs v of a pass once and returns, per row, the sums the
array energy needs for every input encoding, weighted by the per-input-line conductance g_j (the cells a
line drives, summed, in uS): sum v^2 g (amplitude), sum |v| g (pulse width), sum popcount(code) g (bit-serial),
and the number of non-zero inputs (driver pulses). One pass of O(rows x in), against the O(rows x in x out)
product, so counting stays cheap.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always", cache=True)
def _popcount32(k):
    """Bits set in a non-negative int32 (SWAR, all in int32 so that LLVM vectorises it)."""
    k = k - ((k >> np.int32(1)) & np.int32(0x55555555))
    k = (k & np.int32(0x33333333)) + ((k >> np.int32(2)) & np.int32(0x33333333))
    k = (k + (k >> np.int32(4))) & np.int32(0x0F0F0F0F)
    return ((k * np.int32(0x01010101)) >> np.int32(24)) & np.int32(0xFF)


def _input_sums(v, inv, g, step, out, acc):
    """For each row r of v (R x n, float32), with u = v[r] * inv[r] (the applied input, full scale 1; ``inv``
    empty: u = v[r]):

    out[r, 0] = sum_j u_j^2 g_j; out[r, 1] = sum_j |u_j| g_j;
    out[r, 2] = sum_j popcount(code_j) g_j with code_j = round(|u_j| / step) (0 if step <= 0);
    out[r, 3] = #{j: u_j != 0}; out[r, 4] = sum_j popcount(code_j) (the pulses of a bit-serial drive).
    Per row in float32 (relative error ~ n 2^-24); then acc (5,) += the rows in row order, in float64, so the
    totals do not depend on the thread count. ``out`` has at least R rows (a reused buffer: no allocation
    per pass).
    """
    n = v.shape[1]
    R = v.shape[0]
    scaled = inv.shape[0] > 0
    inv_step = np.float32(1.0 / step) if step > 0 else np.float32(0.0)
    for r in prange(R):
        f = abs(inv[r]) if scaled else np.float32(1.0)
        row = v[r]
        s2 = np.float32(0.0)
        s1 = np.float32(0.0)
        nz = 0
        for j in range(n):  # float32 reductions, reassociated (fastmath) so that LLVM vectorises them;
            # each row is summed by one thread, so the result does not depend on the thread count
            a = abs(row[j])
            s2 += a * a * g[j]
            s1 += a * g[j]
            nz += a != 0
        sb = np.float32(0.0)
        nb = 0
        if step > 0:
            fs = f * inv_step
            for j in range(n):
                k = np.int32(abs(row[j]) * fs + np.float32(0.5))  # the DAC code (inputs lie on its grid)
                pc = _popcount32(k)
                sb += np.float32(pc) * g[j]
                nb += pc
        out[r, 0] = np.float64(s2) * np.float64(f) * np.float64(f)
        out[r, 1] = np.float64(s1) * np.float64(f)
        out[r, 2] = np.float64(sb)
        out[r, 3] = nz
        out[r, 4] = nb
    for r in range(R):
        for k in range(5):
            acc[k] += out[r, k]


input_sums = njit(parallel=True, fastmath=True, cache=True)(_input_sums)
input_sums_serial = njit(fastmath=True, cache=True)(_input_sums)  # small passes: no thread-pool launch


@njit(fastmath=True, cache=True)
def abs_sums_max(W, axis, out):
    """out = sum of |W| over ``axis`` (0: per column, (in,); 1: per row, (out,)) in float32, and the return
    value max |W|, for the C-contiguous W (out x in).

    The per-line conductance of an unprogrammed differential tile (``aimc.mapping.line_conductance``) is
    s * out + 2 g_min x lines; kept cheap because training rewrites the weights every step. Two vectorised
    sweeps (measured ~2x faster than one sweep doing both, whose max reduction LLVM does not vectorise): the
    sums, then max |W| as the largest int32 bit pattern with the sign bit cleared (IEEE order of |w|).
    """
    m, n = W.shape
    if axis == 0:
        loc = np.zeros(n, np.float32)
        for i in range(m):
            row = W[i]
            for j in range(n):
                loc[j] += abs(row[j])
        out[:] = loc
    else:
        for i in range(m):
            row = W[i]
            acc = np.float32(0.0)
            for j in range(n):
                acc += abs(row[j])
            out[i] = acc
    flat = W.reshape(m * n).view(np.int32)
    mi = np.int32(0)
    for k in range(m * n):
        mi = max(mi, flat[k] & np.int32(0x7FFFFFFF))
    return np.array([mi], np.int32).view(np.float32)[0]




@njit(fastmath={"reassoc", "nsz"}, cache=True)
def copy_abs_sums(W, c, w, colsum, rowsum):
    """w = W / c[:, None] (``c`` empty: w = W) written into ``w``, with the sums of |w| per column (``colsum``,
    (in,)) and, when ``rowsum`` is not empty, per row (``rowsum``, (out,)), in float32; returns max |w|.

    The write of new weights (``Tile.set_weights``) with the sums that the per-line conductance needs
    (``aimc.mapping.write_weights``), taken while each row is still in L1: a weight rewrite before every
    forward (training) costs the cost counters no second sweep over W. The division is IEEE (no 'arcp' flag:
    no reciprocal), so w equals numpy's W / c bit for bit; the column sums add the rows in row order, as
    ``abs_sums_max``; the maximum is kept per column (a vertical max, which vectorises; a horizontal float max
    does not) and reduced once at the end. Each row is three short loops (write, column sums and max, row
    sum): one loop doing all of it measured slower (not vectorised).
    """
    m, n = W.shape
    scaled = c.shape[0] > 0
    rows = rowsum.shape[0] > 0
    loc = np.zeros(n, np.float32)
    mx = np.zeros(n, np.float32)
    for i in range(m):
        src = W[i]
        dst = w[i]
        if scaled:
            ci = c[i]
            for j in range(n):
                dst[j] = src[j] / ci
        else:
            for j in range(n):
                dst[j] = src[j]
        for j in range(n):
            b = abs(dst[j])
            loc[j] += b
            mx[j] = max(mx[j], b)
        if rows:
            rs = np.float32(0.0)
            for j in range(n):
                rs += abs(dst[j])
            rowsum[i] = rs
    colsum[:] = loc
    return mx.max() if n > 0 else np.float32(0.0)
