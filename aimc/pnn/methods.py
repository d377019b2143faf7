"""Training methods for physical neural networks on one model definition (training.md §3.3-3.9).

Every method trains the parameters theta of a :class:`~aimc.pnn.physical.DigitalTwin` whose hardware
realisation is a :class:`~aimc.pnn.physical.PhysicalSystem` (same theta, hidden mismatch, analog noise), counts
its work in a :class:`~aimc.pnn.costs.CostMeter`, and reports test accuracy on the physical system *and* on the
twin. Gradient-like signals go through one digital optimizer (Adam by default) unless stated.

==============  =====================================================================================
method          learning signal (B = batch, e = softmax(y) - onehot, the output error of the CE loss)
==============  =====================================================================================
``twin``        in silico: backprop through the twin only; the hardware is used only at deployment
``pat``         physics-aware training (Wright et al., Nature 601, 549, 2022): forward on the hardware,
                every layer's output measured; backward through the twin's layer l evaluated at the
                measured input x^[l] (``y = y_m + (y_p - y_m).detach()`` per layer)
``insitu-bp``   hardware-in-the-loop backprop: forward on the hardware, errors propagated by the hardware's
                noisy transposed reads and true local derivatives (:meth:`PhysicalSystem.insitu_backward`),
                digital update + rewrite (the reference "exact gradient through the analog forward")
``fa``          feedback alignment (Lillicrap 2016): delta_l = (B_(l+1) delta_(l+1)) * f'(a_l)
``dfa``         direct feedback alignment (Nøkland 2016): delta_l = (B_l e) * f'(a_l)
                -- the fixed random B live on their own programmed, noisy :class:`aimc.TileArray`
``ff``          forward-forward (Hinton 2022): per-layer goodness G = mean_j h_j^2, loss
                softplus(theta - G_pos) + softplus(G_neg - theta), label one-hot appended to the input,
                length-normalised layers, no gradient across layers; prediction by summed goodness
``spsa``        SPSA (Spall 1992): g = [L(th + c D) - L(th - c D)] / (2c) * D, D_i = +-1, 2 passes/step
``wp``          weight perturbation: g = [L(th + s xi) - L(th)] / s * xi, xi ~ N(0, I), 2 passes/step
``np``          node perturbation: columns perturbed by xi ~ N(0, s^2) during a second pass;
                grad W_l = mean_b [L_b(xi) - L_b] xi_l,b x_l,b^T / s^2
``ep``          equilibrium propagation on a resistive network (:mod:`aimc.pnn.equilibrium`), see
                :func:`train_ep`
==============  =====================================================================================

Zeroth-order methods perturb theta on the hardware itself, so every perturbation is a rewrite of the
crossbars (counted as device writes) and every loss is a physical forward pass (counted).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.tile import TileArray
from . import costs as C
from .physical import (DigitalTwin, PhysicalSystem, _resolve_config, act_derivative, as_mismatch,
                       evaluate)

__all__ = ["DEFAULTS", "METHODS", "FeedbackTiles", "PNNResult", "feedback_deltas", "ff_predict", "load_data",
           "pat_forward", "train", "train_ep", "zo_gradient"]

METHODS = ("twin", "pat", "insitu-bp", "fa", "dfa", "ff", "spsa", "wp", "np", "ep")

#: Per-method defaults (digits, MLP 64-32-10); any of them can be overridden by keyword.
DEFAULTS: dict[str, dict] = {
    "twin": {"epochs": 30, "lr": 1e-2},
    "pat": {"epochs": 30, "lr": 1e-2},
    "insitu-bp": {"epochs": 30, "lr": 1e-2},
    "fa": {"epochs": 30, "lr": 1e-2},
    "dfa": {"epochs": 30, "lr": 1e-2},
    "ff": {"epochs": 30, "lr": 3e-2, "threshold": 2.0},
    "spsa": {"epochs": 100, "lr": 1e-2, "c": 5e-2, "n_dirs": 1},
    "wp": {"epochs": 100, "lr": 3e-3, "c": 5e-2, "n_dirs": 1},
    "np": {"epochs": 100, "lr": 1e-2, "c": 3e-1},
    "ep": {"epochs": 10, "lr": 1e-2, "beta": 0.1, "batch_size": 10, "target_high": 0.3, "target_low": 0.0},
}


@dataclass
class PNNResult:
    """Outcome of :func:`train`: accuracies on the physical system and the twin, and the training costs."""

    method: str
    dataset: str
    mismatch: str
    seed: int
    sizes: tuple
    n_params: int
    acc_physical: float
    acc_twin: float
    costs: dict                  # training phase counters (+ energy_uJ)
    eval_costs: dict             # evaluation phase counters (monitoring + final test)
    history: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return d


# ------------------------------------------------------------------------------------------------ data

def load_data(dataset="digits"):
    """(x_train, y_train, x_test, y_test, name, n_classes) as torch tensors from an aimc data set name or a
    :class:`aimc.datasets.Dataset`."""
    from ..workloads import datasets
    ds = datasets.load(dataset) if isinstance(dataset, str) else dataset
    return (torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train), torch.from_numpy(ds.x_test),
            torch.from_numpy(ds.y_test), ds.name, ds.n_classes)


class _Run:
    """Shared state of one training run: twin, physical system, meter, optimizer, counters."""

    def __init__(self, twin: DigitalTwin, phys: PhysicalSystem, lr: float, optimizer: str):
        self.twin, self.phys, self.meter = twin, phys, phys.meter
        self.params = list(twin.parameters())
        self.n_params = sum(p.numel() for p in self.params)
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.params, lr=lr)
            self.opt_flops = C.ADAM_FLOPS_PER_PARAM * self.n_params
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=0.9)
            self.opt_flops = C.SGD_FLOPS_PER_PARAM * self.n_params
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; known: adam, sgd")

    def step(self, grads=None) -> None:
        """Apply per-layer (gW, gb) (or the .grad already in place) with the optimizer; count its FLOPs."""
        if grads is not None:
            for layer, (gw, gb) in zip(self.twin.layers, grads):
                layer.weight.grad = gw.to(layer.weight.dtype)
                layer.bias.grad = gb.to(layer.bias.dtype)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.meter.flops(self.opt_flops)


def _ce_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """e = dL/dlogits of the batch-mean cross-entropy: (softmax - onehot) / B."""
    p = torch.softmax(logits, dim=1)
    p[torch.arange(len(y)), y] -= 1
    return p / len(y)


def _sizes(twin: DigitalTwin):
    return list(zip(twin.sizes[:-1], twin.sizes[1:]))


# ------------------------------------------------------------------------------------------------ steps

def _step_twin(run: _Run, xb, yb, **_):
    twin, B = run.twin, len(yb)
    loss = nn.functional.cross_entropy(twin(xb), yb)
    loss.backward()
    for i, (n_in, n_out) in enumerate(_sizes(twin)):
        run.meter.flops(C.linear_forward_flops(B, n_in, n_out) + B * n_out
                        + C.linear_backward_flops(B, n_in, n_out, input_grad=i > 0) + B * n_out)
    run.meter.flops(2 * C.ce_flops(B, twin.sizes[-1]))
    run.step()
    return float(loss.detach())


def pat_forward(phys: PhysicalSystem, twin: DigitalTwin, xb: torch.Tensor):
    """Physics-aware forward: values from the hardware, gradients through the twin at the measured inputs.

    Returns the output tensor (value = the physical output) whose autograd graph is, for every layer l,
    the twin's layer evaluated at the measured input x^[l]: d/dtheta and d/dx of ``y_m + (y_p - y_m).detach()``
    are the twin's (Wright et al. 2022, Methods, eqs. for g_x and g_theta).
    """
    _, meas = phys.forward(xb, record=True)
    h = xb
    for l in range(twin.n_layers):
        y_m = twin.layer(l, twin.layer_input(l, h))
        h = y_m + (meas.outputs[l] - y_m).detach()
    return h


def _step_pat(run: _Run, xb, yb, **_):
    twin, B = run.twin, len(yb)
    out = pat_forward(run.phys, twin, xb)
    loss = nn.functional.cross_entropy(out, yb)
    loss.backward()
    for i, (n_in, n_out) in enumerate(_sizes(twin)):
        # twin layer at the measured input (forward + activation), the difference trick, backward
        run.meter.flops(C.linear_forward_flops(B, n_in, n_out) + 3 * B * n_out
                        + C.linear_backward_flops(B, n_in, n_out, input_grad=i > 0) + B * n_out)
    run.meter.flops(2 * C.ce_flops(B, twin.sizes[-1]))
    run.step()
    return float(loss.detach())


def _step_insitu(run: _Run, xb, yb, **_):
    twin, B = run.twin, len(yb)
    logits = run.phys.forward(xb, _keep=True)
    loss = nn.functional.cross_entropy(logits, yb)
    e = _ce_error(logits, yb)
    run.meter.flops(2 * C.ce_flops(B, twin.sizes[-1]))
    grads = run.phys.insitu_backward(e)
    for n_in, n_out in _sizes(twin):
        run.meter.flops(C.outer_flops(B, n_in, n_out) + 3 * B * n_out)  # update term + local derivatives
    run.step(grads)
    return float(loss.detach())


class FeedbackTiles:
    """Fixed random feedback matrices programmed once onto their own noisy crossbars.

    ``mode="dfa"``: B_l (n_l x n_classes) for every hidden layer l; ``mode="fa"``: B_(l+1) (n_l x n_(l+1)),
    the shape of W_(l+1)^T. Entries ~ N(0, 1/n_cols). Reads (``project``) are noisy analog MVMs counted in
    the meter; the matrices are never written again (``matrices()`` reads back what the tiles hold).
    """

    def __init__(self, twin: DigitalTwin, mode: str, config, seed: int, meter: C.CostMeter):
        if mode not in ("fa", "dfa"):
            raise ValueError(f"mode must be 'fa' or 'dfa', got {mode!r}")
        self.mode, self.meter = mode, meter
        rng = np.random.Generator(np.random.Philox(int(seed) + 7919))
        self.tiles = []
        sizes = twin.sizes
        for l in range(twin.n_layers - 1):
            n_l = sizes[l + 1]
            n_src = sizes[-1] if mode == "dfa" else sizes[l + 2]
            Bm = (rng.standard_normal((n_l, n_src)) / math.sqrt(n_src)).astype(np.float32)
            t = TileArray(n_l, n_src, _resolve_config(config), seed=int(seed) + 101 + l, name=f"pnn/feedback{l}")
            t.program(Bm)
            meter.writes(Bm.size)
            self.tiles.append(t)

    def matrices(self) -> list[np.ndarray]:
        return [t.read_weights() for t in self.tiles]

    def project(self, l: int, v: torch.Tensor) -> torch.Tensor:
        """B_l v on the analog tile (v: (B, n_src)) -> (B, n_l)."""
        t = self.tiles[l]
        self.meter.mvm(v.shape[0], t.in_size, t.out_size)
        return torch.from_numpy(t.forward(v.detach().contiguous().numpy()))


def feedback_deltas(fb: FeedbackTiles, twin: DigitalTwin, e: torch.Tensor, outputs: list) -> list:
    """delta_l for every layer from the output error e and the measured layer outputs (FA or DFA)."""
    L = twin.n_layers
    deltas = [None] * L
    deltas[-1] = e
    for l in range(L - 2, -1, -1):
        src = e if fb.mode == "dfa" else deltas[l + 1]
        deltas[l] = fb.project(l, src) * act_derivative(twin.activation, outputs[l])
    return deltas


def _step_feedback(run: _Run, xb, yb, fb: FeedbackTiles = None, **_):
    twin, B = run.twin, len(yb)
    logits, meas = run.phys.forward(xb, record=True)
    loss = nn.functional.cross_entropy(logits, yb)
    e = _ce_error(logits, yb)
    run.meter.flops(2 * C.ce_flops(B, twin.sizes[-1]))
    deltas = feedback_deltas(fb, twin, e, meas.outputs)
    # errors to the feedback crossbars and back: one transaction
    run.meter.transfer(4 * B * (sum(d.shape[1] for d in deltas[:-1]) + (twin.n_layers - 1) * e.shape[1]))
    grads = []
    for l, (n_in, n_out) in enumerate(_sizes(twin)):
        grads.append((deltas[l].t() @ meas.inputs[l], deltas[l].sum(0)))
        run.meter.flops(C.outer_flops(B, n_in, n_out) + (2 * B * n_out if l < twin.n_layers - 1 else 0))
    run.step(grads)
    return float(loss.detach())


# -- forward-forward

def ff_inputs(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The label embedded as a one-hot block appended to the input."""
    return torch.cat([x, nn.functional.one_hot(labels, n_classes).to(x.dtype)], dim=1)


def ff_goodness(outputs: list) -> torch.Tensor:
    """Per-layer goodness mean_j h_j^2, stacked (n_layers, B)."""
    return torch.stack([(h * h).mean(1) for h in outputs])


@torch.no_grad()
def ff_predict(system, x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Label with the largest goodness summed over layers; ``system`` is a PhysicalSystem or a DigitalTwin
    (one forward pass per candidate label)."""
    scores = []
    for c in range(n_classes):
        xc = ff_inputs(x, torch.full((len(x),), c, dtype=torch.int64), n_classes)
        _, outs = system(xc, record=True)
        outs = outs.outputs if hasattr(outs, "outputs") else outs
        scores.append(ff_goodness(outs).sum(0))
    return torch.stack(scores, 1).argmax(1)


def _step_ff(run: _Run, xb, yb, n_classes=10, threshold=2.0, gen=None, **_):
    twin, B = run.twin, len(yb)
    wrong = (yb + torch.randint(1, n_classes, (B,), generator=gen)) % n_classes
    xin = torch.cat([ff_inputs(xb, yb, n_classes), ff_inputs(xb, wrong, n_classes)])
    _, meas = run.phys.forward(xin, record=True)
    grads, total = [], 0.0
    sign = torch.cat([-torch.ones(B), torch.ones(B)])  # positive: push G up; negative: push G down
    for l, (n_in, n_out) in enumerate(_sizes(twin)):
        h, x = meas.outputs[l], meas.inputs[l]
        G = (h * h).mean(1)
        z = sign * (G - threshold)       # loss softplus(z) for both halves
        total += float(nn.functional.softplus(z).mean())
        dG = torch.sigmoid(z) * sign / B  # dL/dG, loss averaged over each half
        delta = dG[:, None] * (2.0 / n_out) * h * act_derivative(twin.activation, h)  # dG/da from measured h
        grads.append((delta.t() @ x, delta.sum(0)))
        run.meter.flops(6 * 2 * B * n_out + C.outer_flops(2 * B, n_in, n_out))
    run.step(grads)
    return total


# -- zeroth order

def _flat(twin):
    return torch.cat([p.detach().reshape(-1) for p in twin.parameters()])


@torch.no_grad()
def _set_flat(twin, v):
    i = 0
    for p in twin.parameters():
        p.copy_(v[i:i + p.numel()].view_as(p))
        i += p.numel()


def zo_gradient(loss_fn, theta: torch.Tensor, kind: str = "spsa", c: float = 1e-2, n_dirs: int = 1,
                gen: torch.Generator | None = None):
    """Zeroth-order gradient estimate of ``loss_fn`` (theta -> float) at ``theta`` (1-D), averaged over
    ``n_dirs`` random directions; returns (estimate, loss at theta or the mean of the +-c losses, evaluations).

    ``"spsa"`` (Spall 1992): Delta_i = +-1, g = [L(th + c D) - L(th - c D)] / (2c) * D  (2 evaluations per
    direction; on a quadratic exactly D D^T grad, unbiased with Var g_i = sum_(j != i) grad_j^2).
    ``"wp"`` (weight perturbation): xi ~ N(0, I), g = [L(th + c xi) - L(th)] / c * xi  (1 + n_dirs evaluations).
    """
    if kind not in ("spsa", "wp"):
        raise ValueError(f"kind must be 'spsa' or 'wp', got {kind!r}")
    if not c > 0 or int(n_dirs) < 1:
        raise ValueError(f"need c > 0 and n_dirs >= 1, got c={c}, n_dirs={n_dirs}")
    d = theta.numel()
    g = torch.zeros(d, dtype=theta.dtype)
    evals = 0
    loss0 = None
    if kind == "wp":
        loss0 = float(loss_fn(theta))
        evals += 1
    for _ in range(int(n_dirs)):
        if kind == "spsa":
            D = (torch.randint(0, 2, (d,), generator=gen) * 2 - 1).to(theta.dtype)
            lp, lm = float(loss_fn(theta + c * D)), float(loss_fn(theta - c * D))
            evals += 2
            g += (lp - lm) / (2 * c) * D
            loss0 = 0.5 * (lp + lm) if loss0 is None else loss0
        else:
            xi = torch.randn(d, generator=gen, dtype=theta.dtype)
            g += (float(loss_fn(theta + c * xi)) - loss0) / c * xi
            evals += 1
    return g / int(n_dirs), loss0, evals


def _step_zo(run: _Run, xb, yb, kind="spsa", c=1e-2, n_dirs=1, gen=None, **_):
    twin, phys, d = run.twin, run.phys, run.n_params
    theta = _flat(twin)

    def loss_fn(th):  # program th onto the hardware (a rewrite, counted) and measure the batch loss
        _set_flat(twin, th)
        return phys.loss(xb, yb)

    with torch.no_grad():
        g, loss0, _ = zo_gradient(loss_fn, theta, kind, c, n_dirs, gen)
        _set_flat(twin, theta)
    run.meter.flops((4 + 2) * d * n_dirs + d)  # perturb, combine, average
    i = 0
    for p in twin.parameters():
        p.grad = g[i:i + p.numel()].view_as(p).clone()
        i += p.numel()
    run.step()
    return loss0


def _step_np(run: _Run, xb, yb, c=1e-1, gen=None, **_):
    twin, phys, B = run.twin, run.phys, len(yb)
    logits, meas = phys.forward(xb, record=True)
    l0 = nn.functional.cross_entropy(logits, yb, reduction="none")
    xis = [c * torch.randn(B, n, generator=gen) for n in twin.sizes[1:]]
    l1 = phys.loss(xb, yb, per_sample=True, node_noise=xis)
    dl = (l1 - l0) / (c * c * B)
    run.meter.flops(2 * C.ce_flops(B, twin.sizes[-1]) + 2 * B)
    grads = []
    for l, (n_in, n_out) in enumerate(_sizes(twin)):
        delta = dl[:, None] * xis[l]
        grads.append((delta.t() @ meas.inputs[l], delta.sum(0)))
        run.meter.flops(B * n_out + C.outer_flops(B, n_in, n_out))
    run.step(grads)
    return float(l0.mean())


_STEPS = {"twin": _step_twin, "pat": _step_pat, "insitu-bp": _step_insitu, "fa": _step_feedback,
          "dfa": _step_feedback, "ff": _step_ff, "spsa": _step_zo, "wp": _step_zo, "np": _step_np}


# ------------------------------------------------------------------------------------------------ driver

def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return method


def train(method: str, dataset="digits", *, hidden=(32,), mismatch="small", config=None, epochs=None,
          batch_size: int | None = None, lr=None, optimizer: str = "adam", seed: int = 0, budget_passes=None,
          eval_every=None, activation: str = "relu", verbose: bool = False, threads: int | None = 1,
          **method_kw) -> PNNResult:
    """Train a physical MLP ``(n_in, *hidden, n_classes)`` with ``method`` and report physical and twin accuracy.

    Args:
        method: one of :data:`METHODS`.
        dataset: an :mod:`aimc.datasets` name (``"digits"``, ``"mnist5k"``) or a Dataset.
        hidden: hidden widths (the model definition shared by every method; FF appends the one-hot label to
            the input and has no read-out layer).
        mismatch: ``"none"``, ``"small"``, ``"large"`` or a :class:`Mismatch`.
        config: TileConfig or preset of the crossbars (``None``: :func:`~aimc.pnn.physical.default_config`,
            noisy 7/9-bit; ``"ideal"``: exact).
        epochs, lr, batch_size: default per method in :data:`DEFAULTS` (batch 64 unless listed there).
        budget_passes: stop once this many physical forward passes (samples) were spent in training.
        eval_every: evaluate (physical and twin, test set) every so many epochs into ``history``
            (default: about 10 points per run).
        threads: torch and numba threads for the run (1 avoids oversubscription; ``None`` leaves them).
        method_kw: method options (``c``, ``n_dirs`` for zeroth order; ``threshold`` for FF; ``beta``,
            ``centered`` for EP).

    Every run is deterministic for a given seed (initialisation, mismatch draw, analog noise, data order).
    """
    _check_method(method)
    with _threads(threads):
        return _train(method, dataset, hidden=hidden, mismatch=mismatch, config=config, epochs=epochs,
                      batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, budget_passes=budget_passes,
                      eval_every=eval_every, activation=activation, verbose=verbose, **method_kw)


def _train(method, dataset, *, hidden, mismatch, config, epochs, batch_size, lr, optimizer, seed, budget_passes,
           eval_every, activation, verbose, **method_kw) -> PNNResult:
    opts = dict(DEFAULTS[method])
    opts.update({k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)) if v is not None})
    opts.update(method_kw)
    if method == "ep":
        return train_ep(dataset, hidden=hidden, mismatch=mismatch, seed=seed, budget_passes=budget_passes,
                        eval_every=eval_every, verbose=verbose, threads=None, optimizer=optimizer, **opts)
    xtr, ytr, xte, yte, name, n_classes = load_data(dataset)
    hidden = tuple(int(h) for h in ((hidden,) if isinstance(hidden, int) else hidden))
    n_epochs, lr_ = int(opts.pop("epochs")), float(opts.pop("lr"))
    batch_size = int(opts.pop("batch_size", 64))
    meter = C.CostMeter()
    if method == "ff":
        twin = DigitalTwin((xtr.shape[1] + n_classes, *hidden), activation=activation, final_activation=True,
                           normalize=True, seed=seed)
    else:
        twin = DigitalTwin((xtr.shape[1], *hidden, n_classes), activation=activation, seed=seed)
    phys = PhysicalSystem(twin, mismatch, config, seed=seed, meter=meter)
    run = _Run(twin, phys, lr_, optimizer)
    gen = torch.Generator().manual_seed(int(seed) + 12345)
    kw = dict(opts, n_classes=n_classes, gen=gen)
    if method in ("fa", "dfa"):
        kw["fb"] = FeedbackTiles(twin, method, config, seed, meter)
    if method in ("spsa", "wp"):
        kw["kind"] = method
    step = _STEPS[method]

    def measure():
        if method == "ff":
            with meter.phase("eval"):
                ap = float((ff_predict(phys, xte, n_classes) == yte).float().mean())
                at = float((ff_predict(twin, xte, n_classes) == yte).float().mean())
            return {"acc_physical": ap, "acc_twin": at}
        return evaluate(phys, xte, yte)

    every = eval_every or max(1, n_epochs // 10)
    order_rng = np.random.Generator(np.random.Philox(int(seed)))
    history, t0, n, done = [], time.perf_counter(), len(ytr), False
    steps = 0
    for ep in range(n_epochs):
        perm = torch.from_numpy(order_rng.permutation(n))
        tot = 0.0
        nb = 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            tot += step(run, xtr[idx], ytr[idx], **kw)
            nb += 1
            steps += 1
            if budget_passes is not None and meter.train.phys_passes >= budget_passes:
                done = True
                break
        if (ep + 1) % every == 0 or ep == n_epochs - 1 or done:
            rec = {"epoch": ep + 1, "steps": steps, "train_loss": tot / max(nb, 1), **measure(),
                   **{k: v for k, v in asdict(meter.train).items() if k in ("phys_passes", "phys_mvms",
                                                                             "digital_flops")},
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if verbose:
                print(f"[{method}] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in rec.items()), flush=True)
        if done:
            break
    final = history[-1]
    opts_out = {"epochs": n_epochs, "lr": lr_, "batch_size": batch_size, "optimizer": optimizer,
                "config": str(_resolve_config(config)), **{k: v for k, v in opts.items()}}
    mm = mismatch if isinstance(mismatch, str) else str(as_mismatch(mismatch))
    return PNNResult(method=method, dataset=name, mismatch=mm, seed=int(seed), sizes=twin.sizes,
                     n_params=twin.n_params(), acc_physical=final["acc_physical"], acc_twin=final["acc_twin"],
                     costs=meter.train.as_dict(), eval_costs=meter.costs["eval"].as_dict(), history=history,
                     options=opts_out, seconds=time.perf_counter() - t0)


class _threads:
    """Set torch's and numba's thread counts for a run and restore them afterwards (None: leave them)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        if self.n is None:
            return self
        import numba
        self.saved = (torch.get_num_threads(), numba.get_num_threads())
        torch.set_num_threads(int(self.n))
        numba.set_num_threads(max(1, min(int(self.n), numba.config.NUMBA_NUM_THREADS)))
        return self

    def __exit__(self, *exc):
        if self.n is not None:
            import numba
            torch.set_num_threads(self.saved[0])
            numba.set_num_threads(self.saved[1])
        return False


# ------------------------------------------------------------------------------------------------ EP

class _EPUpdate:
    """The conductance update of :func:`train_ep` (an ``equilibrium.train`` update object).

    ``equilibrium.train`` hands over dG = -lr_ep * grad with grad the EP estimate. The controller (the twin)
    commands a step from that gradient -- plain SGD (``optimizer="sgd"``: dG itself) or the same digital
    Adam as the other methods (``"adam"``, step size ``lr`` in conductance units) -- and the physical
    devices realise it with their hidden per-device update gain (1 + d2d): G_phys += (1 + d2d) dG_cmd,
    G_twin += dG_cmd, both clipped to [g_min, g_max]. Update events are counted as pulses (one per
    conductance changed per step: an incremental pulse, not a program-and-verify write).
    """

    def __init__(self, g_twin, gain, g_min, g_max, lr, lr_ep, optimizer):
        self.g_twin, self.gain, self.g_min, self.g_max = g_twin, gain, g_min, g_max
        self.lr, self.lr_ep, self.optimizer = lr, lr_ep, optimizer
        self.m = self.v = 0.0
        self.t = 0
        self.n_writes = self.n_pulses = 0

    def reset(self, g, rng):
        return g

    def __call__(self, g, dg, rng):
        if self.optimizer == "adam":
            grad = -dg / self.lr_ep
            self.t += 1
            self.m = 0.9 * self.m + 0.1 * grad
            self.v = 0.999 * self.v + 0.001 * grad * grad
            step = -self.lr * (self.m / (1 - 0.9 ** self.t)) / (np.sqrt(self.v / (1 - 0.999 ** self.t)) + 1e-12)
        else:
            step = dg
        n = int(np.count_nonzero(step))
        self.n_writes += n
        self.n_pulses += n
        self.g_twin[:] = np.clip(self.g_twin + step, self.g_min, self.g_max)
        return np.clip(g + self.gain * step, self.g_min, self.g_max)


def train_ep(dataset="digits", *, hidden=(32,), mismatch="small", seed: int = 0, epochs: int = 10,
             lr=1e-2, beta: float = 0.1, batch_size: int = 10, centered: bool = False,
             optimizer: str = "adam", target_high: float = 0.3, target_low: float = 0.0, budget_passes=None,
             eval_every=None, verbose: bool = False, threads: int | None = 1, **model_kw) -> PNNResult:
    """Equilibrium propagation through :mod:`aimc.pnn.equilibrium`, with the API and cost accounting of
    :func:`train`.

    The physical system is a :class:`~aimc.pnn.equilibrium.ResistiveClassifier` (n_in, hidden[0], n_classes)
    whose conductances carry a hidden programming error and per-device update gain, both
    1 + d2d_std * N(0, 1) with d2d_std from the mismatch level; its twin is the same circuit with the
    commanded (nominal) conductances. The circuit has no analog read noise (its steady state is exact).
    Inputs are mapped to [-1, 1] (2x - 1): the sources are +-v_in x and the network averages them. With the
    default Adam controller the differential targets are 0.3 V (true class) and 0 V (others) and the nudge
    beta = 0.1 (pinned here, tuned on digits; the circuit's own defaults suit its plain per-layer SGD).

    Costs: every steady state (one per sample and phase) is a relaxation over all trainable conductances;
    a step is one host round trip (inputs and targets in, outputs out); the learning signal is local
    ((Delta V^beta)^2 - (Delta V^0)^2 per resistor, measured and applied in place), so it costs no digital
    FLOPs; with ``optimizer="adam"`` the Adam arithmetic is counted as digital FLOPs. Update events are
    counted as pulses.
    """
    with _threads(threads):
        return _train_ep(dataset, hidden=hidden, mismatch=mismatch, seed=seed, epochs=epochs, lr=lr, beta=beta,
                         batch_size=batch_size, centered=centered, optimizer=optimizer, target_high=target_high,
                         target_low=target_low, budget_passes=budget_passes, eval_every=eval_every, verbose=verbose,
                         **model_kw)


def _train_ep(dataset, *, hidden, mismatch, seed, epochs, lr, beta, batch_size, centered, optimizer, target_high,
              target_low, budget_passes, eval_every, verbose, **model_kw) -> PNNResult:
    from . import equilibrium as eq
    from .physical import _draw_seed
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}; known: adam, sgd")
    xtr, ytr, xte, yte, name, n_classes = load_data(dataset)
    xtr, xte = 2 * xtr.numpy().astype(np.float64) - 1, 2 * xte.numpy().astype(np.float64) - 1
    ytr, yte = ytr.numpy(), yte.numpy()
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    mm = as_mismatch(mismatch)
    kw = dict(model_kw, target_high=target_high, target_low=target_low, seed=int(seed))
    phys = eq.ResistiveClassifier(xtr.shape[1], int(hidden[0]), n_classes, **kw)
    twin = eq.ResistiveClassifier(xtr.shape[1], int(hidden[0]), n_classes, **kw)
    rng = _draw_seed(int(seed), "ep")
    g0 = twin.conductances
    prog = np.maximum(1 + mm.d2d_std * rng.standard_normal(g0.size), 0)
    gain = np.maximum(1 + mm.d2d_std * rng.standard_normal(g0.size), 0)
    phys.conductances = np.clip(g0 * prog, phys.g_min, phys.g_max)
    g_twin = g0.copy()
    lr_ep = 1.0 if optimizer == "adam" else lr
    upd = _EPUpdate(g_twin, gain, phys.g_min, phys.g_max, lr, lr_ep, optimizer)
    meter = C.CostMeter()
    n_edges = g0.size
    phases = 3 if centered else 2
    every = eval_every or max(1, int(epochs) // 10)
    history, t0 = [], time.perf_counter()
    steps_per_epoch = -(-len(ytr) // int(batch_size))
    steps = 0

    def measure():
        with meter.phase("eval"):
            s0 = phys.network.n_solves
            ap = phys.score(xte, yte)
            twin.conductances = g_twin
            at = twin.score(xte, yte)
            meter.relax(int(phys.network.n_solves - s0) + len(yte), n_edges)
            meter.call(2 * len(yte), 4 * 2 * len(yte) * xte.shape[1], 4 * 2 * len(yte) * n_classes)
        return {"acc_physical": ap, "acc_twin": at}

    for ep in range(int(epochs)):
        n_ep = len(ytr)
        if budget_passes is not None:
            left = budget_passes - meter.train.phys_passes
            n_ep = min(n_ep, max(0, left // phases))
            n_ep -= n_ep % int(batch_size) if n_ep < len(ytr) else 0
        if n_ep <= 0:
            break
        s0 = phys.network.n_solves
        order = np.random.Generator(np.random.Philox(int(seed) * 1000 + ep)).permutation(len(ytr))[:n_ep]
        res = eq.train(phys, xtr[order], ytr[order], method="ep", epochs=1, lr=lr_ep, beta=beta,
                       centered=centered, batch_size=int(batch_size), update=upd, seed=int(seed) * 1000 + ep)
        solves = int(phys.network.n_solves - s0)
        nsteps = -(-n_ep // int(batch_size))
        steps += nsteps
        meter.relax(solves, n_edges)
        c = meter.train
        c.phys_passes += solves
        c.phys_calls += nsteps
        c.round_trips += nsteps
        c.bytes_moved += 4 * n_ep * (xtr.shape[1] + 2 * n_classes)
        if optimizer == "adam":
            meter.flops(nsteps * C.ADAM_FLOPS_PER_PARAM * n_edges)
        last = ep == int(epochs) - 1 or n_ep < len(ytr)
        if (ep + 1) % every == 0 or last:
            rec = {"epoch": ep + 1, "steps": steps, "train_loss": res.history[-1]["train_loss"], **measure(),
                   "phys_passes": c.phys_passes, "phys_mvms": 0, "digital_flops": c.digital_flops,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if verbose:
                print("[ep] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in rec.items()), flush=True)
        if n_ep < len(ytr):
            break
    meter.pulses(upd.n_pulses)
    final = history[-1] if history else measure()
    mname = mismatch if isinstance(mismatch, str) else str(mm)
    opts = {"epochs": int(epochs), "lr": lr, "beta": float(beta), "batch_size": int(batch_size),
            "centered": bool(centered), "optimizer": optimizer, "target_high": float(target_high),
            "target_low": float(target_low),
            "steps_per_epoch": steps_per_epoch, **model_kw}
    return PNNResult(method="ep", dataset=name, mismatch=mname, seed=int(seed),
                     sizes=(xtr.shape[1], int(hidden[0]), n_classes), n_params=int(n_edges),
                     acc_physical=final["acc_physical"], acc_twin=final["acc_twin"], costs=meter.train.as_dict(),
                     eval_costs=meter.costs["eval"].as_dict(), history=history, options=opts,
                     seconds=time.perf_counter() - t0)
