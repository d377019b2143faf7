"""The autograd bridge between torch and a TileArray: forward = analog read, backward = transposed read.

CPU float32 contiguous tensors are handed to the core as numpy views (no copies); results come back with
``torch.from_numpy``. The weight gradient is the exact digital outer product (hardware-aware training
updates the floating-point weights); on-chip training replaces the optimizer step, not this gradient.
"""
from __future__ import annotations

import numpy as np
import torch


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous numpy view of a CPU tensor (a copy only if dtype/layout/device demand it)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype != torch.float32:
        t = t.float()
    return t.contiguous().numpy()


class AnalogMatmul(torch.autograd.Function):
    """y = tiles.forward(x) for x (batch, in); grads: x by the (ideal or analog) transposed read, W exact."""

    @staticmethod
    def forward(ctx, x2d: torch.Tensor, weight: torch.Tensor, tiles, backward_ideal: bool):
        y = torch.from_numpy(tiles._forward(as_numpy(x2d)))
        ctx.save_for_backward(x2d, weight)
        ctx.tiles = tiles
        ctx.backward_ideal = backward_ideal
        return y.to(x2d.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x2d, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            if ctx.backward_ideal:
                grad_x = grad_y @ weight.to(grad_y.dtype)
            else:
                grad_x = torch.from_numpy(ctx.tiles._backward(as_numpy(grad_y))).to(grad_y.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.t() @ x2d
        return grad_x, grad_w, None, None
