"""The HWA layer state and its product: straight-through modifiers, learned input ranges, output scales,
clipping and remapping after each step; ``prepare`` / ``post_step`` / ``hook_optimizer``."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.config import (BoundManagement, ConfigError, NoiseManagement, TileConfig, as_config)
from ...nn._function import as_numpy
from ...nn.base import AnalogModule
from ...core.rng import Stream
from ._grad import hwa_backward
from .config import ClipType, HWAConfig, PRESETS, RemapType, WeightClip, WeightRemap, preset
from .modifiers import modify_weights


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
        ctx.r_out = r_out
        ctx.save_for_backward(x2d, weight, r, s, saved)
        ctx.layer, ctx.state = layer, state
        return out

    @staticmethod
    def backward(ctx, grad_y):
        tiles = ctx.layer.tiles
        return (*hwa_backward(ctx, grad_y, lambda d: torch.from_numpy(tiles._backward(as_numpy(d)))), None, None)


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
            if not f.is_perfect and (f.noise_management not in (NoiseManagement.NONE, NoiseManagement.CONSTANT)
                                     or f.bound_management != BoundManagement.NONE):
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
            from .torch_backend import hwa_matmul
            return hwa_matmul(self, layer, x2d, _StraightThrough)
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
    from ...deployment.convert import convert_to_analog
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
