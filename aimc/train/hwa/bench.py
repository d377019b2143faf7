"""``aimc bench hwa-step`` (``bench_hwa_step``, exported by ``aimc.train.hwa``): one hardware-aware training step of a size x size linear layer, every contender in a
process of its own (``aimc.bench.timeit_isolated``), all in the same default environment.

Contenders (forward, MSE backward with input gradients, optimizer step, post-step clipping/remapping):

* ``aimc`` (``aimc_ms``): the features aimc and aihwkit-lightning both model (``equal_features``): 8-bit DAC
  and ADC (out_bound 10, out noise 0.04), learned input range (steady state, past its data initialisation),
  additive Gaussian weight noise (std 0.02 of max |W|, a fresh sample per step), layer-Gaussian clipping at
  2.5 sigma after each step; no IR drop, no PCM read noise, no remapping, no learned output scales.
* ``aimc_full`` (``aimc_full_ms``): the full standard-HWA preset (``standard_hwa``: adds PCM read noise, IR
  drop, channel-wise remapping, learned output scales, fixed clipping), which lightning's torch path does not
  model.
* ``baseline``: the same step of ``torch.nn.Linear`` (plain SGD).
* ``aihwkit``: aihwkit's ``StandardHWATrainingPreset`` when installed.
* ``aihwkit_lightning``: aihwkit-lightning 2.1's ``TorchInferenceRPUConfig`` with the equal features above
  when installed (its CPU path: torch).

A contender that cannot run (not installed, or failing) is reported as ``<name>_error`` with its error
message, never left out silently. Input: x, target ~ N(0, 1), batch ``--batch``; x requires grad.
"""
from __future__ import annotations

import torch
from torch import nn

#: the weight-noise std (fraction of max |W|) and the clipping sigma of the equal-features contenders
NOISE_STD = 0.02
CLIP_SIGMA = 2.5


def _data(args):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.size, generator=g).requires_grad_(True)
    t = torch.randn(args.batch, args.size, generator=g)
    torch.manual_seed(0)
    return nn.Linear(args.size, args.size), x, t


def equal_features():
    """(TileConfig, HWAConfig) of the features aimc and aihwkit-lightning share (see the module docstring)."""
    from ...core.config import standard_hwa as tile_preset
    from .config import ClipType, HWAConfig, InputRange, ModifierType, WeightClip, WeightModifier
    tc = tile_preset()
    tc = tc.replace(forward=tc.forward.replace(w_noise=0.0, w_noise_type="none", ir_drop=0.0))
    hc = HWAConfig(modifier=WeightModifier(ModifierType.ADD_NORMAL, std_dev=NOISE_STD),
                   clip=WeightClip(ClipType.LAYER_GAUSSIAN, sigma=CLIP_SIGMA),
                   input_range=InputRange(enable=True))
    return tc, hc


def _closure(model, opt, x, t, post=None):
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        x.grad = None
        loss = ((model(x) - t) ** 2).mean()
        loss.backward()
        opt.step()
        if post is not None:
            post()
    return step


def make_aimc(args, preset: str):
    """aimc's step with ``equal_features()`` (preset 'equal') or the standard-HWA preset ('full')."""
    from ...nn import AnalogLinear
    from .config import standard_hwa
    from .layer import post_step, prepare
    lin, x, t = _data(args)
    tc, hc = equal_features() if preset == "equal" else standard_hwa()
    al = prepare(AnalogLinear.from_linear(lin, tc, 0, "bench"), (tc, hc))
    with torch.no_grad():
        al.hwa.ir_batches.fill_(hc.input_range.init_from_data)  # steady state: ranges initialised
    return _closure(al, torch.optim.SGD(al.parameters(), lr=1e-3), x, t, lambda: post_step(al))


def make_core_forward(args):
    """The core's tile forward alone (the analog MVM of ``aimc.periphery``) with the full preset."""
    from ...nn import AnalogLinear
    from .config import standard_hwa
    from .layer import prepare
    lin, x, _ = _data(args)
    tc, hc = standard_hwa()
    al = prepare(AnalogLinear.from_linear(lin, tc, 0, "bench"), (tc, hc))
    xn = x.detach().clamp(-1, 1).numpy()
    return lambda: al.tiles._forward(xn)


def make_baseline(args):
    lin, x, t = _data(args)
    return _closure(lin, torch.optim.SGD(lin.parameters(), lr=1e-3), x, t)


def make_aihwkit(args):
    """aihwkit's StandardHWATrainingPreset step (raises ImportError when aihwkit is not installed)."""
    from aihwkit.nn import AnalogLinear as AL
    from aihwkit.optim import AnalogSGD
    from aihwkit.simulator.presets import StandardHWATrainingPreset
    lin, x, t = _data(args)
    layer = AL(lin.in_features, lin.out_features, bias=True, rpu_config=StandardHWATrainingPreset())
    return _closure(layer, AnalogSGD(layer.parameters(), lr=1e-3), x, t)


def make_lightning(args):
    """aihwkit-lightning's step with the equal features (raises ImportError when it is not installed)."""
    from aihwkit_lightning.nn import AnalogLayerBase
    from aihwkit_lightning.nn.conversion import convert_to_analog
    from aihwkit_lightning.optim import AnalogOptimizer
    from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
    from aihwkit_lightning.simulator.parameters.enums import WeightClipType, WeightNoiseInjectionType
    lin, x, t = _data(args)
    cfg = TorchInferenceRPUConfig()
    cfg.forward.inp_res = 2**8 - 2
    cfg.forward.out_res = 2**8 - 2
    cfg.forward.out_bound = 10.0
    cfg.forward.out_noise = 0.04
    cfg.pre_post.input_range.enable = True
    cfg.pre_post.input_range.learn_input_range = True
    cfg.pre_post.input_range.init_from_data = 0  # steady state, as aimc's contender
    cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL
    cfg.modifier.std_dev = NOISE_STD
    cfg.clip.type = WeightClipType.LAYER_GAUSSIAN
    cfg.clip.sigma = CLIP_SIGMA
    cfg.mapping.max_input_size = 512
    model = convert_to_analog(nn.Sequential(lin), cfg)
    layers = [m for m in model.modules() if isinstance(m, AnalogLayerBase)]
    if not layers:
        raise RuntimeError("aihwkit-lightning converted no layer")
    opt = AnalogOptimizer(torch.optim.SGD, lambda: iter(layers), model.parameters(), lr=1e-3)
    return _closure(model, opt, x, t)


CONTENDERS = {
    "aimc": ("aimc.train.hwa.bench:make_aimc", {"preset": "equal"}),
    "aimc_full": ("aimc.train.hwa.bench:make_aimc", {"preset": "full"}),
    "baseline": ("aimc.train.hwa.bench:make_baseline", {}),
    "core_forward": ("aimc.train.hwa.bench:make_core_forward", {}),
    "aihwkit": ("aimc.train.hwa.bench:make_aihwkit", {}),
    "aihwkit_lightning": ("aimc.train.hwa.bench:make_lightning", {}),
}


def bench_hwa_step(args) -> dict:
    """Time every contender in its own process; ``<name>_ms`` and ``<name>_ratio`` (to the nn.Linear step) per
    contender that ran, ``<name>_error`` per contender that did not."""
    from ...bench import timeit_isolated, user_environ
    errors: dict[str, str] = {}
    tm = timeit_isolated(CONTENDERS, args, errors=errors)
    base = tm.get("baseline")
    out = {"name": "hwa-step", "shape": [args.size, args.size], "batch": args.batch, "threads": args.threads,
           "isolated_processes": True, "input_gradients": True,
           "omp_wait_policy": user_environ().get("OMP_WAIT_POLICY", "(unset)"),  # what every contender got
           "loadavg_1min": round(__import__("os").getloadavg()[0], 2),
           "baseline": "torch.nn.Linear step: forward, MSE backward, SGD",
           "aimc": "equal features with aihwkit-lightning (8-bit I/O, learned input range, additive weight "
                   "noise, layer-Gaussian clip; no IR drop, no PCM read noise)",
           "aimc_full": "standard-HWA preset (adds PCM read noise, IR drop, remapping, output scales)"}
    for key in CONTENDERS:
        if key in tm:
            out[f"{key}_ms"] = round(tm[key], 3)
            if base and key != "baseline":
                out[f"{key}_ratio"] = round(tm[key] / base, 3)
        else:
            out[f"{key}_ms"] = None
            out[f"{key}_error"] = errors.get(key, "no result")
    out["ratio"] = out.get("aimc_ratio")
    if "aimc" in tm and "aihwkit_lightning" in tm:
        out["aimc_vs_lightning"] = round(tm["aimc"] / tm["aihwkit_lightning"], 3)
    return out
