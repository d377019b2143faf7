"""Hardware-aware training (HWA) for analog inference (training.md §1; Rasch et al., Nat. Commun. 14, 5282, 2023).

The three verbs::

    from aimc.train import hwa
    model = hwa.prepare(model, "standard-hwa")        # analog layers + HWA state (one line)
    opt = torch.optim.Adam(model.parameters(), 1e-2)   # any torch optimizer / LR schedule (*)
    hwa.hook_optimizer(opt, model)                     # or call hwa.post_step(model) after opt.step()
    ... your own training loop ...
    hwa.save_checkpoint(model, "net.pt")               # loadable by aimc.zoo and by hwa.load_checkpoint
    res = hwa.evaluate_over_time(model, dataset)       # calibrated PCM chips over time, global drift compensation

(*) channel-wise remapping keeps max |w| = 1 per column, so Adam's step is relative to 1: use a learning rate
about 3-10x the floating-point one (fine-tuning a trained FP model: ~3e-3; from scratch: ~1e-2).

What happens where (training.md §1.1):

* **Forward** (training and evaluation alike): the full noisy crossbar pipeline of the layer's tiles
  (``TileConfig.forward``: DAC, ADC, output noise, PCM read noise, IR drop, ...). Every stage passes its
  gradient straight through: the backward is the ideal transposed product with the weights the forward used
  (``TileConfig.backward_ideal``; with ``False`` the analog transposed read is used for the input gradient).
* **Weight modifiers** (``WeightModifier``; §1.2) perturb the weights that forward *and* backward see.
  A fresh sample is drawn whenever the weights changed (i.e. once per optimizer step = per mini-batch, as
  aihwkit's post-update resampling; every call within a batch, e.g. RNN time steps, sees the same sample;
  ``HWALayer.resample()`` forces a new one); off in ``eval()`` unless ``enable_during_test``. The gradient
  goes straight through to the clean weights.
* **Input ranges** (``InputRange``; §1.4): one learnable clip r per tile input split; x <- clip(x, -r, r)/r
  before the tile, the tile output is multiplied back by r; custom gradient for r (see ``_HWAMatmul``).
* **Output scales**: a digital per-output-column factor s (learned if ``learn_out_scaling``); y <- s * y.
  Remapping (``WeightRemap``) moves the column magnitude into s, so the product s * W is unchanged.
* **After each optimizer step** (``post_step``): weight clipping (``WeightClip``), then remapping, then
  the input ranges are kept positive.

amax, once for all modifiers: amax = max |W| over the layer's whole (out, in) matrix as stored in the
layer (after remapping: the *normalised* weights, so with channel-wise remapping to 1.0, amax = 1) if
``rel_to_actual_wmax`` (the default; 1 for an all-zero matrix), else ``assumed_wmax``. The noise σ of every
modifier is a fraction of amax.

``torch.compile``: the analog product (``AnalogModule.analog_matmul``, which runs this module's forward)
is excluded from compilation with ``torch.compiler.disable``: a compiled model compiles its digital parts and
breaks the graph around each analog layer, which runs eagerly with the same gradients. So compiling gives
no speed-up for the analog layers themselves; ``fullgraph=True`` cannot work with analog layers.
"""
from __future__ import annotations

import enum
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import (BoundManagement, ConfigError, NoiseManagement, TileConfig, _enum, _Node, _num,
                      as_config, register_subnode)
from ..config import ideal as _ideal_tile
from ..config import standard_hwa as _standard_hwa_tile
from ..nn._function import as_numpy
from ..nn.base import AnalogModule
from ..rng import Stream

__all__ = [
    "ModifierType", "ClipType", "RemapType", "WeightModifier", "WeightClip", "WeightRemap", "InputRange",
    "HWAConfig", "HWALayer", "PRESETS", "preset", "prepare", "attach", "post_step", "hook_optimizer",
    "analog_layers", "modify_weights", "effective_weight", "input_ranges", "deploy_config", "deploy_copy",
    "evaluate_over_time", "train", "export_digital", "save_checkpoint", "load_checkpoint",
    "run_cli", "bench_hwa_step",
]


# ============================================================================================ configuration

class ModifierType(str, enum.Enum):
    """Training-time weight perturbation (training.md §1.2); ξ ~ N(0, 1), U ~ U[0, 1), a = |w|/amax."""

    NONE = "none"                    # w
    ADD_NORMAL = "add_normal"        # w + std_dev·amax·ξ
    MULT_NORMAL = "mult_normal"      # w·(1 + std_dev·amax·ξ)   (aihwkit C++; equals its torch tile when amax = 1)
    POLY = "poly"                    # w + amax·std_dev·(c0 + c1·a + c2·a² + ...)·ξ
    PROG_NOISE = "prog_noise"        # sign(w)·|w + amax·(std_dev/g_max)·(c0 + c1·a + ...)·ξ|, c in µS
    DISCRETIZE = "discretize"        # round(w/(amax·res))·amax·res (step amax·res), optional stochastic
    DISCRETIZE_ADD_NORMAL = "discretize_add_normal"  # discretize, then + std_dev·amax·ξ
    DROP_CONNECT = "drop_connect"    # w (only pdrop acts)
    PCM_NOISE = "pcm_noise"          # PCM programming + drift variation + read noise at pcm_t_inference


class ClipType(str, enum.Enum):
    """Weight clipping after every optimizer step (training.md §1.3)."""

    NONE = "none"
    FIXED_VALUE = "fixed_value"              # |w| <= fixed_value
    LAYER_GAUSSIAN = "layer_gaussian"        # |w| <= sigma·std(W)
    AVERAGE_CHANNEL_MAX = "average_channel_max"  # |w| <= mean over output channels of max_j |w_ij|


class RemapType(str, enum.Enum):
    """Weight remapping after every optimizer step; the factor moves into the digital output scale."""

    NONE = "none"
    LAYERWISE_SYMMETRIC = "layerwise_symmetric"      # max |W| -> remapped_wmax, one factor per layer
    CHANNELWISE_SYMMETRIC = "channelwise_symmetric"  # max_j |w_ij| -> remapped_wmax per output column i


def _bool(owner, obj, name):
    if not isinstance(getattr(obj, name), bool):
        raise ConfigError(f"{owner}.{name} must be true or false, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class WeightModifier(_Node):
    """Training-time weight modifier (aihwkit ``WeightModifierParameter``; training.md §1.2).

    amax: see the module docstring (``rel_to_actual_wmax``, ``assumed_wmax``).

    * ``coeffs`` (POLY, PROG_NOISE): empty = the PCM programming-noise polynomial of the ``pcm_device`` card
      (Nandakumar et al. 2019: c = (0.26348, 1.9650, -1.1731) µS at g_max = 25 µS). POLY uses it divided by
      the card's reference g_max, i.e. (0.0105392, 0.0786, -0.046924). aihwkit's POLY default has
      c1 = 0.0768, a digit swap of 1.965/25 = 0.0786; aimc uses the value derived from the card (to get
      aihwkit's numbers, pass ``coeffs=(0.0105392, 0.0768, -0.046925)``). PROG_NOISE uses the µS
      coefficients with std_dev/g_max (``g_max`` 25 µS).
    * ``res`` (DISCRETIZE*): step as a fraction of amax, or, if > 1, a number of steps (res <- 1/res), as
      the IO quantisers read it. Deterministic rounding is half-to-even; ``sto_round`` rounds
      stochastically, rint(w/step + U - 0.5). No clipping to ±amax.
    * ``pdrop``: each weight is set to 0 with probability pdrop (DROP_CONNECT; combines with every type).
    * PCM_NOISE: the weight is mapped to a differential pair of the ``pcm_device`` card (any inference
      card: pcm-joshi2020, hermes-*, ...): G± = g_max·max(±w, 0)/amax (clipped to g_max); both devices are
      programmed (programming noise, drift exponent ν), then read at ``pcm_t_inference`` seconds after
      programming (power-law drift + accumulated 1/f read noise), w' = amax·(G⁺ - G⁻)/g_max. The *mean*
      drift is excluded: w' is multiplied by Σ|w_prog|/Σ|w_drift,mean| over the layer (the noise-free drift
      of the same devices), the factor that global drift compensation restores on the chip, so only the
      drift *variation* remains. ``g_max`` is ignored here (the card's own g_max is used).

    Not supported: aihwkit's ``per_batch_sample`` (one sample per batch row) and ``copy_last_column`` (aimc
    keeps biases digital), and the DOREFA type.
    """

    type: ModifierType = ModifierType.NONE
    std_dev: float = 0.0
    res: float = 0.0
    sto_round: bool = False
    pdrop: float = 0.0
    rel_to_actual_wmax: bool = True
    assumed_wmax: float = 1.0
    enable_during_test: bool = False
    coeffs: tuple = ()
    g_max: float = 25.0
    pcm_device: str = "pcm-joshi2020"
    pcm_t_inference: float = 0.0

    def __post_init__(self):
        o = "WeightModifier"
        _enum(o, self, "type", ModifierType)
        _num(o, "std_dev", self.std_dev, 0, 1e6)
        _num(o, "res", self.res, 0, 1e9)
        _num(o, "pdrop", self.pdrop, 0, 1)
        if self.pdrop >= 1:
            raise ConfigError(f"{o}.pdrop = {self.pdrop} is out of range [0, 1)")
        _num(o, "assumed_wmax", self.assumed_wmax, 0, 1e9, lo_open=True)
        _num(o, "g_max", self.g_max, 0, 1e9, lo_open=True)
        _num(o, "pcm_t_inference", self.pcm_t_inference, 0, 1e12)
        for name in ("sto_round", "rel_to_actual_wmax", "enable_during_test"):
            _bool(o, self, name)
        c = tuple(self.coeffs)
        object.__setattr__(self, "coeffs", c)
        for i, v in enumerate(c):
            _num(o, f"coeffs[{i}]", v)
        if not isinstance(self.pcm_device, str) or not self.pcm_device:
            raise ConfigError(f"{o}.pcm_device must be a card name, got {self.pcm_device!r}")
        t = self.type
        if t in (ModifierType.DISCRETIZE, ModifierType.DISCRETIZE_ADD_NORMAL) and self.res <= 0:
            raise ConfigError(f"{o}.res must be > 0 for type {t.value!r} (step = amax·res), got {self.res}")
        if t == ModifierType.PCM_NOISE:
            try:
                import device_models as dm
                dm.read_card(self.pcm_device)
            except Exception as e:  # unknown card: name the field
                raise ConfigError(f"{o}.pcm_device = {self.pcm_device!r}: {e}") from None

    @property
    def active(self) -> bool:
        return self.type != ModifierType.NONE or self.pdrop > 0


@dataclass(frozen=True)
class WeightClip(_Node):
    """Clipping after every optimizer step (aihwkit ``WeightClipParameter``). ``fixed_value`` > 0 also
    applies (as a second bound) under LAYER_GAUSSIAN and AVERAGE_CHANNEL_MAX; -1 = off."""

    type: ClipType = ClipType.NONE
    fixed_value: float = -1.0
    sigma: float = 2.5

    def __post_init__(self):
        o = "WeightClip"
        _enum(o, self, "type", ClipType)
        _num(o, "fixed_value", self.fixed_value, -1, 1e9)
        _num(o, "sigma", self.sigma, 0, 1e6, lo_open=True)
        if self.type == ClipType.FIXED_VALUE and self.fixed_value <= 0:
            raise ConfigError(f"{o}.fixed_value must be > 0 for type 'fixed_value', got {self.fixed_value}")


@dataclass(frozen=True)
class WeightRemap(_Node):
    """Remapping after every optimizer step (aihwkit ``WeightRemapParameter``): the weights are divided by
    f = max|W|/remapped_wmax (per column or per layer) and the digital output scale multiplied by f."""

    type: RemapType = RemapType.NONE
    remapped_wmax: float = 1.0

    def __post_init__(self):
        _enum("WeightRemap", self, "type", RemapType)
        _num("WeightRemap", "remapped_wmax", self.remapped_wmax, 0, 1e9, lo_open=True)


@dataclass(frozen=True)
class InputRange(_Node):
    """Learned input range per tile input split (aihwkit ``pre_post.input_range``; training.md §1.4).

    Needs the tile's forward noise management NONE or CONSTANT and bound management NONE (the range does the
    scaling). ``init_from_data`` = N > 0: during the first N training batches r <- (r·i + init_std_alpha·
    std(x))/(i + 1), then |r|. Gradient of r (δ: gradient at the clipped input): g = Σ_{x>=r} min(δ, 0)
    - Σ_{x<=-r} max(δ, 0); g <- g·r if ``gradient_relative``; g <- g·gradient_scale; plus decay·r if the
    fraction of |x| < r exceeds ``input_min_percentage``. The input gradient passes straight through the clip
    (unmasked), as in aihwkit. ``manage_output_clipping`` is not supported (must stay False).
    """

    enable: bool = False
    init_value: float = 3.0
    init_from_data: int = 100
    init_std_alpha: float = 3.0
    decay: float = 0.001
    input_min_percentage: float = 0.95
    output_min_percentage: float = 0.95
    manage_output_clipping: bool = False
    gradient_scale: float = 1.0
    gradient_relative: bool = True

    def __post_init__(self):
        o = "InputRange"
        for name in ("enable", "manage_output_clipping", "gradient_relative"):
            _bool(o, self, name)
        _num(o, "init_value", self.init_value, 0, 1e9, lo_open=True)
        _num(o, "init_from_data", self.init_from_data, 0, 2**31, integer=True)
        _num(o, "init_std_alpha", self.init_std_alpha, 0, 1e6, lo_open=True)
        _num(o, "decay", self.decay, 0, 1e6)
        _num(o, "input_min_percentage", self.input_min_percentage, 0, 1)
        _num(o, "output_min_percentage", self.output_min_percentage, 0, 1)
        _num(o, "gradient_scale", self.gradient_scale, 0, 1e9)
        if self.manage_output_clipping:
            raise ConfigError("InputRange.manage_output_clipping = true is not supported by aimc "
                              "(the ADC clip flags are not returned per tile); leave it false")


@dataclass(frozen=True)
class HWAConfig(_Node):
    """Everything HWA adds to a layer beyond its ``TileConfig`` (which gives the noisy forward)."""

    modifier: WeightModifier = field(default_factory=WeightModifier)
    clip: WeightClip = field(default_factory=WeightClip)
    remap: WeightRemap = field(default_factory=WeightRemap)
    input_range: InputRange = field(default_factory=InputRange)
    learn_out_scaling: bool = False

    def __post_init__(self):
        for name, cls in (("modifier", WeightModifier), ("clip", WeightClip), ("remap", WeightRemap),
                          ("input_range", InputRange)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"HWAConfig.{name} must be a {cls.__name__}, "
                                  f"got {type(getattr(self, name)).__name__}")
        _bool("HWAConfig", self, "learn_out_scaling")


for _name, _cls in (("modifier", WeightModifier), ("clip", WeightClip), ("remap", WeightRemap),
                    ("input_range", InputRange)):
    register_subnode(HWAConfig, _name, _cls)


# ------------------------------------------------------------------------------------------------ presets

def standard_hwa() -> tuple[TileConfig, HWAConfig]:
    """The standard HWA preset of Rasch et al., Nat. Commun. 14, 5282 (2023) (aihwkit
    ``StandardHWATrainingPreset``; training.md §1.5).

    Tiles: ``aimc.presets.standard_hwa()`` (8-bit DAC/ADC, NM constant 1, no BM, out_bound 10, out_noise
    0.04, PCM_READ w_noise 0.0175, IR drop 1.0, columnwise weight scaling to 1.0, max 512 inputs per tile,
    no output split; ideal backward). HWA: channel-wise remapping to 1.0, clip FIXED_VALUE 1.0, learned
    per-column output scales, learned input ranges (init 3.0 from 100 batches of data, α = 3, decay 0.001,
    min percentage 0.95, relative gradient), no weight modifier.
    """
    h = HWAConfig(clip=WeightClip(ClipType.FIXED_VALUE, fixed_value=1.0),
                  remap=WeightRemap(RemapType.CHANNELWISE_SYMMETRIC, 1.0),
                  input_range=InputRange(enable=True), learn_out_scaling=True)
    return _standard_hwa_tile(), h


def ideal() -> tuple[TileConfig, HWAConfig]:
    """Floating-point tiles, no HWA feature: the layer equals its torch.nn twin (a parity baseline)."""
    return _ideal_tile(), HWAConfig()


PRESETS = {"standard-hwa": standard_hwa, "ideal": ideal}


def preset(name: str) -> tuple[TileConfig, HWAConfig]:
    """(TileConfig, HWAConfig) of a named HWA preset: 'standard-hwa' or 'ideal'."""
    try:
        return PRESETS[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown HWA preset {name!r}; available: {sorted(PRESETS)}") from None


# ============================================================================================ weight modifiers

_PCM_CACHE: dict = {}


def _device(name: str):
    if name not in _PCM_CACHE:
        import device_models as dm
        _PCM_CACHE[name] = dm.load(name)
    return _PCM_CACHE[name]


def _default_coeffs(mod: WeightModifier, relative: bool) -> np.ndarray:
    if mod.coeffs:
        return np.asarray(mod.coeffs, np.float64)
    card = _device("pcm-joshi2020")
    c = np.asarray(card.prog_coeff, np.float64)
    return c / card.prog_coeff_g_max_reference if relative else c


def _poly(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    out = np.full_like(a, np.float32(c[-1]))
    for ci in c[-2::-1]:
        out *= a
        out += np.float32(ci)
    return out


def _amax(W: np.ndarray, mod: WeightModifier) -> float:
    if not mod.rel_to_actual_wmax:
        return float(mod.assumed_wmax)
    a = float(np.abs(W).max()) if W.size else 0.0
    return a if a > 0 else 1.0


def _pcm_noise(W: np.ndarray, mod: WeightModifier, amax: float, stream: Stream) -> np.ndarray:
    from ..inference import DeviceArray  # program/read engine of the tiles (fused kernels for PCM-like cards)
    m = _device(mod.pcm_device)
    gmax = np.float32(m.g_max)
    gmin = np.float32(m.g_min)
    g = np.minimum(np.abs(W) * np.float32((gmax - gmin) / amax), gmax - gmin)
    G = np.full((2, *W.shape), gmin, np.float32)
    np.copyto(G[0], g + gmin, where=W > 0)
    np.copyto(G[1], g + gmin, where=W < 0)
    dev = DeviceArray.program(m, G, stream)
    t = float(mod.pcm_t_inference)
    Gt = dev.read(t, stream)
    w = (Gt[0] - Gt[1]) * np.float32(amax / (gmax - gmin))
    if t > 0:  # exclude the mean drift: the global factor drift compensation restores on the chip
        Gm = m.drift_mean(dev.cells, t)
        num = float(np.abs(dev.cells.g_prog[0] - dev.cells.g_prog[1]).sum(dtype=np.float64))
        den = float(np.abs(Gm[0] - Gm[1]).sum(dtype=np.float64))
        if den > 0:
            w *= np.float32(num / den)
    return np.ascontiguousarray(w, np.float32)


def modify_weights(W: np.ndarray, mod: WeightModifier, stream: Stream) -> np.ndarray:
    """One sample of the modified weights (float32, same shape as W); W (out, in) float32 is not changed.

    Randomness: ``stream`` (counter-based, thread-count independent). See ``WeightModifier`` for the math.
    """
    W = np.ascontiguousarray(W, np.float32)
    t = mod.type
    amax = _amax(W, mod)
    std = np.float32(mod.std_dev * amax)
    if t in (ModifierType.NONE, ModifierType.DROP_CONNECT):
        out = W.copy()
    elif t == ModifierType.ADD_NORMAL:
        out = W + std * stream.normal(W.shape)
    elif t == ModifierType.MULT_NORMAL:
        out = W * (np.float32(1.0) + std * stream.normal(W.shape))
    elif t == ModifierType.POLY:
        a = np.abs(W) * np.float32(1.0 / amax)
        sig = _poly(_default_coeffs(mod, relative=True), a)
        out = W + std * sig * stream.normal(W.shape)
    elif t == ModifierType.PROG_NOISE:
        a = np.abs(W) * np.float32(1.0 / amax)
        sig = _poly(_default_coeffs(mod, relative=False), a) * np.float32(amax * mod.std_dev / mod.g_max)
        out = np.abs(W + sig * stream.normal(W.shape))
        np.negative(out, out=out, where=W < 0)
    elif t in (ModifierType.DISCRETIZE, ModifierType.DISCRETIZE_ADD_NORMAL):
        r = mod.res if mod.res <= 1 else 1.0 / mod.res
        step = np.float32(amax * r)
        v = W * np.float32(1.0 / step)
        if mod.sto_round:
            v += stream.uniform(W.shape) - np.float32(0.5)
        out = np.rint(v) * step
        if t == ModifierType.DISCRETIZE_ADD_NORMAL:
            out += std * stream.normal(W.shape)
    elif t == ModifierType.PCM_NOISE:
        out = _pcm_noise(W, mod, amax, stream)
    else:  # pragma: no cover - enum is closed
        raise ConfigError(f"unknown modifier type {t!r}")
    if mod.pdrop > 0:
        out[stream.uniform(W.shape) < np.float32(mod.pdrop)] = 0.0
    return out.astype(np.float32, copy=False)


# ============================================================================================ autograd

class _StraightThrough(torch.autograd.Function):
    """Forward: the modified weights; backward: the gradient goes unchanged to the clean weights."""

    @staticmethod
    def forward(ctx, w, w_mod):
        return w_mod

    @staticmethod
    def backward(ctx, g):
        return g, None


class _HWAMatmul(torch.autograd.Function):
    """y = s * Σ_c r_c · tiles_c(clip(x_c, -r_c, r_c)/r_c) for input splits c (r, s optional).

    Backward (straight-through over the analog pipeline, the tile read as ideal y ≈ W clip(x)):
    grad_s = Σ_rows δ·y_pre (y_pre: the output before s); grad_x = δ·(s W) (unmasked by the clip, as
    aihwkit; or the analog transposed read of s·δ); grad_W = s·(δᵀ·clip(x, -r, r)); grad_r per split: the
    custom gradient of ``InputRange`` (``HWALayer._range_grad``), δ at the clipped input being grad_x.
    The output scale s is folded into the (out, in)-sized products, so no extra (rows, out) pass is made.
    """

    @staticmethod
    def forward(ctx, x2d, weight, r, s, layer, state):
        xn = as_numpy(x2d)
        tiles = layer.tiles
        r_out = None        # a scalar factor still to apply to the saved output (single input split)
        if r is None:
            y = tiles._forward(xn)
        else:
            rn = as_numpy(r)
            if rn.shape[0] == 1:
                y = tiles._forward(state._scale_input(xn, rn[0]))
                r_out = float(rn[0])
            else:
                y = np.zeros((xn.shape[0], tiles.out_size), np.float32)
                for rs, cs, tile in tiles._blocks():
                    k = state._split_of[cs.start]
                    y[:, rs] += rn[k] * tile._forward(state._scale_input(xn[:, cs], rn[k]))
        y = torch.from_numpy(y)
        if s is None:
            if r_out is not None:
                y.mul_(r_out)
            out, saved = y, None
        else:
            f = s.detach() if r_out is None else s.detach() * r_out
            out, saved = y * f, y   # saved = y_pre / r_out
        ctx.r_out = 1.0 if r_out is None else r_out
        ctx.save_for_backward(x2d, weight, r, s, saved)
        ctx.layer, ctx.state = layer, state
        return out

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight, r, s, saved = ctx.saved_tensors
        state, layer = ctx.state, ctx.layer
        grad_x = grad_w = grad_r = grad_s = None
        if s is not None and ctx.needs_input_grad[3]:
            grad_s = (grad_y * saved).sum(0)
            if ctx.r_out != 1.0:
                grad_s.mul_(ctx.r_out)
        sd = None if s is None else s.detach()
        need_r = r is not None and ctx.needs_input_grad[2]
        gxin = None
        if ctx.needs_input_grad[0] or need_r:
            if layer.config.backward_ideal:
                w = weight if sd is None else weight * sd[:, None]
                gxin = grad_y @ w.to(grad_y.dtype)
            else:
                d = grad_y if sd is None else grad_y * sd
                gxin = torch.from_numpy(layer.tiles._backward(as_numpy(d)))
            if ctx.needs_input_grad[0]:
                grad_x = gxin
        clip = None
        if r is not None:
            clip = state._clip_info(x2d.detach(), r.detach())
        if ctx.needs_input_grad[1]:
            xc = x2d if clip is None or clip[0] is None else clip[1]
            grad_w = grad_y.t() @ xc
            if sd is not None:
                grad_w.mul_(sd[:, None])
        if need_r:
            grad_r = state._range_grad(x2d.detach(), gxin, r.detach(), clip)
        return grad_x, grad_w, grad_r, grad_s, None, None


# ============================================================================================ per-layer state

class HWALayer(nn.Module):
    """The HWA state of one analog layer (its ``hwa`` submodule): the config, learned input ranges
    (``input_range``, one per tile input split), output scales (``out_scale``, one per output column) and
    the number of batches used so far to initialise the ranges (``ir_batches``). All in the state dict.
    """

    def __init__(self, layer: AnalogModule, config: HWAConfig):
        super().__init__()
        if not isinstance(config, HWAConfig):
            raise ConfigError(f"HWALayer needs an HWAConfig, got {type(config).__name__}")
        self.config = config
        tiles = layer.tiles
        tcfg = layer.config
        ir = config.input_range
        in_splits = list(tiles.in_splits)
        starts = np.concatenate([[0], np.cumsum(in_splits)]).astype(int)
        self._bounds = [(int(starts[k]), int(starts[k + 1])) for k in range(len(in_splits))]
        self._split_of = {int(starts[k]): k for k in range(len(in_splits))}
        if ir.enable:
            f = tcfg.forward
            if f.is_perfect:
                pass
            elif f.noise_management not in (NoiseManagement.NONE, NoiseManagement.CONSTANT) or \
                    f.bound_management != BoundManagement.NONE:
                raise ConfigError(
                    f"{tiles.name or type(layer).__name__}: input-range learning needs forward "
                    f"noise_management 'none' or 'constant' and bound_management 'none' (got "
                    f"{f.noise_management.value!r}, {f.bound_management.value!r}): the learned range does the "
                    f"input scaling")
            self.input_range = nn.Parameter(torch.full((len(in_splits),), float(ir.init_value)))
        else:
            self.register_parameter("input_range", None)
        self.register_buffer("ir_batches", torch.zeros((), dtype=torch.int64))
        if config.learn_out_scaling or config.remap.type != RemapType.NONE:
            self.out_scale = nn.Parameter(torch.ones(tiles.out_size), requires_grad=config.learn_out_scaling)
        else:
            self.register_parameter("out_scale", None)
        # does the tile's DAC already clip exactly at the range (alpha * inp_bound == 1)?
        f = tcfg.forward
        alpha = 1.0
        if f.noise_management == NoiseManagement.CONSTANT and f.nm_thres > 0:
            alpha = f.nm_thres
        self._dac_clips = (not f.is_perfect) and f.noise_management in (NoiseManagement.NONE,
                                                                        NoiseManagement.CONSTANT) \
            and alpha * f.inp_bound == 1.0
        self._stream = Stream(tiles.seed, f"{tiles.name}/hwa-modifier")
        self._sample = None     # (key, modified weights): one sample per weight version
        self._resample = 0      # bumped by resample() to force a fresh sample

    def extra_repr(self) -> str:
        return f"config={self.config}"

    def resample(self) -> None:
        """Draw a fresh modifier sample at the next forward even if the weights did not change."""
        self._resample += 1

    # -- helpers used by _HWAMatmul ----------------------------------------------------------------------
    def _scale_input(self, xn: np.ndarray, r: float) -> np.ndarray:
        """clip(x, -r, r)/r as float32 (the clip is left to the DAC when it clips at exactly 1)."""
        xs = np.multiply(xn, np.float32(1.0 / r), dtype=np.float32)
        if not self._dac_clips:
            np.clip(xs, -1.0, 1.0, out=xs)
        return xs

    def _expand(self, r: torch.Tensor) -> torch.Tensor:
        """Per-input-column range (in,) from the per-split ranges."""
        if r.shape[0] == 1:
            return r
        return torch.cat([r[k].expand(b - a) for k, (a, b) in enumerate(self._bounds)])

    def _clip_info(self, x: torch.Tensor, r: torch.Tensor):
        """(indices of the clipped entries |x| >= r or None, clip(x, -r, r) or None if nothing clipped)."""
        rv = self._expand(r)
        clipped = torch.abs(x) >= rv
        idx = clipped.nonzero(as_tuple=True)
        if idx[0].numel() == 0:
            return None, None
        return idx, torch.clamp(x, -rv, rv)

    def _range_grad(self, x, gxin, r, clip) -> torch.Tensor:
        """The custom input-range gradient (training.md §1.4), per input split k:
        g_k = Σ_{x >= r} min(δ, 0) - Σ_{x <= -r} max(δ, 0); × r_k if gradient_relative; × gradient_scale;
        + decay·r_k if the fraction of |x| < r_k in the split exceeds input_min_percentage."""
        ir = self.config.input_range
        nsplit = len(self._bounds)
        g = torch.zeros(nsplit, dtype=torch.float64, device=x.device)
        nclip = np.zeros(nsplit, np.int64)
        idx = clip[0] if clip is not None else None
        if idx is not None:
            xs = x[idx]
            ds = gxin[idx]
            contrib = torch.where(xs > 0, ds.clamp(max=0), -ds.clamp(min=0)).double()
            if nsplit == 1:
                g[0] = contrib.sum()
                nclip[0] = xs.numel()
            else:
                starts = torch.tensor([a for a, _ in self._bounds[1:]], dtype=idx[1].dtype, device=idx[1].device)
                k = torch.bucketize(idx[1], starts, right=True)
                g.index_add_(0, k, contrib)
                nclip = np.bincount(k.cpu().numpy(), minlength=nsplit)
        rows = x.shape[0]
        rd = r.double()
        if ir.gradient_relative:
            g = g * rd
        g = g * ir.gradient_scale
        if ir.decay > 0:
            for k, (a, b) in enumerate(self._bounds):
                frac_in = 1.0 - nclip[k] / max(rows * (b - a), 1)
                if frac_in > ir.input_min_percentage:
                    g[k] += ir.decay * rd[k]
        return g.to(r.dtype)

    # -- the product -------------------------------------------------------------------------------------
    def matmul(self, layer: AnalogModule, x2d: torch.Tensor) -> torch.Tensor:
        """(rows, in) -> (rows, out): modifiers, input ranges, the tiles, output scales."""
        if layer._use_torch():
            from ..nn.torch_backend import hwa_matmul
            return hwa_matmul(self, layer, x2d)
        W = layer.analog_weight()
        mod = self.config.modifier
        if layer.programmed:
            w_eff = W
        elif mod.active and (self.training or mod.enable_during_test):
            key = ("modifier", layer.weight._version, layer.weight.data_ptr(), self._resample)
            if self._sample is None or self._sample[0] != key:
                self._sample = (key, modify_weights(as_numpy(W), mod, self._stream))
            wm = self._sample[1]
            if layer._synced_version != key:
                layer.tiles.set_weights(wm)
                layer._synced_version = key  # the tiles hold this sample, not W
            w_eff = _StraightThrough.apply(W, torch.from_numpy(wm))
        else:
            layer._sync()
            w_eff = W
        r = self.input_range
        if r is not None:
            ir = self.config.input_range
            if self.training and int(self.ir_batches) < ir.init_from_data:
                self._init_range_from(x2d.detach())
            r_use = r
        else:
            r_use = None
        return _HWAMatmul.apply(x2d, w_eff, r_use, self.out_scale, layer, self)

    @torch.no_grad()
    def _init_range_from(self, x: torch.Tensor) -> None:
        ir = self.config.input_range
        i = int(self.ir_batches)
        r = self.input_range
        for k, (a, b) in enumerate(self._bounds):
            sd = float(x[:, a:b].float().std()) if x.shape[0] * (b - a) > 1 else 0.0
            r[k] = abs((float(r[k]) * i + ir.init_std_alpha * sd) / (i + 1))
        r.clamp_(min=1e-6)
        self.ir_batches += 1

    # -- after the optimizer step ------------------------------------------------------------------------
    @torch.no_grad()
    def post_step(self, layer: AnalogModule) -> None:
        """Clip, then remap the layer's weights; keep the input ranges positive."""
        W = _rows(layer)
        clip_and_remap_(W, self.out_scale, self.config.clip, self.config.remap)
        if self.input_range is not None:
            self.input_range.abs_().clamp_(min=1e-6)


def _rows(layer: AnalogModule) -> torch.Tensor:
    """``layer.analog_weight()`` (out, in) as a view of the parameter, for in-place clipping/remapping."""
    with torch.no_grad():
        rows = layer.analog_weight()
    if rows.untyped_storage().data_ptr() != layer.weight.untyped_storage().data_ptr():
        raise ValueError(f"{type(layer).__name__}.analog_weight() is not a view of its weight parameter, so "
                         "clipping/remapping cannot act on it in place")
    return rows


def _clip_bound(W: torch.Tensor, clip: WeightClip, row_max: torch.Tensor | None) -> float | None:
    bounds = []
    if clip.fixed_value > 0:
        bounds.append(float(clip.fixed_value))
    if clip.type == ClipType.LAYER_GAUSSIAN:
        bounds.append(float(clip.sigma * W.std()))
    elif clip.type == ClipType.AVERAGE_CHANNEL_MAX:
        rm = row_max if row_max is not None else torch.linalg.vector_norm(W, float("inf"), dim=1)
        bounds.append(float(rm.mean()))
    return min(bounds) if bounds else None


@torch.no_grad()
def clip_weights_(W: torch.Tensor, clip: WeightClip) -> None:
    """Clip W (out, in) in place (training.md §1.3): FIXED_VALUE |w| <= fixed_value; LAYER_GAUSSIAN
    |w| <= sigma·std(W); AVERAGE_CHANNEL_MAX |w| <= mean_i max_j |w_ij|; fixed_value > 0 also bounds the
    other two."""
    b = _clip_bound(W, clip, None)
    if b is not None:
        W.clamp_(-b, b)


@torch.no_grad()
def remap_(W: torch.Tensor, out_scale: torch.Tensor, remap: WeightRemap) -> None:
    """Rescale W (out, in) in place so that max|W| = remapped_wmax per column (or per layer), multiplying the
    output scale by the same factor: out_scale * W is unchanged. All-zero columns are left alone."""
    clip_and_remap_(W, out_scale, WeightClip(), remap)


@torch.no_grad()
def clip_and_remap_(W: torch.Tensor, out_scale: torch.Tensor | None, clip: WeightClip, remap: WeightRemap) -> None:
    """``clip_weights_`` then ``remap_`` in as few passes over W as possible (one max pass, one clamp pass
    only if something exceeds the bound, one scaling pass)."""
    do_remap = out_scale is not None and remap.type != RemapType.NONE
    if clip.type == ClipType.NONE and clip.fixed_value <= 0 and not do_remap:
        return
    row_max = torch.linalg.vector_norm(W, float("inf"), dim=1)
    b = _clip_bound(W, clip, row_max)
    if b is not None and float(row_max.max()) > b:
        W.clamp_(-b, b)
        row_max = row_max.clamp(max=b)
    if not do_remap:
        return
    if remap.type == RemapType.CHANNELWISE_SYMMETRIC:
        m = row_max
    else:
        m = row_max.max().expand(W.shape[0])
    f = m / remap.remapped_wmax
    f = torch.where(f > 0, f, torch.ones_like(f))
    W.div_(f[:, None])
    out_scale.mul_(f.to(out_scale.dtype))


# ============================================================================================ model-level API

def analog_layers(model: nn.Module):
    """(qualified name, layer) of every tile-holding analog module of ``model`` (layers and the TileSlots of
    grouped convolutions, RNNs and attention; the model itself included)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, AnalogModule) and getattr(m, "tiles", None) is not None]


def attach(layer: AnalogModule, config: HWAConfig) -> HWALayer:
    """Give one analog layer its HWA state (replacing any previous one); remaps its weights once."""
    state = HWALayer(layer, config)
    layer.hwa = state
    layer.hwa.train(layer.training)
    state.post_step(layer)
    return state


def _resolve(preset_, tile_config, hwa_config):
    tcfg = hcfg = None
    if preset_ is not None:
        if isinstance(preset_, str):
            tcfg, hcfg = preset(preset_)
        elif isinstance(preset_, tuple) and len(preset_) == 2:
            tcfg, hcfg = as_config(preset_[0]), preset_[1]
        else:
            raise ConfigError(f"preset must be a name ({sorted(PRESETS)}) or a (TileConfig, HWAConfig) pair, "
                              f"got {type(preset_).__name__}")
    if tile_config is not None:
        tcfg = as_config(tile_config)
    if hwa_config is not None:
        hcfg = hwa_config if isinstance(hwa_config, HWAConfig) else HWAConfig.from_dict(dict(hwa_config))
    if hcfg is None:
        hcfg = HWAConfig()
    return tcfg, hcfg


def _convert(model: nn.Module, tcfg: TileConfig, seed: int) -> nn.Module:
    """Swap the supported torch layers for analog twins (``aimc.convert.convert_to_analog``; a copy)."""
    from ..convert import convert_to_analog
    out = convert_to_analog(model, tcfg, seed=seed)
    tag = getattr(model, "_aimc_arch", None)  # keep the zoo architecture tag on the copy
    if tag is not None and getattr(out, "_aimc_arch", None) is None:
        out._aimc_arch = tag
    return out


def prepare(model: nn.Module, preset: str | tuple | None = "standard-hwa", *, tile_config=None,
            hwa_config: HWAConfig | dict | None = None, seed: int = 0) -> nn.Module:
    """Make ``model`` ready for hardware-aware training and return it (modified in place where possible).

    * the supported torch layers (Linear, Conv1d/2d, LSTM/GRU/RNN, MultiheadAttention) are converted to
      analog twins with the preset's TileConfig by ``aimc.convert.convert_to_analog`` (which returns a
      copy: use the returned model); analog layers already present keep their own TileConfig unless
      ``tile_config`` is given explicitly (then they are re-tiled, seed and name kept);
    * every analog layer gets an ``hwa`` submodule (``HWALayer``) with the preset's HWAConfig, and its weights
      are remapped once (the function s * W is unchanged).

    ``preset``: 'standard-hwa' (Rasch et al. 2023), 'ideal', or a (TileConfig, HWAConfig) pair;
    ``tile_config`` / ``hwa_config`` override either half. Create the optimizer *after* ``prepare`` (it adds
    parameters: input ranges, output scales).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare: model must be a torch.nn.Module, got {type(model).__name__}")
    tcfg, hcfg = _resolve(preset, tile_config, hwa_config)
    if tcfg is not None:
        model = _convert(model, tcfg, seed)
    layers = analog_layers(model)
    if not layers:
        raise ValueError("prepare: the model has no analog layers and no layer aimc.convert can convert")
    for name, layer in layers:
        if tile_config is not None and layer.config != tcfg:
            layer._init_tiles(layer.tiles.out_size, layer.tiles.in_size, tcfg, layer.tiles.seed, layer.tiles.name)
        try:
            attach(layer, hcfg)
        except ConfigError as e:
            raise ConfigError(f"prepare: layer {name or '<model>'!r}: {e}") from None
    return model


def post_step(model: nn.Module) -> None:
    """Clip and remap every prepared layer's weights, keep input ranges positive: call after optimizer.step()."""
    for _, layer in analog_layers(model):
        state = getattr(layer, "hwa", None)
        if state is not None:
            state.post_step(layer)


def hook_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Run ``post_step(model)`` after every ``optimizer.step()``; returns the removable handle."""
    return optimizer.register_step_post_hook(lambda *_: post_step(model))


# ============================================================================================ export / checkpoints

def effective_weight(layer: AnalogModule) -> torch.Tensor:
    """The digital-equivalent (out, in) matrix s * W of one analog layer (without the input-range clip)."""
    state = getattr(layer, "hwa", None)
    w = layer.analog_weight().detach()
    if state is None or state.out_scale is None:
        return w.clone()
    return w * state.out_scale.detach()[:, None]


def _is_hwa_key(k: str) -> bool:
    """HWA state and the analog layers' tile state (``_extra_state``) have no place in a torch.nn twin."""
    return k.startswith("hwa.") or ".hwa." in k or k.endswith("_extra_state")


def export_digital(model: nn.Module) -> dict:
    """The model's state dict with output scales folded into the weights and the HWA entries removed, i.e.
    the state dict of its torch.nn twin (input ranges are returned separately by ``input_ranges``)."""
    out = {k: v.clone() for k, v in model.state_dict().items() if not _is_hwa_key(k)}
    names = {id(m): n for n, m in model.named_modules()}
    with torch.no_grad():
        for _, layer in analog_layers(model):
            state = getattr(layer, "hwa", None)
            if state is None or state.out_scale is None:
                continue
            owner = getattr(layer, "_owner", layer)   # TileSlot: a row block of its owner's parameter
            param = getattr(layer, "_param", "weight")
            rows = getattr(layer, "_rows", None)
            oname = names[id(owner)]
            w = out[f"{oname}.{param}" if oname else param]
            block = w if rows is None else w[rows[0]:rows[1]]
            block.view(layer.tiles.out_size, -1).mul_(state.out_scale.detach()[:, None])
    return out


def input_ranges(model: nn.Module) -> dict:
    """{layer name: [r per input split]} of the layers with learned input ranges."""
    return {name: [float(v) for v in layer.hwa.input_range.detach()]
            for name, layer in analog_layers(model)
            if getattr(layer, "hwa", None) is not None and layer.hwa.input_range is not None}


def save_checkpoint(model: nn.Module, path, meta: dict | None = None, *, overwrite: bool = False,
                    arch: tuple[str, dict] | None = None) -> Path:
    """Write an aimc checkpoint (``aimc.zoo`` format) of the digital twin (output scales folded in), with
    ``meta["hwa"]`` = {tile_config, hwa_config, input_ranges} so ``load_checkpoint`` restores the analog
    model exactly and ``aimc.zoo.load_checkpoint`` / ``aimc deploy`` read it as a plain torch model."""
    from .. import zoo
    tag = getattr(model, zoo._ARCH_ATTR, None)
    if arch is None and tag is None:
        raise ValueError("save_checkpoint: the model was not built by aimc.zoo; pass arch=(name, kwargs)")
    name, kwargs = arch if arch is not None else (tag["name"], tag["kwargs"])
    twin = zoo.build(name, **kwargs)
    twin.load_state_dict(export_digital(model), strict=True)
    layers = analog_layers(model)
    meta = dict(meta or {})
    if layers:
        first = layers[0][1]
        hcfg = first.hwa.config if getattr(first, "hwa", None) is not None else HWAConfig()
        meta["hwa"] = {"tile_config": first.config.to_dict(), "hwa_config": hcfg.to_dict(),
                       "input_ranges": input_ranges(model), "seed": int(first.tiles.seed)}
    return zoo.save_checkpoint(twin, path, meta, overwrite=overwrite, arch=(name, kwargs))


def load_checkpoint(path, *, analog: bool = True):
    """Load a checkpoint written by ``save_checkpoint``; returns (model, meta). With ``analog`` (default) and
    HWA metadata present, the model is prepared with the stored configs and its input ranges restored."""
    from .. import zoo
    model, meta = zoo.load_checkpoint(path)
    h = meta.get("hwa") if isinstance(meta, dict) else None
    if not analog or not h:
        return model, meta
    tcfg = TileConfig.from_dict(h["tile_config"])
    hcfg = HWAConfig.from_dict(h["hwa_config"])
    model = prepare(model, None, tile_config=tcfg, hwa_config=hcfg, seed=int(h.get("seed", 0)))
    ranges = h.get("input_ranges", {})
    for name, layer in analog_layers(model):
        if name in ranges and layer.hwa.input_range is not None:
            with torch.no_grad():
                layer.hwa.input_range.copy_(torch.tensor(ranges[name], dtype=torch.float32))
                layer.hwa.ir_batches.fill_(hcfg.input_range.init_from_data)
    model.eval()
    return model, meta


# ============================================================================================ deployment

def deploy_config(model: nn.Module, device: str = "pcm-joshi2020", compensation: str = "global",
                  calibrate: bool = True) -> TileConfig:
    """The TileConfig to deploy an HWA-trained ``model`` on: its own (training) TileConfig with an inference
    section (device card, drift compensation) added; the forward periphery stays what HWA trained with.
    ``calibrate`` (default, as ``aimc deploy``): per-column MSE ADC ranges chosen on each programmed chip, and
    the learned input ranges (``inp='learned'``) if the model has them, else a static DAC range at the
    99.99th percentile (``aimc.calibration``)."""
    from ..config import CalibrationConfig, InferenceConfig
    layers = analog_layers(model)
    if not layers:
        raise ValueError("deploy_config: the model has no analog layers")
    cal = None
    if calibrate:
        learned = bool(input_ranges(model))
        cal = CalibrationConfig(inp="learned" if learned else "percentile")
    return layers[0][1].config.replace(inference=InferenceConfig(device=device, compensation=compensation),
                                       calibration=cal)


def deploy_copy(model: nn.Module, config: TileConfig | str | None = None, seed: int = 0) -> nn.Module:
    """A copy of an HWA-prepared ``model`` on fresh tiles (``config``, default ``deploy_config(model)``; seed
    ``seed``; tile names kept), with the same weights, input ranges and output scales: one chip instance,
    ready for ``aimc.convert.program`` / ``drift``."""
    import copy
    cfg = deploy_config(model) if config is None else as_config(config)
    chip = copy.deepcopy(model)
    for _, layer in analog_layers(chip):
        t = layer.tiles
        layer._init_tiles(t.out_size, t.in_size, cfg, seed, t.name)
        old = getattr(layer, "hwa", None)
        if old is not None:
            state = HWALayer(layer, old.config)
            state.load_state_dict(old.state_dict())
            layer.hwa = state
    return chip


def evaluate_over_time(model: nn.Module, data, config: TileConfig | str | None = None, times=("1s", "1h", "1d", "1y"),
                       repeats: int = 5, *, seed: int = 0, batch_size: int = 1000, calibration=None):
    """``aimc.deploy.evaluate_over_time`` for an HWA-trained analog model (which keeps its learned input ranges
    and output scales): for chip r = 0..repeats-1, ``deploy_copy(model, config, seed + r)``, program, drift
    to each time (eval mode: drift compensation on), test accuracy. Returns ``aimc.deploy.DeployResults``
    (``digital_accuracy``: the same model with a perfect forward, i.e. floating point with its input-range
    clipping and output scales, no analog noise).

    With ``config.calibration`` (e.g. ``CalibrationConfig(inp="learned")``: the learned input ranges, ADC
    ranges from the programmed chip) each chip is calibrated after programming on ``calibration`` (default:
    the training split; see ``aimc.deploy.calibration_set``), and the clipped fractions are reported."""
    from .. import __version__, zoo
    import warnings

    from ..convert import calibrate, clip_fractions, drift, program, reset_clip_counts
    from ..deploy import DeployResults, _xy, calibration_set, parse_times
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    secs, labels = parse_times(times)
    cfg = deploy_config(model) if config is None else as_config(config)
    if cfg.inference is None:
        raise ValueError("config has no inference section (device physics): use hwa.deploy_config(model)")
    x, y = _xy(data)
    x = torch.as_tensor(np.asarray(x, np.float32))
    y = torch.as_tensor(np.asarray(y, np.int64))
    ideal = cfg.replace(forward=cfg.forward.replace(is_perfect=True), inference=None)
    digital = zoo.evaluate(deploy_copy(model, ideal.replace(calibration=None), seed), x, y, batch_size)
    x_cal, notes, cal_info, clip = None, [], None, {}
    if cfg.calibration is not None:
        x_cal, source, warn = calibration_set(data, calibration, cfg.calibration.samples, x)
        if warn:
            warnings.warn(warn, stacklevel=2)
            notes.append(warn)
        x_cal = torch.as_tensor(x_cal)
        cal_info = {"method": cfg.calibration.to_dict(), "samples": int(len(x_cal)), "source": source, "ranges": []}
    acc = [[0.0] * repeats for _ in secs]
    t0 = time.perf_counter()
    for r in range(repeats):
        chip = deploy_copy(model, cfg, seed + r)
        chip.eval()
        program(chip)
        if x_cal is not None:
            cal_info["ranges"].append(calibrate(chip, x_cal))
        for i, t in enumerate(secs):
            drift(chip, t)
            reset_clip_counts(chip)
            acc[i][r] = zoo.evaluate(chip, x, y, batch_size)
            for n, f in clip_fractions(chip).items():
                clip.setdefault(n, [[0.0] * repeats for _ in secs])[i][r] = f
    meta = {"aimc": __version__, "torch": str(torch.__version__), "wall_s": round(time.perf_counter() - t0, 3),
            "hwa_config": _first_hwa_config(model)}
    return DeployResults(times=secs, time_labels=labels, accuracy=acc, digital_accuracy=digital,
                         seeds=[seed + r for r in range(repeats)], config=cfg.to_dict(), n_test=int(len(y)),
                         meta=meta, clip_fraction=clip, calibration=cal_info, warnings=notes)


def _first_hwa_config(model) -> dict | None:
    for _, layer in analog_layers(model):
        if getattr(layer, "hwa", None) is not None:
            return layer.hwa.config.to_dict()
    return None


# ============================================================================================ training loop

def train(model: nn.Module, dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          *, optimizer: str = "adam", scheduler: str = "cosine", verbose: bool = False,
          log=None) -> float:
    """Train a prepared ``model`` in place on ``dataset`` (``aimc.datasets.Dataset``) with cross-entropy,
    ``post_step`` after every step. Deterministic for a given model and ``seed`` (mini-batch order from
    Generator(Philox(seed)); torch RNG seeded inside ``fork_rng``; the tiles' own counter-based streams).

    ``optimizer``: 'adam' or 'sgd' (momentum 0.9); ``scheduler``: 'cosine' (to 0 over all steps) or 'none'.
    Returns the test accuracy (``model.eval()``, the noisy analog forward) after training.
    """
    from .. import zoo
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: adam, sgd")
    x = torch.from_numpy(np.ascontiguousarray(dataset.x_train, np.float32))
    y = torch.from_numpy(np.asarray(dataset.y_train, np.int64))
    n = len(y)
    steps = epochs * (-(-n // batch_size))
    if scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif scheduler == "none":
        sched = None
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: cosine, none")
    handle = hook_optimizer(opt, model)
    loss_fn = nn.CrossEntropyLoss()
    order = np.random.Generator(np.random.Philox(int(seed)))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model.train()
            for epoch in range(epochs):
                t0 = time.perf_counter()
                perm = torch.from_numpy(order.permutation(n))
                total = 0.0
                for i in range(0, n, batch_size):
                    idx = perm[i:i + batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x[idx]), y[idx])
                    loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total += float(loss.detach()) * len(idx)
                msg = f"epoch {epoch + 1}/{epochs}  train loss {total / n:.4f}  ({time.perf_counter() - t0:.1f} s)"
                if log is not None:
                    log(msg)
                elif verbose:
                    print(msg, flush=True)
    finally:
        handle.remove()
    model.eval()
    return zoo.evaluate(model, dataset.x_test, dataset.y_test)


# ============================================================================================ CLI and bench

def run_cli(args) -> int:
    """``aimc train --method hwa``: train a zoo model with the HWA preset and write a checkpoint."""
    from .. import datasets, zoo
    from .cli import method_options
    opts = method_options(args, {"preset": "standard-hwa", "hidden": "256,128", "optimizer": "adam",
                                 "scheduler": "cosine", "batch_size": 64, "fp_epochs": 0})
    ds = datasets.load(args.data)
    lr = 1e-2 if args.lr is None else args.lr  # weights are remapped to max 1: Adam steps are relative to 1
    torch.manual_seed(args.seed)
    if args.arch == "mlp":
        hidden = [int(h) for h in str(opts["hidden"]).split(",") if h]
        net = zoo.mlp(ds.n_features, hidden, ds.n_classes)
    else:
        net = zoo.cnn(tuple(ds.shape), n_classes=ds.n_classes)
    log = (lambda m: print(m, flush=True)) if not args.quiet else None
    if int(opts["fp_epochs"]) > 0:
        zoo.train_digital(net, ds, epochs=int(opts["fp_epochs"]), lr=1e-3, seed=args.seed)
    model = prepare(net, str(opts["preset"]), seed=args.seed)
    t0 = time.perf_counter()
    acc = train(model, ds, epochs=args.epochs, lr=lr, batch_size=int(opts["batch_size"]), seed=args.seed,
                optimizer=str(opts["optimizer"]), scheduler=str(opts["scheduler"]), log=log)
    out = args.out or Path("aimc-results") / f"train-hwa-{args.data}-{args.arch}.pt"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"method": "hwa", "dataset": args.data, "accuracy": acc, "seed": args.seed, "epochs": args.epochs,
            "lr": lr, "preset": str(opts["preset"]), "train_s": round(time.perf_counter() - t0, 1)}
    save_checkpoint(model, out, meta, overwrite=args.overwrite or args.out is None)
    res = {"method": "hwa", "data": args.data, "arch": args.arch, "test_accuracy": acc, "checkpoint": str(out)}
    if args.json:
        import json
        print(json.dumps(res))
    else:
        print(f"hwa  {args.data}/{args.arch}  test accuracy {acc:.4f} (noisy analog forward)  -> {out}")
    return 0


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
    from ..timing import timeit
    from ..nn import AnalogLinear
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
