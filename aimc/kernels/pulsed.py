"""Pulsed (in-memory) update kernels: pulse-train coincidences and per-pulse device steps (physics.md §5–§6).

The weight update of a crossbar is W <- W - lr * d x^T, done in parallel on the array by stochastic pulse
trains (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016): over BL time slots input row j fires with probability
p_x,j, output column i with p_d,i; every coincidence moves w_ij by one device step in the direction
-sign(x_j d_i). ``management`` gives BL and the two scales per sample (update / BL management, §6),
``x_trains`` / ``d_trains`` draw the pulse trains as packed uint32 bit words, ``update_trains`` applies the
coincidences, and ``update_implicit`` the deterministic (implicit) counts BL * q(p_x) * q(p_d).
``apply_counts`` sends given pulse counts (transfers of TTv2/c-TTv2 and mixed precision).

Device step (contract of ``device_models.pulsed``, whose numpy code is the oracle; d = +1 up, -1 down)::

    dw = dw_up[ij] if up else dw_down[ij];  f = max(f_family^d(w), 0)
    s  = sigma*dw*f (multiplicative c2c) | sigma*dw (additive) | sigma*(add + dw*f + slope*|w|) (exp-step ext.)
    w' = min(max(w + d*(dw*f + s*xi), w_min[ij]), w_max[ij])

Coincidences are applied one at a time, each with its own c2c draw xi, in slot order; within one sample all
coincidences of a device have the same sign, so the per-device sequence equals the oracle's
``apply_pulses(w, n)`` with the coincidence count n (tested). Samples of a mini-batch are applied in order.

Pulse trains (``x_trains``/``d_trains``): a train of BL <= 32 slots is one uint32 word, bit t = slot t. The
firing probability p is quantised with a dithered 8-bit threshold T = floor(256 p + u), u ~ U[0, 1) per
element and sample, so E[T/256] = p exactly; the 32 slot bits are then drawn at once from eight random words
r_0..r_7 (LSB first: R <- R | r_m if bit m of T else R & r_m, giving P(bit) = T/256 for every slot,
independently). That costs two Philox calls per element instead of BL uniforms. Input trains are then
regrouped into per-slot bitsets and lists of the firing inputs, so a row visits only its coincidences: the work is O(pulses + rows * fired slots * in/32), not O(rows * in) per sample.

Randomness (``kernels.rng.philox`` keyed by (seed, tile)): input train of element j in sample b uses the
counter (blk, j, b, call_x); output trains (blk, i, b, call_d); the c2c normals of row i in sample b
(blk, i, b, call_n), consumed in pulse order. Every number is a pure function of where it is used, so the
result does not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import float32, float64, int32, prange, types, uint32
from numba.extending import intrinsic

from . import njit  # numba.njit; parallel kernels bind per aimc.kernels.mode()

from .rng import box_muller, philox

FAM_CONST, FAM_LINEAR, FAM_EXP, FAM_POW, FAM_PIECEWISE, FAM_LUT = 0, 1, 2, 3, 4, 5
NOISE_MULT, NOISE_ADD, NOISE_EXT = 0, 1, 2
_EXP_CAP = np.float32(80.0)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)


# ------------------------------------------------------------------------------------------- bit intrinsics

@intrinsic
def ctz32(typingctx, x):
    """Count trailing zeros of a uint32 (undefined for 0: callers test first)."""
    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.uint32(types.uint32), codegen


@intrinsic
def popcount32(typingctx, x):
    """Number of set bits of a uint32."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint32(types.uint32), codegen


# ------------------------------------------------------------------------------------------- management

@njit(parallel=True, cache=True)
def management(x, d, lr, dw_min, desired_bl, bl_management, update_management, um_grad_scale, fixed_bl,
               BL, sx, sd):
    """Per-sample pulse-train length BL[b] and probability scales (physics.md §6).

    p_x,j = sx[b]*|x_j|, p_d,i = sd[b]*|d_i| (capped at 1 by the train kernels); BL[b] = 0: no update.
    """
    nb = x.shape[0]
    for b in prange(nb):
        xm = float32(0.0)
        for j in range(x.shape[1]):
            xm = max(xm, abs(x[b, j]))
        dm = float32(0.0)
        for i in range(d.shape[1]):
            dm = max(dm, abs(d[b, i]))
        dm64 = float64(dm) * um_grad_scale
        if lr == 0.0 or xm == 0.0 or dm64 == 0.0:
            BL[b] = 0
            sx[b] = 0.0
            sd[b] = 0.0
            continue
        xm64 = float64(xm)
        bl = desired_bl
        if not fixed_bl and not bl_management and dw_min * desired_bl < lr:
            bl = max(int(math.ceil(lr / dw_min)), 1)
            a_ = 1.0
            b_ = 1.0
        else:
            k = lr * xm64 * dm64 / dw_min
            if bl_management:
                bl = min(int(math.ceil(k)), desired_bl)
                bl = max(bl, 1)
            a_ = math.sqrt(lr / (dw_min * bl))
            b_ = a_
            if update_management:
                if k > desired_bl:
                    dm64 = dm64 * desired_bl / k
                a_ = a_ * math.sqrt(xm64 / dm64)
                b_ = b_ * math.sqrt(dm64 / xm64)
        BL[b] = bl
        sx[b] = b_          # p_x = B |x|
        sd[b] = a_          # p_d = A |d|


# ------------------------------------------------------------------------------------------- pulse trains

@njit(inline="always", cache=True)
def _bits8(T, r0, r1, r2, r3, r4, r5, r6, r7):
    """32 independent bits with P(1) = T/256 (T in 0..255) from eight random words (LSB of T first)."""
    R = uint32(0)
    R = (R | r0) if (T & 1) else (R & r0)
    R = (R | r1) if (T & 2) else (R & r1)
    R = (R | r2) if (T & 4) else (R & r2)
    R = (R | r3) if (T & 8) else (R & r3)
    R = (R | r4) if (T & 16) else (R & r4)
    R = (R | r5) if (T & 32) else (R & r5)
    R = (R | r6) if (T & 64) else (R & r6)
    R = (R | r7) if (T & 128) else (R & r7)
    return R


@njit(cache=True)
def row_trains(v, s, bl, b, chunk, call, k0, k1, out, e0=0):
    """Trains of the elements of one sample row ``v`` (probability min(s|v_e|, 1), 1 <= ``bl`` <= 32 slots)
    into ``out[e]`` (bit t = slot t). ``v`` may be a slice starting at element ``e0`` (a multiple of 4) of the
    row: counters use the element's index e0 + e in the row, so slices give the same trains as the whole row. Trains longer than 32 slots are chunks of <= 32 independent slots
    (``chunk`` = 0, 1, ...), each with its own counters (the third counter word is kind + 4 * chunk).

    Random words of element e: bl <= 3: word e % 4 of call (e // 4, b, 3, call), lane m = bits m*bl ...
    m*bl + bl - 1, dither = bits 24 ... 31. 4 <= bl <= 15: one Philox call, counter (e, b, 0, call); its eight 16-bit halves are
    the lanes (low bl bits) and their bit 15 the dither byte. 16 <= bl <= 31: calls (2e, b, 0, call) and
    (2e + 1, b, 0, call), eight 32-bit lanes, dither = their bit 31. bl = 32: plus call (e, b, 2, call) whose
    low byte is the dither. Every loop is branch-free in e (vectorised).
    """
    n = v.shape[0]
    c3 = uint32(call)
    bb = uint32(b)
    sf = float32(s)
    one = uint32(1)
    ck = uint32(4 * chunk)
    if bl <= 3:
        full = uint32((1 << bl) - 1)
        sh = uint32(bl)
        g0 = e0 >> 2
        for g in range((n + 3) // 4):
            a0, a1, a2, a3 = philox(uint32(g0 + g), bb, ck + uint32(3), c3, k0, k1)
            for q in range(4):
                e = 4 * g + q
                if e < n:
                    r = a0 if q == 0 else (a1 if q == 1 else (a2 if q == 2 else a3))
                    p = min(sf * abs(v[e]), float32(1.0))
                    T = int32(p * float32(256.0) + float32(r >> uint32(24)) * float32(1.0 / 256.0))
                    W = _bits8(T, r, r >> sh, r >> (sh * uint32(2)), r >> (sh * uint32(3)), r >> (sh * uint32(4)),
                               r >> (sh * uint32(5)), r >> (sh * uint32(6)), r >> (sh * uint32(7)))
                    out[e] = full if T >= 256 else W & full
    elif bl <= 15:
        full = uint32((1 << bl) - 1)
        for e in range(n):
            p = min(sf * abs(v[e]), float32(1.0))
            a0, a1, a2, a3 = philox(uint32(e0 + e), bb, ck, c3, k0, k1)
            u = (((a0 >> uint32(15)) & one) | (((a0 >> uint32(31)) & one) << uint32(1))
                 | (((a1 >> uint32(15)) & one) << uint32(2)) | (((a1 >> uint32(31)) & one) << uint32(3))
                 | (((a2 >> uint32(15)) & one) << uint32(4)) | (((a2 >> uint32(31)) & one) << uint32(5))
                 | (((a3 >> uint32(15)) & one) << uint32(6)) | (((a3 >> uint32(31)) & one) << uint32(7)))
            T = int32(p * float32(256.0) + float32(u) * float32(1.0 / 256.0))
            W = _bits8(T, a0, a0 >> uint32(16), a1, a1 >> uint32(16), a2, a2 >> uint32(16), a3, a3 >> uint32(16))
            out[e] = full if T >= 256 else W & full
    else:
        full = uint32(0xFFFFFFFF) if bl >= 32 else uint32((1 << bl) - 1)
        for e in range(n):
            p = min(sf * abs(v[e]), float32(1.0))
            a0, a1, a2, a3 = philox(uint32(2 * (e0 + e)), bb, ck, c3, k0, k1)
            a4, a5, a6, a7 = philox(uint32(2 * (e0 + e) + 1), bb, ck, c3, k0, k1)
            if bl < 32:
                u = ((a0 >> uint32(31)) | ((a1 >> uint32(31)) << uint32(1)) | ((a2 >> uint32(31)) << uint32(2))
                     | ((a3 >> uint32(31)) << uint32(3)) | ((a4 >> uint32(31)) << uint32(4))
                     | ((a5 >> uint32(31)) << uint32(5)) | ((a6 >> uint32(31)) << uint32(6))
                     | ((a7 >> uint32(31)) << uint32(7)))
            else:
                d0, _, _, _ = philox(uint32(e0 + e), bb, ck + uint32(2), c3, k0, k1)
                u = d0 & uint32(0xFF)
            T = int32(p * float32(256.0) + float32(u) * float32(1.0 / 256.0))
            W = _bits8(T, a0, a1, a2, a3, a4, a5, a6, a7)
            out[e] = full if T >= 256 else W & full


@njit(parallel=True, cache=True)
def x_trains(x, sx, BL, k0, k1, call, XT, SX, CNT):
    """Input trains, transposed: XT[b, t, jw] bit (j % 32) = input j fires in slot t; SX[b, jw] bit = x_j < 0;
    CNT[b, t] = number of inputs firing in slot t. XT: uint32 (batch, 32 * nw, ceil(in/32)); every output array
    is fully written (trains longer than 32 slots are 32-slot chunks, see ``row_trains``)."""
    nb, n = x.shape
    nwj = XT.shape[2]
    nw = XT.shape[1] // 32
    for b in prange(nb):
        bl = BL[b]
        for t in range(XT.shape[1]):
            CNT[b, t] = 0
            for jw in range(nwj):
                XT[b, t, jw] = uint32(0)
        for jw in range(nwj):
            SX[b, jw] = uint32(0)
        if bl == 0:
            continue
        words = np.zeros((nw, 32 * nwj), np.uint32)
        for w in range((bl + 31) // 32):
            row_trains(x[b], sx[b], min(bl - 32 * w, 32), b, w, call, k0, k1, words[w])
        for jw in range(nwj):
            sg = uint32(0)
            for jb in range(32):
                j = 32 * jw + jb
                neg = (x[b, j] < 0) if j < n else False
                sg |= uint32(neg) << uint32(jb)
            SX[b, jw] = sg
        for t in range(bl):
            w = t >> 5
            tt = uint32(t & 31)
            c = 0
            for jw in range(nwj):
                acc = uint32(0)
                for jb in range(32):
                    acc |= ((words[w, 32 * jw + jb] >> tt) & uint32(1)) << uint32(jb)
                XT[b, t, jw] = acc
                c += popcount32(acc)
            CNT[b, t] = c


@njit(parallel=True, cache=True)
def x_lists(XT, SX, OFF, IDX):
    """Compressed per-slot lists of the firing inputs: IDX[OFF[b*T + t] : OFF[b*T + t + 1]] = the inputs j firing
    in slot t of sample b (T = XT.shape[1]), stored as j (x_j >= 0) or ~j (x_j < 0)."""
    nb, T, nwj = XT.shape
    for b in prange(nb):
        for t in range(T):
            k = OFF[b * T + t]
            for jw in range(nwj):
                msk = XT[b, t, jw]
                sg = SX[b, jw]
                while msk != 0:
                    jb = ctz32(msk)
                    msk &= msk - uint32(1)
                    j = int32(jw * 32 + int(jb))
                    IDX[k] = ~j if ((sg >> jb) & uint32(1)) != 0 else j
                    k += 1


@njit(parallel=True, cache=True)
def d_trains(d, sd, BL, k0, k1, call, DW, SD):
    """Output trains in the blocked layout the update reads: DW[i // 16, b, w, i % 16] (uint32 words, bit t =
    slot 32 w + t; one cache line per 16 outputs and sample) and SD[i // 16, b, i % 16] = 1 if d_i < 0.
    The sample axis of DW and SD may be padded (the caller pads it so block strides avoid 4 KiB aliasing)."""
    nb, m = d.shape
    nw = DW.shape[2]
    for b in prange(nb):
        bl = BL[b]
        tmp = np.empty(m, np.uint32)
        for i in range(m):
            SD[i >> 4, b, i & 15] = np.uint8(1) if d[b, i] < 0 else np.uint8(0)
        for w in range(nw):
            if 32 * w < bl:
                row_trains(d[b], sd[b], min(bl - 32 * w, 32), b, w, call, k0, k1, tmp)
                for i in range(m):
                    DW[i >> 4, b, w, i & 15] = tmp[i]
            else:
                for i in range(m):
                    DW[i >> 4, b, w, i & 15] = uint32(0)


# ------------------------------------------------------------------------------------------- device step

@njit(inline="always", cache=True)
def _interp_table(t, tab):
    n = tab.shape[0]
    if n == 1:
        return tab[0]
    if t < _F0:
        t = _F0
    hi = float32(n - 1)
    if t > hi:
        t = hi
    k = int(math.floor(t))
    if k > n - 2:
        k = n - 2
    q = float32(t - float32(k))
    return (_F1 - q) * tab[k] + q * tab[k + 1]


@njit(inline="always", cache=True)
def _np_interp(x, xp, fp):
    """numpy.interp for one float64 x (same formula and edge rules as numpy's C code)."""
    n = xp.shape[0]
    if x > xp[n - 1]:
        return fp[n - 1]
    if x < xp[0]:
        return fp[0]
    lo = 0
    hi = n - 1
    while hi - lo > 1:        # xp[lo] <= x < xp[hi] (or x == xp[n-1])
        mid = (lo + hi) >> 1
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    j = lo
    if x == xp[n - 1]:
        return fp[n - 1]
    if xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    r = slope * (x - xp[j]) + fp[j]
    if r != r:
        r = slope * (x - xp[j + 1]) + fp[j + 1]
        if r != r and fp[j] == fp[j + 1]:
            r = fp[j]
    return r


@njit(cache=True)
def _factor_other(fam, w, u, P, i, j, wmax, wmin, tab_up, tab_dn, nodes, lut_up, lut_dn):
    """f^d(w) of the families with transcendental or table steps (kept out of line: smaller hot loops)."""
    if fam == FAM_EXP:
        z = P[4, i, j] * w + P[5, i, j]
        g = P[2 + u, i, j]
        g = g if u == 0 else -g
        f = _F1 - P[u, i, j] * float32(math.exp(min(g * z, _EXP_CAP)))
    elif fam == FAM_POW:
        den = wmax - wmin
        om = (wmax - w) / den if den != _F0 else _F0
        om = min(max(om, _F0), _F1)
        base = om if u == 0 else _F1 - om
        f = float32(base ** P[u, i, j])
    elif fam == FAM_PIECEWISE:
        den = wmax - wmin
        t0 = (w - wmin) / den if den != _F0 else _F0
        tab = tab_up if u == 0 else tab_dn
        f = _interp_table(t0 * float32(tab.shape[0] - 1), tab)
    else:  # FAM_LUT
        f = float32(_np_interp(float64(w), nodes, lut_up if u == 0 else lut_dn))
    return f


@njit(inline="always", cache=True)
def _factor(fam, w, u, P, i, j, wmax, wmin, tab_up, tab_dn, nodes, lut_up, lut_dn):
    """f^d(w) >= 0 of the device family; u = 0 (up) or 1 (down). Float32, same operation order as the oracle.

    Parameter layout P (per device): linear-step/soft-bounds [slope_up, slope_down]; exp-step [A_up, A_down,
    gamma_up, gamma_down, exp_scale, exp_offset]; pow-step [gamma_up, gamma_down]."""
    if fam == FAM_LINEAR:
        f = _F1 + P[u, i, j] * w
    elif fam == FAM_CONST:
        f = _F1
    else:
        f = _factor_other(fam, w, u, P, i, j, wmax, wmin, tab_up, tab_dn, nodes, lut_up, lut_dn)
    return max(f, _F0)


@njit(inline="always", cache=True)
def _step(fam, noise_mode, sigma, std_add, std_slope, w, up, i, j, DWUD, wmax, wmin, P,
          tab_up, tab_dn, nodes, lut_up, lut_dn, xi):
    """One pulse on w (float32): clip(w + d (dw f + s xi)), d = +1 if ``up`` else -1 (branch-free in ``up``).
    ``DWUD`` (2, out, in): [dw_up, dw_down]. ``xi`` is ignored when sigma == 0."""
    u = 0 if up else 1
    dw = DWUD[u, i, j]
    f = _factor(fam, w, u, P, i, j, wmax, wmin, tab_up, tab_dn, nodes, lut_up, lut_dn)
    delta = dw * f
    if sigma > 0:
        if noise_mode == NOISE_MULT:
            s = sigma * dw * f
        elif noise_mode == NOISE_ADD:
            s = sigma * dw
        else:
            s = sigma * (std_add + dw * f + std_slope * abs(w))
        delta = delta + s * xi
    sg = _F1 if up else float32(-1.0)
    return min(max(w + sg * delta, wmin), wmax)


@njit(inline="always", cache=True)
def _normal4(k0, k1, c1, c2, c3, blk, buf):
    a0, a1, a2, a3 = philox(uint32(blk), uint32(c1), uint32(c2), uint32(c3), k0, k1)
    z0, z1 = box_muller(a0, a1)
    z2, z3 = box_muller(a2, a3)
    buf[0] = z0
    buf[1] = z1
    buf[2] = z2
    buf[3] = z3


# ------------------------------------------------------------------------------------------- updates

@njit(inline="always", cache=True)
def _normals(k0, k1, i, b, call, n, buf):
    """buf[0:n] = the c2c normals of row i in sample b: block k (4 normals) from counter (k, i, b, call)."""
    for blk in range((n + 3) // 4):
        a0, a1, a2, a3 = philox(uint32(blk), uint32(i), uint32(b), uint32(call), k0, k1)
        z0, z1 = box_muller(a0, a1)
        z2, z3 = box_muller(a2, a3)
        buf[4 * blk] = z0
        buf[4 * blk + 1] = z1
        buf[4 * blk + 2] = z2
        buf[4 * blk + 3] = z3


@njit(parallel=True, cache=True)
def fired_rows(DW, BL, FB):
    """FB[i, b // 32] bit b % 32 = output i fires in sample b (any slot): the per-row sample lists that let
    ``update_trains`` visit only fired (row, sample) pairs. One cache line per 16 rows and sample is tested."""
    nblk = DW.shape[0]
    nb = BL.shape[0]
    nw = DW.shape[2]
    m = FB.shape[0]
    for ib in prange(nblk):
        i0 = 16 * ib
        nq = min(16, m - i0)
        for q in range(nq):
            for bw in range(FB.shape[1]):
                FB[i0 + q, bw] = uint32(0)
        for b in range(nb):
            if BL[b] == 0:
                continue
            fired = uint32(0)
            for wi in range(nw):
                for q in range(16):
                    fired |= uint32(DW[ib, b, wi, q] != 0) << uint32(q)
            if nq < 16:
                fired &= uint32((1 << nq) - 1)
            bit = uint32(1) << uint32(b & 31)
            while fired != 0:
                q = int(ctz32(fired))
                fired &= fired - uint32(1)
                FB[i0 + q, b >> 5] |= bit


@njit(parallel=True, cache=True)
def update_trains(w, DWUD, wmax, wmin, P, fam, noise_mode, sigma, std_add, std_slope,
                  tab_up, tab_dn, nodes, lut_up, lut_dn, OFF, IDX, T, maxlen, DW, SD, FB, k0, k1, call_n, counts,
                  touched, record):
    """Apply the coincidences of the pulse trains to ``w`` (out, in) in place, sample by sample.

    Row i visits, for every slot t in which output i fires, the list of inputs firing in t (``x_lists``), so
    the work is the number of coincidences plus the fired slots. The c2c normals of (i, b) are drawn in one
    vectorised pass (their number is known from the list lengths, at most ``maxlen`` = the longest sample's
    total list length) and consumed in pulse order.
    ``counts`` (out, in) int32: pulses per device (incremented); ``touched`` (out, in) uint8 set to 1 where a
    pulse landed; ``record`` (batch, out, in) int32 signed coincidence counts if its first dim > 0 (tests).
    """
    m, n = w.shape
    nw = DW.shape[2]
    rec = record.shape[0] > 0
    sig = float32(sigma)
    c_n = uint32(call_n)
    for i in prange(m):
        ib = i >> 4
        iq = i & 15
        buf = np.empty(maxlen + 4 if sig > 0 else 4, np.float32)
        wrow = w[i]
        crow = counts[i]
        trow = touched[i]
        for bw in range(FB.shape[1]):
            fb = FB[i, bw]
            while fb != 0:
                b = 32 * bw + int(ctz32(fb))
                fb &= fb - uint32(1)
                dneg = SD[ib, b, iq] != 0
                base = b * T
                pos = 0
                if sig > 0:
                    tot = 0
                    for wi in range(nw):
                        dm = DW[ib, b, wi, iq]
                        while dm != 0:
                            t = 32 * wi + int(ctz32(dm))
                            dm &= dm - uint32(1)
                            tot += OFF[base + t + 1] - OFF[base + t]
                    if tot == 0:
                        continue
                    _normals(k0, k1, i, b, c_n, tot, buf)
                for wi in range(nw):
                    dm = DW[ib, b, wi, iq]
                    while dm != 0:
                        t = 32 * wi + int(ctz32(dm))
                        dm &= dm - uint32(1)
                        for k in range(OFF[base + t], OFF[base + t + 1]):
                            e = IDX[k]
                            xneg = e < 0
                            j = ~e if xneg else e
                            up = xneg != dneg
                            xi = buf[pos] if sig > 0 else _F0
                            pos += 1
                            wrow[j] = _step(fam, noise_mode, sig, std_add, std_slope, wrow[j], up, i, j,
                                            DWUD, wmax[i, j], wmin[i, j], P,
                                            tab_up, tab_dn, nodes, lut_up, lut_dn, xi)
                            crow[j] += 1
                            trow[j] = 1
                            if rec:
                                record[b, i, j] += 1 if up else -1


@njit(parallel=True, cache=True)
def implicit_probs(v, s, BL, res, q):
    """Deterministic mode: q[b, j] = p quantised to ``res`` (round half to even), p = min(s[b]|v|, 1)."""
    for b in prange(v.shape[0]):
        for j in range(v.shape[1]):
            p = min(s[b] * abs(v[b, j]), float32(1.0)) if BL[b] > 0 else float32(0.0)
            if res > 0:
                p = float32(np.rint(p / res) * res)
            q[b, j] = -p if v[b, j] < 0 else p


@njit(parallel=True, cache=True)
def update_implicit(w, DWUD, wmax, wmin, P, fam, noise_mode, sigma, std_add, std_slope,
                    tab_up, tab_dn, nodes, lut_up, lut_dn, qx, qd, BL, k0, k1, call_n, counts, touched, record):
    """Deterministic (implicit) pulsing: n_ij = rint(BL * |qx_j| * |qd_i|) pulses of sign -sign(x_j d_i)."""
    m, n = w.shape
    nb = qx.shape[0]
    rec = record.shape[0] > 0
    sig = float32(sigma)
    c_n = uint32(call_n)
    for i in prange(m):
        buf = np.empty(4, np.float32)
        for b in range(nb):
            di = qd[b, i]
            if BL[b] == 0 or di == 0:
                continue
            pos = 4
            blk = 0
            for j in range(n):
                xj = qx[b, j]
                if xj == 0:
                    continue
                c = int(np.rint(float32(BL[b]) * abs(xj) * abs(di)))
                if c == 0:
                    continue
                up = (xj < 0) != (di < 0)
                for _ in range(c):
                    xi = _F0
                    if sig > 0:
                        if pos == 4:
                            _normal4(k0, k1, i, b, c_n, blk, buf)
                            blk += 1
                            pos = 0
                        xi = buf[pos]
                        pos += 1
                    w[i, j] = _step(fam, noise_mode, sig, std_add, std_slope, w[i, j], up, i, j,
                                    DWUD, wmax[i, j], wmin[i, j], P,
                                    tab_up, tab_dn, nodes, lut_up, lut_dn, xi)
                counts[i, j] += c
                touched[i, j] = 1
                if rec:
                    record[b, i, j] += c if up else -c


@njit(parallel=True, cache=True)
def apply_counts(w, DWUD, wmax, wmin, P, fam, noise_mode, sigma, std_add, std_slope,
                 tab_up, tab_dn, nodes, lut_up, lut_dn, ncount, k0, k1, call_n, counts, touched):
    """|n_ij| pulses of sign(n_ij) on every device, one at a time (row i's normals keyed (blk, i, 0, call))."""
    m, n = w.shape
    sig = float32(sigma)
    c_n = uint32(call_n)
    for i in prange(m):
        buf = np.empty(4, np.float32)
        pos = 4
        blk = 0
        for j in range(n):
            c = ncount[i, j]
            if c == 0:
                continue
            up = c > 0
            c = abs(c)
            for _ in range(c):
                xi = _F0
                if sig > 0:
                    if pos == 4:
                        _normal4(k0, k1, i, 0, c_n, blk, buf)
                        blk += 1
                        pos = 0
                    xi = buf[pos]
                    pos += 1
                w[i, j] = _step(fam, noise_mode, sig, std_add, std_slope, w[i, j], up, i, j,
                                DWUD, wmax[i, j], wmin[i, j], P,
                                tab_up, tab_dn, nodes, lut_up, lut_dn, xi)
            counts[i, j] += c
            touched[i, j] = 1


@njit(parallel=True, cache=True)
def buffer_transfer(H, cols, V, chop, scale, max_pulses, momentum, forget, ncount):
    """TTv2 / c-TTv2 buffer step for the read columns ``cols`` (distinct) with reads V[r] = A e_cols[r]:
    H[:, k] += scale * chop[k] * v; n = trunc(H) clamped to +-max_pulses (0 = no clamp); where n != 0:
    H <- momentum * H (``forget``) or H - (1 - momentum) * n. Writes ncount[:, k]."""
    m = H.shape[0]
    for i in prange(m):
        for r in range(cols.shape[0]):
            k = cols[r]
            h = H[i, k] + scale * (V[r, i] * chop[k])
            c = int(h)  # trunc toward 0
            if max_pulses > 0:
                c = min(max(c, -max_pulses), max_pulses)
            if c != 0:
                if forget:
                    h = momentum * h
                else:
                    h = h - (float32(1.0) - momentum) * float32(c)
            H[i, k] = h
            ncount[i, k] = c


@njit(parallel=True, cache=True)
def mp_transfer(chi, eps, ncount):
    """Mixed precision: where |chi| >= eps, n = floor(|chi|/eps) pulses of sign(chi); chi -= sign*n*eps."""
    m, n = chi.shape
    for i in prange(m):
        for j in range(n):
            c = chi[i, j]
            a = abs(c)
            if a >= eps:
                k = int(a / eps)
                ncount[i, j] = k if c > 0 else -k
                chi[i, j] = c - float32(k) * eps if c > 0 else c + float32(k) * eps
            else:
                ncount[i, j] = 0


@njit(cache=True)
def auto_scale_ema(v, m, tau, out):
    """Running average of per-sample abs-maxima ``v`` (aihwkit CPU ``ChoppedTransferRPUDevice::updateAutoScale``,
    v1.1.0): per sample in order, m <- v_b if m <= 0, else (1 - tau) m + tau v_b unless v_b <= 0 (skipped);
    out[b] = m after sample b. Returns the final m."""
    for b in range(v.shape[0]):
        val = v[b]
        if m <= 0.0:
            m = val
        elif val > 0.0:
            m = (1.0 - tau) * m + tau * val
        out[b] = m
    return m
