"""``aimc bench resnet`` / ``aimc bench lstm``: whole networks against their digital twins (torch).

Each contender runs in a process of its own (``aimc.bench.timeit_isolated``) that imports torch before aimc
and sets no thread-pool environment variable: the process a user's script is. Models have random weights
(timings do not depend on them).

* ``resnet``: ResNet-20 for CIFAR shapes (He et al. 2016: 3x3 conv 16, three stages of three basic blocks
  with 16/32/64 channels, stride-2 1x1 projection shortcuts, global average pooling, fc 64 -> 10; batch
  norm digital), batch ``--batch`` (256 when the default 1024 is given), eval forward after ``program`` and
  ``drift(1 day)`` with ``DEPLOY_CONFIG``; beside it the same with the standard HWA preset.
* ``lstm``: ``nn.LSTM(128, 256, num_layers=2)``, sequence 50, batch 64, converted with
  ``aimc.convert_to_analog(model, DEPLOY_CONFIG)``, programmed, drifted 1 day, eval forward.
* ``resnet-hwa-step``: one hardware-aware training step of the ResNet (forward, cross-entropy backward,
  SGD step, ``post_step``) with the standard HWA preset against the digital step.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

# The deploy configuration as it stood when the speed targets were set (issue 14): 8-bit DAC/ADC, ADC
# bound 10, output noise 0.04, abs-max noise management, no bound management, PCM (Joshi et al. 2020)
# with global drift compensation, tiles <= 512 x 512. Pinned here so that changes of ``aimc deploy``'s
# defaults do not move the benchmark.
DEPLOY_CONFIG = {
    "forward": {"inp_bits": 8, "inp_bound": 1.0, "inp_noise": 0.0, "out_bits": 8, "out_bound": 10.0,
                "out_noise": 0.04, "w_noise": 0.0, "w_noise_type": "none", "ir_drop": 0.0,
                "noise_management": "abs_max", "bound_management": "none"},
    "mapping": {"kind": "differential", "g_max": 25.0, "g_min": 0.0, "weight_scaling_omega": 1.0,
                "weight_scaling_columnwise": True, "max_in": 512, "max_out": 512},
    "backward_ideal": True,
    "inference": {"device": "pcm-joshi2020", "compensation": "global"},
}


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.short is None else self.short(x)))


def resnet20(n_classes: int = 10) -> nn.Module:
    """ResNet-20 for 32x32x3 inputs (He et al. 2016, CIFAR variant), ~272k weights, random initialisation."""
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            layers.append(_Block(cin, cout, stride if b == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes)]
    return nn.Sequential(*layers)


def _config(preset: str):
    from ..core.config import TileConfig, standard_hwa
    return TileConfig.from_dict(DEPLOY_CONFIG) if preset == "deploy" else standard_hwa()


def _resnet_batch(args) -> int:
    return 256 if args.batch == 1024 else args.batch  # 1024 is the CLI's default for the layer benches


def _eval_closure(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def make_resnet(args, kind: str):
    """A zero-argument forward of ResNet-20: kind 'digital', 'deploy' or 'standard-hwa' (programmed, 1 day)."""
    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.rand(_resnet_batch(args), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _eval_closure(_deployed(model, kind), x)


def _deployed(model, kind: str):
    """``model`` as is for "digital", else converted with the pinned config of ``kind``, programmed, drifted 1 d."""
    if kind == "digital":
        return model
    from .convert import convert_to_analog, drift, program
    model = convert_to_analog(model, _config(kind), seed=0).eval()
    program(model)
    drift(model, 86400.0)
    return model


def make_resnet_aihwkit(args):
    """aihwkit's ResNet-20 forward with the deploy IO settings (None if aihwkit is not installed)."""
    try:
        from aihwkit.inference.compensation.drift import GlobalDriftCompensation
        from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.simulator.configs import InferenceRPUConfig
        from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
    except Exception:
        return None
    cfg = InferenceRPUConfig()
    f = cfg.forward
    f.inp_res, f.out_res, f.out_bound, f.out_noise = 1 / 254, 1 / 254, 10.0, 0.04
    f.w_noise = 0.0
    f.noise_management, f.bound_management = NoiseManagementType.ABS_MAX, BoundManagementType.NONE
    cfg.mapping.max_input_size = cfg.mapping.max_output_size = 512
    cfg.noise_model = PCMLikeNoiseModel(g_max=25.0)
    cfg.drift_compensation = GlobalDriftCompensation()
    torch.manual_seed(0)
    model = convert_to_analog(resnet20(), cfg).eval()
    model.program_analog_weights()
    model.drift_analog_weights(86400.0)
    x = torch.rand(_resnet_batch(args), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _eval_closure(model, x)


def _capped(args, repeats: int):
    return SimpleNamespace(**{**vars(args), "repeats": min(args.repeats, repeats)})


def bench_resnet(args) -> dict:
    """ResNet-20 (CIFAR shape) eval forward: deploy configuration and standard HWA preset vs digital."""
    from ..bench import timeit_isolated
    a = _capped(args, 5)
    t = timeit_isolated({"aimc": ("aimc.nn.bench:make_resnet", {"kind": "deploy"}),
                         "baseline": ("aimc.nn.bench:make_resnet", {"kind": "digital"}),
                         "standard_hwa": ("aimc.nn.bench:make_resnet", {"kind": "standard-hwa"}),
                         "aihwkit": ("aimc.nn.bench:make_resnet_aihwkit", {})}, a)
    out = {"name": "resnet", "model": "ResNet-20 (CIFAR 32x32x3, 272k weights)", "batch": _resnet_batch(args),
           "threads": args.threads, "aimc_ms": round(t["aimc"], 1), "baseline_ms": round(t["baseline"], 1),
           "ratio": round(t["aimc"] / t["baseline"], 3), "target_ratio": 5.0,
           "standard_hwa_ms": round(t["standard_hwa"], 1),
           "standard_hwa_ratio": round(t["standard_hwa"] / t["baseline"], 3),
           "config": "DEPLOY_CONFIG (aimc/deployment/bench.py), programmed, drift 1 day, eval",
           "baseline": "the digital torch model", "isolated_processes": True}
    if "aihwkit" in t:
        out["aihwkit_ms"] = round(t["aihwkit"], 1)
        out["aihwkit_ratio"] = round(t["aihwkit"] / t["baseline"], 3)
    return out


def make_lstm(args, kind: str, shared_threshold: int | None = None):
    """A zero-argument forward of the 2-layer LSTM (128 -> 256, seq 50, batch 64): 'digital' or 'deploy'.
    ``shared_threshold``: ``aimc.core.threads.SMALL_WORK_SHARED`` for this process (benchmarks/lstm_threads.py
    compares thresholds)."""
    if shared_threshold is not None:
        from ..core import threads
        threads.SMALL_WORK_SHARED = int(shared_threshold)
    torch.manual_seed(0)
    model = nn.LSTM(128, 256, num_layers=2).eval()
    x = torch.randn(50, 64, 128, generator=torch.Generator().manual_seed(1))
    return _eval_closure(_deployed(model, kind), x)


def make_lstm_aihwkit(args):
    """aihwkit's conversion of the same LSTM (None if aihwkit is not installed)."""
    try:
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.simulator.configs import InferenceRPUConfig
    except Exception:
        return None
    torch.manual_seed(0)
    model = convert_to_analog(nn.LSTM(128, 256, num_layers=2), InferenceRPUConfig()).eval()
    x = torch.randn(50, 64, 128, generator=torch.Generator().manual_seed(1))
    return _eval_closure(model, x)


def _aihwkit_converts_lstm():
    try:
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.simulator.configs import InferenceRPUConfig
    except Exception:
        return None
    m = convert_to_analog(nn.Sequential(nn.LSTM(4, 4)), InferenceRPUConfig())
    return not isinstance(m[0], nn.LSTM)


def bench_lstm(args) -> dict:
    """2-layer analog LSTM (input 128, hidden 256, seq 50, batch 64), deploy configuration, vs digital."""
    from ..bench import timeit_isolated
    a = _capped(args, 9)
    t = timeit_isolated({"aimc": ("aimc.nn.bench:make_lstm", {"kind": "deploy"}),
                         "baseline": ("aimc.nn.bench:make_lstm", {"kind": "digital"}),
                         "aihwkit": ("aimc.nn.bench:make_lstm_aihwkit", {})}, a)
    out = {"name": "lstm", "model": "nn.LSTM(128, 256, num_layers=2), seq 50, batch 64",
           "threads": args.threads, "aimc_ms": round(t["aimc"], 2), "baseline_ms": round(t["baseline"], 2),
           "ratio": round(t["aimc"] / t["baseline"], 3), "target_ratio": 4.0,
           "config": "DEPLOY_CONFIG (aimc/deployment/bench.py), programmed, drift 1 day, eval",
           "baseline": "the digital torch.nn.LSTM", "isolated_processes": True}
    converted = _aihwkit_converts_lstm()
    if converted is None:
        out["aihwkit_note"] = "aihwkit not installed"
    else:
        out["aihwkit_ms"] = round(t["aihwkit"], 2)
        out["aihwkit_note"] = ("aihwkit converted the LSTM" if converted else
                               "aihwkit's convert_to_analog left nn.LSTM digital: aihwkit_ms is a digital LSTM")
    return out


def make_resnet_step(args, kind: str):
    """A zero-argument training step of ResNet-20 (forward, cross-entropy backward, SGD step): 'digital', or
    'hwa' (``aimc.train.hwa.prepare(model, 'standard-hwa')`` and ``post_step``)."""
    torch.manual_seed(0)
    model = resnet20().train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(_resnet_batch(args), 3, 32, 32, generator=g)
    t = torch.randint(0, 10, (x.shape[0],), generator=g)
    post = None
    if kind == "hwa":
        from ..train import hwa
        model = hwa.prepare(model, "standard-hwa").train()
        post = hwa.post_step
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), t).backward()
        opt.step()
        if post is not None:
            post(model)
    step()  # input ranges initialise from data on the first batches
    return step


def bench_resnet_hwa_step(args) -> dict:
    """One HWA training step of ResNet-20 (standard HWA preset) against the digital step."""
    from ..bench import timeit_isolated
    a = _capped(args, 3)
    t = timeit_isolated({"aimc": ("aimc.nn.bench:make_resnet_step", {"kind": "hwa"}),
                         "baseline": ("aimc.nn.bench:make_resnet_step", {"kind": "digital"})}, a)
    return {"name": "resnet-hwa-step", "model": "ResNet-20 (CIFAR 32x32x3)", "batch": _resnet_batch(args),
            "threads": args.threads, "aimc_ms": round(t["aimc"], 1), "baseline_ms": round(t["baseline"], 1),
            "ratio": round(t["aimc"] / t["baseline"], 3),
            "config": "aimc.train.hwa standard-hwa preset, training mode",
            "baseline": "the digital step (forward, cross-entropy backward, SGD)", "isolated_processes": True}
