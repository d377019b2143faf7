"""Numba kernels for nodal analysis of resistor/diode networks (used by :mod:`aimc.circuits`).

Conventions (all float64: KCL residuals at the 1e-12 level need it).

* Every two-terminal element ``e`` joins node ``ea[e]`` (anode / "+") to node ``eb[e]``; its branch voltage is
  ``u = V[ea] - V[eb]`` and its current ``i(u)`` flows from ``ea`` to ``eb`` through the element.
* Element types (``etype``) and their parameters ``(p0, p1, p2)``:

  ====  =====================  ===========================================  =========================================
  type  element                current i(u)                                  co-content Phi(u) = int_0^u i
  ====  =====================  ===========================================  =========================================
  0     linear resistor        p0 * u                      (p0 = G)          p0 u^2 / 2
  1     piecewise-linear diode p0 u + (p1 - p0) max(0, u - p2)               p0 u^2/2 + (p1-p0) max(0,u-p2)^2 / 2
        (p0 = g_off, p1 = g_on, p2 = knee voltage)
  2     Shockley diode         p1 (exp(u/p2) - 1) + p0 u                    p1 p2 (exp(u/p2)-1) - p1 u + p0 u^2/2
        (p0 = parallel leak, p1 = I_s, p2 = n V_T)
  3     sinh selector / cell   p0 sinh(p1 u) / p1                           p0 (cosh(p1 u) - 1) / p1^2
        (p0 = small-signal conductance at 0 V, p1 = k in 1/V; MemTorch Data_Driven2021's I = a g sinh(b V))
  ====  =====================  ===========================================  =========================================

  Every i(u) is continuous and non-decreasing, so every Phi is convex and the steady state is the unique
  minimiser of the total co-content ("content" theorem of Millar 1951; Kendall et al., arXiv 2006.01981)

      E(V) = sum_e Phi_e(V[ea] - V[eb]) - sum_n I_n V[n]

  over the free node voltages (clamped nodes = voltage sources held fixed). grad E = -r with the KCL residual
  ``r[n] = I_n - sum_{e: ea=n} i_e + sum_{e: eb=n} i_e``, and the Hessian is the Laplacian of the incremental
  conductances k_e = di/du.

* Newton with an exact line search on the convex 1-D restriction phi(t) = E(V + t dV): phi'(t) is monotone, so
  the step is (nearly) the root of phi', bracketed in (0, 1] or, when the full step is still steeply downhill
  (exponential diodes far in forward bias, where plain Newton crawls by n V_T per step), by doubling t, and
  found by safeguarded regula falsi (Illinois); phi' needs only branch
  currents, never energy differences, so it is free of cancellation near the optimum. For the piecewise-linear
  diode this is a damped semismooth Newton / active-set iteration: once the on/off pattern is right the next
  step is exact.

* Linear algebra per Newton step: the free nodes are split into an independent set D (no element joins two
  D nodes; chosen by the caller) and the rest R. The Hessian block on D is diagonal, so it is eliminated exactly
  (block Gaussian elimination) and only the Schur complement S = H_RR - H_RD H_DD^-1 H_DR (|R| x |R|) is
  Cholesky-factorised. In a layered network D is the widest layer, so a 64-100-20 network factorises a 20 x 20
  matrix per sample and step.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from . import njit  # numba.njit; parallel kernels bind per aimc.kernels.mode()

RESISTOR = 0
DIODE_PWL = 1
DIODE_EXP = 2
SINH = 3

# status codes returned per sample by newton_batch
CONVERGED = 0
MAX_ITER = 1
NOT_PD = 2  # a non-positive pivot: the linearised network is not positive definite (e.g. a floating node)
STALLED = 3  # the step became negligible before the residual met the tolerance


@njit(cache=True, inline="always")
def _current(t, p0, p1, p2, u):
    if t == RESISTOR:
        return p0 * u
    if t == DIODE_PWL:
        x = u - p2
        if x > 0.0:
            return p0 * u + (p1 - p0) * x
        return p0 * u
    if t == SINH:
        return p0 * math.sinh(p1 * u) / p1
    return p1 * (math.exp(u / p2) - 1.0) + p0 * u


@njit(cache=True, inline="always")
def _conductance(t, p0, p1, p2, u):
    if t == RESISTOR:
        return p0
    if t == DIODE_PWL:
        if u >= p2:
            return p1
        return p0
    if t == SINH:
        return p0 * math.cosh(p1 * u)
    return p1 / p2 * math.exp(u / p2) + p0


@njit(cache=True, inline="always")
def _cocontent(t, p0, p1, p2, u):
    if t == RESISTOR:
        return 0.5 * p0 * u * u
    if t == DIODE_PWL:
        x = u - p2
        if x > 0.0:
            return 0.5 * p0 * u * u + 0.5 * (p1 - p0) * x * x
        return 0.5 * p0 * u * u
    if t == SINH:
        return p0 * (math.cosh(p1 * u) - 1.0) / (p1 * p1)
    return p1 * p2 * (math.exp(u / p2) - 1.0) - p1 * u + 0.5 * p0 * u * u


@njit(cache=True)
def assemble_reduced(ea, eb, g, fpos, cpos, n_free, n_clamp):
    """Blocks of the Laplacian of linear conductances ``g``: returns ``(L_ff, L_fc)``.

    ``fpos[n]`` is the free index of node n (or -1), ``cpos[n]`` its clamped index (or -1). The free voltages
    solve ``L_ff V_f = I_f - L_fc V_c`` (KCL with the sources eliminated).
    """
    lff = np.zeros((n_free, n_free))
    lfc = np.zeros((n_free, n_clamp))
    for e in range(ea.shape[0]):
        a = ea[e]
        b = eb[e]
        ge = g[e]
        fa = fpos[a]
        fb = fpos[b]
        if fa >= 0:
            lff[fa, fa] += ge
            if fb >= 0:
                lff[fa, fb] -= ge
            else:
                lfc[fa, cpos[b]] -= ge
        if fb >= 0:
            lff[fb, fb] += ge
            if fa >= 0:
                lff[fb, fa] -= ge
            else:
                lfc[fb, cpos[a]] -= ge
    return lff, lfc


@njit(cache=True)
def node_currents(V, inj, ea, eb, etype, p0, p1, p2):
    """KCL residual for a batch: ``r[s, n] = inj[s, n] - (current leaving n through the elements)``.

    ``inj`` is (B, n_nodes) or (0, 0) for no injections. Zero at every free node of a solution; at a clamped
    node it is minus the current the voltage source delivers into the network.
    """
    B, n = V.shape
    out = np.zeros((B, n))
    has_inj = inj.shape[0] > 0
    for s in range(B):
        if has_inj:
            for j in range(n):
                out[s, j] = inj[s, j]
        for e in range(ea.shape[0]):
            a = ea[e]
            b = eb[e]
            i = _current(etype[e], p0[e], p1[e], p2[e], V[s, a] - V[s, b])
            out[s, a] -= i
            out[s, b] += i
    return out


@njit(cache=True)
def node_current_scale(V, inj, ea, eb, etype, p0, p1, p2):
    """Per node, ``|inj| + sum |i_e|`` over incident elements: the scale for relative KCL residuals."""
    B, n = V.shape
    out = np.zeros((B, n))
    has_inj = inj.shape[0] > 0
    for s in range(B):
        if has_inj:
            for j in range(n):
                out[s, j] = abs(inj[s, j])
        for e in range(ea.shape[0]):
            a = ea[e]
            b = eb[e]
            i = abs(_current(etype[e], p0[e], p1[e], p2[e], V[s, a] - V[s, b]))
            out[s, a] += i
            out[s, b] += i
    return out


@njit(cache=True)
def cocontent_batch(V, inj, ea, eb, etype, p0, p1, p2):
    """Total co-content ``E(V) = sum_e Phi_e(u_e) - sum_n I_n V_n`` per sample (the quantity the steady
    state minimises over free voltages)."""
    B, n = V.shape
    out = np.zeros(B)
    has_inj = inj.shape[0] > 0
    for s in range(B):
        acc = 0.0
        for e in range(ea.shape[0]):
            acc += _cocontent(etype[e], p0[e], p1[e], p2[e], V[s, ea[e]] - V[s, eb[e]])
        if has_inj:
            for j in range(n):
                acc -= inj[s, j] * V[s, j]
        out[s] = acc
    return out


@njit(cache=True)
def dissipated_power(V, ea, eb, etype, p0, p1, p2):
    """Power dissipated in the elements, ``sum_e i_e(u_e) u_e``, per sample."""
    B = V.shape[0]
    out = np.zeros(B)
    for s in range(B):
        acc = 0.0
        for e in range(ea.shape[0]):
            u = V[s, ea[e]] - V[s, eb[e]]
            acc += _current(etype[e], p0[e], p1[e], p2[e], u) * u
        out[s] = acc
    return out


@njit(cache=True)
def _dphi(t_step, u, du, etype, p0, p1, p2, nl, c0, c1, sc):
    """phi'(t) = sum_e i_e(u_e + t du_e) du_e - sum_n I_n dV_n, and its rounding scale.

    The linear resistors' part is the straight line c0 + t c1 (precomputed); only the nonlinear elements
    ``nl`` are evaluated, so a line-search probe costs O(#diodes), not O(#elements)."""
    acc = c0 + t_step * c1
    scale = sc * max(1.0, abs(t_step))
    for m in range(nl.shape[0]):
        e = nl[m]
        if du[e] != 0.0:
            c = _current(etype[e], p0[e], p1[e], p2[e], u[e] + t_step * du[e]) * du[e]
            acc += c
            scale += abs(c)
    return acc, scale


@njit(cache=True)
def _bracket(ta, fa, tb, fb, d0, u, du, etype, p0, p1, p2, nl, c0, c1, sc):
    """Step t in (ta, tb) with phi'(t) in [d0/4, 0], given phi'(ta) = fa <= 0 < phi'(tb) = fb (fb may be
    inf/nan: overflow). Illinois regula falsi on the monotone phi', bisection when fb is not finite."""
    if not math.isfinite(fb):
        fb = np.inf
    side = 0
    for _ in range(60):
        if math.isfinite(fb):
            tc = (ta * fb - tb * fa) / (fb - fa)
            if not (ta < tc < tb):
                tc = 0.5 * (ta + tb)
        else:
            tc = 0.5 * (ta + tb)
        fc, _s = _dphi(tc, u, du, etype, p0, p1, p2, nl, c0, c1, sc)
        if not math.isfinite(fc):
            tb = tc
            fb = np.inf
            continue
        if fc <= 0.0:
            ta = tc
            fa = fc
            if side == -1 and math.isfinite(fb):
                fb *= 0.5
            side = -1
            if fc >= 0.25 * d0:
                break
        else:
            tb = tc
            fb = fc
            if side == 1:
                fa *= 0.5
            side = 1
    if ta == 0.0:
        return tb * 1e-3
    return ta


@njit(cache=True)
def _newton_one(V, vc, inj, has_inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                d_ptr, d_edge, d_other, rtol, max_iter):
    """Solve one sample in place (V holds the initial guess). Returns (iterations, status, max rel. residual)."""
    n = V.shape[0]
    E = ea.shape[0]
    for c in range(clamped.shape[0]):
        V[clamped[c]] = vc[c]
    u = np.empty(E)
    cur = np.empty(E)
    k = np.empty(E)
    du = np.empty(E)
    r = np.empty(n)
    scl = np.empty(n)
    flo = np.empty(n)
    dV = np.zeros(n)
    dg = np.empty(nD)
    S = np.empty((nR, nR))
    rhsR = np.empty(nR)
    status = MAX_ITER
    relres = np.inf
    it = 0
    stalled = False
    while True:
        # branch quantities and KCL residual
        for j in range(n):
            r[j] = inj[j] if has_inj else 0.0
            scl[j] = abs(r[j])
        for e in range(E):
            a = ea[e]
            b = eb[e]
            ue = V[a] - V[b]
            u[e] = ue
            i = _current(etype[e], p0[e], p1[e], p2[e], ue)
            cur[e] = i
            ke = _conductance(etype[e], p0[e], p1[e], p2[e], ue)
            k[e] = ke
            r[a] -= i
            r[b] += i
            ai = abs(i)
            scl[a] += ai
            scl[b] += ai
        # converged when every free node's residual is below rtol x its current scale, or below the
        # rounding floor of its voltages (k |V| eps: tiny reverse-bias currents cannot be resolved further)
        relres = 0.0
        ok = True
        for j in range(n):
            if role[j] != 0:
                aj = abs(r[j])
                if not math.isfinite(aj):
                    ok = False
                    relres = np.inf
                    continue
                q = aj / (scl[j] + 1e-300)
                if q > relres:
                    relres = q
                if aj > rtol * scl[j]:
                    ok = False
        if not ok and math.isfinite(relres):
            for j in range(n):
                flo[j] = 0.0
            for e in range(E):
                a = ea[e]
                b = eb[e]
                fe = k[e] * (abs(V[a]) + abs(V[b]))
                flo[a] += fe
                flo[b] += fe
            ok = True
            for j in range(n):
                if role[j] != 0:
                    aj = abs(r[j])
                    if aj > rtol * scl[j] and aj > 64.0 * 2.220446049250313e-16 * flo[j]:
                        ok = False
        if ok:
            status = CONVERGED
            break
        if stalled:
            status = STALLED
            break
        if it >= max_iter:
            status = MAX_ITER
            break
        it += 1
        # Hessian: diagonal on D, dense Schur complement on R
        for q in range(nD):
            dg[q] = 0.0
        for q in range(nR):
            rhsR[q] = 0.0
            for q2 in range(nR):
                S[q, q2] = 0.0
        for j in range(n):
            if role[j] == 2:
                rhsR[pos[j]] = r[j]
        for e in range(E):
            a = ea[e]
            b = eb[e]
            ke = k[e]
            ra = role[a]
            rb = role[b]
            if ra == 1:
                dg[pos[a]] += ke
            elif ra == 2:
                S[pos[a], pos[a]] += ke
            if rb == 1:
                dg[pos[b]] += ke
            elif rb == 2:
                S[pos[b], pos[b]] += ke
            if ra == 2 and rb == 2:
                S[pos[a], pos[b]] -= ke
                S[pos[b], pos[a]] -= ke
        notpd = False
        for q in range(nD):
            if not dg[q] > 0.0:
                notpd = True
        if notpd:
            status = NOT_PD
            break
        # eliminate D: S -= B^T D^-1 B, rhs_R -= B^T D^-1 r_D  (B entries are -k)
        for j in range(n):
            if role[j] != 1:
                continue
            q = pos[j]
            inv = 1.0 / dg[q]
            rq = r[j] * inv
            for m in range(d_ptr[q], d_ptr[q + 1]):
                km = k[d_edge[m]]
                om = d_other[m]
                rhsR[om] += km * rq
                kmi = km * inv
                for m2 in range(d_ptr[q], d_ptr[q + 1]):
                    S[om, d_other[m2]] -= kmi * k[d_edge[m2]]
        # Cholesky (lower, in place) and solve
        for c in range(nR):
            sdiag = S[c, c]
            for m in range(c):
                sdiag -= S[c, m] * S[c, m]
            if not sdiag > 0.0:
                notpd = True
                break
            lcc = math.sqrt(sdiag)
            S[c, c] = lcc
            for rr in range(c + 1, nR):
                sv = S[rr, c]
                for m in range(c):
                    sv -= S[rr, m] * S[c, m]
                S[rr, c] = sv / lcc
        if notpd:
            status = NOT_PD
            break
        for c in range(nR):
            sv = rhsR[c]
            for m in range(c):
                sv -= S[c, m] * rhsR[m]
            rhsR[c] = sv / S[c, c]
        for c in range(nR - 1, -1, -1):
            sv = rhsR[c]
            for m in range(c + 1, nR):
                sv -= S[m, c] * rhsR[m]
            rhsR[c] = sv / S[c, c]
        for j in range(n):
            rj = role[j]
            if rj == 2:
                dV[j] = rhsR[pos[j]]
            elif rj == 0:
                dV[j] = 0.0
        for j in range(n):
            if role[j] != 1:
                continue
            q = pos[j]
            sv = r[j]
            for m in range(d_ptr[q], d_ptr[q + 1]):
                e = d_edge[m]
                other = ea[e] if eb[e] == j else eb[e]
                sv += k[e] * dV[other]
            dV[j] = sv / dg[q]
        # exact line search on phi(t) = E(V + t dV)
        injdv = 0.0
        if has_inj:
            for j in range(n):
                injdv += inj[j] * dV[j]
        dvmax = 0.0
        vmax = 0.0
        for j in range(n):
            if abs(dV[j]) > dvmax:
                dvmax = abs(dV[j])
            if abs(V[j]) > vmax:
                vmax = abs(V[j])
        c0 = -injdv
        c1 = 0.0
        sc = abs(injdv)
        for e in range(E):
            due = dV[ea[e]] - dV[eb[e]]
            du[e] = due
            if etype[e] == RESISTOR:
                x0 = p0[e] * u[e] * due
                x1 = p0[e] * due * due
                c0 += x0
                c1 += x1
                sc += abs(x0) + abs(x1)
        d0 = 0.0
        for j in range(n):
            d0 -= r[j] * dV[j] if role[j] != 0 else 0.0
        t = 1.0
        if d0 < 0.0:
            d1, s1 = _dphi(1.0, u, du, etype, p0, p1, p2, nl, c0, c1, sc)
            if not (d1 <= 1e-9 * s1):
                t = _bracket(0.0, d0, 1.0, d1, d0, u, du, etype, p0, p1, p2, nl, c0, c1, sc)
            elif d1 < 0.25 * d0:
                # still steep at the Newton point (e.g. an exponential diode far in forward bias): expand
                ta = 1.0
                fa = d1
                t = 1.0
                for _ in range(60):
                    tt = 2.0 * ta
                    ft, _s = _dphi(tt, u, du, etype, p0, p1, p2, nl, c0, c1, sc)
                    if not (ft <= 0.0):
                        t = _bracket(ta, fa, tt, ft, d0, u, du, etype, p0, p1, p2, nl, c0, c1, sc)
                        break
                    ta = tt
                    fa = ft
                    t = tt
                    if ft >= 0.25 * d0:
                        break
        for j in range(n):
            V[j] += t * dV[j]
        if t * dvmax <= 1e-15 * (1.0 + vmax):
            stalled = True  # negligible step: recompute the residual once more, then stop
    return it, status, relres


@njit(cache=True)
def _newton_sample(s, V, vc, inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                   d_ptr, d_edge, d_other, rtol, max_iter, iters, status, relres):
    if inj.shape[0] > 0:
        it, st, rr = _newton_one(V[s], vc[s], inj[s], True, ea, eb, etype, p0, p1, p2, nl, clamped, role,
                                 pos, nD, nR, d_ptr, d_edge, d_other, rtol, max_iter)
    else:
        it, st, rr = _newton_one(V[s], vc[s], np.zeros(1), False, ea, eb, etype, p0, p1, p2, nl, clamped,
                                 role, pos, nD, nR, d_ptr, d_edge, d_other, rtol, max_iter)
    iters[s] = it
    status[s] = st
    relres[s] = rr


@njit(cache=True, parallel=True)
def newton_batch(V, vc, inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                 d_ptr, d_edge, d_other, rtol, max_iter, iters, status, relres):
    """Damped Newton steady state for every sample of a batch, in place in ``V`` (B, n_nodes), samples in
    parallel (``prange``; each sample is independent, so results do not depend on the thread count).

    ``vc`` (B, n_clamped) are the source voltages at nodes ``clamped``; ``inj`` (B, n_nodes) or (0, 0);
    ``nl`` the indices of the nonlinear elements. ``role[n]``: 0 clamped, 1 in the independent set D, 2 in R;
    ``pos[n]`` the index inside its group. ``d_ptr/d_edge/d_other``: for each D node, its elements to R nodes
    and the R index at their other end. Outputs per sample: Newton iterations, status code (module
    constants), max relative KCL residual.
    """
    for s in prange(V.shape[0]):
        _newton_sample(s, V, vc, inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                       d_ptr, d_edge, d_other, rtol, max_iter, iters, status, relres)


@njit(cache=True)
def newton_serial(V, vc, inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                  d_ptr, d_edge, d_other, rtol, max_iter, iters, status, relres):
    """:func:`newton_batch` on one thread, for small batches (thread sync costs more than it saves)."""
    for s in range(V.shape[0]):
        _newton_sample(s, V, vc, inj, ea, eb, etype, p0, p1, p2, nl, clamped, role, pos, nD, nR,
                       d_ptr, d_edge, d_other, rtol, max_iter, iters, status, relres)


@njit(cache=True)
def element_conductances(u, etype, p0, p1, p2):
    """Small-signal conductance di/du of every element at branch voltages ``u`` (the Newton Jacobian's
    entries, used by the sparse Newton path of :class:`aimc.circuits.ResistiveNetwork`)."""
    out = np.empty(u.shape[0])
    for e in range(u.shape[0]):
        out[e] = _conductance(etype[e], p0[e], p1[e], p2[e], u[e])
    return out
