"""The crossbar as a circuit: wire resistance solved exactly (sparse nodal system) and fast (Numba), with
linear, 1T1R and sinh (selector) cells; ``ArrayConfig`` in ``aimc/core/config.py`` describes it.

Geometry (``ArrayConfig`` docstring; circuits_and_cost.md A.1): a physical array of rows i (word lines) and
columns j (bit lines). Forward read: row i is driven at its column-0 end from V_i = x_i v_read through
``driver_ohm`` + one segment; column j is held at virtual ground (0 V) at its end below the last row through one
segment + ``sense_ohm``; the output is the current into that virtual ground. Transposed read: columns driven
from the bottom, rows sensed at the left. Both reads are mapped onto one *canonical* array (:class:`Crossbar`:
input lines driven at output-line position 0, output lines sensed at input-line position n_in - 1).

Devices of a weight: ``pair_layout`` 'two_arrays' solves every device slice (G+, G-, or the n pairs) as its own
array; 'interleaved' puts them in one array, columns [G+_0, G-_0, G+_1, ...] side by side (their currents share
the word lines). ``geometry`` 'used' solves only the used in x out cells; 'physical' the whole
``max_in`` x ``max_out`` array (per device slice), the used block at the corner nearest the drivers and sense
amplifiers (the last rows, the first columns), unused cells at g_min and unused rows driven at 0 V.

Solvers: :meth:`Crossbar.exact` builds the nodal system on :class:`aimc.circuits.ResistiveNetwork` (sparse LU,
factorised once per state; Newton for sinh cells) -- the reference, itself checked against ngspice
(tests/test_ngspice.py). :meth:`Crossbar.fast` is the Numba Newton/conjugate-gradient solver of
``aimc/kernels/crossbar.py`` batched over inputs; it stops at the relative residual ``tol``; an input that does
not converge (or turns non-finite) is re-solved exactly with a warning (``fallback``) or raises
:class:`CircuitError` naming the array.

For linear cells the circuit is a linear map of the inputs: :meth:`ArrayCircuit.effective` solves it once per
programmed/drifted state (one fast solve with the unit inputs) into an effective weight matrix, so every later
forward is one product. Sinh cells need a solve per input (:meth:`ArrayCircuit.product`).
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
import scipy.sparse.linalg

from ..core import mapping as _map
from .network import ResistiveNetwork
from ..core.config import ArrayConfig, ArrayGeometry, CellKind, CircuitSolver, MappingKind, PairLayout, TileConfig
from ..kernels import crossbar as _k

__all__ = ["CircuitError", "Crossbar", "ArrayCircuit"]

_US = 1e-6  # S per uS


class CircuitError(RuntimeError):
    """A circuit solve failed (singular system, no convergence, non-finite result); names the array."""


class Crossbar:
    """One array in canonical orientation: ``G`` (n_in, n_out) cell conductances in uS (input line a, output
    line b), segment resistances ``r_in`` / ``r_out`` (Ohm) of the input / output lines, the driver and sense
    resistances, and the cell model (``CellKind``; ``access_ohm`` for 1T1R, ``sinh_k`` for sinh cells).

    ``exact(V)`` / ``fast(V)``: output-line currents (B, n_out) in uA for input voltages V (B, n_in) in volts.
    ``effective()``: for linear cells, the (n_out, n_in) matrix in uS with I = G_eff V.
    """

    def __init__(self, G, r_in, r_out, r_drv=0.0, r_sense=0.0, cell=CellKind.LINEAR, access_ohm=0.0,
                 sinh_k=2.71689828, *, tol=ArrayConfig.tol, max_iter=ArrayConfig.max_iter,
                 fallback=ArrayConfig.fallback, name="array"):
        G = np.asarray(G, np.float64)
        if G.ndim != 2 or G.size == 0:
            raise ValueError(f"{name}: G must be a non-empty 2-D array (n_in, n_out), got shape {G.shape}")
        if not np.isfinite(G).all() or (G < 0).any():
            raise CircuitError(f"array {name!r}: conductances must be finite and >= 0")
        for nm, v in (("r_in", r_in), ("r_out", r_out), ("r_drv", r_drv), ("r_sense", r_sense),
                      ("access_ohm", access_ohm)):
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: {nm} = {v!r} must be a finite resistance >= 0 (Ohm)")
        self.cell = CellKind(cell)
        if self.cell == CellKind.T1R1:
            G = G / (1.0 + G * _US * access_ohm)  # access transistor in series: 1 / (1/G + R_acc)
        self.G = G
        self.n_in, self.n_out = G.shape
        self.r_in, self.r_out, self.r_drv, self.r_sense = float(r_in), float(r_out), float(r_drv), float(r_sense)
        self.sinh_k = float(sinh_k)
        self.tol, self.max_iter, self.fallback, self.name = float(tol), int(max_iter), bool(fallback), name
        self._net = None
        self._lu = None
        self._fast = None

    @property
    def linear(self) -> bool:
        return self.cell != CellKind.SINH

    @property
    def ideal_rows(self) -> bool:
        return self.r_in == 0 and self.r_drv == 0

    @property
    def ideal_cols(self) -> bool:
        return self.r_out == 0 and self.r_sense == 0

    def _ideal(self, V):
        if self.linear:
            return V @ self.G
        k = self.sinh_k
        return np.stack([(self.G * np.sinh(k * v[:, None]) / k).sum(0) for v in V])

    def _check_v(self, V):
        V = np.atleast_2d(np.asarray(V, np.float64))
        if V.ndim != 2 or V.shape[1] != self.n_in:
            raise ValueError(f"array {self.name!r}: input voltages have shape {V.shape}, expected (batch, {self.n_in})")
        if not np.isfinite(V).all():
            raise ValueError(f"array {self.name!r}: input voltages contain NaN or inf")
        return V

    # ------------------------------------------------------------------ exact (sparse nodal system)
    def network(self):
        """(ResistiveNetwork, clamped nodes, u nodes (n_in, n_out), w nodes (n_in, n_out)); nodes 0..n_in-1
        are the sources, node n_in the ground."""
        if self._net is not None:
            return self._net
        m, n = self.n_in, self.n_out
        src, gnd = np.arange(m), m
        nxt = m + 1
        if self.ideal_rows:
            u = np.repeat(src[:, None], n, axis=1)
        else:
            u = nxt + np.arange(m * n).reshape(m, n)
            nxt += m * n
        if self.ideal_cols:
            w = np.full((m, n), gnd)
        else:
            w = nxt + np.arange(m * n).reshape(m, n)
            nxt += m * n
        net = ResistiveNetwork(nxt)
        if not self.ideal_rows:
            net.add_resistors(src, u[:, 0], 1.0 / ((self.r_drv + self.r_in) * _US))
            if n > 1:
                net.add_resistors(u[:, :-1].ravel(), u[:, 1:].ravel(), 1.0 / (self.r_in * _US))
        if not self.ideal_cols:
            if m > 1:
                net.add_resistors(w[:-1].ravel(), w[1:].ravel(), 1.0 / (self.r_out * _US))
            net.add_resistors(w[-1], np.full(n, gnd), 1.0 / ((self.r_out + self.r_sense) * _US))
        if self.linear:
            net.add_resistors(u.ravel(), w.ravel(), self.G.ravel())
        else:
            net.add_selectors(u.ravel(), w.ravel(), self.G.ravel(), self.sinh_k)
        self._net = (net, np.arange(m + 1), u, w)
        return self._net

    def _cell_currents_sum(self, Vn, u, w):
        du = Vn[:, u] - Vn[:, w]
        if self.linear:
            return (self.G * du).sum(axis=1)
        k = self.sinh_k
        return (self.G * np.sinh(k * du) / k).sum(axis=1)

    def exact(self, V, chunk: int = 64) -> np.ndarray:
        """Output currents (B, n_out) in uA by the sparse nodal solve (linear: one LU for all inputs)."""
        V = self._check_v(V)
        if self.ideal_rows and self.ideal_cols:
            return self._ideal(V)
        net, clamped, u, w = self.network()
        out = np.empty((V.shape[0], self.n_out))
        vc = np.concatenate([V, np.zeros((V.shape[0], 1))], axis=1)
        if self.linear:
            if self._lu is None:
                lff, lfc, free = net.reduced_system(clamped)
                try:
                    self._lu = (scipy.sparse.linalg.splu(lff.tocsc(), permc_spec="MMD_AT_PLUS_A"), lfc, free)
                except RuntimeError as e:
                    raise CircuitError(f"array {self.name!r}: the nodal system is singular ({e})") from None
            lu, lfc, free = self._lu
            for s in range(0, V.shape[0], chunk):
                vcs = vc[s:s + chunk]
                Vn = np.empty((vcs.shape[0], net.n_nodes))
                Vn[:, clamped] = vcs
                Vn[:, free] = lu.solve(np.ascontiguousarray(-(lfc @ vcs.T))).T
                out[s:s + chunk] = self._cell_currents_sum(Vn, u, w)
        else:
            for s in range(V.shape[0]):
                try:
                    Vn = net.solve(clamped, vc[s], rtol=1e-12, max_iter=100, dense_limit=256)
                except (RuntimeError, ValueError) as e:
                    raise CircuitError(f"array {self.name!r}: exact solve failed ({e})") from None
                out[s] = self._cell_currents_sum(Vn[None], u, w)[0]
        if not np.isfinite(out).all():
            raise CircuitError(f"array {self.name!r}: the exact solve gave non-finite currents")
        return out

    # ------------------------------------------------------------------ fast (Numba Newton + CG)
    def _ladders(self):
        """The fast solver's arrays, once per Crossbar (G does not change): g_ref, G / g_ref and the input-line
        segment resistances dq in the kernel's lane order (``_lane_order``: padded with zero cells and
        segments), the output-line tail sums p, the lane order and its padding mask."""
        if self._fast is None:
            g = float(self.G.max()) if self.G.size and self.G.max() > 0 else 1.0
            r = np.full(self.n_out, self.r_in)
            r[0] += self.r_drv
            dq = r * g * _US                                # r_b = Q_b - Q_(b-1), normalised by g_ref
            rho = np.full(self.n_in, self.r_out)
            rho[-1] += self.r_sense
            p = np.cumsum(rho[::-1])[::-1] * g * _US        # P_a = sum_{k>=a} rho_k
            order = _lane_order(self.n_out)
            pad = order < 0                                 # zero cells and segments beyond the last output line
            src = np.where(pad, 0, order)
            Gn = np.ascontiguousarray(self.G[:, src] / g, np.float32)
            Gn[:, pad] = 0.0
            dq = np.where(pad, 0.0, dq[src]).astype(np.float32)
            self._fast = (g, Gn, dq, p.astype(np.float32), order, pad)
        return self._fast

    def fast(self, V, info: dict | None = None) -> np.ndarray:
        """Output currents (B, n_out) in uA by the Numba solver (``tol``; fallback or error if it fails)."""
        V = self._check_v(V)
        g, Gn, dq, p, order, pad = self._ladders()
        B = V.shape[0]
        iters = np.zeros(B, np.int64)
        status = np.zeros(B, np.int64)
        Vf = np.ascontiguousarray(V, np.float32)
        out = np.empty((B, order.size), np.float64)
        kind = _k.CELL_LINEAR if self.linear else _k.CELL_SINH
        _k.solve_batch(Gn, Vf, dq, p, kind, np.float32(self.sinh_k), self.tol, 50, self.max_iter,
                       np.float32(0.5 / self.sinh_k), numba.get_num_threads(), out, iters, status)
        res = np.empty((B, self.n_out))
        res[:, order[~pad]] = out[:, ~pad] * g
        bad = (status != _k.CONVERGED) | ~np.isfinite(res).all(axis=1)
        if info is not None:
            info.update(iterations=iters, status=status)
        if bad.any():
            msg = (f"array {self.name!r}: the fast circuit solver did not converge for {int(bad.sum())} of {B} "
                   f"inputs (tol {self.tol}, max_iter {self.max_iter})")
            if not self.fallback:
                raise CircuitError(msg + "; raise ArrayConfig.max_iter or use solver 'exact'")
            warnings.warn(msg + "; using the exact solve for them", RuntimeWarning, stacklevel=3)
            res[bad] = self.exact(V[bad])
        return res

    def solve(self, V, solver=CircuitSolver.FAST) -> np.ndarray:
        return self.exact(V) if CircuitSolver(solver) == CircuitSolver.EXACT else self.fast(V)

    def effective(self, solver=CircuitSolver.FAST) -> np.ndarray:
        """Linear cells: the (n_out, n_in) conductance matrix (uS) with I = G_eff V (one solve per input line)."""
        if not self.linear:
            raise ValueError(f"array {self.name!r}: sinh cells have no effective matrix (use solve per input)")
        return self.solve(np.eye(self.n_in), solver).T


def _lane_order(n: int) -> np.ndarray:
    """The fast solver's lane order of n output lines (``aimc.kernels.crossbar._drops``): the line stored at each
    position, -1 for padding; position k LANES + j holds line j C + k, C = ceil(n / LANES) lines per lane."""
    lanes = _k.LANES
    c = -(-n // lanes)
    q = np.arange(c * lanes)
    b = (q % lanes) * c + q // lanes
    return np.where(b < n, b, -1)


def _crossbars(G_phys, acfg: ArrayConfig, transposed: bool, name: str):
    """The canonical Crossbar of a physical array G_phys (rows, cols) for the forward or transposed read."""
    if transposed:
        C, r_in, r_out = G_phys[::-1, ::-1].T, acfg.wire_col_ohm, acfg.wire_row_ohm
    else:
        C, r_in, r_out = G_phys, acfg.wire_row_ohm, acfg.wire_col_ohm
    return Crossbar(np.ascontiguousarray(C), r_in, r_out, acfg.driver_ohm, acfg.sense_ohm, acfg.cell,
                    acfg.access_ohm, acfg.sinh_k, tol=acfg.tol, max_iter=acfg.max_iter, fallback=acfg.fallback,
                    name=name + (" (transposed read)" if transposed else ""))


class ArrayCircuit:
    """The circuit of one tile for one read direction, from its device conductances (devices, out, in) uS.

    ``effective()``: the normalised weights (out, in) the circuit computes (linear cells), for the forward
    read; for the transposed read the (out, in) matrix whose transpose the backward product uses.
    ``product(v)``: the normalised MVM for inputs v (R, in) forward or (R, out) transposed, one solve per
    input (sinh cells).
    """

    def __init__(self, G_dev: np.ndarray, map_params: dict, cfg: TileConfig, transposed: bool, name: str):
        self.acfg, self.mcfg = cfg.array, cfg.mapping
        self.params = map_params
        self.transposed = transposed
        D, out, inp = G_dev.shape
        self.D, self.out, self.inp = D, out, inp
        a, m = self.acfg, self.mcfg
        inter = a.pair_layout == PairLayout.INTERLEAVED
        cols = out * D if inter else out
        rows = inp
        if a.geometry == ArrayGeometry.PHYSICAL:
            if inp > m.max_in or out > m.max_out:
                raise CircuitError(f"array {name!r}: tile of {out} x {inp} does not fit the physical array "
                                   f"mapping.max_out x max_in = {m.max_out} x {m.max_in}")
            rows, cols = m.max_in, m.max_out * (D if inter else 1)
        self.rows, self.cols = rows, cols
        self.r0 = rows - inp  # used rows are the last ones (nearest the sense amplifiers)
        phys = []
        for d in range(1 if inter else D):
            P = np.full((rows, cols), m.g_min, np.float64)
            if inter:
                for dd in range(D):
                    P[self.r0:, dd:out * D:D] = G_dev[dd].T
            else:
                P[self.r0:, :out] = G_dev[d].T
            phys.append(P)
        self.inter = inter
        self._stack = None
        self.arrays = [_crossbars(P, a, transposed, name if len(phys) == 1 else f"{name}[device {d}]")
                       for d, P in enumerate(phys)]

    @property
    def linear(self) -> bool:
        return self.acfg.cell != CellKind.SINH

    def _dev_cols(self, d):
        """Physical column indices of device d's used columns."""
        return np.arange(self.out) * self.D + d if self.inter else np.arange(self.out)

    def _stack_physical(self, per_array):
        """(devices, rows, cols) conductance-like responses in physical coordinates -> (devices, out, in)."""
        stack = np.empty((self.D, self.out, self.inp))
        for d in range(self.D):
            M = per_array[0 if self.inter else d]  # (rows, cols): response of row i <-> column j
            stack[d] = M[self.r0:, self._dev_cols(d)].T
        return stack

    def effective_stack(self) -> np.ndarray:
        """Effective conductances (devices, out, in) uS, float32 (linear cells; one state solve per array,
        cached): device d's response of output j to input i, in the read direction of this circuit."""
        if self._stack is None:
            per = []
            for xb in self.arrays:
                E = xb.effective(self.acfg.solver)           # (n_out_c, n_in_c)
                per.append(E.T if not self.transposed else E[::-1, ::-1])  # -> physical (rows, cols)
            self._stack = self._stack_physical(per).astype(np.float32)
        return self._stack

    def effective(self) -> np.ndarray:
        """Normalised effective weights (out, in), float32 (linear cells)."""
        return _map.from_conductances(self.effective_stack(), self.params, self.mcfg)

    def product(self, v: np.ndarray) -> np.ndarray:
        """y (R, out) for v (R, in) (forward), or x' (R, in) for d (R, out) (transposed): one solve per input."""
        v = np.asarray(v, np.float64)
        R = v.shape[0]
        vr = self.acfg.v_read
        drive, owner, dt = _encode(v, self.acfg.input_encoding)
        if not self.transposed:
            V = np.zeros((drive.shape[0], self.rows))
            V[:, self.r0:] = drive * vr
            J = np.empty((self.D, R, self.out))
            I = None
            for d in range(self.D):
                if I is None or not self.inter:  # interleaved: one array, one solve, every device's columns
                    I = self.arrays[0 if self.inter else d].solve(V, self.acfg.solver)  # (R', cols)
                J[d] = _integrate(I[:, self._dev_cols(d)], owner, dt, R) / vr
            return _combine(J, v, self.params, self.mcfg).astype(np.float32)
        # transposed: one read per device (its columns driven, the others at 0 V), currents on the rows
        J = np.empty((self.D, R, self.inp))
        for d in range(self.D):
            Vp = np.zeros((drive.shape[0], self.cols))
            Vp[:, self._dev_cols(d)] = drive * vr
            xb = self.arrays[0 if self.inter else d]
            I = xb.solve(Vp[:, ::-1], self.acfg.solver)   # canonical input a' = cols-1-j; output b' = rows-1-i
            J[d] = _integrate(I[:, ::-1][:, self.r0:], owner, dt, R) / vr
        return _combine(J, v, self.params, self.mcfg).astype(np.float32)


def _encode(v, encoding):
    """Drive patterns (R', n) in units of v_read, the input each belongs to (R',) and its duration (R',).

    Amplitude: the inputs themselves, duration 1. Pulse width: for each input, one pattern per distinct pulse
    length t_1 < ... < t_K of |v|: during (t_(k-1), t_k] the lines with |v| >= t_k are at sign(v) v_read."""
    from ..core.config import InputEncoding
    R = v.shape[0]
    if InputEncoding(encoding) == InputEncoding.AMPLITUDE:
        return v, np.arange(R), np.ones(R)
    pats, owner, dt = [], [], []
    a = np.abs(v)
    for r in range(R):
        t_prev = 0.0
        for t in np.unique(a[r][a[r] > 0]):
            pats.append(np.sign(v[r]) * (a[r] >= t))
            owner.append(r)
            dt.append(t - t_prev)
            t_prev = t
    if not pats:
        return np.zeros((1, v.shape[1])), np.zeros(1, np.int64), np.zeros(1)
    return np.array(pats), np.array(owner), np.array(dt)


def _integrate(I, owner, dt, R):
    """Per input, the sum of its patterns' currents times their durations (the collected charge)."""
    out = np.zeros((R, I.shape[1]))
    np.add.at(out, owner, I * dt[:, None])
    return out


def _combine(J, v, params, mcfg):
    """Digital recombination of device currents J (devices, R, k) (uS x normalised input) into the normalised
    product (as ``mapping.from_conductances`` does for conductances)."""
    s = params["scale"]
    if mcfg.kind == MappingKind.SINGLE_OFFSET:
        vs = v.sum(axis=1, keepdims=True)
        return (J[0] - mcfg.g_min * vs) / s + params["w_min"] * vs
    y = np.zeros(J.shape[1:])
    for k, f in enumerate(mcfg.pair_factors):
        y += f * (J[2 * k] - J[2 * k + 1])
    return y / s


def tile_circuits(G_dev, map_params, cfg: TileConfig, name: str):
    """(forward, transposed) ArrayCircuit of a tile, or (None, None) unless ``cfg.array.model`` is 'circuit'.

    ``G_dev`` (devices, out, in) uS: the programmed, drifted conductances as last read, or None with
    ``map_params`` holding the normalised weights (``{"weights": w}``) of a never-programmed tile, whose
    ideal conductances (``mapping.to_conductances``) are used.
    """
    from ..core.config import WireModel
    if cfg.array.model != WireModel.CIRCUIT:
        return None, None
    if G_dev is None:
        G_dev, map_params = _map.to_conductances(map_params["weights"], cfg.mapping)
    G_dev = np.asarray(G_dev, np.float64)
    return (ArrayCircuit(G_dev, map_params, cfg, False, name), ArrayCircuit(G_dev, map_params, cfg, True, name))


def _f(x) -> str:
    return format(float(x), ".17g")


def read_physical(G_phys, acfg: ArrayConfig, V, transposed: bool = False, solver=None) -> np.ndarray:
    """Currents (B, cols) in uA of a physical array G_phys (rows, cols) in uS read forward (V (B, rows) volts
    on the word lines), or (B, rows) read transposed (V (B, cols) on the bit lines); geometry as in the module
    docstring. ``solver`` defaults to ``acfg.solver``."""
    G_phys = np.asarray(G_phys, np.float64)
    xb = _crossbars(G_phys, acfg, transposed, "array")
    solver = acfg.solver if solver is None else solver
    V = np.atleast_2d(np.asarray(V, np.float64))
    if not transposed:
        return xb.solve(V, solver)
    return xb.solve(V[:, ::-1], solver)[:, ::-1]


def spice_netlist(G_phys, acfg: ArrayConfig, V, transposed: bool = False, title: str = "aimc crossbar") -> str:
    """An ngspice netlist (``ngspice -b``) of the physical array G_phys (rows, cols) in uS driven by V (volts;
    per row, or per column if ``transposed``), written directly in physical coordinates (independent of the
    canonical mapping the solvers use). Prints the sensed currents ``i(vs<k>)`` in A with 15 digits.

    Rows r<i>_<j>, columns c<i>_<j>; 1T1R cells get an internal node (cell, then access resistor); sinh cells
    are behavioural sources ``I = g sinh(k V) / k``; zero-conductance cells are left open.
    """
    G_phys = np.asarray(G_phys, np.float64)
    V = np.asarray(V, np.float64).ravel()
    M, N = G_phys.shape
    a = acfg
    if a.wire_row_ohm <= 0 or a.wire_col_ohm <= 0:
        raise ValueError("spice_netlist needs wire resistances > 0")
    L = [f"* {title}: {M} x {N}, {'transposed' if transposed else 'forward'} read, cell {a.cell.value}"]
    for i in range(M):
        for j in range(1, N):
            L.append(f"Rr{i}_{j} r{i}_{j - 1} r{i}_{j} {_f(a.wire_row_ohm)}")
    for j in range(N):
        for i in range(1, M):
            L.append(f"Rc{i}_{j} c{i - 1}_{j} c{i}_{j} {_f(a.wire_col_ohm)}")
    for i in range(M):
        for j in range(N):
            g = G_phys[i, j] * _US
            if g <= 0:
                continue
            if a.cell == CellKind.SINH:
                L.append(f"Bx{i}_{j} r{i}_{j} c{i}_{j} I={_f(g)}*sinh({_f(a.sinh_k)}*V(r{i}_{j},c{i}_{j}))/{_f(a.sinh_k)}")
            elif a.cell == CellKind.T1R1:
                L.append(f"Rx{i}_{j} r{i}_{j} m{i}_{j} {_f(1.0 / g)}")
                L.append(f"Ra{i}_{j} m{i}_{j} c{i}_{j} {_f(a.access_ohm)}")
            else:
                L.append(f"Rx{i}_{j} r{i}_{j} c{i}_{j} {_f(1.0 / g)}")
    # forward: rows driven at the left, columns sensed at the bottom; transposed: columns driven at the bottom,
    # rows sensed at the left
    if not transposed:
        n_in, n_out, drv_ohm, sense_ohm = M, N, a.wire_row_ohm, a.wire_col_ohm
        drive_node, sense_node, lines = (lambda i: f"r{i}_0"), (lambda j: f"c{M - 1}_{j}"), "row"
    else:
        n_in, n_out, drv_ohm, sense_ohm = N, M, a.wire_col_ohm, a.wire_row_ohm
        drive_node, sense_node, lines = (lambda j: f"c{M - 1}_{j}"), (lambda i: f"r{i}_0"), "column"
    if V.size != n_in:
        raise ValueError(f"V has {V.size} values, expected {n_in} (one per {lines})")
    for k in range(n_in):
        L.append(f"Vd{k} d{k} 0 DC {_f(V[k])}")
        L.append(f"Rd{k} d{k} {drive_node(k)} {_f(a.driver_ohm + drv_ohm)}")
    for k in range(n_out):
        L.append(f"Rs{k} {sense_node(k)} s{k} {_f(sense_ohm + a.sense_ohm)}")
        L.append(f"Vs{k} s{k} 0 DC 0")
    L.append(".options reltol=1e-10 abstol=1e-18 vntol=1e-15")
    L += [".control", "set numdgt=15", "op"]
    L += [f"print i(vs{k})" for k in range(n_out)]
    L += [".endc", ".end", ""]
    return "\n".join(L)
