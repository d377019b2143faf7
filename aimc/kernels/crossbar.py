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
Newton: (I + L K) dv = V - v - L F(v), K = diag(F'(v)) = g cosh(k v). I + L K is self-adjoint and positive
definite in the inner product (x, y)_K = x^T K y, so each step is solved by conjugate gradients in that inner
product (the same iterates as CG on the symmetric (I + S L S) y = S res with S = sqrt(K), y = S dv, without
the square roots or the division by S): unlike the fixed-point relaxation (CrossSim's solver, which diverges
once |L K| > 1, e.g. 128 x 128 at 10 Ohm), CG converges for any wire resistance, in about sqrt(condition
number) iterations. Linear cells need exactly one Newton step (currents = G V + K dv). The stopping test is
|V - v - L F(v)|_K <= tol |V|_K at a fresh F(v). Inexact Newton: the first step's CG stops at 1 % of its
residual, later ones at the residual Newton's quadratic rate predicts, |r_k|^3 / |r_(k-1)|^2 (Eisenstat-Walker,
choice 2; at most 10 %), and at 0.7 tol once that prediction is below 0.2 tol -- then the next F(v) is expected
to pass and is checked without applying L first. At 256 x 256, 1 Ohm, g_max 25 uS, +-0.2 V (the bench's tile
inputs) and the default tol 1e-4 (``ArrayConfig.tol``) that is 2 Newton steps of 2 and 1 CG iterations, 6 sweeps
per input: 3 F evaluations and 3 CG (tol 1e-5: 4 CG). The first F sweep needs no row scans: at v = V every cell of input line a sits at V_a, so its currents and
K are row a of G times F(V_a) and F'(V_a), and their row drops F(V_a) times those of G itself (``RG``, computed
once per array and call); v = V is not stored (the first CG sweep's residual is -L F(V), the next F sweep adds
the Newton step to V_a).

L is applied in one forward sweep over the rows (no reverse pass): along a row the drop grows by the segment
resistance dq_b times the current through the segment, sum_(l>=b) c_l (two flops per cell, after the row
total); down a column by prefix sums vectorised over the columns,

    row drop[a, b] = sum_{k<=b} dq_k sum_{l>=k} c[a, l]
    column rise[a, b] = P_a sum_{l<=a} c_l + (sum_l c_l P_l - sum_{l<=a} c_l P_l)

whose last column total is known only at the end of the sweep; it is constant along the column, so every
CG quantity that needs it -- (d, A d)_K, (r, A d)_K, (A d, A d)_K and through them alpha, the next |r|_K^2,
beta and the stopping test -- is assembled at the end of the sweep from per-column sums, and the update
x += alpha d, r -= alpha A d, d = r + beta d runs at the start of the next sweep on rows still in L1: one
sweep per CG iteration, no separate update pass. A Newton step's first CG sweep stores neither d_0 = r_0 nor
x = 0, and for sinh cells its second not x = alpha_0 d_0 either (d_1 = r_1 + beta_0 d_0 gives it back as
(alpha_0 / beta_0) (d_1 - r_1) where it is next needed: the step, or a third sweep; only while beta_0 >= 1e-4,
where this amplifies d_1's float32 rounding at most 100x): a solve of the bench's 2 + 1 CG sweeps never
touches x. In that first sweep d = r, so (r, A d)_K is (d, A d)_K and its column loop forms no K r sums. The
column prefix terms are added in the loop that forms the CG sums (one pass over a block less).
An F sweep's column loop takes a block's 4 rows at once (the column sums of c and K and the column prefix sums
are read and written once per block, not once per row); the CG sweep's column loop stays row by row (with the
4 rows in one loop it was 1.5x slower: more arrays in one loop than LLVM's runtime alias checks allow, it seems).

One input per thread at a time: work arrays (n_in, n_out) float32 with the output lines contiguous, so every
pass streams row by row (the column prefix sums vectorise over the output lines; the row scans vectorise
over 8 chunks of a row: the output lines are stored in lane order, ``_drops``, which ``Crossbar.fast`` maps to
and from; scalar scans, four rows interleaved, were ~28 % of a solve and a solve took 1.35x as long, one thread,
bench inputs) and one input's arrays stay in
the caches (six 256 KiB arrays at 256 x 256: v, K, r, d, w = partial L K d, x = dv (often untouched, above); an earlier layout with 8 inputs innermost streamed 8 inputs'
arrays from memory and was 3.5x slower for linear cells, ~10x for sinh cells). sinh / cosh are a
polynomial (it vectorises; libm exp does not) of z = k v / 2^m followed by m double-angle steps: a cell
voltage is bounded by the input span (maximum principle of a passive network: every node voltage lies
between min(0, V) and max(0, V)), so m is fixed per input, |z| <= 2 and the truncation is < 2e-12
relative (float32 arithmetic; tests ask for residuals down to 1e-7); Newton steps are also clipped to that box. Each input's result depends only on that input, so
results are identical on any thread count. Dot products accumulate in float64 (per row in float32); the output
currents are the column sums of c that L needs anyway (float32), copied out after each F sweep. The first F sweep
runs through the same 4-row blocks and column loop as the others (its row drops from ``RG``).

The hot loops index the 2-D work arrays (``v[a, b]``) instead of slicing a row view (``v[a]``) per row: each
view Numba makes (and each array passed to a call) costs a reference-count update, an atomic add through a
call, and at ~6 views per row these were a large part of a sweep (the CG update loop took ~2x as long; one
thread, bench inputs: 0.70-0.77 -> 0.56-0.62 ms per solve).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import njit  # numba.njit; parallel kernels bind per aimc.kernels.mode()

CELL_LINEAR = 0
CELL_SINH = 1

CONVERGED = 0
NOT_CONVERGED = 1
NOT_FINITE = 2


@intrinsic
def _take(typingctx, counter):
    """The next index of a shared queue: ``counter[0]`` (int64 array) incremented atomically (one LLVM
    ``atomicrmw add``), the value before returned; numba has no atomics of its own."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen


@njit(cache=True, fastmath=True)
def _sinh_cells(G, v, K, a0, nr, t, ks, m, short):
    """t[i] = g sinh(ks v) / ks (cell currents) and K[a] = g cosh(ks v) (small-signal conductances) of the rows
    a = a0 + i, i < nr (g = G[a], v = v[a]): Taylor polynomials of z = ks v / 2^m (|z| <= 2: truncation
    < 2e-12 relative), then m double-angle steps; with m = 0 (|ks v| <= 2, e.g. +-0.37 V at the default ks) one
    pass that stores t and K once (each pass of the double-angle steps, and of the g product after them, stored
    both again: a sinh F sweep took ~1.6x as long with m = 1); ``short``: |z| <= 1.15 (the bench's +-0.2 V
    inputs: 1.09), where polynomials of 6 terms each suffice (< 1.2e-8 relative). Rows are indexed in the 2-D arrays, not sliced,
    and a block of rows is one call: a row view, and an array passed to a call, cost a reference count update
    (an atomic add and a call) each (see the module docstring)."""
    n = G.shape[1]
    sc = np.float32(ks * 0.5 ** m)
    ik = np.float32(1.0 / ks)
    for i in range(nr):
        a = a0 + i
        if m == 0 and short:
            for b in range(n):
                z = sc * v[a, b]
                z2 = z * z
                g = G[a, b]
                t[i, b] = g * ik * z * _sinh_series_short(z2)
                K[a, b] = g * _cosh_series_short(z2)
            continue
        if m == 0:
            for b in range(n):
                z = sc * v[a, b]
                z2 = z * z
                g = G[a, b]
                t[i, b] = g * ik * z * _sinh_series(z2)
                K[a, b] = g * _cosh_series(z2)
            continue
        for b in range(n):
            z = sc * v[a, b]
            z2 = z * z
            t[i, b] = z * _sinh_series(z2)
            K[a, b] = _cosh_series(z2)
        for _ in range(m):
            for b in range(n):
                sh = t[i, b]
                ch = K[a, b]
                t[i, b] = np.float32(2.0) * sh * ch
                K[a, b] = np.float32(1.0) + np.float32(2.0) * sh * sh
        for b in range(n):
            t[i, b] = G[a, b] * t[i, b] * ik
            K[a, b] = G[a, b] * K[a, b]


@njit(cache=True, fastmath=True, inline="always")
def _sinh_series(z2):
    """sinh(z) / z for z^2 = z2 <= 4: Taylor to z^16 / 17! (the next term is < 2e-12 of the sum)."""
    return np.float32(1.0) + z2 * (np.float32(1 / 6) + z2 * (np.float32(1 / 120) + z2 * (np.float32(1 / 5040) + z2 * (
        np.float32(1 / 362880) + z2 * (np.float32(1 / 39916800) + z2 * (np.float32(1 / 6227020800) + z2 * (
            np.float32(1 / 1307674368000) + z2 * np.float32(1 / 355687428096000))))))))


@njit(cache=True, fastmath=True, inline="always")
def _sinh_series_short(z2):
    """sinh(z) / z for z^2 = z2 <= 1.15^2: Taylor to z^10 / 11! (the next term is < 1e-9 of the sum)."""
    return np.float32(1.0) + z2 * (np.float32(1 / 6) + z2 * (np.float32(1 / 120) + z2 * (np.float32(1 / 5040) + z2 * (
        np.float32(1 / 362880) + z2 * np.float32(1 / 39916800)))))


@njit(cache=True, fastmath=True, inline="always")
def _cosh_series_short(z2):
    """cosh(z) for z^2 = z2 <= 1.15^2: Taylor to z^10 / 10! (the next term is < 1.2e-8 of the sum)."""
    return np.float32(1.0) + z2 * (np.float32(1 / 2) + z2 * (np.float32(1 / 24) + z2 * (np.float32(1 / 720) + z2 * (
        np.float32(1 / 40320) + z2 * np.float32(1 / 3628800)))))


@njit(cache=True, fastmath=True, inline="always")
def _cosh_series(z2):
    """cosh(z) for z^2 = z2 <= 4: Taylor to z^18 / 18! (the next term is < 2e-13 of the sum)."""
    return np.float32(1.0) + z2 * (np.float32(1 / 2) + z2 * (np.float32(1 / 24) + z2 * (np.float32(1 / 720) + z2 * (
        np.float32(1 / 40320) + z2 * (np.float32(1 / 3628800) + z2 * (np.float32(1 / 479001600) + z2 * (
            np.float32(1 / 87178291200) + z2 * (np.float32(1 / 20922789888000) + z2 * np.float32(
                1 / 6402373705728000)))))))))


LANES = 8  # output lines in lane order: storage q = k LANES + j holds line j C + k (C = n_out / LANES; see _drops)


def _drops(R):
    """An intrinsic ``drops(T, i0, W, a0, dq, dqc)``: W[a0 + r, q] = sum_l T[i0 + r, l] Q_min(b, l) for the R rows
    r < R -- the drops along R input lines for cell currents T (the row scans of L) -- with the output lines in
    lane order (``LANES``): chunk j of the line (lines j C ... j C + C - 1) is lane j of one 8-wide vector, so the
    scan along a line is C steps of one vector FMA (Q_min grows by dq_b times the current through segment b,
    sum_(l>=b) T[l]) on all 8 chunks at once. Each lane starts from what the chunks before it and after it
    contribute: the current entering chunk j is the sum of the chunk totals from j on, and its drop on entry
    is sum_(j'<j) (that current beyond j') x (dq summed over chunk j') + sum_(l in j') T[l] dqc[l], with dqc the
    prefix sums of dq within a chunk -- per-lane sums of one pass over the row (both lane sums: log2(8)
    shuffle-and-add steps). R rows are interleaved (four chains of FMA latency fill the pipeline; the stores
    bound it). Written in LLVM IR because neither of LLVM's vectorisers turns the eight scalar chains of a
    numba loop into one vector (measured scalar: ~3x slower than this). ``T``, ``W`` (rows, n_out) float32
    C-contiguous, ``dq``, ``dqc`` (n_out,) float32, n_out a multiple of ``LANES``."""
    @intrinsic
    def drops(typingctx, T, i0, W, a0, dq, dqc):
        for name, arr, nd in (("T", T, 2), ("W", W, 2), ("dq", dq, 1), ("dqc", dqc, 1)):
            if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == nd
                    and arr.layout == "C"):
                raise TypeError(f"drops: {name} must be a C-contiguous {nd}-D float32 array, not {arr}")

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            vty = ir.VectorType(f32, LANES)
            i32v = ir.VectorType(ir.IntType(32), LANES)
            zero = ir.Constant(vty, [0.0] * LANES)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fma.v{LANES}f32")
            Ta, Wa, dqa, dca = (context.make_array(signature.args[k])(context, builder, args[k]) for k in (0, 2, 4, 5))
            n = cgutils.unpack_tuple(builder, Wa.shape, 2)[1]
            nchunk = builder.udiv(n, ir.Constant(n.type, LANES))

            def rows(arr, first):   # vector pointers to rows first .. first + R - 1
                return [builder.bitcast(builder.gep(arr.data, [builder.mul(builder.add(first, ir.Constant(n.type, r)), n)]),
                                        vty.as_pointer()) for r in range(R)]

            def at(vp, k):
                return builder.load(builder.gep(vp, [k]), align=4)

            def fadd(x, y, sub=False):
                return (builder.fsub if sub else builder.fadd)(x, y, flags=("fast",))

            def shift(v, k):        # lane j takes lane j + k (0 outside)
                return builder.shuffle_vector(v, zero, ir.Constant(i32v, [j + k if 0 <= j + k < LANES else LANES
                                                                          for j in range(LANES)]))
            Tv, Wv = rows(Ta, args[1]), rows(Wa, args[3])
            dqv = builder.bitcast(dqa.data, vty.as_pointer())
            dcv = builder.bitcast(dca.data, vty.as_pointer())
            tot = [cgutils.alloca_once_value(builder, zero) for _ in range(R)]   # per-lane chunk totals
            dot = [cgutils.alloca_once_value(builder, zero) for _ in range(R)]   # per-lane sum T dqc
            with cgutils.for_range(builder, nchunk) as loop:
                dck = at(dcv, loop.index)
                for r in range(R):
                    tk = at(Tv[r], loop.index)
                    builder.store(fadd(builder.load(tot[r]), tk), tot[r])
                    builder.store(builder.call(fma, [tk, dck, builder.load(dot[r])]), dot[r])
            dqsum = at(dcv, builder.sub(nchunk, ir.Constant(n.type, 1)))      # dq summed over each chunk
            cur, drop = [], []
            for r in range(R):
                S = builder.load(tot[r])
                k = 1
                while k < LANES:    # current entering each chunk: suffix sums over the lanes
                    S = fadd(S, shift(S, k))
                    k *= 2
                D = shift(builder.call(fma, [shift(S, 1), dqsum, builder.load(dot[r])]), -1)
                k = 1
                while k < LANES:    # drop on entering each chunk: prefix sums of the chunks before
                    D = fadd(D, shift(D, -k))
                    k *= 2
                cur.append(cgutils.alloca_once_value(builder, S))
                drop.append(cgutils.alloca_once_value(builder, D))
            with cgutils.for_range(builder, nchunk) as loop:
                dk = at(dqv, loop.index)
                for r in range(R):
                    s = builder.load(cur[r])
                    c = builder.call(fma, [dk, s, builder.load(drop[r])])
                    builder.store(c, drop[r])
                    builder.store(c, builder.gep(Wv[r], [loop.index]), align=4)
                    builder.store(fadd(s, at(Tv[r], loop.index), sub=True), cur[r])
            return context.get_dummy_value()
        return types.void(T, i0, W, a0, dq, dqc), codegen
    return drops


_drops4 = _drops(4)
_drops1 = _drops(1)


@njit(cache=True, fastmath=True)
def _solve_one(G, RG, Vi, dq, dqc, p, linear, ks, tol, max_newton, max_cg, dv_max, v, K, r, d, w, x, t, acc, accp, accq,
               cK, cKr, cKz, cur):
    """One input: Newton on v + L F(v) = Vi, each step by CG in the K inner product (module docstring);
    linear cells: one step, CG to ``tol``, currents G V + K x.
    ``max_cg`` bounds the sweeps of the whole solve. Writes the output-line currents at the last F
    evaluation into ``cur`` (float64); returns (status, sweeps)."""
    n_in, n_out = G.shape
    lo = 0.0
    hi = 0.0
    for a in range(n_in):
        lo = min(lo, Vi[a])
        hi = max(hi, Vi[a])
    span = hi - lo                                  # |cell voltage| <= span
    m = 0
    while ks * span > 2.0 ** (m + 1) and m < 30:
        m += 1
    short = ks * span <= 1.15 * 2.0 ** m            # |z| <= 1.15: the short series (_sinh_cells)
    ref2 = 0.0
    ks64 = np.float64(ks)
    iters = 0
    f32span = np.float32(span)
    alpha = np.float32(0.0)
    jlast = 0                                       # the last CG sweep's j: 0 leaves d_0 = r_0 and x = 0 unstored
    final = False
    rho_prev = 1.0
    ximp = False                                    # x = alpha_0 d_0 implicit in d_1 and r_1 (see the CG loop)
    cx = np.float32(0.0)
    cxa = np.float32(0.0)
    for newton in range(max_newton):
        # F sweep: apply the pending Newton step x + alpha d (clipped), then c = F(v), K, partial L c
        acc[:] = 0.0
        accp[:] = 0.0
        cK[:] = 0.0
        # the step x + alpha d as sa SA + sb SB: after one CG sweep alpha r_0; after two with x implicit
        # (below) (cx + alpha) d_1 - cx r_1; else x + alpha d
        if jlast == 0:
            SA, sa, SB, sb = r, alpha, r, np.float32(0.0)
        elif jlast == 1 and ximp:
            SA, sa, SB, sb = d, cx + alpha, r, -cx
        else:
            SA, sa, SB, sb = d, alpha, x, np.float32(1.0)
        for a0 in range(0, n_in, 4):
            nr = min(4, n_in - a0)
            if newton == 0:
                # v = V: every cell of input line a sits at V_a, so c = G F(V_a) and K = G F'(V_a) scale row a of
                # G and the row drops of c are F(V_a) times those of G (``RG``, once per array): no row scans
                for i in range(nr):
                    a = a0 + i
                    va64 = Vi[a]
                    if linear:
                        fa = np.float32(va64)
                        fpa = np.float32(1.0)
                    else:   # v = V is not stored: the next two sweeps read V_a (``newton == 1`` below)
                        fa = np.float32(math.sinh(ks64 * va64) / ks64)
                        fpa = np.float32(math.cosh(ks64 * va64))
                    ksum = np.float32(0.0)
                    for b in range(n_out):
                        kb = G[a, b] * fpa
                        t[i, b] = G[a, b] * fa
                        K[a, b] = kb
                        ksum += kb
                        w[a, b] = RG[a, b] * fa
                    ref2 += ksum * va64 * va64
            else:
                for i in range(nr):
                    a = a0 + i
                    va = np.float32(Vi[a])
                    if newton == 1:   # from v = V (not stored by the first F sweep)
                        for b in range(n_out):
                            step = min(max(sa * SA[a, b] + sb * SB[a, b], -dv_max), dv_max)
                            v[a, b] = min(max(va + step, -f32span), f32span)
                    else:
                        for b in range(n_out):
                            step = min(max(sa * SA[a, b] + sb * SB[a, b], -dv_max), dv_max)
                            v[a, b] = min(max(v[a, b] + step, -f32span), f32span)
                _sinh_cells(G, v, K, a0, nr, t, ks, m, short)
            if nr == 4:   # row drops, then the column prefix terms and the column sums of c and K, the
                # 4 rows in one loop (the column sums read and written once per block), written out: the same
                # with an inner ``for i in range(4)`` was 5-15 % slower per solve
                if newton > 0:
                    _drops4(t, 0, w, a0, dq, dqc)
                pa0 = p[a0]
                pa1 = p[a0 + 1]
                pa2 = p[a0 + 2]
                pa3 = p[a0 + 3]
                for b in range(n_out):
                    c = acc[b]
                    cp = accp[b]
                    ck = cK[b]
                    tb = t[0, b]
                    c += tb
                    cp += tb * pa0
                    w[a0 + 0, b] += pa0 * c - cp
                    ck += K[a0 + 0, b]
                    tb = t[1, b]
                    c += tb
                    cp += tb * pa1
                    w[a0 + 1, b] += pa1 * c - cp
                    ck += K[a0 + 1, b]
                    tb = t[2, b]
                    c += tb
                    cp += tb * pa2
                    w[a0 + 2, b] += pa2 * c - cp
                    ck += K[a0 + 2, b]
                    tb = t[3, b]
                    c += tb
                    cp += tb * pa3
                    w[a0 + 3, b] += pa3 * c - cp
                    ck += K[a0 + 3, b]
                    acc[b] = c
                    accp[b] = cp
                    cK[b] = ck
            else:
                for i in range(nr if newton > 0 else 0):
                    _drops1(t, i, w, a0 + i, dq, dqc)
                for i in range(nr):   # the same, row by row
                    a = a0 + i
                    pa = p[a]
                    for b in range(n_out):
                        tb = t[i, b]
                        c = acc[b] + tb
                        cp = accp[b] + tb * pa
                        acc[b] = c
                        accp[b] = cp
                        w[a, b] += pa * c - cp
                        cK[b] += K[a, b]
        accq[:] = accp                              # column-total term of L F(v)
        for b in range(n_out):                      # the output-line currents at this F(v)
            cur[b] = acc[b]
        # CG sweeps. Sweep j forms r_j (the first: r_0 = V - v - L F(v), d_0 = r_0 and x = 0 left implicit, not
        # stored -- sweep 1 reads d_0 from r and writes x = alpha d_0 (sinh cells: not even that while ``ximp``),
        # a step after one sweep is alpha r_0; later ones:
        # x += alpha d, r -= alpha A d with A d = d + L K d from the previous sweep's w and accq, then
        # d = r + beta d), t = K d and the partial L t into w, and the sums that give (d, A d), (r, A d)
        # and (A d, A d) in the K inner product once the column totals are known; so alpha and the next
        # |r|^2_K (hence beta and the stopping test) are known at the end of the sweep, one sweep per
        # iteration, no separate update pass.
        if final:   # the last step aimed below tol: check the residual first, without an L pass
            rr = 0.0
            for a in range(n_in):
                va = np.float32(Vi[a])
                part = np.float32(0.0)
                for b in range(n_out):
                    rb = va - v[a, b] - w[a, b] - accq[b]
                    part += K[a, b] * rb * rb
                rr += part
            if not math.isfinite(rr):
                return NOT_FINITE, iters
            if rr <= tol * tol * ref2:
                return CONVERGED, iters
        eta2 = 0.0
        beta = np.float32(0.0)
        rho = 0.0
        done = False
        for j in range(max_cg + 1):
            jlast = j
            acc[:] = 0.0
            accp[:] = 0.0
            cKr[:] = 0.0
            cKz[:] = 0.0
            rr = 0.0
            s_dz = 0.0
            s_rz = 0.0
            s_zz = 0.0
            D = r if j == 0 else d                  # the direction: d_0 = r_0 is not stored
            for a0 in range(0, n_in, 4):
                nr = min(4, n_in - a0)
                for i in range(nr):
                    a = a0 + i
                    part = np.float32(0.0)
                    if j == 0:
                        va = np.float32(Vi[a])
                        for b in range(n_out):
                            rb = (np.float32(0.0) if linear or newton == 0 else va - v[a, b]) - w[a, b] - accq[b]
                            r[a, b] = rb
                            tb = K[a, b] * rb
                            t[i, b] = tb
                            part += tb * rb
                    elif j == 1 and ximp:   # x = alpha d_0 is not stored either (see ``ximp``)
                        for b in range(n_out):
                            db = r[a, b]
                            rb = db - alpha * (db + w[a, b] + accq[b])
                            r[a, b] = rb
                            kb = K[a, b]
                            part += kb * rb * rb
                            db = rb + beta * db
                            d[a, b] = db
                            tb = kb * db
                            t[i, b] = tb
                    elif j == 2 and ximp:   # x_1 = cx (d_1 - r_1) (= alpha_0 d_0), plus alpha_1 d_1
                        for b in range(n_out):
                            db = d[a, b]
                            ro = r[a, b]
                            x[a, b] = cxa * db - cx * ro
                            rb = ro - alpha * (db + w[a, b] + accq[b])
                            r[a, b] = rb
                            kb = K[a, b]
                            part += kb * rb * rb
                            db = rb + beta * db
                            d[a, b] = db
                            tb = kb * db
                            t[i, b] = tb
                    elif j == 1:   # d_0 = r_0 (in r) and x = 0 were not stored: x = alpha d_0
                        for b in range(n_out):
                            db = r[a, b]
                            x[a, b] = alpha * db
                            rb = db - alpha * (db + w[a, b] + accq[b])
                            r[a, b] = rb
                            kb = K[a, b]
                            part += kb * rb * rb
                            db = rb + beta * db
                            d[a, b] = db
                            tb = kb * db
                            t[i, b] = tb
                    else:
                        for b in range(n_out):
                            db = d[a, b]
                            x[a, b] += alpha * db
                            rb = r[a, b] - alpha * (db + w[a, b] + accq[b])
                            r[a, b] = rb
                            kb = K[a, b]
                            part += kb * rb * rb
                            db = rb + beta * db
                            d[a, b] = db
                            tb = kb * db
                            t[i, b] = tb
                    rr += part
                if nr == 4:   # row drops of t = K d into w
                    _drops4(t, 0, w, a0, dq, dqc)
                else:
                    for i in range(nr):
                        _drops1(t, i, w, a0 + i, dq, dqc)
                for i in range(nr):   # column prefix terms, then the CG sums of this block's rows (L1):
                    # z = d + partial L K d
                    a = a0 + i
                    pa = p[a]
                    p1 = np.float32(0.0)
                    p2 = np.float32(0.0)
                    p3 = np.float32(0.0)
                    if j == 0:   # d_0 = r_0: (r, A d)_K is (d, A d)_K (no K r sums)
                        for b in range(n_out):
                            tb = t[i, b]
                            cb = acc[b] + tb
                            cpb = accp[b] + tb * pa
                            acc[b] = cb
                            accp[b] = cpb
                            wb = w[a, b] + pa * cb - cpb
                            w[a, b] = wb
                            zb = D[a, b] + wb
                            kz = K[a, b] * zb
                            p1 += tb * zb
                            p3 += kz * zb
                            cKz[b] += kz
                        s_dz += p1
                        s_zz += p3
                        continue
                    for b in range(n_out):
                        tb = t[i, b]
                        cb = acc[b] + tb
                        cpb = accp[b] + tb * pa
                        acc[b] = cb
                        accp[b] = cpb
                        wb = w[a, b] + pa * cb - cpb
                        w[a, b] = wb
                        zb = D[a, b] + wb
                        kb = K[a, b]
                        kr = kb * r[a, b]
                        kz = kb * zb
                        p1 += tb * zb
                        p2 += kr * zb
                        p3 += kz * zb
                        cKr[b] += kr
                        cKz[b] += kz
                    s_dz += p1
                    s_rz += p2
                    s_zz += p3
            accq[:] = accp                          # column-total term of L K d
            iters += 1
            rho = rr
            if not math.isfinite(rho):
                return NOT_FINITE, iters
            if j == 0:
                if newton > 0 and rho <= tol * tol * ref2:
                    return CONVERGED, iters
                # forcing: 1 % of the residual in the first step; later ones aim at the residual that
                # Newton's quadratic rate predicts, |r_k|^3 / |r_(k-1)|^2 (Eisenstat-Walker, choice 2),
                # at most 10 % of |r_k|; once that prediction is below tol the step is the last one and
                # aims at 0.7 tol (0.3 tol if the prediction is above 0.2 tol)
                tol2 = tol * tol * ref2
                if linear:
                    eta2 = tol2
                    final = False
                elif newton == 0:
                    eta2 = max(1e-4 * rho, 0.09 * tol2)
                    final = eta2 == 0.09 * tol2
                else:
                    pred2 = rho * rho * rho / (rho_prev * rho_prev)
                    final = pred2 <= tol2
                    eta2 = (0.49 * tol2 if pred2 <= 0.04 * tol2 else 0.09 * tol2) if final else min(0.01 * rho, pred2)
                rho_prev = rho
            dad = s_dz
            rad = s_rz
            adad = s_zz
            for b in range(n_out):
                cb = np.float64(accp[b])
                dad += cb * acc[b]
                rad += cb * cKr[b]
                adad += cb * (2.0 * cKz[b] + cb * cK[b])
            if j == 0:
                rad = dad
            if not (rho > eta2 and dad > 0.0):     # already solved (or breakdown): no further step
                alpha = np.float32(0.0)
                done = True
                break
            a64 = rho / dad
            alpha = np.float32(a64)
            rho_next = rho - 2.0 * a64 * rad + a64 * a64 * adad
            if rho_next <= eta2:
                done = True
                break
            if iters >= max_cg:
                break
            beta = np.float32(rho_next / rho)
            if j == 0:
                # x_1 = alpha_0 d_0 need not be stored: d_1 = r_1 + beta_0 d_0 gives d_0 = (d_1 - r_1) / beta_0, so
                # x_1 = cx (d_1 - r_1) with cx = alpha_0 / beta_0; float32 rounding of d_1 grows by 1 / sqrt(beta_0)
                # there, so only while beta_0 >= 1e-4 (<= 100 ulp of the step); linear cells store x
                ximp = (not linear) and rho_next >= 1e-4 * rho
                cx = np.float32(np.float64(alpha) / np.float64(beta))
            elif j == 1:
                cxa = cx + alpha
        if linear:  # the one exact Newton step: currents G V (in cur) + K (x + alpha d); check |r|_K
            rr = 0.0
            D = r if jlast == 0 else d
            for a in range(n_in):
                part = np.float32(0.0)
                for b in range(n_out):
                    db = D[a, b]
                    xb = alpha * db if jlast == 0 else x[a, b] + alpha * db
                    rb = r[a, b] - alpha * (db + w[a, b] + accq[b])
                    kb = K[a, b]
                    part += kb * rb * rb
                    cur[b] += kb * xb
                rr += part
            return (CONVERGED if rr <= 1.0001 * eta2 else NOT_CONVERGED), iters
        if not done:
            return NOT_CONVERGED, iters
    return NOT_CONVERGED, iters


@njit(cache=True)
def chunk_sums(dq):
    """dqc: dq (lane order) summed within each chunk up to and with each line, the ``_drops`` scans' input."""
    dqc = np.empty(dq.size, np.float32)
    for q in range(dq.size):
        dqc[q] = dq[q] + (dqc[q - LANES] if q >= LANES else np.float32(0.0))
    return dqc


@njit(cache=True)
def row_drops(T, dq, dqc, W):
    """W[a] = the drops along input line a for cell currents T[a] (every row; lane order, ``_drops``)."""
    if T.shape[1] % LANES or W.shape != T.shape or dq.size != T.shape[1] or dqc.size != T.shape[1]:
        raise ValueError("row_drops: T and W (rows, n) with n a multiple of LANES, dq and dqc (n,)")
    n = T.shape[0]
    for a in range(0, n - 3, 4):
        _drops4(T, a, W, a, dq, dqc)
    for a in range(n - n % 4, n):
        _drops1(T, a, W, a, dq, dqc)


@njit(cache=True, parallel=True)
def solve_batch(G, V, dq, p, kind, ks, tol, max_newton, max_cg, dv_max, n_threads, out, iters, status):
    """Output-line currents ``out`` (B, n_out) float64 of the canonical array for input voltages ``V`` (B, n_in).

    ``G`` (n_in, n_out) float32 cell conductances (small-signal at 0 V), ``dq`` (n_out,) the input-line segment
    resistances (dq_0 = driver + first segment), both with the output lines in lane order (``_drops``: n_out a
    multiple of ``LANES``, padded with lines of zero cells and zero segments), and ``p`` (n_in,) the tail sums of
    the output-line segment resistances (module docstring), ``kind`` CELL_LINEAR or CELL_SINH (i = g sinh(ks v) / ks). Stops when the
    K-weighted residual |V - v - L F(v)|_K falls below ``tol`` |V|_K per input (inexact Newton, at most
    ``max_newton`` steps and ``max_cg`` sweeps in all, each step clipped to ``dv_max``; linear cells: CG to
    ``tol``). ``iters`` (B,): sweeps with an application of L K (CG iterations, the last Newton test
    included); ``status`` (B,): CONVERGED / NOT_CONVERGED / NOT_FINITE. ``n_threads`` parallel workers
    (numba.get_num_threads()), each with its own work arrays, take the next unsolved input from one shared
    counter (``_take``) until none is left: a worker that a slow input or another process holds up takes fewer
    (a static deal waited for the slowest worker's share). An input's result depends on that input only.
    """
    B = V.shape[0]
    n_in, n_out = G.shape
    nt = max(1, min(B, n_threads))
    if n_out % LANES:
        raise ValueError("solve_batch: the number of output lines must be a multiple of LANES (lane order)")
    dqc = chunk_sums(dq)
    RG = np.empty((n_in, n_out), np.float32)     # row drops of G itself: the first F sweep's (see _solve_one)
    row_drops(G, dq, dqc, RG)
    queue = np.zeros(1, np.int64)               # the next input to solve, shared by the work queues
    for ci in prange(nt):
        v = np.empty((n_in, n_out), np.float32)
        K = np.empty((n_in, n_out), np.float32)
        r = np.empty((n_in, n_out), np.float32)
        d = np.empty((n_in, n_out), np.float32)
        w = np.empty((n_in, n_out), np.float32)
        x = np.empty((n_in, n_out), np.float32)
        t = np.empty((4, n_out), np.float32)
        col = np.empty((6, n_out), np.float32)
        cur = np.empty(n_out, np.float64)
        while True:
            i = _take(queue)
            if i >= B:
                break
            st, it = _solve_one(G, RG, V[i], dq, dqc, p, kind == CELL_LINEAR, ks, tol, max_newton, max_cg, dv_max, v, K, r,
                                d, w, x, t, col[0], col[1], col[2], col[3], col[4], col[5], cur)
            status[i] = st
            iters[i] = it
            for b in range(n_out):
                out[i, b] = cur[b]
