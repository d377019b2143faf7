"""A physical neural network built from aimc analog layers, and its digital twin with controllable mismatch.

One model definition, two realisations (training.md §3.10, "what this means for aimc"):

* :class:`DigitalTwin` -- a differentiable torch MLP (``nn.Linear`` layers + activation). Its parameters
  theta are the *controllable* parameters of the hardware: the weights programmed into the crossbars and the
  digital biases. It is what in-silico training optimises and what physics-aware training differentiates.
* :class:`PhysicalSystem` -- the "device": the same parameters written into :class:`aimc.nn.AnalogLinear`
  layers with a noisy :class:`aimc.TileConfig` (default: the 7-bit DAC / 9-bit ADC preset with output
  noise, noise and bound management), plus a hidden mismatch the twin does not know. It is a black box:
  it is only run forward and measured (no gradients; tensors come back detached) and every read is
  counted by a :class:`aimc.pnn.costs.CostMeter`.

Physical layer l (input x, the previous layer's measured output; all per-column vectors of length n_out)::

    u  = tiles(W_eff x)                 analog MVM: DAC, noise, ADC, NM/BM as set by the TileConfig
    W_eff = W * (1 + d2d) * r^(-nu) * (1 - stuck)    hidden device-to-device spread, drift, dead cells
    u  = g * u + o                      per-column gain g = 1 + gain_std*xi and offset o = offset_std*xi'
    u  = u + xi_node                    (node perturbation only; physically an injected column current)
    u  = s tanh(u / s)                  unmodelled output saturation (s = ``saturation``; 0 = none)
    a  = u + b                          digital bias
    h  = f(a)                           activation (not on the last layer of a classifier)

Twin layer l: ``h = f(W x + b)``. Hence physical = twin + hidden mismatch + analog noise; with mismatch
``"none"`` and the ``"ideal"`` TileConfig the two are equal up to float32 rounding.

Mismatch levels (:data:`MISMATCH_LEVELS`; drawn once per physical system from its seed, fixed thereafter):

==================  ======  =======  =======  ====================================================
field               none    small    large    meaning
==================  ======  =======  =======  ====================================================
gain_std            0       0.05     0.30     per-column readout gain error, g = 1 + gain_std*N(0,1)
offset_std          0       0.10     0.50     per-column offset, output units
saturation          0       20       10       output compression s*tanh(u/s), output units
d2d_std             0       0.05     0.30     per-device multiplicative spread (1 + d2d_std*N(0,1))
drift_nu_mean       0       0.01     0.05     per-device drift exponent nu ~ N(mean, std), >= 0
drift_nu_std        0       0.005    0.03
drift_time_ratio    1       24       24       t_device / t_twin: the twin's drift state is stale
                                              (calibrated at 1 h, device at 1 day)
stuck_fraction      0       0        0.01     weights stuck at zero (dead cells)
==================  ======  =======  =======  ====================================================

Pre-activations of the digits / MNIST MLPs trained here are O(1-10) (logits up to ~25), so a saturation of
20 bends only the largest outputs and 10 most logits. With "large", deploying a twin-trained digits MLP
64-64-32-10 loses about 20 points (0.97 -> 0.71-0.78 over seeds 0-2). A saturation the twin ignores is
PAT's weak spot: the twin's Jacobian passes errors through saturated outputs, cross-entropy keeps pushing
the outputs up, and PAT collapses during training once s is small for the depth (64-64-32-10 with the other
"large" errors: s = 10 gives PAT 0.93-0.97, s = 6 gives 0.61 on seed 0; on 64-32-10 a saturation of 3
alone, without any other mismatch, gives 0.60), while in-situ backprop, which sees the true slope, keeps
0.96-0.97. ``benchmarks/pnn_compare.py`` sweeps s.

Drift follows the power law G(t) = G(t0) (t/t0)^-nu
(physics.md; Le Gallo et al.), here as the ratio between the device's and the twin's time since programming.
The device's drift is not the tile API's: it is a fixed part of the hidden mismatch so that it survives the
rewrites during training (a rewrite in real PCM resets drift; here the twin simply never learns it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.config import TileConfig, as_config
from ..nn import AnalogLinear
from .costs import CostMeter, ce_flops

__all__ = ["MISMATCH_LEVELS", "DigitalTwin", "Measurement", "Mismatch", "PhysicalSystem", "as_mismatch",
           "default_config", "evaluate"]

_ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class Mismatch:
    """The hidden difference between a physical system and its twin (see module docstring for units)."""

    gain_std: float = 0.0
    offset_std: float = 0.0
    saturation: float = 0.0
    d2d_std: float = 0.0
    drift_nu_mean: float = 0.0
    drift_nu_std: float = 0.0
    drift_time_ratio: float = 1.0
    stuck_fraction: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Mismatch.{f.name} must be a finite number >= 0, got {v!r}")
        if self.drift_time_ratio <= 0:
            raise ValueError(f"Mismatch.drift_time_ratio must be > 0, got {self.drift_time_ratio}")
        if self.stuck_fraction > 1:
            raise ValueError(f"Mismatch.stuck_fraction must be in [0, 1], got {self.stuck_fraction}")

    @property
    def is_none(self) -> bool:
        return self == Mismatch()


MISMATCH_LEVELS: dict[str, Mismatch] = {
    "none": Mismatch(),
    "small": Mismatch(gain_std=0.05, offset_std=0.10, saturation=20.0, d2d_std=0.05, drift_nu_mean=0.01,
                      drift_nu_std=0.005, drift_time_ratio=24.0, stuck_fraction=0.0),
    "large": Mismatch(gain_std=0.30, offset_std=0.50, saturation=10.0, d2d_std=0.30, drift_nu_mean=0.05,
                      drift_nu_std=0.03, drift_time_ratio=24.0, stuck_fraction=0.01),
}


def as_mismatch(m) -> Mismatch:
    """A :class:`Mismatch` from a level name (``"none"``, ``"small"``, ``"large"``), a dict or itself."""
    if isinstance(m, Mismatch):
        return m
    if m is None:
        return Mismatch()
    if isinstance(m, str):
        try:
            return MISMATCH_LEVELS[m]
        except KeyError:
            raise ValueError(f"unknown mismatch level {m!r}; known: {sorted(MISMATCH_LEVELS)}") from None
    if isinstance(m, dict):
        return Mismatch(**m)
    raise TypeError(f"mismatch must be a level name, a dict or a Mismatch, got {type(m).__name__}")


def default_config() -> TileConfig:
    """The crossbar periphery of a physical system unless told otherwise: aimc's ``default`` preset (7-bit
    DAC, 9-bit ADC on +-12, output noise 0.06, abs-max noise management) with bound management off, so an
    output beyond the ADC range clips (one more effect the twin does not model).

    A chip without bound management is the common case, and ADC clipping is a realistic effect the twin
    does not see; pass ``config="default"`` for iterative bound management. (The benchmark numbers in
    ``benchmarks/pnn_compare.py`` were measured with this default.)
    """
    from ..core.config import BoundManagement, default
    cfg = default()
    return cfg.replace(forward=cfg.forward.replace(bound_management=BoundManagement.NONE))


def _resolve_config(config) -> TileConfig:
    return default_config() if config is None else as_config(config)


def _act(name: str, a: torch.Tensor) -> torch.Tensor:
    return torch.relu(a) if name == "relu" else torch.tanh(a)


def act_derivative(name: str, h: torch.Tensor) -> torch.Tensor:
    """f'(a) from the measured output h = f(a): relu 1[h > 0], tanh 1 - h^2 (no pre-activation needed)."""
    return (h > 0).to(h.dtype) if name == "relu" else 1 - h * h


def _normalise(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Length normalisation between layers (forward-forward): h / rms(h) per sample."""
    return h / torch.sqrt((h * h).mean(dim=1, keepdim=True) + eps)


class DigitalTwin(nn.Module):
    """The differentiable model: ``sizes = (n_in, n_1, ..., n_L)`` linear layers with ``activation``.

    Args:
        sizes: layer widths, input first.
        activation: ``"relu"`` or ``"tanh"``.
        final_activation: apply the activation after the last layer too (layer-local methods such as
            forward-forward have no linear read-out).
        normalize: length-normalise (per-sample RMS) each hidden output before the next layer
            (forward-forward, Hinton 2022).
        seed: initialisation seed (torch.nn.Linear's Kaiming-uniform, under a forked torch RNG).
    """

    def __init__(self, sizes, activation: str = "relu", final_activation: bool = False, normalize: bool = False,
                 seed: int = 0):
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {_ACTIVATIONS}")
        self.sizes = sizes
        self.activation = activation
        self.final_activation = bool(final_activation)
        self.normalize = bool(normalize)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def activated(self, l: int) -> bool:
        return l < self.n_layers - 1 or self.final_activation

    def layer_input(self, l: int, h: torch.Tensor) -> torch.Tensor:
        """What layer l reads given the previous layer's output h (normalised for l > 0 if ``normalize``)."""
        return _normalise(h) if (self.normalize and l > 0) else h

    def layer(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """Layer l on its input x (already normalised): f(W_l x + b_l)."""
        a = self.layers[l](x)
        return _act(self.activation, a) if self.activated(l) else a

    def forward(self, x: torch.Tensor, record: bool = False):
        h = x
        outs = []
        for l in range(self.n_layers):
            h = self.layer(l, self.layer_input(l, h))
            outs.append(h)
        return (h, outs) if record else h


@dataclass
class Measurement:
    """What a physical forward exposes: each layer's input (as fed, after normalisation) and output."""

    inputs: list
    outputs: list


def _draw_seed(seed: int, what: str) -> np.random.Generator:
    h = int.from_bytes(hashlib.blake2b(f"aimc.pnn/{seed}/{what}".encode(), digest_size=8).digest(), "little")
    return np.random.Generator(np.random.Philox(h))


class PhysicalSystem:
    """The emulated hardware running the parameters of ``twin`` through AnalogLinear layers + hidden mismatch.

    The system reads the twin's parameters when they change (a rewrite of the crossbars, counted as device
    writes = matrix entries whose written value changed); it never hands out gradients. Every forward counts
    one round trip, its MVMs and MACs, and the bytes moved (inputs in; logits out, or every layer's output
    when ``record=True``) into ``meter``.

    Args:
        twin: the model definition whose parameters are programmed (shared, not copied).
        mismatch: level name or :class:`Mismatch`.
        config: TileConfig (or preset name) of the crossbars; ``None``: :func:`default_config` (noisy),
            ``"ideal"``: exact.
        seed: seeds the hidden mismatch draw and the tiles' noise streams.
        meter: a :class:`CostMeter` (a new one if omitted).
    """

    def __init__(self, twin: DigitalTwin, mismatch="small", config: TileConfig | str | None = None,
                 seed: int = 0, meter: CostMeter | None = None):
        self.twin = twin
        self.mismatch = as_mismatch(mismatch)
        self.config = _resolve_config(config)
        self.seed = int(seed)
        self.meter = meter if meter is not None else CostMeter()
        self.activation = twin.activation
        m = self.mismatch
        self.layers: list[AnalogLinear] = []
        self._gain, self._offset, self._wmul, self._nu = [], [], [], []
        for l, (n_in, n_out) in enumerate(zip(twin.sizes[:-1], twin.sizes[1:])):
            self.layers.append(AnalogLinear(n_in, n_out, bias=False, config=self.config, seed=self.seed,
                                            name=f"pnn/layer{l}"))
            rng = _draw_seed(self.seed, f"layer{l}")
            g = 1.0 + m.gain_std * rng.standard_normal(n_out)
            o = m.offset_std * rng.standard_normal(n_out)
            d2d = np.maximum(1.0 + m.d2d_std * rng.standard_normal((n_out, n_in)), 0.0)
            nu = np.maximum(m.drift_nu_mean + m.drift_nu_std * rng.standard_normal((n_out, n_in)), 0.0)
            alive = rng.random((n_out, n_in)) >= m.stuck_fraction
            self._gain.append(torch.tensor(g, dtype=torch.float32))
            self._offset.append(torch.tensor(o, dtype=torch.float32))
            self._nu.append(nu)
            self._wmul.append(torch.tensor(d2d * alive, dtype=torch.float32))
        self._drift = [None] * len(self.layers)
        self.set_drift_time_ratio(m.drift_time_ratio)
        self._written = [None] * len(self.layers)
        self.deployed = False

    # ------------------------------------------------------------------ hidden state
    def set_drift_time_ratio(self, ratio: float) -> None:
        """Move the device's clock: its drift factor becomes ratio^(-nu) per device (the twin never knows)."""
        if not ratio > 0:
            raise ValueError(f"drift time ratio must be > 0, got {ratio}")
        self.drift_time_ratio = float(ratio)
        for l, nu in enumerate(self._nu):
            self._drift[l] = torch.tensor(np.power(ratio, -nu), dtype=torch.float32)
        self._written = [None] * len(self.layers)  # the effective weights changed: rewrite (not counted)

    def effective_weight(self, l: int) -> torch.Tensor:
        """The matrix the crossbar of layer l really holds (hidden: for tests and diagnostics only)."""
        return self.twin.layers[l].weight.detach() * self._wmul[l] * self._drift[l]

    @property
    def n_weights(self) -> int:
        return sum(t.in_features * t.out_features for t in self.layers)

    # ------------------------------------------------------------------ programming
    def sync(self) -> int:
        """Write the twin's current weights onto the crossbars where they changed; returns cells written."""
        total = 0
        for l, layer in enumerate(self.layers):
            W = self.effective_weight(l)
            prev = self._written[l]
            if prev is not None and torch.equal(prev, W):
                continue
            n = W.numel() if prev is None else int(torch.count_nonzero(W != prev))
            with torch.no_grad():
                layer.weight.copy_(W)
            self._written[l] = W.clone()
            total += n
        self.meter.writes(total)
        return total

    # ------------------------------------------------------------------ deployment on a real device model
    def program(self, t: float | None = None) -> None:
        """Physically program the current parameters (the device model of ``config.inference``, if any: its
        programming noise, faults and drift exponents are drawn once) and optionally drift to ``t`` seconds.

        Until :meth:`unprogram`, forwards read the programmed tiles and parameter changes are *not* written
        (a deployed chip). Training writes are exact (``set_weights``); this is the deployment path of
        ``aimc.nn.AnalogModule.program``. Counted: one device write per weight.
        """
        self.sync()
        for layer in self.layers:
            layer.program()
            if t is not None and t > 0:
                layer.drift(t)
        self.meter.writes(self.n_weights)
        self.deployed = True

    def drift(self, t: float) -> None:
        """Move the programmed tiles to ``t`` seconds after programming (``AnalogModule.drift``)."""
        if not self.deployed:
            raise RuntimeError("PhysicalSystem.drift: call program() first")
        for layer in self.layers:
            layer.drift(t)

    def unprogram(self) -> None:
        """Back to training mode: the crossbars mirror the parameters again (rewritten on the next forward)."""
        for layer in self.layers:
            layer.unprogram()
        self._written = [None] * len(self.layers)
        self.deployed = False

    # ------------------------------------------------------------------ the black box
    @torch.no_grad()
    def _layer(self, l: int, x: torch.Tensor, node_noise=None):
        layer = self.layers[l]
        u = layer(x)
        self.meter.mvm(x.shape[0], layer.in_features, layer.out_features)
        u = u * self._gain[l] + self._offset[l]
        if node_noise is not None and node_noise[l] is not None:
            u = u + node_noise[l]
        s = self.mismatch.saturation
        us = s * torch.tanh(u / s) if s > 0 else u
        a = us + self.twin.layers[l].bias.detach()
        h = _act(self.activation, a) if self.twin.activated(l) else a
        return h, u

    @torch.no_grad()
    def forward(self, x, record: bool = False, node_noise=None, _keep: bool = False):
        """Run the hardware on a batch x (B, n_in); returns logits/outputs (B, n_L), detached.

        ``record=True`` also returns a :class:`Measurement` with every layer's input and output (all read
        back to the host). ``node_noise``: per-layer (B, n_l) perturbations injected at the column outputs
        (node perturbation); ``None`` entries are skipped.
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.twin.sizes[0]:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (batch, {self.twin.sizes[0]})")
        if not self.deployed:
            self.sync()
        B = x.shape[0]
        ins, outs, pre = [], [], []
        h = x
        for l in range(len(self.layers)):
            xin = self.twin.layer_input(l, h)
            if self.twin.normalize and l > 0:
                self.meter.flops(3 * B * xin.shape[1])  # on-chip digital normalisation
            h, u = self._layer(l, xin, node_noise)
            ins.append(xin)
            outs.append(h)
            pre.append(u)
        out_vals = sum(o.shape[1] for o in outs) if record else h.shape[1]
        self.meter.call(B, 4 * B * x.shape[1], 4 * B * out_vals)
        if _keep:
            self._last = (ins, outs, pre)
        return (h, Measurement(ins, outs)) if record else h

    __call__ = forward

    @torch.no_grad()
    def loss(self, x, y, per_sample: bool = False, node_noise=None) -> torch.Tensor:
        """Cross-entropy of the physical outputs (computed on the host from the measured logits)."""
        logits = self.forward(x, node_noise=node_noise)
        y = torch.as_tensor(y, dtype=torch.int64)
        self.meter.flops(ce_flops(*logits.shape))
        return nn.functional.cross_entropy(logits, y, reduction="none" if per_sample else "mean")

    # ------------------------------------------------------------------ in-situ backprop
    @torch.no_grad()
    def insitu_backward(self, grad_out: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Backprop through the hardware itself after ``forward(..., _keep=True)`` (hardware-in-the-loop BP).

        The error vector goes to the chip; each layer's error is propagated by the *noisy transposed read*
        of its real crossbar (``tiles.backward``: W_eff^T with the backward periphery) and the output stage's
        true local derivatives (column gain, saturation slope, activation) -- the physics provides them, as
        in the RPU scheme (training.md §2.1-2.2, §3.8). Returns the per-layer (grad W, grad b) that a
        digital update applies to theta (the rank-1 term delta x^T, not multiplied by the hidden device
        factors, exactly as an in-array update would). Counts one round trip, the transposed MVMs and the
        bytes of the deltas read back for the digital update.
        """
        ins, outs, pre = self._last
        B = grad_out.shape[0]
        grads = [None] * len(self.layers)
        g = grad_out
        s = self.mismatch.saturation
        nbytes = 4 * B * grad_out.shape[1]
        for l in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[l]
            da = g * act_derivative(self.activation, outs[l]) if self.twin.activated(l) else g
            du = da * (1 - torch.tanh(pre[l] / s) ** 2) if s > 0 else da
            dm = du * self._gain[l]
            grads[l] = (dm.t() @ ins[l], da.sum(0))
            nbytes += 4 * B * dm.shape[1]
            if l > 0:
                gx = torch.from_numpy(layer.tiles.backward(dm.contiguous().numpy()))
                self.meter.mvm(B, layer.out_features, layer.in_features)
                if self.twin.normalize:  # through the normalisation: treat the rms as a constant
                    gx = gx / torch.sqrt((outs[l - 1] ** 2).mean(1, keepdim=True) + 1e-6)
                g = gx
        self.meter.transfer(nbytes)
        return grads


@torch.no_grad()
def evaluate(phys: PhysicalSystem, x, y, batch_size: int = 1000) -> dict:
    """Top-1 accuracy of the physical system and of its twin on (x, y), counted in the ``eval`` phase."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    cp = ct = 0
    with phys.meter.phase("eval"):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            cp += int((phys.forward(xb).argmax(1) == yb).sum())
            ct += int((phys.twin(xb).argmax(1) == yb).sum())
    return {"acc_physical": cp / len(y), "acc_twin": ct / len(y)}
