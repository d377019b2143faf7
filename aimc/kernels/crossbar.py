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

Work arrays are (n_in, n_out, LANES) float32 with LANES input vectors innermost (so every prefix sum
vectorises); chunks of LANES inputs run in parallel (``prange``) and each input's result depends only on its
own lane, so results are identical on any thread count. Dot products accumulate in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LANES = 8

CELL_LINEAR = 0
CELL_SINH = 1

CONVERGED = 0
NOT_CONVERGED = 1
NOT_FINITE = 2


@njit(cache=True, fastmath=True)
def _apply_L(c, q, p, out, ctot, acc_a, acc_p, vec):
    """out = L c (row drops + column rises) for one chunk; c, out (n_in, n_out, LANES). On return
    ``acc_a[b]`` holds the column sums sum_a c[a, b] (the output-line currents of c)."""
    n_in, n_out = c.shape[0], c.shape[1]
    ctot[:, :] = 0.0
    tot = vec[0]
    run = vec[1]
    cq = vec[2]
    for a in range(n_in):
        pa = p[a]
        for l in range(LANES):
            tot[l] = 0.0
            run[l] = 0.0
            cq[l] = 0.0
        for b in range(n_out):
            for l in range(LANES):
                tot[l] += c[a, b, l]
        for b in range(n_out):
            qb = q[b]
            for l in range(LANES):
                x = c[a, b, l]
                run[l] += x
                cq[l] += x * qb
                out[a, b, l] = cq[l] + qb * (tot[l] - run[l])
                ctot[b, l] += x * pa
    # column pass on flat rows (one contiguous loop over n_out x LANES vectorises; a nested 8-lane loop does not)
    m = n_out * LANES
    cf = c.reshape(n_in, m)
    of = out.reshape(n_in, m)
    ct = ctot.reshape(m)
    aa = acc_a.reshape(m)
    ap = acc_p.reshape(m)
    aa[:] = 0.0
    ap[:] = 0.0
    for a in range(n_in):
        pa = p[a]
        row = cf[a]
        o = of[a]
        for k in range(m):
            x = row[k]
            aa[k] += x
            ap[k] += x * pa
            o[k] += pa * aa[k] + (ct[k] - ap[k])


@njit(cache=True, fastmath=True)
def _solve_chunk(G, V, b0, nb, q, p, kind, ks, tol, max_newton, max_cg, dv_max, out, iters, status):
    n_in, n_out = G.shape
    shp = (n_in, n_out, LANES)
    linear = kind == CELL_LINEAR
    v = np.empty(shp if not linear else (1, 1, LANES), np.float32)
    y = np.empty(shp if not linear else (1, 1, LANES), np.float32)
    s = np.empty(shp, np.float32)
    r = np.empty(shp, np.float32)
    pc = np.empty(shp, np.float32)
    tmp = np.empty(shp, np.float32)
    ap = np.empty(shp, np.float32)
    ctot = np.empty((n_out, LANES), np.float32)
    acc_a = np.empty((n_out, LANES), np.float32)
    acc_p = np.empty((n_out, LANES), np.float32)
    vec = np.empty((3, LANES), np.float32)
    vin = np.zeros((n_in, LANES), np.float32)
    colsum = np.zeros((n_out, LANES), np.float64)
    for l in range(nb):
        for a in range(n_in):
            vin[a, l] = V[b0 + l, a]
    if not linear:
        for a in range(n_in):
            for b in range(n_out):
                for l in range(LANES):
                    v[a, b, l] = vin[a, l]
    done = np.zeros(LANES, np.bool_)
    st = np.full(LANES, NOT_CONVERGED, np.int64)
    for l in range(nb, LANES):
        done[l] = True
        st[l] = CONVERGED
    it_total = np.zeros(LANES, np.int64)
    ref = np.zeros(LANES, np.float64)
    bb = np.zeros(LANES, np.float64)
    rr = np.zeros(LANES, np.float64)
    stop2 = np.zeros(LANES, np.float64)
    pap = np.zeros(LANES, np.float64)
    rn = np.zeros(LANES, np.float64)
    alpha = np.zeros(LANES, np.float32)
    beta = np.zeros(LANES, np.float32)
    active = np.zeros(LANES, np.bool_)
    for newton in range(max_newton):
        # cell currents (tmp) and sqrt of the small-signal conductances (s)
        if linear:
            for a in range(n_in):
                for b in range(n_out):
                    g = G[a, b]
                    sg = math.sqrt(g)
                    for l in range(LANES):
                        tmp[a, b, l] = g * vin[a, l]
                        s[a, b, l] = sg
        else:
            for a in range(n_in):
                for b in range(n_out):
                    g = G[a, b]
                    for l in range(LANES):
                        e = math.exp(ks * v[a, b, l])
                        ei = np.float32(1.0) / e
                        tmp[a, b, l] = g * (e - ei) / (np.float32(2.0) * ks)
                        s[a, b, l] = math.sqrt(g * (e + ei) * np.float32(0.5))
        _apply_L(tmp, q, p, ap, ctot, acc_a, acc_p, vec)
        # residual r = s (V - v - L F(v)); CG starts at y = 0 with p = r (tmp = s p)
        bb[:] = 0.0
        for a in range(n_in):
            for b in range(n_out):
                for l in range(LANES):
                    vv = vin[a, l] if linear else v[a, b, l]
                    res = (vin[a, l] - vv - ap[a, b, l]) * s[a, b, l]
                    r[a, b, l] = res
                    pc[a, b, l] = res
                    tmp[a, b, l] = res * s[a, b, l]
                    bb[l] += res * res
                    if newton == 0:
                        sv = s[a, b, l] * vin[a, l]
                        ref[l] += sv * sv
                    if not linear:
                        y[a, b, l] = 0.0
        all_done = True
        for l in range(LANES):
            if done[l]:
                continue
            if not math.isfinite(bb[l]):
                st[l] = NOT_FINITE
                done[l] = True
            elif newton > 0 and math.sqrt(bb[l]) <= tol * math.sqrt(ref[l]):
                st[l] = CONVERGED
                done[l] = True
            else:
                all_done = False
        if all_done:
            break
        # inner CG on (I + S L S) y = r: linear cells to tol, Newton steps to a forcing term
        for l in range(LANES):
            eta = tol * math.sqrt(ref[l]) if linear else max(0.05 * math.sqrt(bb[l]), 0.3 * tol * math.sqrt(ref[l]))
            stop2[l] = eta * eta
            rr[l] = bb[l]
            active[l] = (not done[l]) and rr[l] > stop2[l]
        colsum[:, :] = 0.0
        for it in range(max_cg):
            any_active = False
            for l in range(LANES):
                any_active = any_active or active[l]
            if not any_active:
                break
            _apply_L(tmp, q, p, ap, ctot, acc_a, acc_p, vec)
            pap[:] = 0.0
            for a in range(n_in):
                for b in range(n_out):
                    for l in range(LANES):
                        x = pc[a, b, l] + s[a, b, l] * ap[a, b, l]
                        ap[a, b, l] = x
                        pap[l] += pc[a, b, l] * x
            for l in range(LANES):
                alpha[l] = 0.0
                if active[l] and pap[l] > 0.0:
                    alpha[l] = rr[l] / pap[l]
                    it_total[l] += 1
            if linear:
                # output currents of the step: sum_a s y accumulates alpha * column sums of s p (= tmp)
                for b in range(n_out):
                    for l in range(LANES):
                        colsum[b, l] += alpha[l] * acc_a[b, l]
            rn[:] = 0.0
            for a in range(n_in):
                for b in range(n_out):
                    for l in range(LANES):
                        if not linear:
                            y[a, b, l] += alpha[l] * pc[a, b, l]
                        x = r[a, b, l] - alpha[l] * ap[a, b, l]
                        r[a, b, l] = x
                        rn[l] += x * x
            for l in range(LANES):
                beta[l] = 0.0
                if active[l]:
                    if rr[l] > 0.0:
                        beta[l] = rn[l] / rr[l]
                    rr[l] = rn[l]
                    if rn[l] <= stop2[l] or alpha[l] == 0.0:
                        active[l] = False
            for a in range(n_in):
                for b in range(n_out):
                    for l in range(LANES):
                        x = r[a, b, l] + beta[l] * pc[a, b, l]
                        pc[a, b, l] = x
                        tmp[a, b, l] = s[a, b, l] * x
        if linear:
            # one exact Newton step: currents G V + s y, summed per output line
            for l in range(LANES):
                if not done[l]:
                    st[l] = CONVERGED if rr[l] <= stop2[l] * 1.0000001 else NOT_CONVERGED
                    if not math.isfinite(rr[l]):
                        st[l] = NOT_FINITE
            for a in range(n_in):
                for b in range(n_out):
                    g = G[a, b]
                    for l in range(LANES):
                        colsum[b, l] += g * vin[a, l]
            for l in range(nb):
                for b in range(n_out):
                    out[b0 + l, b] = colsum[b, l]
                iters[b0 + l] = it_total[l]
                status[b0 + l] = st[l]
            return
        for a in range(n_in):
            for b in range(n_out):
                for l in range(LANES):
                    if not done[l] and s[a, b, l] > 0.0:
                        d = y[a, b, l] / s[a, b, l]
                        v[a, b, l] += min(max(d, -dv_max), dv_max)
    # nonlinear: output currents at the final voltages
    colsum[:, :] = 0.0
    for a in range(n_in):
        for b in range(n_out):
            g = G[a, b]
            for l in range(LANES):
                e = math.exp(ks * v[a, b, l])
                colsum[b, l] += g * (e - np.float32(1.0) / e) / (np.float32(2.0) * ks)
    for l in range(nb):
        for b in range(n_out):
            out[b0 + l, b] = colsum[b, l]
        iters[b0 + l] = it_total[l]
        status[b0 + l] = st[l]


@njit(cache=True, parallel=True)
def solve_batch(G, V, q, p, kind, ks, tol, max_newton, max_cg, dv_max, out, iters, status):
    """Output-line currents ``out`` (B, n_out) of the canonical array for input voltages ``V`` (B, n_in).

    ``G`` (n_in, n_out) float32 cell conductances (small-signal at 0 V), ``q`` (n_out,) / ``p`` (n_in,) the
    prefix / tail sums of input- / output-line segment resistances (module docstring), ``kind`` CELL_LINEAR or
    CELL_SINH (i = g sinh(ks v) / ks). Stops when the cell-weighted residual |s (V - v - L F(v))|_2 falls
    below ``tol`` |s V|_2 per input. ``iters`` (B,): CG iterations; ``status`` (B,): CONVERGED /
    NOT_CONVERGED / NOT_FINITE. Chunks of LANES inputs run in parallel.
    """
    B = V.shape[0]
    n_chunks = (B + LANES - 1) // LANES
    for ci in prange(n_chunks):
        b0 = ci * LANES
        nb = min(LANES, B - b0)
        _solve_chunk(G, V, b0, nb, q, p, kind, ks, tol, max_newton, max_cg, dv_max, out, iters, status)
