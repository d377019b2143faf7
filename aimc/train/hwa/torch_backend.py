"""HWA on the torch backend (``aimc.nn.torch_backend``): ``HWALayer.matmul`` dispatches here when the layer
reads by torch (``AnalogModule.backend``; 'auto' on a non-CPU device). Same forward and gradients as
``layer._HWAMatmul``; weight modifiers drawn in torch with the formulas of ``modifiers.modify_weights``
(PCM_NOISE runs the numpy device model there and is copied to the device). Randomness: a torch generator per
layer seeded from (tile seed, layer name), see ``aimc.nn.torch_backend``.
"""
from __future__ import annotations

import numpy as np
import torch

from ...core.rng import Stream
from ...nn.torch_backend import TorchTiles, _calibration_pass, _f, _f32, generator_for, torch_tiles
from ._grad import hwa_backward
from .config import ModifierType
from .modifiers import _amax, _default_coeffs
from .modifiers import modify_weights as _numpy_modify


def modify_weights(W: torch.Tensor, mod, gen: torch.Generator, numpy_stream: Stream) -> torch.Tensor:
    """One sample of the modified weights (``aimc.train.hwa.modify_weights`` in torch; same formulas).
    PCM_NOISE runs the numpy path (device programming of ``aimc.inference``) with ``numpy_stream``."""
    t = mod.type
    if t == ModifierType.PCM_NOISE:
        out = _numpy_modify(W.detach().cpu().numpy(), mod, numpy_stream)
        return torch.from_numpy(out).to(W.device)
    W = W.detach().to(torch.float32)
    amax = float(W.abs().max()) if mod.rel_to_actual_wmax and W.numel() else 0.0
    amax = amax if amax > 0 else (1.0 if mod.rel_to_actual_wmax else _amax(np.zeros(0, np.float32), mod))
    std = _f32(mod.std_dev * amax)

    def normal():
        return torch.randn(W.shape, generator=gen, dtype=torch.float32, device=W.device)

    def poly(c, a):
        out = torch.full_like(a, _f32(c[-1]))
        for ci in c[-2::-1]:
            out = out * a + _f32(ci)
        return out
    if t in (ModifierType.NONE, ModifierType.DROP_CONNECT):
        out = W.clone()
    elif t == ModifierType.ADD_NORMAL:
        out = W + std * normal()
    elif t == ModifierType.MULT_NORMAL:
        out = W * (1.0 + std * normal())
    elif t == ModifierType.POLY:
        out = W + std * poly(_default_coeffs(mod, relative=True), W.abs() * _f32(1.0 / amax)) * normal()
    elif t == ModifierType.PROG_NOISE:
        sig = poly(_default_coeffs(mod, relative=False), W.abs() * _f32(1.0 / amax)) * \
            _f32(amax * mod.std_dev / mod.g_max)
        out = (W + sig * normal()).abs()
        out = torch.where(W < 0, -out, out)
    elif t in (ModifierType.DISCRETIZE, ModifierType.DISCRETIZE_ADD_NORMAL):
        r = mod.res if mod.res <= 1 else 1.0 / mod.res
        step = _f32(amax * r)
        v = W * _f32(1.0 / step)
        if mod.sto_round:
            v = v + torch.rand(W.shape, generator=gen, dtype=torch.float32, device=W.device) - 0.5
        out = torch.round(v) * step
        if t == ModifierType.DISCRETIZE_ADD_NORMAL:
            out = out + std * normal()
    else:  # pragma: no cover - enum is closed
        raise ValueError(f"unknown modifier type {t!r}")
    if mod.pdrop > 0:
        keep = torch.rand(W.shape, generator=gen, dtype=torch.float32, device=W.device) >= _f32(mod.pdrop)
        out = out * keep
    return out


class TorchHWAMatmul(torch.autograd.Function):
    """``aimc.train.hwa._HWAMatmul`` on the torch backend (same forward and gradients; see there)."""

    @staticmethod
    def forward(ctx, x2d, weight, r, s, layer, state, tt: TorchTiles):
        x = _f(x2d)
        r_out = None
        if r is None:
            y = tt.forward(x)
        else:
            rd = r.detach()

            def scaled(xs, rk):
                xs = xs * (1.0 / rk)
                return xs if state._dac_clips else xs.clamp(-1.0, 1.0)
            if rd.shape[0] == 1:
                y = tt.forward(scaled(x, rd[0]))
                r_out = rd[0]
            else:
                y = torch.zeros(x.shape[0], layer.tiles.out_size, dtype=torch.float32, device=x.device)
                for rs, cs, ts in tt.blocks:
                    k = state._split_of[cs.start]
                    y[:, rs] += rd[k] * ts.forward(scaled(x[:, cs], rd[k]))
        if s is None:
            out, saved = (y if r_out is None else y * r_out), None
        else:
            f = s.detach() if r_out is None else s.detach() * r_out
            out, saved = y * f, y
        ctx.r_out = r_out
        ctx.save_for_backward(x2d, weight, r, s, saved)
        ctx.layer, ctx.state, ctx.tt = layer, state, tt
        return out.to(x2d.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        return (*hwa_backward(ctx, grad_y, lambda d: ctx.tt.backward(_f(d))), None, None, None)


def hwa_matmul(state, layer, x2d: torch.Tensor, straight_through) -> torch.Tensor:
    """``HWALayer.matmul`` on the torch backend: modifiers drawn with the layer's torch generator, the tiles'
    mirrors written from torch tensors, the product on the layer's device. ``straight_through``: the
    layer module's ``_StraightThrough`` (passed in: this module does not import ``layer``, which imports it)."""
    tt = torch_tiles(layer)
    y = _calibration_pass(layer, x2d)
    if y is not None:
        return y
    W = layer.analog_weight()
    mod = state.config.modifier
    if layer.programmed:
        tt.sync()
        w_eff = W
    elif mod.active and (state.training or mod.enable_during_test):
        key = ("modifier", layer.weight._version, layer.weight.data_ptr(), state._resample)
        sample = state.__dict__.get("_torch_sample")
        if sample is None or sample[0] != key or sample[1].device != W.device:
            gen = state.__dict__.get("_torch_gen")
            if gen is None or gen.device != W.device:
                gen = generator_for(layer.tiles.seed, f"{layer.tiles.name}/hwa-modifier/torch", W.device)
                state.__dict__["_torch_gen"] = gen
            sample = (key, modify_weights(W, mod, gen, state._stream))
            state.__dict__["_torch_sample"] = sample
        tt.set_weights(sample[1], key)
        w_eff = straight_through.apply(W, sample[1])
    else:
        tt.set_weights(W, (layer.weight._version, layer.weight.data_ptr(), "w"))
        w_eff = W
    r = state.input_range
    if r is not None and state.training and int(state.ir_batches) < state.config.input_range.init_from_data:
        state._init_range_from(x2d.detach())
    return TorchHWAMatmul.apply(x2d, w_eff, r, state.out_scale, layer, state, tt)
