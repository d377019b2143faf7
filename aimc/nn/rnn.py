"""Recurrent layers with every weight matrix on crossbar tiles: ``AnalogLSTM``, ``AnalogGRU``, ``AnalogRNN``.

Each layer and direction has an input matrix ``weight_ih`` and a hidden matrix ``weight_hh`` (and, for an
LSTM with ``proj_size``, the projection ``weight_hr``), each on its own ``TileArray`` (a
:class:`~aimc.nn.conv.TileSlot` named ``ih_l0``, ``hh_l0``, ``hr_l0``, ``ih_l0_reverse`` ...). Parameters keep
``torch.nn``'s names and shapes, so a ``torch.nn.LSTM`` state dict loads into an ``AnalogLSTM``.

Reads: the input products of a whole sequence are one batched analog read (rows are independent reads,
so this equals T separate reads); the hidden product is one analog read per time step. A forward that
builds no autograd graph (eval under ``torch.no_grad``, float32 CPU tensors, no HWA hook) runs the time
steps on numpy arrays (``_steps_inference``): the same reads and the same numbers, without an autograd node
and torch ops over the full gate width per step, its working arrays kept between forwards (``ScratchPool``).
Biases and the gate non-linearities are digital; an LSTM's cell on CPU float32 tensors is one vectorised
kernel (``_function.LSTMCell`` with autograd, ``lstm_cell_numpy`` without: the same numbers). With the
ideal preset the layers equal ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` within float32 rounding.
``PackedSequence`` inputs are not supported (pad instead).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import as_config
from ..core.periphery import ScratchPool
from ..threads import kernel_threads
from ._function import LSTMCell, as_numpy, fast_lstm_cell, lstm_cell_numpy
from .conv import AnalogContainer, TileSlot


def _copy_params(src: nn.Module, dst: nn.Module) -> None:
    """Copy the directly owned parameters (torch.nn names) from ``src`` to ``dst``."""
    sp = dict(src.named_parameters(recurse=False))
    dp = dict(dst.named_parameters(recurse=False))
    if set(sp) != set(dp):
        raise ValueError(f"parameter names differ: {sorted(set(sp) ^ set(dp))}")
    with torch.no_grad():
        for k, p in dp.items():
            p.copy_(sp[k])


class _AnalogRNNBase(AnalogContainer):
    _mode = "LSTM"
    _gates = 4
    _torch_cls = nn.LSTM
    _sum_gates = True   # the cell needs only xi + hh (LSTM, RNN), not the two parts (GRU)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, nonlinearity: str = "tanh", config=None, seed: int = 0, name: str = "rnn"):
        super().__init__()
        cls = type(self).__name__
        for what, v, lo in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                            ("num_layers", num_layers, 1), ("proj_size", proj_size, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{cls}: {what} must be an integer >= {lo}, got {v!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{cls}: dropout must be in [0, 1], got {dropout!r}")
        if proj_size and self._mode != "LSTM":
            raise ValueError(f"{cls}: proj_size is only supported by LSTM")
        if proj_size >= hidden_size and proj_size:
            raise ValueError(f"{cls}: proj_size ({proj_size}) must be smaller than hidden_size ({hidden_size})")
        if self._mode.startswith("RNN") and nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"{cls}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size, self.nonlinearity = bool(bidirectional), proj_size, nonlinearity
        self.config = as_config(config)
        ndir = 2 if bidirectional else 1
        h_out = proj_size or hidden_size
        gh = self._gates * hidden_size
        slots = {}
        for k in range(num_layers):
            in_k = input_size if k == 0 else h_out * ndir
            for d in range(ndir):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(gh, in_k)))
                self.register_parameter("weight_hh" + sfx, nn.Parameter(torch.empty(gh, h_out)))
                if bias:
                    self.register_parameter("bias_ih" + sfx, nn.Parameter(torch.empty(gh)))
                    self.register_parameter("bias_hh" + sfx, nn.Parameter(torch.empty(gh)))
                slots["ih" + sfx] = TileSlot(self, "weight_ih" + sfx, None, gh, in_k, self.config, seed,
                                             f"{name}/ih{sfx}")
                slots["hh" + sfx] = TileSlot(self, "weight_hh" + sfx, None, gh, h_out, self.config, seed,
                                             f"{name}/hh{sfx}")
                if proj_size:
                    self.register_parameter("weight_hr" + sfx, nn.Parameter(torch.empty(proj_size, hidden_size)))
                    slots["hr" + sfx] = TileSlot(self, "weight_hr" + sfx, None, proj_size, hidden_size,
                                                 self.config, seed, f"{name}/hr{sfx}")
        self.slots = nn.ModuleDict(slots)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
        std = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -std, std)

    # -- conversion -----------------------------------------------------------------------------------
    def _kwargs(self) -> dict:
        kw = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                  dropout=self.dropout, bidirectional=self.bidirectional)
        if self._mode == "LSTM":
            kw["proj_size"] = self.proj_size
        if self._mode.startswith("RNN"):
            kw["nonlinearity"] = self.nonlinearity
        return kw

    @classmethod
    def from_torch(cls, layer: nn.Module, config=None, seed: int = 0, name: str = "rnn"):
        """The analog twin of a ``torch.nn.{LSTM,GRU,RNN}`` (all weights and biases copied)."""
        if not isinstance(layer, cls._torch_cls):
            raise TypeError(f"{cls.__name__}.from_torch needs a {cls._torch_cls.__name__}, got {type(layer).__name__}")
        kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                  dropout=layer.dropout, bidirectional=layer.bidirectional)
        if cls._mode == "LSTM":
            kw["proj_size"] = layer.proj_size
        if cls._mode.startswith("RNN"):
            kw["nonlinearity"] = layer.nonlinearity
        new = cls(layer.input_size, layer.hidden_size, config=config, seed=seed, name=name, **kw)
        _copy_params(layer, new)
        return new

    def to_torch(self) -> nn.Module:
        """The digital twin with the floating-point weights."""
        layer = self._torch_cls(self.input_size, self.hidden_size, **self._kwargs())
        _copy_params(self, layer)
        return layer

    # -- forward ----------------------------------------------------------------------------------------
    def _cell(self, xi_t, h, c, sfx):
        raise NotImplementedError

    def forward(self, input: torch.Tensor, hx=None):
        cls = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"{cls}: PackedSequence input is not supported; pass a padded tensor")
        if input.dim() not in (2, 3):
            raise ValueError(f"{cls}: expected a 2-D (unbatched) or 3-D input, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{cls}: input has {input.shape[-1]} features, expected {self.input_size}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        T, B = x.shape[0], x.shape[1]
        ndir = 2 if self.bidirectional else 1
        h_out = self.proj_size or self.hidden_size
        h0, c0 = self._initial_state(hx, unbatched, B, ndir, h_out, x)
        fast = self._inference_reads(x, h0, c0)
        layer_in = x
        hn, cn = [], []
        for k in range(self.num_layers):
            outs = []
            for d in range(ndir):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                xi = self._ih(layer_in.reshape(T * B, -1), sfx, fast).reshape(T, B, -1)
                idx = k * ndir + d
                h = h0[idx]
                c = c0[idx] if c0 is not None else None
                seq = [None] * T
                steps = range(T) if d == 0 else range(T - 1, -1, -1)
                if fast is not None:
                    h, c = self._steps_inference(xi, h, c, sfx, steps, seq, fast)
                else:
                    for t in steps:
                        h, c = self._cell(xi[t], self._hh(h, sfx), h, c, sfx)
                        if self.proj_size:
                            h = self.slots["hr" + sfx].analog_matmul(h)
                        seq[t] = h
                outs.append(torch.stack(seq) if T else xi.new_zeros(0, B, h_out))
                hn.append(h)
                if c is not None:
                    cn.append(c)
            layer_in = outs[0] if ndir == 1 else torch.cat(outs, dim=2)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out = layer_in
        h_n = torch.stack(hn)
        c_n = torch.stack(cn) if cn else None
        if unbatched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, ((h_n, c_n) if self._mode == "LSTM" else h_n)

    def _initial_state(self, hx, unbatched, B, ndir, h_out, x):
        cls = type(self).__name__
        n = self.num_layers * ndir
        shape_h = (n, h_out) if unbatched else (n, B, h_out)
        shape_c = (n, self.hidden_size) if unbatched else (n, B, self.hidden_size)
        if hx is None:
            h0 = x.new_zeros(n, B, h_out)
            c0 = x.new_zeros(n, B, self.hidden_size) if self._mode == "LSTM" else None
            return h0, c0
        if self._mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError(f"{cls}: hx must be a tuple (h_0, c_0)")
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        if tuple(h0.shape) != shape_h:
            raise ValueError(f"{cls}: h_0 has shape {tuple(h0.shape)}, expected {shape_h}")
        if c0 is not None and tuple(c0.shape) != shape_c:
            raise ValueError(f"{cls}: c_0 has shape {tuple(c0.shape)}, expected {shape_c}")
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        return h0, c0

    def _ih(self, x2d, sfx, fast):
        """The input read of all time steps, (T*B, gates) plus the input bias: through ``analog_matmul``, or in
        inference (``fast``) by the tiles on numpy with the bias added in the read's output-stage sweep
        (``TileArray._forward_add``; float32 y + b, torch's xi + b bit for bit), into the layer's kept arrays
        (``_scratch_pool``; one set for all layers and directions: each one's time steps consume its ``xi``
        before the next input read overwrites it)."""
        tiles = fast.get("ih" + sfx) if fast is not None else None
        if tiles is None:
            y = self.slots["ih" + sfx].analog_matmul(x2d)
            return y + getattr(self, "bias_ih" + sfx) if self.bias else y
        b = as_numpy(getattr(self, "bias_ih" + sfx)) if self.bias else None
        y = tiles._forward_add(np.ascontiguousarray(as_numpy(x2d)), b, None, self._scratch_pool().get("ih"))
        return torch.from_numpy(y)

    def _scratch_pool(self) -> ScratchPool:
        """The inference reads' working arrays, kept between forwards (``ScratchPool``): the input read's result
        ``xi`` lives in them until the layer's time steps have consumed it."""
        pool = self.__dict__.get("_pool")
        if pool is None:
            pool = self.__dict__["_pool"] = ScratchPool()
        return pool

    def _hh(self, h, sfx):
        g = self.slots["hh" + sfx].analog_matmul(h)
        return g + getattr(self, "bias_hh" + sfx) if self.bias else g

    def _inference_reads(self, x, h0, c0) -> dict | None:
        """{slot name: prepared TileArray} of the hidden (and projection) reads when this forward builds no
        autograd graph (float32 on the CPU, no HWA hook), else None. The time steps then call the tiles on
        numpy arrays (``_steps_inference``): no autograd node and no torch op of the gate width per step."""
        states = [x, h0] + ([c0] if c0 is not None else [])
        if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in states):
            return None
        if torch.is_grad_enabled() and (any(t.requires_grad for t in states)
                                        or any(p.requires_grad for p in self.parameters())):
            return None
        tiles = {}
        for name, slot in self.slots.items():
            t = slot._inference_tiles()
            if t is None:
                return None
            tiles[name] = t
        return tiles

    def _steps_inference(self, xi, h, c, sfx, steps, seq, tiles):
        """The time steps of one layer and direction without autograd; fills ``seq``, returns the last (h, c).

        Same numbers as the ``analog_matmul`` loop: the same tile reads on the same arrays, the hidden bias
        and (LSTM, RNN) the input part added in numpy in place (float32 additions: hh + b + xi equals
        torch's xi + (hh + b) bit for bit), the cell by ``_cell_inference`` (``_cell``'s numbers)."""
        hh_tiles, hr_tiles = tiles["hh" + sfx], tiles.get("hr" + sfx)
        b = as_numpy(getattr(self, "bias_hh" + sfx)) if self.bias else None
        xin = as_numpy(xi) if self._sum_gates else None
        hn = as_numpy(h)
        with kernel_threads(hh_tiles.read_work(hn.shape[0])):  # one thread policy for the whole loop
            return self._step_loop(xi, h, c, sfx, steps, seq, hh_tiles, hr_tiles, b, xin, hn)

    def _step_loop(self, xi, h, c, sfx, steps, seq, hh_tiles, hr_tiles, b, xin, hn):
        scratch = self._scratch_pool().get("hh")   # the hidden read's arrays, reused (g is consumed by the cell)
        for t in steps:
            g = hh_tiles._forward_add(hn, b, xin[t] if xin is not None else None, scratch)   # (B, gates)
            h, c = self._cell_inference(None if xin is not None else xi[t], g, h, c, sfx)
            if hr_tiles is not None:
                h = torch.from_numpy(hr_tiles._forward(as_numpy(h)))
            seq[t] = h
            hn = as_numpy(h)
        return h, c

    def _cell_inference(self, xi_t, g: np.ndarray, h, c, sfx):
        """``_cell`` in the no-autograd loop, ``g`` the hidden read (numpy, with the input part when ``xi_t`` is
        None): the same numbers as ``_cell``."""
        return self._cell(xi_t, torch.from_numpy(g), h, c, sfx)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for k, v in self._kwargs().items():
            s += f", {k}={v}"
        return s + f", config={self.config}"


class AnalogLSTM(_AnalogRNNBase):
    """``torch.nn.LSTM`` (gates i, f, g, o; optional ``proj_size``) with all matrices on tiles."""

    _mode, _gates, _torch_cls, _sum_gates = "LSTM", 4, nn.LSTM, True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, config=None, seed: int = 0, name: str = "lstm"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, "tanh", config, seed, name)

    def _cell(self, xi_t, hh, h, c, sfx):
        gates = hh if xi_t is None else xi_t + hh
        if fast_lstm_cell(gates, c):   # CPU float32: one kernel (``LSTMCell``), the inference loop's numbers
            return LSTMCell.apply(gates, c)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def _cell_inference(self, xi_t, g, h, c, sfx):   # _sum_gates: g holds the input part (xi_t is None)
        h, c = lstm_cell_numpy(g, as_numpy(c))
        return torch.from_numpy(h), torch.from_numpy(c)


class AnalogGRU(_AnalogRNNBase):
    """``torch.nn.GRU`` (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))) with matrices on tiles."""

    _mode, _gates, _torch_cls, _sum_gates = "GRU", 3, nn.GRU, False

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 config=None, seed: int = 0, name: str = "gru"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, "tanh", config, seed, name)

    def _cell(self, xi_t, hh, h, c, sfx):
        i_r, i_z, i_n = xi_t.chunk(3, dim=1)
        h_r, h_z, h_n = hh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None


class AnalogRNN(_AnalogRNNBase):
    """``torch.nn.RNN`` (Elman, tanh or relu) with matrices on tiles."""

    _mode, _gates, _torch_cls, _sum_gates = "RNN", 1, nn.RNN, True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, config=None, seed: int = 0, name: str = "rnn"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, nonlinearity, config, seed, name)

    def _cell(self, xi_t, hh, h, c, sfx):
        a = hh if xi_t is None else xi_t + hh
        return (torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)), None
