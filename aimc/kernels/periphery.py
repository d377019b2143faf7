"""Fused element-wise passes of the analog MVM (physics.md §1.2): the matrix product itself goes to BLAS.

``input_stage``: x / (alpha f) -> DAC quantise -> clip -> + input noise, and sum v^2 per row, in one sweep.
``output_stage``: IR drop -> + weight noise -> nonlinearity -> + output noise -> ADC quantise -> clip, and a clip flag
per row, in one sweep. Randomness is keyed by the *original* batch row, so bound-management re-reads of a
subset of rows and any thread count give the same numbers.

First run: ``input_stage``, ``patch_input_stage`` and ``output_stage`` are Python functions that call a
variant compiled for the run's switches (stochastic rounding, input noise, weight noise drawn first;
``_variant``). A switch that is off is a compile-time constant, so Numba prunes its branch,
with the inlined random-number generator in it, before typing: a run compiles only the generators it uses,
and every variant computes the same values as the others where they overlap (the same code minus dead
branches). Variants compile on first use and are cached on disk like any kernel.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import prange, uint32

from . import njit, variant  # numba.njit; parallel kernels bind per aimc.kernels.mode()
from .cost import add_rows, row_sums
from .rng import _bits_f32, _f32_bits, normals_row, normals_rows, uniforms_row

NM_NONE, NM_ABS_MAX, NM_MAX, NM_CONSTANT = 0, 1, 2, 3


@njit(inline="always", cache=True)
def _nm_row(row, kind, thres):
    """Noise-management scale of one row (physics.md §1.3); ``thres`` > 0 caps ABS_MAX/MAX."""
    if kind == NM_NONE:
        return np.float32(1.0)
    if kind == NM_CONSTANT:
        return np.float32(thres) if thres > 0 else np.float32(1.0)
    if kind == NM_ABS_MAX:
        # max |x| as the max of the sign-cleared bit patterns (an integer reduction, which vectorises; a float
        # max in order does not): the same value for non-NaN rows; a NaN (bits above +inf) takes the loop below
        m = np.int32(0)
        for j in range(row.shape[0]):
            m = max(m, _f32_bits(row[j]) & np.int32(0x7FFFFFFF))
        if m <= np.int32(0x7F800000):
            a = _bits_f32(np.int32(m))
            if thres > 0 and a > thres:
                a = np.float32(thres)
            return a
    a = np.float32(-np.inf) if kind == NM_MAX else np.float32(0.0)
    for j in range(row.shape[0]):
        v = row[j] if kind == NM_MAX else abs(row[j])
        if v > a:
            a = v
    if thres > 0 and a > thres:
        a = np.float32(thres)
    return a


@njit(parallel=True, cache=True)
def nm_alpha(x, kind, thres, out):
    """Noise-management scale per row (physics.md §1.3); ``thres`` > 0 caps ABS_MAX/MAX."""
    for b in prange(x.shape[0]):
        out[b] = _nm_row(x[b], kind, thres)


@njit(inline="always", cache=True)
def _quantise_row(row, step, inv_step, sto, k0, k1, call_u, b):
    """In place: rint(v/step)*step (half to even), or stochastic rint(v/step + U - 0.5)*step with U
    keyed by (call_u, row b); step 0 = no quantisation (physics.md §1.4)."""
    if step <= 0:
        return
    n = row.shape[0]
    if sto:  # a compile-time constant in the kernel variants: the generator is compiled only where used
        u = np.empty(n, np.float32)
        uniforms_row(u, k0, k1, call_u, b)
        for j in range(n):
            row[j] = np.rint(row[j] * inv_step + u[j] - np.float32(0.5)) * step
    else:
        for j in range(n):
            row[j] = np.rint(row[j] * inv_step) * step


@njit(inline="always", cache=True)
def _input_row(row, inv, step, inv_step, bound, sto, noisy, noise, k0, k1, call_u, call_n, key, want_v2=True):
    """In place on one row: row * inv -> DAC quantise -> clip -> + noise (keyed by ``key``; only if ``noisy``,
    i.e. noise > 0); returns sum v^2 (summed in order: a serial chain, so 0 unless ``want_v2``)."""
    n = row.shape[0]
    for j in range(n):
        row[j] = row[j] * inv
    _quantise_row(row, step, inv_step, sto, k0, k1, call_u, key)
    for j in range(n):
        row[j] = min(max(row[j], -bound), bound)
    if noisy:
        z = np.empty(n, np.float32)
        normals_row(z, k0, k1, call_n, key)
        for j in range(n):
            row[j] += noise * z[j]
    acc = np.float32(0.0)
    if want_v2:
        for j in range(n):
            acc += row[j] * row[j]
    return acc


@njit(inline="always", cache=True)
def _aux_row(row, aux, r, sq_at, abs_at):
    if sq_at >= 0:
        for j in range(row.shape[0]):
            aux[sq_at + r, j] = row[j] * row[j]
    if abs_at >= 0:
        for j in range(row.shape[0]):
            aux[abs_at + r, j] = abs(row[j])


_variant = variant  # memoised build(*switches) -> the kernel compiled with those switches as constants (module doc)


def input_stage(x, rows, scale, step, bound, sto, noise, k0, k1, call_u, call_n, v, v2, aux, sq_at, abs_at,
                g=None, csum=None, cacc=None, cstep=0.0):
    """v[r] = clip(Q(x[rows[r]] / scale[r]), +-bound) + noise*xi and v2[r] = sum_j v[r, j]^2.

    Also fills the right-hand sides of the extra products in one sweep: aux[sq_at + r] = v^2 (PCM read
    noise) if sq_at >= 0, aux[abs_at + r] = |v| (IR drop) if abs_at >= 0. ``v2`` empty: not summed.
    Counting (``aimc.cost``): with ``g`` (n,) the cost counters' sums of each row (``kernels.cost.row_sums``,
    popcounts with DAC step ``cstep`` > 0) go into csum[r] while the row is in L1, and cacc (5,) += them in row
    order, as ``kernels.cost.input_sums`` of v would.
    """
    g, csum, cacc = _count_args(g, csum, cacc)
    _input_stage(bool(sto), bool(np.float32(noise) > 0))(x, rows, scale, step, bound, noise, k0, k1, call_u, call_n,
                                                          v, v2, aux, sq_at, abs_at, g, csum, cacc, cstep)


_NO_G = np.zeros(0, np.float32)
_NO_CSUM = np.zeros((0, 5), np.float64)
_NO_CACC = np.zeros(5, np.float64)


def _count_args(g, csum, cacc):
    """(g, csum, cacc) for the kernels: empty arrays when not counting."""
    if g is None:
        return _NO_G, _NO_CSUM, _NO_CACC
    return g, csum, cacc


@_variant
def _input_stage(STO, NOISY):
    @njit(parallel=True, fastmath=False, cache=True)
    def input_stage(x, rows, scale, step, bound, noise, k0, k1, call_u, call_n, v, v2, aux, sq_at, abs_at, g, csum,
                    cacc, cstep):
        n = x.shape[1]
        step = np.float32(step)
        inv_step = np.float32(1.0 / step) if step > 0 else np.float32(0.0)
        bound = np.float32(bound)
        noise = np.float32(noise)
        want_v2 = v2.shape[0] > 0
        count = g.shape[0] > 0
        fs = np.float32(1.0 / cstep) if cstep > 0 else np.float32(0.0)
        for r in prange(rows.shape[0]):
            b = rows[r]
            row = v[r]
            for j in range(n):
                row[j] = x[b, j]
            s = _input_row(row, np.float32(1.0) / scale[r], step, inv_step, bound, STO, NOISY, noise, k0, k1,
                           call_u, call_n, b, want_v2)
            if want_v2:
                v2[r] = s
            _aux_row(row, aux, r, sq_at, abs_at)
            if count:
                row_sums(row, np.float32(1.0), g, fs, csum, r)
        if count:
            add_rows(csum, rows.shape[0], cacc)

    return input_stage


# the layout of ``patch_input_stage``'s geometry array ``geo`` (int64): where the patches of a convolution lie
GEO_IMG, GEO_OH, GEO_OW, GEO_H, GEO_W, GEO_SY, GEO_SX, GEO_PY, GEO_PX, GEO_EH, GEO_EW = range(11)


def patch_input_stage(xflat, geo, koff, row0, nm_kind, nm_thres, zero_guard, step, bound,
                      sto, noise, k0, k1, call_u, call_n, v, v2, alpha, zero, aux, sq_at, abs_at,
                      g=None, csum=None, cacc=None, cstep=0.0):
    """im2col + zero padding + noise management + ``input_stage`` in one sweep over rows row0 .. row0 +
    len(alpha) - 1 of the patch matrix of a convolution, never writing the patch matrix (nor a padded input).

    ``geo`` (int64, ``GEO_*`` layout): the flat size of one image, the output size (oh, ow), the input size
    (H, W), the stride (sy, sx), the zero padding (py, px) and the flat steps (eh, ew) of one input row and
    column. ``koff`` (int64 (3, n)): per patch column j its flat offset off_j (channel, kernel row and column)
    and its kernel row and column offsets ky_j, kx_j in input pixels (dilation included). Patch row g (image
    g // (oh*ow), output position (oy, ox)) column j is the input pixel (iy, ix) = (oy sy - py + ky_j,
    ox sx - px + kx_j) of its channel, ``xflat[image * img + iy eh + ix ew + ...]``, or 0 outside the input
    (what a zero-padded input holds). Per row: alpha = the NM scale of ``nm_alpha``; if ``zero_guard`` and
    alpha < tiny, alpha = 1 and zero = 1 (``periphery.mvm``'s guard); then the row body of ``input_stage``
    keyed by the global row g, so every value equals the unfused path's. ``v2`` empty: not summed;
    ``g``/``csum``/``cacc``/``cstep``: the cost counters' sums, as in ``input_stage``.
    """
    g, csum, cacc = _count_args(g, csum, cacc)
    _patch_input_stage(bool(sto), bool(np.float32(noise) > 0))(
        xflat, geo, koff, row0, nm_kind, nm_thres, zero_guard, step, bound, noise, k0, k1,
        call_u, call_n, v, v2, alpha, zero, aux, sq_at, abs_at, g, csum, cacc, cstep)


@_variant
def _patch_input_stage(STO, NOISY):
    @njit(parallel=True, fastmath=False, cache=True)
    def patch_input_stage(xflat, geo, koff, row0, nm_kind, nm_thres, zero_guard, step, bound,
                          noise, k0, k1, call_u, call_n, v, v2, alpha, zero, aux, sq_at, abs_at, g, csum, cacc,
                          cstep):
        off = koff[0]
        ky = koff[1]
        kx = koff[2]
        n = off.shape[0]
        R = alpha.shape[0]
        img_size, oh, ow = geo[GEO_IMG], geo[GEO_OH], geo[GEO_OW]
        H, W, sy, sx = geo[GEO_H], geo[GEO_W], geo[GEO_SY], geo[GEO_SX]
        pad_y, pad_x, eh, ew = geo[GEO_PY], geo[GEO_PX], geo[GEO_EH], geo[GEO_EW]
        ky_max = 0
        kx_max = 0
        for j in range(n):
            ky_max = max(ky_max, ky[j])
            kx_max = max(kx_max, kx[j])
        step = np.float32(step)
        inv_step = np.float32(1.0 / step) if step > 0 else np.float32(0.0)
        bound = np.float32(bound)
        noise = np.float32(noise)
        tiny = np.float32(np.finfo(np.float32).tiny)
        want_v2 = v2.shape[0] > 0
        count = g.shape[0] > 0
        fs = np.float32(1.0 / cstep) if cstep > 0 else np.float32(0.0)
        npos = oh * ow
        for r in prange(R):
            gr = row0 + r
            img = gr // npos
            p = gr - img * npos
            oy = p // ow
            iy = oy * sy - pad_y
            ix = (p - oy * ow) * sx - pad_x
            base = img * img_size + iy * eh + ix * ew
            row = v[r]
            if iy >= 0 and ix >= 0 and iy + ky_max < H and ix + kx_max < W:  # the patch lies inside the input
                for j in range(n):  # an unsigned index: no negative-index wrap test per element (1.5x faster)
                    row[j] = xflat[np.uint64(base + off[j])]
            else:  # at the border: 0 where the padding lies
                for j in range(n):
                    inside = np.uint64(iy + ky[j]) < np.uint64(H) and np.uint64(ix + kx[j]) < np.uint64(W)
                    row[j] = xflat[np.uint64(base + off[j])] if inside else np.float32(0.0)
            a = _nm_row(row, nm_kind, nm_thres)
            z = 0
            if zero_guard and a < tiny:
                a = np.float32(1.0)
                z = 1
            alpha[r] = a
            zero[r] = z
            s = _input_row(row, np.float32(1.0) / a, step, inv_step, bound, STO, NOISY, noise, k0, k1, call_u,
                           call_n, gr, want_v2)
            if want_v2:
                v2[r] = s
            _aux_row(row, aux, r, sq_at, abs_at)
            if count:
                row_sums(row, np.float32(1.0), g, fs, csum, r)
        if count:
            add_rows(csum, R, cacc)

    return patch_input_stage


def output_stage(yin, rows, sig_row, s_el, w_noise2, ir_drop, ir_a_scale, a_mat, p_off, nl,
                 steps, bounds, sto, test_neg, k0, k1, call_n, call_u, clipped, y, sw_row, call_w, nclip, key_off,
                 row_scale=None, zero=None, col_scale=None, row_add=None):
    """From the product yin (R x M) into y[rows[r]] (B x M), for each row r, stage by stage over the row
    (each stage a simple loop over L1-resident data, so LLVM vectorises it):

    yin[:, :M] is W v; with IR drop, yin[:, p_off:p_off + M] is (W * position) v.
    IR drop (ir_drop > 0): a = ir_a_scale * a_mat; y -= ir_drop * a (0.5 - 0.2 a + 0.05 a^2) * (W*pos) v
    weight noise before the nonlinearity (aihwkit's order), only if ``sw_row`` is not empty: y += sigma_w z_w with
    sigma_w^2 = w_noise2 * s_el[r, i] (pcm_read) or sw_row[r]^2 (additive), z_w from the counter call ``call_w``
    nonlinearity (nl > 0): y <- y / (1 + |nl y|)
    noise: sigma^2 = sig_row[r]^2 + w_noise2 * s_el[r, i] (s_el empty or weight noise drawn above: sig_row alone);
    without a nonlinearity the caller folds the weight noise in here (one normal per output, same distribution)
    ADC: quantise with steps[i], clip to +-bounds[i] (per column; length-1 arrays: one for all columns;
    bound 0: no clip); clipped[r] = 1 if any output exceeded +bound (or -bound, if test_neg); nclip[r] = the
    number of outputs of row r beyond +-bound.
    Then, each only if given: the digital steps of ``output_stage_tiles`` (row_scale, zero, col_scale, row_add).
    """
    calls = np.zeros((1, 7), np.uint64)
    calls[0, 0], calls[0, 1], calls[0, 4], calls[0, 5], calls[0, 6] = k0, k1, call_n, call_u, call_w
    output_stage_tiles(yin, rows, sig_row, s_el, w_noise2, ir_drop, ir_a_scale, a_mat, p_off, nl, steps, bounds,
                       sto, test_neg, calls, clipped.reshape(-1, 1), y, sw_row, nclip.reshape(-1, 1), key_off,
                       _segs(y.shape[1]), _EMPTY_F if row_scale is None else row_scale,
                       _EMPTY_I8 if zero is None else zero, _EMPTY_F if col_scale is None else col_scale, _EMPTY_F,
                       _EMPTY_F2 if row_add is None else row_add)


_EMPTY_F = np.zeros(0, np.float32)
_EMPTY_F2 = np.zeros((0, 0), np.float32)
_EMPTY_I8 = np.zeros(0, np.int8)


@functools.lru_cache(maxsize=64)
def _segs(m: int) -> np.ndarray:
    return np.array([0, m], np.int64)


def output_stage_tiles(yin, rows, sig_row, s_el, w_noise2, ir_drop, ir_a_scale, a_mat, p_off, nl, steps, bounds,
                       sto, test_neg, calls, clipped, y, sw_row, nclip, key_off, seg, row_scale, zero, col_scale,
                       col_add, row_add):
    """``output_stage`` over the outputs of several tiles side by side (tile s owns columns seg[s] ..
    seg[s + 1] - 1 of yin and y; e.g. the tiles of a TileArray that share one input slice): tile s's random
    numbers come from its own stream calls ``calls[s]`` (uint64 (tiles, 7): ``periphery.draw_calls``' k0, k1,
    DAC-u, input-n, output-n, ADC-u, weight-n), counted from its first column, so each tile's columns get
    exactly the values of an ``output_stage`` call of its own. ``clipped`` (int8) and ``nclip`` (int32) are
    (R, tiles): the flags and counts of each tile's columns.

    Then the digital rescale of ``periphery.mvm`` and ``Tile._forward``, in their order and float32
    arithmetic, each only if its array is not empty: y[b] *= row_scale[b]; y[b] = 0 where zero[b];
    y[b, i] *= col_scale[i]; and then digital additions of the caller (an RNN's biases and input part):
    y[b, i] += col_add[i]; y[b, i] += row_add[b, i] (float32, in this order).
    """
    _output_stage(sw_row.shape[0] > 0, bool(sto))(
        yin, rows, sig_row, s_el, w_noise2, ir_drop, ir_a_scale, a_mat, p_off, nl, steps, bounds, test_neg, calls,
        clipped, y, sw_row, nclip, key_off, seg, row_scale, zero, col_scale, col_add, row_add)


SHORT_ROW = 64      # rows (of one tile) below this many outputs draw their output noise in blocks of rows
SHORT_BLOCKS = 512  # counter blocks (4 normals each) per such block of rows: 8 kB of normals, in L1


@_variant
def _output_stage(W_FIRST, STO):
    @njit(parallel=True, fastmath=False, cache=True)
    def output_stage(yin, rows, sig_row, s_el, w_noise2, ir_drop, ir_a_scale, a_mat, p_off, nl, steps, bounds,
                     test_neg, calls, clipped, y, sw_row, nclip, key_off, seg, row_scale, zero, col_scale, col_add,
                     row_add):
        m = y.shape[1]
        step = np.float32(steps[0])
        inv_step = np.float32(1.0 / step) if step > 0 else np.float32(0.0)
        bound = np.float32(bounds[0])
        ir_drop = np.float32(ir_drop)
        ir_a_scale = np.float32(ir_a_scale)
        nl = np.float32(nl)
        w_noise2 = np.float32(w_noise2)
        per_col = bounds.shape[0] > 1
        per_el = s_el.shape[0] > 0 and not W_FIRST
        R = rows.shape[0]
        # rows of one tile shorter than SHORT_ROW outputs: the output noise of BLK rows drawn in one generator
        # loop (``rng.normals_rows``: the same numbers as ``normals_row`` per row); longer rows vectorise alone
        nb = (m + 3) // 4
        blocked = seg.shape[0] == 2 and 0 < m < SHORT_ROW
        BLK = SHORT_BLOCKS // nb if blocked else 1
        nq = BLK * nb if blocked else 0
        qi = np.empty(nq, np.uint32)
        qr = np.empty(nq, np.int64)
        for q in range(nq):
            qr[q] = q // nb
            qi[q] = uint32(q - (q // nb) * nb)
        for bk in prange((R + BLK - 1) // BLK):
            r0 = bk * BLK
            rb = min(BLK, R - r0)
            zb = np.empty(4 * nb * BLK, np.float32)
            if blocked:
                kq = np.empty(rb * nb, np.uint32)
                for q in range(rb * nb):
                    kq[q] = uint32(rows[r0 + qr[q]] + key_off)
                normals_rows(zb, uint32(calls[0, 0]), uint32(calls[0, 1]), calls[0, 4], kq, qi, rb * nb)
            z = zb[:m]
            for r in range(r0, r0 + rb):
                if blocked:
                    z = zb[4 * nb * (r - r0):4 * nb * (r - r0) + m]
                b = rows[r]
                key = b + key_off  # the random counters' row (a chunk of a larger batch passes its first row)
                row = y[b]
                for i in range(m):
                    row[i] = yin[r, i]
                if ir_drop > 0:
                    for i in range(m):
                        a = ir_a_scale * a_mat[r, i]
                        row[i] -= (ir_drop * a * (np.float32(0.5) - np.float32(0.2) * a + np.float32(0.05) * a * a)
                                   * yin[r, p_off + i])
                if W_FIRST:
                    zw = np.empty(m, np.float32)
                    for s in range(seg.shape[0] - 1):
                        normals_row(zw[seg[s]:seg[s + 1]], uint32(calls[s, 0]), uint32(calls[s, 1]), calls[s, 6],
                                    key)
                    if s_el.shape[0] > 0:
                        for i in range(m):
                            row[i] += np.sqrt(w_noise2 * s_el[r, i]) * zw[i]
                    else:
                        for i in range(m):
                            row[i] += sw_row[r] * zw[i]
                if nl > 0:
                    for i in range(m):
                        row[i] = row[i] / (np.float32(1.0) + abs(nl * row[i]))
                if not blocked:
                    for s in range(seg.shape[0] - 1):
                        normals_row(z[seg[s]:seg[s + 1]], uint32(calls[s, 0]), uint32(calls[s, 1]), calls[s, 4], key)
                s0 = sig_row[r] * sig_row[r]
                if per_el:
                    for i in range(m):
                        row[i] += np.sqrt(s0 + w_noise2 * s_el[r, i]) * z[i]
                elif s0 > 0:
                    sg = np.sqrt(s0)
                    for i in range(m):
                        row[i] += sg * z[i]
                for s in range(seg.shape[0] - 1):
                    c0 = seg[s]
                    c1 = seg[s + 1]
                    flag = 0
                    cnt = 0
                    if per_col:   # calibrated per-column ADC ranges (aimc.calibration)
                        u = np.zeros(c1 - c0, np.float32)
                        if STO:
                            uniforms_row(u, uint32(calls[s, 0]), uint32(calls[s, 1]), calls[s, 5], key)
                        for i in range(c0, c1):
                            st = np.float32(steps[i])
                            if st > 0:
                                shift = u[i - c0] - np.float32(0.5) if STO else np.float32(0.0)
                                row[i] = np.rint(row[i] / st + shift) * st
                            v = row[i]
                            bd = np.float32(bounds[i])
                            if bd > 0:
                                if v > bd or v < -bd:
                                    cnt += 1
                                    if v > bd or test_neg:
                                        flag = 1
                                row[i] = min(max(v, -bd), bd)
                    else:
                        _quantise_row(row[c0:c1], step, inv_step, STO, uint32(calls[s, 0]), uint32(calls[s, 1]),
                                      calls[s, 5], key)
                        if bound > 0:
                            # counts, not a running max/min: integer sums vectorise, a float max reduction
                            # does not (it cost a third of the stage); max > bound iff some v > bound.
                            # The loop runs over the slice from 0: with range(c0, c1) Numba's wraparound check of
                            # a possibly negative index kept it scalar (5x slower: 0.11 vs 0.023 ms on 64 x 1024)
                            rs = row[c0:c1]
                            n_hi = 0
                            n_lo = 0
                            for i in range(rs.shape[0]):
                                v = rs[i]
                                n_hi += v > bound
                                n_lo += v < -bound
                                rs[i] = min(max(v, -bound), bound)
                            cnt = n_hi + n_lo
                            flag = 1 if (n_hi > 0 or (test_neg and n_lo > 0)) else 0
                    clipped[r, s] = flag
                    nclip[r, s] = cnt
                if row_scale.shape[0] > 0:
                    a = row_scale[b]
                    for i in range(m):
                        row[i] *= a
                if zero.shape[0] > 0 and zero[b] != 0:
                    for i in range(m):
                        row[i] = np.float32(0.0)
                if col_scale.shape[0] > 0:
                    for i in range(m):
                        row[i] *= col_scale[i]
                if col_add.shape[0] > 0:
                    for i in range(m):
                        row[i] += col_add[i]
                if row_add.shape[0] > 0:
                    for i in range(m):
                        row[i] += row_add[b, i]


    return output_stage



ADC_UNIFORM, ADC_SAR, ADC_RAMP = 0, 1, 2


@njit(parallel=True, fastmath=False, cache=True)
def adc_stage(y, rows, gain, offset, steps, bounds, kind, bits, caps, comp, group, inl, test_neg, clipped, nclip):
    """Converters with per-chip errors, in place on y[rows[r]] (after noise; replaces the ADC of
    ``output_stage``, which then ran without one): u = gain_i y_i + offset_i, clip flag and count as in
    ``output_stage`` (``steps``/``bounds`` of length 1 or one per column, as there), then by ``kind``:

    * ADC_UNIFORM: rint(u / step) step clipped to +-bound (step 0: clip only);
    * ADC_SAR (circuits_and_cost.md C.3, CrossSim SarADC): binary search over ``bits`` cycles against the CDAC
      of the column's ADC g = i // group, V_dac(code) = -bound + 2 bound sum_{n in code} caps[g, n] / C_tot
      (C_tot = sum caps[g] + 1 dummy unit), keeping bit n if u + comp[g] bound >= V_dac;
    * ADC_RAMP (single slope): transition k = 1 .. 2^bits - 1 at T_k = -bound + (k + inl[k-1]) Q, Q = 2 bound /
      2^bits (one ramp for the tile); the counter stops at the first transition above u + comp[g] bound, so
      code = #{k : max_{j <= k} T_j <= u + comp[g] bound} (monotonic in u whatever the DNL);

    both output the mid-rise level 2 bound (code + 1/2) / 2^bits - bound. Ideal caps (2^n), inl 0 and no
    offset: a uniform mid-rise quantiser with thresholds midway between its 2^bits levels.
    """
    m = y.shape[1]
    nlev = 2 ** bits
    per_col = bounds.shape[0] > 1
    ninl = inl.shape[0]
    pmax = np.empty(ninl, np.float64)   # prefix maximum of the ramp transitions (in LSB from -bound)
    run = -np.inf
    for k in range(ninl):
        run = max(run, k + 1.0 + inl[k])
        pmax[k] = run
    for r in prange(rows.shape[0]):
        b = rows[r]
        flag = 0
        cnt = 0
        for i in range(m):
            bound = bounds[i] if per_col else bounds[0]
            step = steps[i] if per_col else steps[0]
            u = gain[i] * y[b, i] + offset[i]
            if bound > 0 and (u > bound or u < -bound):
                cnt += 1
                if u > bound or test_neg:
                    flag = 1
            if kind == ADC_SAR:
                g = i // group
                ctot = 1.0
                for n in range(bits):
                    ctot += caps[g, n]
                v = u + comp[g] * bound
                code = 0
                acc = 0.0
                for n in range(bits - 1, -1, -1):
                    trial = acc + caps[g, n]
                    if v >= -bound + 2.0 * bound * trial / ctot:
                        code |= 1 << n
                        acc = trial
                u = np.float32(2.0 * bound * (code + 0.5) / nlev - bound)
            elif kind == ADC_RAMP:
                g = i // group
                t = (u + comp[g] * bound + bound) * nlev / (2.0 * bound)   # input in LSB above -bound
                code = np.searchsorted(pmax, t, side="right")
                u = np.float32(2.0 * bound * (code + 0.5) / nlev - bound)
            else:
                if step > 0:
                    u = np.float32(np.rint(u / step) * step)
                if bound > 0:
                    u = min(max(u, -bound), bound)
            y[b, i] = u
        clipped[r] = flag
        nclip[r] = cnt


@njit(parallel=True, fastmath=False, cache=True)
def dac_stage(v, rows, table, step, noise, k0, k1, call_n, v2, aux, sq_at, abs_at):
    """The DAC's per-chip level errors, in place on v (R x n: quantised and clipped inputs, no noise yet):
    magnitude code c = rint(|v| / step) of line j becomes table[j, c] steps (sign kept: a sign-magnitude
    DAC), then + noise * xi (keyed by rows[r], as ``input_stage``), v2[r] = sum v^2 (``v2`` empty: not summed) and
    the aux rows."""
    n = v.shape[1]
    top = table.shape[1] - 1
    step = np.float32(step)
    noise = np.float32(noise)
    for r in prange(v.shape[0]):
        row = v[r]
        for j in range(n):
            c = int(np.rint(abs(row[j]) / step))
            c = min(c, top)
            lv = np.float32(table[j, c]) * step
            row[j] = lv if row[j] >= 0 else -lv
        if noise > 0:
            z = np.empty(n, np.float32)
            normals_row(z, k0, k1, call_n, rows[r])
            for j in range(n):
                row[j] += noise * z[j]
        if v2.shape[0] > 0:
            acc = np.float32(0.0)
            for j in range(n):
                acc += row[j] * row[j]
            v2[r] = acc
        _aux_row(row, aux, r, sq_at, abs_at)
