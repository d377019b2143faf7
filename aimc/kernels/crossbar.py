"""Fast crossbar solver: Newton + conjugate gradients on the cell voltages, batched over input vectors.

Canonical array (``aimc/circuit/crossbar.py`` maps the physical array and both read directions onto it): ``n_in``
input lines a (driven at position b = 0 through the driver resistance) cross ``n_out`` output lines b (held at
virtual ground at their end a = n_in - 1 through the sense resistance); cell (a, b) joins input-line node
u[a, b] and output-line node w[a, b]. Units are normalised: conductances by a reference g_ref, resistances
times g_ref, voltages in volts, currents in g_ref x volt.

With cell currents c = F(v) (v = u - w), the line drops are a linear, symmetric positive semi-definite map
(the Green's functions of two resistor ladders):

    u[a, b] = V_a - sum_l c[a, l] Q_min(b, l),   Q_b = sum_{k<=b} r_k   (r_0 = driver + first segment)
    w[a, b] =       sum_l c[l, b] P_max(a, l),   P_a = sum_{k>=a} rho_k (rho_last = segment + sense)

so the array is solved by v + L F(v) = V (KCL and KVL of the whole nodal system, eliminated onto the cells).
Newton: (I + L K) dv = V - v - L F(v), K = diag(F'(v)). With s = sqrt(K) the step solves the symmetric positive
definite system (I + S L S) y = s * res, dv = y / s, by conjugate gradients: unlike the fixed-point relaxation
(CrossSim's solver, which diverges once |L K| > 1, e.g. 128 x 128 at 10 Ohm), CG converges for any wire
resistance, in about sqrt(condition number) iterations. Linear cells need exactly one Newton step and no
division (currents = G V + s y). L is applied in two forward sweeps (prefix sums, no reverse pass):

    row drop[a, b] = sum_{l<=b} c_l Q_l + Q_b (sum_l c_l - sum_{l<=b} c_l)
    column rise[a, b] = P_a sum_{l<=a} c_l + (sum_l c_l P_l - sum_{l<=a} c_l P_l)

One input per thread at a time: work arrays (n_in, n_out) float32 with the output lines contiguous, so every
pass streams row by row (the column prefix sums vectorise over the output lines; the row prefix sums are
scans within a row held in L1, four rows interleaved to fill the pipeline) and one input's arrays stay in
the caches (six 256 KiB arrays at 256 x 256; an earlier layout with 8 inputs innermost streamed 8 inputs'
arrays from memory and was 3.5x slower for linear cells, ~10x for sinh cells). sinh / cosh are a
polynomial (it vectorises; libm exp does not) of z = k v / 2^m followed by m double-angle steps: a cell
voltage is bounded by the input span (maximum principle of a passive network: every node voltage lies
between min(0, V) and max(0, V)), so m is fixed per input, |z| <= 1 and the truncation is < 2e-9
relative; Newton steps are also clipped to that box. Each input's result depends only on that input, so
results are identical on any thread count. Dot products accumulate in float64 (per row in float32).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CELL_LINEAR = 0
CELL_SINH = 1

CONVERGED = 0
NOT_CONVERGED = 1
NOT_FINITE = 2


@njit(cache=True, fastmath=True)
def _sinh_cell_row(g, v, ks, m, c, s):
    """c = g sinh(ks v) / ks (cell currents) and s = sqrt(g cosh(ks v)) (root small-signal conductance)."""
    n = g.shape[0]
    sc = np.float32(ks * 0.5 ** m)
    for b in range(n):
        z = sc * v[b]
        z2 = z * z
        c[b] = z * (np.float32(1.0) + z2 * (np.float32(1 / 6) + z2 * (np.float32(1 / 120) + z2 * (
            np.float32(1 / 5040) + z2 * (np.float32(1 / 362880) + z2 * np.float32(1 / 39916800))))))
        s[b] = np.float32(1.0) + z2 * (np.float32(0.5) + z2 * (np.float32(1 / 24) + z2 * (np.float32(1 / 720) + z2 * (
            np.float32(1 / 40320) + z2 * np.float32(1 / 3628800)))))
    for _ in range(m):
        for b in range(n):
            sh = c[b]
            ch = s[b]
            c[b] = np.float32(2.0) * sh * ch
            s[b] = np.float32(1.0) + np.float32(2.0) * sh * sh
    ik = np.float32(1.0 / ks)
    for b in range(n):
        c[b] = g[b] * c[b] * ik
        s[b] = math.sqrt(g[b] * s[b])


@njit(cache=True, fastmath=True)
def _row_drop(t, q, out):
    """out[b] = sum_l t_l Q_min(b, l) (the drop along one input line for cell currents t)."""
    n = t.shape[0]
    tot = np.float32(0.0)
    for b in range(n):
        tot += t[b]
    run = np.float32(0.0)
    cq = np.float32(0.0)
    for b in range(n):
        x = t[b]
        qb = q[b]
        run += x
        cq += x * qb
        out[b] = cq + qb * (tot - run)


@njit(cache=True, fastmath=True)
def _col_step(t, pa, acc, accp, out):
    """Column rise without its constant term: out[b] += P_a sum_{l<=a} t_l - sum_{l<=a} t_l P_l."""
    for b in range(t.shape[0]):
        x = t[b]
        acc[b] += x
        accp[b] += x * pa
        out[b] += pa * acc[b] - accp[b]


@njit(cache=True, fastmath=True)
def _row_drop4(T, q, W, a0):
    """``_row_drop`` of the 4 rows T[0..3] into W[a0..a0+3]: four independent scans interleaved (one scan is
    latency-bound; four fill the pipeline)."""
    n = T.shape[1]
    t0, t1, t2, t3 = T[0], T[1], T[2], T[3]
    o0, o1, o2, o3 = W[a0], W[a0 + 1], W[a0 + 2], W[a0 + 3]
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for b in range(n):
        s0 += t0[b]
        s1 += t1[b]
        s2 += t2[b]
        s3 += t3[b]
    r0 = r1 = r2 = r3 = np.float32(0.0)
    c0 = c1 = c2 = c3 = np.float32(0.0)
    for b in range(n):
        qb = q[b]
        x0, x1, x2, x3 = t0[b], t1[b], t2[b], t3[b]
        r0 += x0
        r1 += x1
        r2 += x2
        r3 += x3
        c0 += x0 * qb
        c1 += x1 * qb
        c2 += x2 * qb
        c3 += x3 * qb
        o0[b] = c0 + qb * (s0 - r0)
        o1[b] = c1 + qb * (s1 - r1)
        o2[b] = c2 + qb * (s2 - r2)
        o3[b] = c3 + qb * (s3 - r3)


@njit(cache=True, fastmath=True)
def _block_L(T, nr, a0, q, p, acc, accp, W):
    """Partial L of the cell currents T[:nr] of rows a0..a0+nr-1 into W (row drops, then the column prefix
    terms row by row; the column-total term is left to the caller: it is ``accp`` after the last row)."""
    if nr == 4:
        _row_drop4(T, q, W, a0)
    else:
        for i in range(nr):
            _row_drop(T[i], q, W[a0 + i])
    for i in range(nr):
        _col_step(T[i], p[a0 + i], acc, accp, W[a0 + i])


@njit(cache=True, fastmath=True)
def _solve_one(G, Vi, q, p, linear, ks, tol, max_newton, max_cg, dv_max, v, s, r, pc, w, y, t, acc, accp,
               cur):
    """One input: Newton on v + L F(v) = Vi, each step by CG on (I + S L S) y = S res (module docstring);
    linear cells: one step, CG to ``tol``, currents G V + s y.
    ``max_cg`` bounds the CG iterations of the whole solve. Writes the output-line currents at the last F
    evaluation into ``cur`` (float64); returns (status, CG iterations)."""
    n_in, n_out = G.shape
    lo = 0.0
    hi = 0.0
    for a in range(n_in):
        lo = min(lo, Vi[a])
        hi = max(hi, Vi[a])
    span = hi - lo                                  # |cell voltage| <= span
    m = 0
    while ks * span > 2.0 ** m and m < 30:
        m += 1
    if not linear:
        for a in range(n_in):
            va = np.float32(Vi[a])
            for b in range(n_out):
                v[a, b] = va
    ref = 0.0
    iters = 0
    f32span = np.float32(span)
    for newton in range(max_newton):
        # F(v), s, and the partial L F(v) (without the column-total term) row by row
        acc[:] = 0.0
        accp[:] = 0.0
        cur[:] = 0.0
        for a0 in range(0, n_in, 4):
            nr = min(4, n_in - a0)
            for i in range(nr):
                ti = t[i]
                if linear:
                    ga = G[a0 + i]
                    sa = s[a0 + i]
                    va = np.float32(Vi[a0 + i])
                    for b in range(n_out):
                        ti[b] = ga[b] * va
                        sa[b] = math.sqrt(ga[b])
                else:
                    _sinh_cell_row(G[a0 + i], v[a0 + i], ks, m, ti, s[a0 + i])
                for b in range(n_out):
                    cur[b] += ti[b]
            _block_L(t, nr, a0, q, p, acc, accp, w)
        # residual r = s (V - v - L F(v)); CG starts at y = 0, p = r
        bb = 0.0
        first = newton == 0
        for a in range(n_in):
            va = np.float32(Vi[a])
            sa = s[a]
            ra = r[a]
            pa_ = pc[a]
            wa = w[a]
            va_ = v[a]
            ya = y[a]
            part = np.float32(0.0)
            sv = np.float32(0.0)
            for b in range(n_out):
                x = (va - (va if linear else va_[b]) - wa[b] - accp[b]) * sa[b]
                ra[b] = x
                pa_[b] = x
                ya[b] = 0.0
                part += x * x
                sv += sa[b] * sa[b]
            bb += part
            if first:
                ref += sv * va * va
        if not math.isfinite(bb):
            return NOT_FINITE, iters
        if newton > 0 and math.sqrt(bb) <= tol * math.sqrt(ref):
            return CONVERGED, iters
        if iters >= max_cg:
            return NOT_CONVERGED, iters
        eta = tol * math.sqrt(ref) if linear else max(0.01 * math.sqrt(bb), 0.3 * tol * math.sqrt(ref))
        stop2 = eta * eta
        rho = bb
        beta = np.float32(0.0)
        for it in range(max_cg - iters):
            if rho <= stop2:
                break
            # pc = r + beta pc; t = s pc; w = L t (partial); p.Ap
            acc[:] = 0.0
            accp[:] = 0.0
            pap = 0.0
            for a0 in range(0, n_in, 4):
                nr = min(4, n_in - a0)
                for i in range(nr):
                    sa = s[a0 + i]
                    ra = r[a0 + i]
                    pa_ = pc[a0 + i]
                    ti = t[i]
                    if it > 0:
                        for b in range(n_out):
                            pa_[b] = ra[b] + beta * pa_[b]
                    for b in range(n_out):
                        ti[b] = sa[b] * pa_[b]
                _block_L(t, nr, a0, q, p, acc, accp, w)
                for i in range(nr):
                    pa_ = pc[a0 + i]
                    ti = t[i]
                    wa = w[a0 + i]
                    part = np.float32(0.0)
                    for b in range(n_out):
                        part += pa_[b] * pa_[b] + ti[b] * wa[b]
                    pap += part
            for b in range(n_out):
                pap += np.float64(accp[b]) * acc[b]
            iters += 1
            if not pap > 0.0:
                break
            alpha = np.float32(rho / pap)
            rn = 0.0
            for a in range(n_in):
                sa = s[a]
                ra = r[a]
                pa_ = pc[a]
                wa = w[a]
                ya = y[a]
                part = np.float32(0.0)
                for b in range(n_out):
                    x = pa_[b]
                    ya[b] += alpha * x
                    rb = ra[b] - alpha * (x + sa[b] * (wa[b] + accp[b]))
                    ra[b] = rb
                    part += rb * rb
                rn += part
            beta = np.float32(rn / rho)
            rho = rn
        if linear:  # the one exact Newton step: currents G V (in cur) + s y
            for a in range(n_in):
                sa = s[a]
                ya = y[a]
                for b in range(n_out):
                    cur[b] += sa[b] * ya[b]
            return (CONVERGED if rho <= stop2 * 1.0000001 else NOT_CONVERGED), iters
        # Newton update, limited per step and to the box the maximum principle allows
        for a in range(n_in):
            sa = s[a]
            ya = y[a]
            va_ = v[a]
            for b in range(n_out):
                if sa[b] > 0.0:
                    d = min(max(ya[b] / sa[b], -dv_max), dv_max)
                    va_[b] = min(max(va_[b] + d, -f32span), f32span)
    return NOT_CONVERGED, iters


@njit(cache=True, parallel=True)
def solve_batch(G, V, q, p, kind, ks, tol, max_newton, max_cg, dv_max, n_threads, out, iters, status):
    """Output-line currents ``out`` (B, n_out) float64 of the canonical array for input voltages ``V`` (B, n_in).

    ``G`` (n_in, n_out) float32 cell conductances (small-signal at 0 V), ``q`` (n_out,) / ``p`` (n_in,) the
    prefix / tail sums of input- / output-line segment resistances (module docstring), ``kind`` CELL_LINEAR or
    CELL_SINH (i = g sinh(ks v) / ks). Stops when the cell-weighted residual |s (V - v - L F(v))|_2 falls
    below ``tol`` |s V|_2 per input (Newton steps solved to a forcing term of 1 % of their residual, at most
    ``max_newton`` steps and ``max_cg`` CG iterations in all, each step clipped to ``dv_max``). ``iters``
    (B,): CG iterations; ``status`` (B,): CONVERGED / NOT_CONVERGED / NOT_FINITE. Inputs are dealt to
    ``n_threads`` parallel work queues (numba.get_num_threads()).
    """
    B = V.shape[0]
    n_in, n_out = G.shape
    nt = max(1, min(B, n_threads))
    for ci in prange(nt):
        v = np.empty((n_in, n_out), np.float32)
        s = np.empty((n_in, n_out), np.float32)
        r = np.empty((n_in, n_out), np.float32)
        pc = np.empty((n_in, n_out), np.float32)
        w = np.empty((n_in, n_out), np.float32)
        y = np.empty((n_in, n_out), np.float32)
        t = np.empty((4, n_out), np.float32)
        acc = np.empty(n_out, np.float32)
        accp = np.empty(n_out, np.float32)
        cur = np.empty(n_out, np.float64)
        for i in range(ci, B, nt):
            st, it = _solve_one(G, V[i], q, p, kind == CELL_LINEAR, ks, tol, max_newton, max_cg, dv_max, v, s, r,
                                pc, w, y, t, acc, accp, cur)
            status[i] = st
            iters[i] = it
            for b in range(n_out):
                out[i, b] = cur[b]
