"""The autograd bridge between torch and a TileArray: forward = analog read, backward = transposed read.

CPU float32 contiguous tensors are handed to the core as numpy views (no copies); results come back with
``torch.from_numpy``. The weight gradient is the exact digital outer product (hardware-aware training
updates the floating-point weights); on-chip training replaces the optimizer step, not this gradient.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.threads import kernel_threads
from ..kernels import cells


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


_NO_ACT = np.empty((1, 0), np.float32)


def lstm_cell_numpy(gates: np.ndarray, c: np.ndarray, act: np.ndarray | None = None):
    """(h, c') of one LSTM step from float32 C-contiguous gate pre-activations (B, 4H) and cell state (B, H),
    by one vectorised kernel (``kernels.cells.lstm_cell``, on the calling thread when small: ``kernel_threads``);
    ``act`` (B, 5H) receives what the backward needs."""
    h, cn = np.empty_like(c), np.empty_like(c)
    with kernel_threads(gates.size):
        cells.lstm_cell(gates, c, h, cn, _NO_ACT if act is None else act)
    return h, cn


def fast_lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether ``LSTMCell`` computes this step: CPU float32 gates (B, 4H) and cell state (B, H) (other dtypes
    and devices take torch's ops)."""
    return (gates.dtype == torch.float32 and c.dtype == torch.float32 and gates.device.type == "cpu"
            and c.device.type == "cpu" and gates.dim() == 2 and c.shape[0] == gates.shape[0]
            and gates.shape[1] == 4 * c.shape[1])


class LSTMCell(torch.autograd.Function):
    """(h, c') = one LSTM step from gate pre-activations (B, 4H) and cell state (B, H), forward by
    ``lstm_cell_numpy`` (the numbers of an analog LSTM's no-autograd time steps, bit for bit), backward by the
    LSTM's derivatives from the saved activations (once differentiable)."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, c: torch.Tensor):
        g, cn = as_numpy(gates), as_numpy(c)
        act = np.empty((g.shape[0], 5 * cn.shape[1]), np.float32)
        h, c2 = lstm_cell_numpy(g, cn, act)
        ctx.save_for_backward(torch.from_numpy(act), c)
        return torch.from_numpy(h), torch.from_numpy(c2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dc):
        act, c = ctx.saved_tensors
        i, f, g, o, tc = act.chunk(5, dim=1)
        dh = torch.zeros_like(tc) if dh is None else dh
        dct = dh * o * (1 - tc * tc)
        if dc is not None:
            dct = dct + dc
        do = dh * tc
        dgates = torch.cat([dct * g * i * (1 - i), dct * c * f * (1 - f), dct * i * (1 - g * g),
                            do * o * (1 - o)], dim=1)
        return dgates, dct * f
