"""Cost counting of an analog read in one sweep over the applied inputs (``aimc.cost``, issue 10).

``row_sums`` takes, per row of applied (DAC-converted) inputs v, the sums the array energy needs for every
input encoding, weighted by the per-input-line conductance g_j (the cells a line drives, summed, in uS):
sum v^2 g (amplitude), sum |v| g (pulse width), sum popcount(code) g (bit-serial), and the number of non-zero
inputs (driver pulses). The input-stage kernels (``kernels.periphery.input_stage``, ``patch_input_stage``)
call it on each row while the row is in L1, so counting costs no second sweep; ``input_sums`` is the sweep
over a finished v for the reads those kernels do not see whole. O(rows x in), against the O(rows x in x out)
product, so counting stays cheap.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from . import njit, serial  # numba.njit; parallel kernels bind per aimc.kernels.mode()


@njit(inline="always", cache=True)
def _popcount32(k):
    """Bits set in a non-negative int32 (SWAR, all in int32 so that LLVM vectorises it)."""
    k = k - ((k >> np.int32(1)) & np.int32(0x55555555))
    k = (k & np.int32(0x33333333)) + ((k >> np.int32(2)) & np.int32(0x33333333))
    k = (k + (k >> np.int32(4))) & np.int32(0x0F0F0F0F)
    return ((k * np.int32(0x01010101)) >> np.int32(24)) & np.int32(0xFF)


@njit(fastmath=True, cache=True)
def row_sums(row, f, g, fs, out, r):
    """The counting sums of one row of applied inputs u = row * f (full scale 1) into out[r, :5]:

    out[r, 0] = sum_j u_j^2 g_j; out[r, 1] = sum_j |u_j| g_j;
    out[r, 2] = sum_j popcount(code_j) g_j with code_j = round(|row_j| fs) (``fs`` = f / DAC step; fs 0: none);
    out[r, 3] = #{j: u_j != 0}; out[r, 4] = sum_j popcount(code_j) (the pulses of a bit-serial drive).

    float32 reductions, reassociated (fastmath) so that LLVM vectorises them; one row is summed by one
    thread, so the result does not depend on the thread count. Not IR-inlined (``inline="always"`` would
    lower it with its caller's flags): the input-stage kernels, which must not reassociate, call it while the
    row is in L1 (``kernels.periphery``) and keep these flags.
    """
    n = row.shape[0]
    s2 = np.float32(0.0)
    s1 = np.float32(0.0)
    nz = 0
    for j in range(n):
        a = abs(row[j])
        s2 += a * a * g[j]
        s1 += a * g[j]
        nz += a != 0
    sb = np.float32(0.0)
    nb = 0
    if fs > 0:
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


@njit(cache=True)
def add_rows(out, R, acc):
    """acc (5,) += out[:R] in row order, in float64: totals that do not depend on the thread count."""
    for r in range(R):
        for k in range(5):
            acc[k] += out[r, k]


def _input_sums(v, inv, g, step, out, acc):
    """For each row r of v (R x n, float32) the sums of ``row_sums`` of the applied input u = v[r] * inv[r]
    (full scale 1; ``inv`` empty: u = v[r]) into out[r] (popcounts only if step > 0), then acc (5,) += the rows
    in row order (``add_rows``). ``out`` has at least R rows (a reused buffer: no allocation per pass).
    The input-stage kernels compute the same sums in their own sweep (``kernels.periphery``); this one serves
    the reads whose inputs they do not see whole (perfect reads, weight slices, per-chip DAC levels).
    """
    R = v.shape[0]
    scaled = inv.shape[0] > 0
    inv_step = np.float32(1.0 / step) if step > 0 else np.float32(0.0)
    for r in prange(R):
        f = abs(inv[r]) if scaled else np.float32(1.0)
        row_sums(v[r], f, g, f * inv_step, out, r)
    add_rows(out, R, acc)


input_sums = njit(parallel=True, fastmath=True, cache=True)(_input_sums)
input_sums_serial = serial(_input_sums, fastmath=True, cache=True)  # small passes: no thread-pool launch


@njit(fastmath={"reassoc", "nsz"}, cache=True)
def write_line_sums(W, c, w, colsum, rowsum):
    """w = W / c[:, None] written into ``w`` (``c`` empty: w = W; ``w`` empty: W is only read), with the sums
    of |w| over each column into ``colsum`` (in,) and, when ``rowsum`` is not empty, over each row into
    ``rowsum`` (out,), float32; returns max |w|.

    The per-line conductance of a differential tile (``aimc.mapping``: s sum|w| + 2 g_min x lines,
    s = (g_max - g_min) / max|w|) taken in the write of new weights (``Tile.set_weights``), so that training (a
    rewrite before every forward) reads W once: eight rows are written, then summed while they are in L1.
    The column sums and maxima are vertical operations (they vectorise; a horizontal float max does not),
    loaded and stored once per eight rows; the row sums ride in the same loop as eight vector accumulators
    (one sweep for both directions; a separate horizontal pass per row cost as much again). A separate pass
    over w after numpy's copy measured as fast on a quiet machine but slower when other processes evict W
    from the cache. The division is IEEE (no 'arcp' flag), so w equals numpy's W / c bit for bit. Each
    column adds its eight rows pairwise, then the blocks in row order.
    """
    m, n = W.shape
    scaled = c.shape[0] > 0
    write = w.shape[0] > 0
    rows = rowsum.shape[0] > 0
    src = w if write else W
    loc = np.zeros(n, np.float32)
    mx = np.zeros(n, np.float32)
    for i0 in range(0, m, 8):
        i1 = min(i0 + 8, m)
        if write:
            for i in range(i0, i1):
                a, d = W[i], w[i]
                if scaled:
                    ci = c[i]
                    for j in range(n):
                        d[j] = a[j] / ci
                else:
                    for j in range(n):
                        d[j] = a[j]
        if i1 - i0 == 8:
            d0, d1, d2, d3 = src[i0], src[i0 + 1], src[i0 + 2], src[i0 + 3]
            d4, d5, d6, d7 = src[i0 + 4], src[i0 + 5], src[i0 + 6], src[i0 + 7]
            if rows:
                r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = np.float32(0.0)
                for j in range(n):
                    b0, b1, b2, b3 = abs(d0[j]), abs(d1[j]), abs(d2[j]), abs(d3[j])
                    b4, b5, b6, b7 = abs(d4[j]), abs(d5[j]), abs(d6[j]), abs(d7[j])
                    r0 += b0
                    r1 += b1
                    r2 += b2
                    r3 += b3
                    r4 += b4
                    r5 += b5
                    r6 += b6
                    r7 += b7
                    loc[j] += ((b0 + b1) + (b2 + b3)) + ((b4 + b5) + (b6 + b7))
                    mx[j] = max(mx[j], max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7))))
                rowsum[i0], rowsum[i0 + 1], rowsum[i0 + 2], rowsum[i0 + 3] = r0, r1, r2, r3
                rowsum[i0 + 4], rowsum[i0 + 5], rowsum[i0 + 6], rowsum[i0 + 7] = r4, r5, r6, r7
            else:
                for j in range(n):
                    b0, b1, b2, b3 = abs(d0[j]), abs(d1[j]), abs(d2[j]), abs(d3[j])
                    b4, b5, b6, b7 = abs(d4[j]), abs(d5[j]), abs(d6[j]), abs(d7[j])
                    loc[j] += ((b0 + b1) + (b2 + b3)) + ((b4 + b5) + (b6 + b7))
                    mx[j] = max(mx[j], max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7))))
        else:
            for i in range(i0, i1):
                row = src[i]
                rs = np.float32(0.0)
                for j in range(n):
                    b0 = abs(row[j])
                    loc[j] += b0
                    mx[j] = max(mx[j], b0)
                    rs += b0
                if rows:
                    rowsum[i] = rs
    colsum[:] = loc
    return mx.max() if n > 0 else np.float32(0.0)
