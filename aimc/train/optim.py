"""``AnalogSGD``: a torch optimizer whose ``step()`` sends pulses to the analog layers (on-chip training).

Usage::

    model = nn.Sequential(AnalogLinear(784, 256, config=aimc.insitu("tiki-taka", device="reram-es")), ...)
    opt = aimc.optim.AnalogSGD(model, lr=0.1)            # or AnalogSGD(model, lr, config=aimc.insitu(...))
    for x, y in data:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()                                        # pulses: W <- W - lr d x^T, in memory

How x and d reach the optimizer: for every analog layer (any ``AnalogModule`` with tiles: AnalogLinear,
AnalogConv1d/2d and their tile slots, RNN and attention slots), ``AnalogSGD`` installs a bound-method
override of ``analog_matmul`` on that instance. It calls the class's ``analog_matmul`` unchanged, keeps the
(rows, in) input x it was given and wraps the (rows, out) output in an identity autograd node whose backward
stores d = dL/dy. A layer called several times in one step (RNN steps, weight sharing) contributes every
(x, d) pair, applied in call order. The analog weights do not need a torch gradient: their
``requires_grad`` is switched off, so autograd skips the digital outer product.

The device state lives in ``layer.insitu`` (an :class:`aimc.insitu.InsituArray`); after each step the effective
weights are copied into ``layer.weight`` (so ``layer.weight`` always shows what the chip holds, and
``layer.program()`` / ``drift`` deploy the in-situ-trained weights through the inference device models).
Digital parameters (biases, digital layers) are trained by plain SGD (``momentum``, ``weight_decay``) with the
same group learning rate, or by ``digital=`` (a torch optimizer class or factory taking the parameter list).
"""
from __future__ import annotations

import types

import torch

from .insitu import InsituArray, InsituConfig, insitu as _insitu_cfg

__all__ = ["AnalogSGD", "analog_layers"]


def analog_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every analog module of ``model`` that owns tiles (containers excluded)."""
    from ..nn.base import AnalogModule
    out = []
    for name, m in model.named_modules():
        if isinstance(m, AnalogModule) and getattr(m, "tiles", None) is not None:
            out.append((name, m))
    return out


class _Capture(torch.autograd.Function):
    """Identity on y; its backward stores d = dL/dy into ``store[idx]`` (the anchor makes y require grad)."""

    @staticmethod
    def forward(ctx, y, anchor, store, idx):
        ctx.store = store
        ctx.idx = idx
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        # a row whose abs-max is subnormal (e.g. cross-entropy of a saturated softmax) is flushed to 0: it would
        # overflow the backward read's noise-management scale 1/alpha (inf * 0 = NaN)
        if g.dim() == 2 and g.numel():
            amax = torch.linalg.vector_norm(g, float("inf"), dim=1)
            bad = (amax < torch.finfo(g.dtype).tiny) & (amax > 0)
            if bool(bad.any()):
                g = g.masked_fill(bad[:, None], 0.0)
        entry = ctx.store[ctx.idx]
        entry[1] = g.detach() if entry[1] is None else entry[1] + g.detach()
        return g, None, None, None


def _capturing_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
    y = type(self).analog_matmul(self, x2d)
    st = self.__dict__.get("_insitu_state")
    if st is None or not torch.is_grad_enabled() or not self.training:
        return y
    st["pairs"].append([x2d.detach(), None])
    return _Capture.apply(y, st["anchor"], st["pairs"], len(st["pairs"]) - 1)


class AnalogSGD(torch.optim.Optimizer):
    """SGD whose analog part is done in memory by the in-situ algorithm of each layer's ``InsituConfig``.

    Args:
        model: the module tree; every analog layer in it is trained in situ.
        lr: learning rate (per parameter group; LR schedulers work on ``param_groups``).
        config: an ``InsituConfig`` (``aimc.insitu(...)``) or an algorithm name used for every analog layer;
            default: each layer's own config, which must then be an ``InsituConfig``.
        momentum, weight_decay: of the digital SGD (biases and digital layers).
        digital: optional torch optimizer class or factory ``f(params) -> Optimizer`` for the digital
            parameters instead of the built-in SGD.
    """

    def __init__(self, model: torch.nn.Module, lr: float = 0.1, config: InsituConfig | str | None = None,
                 momentum: float = 0.0, weight_decay: float = 0.0, digital=None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"AnalogSGD needs the model (an nn.Module) to find its analog layers, got "
                            f"{type(model).__name__}")
        if not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(f"AnalogSGD: lr must be a number >= 0, got {lr!r}")
        if isinstance(config, str):
            config = _insitu_cfg(config)
        if config is not None and not isinstance(config, InsituConfig):
            raise TypeError(f"config must be an InsituConfig (aimc.insitu(...)) or an algorithm name, got "
                            f"{type(config).__name__}")
        layers = analog_layers(model)
        if not layers:
            raise ValueError("AnalogSGD: the model has no analog layers (use aimc.nn layers or "
                             "aimc.convert_to_analog with an InsituConfig)")
        analog_params = {}
        groups = []
        self._layers = []
        for name, m in layers:
            cfg = config if config is not None else m.config
            if not isinstance(cfg, InsituConfig):
                raise ValueError(f"AnalogSGD: layer {name!r} has a plain TileConfig; build it with "
                                 f"config=aimc.insitu(...) or pass config= to AnalogSGD")
            if m.programmed:
                raise RuntimeError(f"AnalogSGD: layer {name!r} is programmed; call unprogram() to train it in situ")
            w = m.weight
            if not isinstance(w, torch.nn.Parameter):
                raise TypeError(f"AnalogSGD: layer {name!r} has no weight Parameter")
            arr = InsituArray(m.tiles, cfg)
            with torch.no_grad():
                arr.set_weights(m.analog_weight().detach().cpu().numpy())
            object.__setattr__(m, "insitu", arr)
            m.__dict__["_insitu_state"] = {"pairs": [], "anchor": torch.zeros((), requires_grad=True)}
            m.analog_matmul = types.MethodType(_capturing_matmul, m)
            self._layers.append((name, m))
            analog_params[id(w)] = w
        digital_params = [p for p in model.parameters() if id(p) not in analog_params and p.requires_grad]
        for name, m in layers:
            groups.append({"params": [m.weight], "lr": lr, "analog": name})
        # a parameter shared by several slots (LSTM gates) appears once
        seen = set()
        groups = [g for g in groups if not (id(g["params"][0]) in seen or seen.add(id(g["params"][0])))]
        self._group_of = {}
        if digital_params:
            groups.insert(0, {"params": digital_params, "lr": lr, "analog": None})
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "analog": None})
        for name, m in layers:
            for g in self.param_groups:
                if g["analog"] is not None and g["params"][0] is m.weight:
                    self._group_of[name] = g
        for _, m in layers:
            m.weight.requires_grad_(False)
        self._digital = None
        if digital is not None and digital_params:
            self._digital = digital(digital_params)
        self._sync_weights()

    # ------------------------------------------------------------------ helpers
    def _sync_weights(self) -> None:
        with torch.no_grad():
            for _, m in self._layers:
                W = torch.from_numpy(m.insitu.weights())
                view = m.analog_weight()
                if view.data_ptr() == 0 or view.shape != W.shape:
                    raise RuntimeError("AnalogSGD: analog_weight() is not a view of the weight")
                view.copy_(W.to(view.dtype))

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self._digital is not None:
            self._digital.zero_grad(set_to_none)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # digital parameters
        if self._digital is not None:
            self._digital.step()
        else:
            for g in self.param_groups:
                if g["analog"] is not None:
                    continue
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    dp = p.grad
                    if g["weight_decay"]:
                        dp = dp.add(p, alpha=g["weight_decay"])
                    if g["momentum"]:
                        st = self.state[p]
                        buf = st.get("momentum_buffer")
                        if buf is None:
                            buf = st["momentum_buffer"] = dp.clone()
                        else:
                            buf.mul_(g["momentum"]).add_(dp)
                        dp = buf
                    p.add_(dp, alpha=-g["lr"])
        # analog layers: pulses
        for name, m in self._layers:
            st = m.__dict__["_insitu_state"]
            pairs, st["pairs"] = st["pairs"], []
            lr = self._group_of[name]["lr"]
            for x, d in pairs:
                if d is None:
                    continue
                m.insitu.update(x.cpu().float().numpy(), d.cpu().float().numpy(), lr, mirror=False)
        self._sync_weights()
        return loss

    # ------------------------------------------------------------------ counters
    def counters(self) -> dict:
        """Per analog layer: pulses (total and per array), transfers, updates and per-device pulse maps."""
        return {name: m.insitu.counters() for name, m in self._layers}

    def summary(self) -> dict:
        """Totals over the layers (no per-device maps)."""
        out = {"pulses": 0, "transfers": 0}
        for name, m in self._layers:
            c = m.insitu.counters()
            out["pulses"] += c["pulses"]
            out["transfers"] += c["transfers"]
        return out


# ----------------------------------------------------------------------------------------------- benchmarks

def _pulsed_step_bench(name: str, args, algorithm: str, **cfg_kw) -> dict:
    """One training step (forward, backward, in-memory update) of a size x size AnalogLinear on SoftBounds devices
    at batch ``args.batch`` against the dense digital step (matmul forward/backward + ``torch.addmm`` update).

    Loss: MSE with mean reduction of a random target (as ``hwa-step``), lr 0.1, desired_bl 31 with update and BL
    management (aihwkit's defaults). ``pulses_per_step`` says how much pulsing that is; ``heavy_*`` repeats the
    step with the loss summed over outputs (d 512 x larger: about 25 pulses per device and step).
    """
    from device_models.pulsed import SoftBounds

    from ..core.timing import timeit
    from ..nn import AnalogLinear
    n, B = args.size, args.batch
    lr = 0.1
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, n, generator=g)
    t = torch.randn(B, n, generator=g)
    cfg = _insitu_cfg(algorithm, device=SoftBounds(), **cfg_kw)
    cfg = cfg.replace(mapping=cfg.mapping.replace(max_in=0, max_out=0))      # one size x size tile
    layer = AnalogLinear(n, n, bias=False, config=cfg, seed=0, name="bench")
    opt = AnalogSGD(layer, lr=lr)
    W = layer.weight.detach().clone()
    red = {"mean": lambda e: (e ** 2).mean(), "sum_out": lambda e: (e ** 2).sum(1).mean()}

    def aimc_step(kind="mean"):
        opt.zero_grad()
        red[kind](layer(x) - t).backward()
        opt.step()

    def baseline_step(kind="mean"):
        y = x @ W.T
        d = 2 * (y - t) / (B * n if kind == "mean" else B)
        d @ W                                   # backward read (grad of x)
        W.addmm_(d.T, x, alpha=-lr)             # dense outer-product update

    p0 = opt.summary()["pulses"]
    aimc_step()
    pulses = opt.summary()["pulses"] - p0
    tm = timeit({"aimc": aimc_step, "baseline": baseline_step}, args.repeats)
    out = {"name": name, "shape": [n, n], "batch": B, "threads": args.threads, "device": "soft-bounds (defaults)",
           "algorithm": algorithm, "desired_bl": cfg.update.desired_bl, "lr": lr,
           "aimc_ms": round(tm["aimc"], 3), "baseline_ms": round(tm["baseline"], 3),
           "ratio": round(tm["aimc"] / tm["baseline"], 3), "pulses_per_step": int(pulses),
           "baseline": "x@W.T, d@W, W.addmm_(d.T, x) (dense digital SGD step)"}
    p0 = opt.summary()["pulses"]
    aimc_step("sum_out")
    out["heavy_pulses_per_step"] = int(opt.summary()["pulses"] - p0)
    th = timeit({"aimc": lambda: aimc_step("sum_out"), "baseline": lambda: baseline_step("sum_out")},
                max(3, args.repeats // 3))
    out["heavy_aimc_ms"] = round(th["aimc"], 3)
    out["heavy_ratio"] = round(th["aimc"] / th["baseline"], 3)
    aih = _aihwkit_pulsed_step(n, x, t, lr, algorithm)
    if aih is not None:
        ta = timeit({"aihwkit": aih}, args.repeats)
        out["aihwkit_ms"] = round(ta["aihwkit"], 3)
        out["aihwkit_ratio"] = round(ta["aihwkit"] / tm["baseline"], 3)
    return out


def _aihwkit_pulsed_step(n, x, t, lr, algorithm):
    """The same step on aihwkit's CPU tile when installed (SingleRPUConfig / UnitCellRPUConfig), else None."""
    try:
        from aihwkit.nn import AnalogLinear as AL
        from aihwkit.optim import AnalogSGD as ASGD
        from aihwkit.simulator.configs import SingleRPUConfig, SoftBoundsDevice, UnitCellRPUConfig
        from aihwkit.simulator.configs.compounds import TransferCompound
    except Exception:
        return None
    try:
        if algorithm == "sgd":
            rpu = SingleRPUConfig(device=SoftBoundsDevice())
        else:
            rpu = UnitCellRPUConfig(device=TransferCompound(unit_cell_devices=[SoftBoundsDevice(), SoftBoundsDevice()]))
        rpu.mapping.max_input_size = rpu.mapping.max_output_size = 0
        layer = AL(n, n, bias=False, rpu_config=rpu)
        opt = ASGD(layer.parameters(), lr=lr)
        opt.regroup_param_groups(layer)

        def step():
            opt.zero_grad()
            ((layer(x) - t) ** 2).mean().backward()
            opt.step()
        return step
    except Exception:
        return None


def bench_update(args) -> dict:
    """``aimc bench update``: analog SGD step (forward, backward, stochastic pulse-train update, BL 31)."""
    return _pulsed_step_bench("update", args, "sgd")


def bench_tiki_taka(args) -> dict:
    """``aimc bench tiki-taka``: Tiki-Taka v1 step on a SoftBounds pair (pulsed update of A, one column of A
    read and transferred to C per mini-batch)."""
    return _pulsed_step_bench("tiki-taka", args, "tiki-taka")
