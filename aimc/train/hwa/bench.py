"""``aimc bench hwa-step``: one HWA training step against ``torch.nn.Linear`` (and aihwkit/lightning when
installed), each contender in its own process."""
from __future__ import annotations

import torch
from torch import nn

from .config import standard_hwa
from .layer import post_step, prepare


def bench_hwa_step(args) -> dict:
    """One HWA training step (forward, backward, SGD step, post_step) of a size x size AnalogLinear at
    batch ``args.batch`` with the standard HWA preset, against the same step of torch.nn.Linear.

    The input ranges are past their data initialisation (steady state). Also timed: the core's tile forward
    alone (``core_forward_ms``: the share of the step that is the analog MVM of ``aimc.periphery``), and
    aihwkit's / aihwkit-lightning's step when installed (optional).

    Thread pools: numba's and torch's OpenMP runtimes spin-wait by default; on a loaded 2-core machine that
    slows small torch ops (the baseline most of all) several-fold. Compare runs with the same
    ``OMP_WAIT_POLICY`` (``PASSIVE`` gives the faster, fairer baseline).
    """
    from ...core.timing import timeit
    from ...nn import AnalogLinear
    n, B = args.size, args.batch
    torch.manual_seed(0)
    lin = nn.Linear(n, n)
    tcfg, hcfg = standard_hwa()
    al = prepare(AnalogLinear.from_linear(lin, tcfg, 0, "bench"), (tcfg, hcfg))
    with torch.no_grad():
        al.hwa.ir_batches.fill_(hcfg.input_range.init_from_data)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, n, generator=g)
    t = torch.randn(B, n, generator=g)
    contenders = {}
    for key, m in (("aimc", al), ("baseline", lin)):
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        is_analog = m is al

        def step(m=m, opt=opt, is_analog=is_analog):
            opt.zero_grad(set_to_none=True)
            loss = ((m(x) - t) ** 2).mean()
            loss.backward()
            opt.step()
            if is_analog:
                post_step(m)
        contenders[key] = step
    xn = x.numpy()
    contenders["core_forward"] = lambda: al.tiles._forward(xn)
    for key, make in (("aihwkit", _aihwkit_step), ("aihwkit_lightning", _lightning_step)):
        closure = make(lin, x, t)
        if closure is not None:
            contenders[key] = closure
    tm = timeit(contenders, args.repeats)
    out = {"name": "hwa-step", "shape": [n, n], "batch": B, "threads": args.threads,
           "aimc_ms": round(tm["aimc"], 3), "baseline_ms": round(tm["baseline"], 3),
           "ratio": round(tm["aimc"] / tm["baseline"], 3),
           "core_forward_ms": round(tm["core_forward"], 3),
           "omp_wait_policy": __import__("os").environ.get("OMP_WAIT_POLICY", "(default)"),
           "baseline": "torch.nn.Linear step: forward, MSE backward, SGD"}
    for key in ("aihwkit", "aihwkit_lightning"):
        if key in tm:
            out[f"{key}_ms"] = round(tm[key], 3)
            out[f"{key}_ratio"] = round(tm[key] / tm["baseline"], 3)
    return out



def _warm_step(layer, opt, x, t):
    """One MSE training step of ``layer`` as a closure, run once (warm-up) before it is returned."""
    layer.train()

    def step():
        opt.zero_grad()
        loss = ((layer(x) - t) ** 2).mean()
        loss.backward()
        opt.step()
    step()
    return step

def _aihwkit_step(lin, x, t):
    """An HWA training-step closure on aihwkit (or aihwkit-lightning) when installed, else None."""
    try:
        from aihwkit.nn import AnalogLinear as AL
        from aihwkit.optim import AnalogSGD
        from aihwkit.simulator.presets import StandardHWATrainingPreset
    except Exception:
        return None
    try:
        layer = AL(lin.in_features, lin.out_features, bias=True, rpu_config=StandardHWATrainingPreset())
        return _warm_step(layer, AnalogSGD(layer.parameters(), lr=1e-3), x, t)
    except Exception:
        return None


def _lightning_step(lin, x, t):
    """The same step on aihwkit-lightning (8-bit DAC/ADC, out_noise 0.04, learned input ranges, fixed clip)
    when installed, else None. Not exercised in aimc's CI (the package is not installed there)."""
    try:
        import copy
        from aihwkit_lightning.nn.conversion import convert_to_analog
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
        cfg = TorchInferenceRPUConfig()
        cfg.forward.inp_res = 2**8 - 2
        cfg.forward.out_res = 2**8 - 2
        cfg.forward.out_bound = 10.0
        cfg.forward.out_noise = 0.04
        layer = convert_to_analog(copy.deepcopy(nn.Sequential(lin)), cfg)
        return _warm_step(layer, torch.optim.SGD(layer.parameters(), lr=1e-3), x, t)
    except Exception:
        return None
