"""Resistor/diode networks solved by nodal analysis (numpy + numba; no torch).

A :class:`ResistiveNetwork` has ``n_nodes`` nodes joined by linear resistors (conductances ``g``, the trainable
parameters of a physical network) and diodes (fixed nonlinear elements). A solve clamps some nodes to given
voltages (voltage sources: inputs, biases, ground, hard-clamped outputs), optionally injects currents, and
returns every node voltage at the steady state, i.e. where Kirchhoff's current law holds at every free node:

    sum_{elements e at node n} i_e(V) = I_n        (currents leaving n = current injected into n).

Because every element's i(u) is continuous and non-decreasing, the steady state is the unique minimiser of the
total co-content E(V) = sum_e Phi_e(u_e) - sum_n I_n V_n over the free voltages (Millar 1951; for linear
resistors this is Maxwell's minimum-power principle). That makes the network an energy-based model, which is
what equilibrium propagation needs (Kendall et al., arXiv 2006.01981; :mod:`aimc.pnn.equilibrium`).

Solver
------
* Linear networks: the reduced Laplacian ``L_ff`` (free nodes) is assembled in Numba, factorised once by
  Cholesky (scipy; dense up to ``dense_limit`` free nodes, sparse LU above) and reused for the whole batch:
  ``L_ff V_f = I_f - L_fc V_c``.
* With diodes: that linear solve (diodes replaced by their off-conductance) is the initial guess, then each
  sample runs a damped Newton iteration in Numba (:func:`aimc.kernels.nodal.newton_batch`) with an exact line
  search on the convex co-content; the per-step linear system is reduced by eliminating an independent set of
  free nodes exactly, so only a small Schur complement is factorised (see the kernel module). For the
  piecewise-linear diode this is an active-set method that ends with an exact step once the on/off pattern is
  right. Samples run in parallel (``prange``) and are independent, so results do not depend on thread count.

Numbers are float64 here (a deliberate deviation from the project's float32 rule: relative KCL residuals of
1e-12 and finite-difference gradient checks need the precision; the networks are small).

Diode models (``u = V_anode - V_cathode``):

* ``"pwl"``: ``i = g_off u + (g_on - g_off) max(0, u - v_on)`` -- an ideal-ish diode with a knee at ``v_on``.
* ``"exp"``: Shockley ``i = i_s (exp(u / n_vt) - 1) + g_leak u`` (``n_vt`` = ideality x thermal voltage).

Selectors (:meth:`ResistiveNetwork.add_selectors`, symmetric nonlinear cells of passive crossbars):
``i = g sinh(k u) / k`` (``g`` the conductance at 0 V; MemTorch's Data_Driven2021 ``I = a g sinh(b V)`` has
``b = 2.71689828 / V``).

Large nonlinear networks (more free nodes than ``dense_limit``, e.g. a crossbar, :mod:`aimc.crossbar`) use a
sparse Newton iteration instead: the Jacobian is the reduced Laplacian of the small-signal conductances,
factorised by sparse LU at every step, with backtracking on the (convex) co-content.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

from aimc.kernels import nodal

__all__ = ["ResistiveNetwork", "SolveInfo"]

_STATUS = {nodal.CONVERGED: "converged", nodal.MAX_ITER: "max_iter", nodal.NOT_PD: "not positive definite",
           nodal.STALLED: "stalled"}


@dataclass
class SolveInfo:
    """Per-sample diagnostics of the last :meth:`ResistiveNetwork.solve` (Newton only for diode networks)."""

    iterations: np.ndarray  # Newton iterations per sample (0 for a linear network)
    status: np.ndarray  # nodal.CONVERGED / MAX_ITER / NOT_PD / STALLED per sample
    residual: np.ndarray  # max relative KCL residual over free nodes per sample (nan if not computed)

    @property
    def converged(self) -> np.ndarray:
        return self.status == nodal.CONVERGED


@dataclass
class _Topology:
    clamped: np.ndarray
    free: np.ndarray
    fpos: np.ndarray
    cpos: np.ndarray
    role: np.ndarray
    pos: np.ndarray
    nD: int
    nR: int
    d_ptr: np.ndarray
    d_edge: np.ndarray
    d_other: np.ndarray


def _as_index(x, n, name):
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of node indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: node indices must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name}: node index out of range [0, {n}) (got {a.min()}..{a.max()})")
    return a


def _as_param(x, m, name, *, positive=False, nonneg=False):
    a = np.broadcast_to(np.asarray(x, dtype=np.float64), (m,)).copy()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: values must be finite")
    if positive and np.any(a <= 0):
        raise ValueError(f"{name}: values must be > 0 (got min {a.min()})")
    if nonneg and np.any(a < 0):
        raise ValueError(f"{name}: values must be >= 0 (got min {a.min()})")
    return a


class ResistiveNetwork:
    """A network of ``n_nodes`` nodes, linear resistors and diodes; see the module docstring.

    Example: a voltage divider::

        net = ResistiveNetwork(3)
        net.add_resistors([0, 1], [1, 2], [1.0, 3.0])
        V = net.solve(clamped=[0, 2], v_clamped=[1.0, 0.0])   # V[1] = 1 * 1 / (1 + 3) = 0.25

    Attributes ``n_solves`` (steady states computed, one per sample) and ``n_newton_iterations`` count the
    work done.
    """

    def __init__(self, n_nodes: int):
        if int(n_nodes) != n_nodes or n_nodes < 1:
            raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
        self.n_nodes = int(n_nodes)
        self._ra = np.zeros(0, np.int64)
        self._rb = np.zeros(0, np.int64)
        self.g = np.zeros(0)
        self._active = np.zeros(0, bool)
        self._da = np.zeros(0, np.int64)
        self._db = np.zeros(0, np.int64)
        self._dt = np.zeros(0, np.int64)
        self._dp = np.zeros((3, 0))
        self._topo_cache: dict = {}
        self.n_solves = 0
        self.n_newton_iterations = 0
        self.last_info: SolveInfo | None = None
        #: batches at least this large run the Newton kernel on all Numba threads (results are identical)
        self.parallel_min_batch = 32

    # ------------------------------------------------------------------ building
    @property
    def n_resistors(self) -> int:
        return self._ra.size

    @property
    def n_diodes(self) -> int:
        return self._da.size

    @property
    def resistor_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b): the two nodes of every resistor; its branch voltage is ``V[a] - V[b]``."""
        return self._ra.copy(), self._rb.copy()

    @property
    def diode_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """(anode, cathode) of every diode."""
        return self._da.copy(), self._db.copy()

    def _check_pair(self, a, b, what):
        a = _as_index(a, self.n_nodes, f"{what} first node")
        b = _as_index(b, self.n_nodes, f"{what} second node")
        if a.shape != b.shape:
            a, b = np.broadcast_arrays(a, b)
            a, b = a.copy(), b.copy()
        if np.any(a == b):
            raise ValueError(f"{what}: an element cannot join a node to itself (node {a[a == b][0]})")
        return a, b

    def add_resistors(self, a, b, g, *, allow_negative: bool = False) -> np.ndarray:
        """Add resistors between nodes ``a[k]`` and ``b[k]`` with conductances ``g`` (>= 0; scalar or per
        resistor). Returns their indices into :attr:`g`.

        ``allow_negative=True`` marks them as active elements (e.g. a negative-impedance converter) whose
        conductance may be set below 0; the solve then fails with a clear error if the network stops being
        positive definite (the co-content stops being convex)."""
        a, b = self._check_pair(a, b, "add_resistors")
        g = _as_param(g, a.size, "add_resistors g", nonneg=not allow_negative)
        start = self._ra.size
        self._ra = np.concatenate([self._ra, a])
        self._rb = np.concatenate([self._rb, b])
        self.g = np.concatenate([np.asarray(self.g, np.float64), g])
        self._active = np.concatenate([self._active, np.full(a.size, bool(allow_negative))])
        self._topo_cache.clear()
        return np.arange(start, start + a.size)

    def add_diodes(self, anode, cathode, model: str = "pwl", *, g_on=1.0, g_off=1e-6, v_on=0.0,
                   i_s=1e-12, n_vt=0.025852, g_leak=1e-12) -> np.ndarray:
        """Add diodes conducting from ``anode`` to ``cathode``.

        ``model="pwl"``: ``i = g_off u + (g_on - g_off) max(0, u - v_on)``, ``0 < g_off <= g_on``.
        ``model="exp"``: ``i = i_s (exp(u / n_vt) - 1) + g_leak u`` with ``i_s, n_vt > 0``, ``g_leak >= 0``.
        Returns the diode indices.
        """
        a, b = self._check_pair(anode, cathode, "add_diodes")
        m = a.size
        if model == "pwl":
            g_off = _as_param(g_off, m, "add_diodes g_off", positive=True)
            g_on = _as_param(g_on, m, "add_diodes g_on", positive=True)
            if np.any(g_on < g_off):
                raise ValueError("add_diodes: need g_on >= g_off (the co-content must stay convex)")
            p = np.stack([g_off, g_on, _as_param(v_on, m, "add_diodes v_on")])
            t = nodal.DIODE_PWL
        elif model == "exp":
            p = np.stack([_as_param(g_leak, m, "add_diodes g_leak", nonneg=True),
                          _as_param(i_s, m, "add_diodes i_s", positive=True),
                          _as_param(n_vt, m, "add_diodes n_vt", positive=True)])
            t = nodal.DIODE_EXP
        else:
            raise ValueError(f"add_diodes: unknown diode model {model!r}; use 'pwl' or 'exp'")
        start = self._da.size
        self._da = np.concatenate([self._da, a])
        self._db = np.concatenate([self._db, b])
        self._dt = np.concatenate([self._dt, np.full(m, t, np.int64)])
        self._dp = np.concatenate([self._dp, p], axis=1)
        self._topo_cache.clear()
        return np.arange(start, start + m)

    def add_selectors(self, a, b, g, k=2.71689828) -> np.ndarray:
        """Add symmetric nonlinear elements ``i = g sinh(k u) / k`` between ``a[k]`` and ``b[k]`` (``g >= 0`` the
        conductance at 0 V, ``k > 0`` in 1/V): a selector or a passive array's cell. Returns their indices
        among the diodes (:attr:`diode_nodes`, :meth:`diode_currents`)."""
        a, b = self._check_pair(a, b, "add_selectors")
        m = a.size
        p = np.stack([_as_param(g, m, "add_selectors g", nonneg=True),
                      _as_param(k, m, "add_selectors k", positive=True), np.zeros(m)])
        start = self._da.size
        self._da = np.concatenate([self._da, a])
        self._db = np.concatenate([self._db, b])
        self._dt = np.concatenate([self._dt, np.full(m, nodal.SINH, np.int64)])
        self._dp = np.concatenate([self._dp, p], axis=1)
        self._topo_cache.clear()
        return np.arange(start, start + m)

    # ------------------------------------------------------------------ element tables
    def _conductances(self) -> np.ndarray:
        g = np.asarray(self.g, dtype=np.float64)
        if g.shape != (self.n_resistors,):
            raise ValueError(f"g: expected shape ({self.n_resistors},), got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError("g: conductances must be finite")
        if np.any((g < 0) & ~self._active):
            raise ValueError("g: conductances must be >= 0 (except resistors added with allow_negative=True)")
        return g

    def _elements(self):
        g = self._conductances()
        nr = self.n_resistors
        ea = np.concatenate([self._ra, self._da])
        eb = np.concatenate([self._rb, self._db])
        et = np.concatenate([np.zeros(nr, np.int64), self._dt])
        p0 = np.concatenate([g, self._dp[0]])
        p1 = np.concatenate([np.zeros(nr), self._dp[1]])
        p2 = np.concatenate([np.zeros(nr), self._dp[2]])
        return ea, eb, et, p0, p1, p2

    def _linearised(self):
        """Conductance of every element used for the initial linear solve (diodes: off-state slope)."""
        g = self._conductances()
        p0, p1, p2 = self._dp
        gd = p0.copy()
        m = self._dt == nodal.DIODE_EXP
        gd[m] += p1[m] / p2[m]
        return np.concatenate([g, gd])

    def _topology(self, clamped: np.ndarray) -> _Topology:
        key = clamped.tobytes()
        t = self._topo_cache.get(key)
        if t is not None:
            return t
        n = self.n_nodes
        if np.unique(clamped).size != clamped.size:
            raise ValueError("clamped: node indices must be distinct")
        cpos = np.full(n, -1, np.int64)
        cpos[clamped] = np.arange(clamped.size)
        free = np.flatnonzero(cpos < 0)
        if free.size == 0:
            raise ValueError("clamped: every node is clamped; nothing to solve")
        fpos = np.full(n, -1, np.int64)
        fpos[free] = np.arange(free.size)
        t = _Topology(clamped=clamped, free=free, fpos=fpos, cpos=cpos, role=None, pos=None, nD=0, nR=0,
                      d_ptr=None, d_edge=None, d_other=None)
        if len(self._topo_cache) > 16:
            self._topo_cache.clear()
        self._topo_cache[key] = t
        return t

    def _split(self, topo: _Topology) -> _Topology:
        """Fill the independent-set split D/R of the free nodes (needed by the dense Newton kernel only)."""
        if topo.role is not None:
            return topo
        n, clamped, cpos, free = self.n_nodes, topo.clamped, topo.cpos, topo.free
        ea = np.concatenate([self._ra, self._da])
        eb = np.concatenate([self._rb, self._db])
        # free-free adjacency; greedy independent set D in ascending degree order (the widest layer of a
        # layered network ends up in D); everything else free is R.
        ff = (cpos[ea] < 0) & (cpos[eb] < 0)
        fa, fb = ea[ff], eb[ff]
        deg = np.bincount(np.concatenate([fa, fb]), minlength=n)
        adj = scipy.sparse.coo_matrix((np.ones(2 * fa.size), (np.concatenate([fa, fb]), np.concatenate([fb, fa]))),
                                      shape=(n, n)).tocsr()
        role = np.zeros(n, np.int64)
        blocked = np.zeros(n, bool)
        for v in free[np.argsort(deg[free], kind="stable")]:
            if not blocked[v]:
                role[v] = 1
                blocked[adj.indices[adj.indptr[v]:adj.indptr[v + 1]]] = True
        role[free[role[free] == 0]] = 2
        pos = np.full(n, -1, np.int64)
        pos[clamped] = np.arange(clamped.size)
        dnodes = np.flatnonzero(role == 1)
        rnodes = np.flatnonzero(role == 2)
        pos[dnodes] = np.arange(dnodes.size)
        pos[rnodes] = np.arange(rnodes.size)
        # for each D node: its elements to R nodes
        e_idx = np.arange(ea.size)
        m1 = (role[ea] == 1) & (role[eb] == 2)
        m2 = (role[eb] == 1) & (role[ea] == 2)
        dn = np.concatenate([pos[ea[m1]], pos[eb[m2]]])
        de = np.concatenate([e_idx[m1], e_idx[m2]])
        do = np.concatenate([pos[eb[m1]], pos[ea[m2]]])
        order = np.argsort(dn, kind="stable")
        d_ptr = np.zeros(dnodes.size + 1, np.int64)
        np.cumsum(np.bincount(dn, minlength=dnodes.size), out=d_ptr[1:])
        topo.role, topo.pos, topo.nD, topo.nR = role, pos, int(dnodes.size), int(rnodes.size)
        topo.d_ptr, topo.d_edge, topo.d_other = d_ptr, de[order].astype(np.int64), do[order].astype(np.int64)
        return topo

    # ------------------------------------------------------------------ solving
    def _batch(self, clamped, v_clamped, currents):
        clamped = _as_index(clamped, self.n_nodes, "clamped")
        vc = np.asarray(v_clamped, dtype=np.float64)
        single = vc.ndim == 1
        if vc.ndim == 0 or vc.ndim > 2 or vc.shape[-1] != clamped.size:
            raise ValueError(f"v_clamped: expected shape ({clamped.size},) or (batch, {clamped.size}), "
                             f"got {vc.shape}")
        vc = np.atleast_2d(vc)
        if not np.all(np.isfinite(vc)):
            raise ValueError("v_clamped: values must be finite")
        inj = None
        if currents is not None:
            inj = np.asarray(currents, dtype=np.float64)
            if inj.ndim not in (1, 2) or inj.shape[-1] != self.n_nodes:
                raise ValueError(f"currents: expected shape ({self.n_nodes},) or (batch, {self.n_nodes}), "
                                 f"got {inj.shape}")
            single = single and inj.ndim == 1
            inj = np.atleast_2d(inj)
            if not np.all(np.isfinite(inj)):
                raise ValueError("currents: values must be finite")
            B = max(vc.shape[0], inj.shape[0])
            if vc.shape[0] not in (1, B) or inj.shape[0] not in (1, B):
                raise ValueError(f"batch sizes differ: v_clamped {vc.shape[0]}, currents {inj.shape[0]}")
            vc = np.array(np.broadcast_to(vc, (B, vc.shape[1])))  # writable copies: one kernel signature
            inj = np.array(np.broadcast_to(inj, (B, self.n_nodes)))
        return clamped, np.array(vc, order="C"), inj, single

    def _linear_solve(self, topo, gl, vc, inj, dense_limit):
        ea = np.concatenate([self._ra, self._da])
        eb = np.concatenate([self._rb, self._db])
        nf, nc = topo.free.size, topo.clamped.size
        B = vc.shape[0]
        V = np.empty((B, self.n_nodes))
        V[:, topo.clamped] = vc
        rhs = np.zeros((B, nf)) if inj is None else inj[:, topo.free].copy()
        if nf <= dense_limit:
            lff, lfc = nodal.assemble_reduced(ea, eb, gl, topo.fpos, topo.cpos, nf, nc)
            rhs -= vc @ lfc.T
            try:
                cf = scipy.linalg.cho_factor(lff, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                raise ValueError(self._floating_message(topo, gl)) from None
            V[:, topo.free] = scipy.linalg.cho_solve(cf, rhs.T, check_finite=False).T
        else:
            lff, lfc = self._sparse_blocks(topo, gl)
            rhs -= (lfc @ vc.T).T
            diag = lff.diagonal()
            if np.any(diag <= 0):
                raise ValueError(self._floating_message(topo, gl))
            lu = scipy.sparse.linalg.splu(lff)
            V[:, topo.free] = lu.solve(np.ascontiguousarray(rhs.T)).T
        if not np.all(np.isfinite(V)):
            raise ValueError(self._floating_message(topo, gl))
        return V

    def _sparse_blocks(self, topo, gl):
        """Sparse (L_ff csc, L_fc csr): the reduced Laplacian of element conductances ``gl``."""
        ea = np.concatenate([self._ra, self._da])
        eb = np.concatenate([self._rb, self._db])
        nf, nc = topo.free.size, topo.clamped.size
        fa, fb = topo.fpos[ea], topo.fpos[eb]
        rows, cols, vals = [], [], []
        for x, y in ((fa, fb), (fb, fa)):
            m = x >= 0
            rows += [x[m]]
            cols += [x[m]]
            vals += [gl[m]]
            mf = m & (y >= 0)
            rows += [x[mf]]
            cols += [y[mf]]
            vals += [-gl[mf]]
        lff = scipy.sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                      shape=(nf, nf))
        ca, cb = topo.cpos[ea], topo.cpos[eb]
        m1 = (fa >= 0) & (cb >= 0)
        m2 = (fb >= 0) & (ca >= 0)
        lfc = scipy.sparse.csr_matrix((np.concatenate([-gl[m1], -gl[m2]]),
                                       (np.concatenate([fa[m1], fb[m2]]), np.concatenate([cb[m1], ca[m2]]))),
                                      shape=(nf, nc))
        return lff, lfc

    def reduced_system(self, clamped):
        """(L_ff, L_fc, free): the sparse KCL system ``L_ff V_f = I_f - L_fc V_c`` of a linear network
        (diodes and selectors at their 0 V slope) for sources at ``clamped``; ``free`` the free node indices.
        For callers that factorise once and solve many right-hand sides (:mod:`aimc.crossbar`)."""
        topo = self._topology(_as_index(clamped, self.n_nodes, "clamped"))
        lff, lfc = self._sparse_blocks(topo, self._linearised())
        return lff, lfc, topo.free

    def _sparse_newton(self, topo, V, vc, inj, rtol, max_iter):
        """Newton with sparse LU per step and backtracking on the co-content, sample by sample (in place)."""
        ea, eb, et, p0, p1, p2 = self._elements()
        free = topo.free
        B = V.shape[0]
        it = np.zeros(B, np.int64)
        st = np.full(B, nodal.MAX_ITER, np.int64)
        rr = np.full(B, np.nan)
        empty = np.zeros((0, 0))
        for s_ in range(B):
            Vs = V[s_:s_ + 1]
            inj_s = empty if inj is None else inj[s_:s_ + 1]
            for k in range(max_iter + 1):
                r = nodal.node_currents(Vs, inj_s, ea, eb, et, p0, p1, p2)[0, free]
                sc = nodal.node_current_scale(Vs, inj_s, ea, eb, et, p0, p1, p2)[0, free]
                rel = float(np.max(np.abs(r) / (sc + 1e-300))) if free.size else 0.0
                rr[s_] = rel
                if rel <= rtol or k == max_iter:
                    st[s_] = nodal.CONVERGED if rel <= rtol else nodal.MAX_ITER
                    break
                gk = nodal.element_conductances(Vs[0, ea] - Vs[0, eb], et, p0, p1, p2)
                lff, _ = self._sparse_blocks(topo, gk)
                try:
                    dv = scipy.sparse.linalg.splu(lff).solve(r)
                except RuntimeError:
                    st[s_] = nodal.NOT_PD
                    break
                e0 = nodal.cocontent_batch(Vs, inj_s, ea, eb, et, p0, p1, p2)[0]
                t = 1.0
                for _ in range(40):
                    trial = Vs.copy()
                    trial[0, free] += t * dv
                    if nodal.cocontent_batch(trial, inj_s, ea, eb, et, p0, p1, p2)[0] <= e0 + 1e-12 * abs(e0):
                        break
                    t *= 0.5
                Vs[0, free] += t * dv
                it[s_] += 1
        return it, st, rr

    def _floating_message(self, topo, gl):
        ea = np.concatenate([self._ra, self._da])
        eb = np.concatenate([self._rb, self._db])
        m = gl > 0
        adj = scipy.sparse.coo_matrix((np.ones(m.sum()), (ea[m], eb[m])), shape=(self.n_nodes,) * 2)
        _, lab = scipy.sparse.csgraph.connected_components(adj, directed=False)
        anchored = np.unique(lab[topo.clamped])
        floating = topo.free[~np.isin(lab[topo.free], anchored)]
        if floating.size == 0:
            return ("network is singular: the (linearised) conductance matrix is not positive definite"
                    + (" (negative conductances make the co-content non-convex)" if np.any(gl < 0) else ""))
        return ("network is singular: free node(s) "
                f"{floating[:10].tolist()}{'...' if floating.size > 10 else ''} have no conductive path "
                "(g > 0) to a clamped node")

    def solve(self, clamped, v_clamped, currents=None, *, v0=None, rtol: float = 1e-12, max_iter: int = 100,
              dense_limit: int = 2000, return_info: bool = False):
        """Steady-state node voltages.

        Parameters
        ----------
        clamped: indices of the nodes held by voltage sources (include a ground node, e.g. clamped at 0).
        v_clamped: their voltages, shape (n_clamped,) or (batch, n_clamped).
        currents: optional current injected into each node, shape (n_nodes,) or (batch, n_nodes); entries at
            clamped nodes are ignored (the sources absorb them).
        v0: optional initial guess (batch, n_nodes) for the Newton iteration of diode networks (a warm start,
            e.g. the free-phase solution before a nudged phase).
        rtol: Newton stops when every free node's |KCL residual| <= rtol * (sum of |currents| at the node)
            or is below the rounding floor of its voltages, 64 eps sum_e k_e (|V_a| + |V_b|).
        dense_limit: linear solves use a dense Cholesky up to this many free nodes, sparse LU above.

        Returns V with shape (n_nodes,) or (batch, n_nodes) (and a :class:`SolveInfo` if ``return_info``).
        Raises ValueError for a singular network (a free node without a conductive path to a source) and
        RuntimeError if the Newton iteration fails.
        """
        clamped, vc, inj, single = self._batch(clamped, v_clamped, currents)
        if not (rtol > 0) or int(max_iter) < 1:
            raise ValueError("rtol must be > 0 and max_iter >= 1")
        topo = self._topology(clamped)
        B = vc.shape[0]
        if self.n_diodes == 0 and v0 is None:
            V = self._linear_solve(topo, self._conductances(), vc, inj, dense_limit)
            info = SolveInfo(np.zeros(B, np.int64), np.zeros(B, np.int64), np.full(B, np.nan))
        else:
            if v0 is None:
                V = self._linear_solve(topo, self._linearised(), vc, inj, dense_limit)
            else:
                V = np.array(np.broadcast_to(np.asarray(v0, dtype=np.float64), (B, self.n_nodes)))
                if not np.all(np.isfinite(V)):
                    raise ValueError("v0: values must be finite")
            ea, eb, et, p0, p1, p2 = self._elements()
            it = np.zeros(B, np.int64)
            st = np.zeros(B, np.int64)
            rr = np.zeros(B)
            if topo.free.size > dense_limit:
                it, st, rr = self._sparse_newton(topo, V, vc, inj, float(rtol), int(max_iter))
            else:
                topo = self._split(topo)
                kernel = nodal.newton_batch if B >= self.parallel_min_batch else nodal.newton_serial
                kernel(V, vc, inj if inj is not None else np.zeros((0, 0)), ea, eb, et, p0, p1, p2,
                       np.flatnonzero(et != nodal.RESISTOR), topo.clamped, topo.role, topo.pos, topo.nD, topo.nR,
                       topo.d_ptr, topo.d_edge, topo.d_other, float(rtol), int(max_iter), it, st, rr)
            info = SolveInfo(it, st, rr)
            self.n_newton_iterations += int(it.sum())
            if np.any(st == nodal.NOT_PD):
                raise ValueError(self._floating_message(topo, self._linearised()))
            bad = (st != nodal.CONVERGED) & ~(rr <= max(1e-6, rtol))
            if np.any(bad):
                raise RuntimeError(f"Newton solve failed for {int(bad.sum())} of {B} samples "
                                   f"(status: {_STATUS[int(st[bad][0])]}, relative KCL residual "
                                   f"{rr[bad].max():.3g}); try a larger max_iter")
        self.n_solves += B
        self.last_info = info
        if single:
            V = V[0]
        return (V, info) if return_info else V

    # ------------------------------------------------------------------ measurements
    def _V2(self, V):
        V = np.asarray(V, dtype=np.float64)
        if V.shape[-1] != self.n_nodes or V.ndim not in (1, 2):
            raise ValueError(f"V: expected shape ({self.n_nodes},) or (batch, {self.n_nodes}), got {V.shape}")
        return np.array(np.atleast_2d(V), order="C"), V.ndim == 1

    def _inj2(self, currents, B):
        if currents is None:
            return np.zeros((0, 0))
        inj = np.atleast_2d(np.asarray(currents, dtype=np.float64))
        return np.array(np.broadcast_to(inj, (B, self.n_nodes)))

    def branch_voltages(self, V) -> np.ndarray:
        """Voltage across every resistor, ``V[a] - V[b]``: shape (n_resistors,) or (batch, n_resistors)."""
        V = np.asarray(V, dtype=np.float64)
        return V[..., self._ra] - V[..., self._rb]

    def resistor_currents(self, V) -> np.ndarray:
        """Current through every resistor from its first to its second node."""
        return self.branch_voltages(V) * self._conductances()

    def diode_currents(self, V) -> np.ndarray:
        """Current through every diode from anode to cathode."""
        V2, single = self._V2(V)
        u = V2[:, self._da] - V2[:, self._db]
        p0, p1, p2 = self._dp
        i = np.empty_like(u)
        m = self._dt == nodal.DIODE_PWL
        i[:, m] = p0[m] * u[:, m] + (p1[m] - p0[m]) * np.maximum(0.0, u[:, m] - p2[m])
        m = self._dt == nodal.DIODE_EXP
        i[:, m] = p1[m] * np.expm1(u[:, m] / p2[m]) + p0[m] * u[:, m]
        m = self._dt == nodal.SINH
        i[:, m] = p0[m] * np.sinh(p1[m] * u[:, m]) / p1[m]
        return i[0] if single else i

    def kcl_residual(self, V, currents=None, *, relative: bool = False) -> np.ndarray:
        """Injected current minus current leaving each node through the elements (zero at free nodes of a
        solution; at a clamped node, minus the current its source delivers). With ``relative``, divided by
        the node's current scale ``|I_n| + sum |i_e|``."""
        V2, single = self._V2(V)
        args = (V2, self._inj2(currents, V2.shape[0])) + self._elements()
        r = nodal.node_currents(*args)
        if relative:
            r = r / (nodal.node_current_scale(*args) + 1e-300)
        return r[0] if single else r

    def cocontent(self, V, currents=None) -> np.ndarray:
        """Total co-content ``sum_e Phi_e(u_e) - sum_n I_n V_n`` (the function the solution minimises)."""
        V2, single = self._V2(V)
        e = nodal.cocontent_batch(V2, self._inj2(currents, V2.shape[0]), *self._elements())
        return e[0] if single else e

    def power(self, V) -> np.ndarray:
        """Power dissipated in all elements, ``sum_e i_e u_e``."""
        V2, single = self._V2(V)
        p = nodal.dissipated_power(V2, *self._elements())
        return p[0] if single else p

    def laplacian(self) -> np.ndarray:
        """Dense (n_nodes x n_nodes) weighted Laplacian of the resistors (diodes excluded)."""
        n = self.n_nodes
        L = np.zeros((n, n))
        g = self._conductances()
        np.add.at(L, (self._ra, self._ra), g)
        np.add.at(L, (self._rb, self._rb), g)
        np.add.at(L, (self._ra, self._rb), -g)
        np.add.at(L, (self._rb, self._ra), -g)
        return L
