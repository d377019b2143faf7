"""``aimc bench torch-backend``: the torch backend (``aimc.nn.torch_backend``) against the Numba path.

Contenders, each timed in a process of its own (``aimc.bench.timeit_isolated``: a user's default process),
size x size layer, batch ``--batch``:

* ``hwa_numba`` / ``hwa_torch``: one HWA training step (forward, MSE backward, SGD step, ``post_step``) of an
  AnalogLinear with the standard HWA preset (input ranges past their data initialisation), per backend;
* ``forward_numba`` / ``forward_torch``: an eval forward of the same layer programmed with the deploy
  configuration (PCM, 8-bit converters, abs-max noise management) and drifted to 1 day;
* ``baseline``: the same step of ``torch.nn.Linear``.

A contender that fails is reported with its error (``errors``), never left out silently. On a machine with a
GPU the ``*_cuda`` contenders time the torch backend there (synchronised).
"""
from __future__ import annotations

import torch
from torch import nn


def _data(args, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.size, generator=g)
    t = torch.randn(args.batch, args.size, generator=g)
    return x.to(device), t.to(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_hwa_step(args, backend: str = "numba", device: str = "cpu"):
    """A closure of one standard-HWA training step of a size x size AnalogLinear on ``backend``."""
    from ...nn import AnalogLinear
    from .config import standard_hwa
    from .layer import post_step, prepare
    torch.manual_seed(0)
    lin = nn.Linear(args.size, args.size)
    tcfg, hcfg = standard_hwa()
    m = prepare(AnalogLinear.from_linear(lin, tcfg, 0, "bench"), (tcfg, hcfg)).to(device)
    m.set_backend(backend)
    with torch.no_grad():
        m.hwa.ir_batches.fill_(hcfg.input_range.init_from_data)
    x, t = _data(args, device)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((m(x) - t) ** 2).mean()
        loss.backward()
        opt.step()
        post_step(m)
        _sync(device)
    return step


def make_linear_step(args):
    torch.manual_seed(0)
    lin = nn.Linear(args.size, args.size)
    x, t = _data(args)
    opt = torch.optim.SGD(lin.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        ((lin(x) - t) ** 2).mean().backward()
        opt.step()
    return step


def make_deploy_forward(args, backend: str = "numba", device: str = "cpu"):
    """A closure of one eval forward of a programmed, 1-day-drifted deploy-config layer on ``backend``."""
    from ...core.config import as_config
    from ...deployment.bench import DEPLOY_CONFIG
    from ...nn import AnalogLinear
    torch.manual_seed(0)
    m = AnalogLinear.from_linear(nn.Linear(args.size, args.size), as_config(DEPLOY_CONFIG), 0, "bench").to(device)
    m.set_backend(backend)
    m.program()
    m.drift(86400.0)
    m.eval()
    x, _ = _data(args, device)

    def run():
        with torch.no_grad():
            m(x)
        _sync(device)
    return run


def bench_torch_backend(args) -> dict:
    """Median ms per contender (own processes) and the ratios torch / numba and against nn.Linear's step."""
    from ...bench import timeit_isolated
    me = "aimc.train.hwa.torch_bench"
    contenders = {
        "baseline": (f"{me}:make_linear_step", {}),
        "hwa_numba": (f"{me}:make_hwa_step", {"backend": "numba"}),
        "hwa_torch": (f"{me}:make_hwa_step", {"backend": "torch"}),
        "forward_numba": (f"{me}:make_deploy_forward", {"backend": "numba"}),
        "forward_torch": (f"{me}:make_deploy_forward", {"backend": "torch"}),
    }
    if torch.cuda.is_available():
        contenders["hwa_torch_cuda"] = (f"{me}:make_hwa_step", {"backend": "torch", "device": "cuda"})
        contenders["forward_torch_cuda"] = (f"{me}:make_deploy_forward", {"backend": "torch", "device": "cuda"})
    ms, errors = {}, {}
    for name, spec in contenders.items():
        try:
            ms.update(timeit_isolated({name: spec}, args))
        except Exception as e:  # reported, not dropped
            errors[name] = str(e)[-600:]
    out = {"name": "torch-backend", "shape": [args.size, args.size], "batch": args.batch, "threads": args.threads,
           "isolated_processes": True, "baseline": "torch.nn.Linear step: forward, MSE backward, SGD",
           **{f"{k}_ms": round(v, 3) for k, v in ms.items()}}
    if "baseline" in ms:
        out["aimc_ms"] = out.get("hwa_torch_ms")
        out["baseline_ms"] = out["baseline_ms"]
        if "hwa_torch" in ms:
            out["ratio"] = round(ms["hwa_torch"] / ms["baseline"], 3)
    for kind in ("hwa", "forward"):
        if f"{kind}_numba" in ms and f"{kind}_torch" in ms:
            out[f"{kind}_torch_over_numba"] = round(ms[f"{kind}_torch"] / ms[f"{kind}_numba"], 3)
    if errors:
        out["errors"] = errors
    return out
