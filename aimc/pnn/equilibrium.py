"""Equilibrium propagation and coupled learning on resistive networks (numpy + numba; no torch).

The model
---------
:class:`ResistiveClassifier` is a layered resistor/diode network in the style of Kendall et al. (arXiv
2006.01981), solved by :class:`aimc.circuits.ResistiveNetwork`:

* **sources** (clamped): each input x_i drives two nodes, ``+v_in x_i`` and ``-v_in x_i`` (a positive
  conductance to the inverted copy realises a negative weight), plus a bias pair ``+v_bias``/``-v_bias`` and a
  ground node (0 V);
* **hidden** nodes: a trainable conductance to every source node; the nonlinearity is a diode per node
  (``"relu"``: anode at ground, cathode at the node, so the node is held near >= 0 V; ``"clip"``: two diodes to
  rails at ``+-v_clip``, a hard-tanh; ``"none"``: linear network);
* **outputs**: one differential pair (o+_k, o-_k) per class, each node with a trainable conductance to every
  hidden node and to the bias pair. The prediction is d_k = V(o+_k) - V(o-_k); the loss
  C = 1/2 sum_k (d_k - y_k)^2.

Every conductance g_e is a parameter. The steady state minimises the co-content E(V) (see
:mod:`aimc.circuits`), and dE/dg_e = (Delta V_e)^2 / 2 for a linear resistor with branch voltage Delta V_e.

Equilibrium propagation (Scellier & Bengio 2017)
------------------------------------------------
Free phase: V^0 = argmin E. Nudged phase: V^beta = argmin E + beta C, realised physically by an extra
conductance beta between o+_k and o-_k with a series source y_k, i.e. conductance beta plus injected currents
+beta y_k into o+_k and -beta y_k into o-_k. Then

    dL/dg_e = lim_{beta->0} (1 / (2 beta)) [ (Delta V_e^beta)^2 - (Delta V_e^0)^2 ],     Delta g_e = -lr dL/dg_e,

local to each resistor (Kendall et al.'s rule, here with the exact factor 1/2 so that the estimate tends to
the gradient of L = C(V^0)). ``centered=True`` uses nudges +-beta, (1/(4 beta)) [(Delta V^+beta)^2 -
(Delta V^-beta)^2], which removes the O(beta) bias (Scellier et al., arXiv 2312.15103); the -beta phase needs
a negative nudge conductance (an active element), which stays well-posed for small beta.

Coupled learning (Stern, Hexner, Rocks & Liu, PRX 11, 021045, 2021)
-------------------------------------------------------------------
Free phase as above; clamped phase: the outputs are held by sources at V_C = V_F + eta (target - V_F)
(for a differential pair: d_C = d_F + eta (y - d_F), common mode kept), and

    Delta g_e = -(lr / (2 eta)) [ (Delta V_e^C)^2 - (Delta V_e^F)^2 ].

(The factor 1/2 is our convention, matching EP; Stern et al. fold it into the learning rate.)

Device-aware updates
--------------------
Every conductance change goes through an update object (:class:`ClippedUpdate` by default: ideal device,
G in [g_min, g_max]; :class:`QuantisedUpdate`: fixed steps; :class:`DeviceUpdate`: pulses through a
``device_models`` pulsed device, so asymmetry, bounded states and cycle-to-cycle noise affect EP) or any
callable ``f(g, dg, rng) -> g_new``.

Costs counted (:meth:`ResistiveClassifier.costs`): physical equilibria (network solves, one per sample and
phase), Newton iterations of the simulator, conductance update events (one per conductance per applied update
step) and programming pulses.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from aimc.circuits import ResistiveNetwork

__all__ = ["ResistiveClassifier", "ClippedUpdate", "QuantisedUpdate", "DeviceUpdate", "TrainResult", "train",
           "finite_difference_gradient"]

_NONLIN = ("relu", "clip", "none")


# ----------------------------------------------------------------------------------------------------------
# conductance updates
# ----------------------------------------------------------------------------------------------------------

class ClippedUpdate:
    """Ideal device: ``G <- clip(G + dG, g_min, g_max)``. Counts update events (``n_writes``); no pulses."""

    def __init__(self, g_min: float, g_max: float):
        if not (0 <= g_min < g_max < np.inf):
            raise ValueError(f"ClippedUpdate: need 0 <= g_min < g_max < inf, got g_min={g_min}, g_max={g_max}")
        self.g_min, self.g_max = float(g_min), float(g_max)
        self.n_writes = 0
        self.n_pulses = 0

    def reset(self, g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Program the initial conductances; returns what the devices hold."""
        return np.clip(g, self.g_min, self.g_max)

    def __call__(self, g: np.ndarray, dg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.n_writes += int(np.count_nonzero(dg))
        return np.clip(g + dg, self.g_min, self.g_max)


class QuantisedUpdate(ClippedUpdate):
    """Fixed conductance step per pulse: ``n = round(dG / step)`` pulses (stochastic rounding with
    ``stochastic=True``: unbiased, E[n step] = dG), at most ``max_pulses`` per update, then clipping."""

    def __init__(self, step: float, g_min: float, g_max: float, *, stochastic: bool = False, max_pulses: int = 100):
        super().__init__(g_min, g_max)
        if not step > 0:
            raise ValueError(f"QuantisedUpdate: step must be > 0, got {step}")
        if int(max_pulses) < 1:
            raise ValueError(f"QuantisedUpdate: max_pulses must be >= 1, got {max_pulses}")
        self.step, self.stochastic, self.max_pulses = float(step), bool(stochastic), int(max_pulses)

    def pulses(self, dg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = dg / self.step
        n = np.floor(x + rng.random(x.shape)) if self.stochastic else np.round(x)
        return np.clip(n, -self.max_pulses, self.max_pulses).astype(np.int64)

    def __call__(self, g, dg, rng):
        n = self.pulses(dg, rng)
        self.n_writes += int(np.count_nonzero(n))
        self.n_pulses += int(np.abs(n).sum())
        return np.clip(g + n * self.step, self.g_min, self.g_max)


class DeviceUpdate(ClippedUpdate):
    """Pulses through a ``device_models`` pulsed device, one device per conductance.

    The device weight range [w_min, w_max] (the card's nominal bounds) maps linearly onto [g_min, g_max]:
    ``G = g_min + (w - w_min) s`` with ``s = (g_max - g_min) / (w_max - w_min)``. A requested change dG becomes
    ``n = round(dG / (dw_min s))`` pulses (stochastic rounding optional; at most ``max_pulses``) applied with
    ``device.apply_pulses`` -- so state dependence, up/down asymmetry, per-device bounds and c2c noise act on
    the update. Per-device bounds may extend past the nominal ones, so the read conductance is floored at
    ``g_floor`` (a conductance cannot be negative).

    ``device``: a card name (``device_models.load(name)``) or a pulsed-device object with ``sample_devices``,
    ``apply_pulses`` and ``clip`` (and ``dw_min``, ``w_min``, ``w_max``). If the device has ``visible``
    (write noise: what the periphery reads differs from the persistent state), the network sees the visible
    weight, re-drawn for the devices an update touched.
    """

    def __init__(self, device, g_min: float, g_max: float, *, stochastic: bool = True, max_pulses: int = 100,
                 g_floor: float = 0.0):
        super().__init__(g_min, g_max)
        if isinstance(device, str):
            import device_models

            device = device_models.load(device)
        for attr in ("sample_devices", "apply_pulses", "clip", "dw_min", "w_min", "w_max"):
            if not hasattr(device, attr):
                raise TypeError(f"DeviceUpdate: device {device!r} has no {attr!r}; pass a pulsed device")
        self.device = device
        self.stochastic, self.max_pulses, self.g_floor = bool(stochastic), int(max_pulses), float(g_floor)
        self.scale = (self.g_max - self.g_min) / (float(device.w_max) - float(device.w_min))
        self.step = float(device.dw_min) * self.scale
        self.devs = None
        self.w = None
        self.v = None

    def _to_g(self, w):
        return np.maximum(self.g_min + (w.astype(np.float64) - float(self.device.w_min)) * self.scale, self.g_floor)

    def reset(self, g, rng):
        self.devs = self.device.sample_devices(np.shape(g), rng)
        w = (np.asarray(g, np.float64) - self.g_min) / self.scale + float(self.device.w_min)
        self.w = self.device.clip(w.astype(np.float32), self.devs)
        self.v = self.device.visible(self.w, self.devs, rng) if hasattr(self.device, "visible") else self.w
        return self._to_g(self.v)

    def __call__(self, g, dg, rng):
        if self.w is None or self.w.shape != np.shape(g):
            raise RuntimeError("DeviceUpdate: call reset(g, rng) first (train() does)")
        x = dg / self.step
        n = np.floor(x + rng.random(x.shape)) if self.stochastic else np.round(x)
        n = np.clip(n, -self.max_pulses, self.max_pulses).astype(np.int64)
        self.n_writes += int(np.count_nonzero(n))
        self.n_pulses += int(np.abs(n).sum())
        self.w = self.device.apply_pulses(self.w, n, self.devs, rng)
        if hasattr(self.device, "visible"):
            self.v = self.device.visible(self.w, self.devs, rng, previous=self.v, touched=n != 0)
        else:
            self.v = self.w
        return self._to_g(self.v)


class _FunctionUpdate(ClippedUpdate):
    def __init__(self, fn, g_min, g_max):
        super().__init__(g_min, g_max)
        self.fn = fn

    def __call__(self, g, dg, rng):
        self.n_writes += int(np.count_nonzero(dg))
        out = np.asarray(self.fn(g, dg, rng), dtype=np.float64)
        if out.shape != np.shape(g):
            raise ValueError(f"update function returned shape {out.shape}, expected {np.shape(g)}")
        return out


# ----------------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------------

def _check_x(X, n_in):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f"X: expected shape (batch, {n_in}), got {np.shape(X)}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: inputs must be finite")
    return X


class ResistiveClassifier:
    """Layered resistor/diode classifier (see the module docstring for the circuit).

    Parameters
    ----------
    n_in, n_hidden, n_out: layer sizes.
    nonlinearity: ``"relu"`` (diode to ground), ``"clip"`` (diodes to +-v_clip rails) or ``"none"``.
    v_in: volts per unit input (inputs are expected in about [-1, 1]); v_bias: bias source voltage.
    g_min, g_max: conductance range of the trainable resistors (arbitrary units, e.g. mS).
    g_init: initial conductances drawn uniformly in this range (default (g_min, g_max)).
    diode_g_on, diode_g_off, diode_v_on: piecewise-linear diode (default g_on = 10 x the largest possible
        total conductance at a hidden node, i.e. close to ideal).
    target_high, target_low: differential output targets (V) for the true class and the others. A passive
        network attenuates (a hidden node averages ~2 n_in sources), so outputs are tens of mV for 1 V inputs;
        targets of that size keep the loss from being dominated by the output offsets.
    seed: seeds ``numpy.random.Generator(Philox(seed))`` for the initial conductances.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, nonlinearity: str = "relu", v_in: float = 1.0,
                 v_bias: float = 1.0, v_clip: float = 0.5, g_min: float = 1e-3, g_max: float = 1.0,
                 g_init: tuple[float, float] | None = None, diode_g_on: float | None = None,
                 diode_g_off: float = 1e-6, diode_v_on: float = 0.0, target_high: float = 0.02,
                 target_low: float = -0.02, seed: int = 0):
        for name, v in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if nonlinearity not in _NONLIN:
            raise ValueError(f"nonlinearity must be one of {_NONLIN}, got {nonlinearity!r}")
        if not (0 <= g_min < g_max < np.inf):
            raise ValueError(f"need 0 <= g_min < g_max < inf, got g_min={g_min}, g_max={g_max}")
        g_init = (g_min, g_max) if g_init is None else tuple(g_init)
        if not (g_min <= g_init[0] <= g_init[1] <= g_max):
            raise ValueError(f"g_init {g_init} must lie inside [g_min, g_max] = [{g_min}, {g_max}]")
        if not (v_in > 0 and v_bias >= 0 and v_clip > 0):
            raise ValueError("v_in and v_clip must be > 0 and v_bias >= 0")
        self.n_in, self.n_hidden, self.n_out = int(n_in), int(n_hidden), int(n_out)
        self.nonlinearity = nonlinearity
        self.v_in, self.v_bias, self.v_clip = float(v_in), float(v_bias), float(v_clip)
        self.g_min, self.g_max = float(g_min), float(g_max)
        self.target_high, self.target_low = float(target_high), float(target_low)

        ni, nh, no = self.n_in, self.n_hidden, self.n_out
        # node layout: [in+ | in- | bias+ bias- | ground | rails (clip) | hidden | out+ | out-]
        idx = 0
        self.in_pos = np.arange(idx, idx + ni); idx += ni  # noqa: E702
        self.in_neg = np.arange(idx, idx + ni); idx += ni  # noqa: E702
        self.bias = np.arange(idx, idx + 2); idx += 2  # noqa: E702
        self.ground = idx; idx += 1  # noqa: E702
        self.rails = np.arange(idx, idx + (2 if nonlinearity == "clip" else 0)); idx += self.rails.size  # noqa: E702
        self.sources = np.arange(0, idx)
        self.hidden = np.arange(idx, idx + nh); idx += nh  # noqa: E702
        self.out_pos = np.arange(idx, idx + no); idx += no  # noqa: E702
        self.out_neg = np.arange(idx, idx + no); idx += no  # noqa: E702
        net = ResistiveNetwork(idx)
        rng = np.random.Generator(np.random.Philox(seed))
        src1 = np.concatenate([self.in_pos, self.in_neg, self.bias])
        a1 = np.repeat(src1, nh)
        b1 = np.tile(self.hidden, src1.size)
        src2 = np.concatenate([self.hidden, self.bias])
        outs = np.concatenate([self.out_pos, self.out_neg])
        a2 = np.repeat(src2, outs.size)
        b2 = np.tile(outs, src2.size)
        a, b = np.concatenate([a1, a2]), np.concatenate([b1, b2])
        self.trainable = net.add_resistors(a, b, rng.uniform(g_init[0], g_init[1], a.size))
        self.n_layer1 = a1.size
        self.nudge = net.add_resistors(self.out_pos, self.out_neg, 0.0, allow_negative=True)  # -beta: centered EP
        if diode_g_on is None:
            diode_g_on = 10.0 * src1.size * self.g_max + 10.0 * outs.size * self.g_max
        if nonlinearity == "relu":
            net.add_diodes(np.full(nh, self.ground), self.hidden, g_on=diode_g_on, g_off=diode_g_off,
                           v_on=diode_v_on)
        elif nonlinearity == "clip":
            net.add_diodes(self.hidden, np.full(nh, self.rails[0]), g_on=diode_g_on, g_off=diode_g_off,
                           v_on=diode_v_on)
            net.add_diodes(np.full(nh, self.rails[1]), self.hidden, g_on=diode_g_on, g_off=diode_g_off,
                           v_on=diode_v_on)
        self.network = net
        self.n_updates = 0
        self.n_pulses = 0
        self.n_steps = 0

    # ------------------------------------------------------------------ parameters
    @property
    def conductances(self) -> np.ndarray:
        """The trainable conductances (a copy): layer 1 first (source-major), then layer 2."""
        return self.network.g[self.trainable].copy()

    @conductances.setter
    def conductances(self, g):
        g = np.asarray(g, dtype=np.float64)
        if g.shape != self.trainable.shape:
            raise ValueError(f"conductances: expected shape {self.trainable.shape}, got {g.shape}")
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError("conductances: values must be finite and >= 0")
        self.network.g[self.trainable] = g

    def branch_voltages(self, V) -> np.ndarray:
        """Voltage across every trainable resistor, (batch, n_trainable)."""
        a, b = self.network.resistor_nodes
        return V[..., a[self.trainable]] - V[..., b[self.trainable]]

    # ------------------------------------------------------------------ phases
    def source_voltages(self, X) -> np.ndarray:
        X = _check_x(X, self.n_in)
        vs = np.empty((X.shape[0], self.sources.size))
        vs[:, self.in_pos] = self.v_in * X
        vs[:, self.in_neg] = -self.v_in * X
        vs[:, self.bias] = [self.v_bias, -self.v_bias]
        vs[:, self.ground] = 0.0
        if self.rails.size:
            vs[:, self.rails] = [self.v_clip, -self.v_clip]
        return vs

    def free(self, X) -> np.ndarray:
        """Free-phase steady state, node voltages (batch, n_nodes)."""
        self.network.g[self.nudge] = 0.0
        return self.network.solve(self.sources, self.source_voltages(X))

    def outputs(self, V) -> np.ndarray:
        """Differential outputs d_k = V(o+_k) - V(o-_k), (batch, n_out)."""
        return V[..., self.out_pos] - V[..., self.out_neg]

    def nudged(self, X, Y, beta: float, V_free=None) -> np.ndarray:
        """Steady state of E + beta C: conductance beta across each output pair with series source y_k."""
        Y = self._check_y(Y, X)
        inj = np.zeros((Y.shape[0], self.network.n_nodes))
        inj[:, self.out_pos] = beta * Y
        inj[:, self.out_neg] = -beta * Y
        self.network.g[self.nudge] = beta
        try:
            return self.network.solve(self.sources, self.source_voltages(X), inj, v0=V_free)
        finally:
            self.network.g[self.nudge] = 0.0

    def clamped(self, X, Y, eta: float, V_free) -> np.ndarray:
        """Coupled-learning clamped phase: outputs held at d_C = d_F + eta (y - d_F), common mode kept."""
        Y = self._check_y(Y, X)
        shift = 0.5 * eta * (Y - self.outputs(V_free))
        vo_pos = V_free[:, self.out_pos] + shift
        vo_neg = V_free[:, self.out_neg] - shift
        clamped = np.concatenate([self.sources, self.out_pos, self.out_neg])
        vc = np.concatenate([self.source_voltages(X), vo_pos, vo_neg], axis=1)
        self.network.g[self.nudge] = 0.0
        return self.network.solve(clamped, vc, v0=V_free)

    def _check_y(self, Y, X):
        Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        if Y.shape != (np.atleast_2d(X).shape[0], self.n_out):
            raise ValueError(f"Y: expected shape ({np.atleast_2d(X).shape[0]}, {self.n_out}), got {Y.shape}")
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y: targets must be finite")
        return Y

    # ------------------------------------------------------------------ readout
    def targets(self, labels) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("labels: expected a 1-D integer array")
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_out):
            raise ValueError(f"labels must lie in [0, {self.n_out})")
        Y = np.full((labels.size, self.n_out), self.target_low)
        Y[np.arange(labels.size), labels] = self.target_high
        return Y

    def decision_function(self, X, batch_size: int = 512) -> np.ndarray:
        X = _check_x(X, self.n_in)
        return np.concatenate([self.outputs(self.free(X[i:i + batch_size]))
                               for i in range(0, X.shape[0], batch_size)])

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)

    def score(self, X, labels) -> float:
        return float(np.mean(self.predict(X) == np.asarray(labels)))

    def loss(self, X, Y) -> float:
        """Mean over the batch of C = 1/2 ||d - y||^2 at the free equilibrium."""
        d = self.outputs(self.free(X))
        return float(np.mean(0.5 * np.sum((d - self._check_y(Y, X)) ** 2, axis=1)))

    # ------------------------------------------------------------------ learning signals
    def ep_gradient(self, X, Y, beta: float, *, centered: bool = False, V_free=None):
        """EP estimate of dL/dg (mean over the batch) for the trainable conductances; returns (grad, V_free)."""
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        X = _check_x(X, self.n_in)
        if V_free is None:
            V_free = self.free(X)
        Vp = self.nudged(X, Y, beta, V_free)
        if centered:
            Vm = self.nudged(X, Y, -beta, V_free)
            g = (self.branch_voltages(Vp) ** 2 - self.branch_voltages(Vm) ** 2) / (4.0 * beta)
        else:
            g = (self.branch_voltages(Vp) ** 2 - self.branch_voltages(V_free) ** 2) / (2.0 * beta)
        return g.mean(axis=0), V_free

    def cl_gradient(self, X, Y, eta: float, *, V_free=None):
        """Coupled-learning signal (1/(2 eta)) [(dV^C)^2 - (dV^F)^2] (batch mean); returns (grad, V_free)."""
        if not 0 < eta <= 1:
            raise ValueError(f"eta must be in (0, 1], got {eta}")
        X = _check_x(X, self.n_in)
        if V_free is None:
            V_free = self.free(X)
        Vc = self.clamped(X, Y, eta, V_free)
        g = (self.branch_voltages(Vc) ** 2 - self.branch_voltages(V_free) ** 2) / (2.0 * eta)
        return g.mean(axis=0), V_free

    def costs(self) -> dict:
        """Work done so far: equilibria, Newton iterations, update steps, conductance writes, pulses."""
        return {"solves": int(self.network.n_solves), "newton_iterations": int(self.network.n_newton_iterations),
                "update_steps": int(self.n_steps), "conductance_updates": int(self.n_updates),
                "pulses": int(self.n_pulses)}


def finite_difference_gradient(model: ResistiveClassifier, X, Y, eps: float = 1e-6, index=None) -> np.ndarray:
    """Central finite differences of the free-phase loss (batch mean) w.r.t. trainable conductances
    (all, or those in ``index``): the reference gradient for EP/CL checks. 2 solves per conductance."""
    g0 = model.conductances
    index = np.arange(g0.size) if index is None else np.asarray(index)
    out = np.empty(index.size)
    try:
        for k, j in enumerate(index):
            h = eps * max(1.0, abs(g0[j]))
            g = g0.copy()
            g[j] = g0[j] + h
            model.conductances = g
            lp = model.loss(X, Y)
            g[j] = g0[j] - h
            model.conductances = g
            lm = model.loss(X, Y)
            out[k] = (lp - lm) / (2 * h)
    finally:
        model.conductances = g0
    return out


# ----------------------------------------------------------------------------------------------------------
# training loop
# ----------------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per epoch
    costs: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def train(model: ResistiveClassifier, X, labels, *, method: str = "ep", epochs: int = 10,
          lr: float | tuple[float, float] = (1e4, 60.0), lr_decay: float = 1.0, beta: float = 1e-3,
          eta: float = 0.5, centered: bool = False, batch_size: int = 10, update=None, seed: int = 0,
          X_val=None, labels_val=None, verbose: bool = False) -> TrainResult:
    """Train ``model`` in place by equilibrium propagation (``method="ep"``, nudge ``beta``, optionally
    ``centered``) or coupled learning (``"cl"``, clamping factor ``eta``).

    Each step: free phase and nudged/clamped phase on a minibatch, the batch-mean learning signal grad,
    ``dG = -lr * grad`` applied through ``update``. ``lr`` is one number or a pair (hidden layer, output
    layer): a passive network attenuates, so the first layer's signals (Delta V)^2 are much smaller and it
    needs a larger rate. The default suits EP on a 64-64-10 network with +-20 mV targets (digits; coupled
    learning there prefers (3e3, 30)); small networks need far smaller rates (3-8-3: (30, 3)). The rates are
    multiplied by ``lr_decay`` after every epoch. (default :class:`ClippedUpdate` on [g_min, g_max]; or a
    :class:`QuantisedUpdate`, a :class:`DeviceUpdate`, or any callable ``f(g, dg, rng) -> g_new``).
    Samples are shuffled each epoch by ``numpy.random.Generator(Philox(seed))``; the same seed gives the same
    result. Returns a :class:`TrainResult` with per-epoch train loss/accuracy (from the free phases seen
    during the epoch), validation accuracy if given, and the costs.
    """
    if method not in ("ep", "cl"):
        raise ValueError(f"method must be 'ep' or 'cl', got {method!r}")
    if int(epochs) != epochs or epochs < 0 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError("epochs must be an integer >= 0 and batch_size an integer >= 1")
    lrs = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    if lrs.shape not in ((1,), (2,)) or not np.all(lrs > 0) or not np.all(np.isfinite(lrs)):
        raise ValueError(f"lr must be a positive number or a pair (hidden, output) of them, got {lr!r}")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    lr_vec = np.where(np.arange(model.trainable.size) < model.n_layer1, lrs[0], lrs[-1])
    X = _check_x(X, model.n_in)
    labels = np.asarray(labels)
    Y = model.targets(labels)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples, labels {labels.shape[0]}")
    if update is None:
        update = ClippedUpdate(model.g_min, model.g_max)
    elif not hasattr(update, "reset"):
        if not callable(update):
            raise TypeError("update must be an update object or a callable f(g, dg, rng) -> g_new")
        update = _FunctionUpdate(update, model.g_min, model.g_max)
    rng = np.random.Generator(np.random.Philox(seed))
    model.conductances = update.reset(model.conductances, rng)
    res = TrainResult()
    t0 = time.perf_counter()
    w0, p0 = update.n_writes, update.n_pulses
    for ep in range(int(epochs)):
        order = rng.permutation(X.shape[0])
        loss_sum, correct = 0.0, 0
        for i in range(0, X.shape[0], batch_size):
            bi = order[i:i + batch_size]
            xb, yb = X[bi], Y[bi]
            Vf = model.free(xb)
            d = model.outputs(Vf)
            loss_sum += float(np.sum(0.5 * np.sum((d - yb) ** 2, axis=1)))
            correct += int(np.sum(np.argmax(d, axis=1) == labels[bi]))
            if method == "ep":
                grad, _ = model.ep_gradient(xb, yb, beta, centered=centered, V_free=Vf)
            else:
                grad, _ = model.cl_gradient(xb, yb, eta, V_free=Vf)
            model.conductances = update(model.conductances, -lr_vec * grad, rng)
            model.n_steps += 1
        lr_vec = lr_vec * lr_decay
        model.n_updates += update.n_writes - w0
        model.n_pulses += update.n_pulses - p0
        w0, p0 = update.n_writes, update.n_pulses
        rec = {"epoch": ep + 1, "train_loss": loss_sum / X.shape[0], "train_acc": correct / X.shape[0],
               "seconds": time.perf_counter() - t0}
        if X_val is not None:
            rec["val_acc"] = model.score(X_val, labels_val)
        res.history.append(rec)
        if verbose:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    res.seconds = time.perf_counter() - t0
    res.costs = model.costs()
    return res
