"""``AnalogConv1d`` / ``AnalogConv2d``: convolutions as im2col + one analog matrix product.

The kernel of ``out_channels x (in_channels/groups) x k...`` becomes an ``out x (in/groups * prod(k))``
crossbar matrix; every output position is one analog read of the unfolded input patch (rows of the
(batch * positions, in * prod(k)) patch matrix are independent reads, so NM/BM/noise are per position).
The bias is digital.

**Groups** (``groups > 1``, depthwise included): one ``TileArray`` per group, each holding its
``(out/groups) x (in/groups * prod(k))`` block (a :class:`TileSlot` child named ``g0, g1, ...``).
The off-diagonal blocks of the block-diagonal matrix are *not* placed on any crossbar: programmed zeros
still carry programming and read noise (PCM: sigma_prog(0) ~ 1 % of g_max per device), which a dense
block-diagonal layout would sum into every output. The price is one small tile per group (a depthwise
3x3 layer with C channels is C tiles of 1 x 9), i.e. a Python loop over groups in the forward.

With the ideal preset the layers equal ``torch.nn.Conv1d`` / ``Conv2d`` within float32 rounding (all
padding modes, ``padding='same'``/``'valid'``, stride, dilation, groups).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import TileConfig
from ..core.periphery import patch_geometry
from .base import AnalogModule


# ------------------------------------------------------------------------------------------------------
# one weight matrix of a multi-matrix layer on its own tiles

class TileSlot(AnalogModule):
    """A tile array holding a row block of a parameter that lives on its ``owner`` layer.

    Multi-matrix layers (grouped convolutions, LSTM/GRU, multi-head attention) keep their parameters with
    torch's names on the layer itself (so ``state_dict`` keys match ``torch.nn``); each matrix they read
    in analog is a ``TileSlot`` child: ``weight`` is the owner's parameter, ``analog_weight()`` the
    ``rows`` block of it reshaped to ``(out_size, in_size)``. Programming, drift and the analog state in
    ``state_dict`` are per slot; hardware-aware-training hooks act on the slot's ``analog_matmul``.
    """

    def __init__(self, owner: nn.Module, param: str, rows: tuple[int, int] | None, out_size: int,
                 in_size: int, config=None, seed: int = 0, name: str = "slot"):
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # a plain reference, not a registered child (no cycle)
        self._param = str(param)
        self._rows = None if rows is None else (int(rows[0]), int(rows[1]))
        self._init_tiles(out_size, in_size, config, seed, name)

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self._owner, self._param)

    def analog_weight(self) -> torch.Tensor:
        w = self.weight
        if self._rows is not None:
            w = w[self._rows[0]:self._rows[1]]
        return w.reshape(self.tiles.out_size, self.tiles.in_size)

    def extra_repr(self) -> str:
        rows = "" if self._rows is None else f"[{self._rows[0]}:{self._rows[1]}]"
        return f"{self._param}{rows}, shape={self.tiles.shape}, tiles={self.tiles.grid}"


class AnalogContainer(AnalogModule):
    """An analog layer whose matrices live on :class:`TileSlot` children (and/or analog sub-layers).

    ``program``/``unprogram``/``drift`` act on every analog descendant; the container holds no tiles
    and adds nothing of its own to ``state_dict`` (the slots carry the analog state).
    """

    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state

    def _analog_children(self):
        return [m for m in self.modules() if m is not self and isinstance(m, AnalogModule)
                and not isinstance(m, AnalogContainer)]

    @property
    def programmed(self) -> bool:
        kids = self._analog_children()
        return bool(kids) and all(m.programmed for m in kids)

    def program(self) -> None:
        for m in self._analog_children():
            m.program()

    def unprogram(self) -> None:
        for m in self._analog_children():
            m.unprogram()

    def drift(self, t: float) -> None:
        for m in self._analog_children():
            m.drift(t)


# ------------------------------------------------------------------------------------------------------
# convolutions

def _tuple(v, n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{what} must have {n} entries, got {v!r}")
        out = tuple(v)
    else:
        out = (v,) * n
    for e in out:
        if isinstance(e, bool) or not isinstance(e, int):
            raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {v!r}")
    return tuple(int(e) for e in out)


class _AnalogConvNd(AnalogModule):
    _nd = 2
    _torch_cls = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 config: TileConfig | str | None = None, seed: int = 0, name: str = "conv"):
        super().__init__()
        nd = self._nd
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {what} must be a positive integer, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, nd, "kernel_size")
        self.stride = _tuple(stride, nd, "stride")
        self.dilation = _tuple(dilation, nd, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size, stride and dilation must be >= 1")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{type(self).__name__}: padding must be 'same', 'valid', an int or a tuple, "
                                 f"got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{type(self).__name__}: padding='same' needs stride 1 (as torch.nn)")
            self.padding = padding
        else:
            self.padding = _tuple(padding, nd, "padding")
            if min(self.padding) < 0:
                raise ValueError(f"{type(self).__name__}: padding must be >= 0, got {padding!r}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{type(self).__name__}: padding_mode must be 'zeros', 'reflect', 'replicate' or "
                             f"'circular', got {padding_mode!r}")
        self.padding_mode = padding_mode
        cg, og = in_channels // groups, out_channels // groups
        self.weight = nn.Parameter(torch.empty(out_channels, cg, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        k_in = cg * math.prod(self.kernel_size)
        if groups == 1:
            self._init_tiles(out_channels, k_in, config, seed, name)
            self.group_tiles = None
        else:
            # the layer keeps its config (and programmed flag) for repr/convert; the tiles are per group
            from ..core.config import as_config
            self.config = as_config(config)
            self.group_tiles = nn.ModuleList(
                TileSlot(self, "weight", (g * og, (g + 1) * og), og, k_in, self.config, seed, f"{name}/g{g}")
                for g in range(groups))
        self.reset_parameters()

    # -- torch.nn compatible construction ------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The initialisation of torch.nn.ConvNd."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_torch(cls, layer: nn.Module, config=None, seed: int = 0, name: str = "conv"):
        """The analog twin of a ``torch.nn.Conv{1,2}d`` (weights and bias copied)."""
        if not isinstance(layer, cls._torch_cls):
            raise TypeError(f"{cls.__name__}.from_torch needs a {cls._torch_cls.__name__}, got {type(layer).__name__}")
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                  layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, config, seed, name)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def to_torch(self) -> nn.Module:
        """The digital twin (a ``torch.nn.Conv{1,2}d`` with the floating-point weights)."""
        layer = self._torch_cls(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                self.padding, self.dilation, self.groups, self.bias is not None,
                                self.padding_mode)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    # -- lifecycle for grouped layers (groups == 1 uses AnalogModule's) -------------------------------
    @property
    def programmed(self) -> bool:
        if getattr(self, "group_tiles", None) is not None:
            return all(s.programmed for s in self.group_tiles)
        return self.__dict__.get("_programmed", False)

    @programmed.setter
    def programmed(self, value: bool) -> None:
        self.__dict__["_programmed"] = bool(value)

    @property
    def _slots(self):
        return list(self.group_tiles) if self.group_tiles is not None else []

    def program(self) -> None:
        if self.group_tiles is None:
            return super().program()
        for s in self._slots:
            s.program()

    def unprogram(self) -> None:
        if self.group_tiles is None:
            return super().unprogram()
        for s in self._slots:
            s.unprogram()

    def drift(self, t: float) -> None:
        if self.group_tiles is None:
            return super().drift(t)
        for s in self._slots:
            s.drift(t)

    # -- forward ----------------------------------------------------------------------------------------
    def _pads(self) -> tuple[list[int], tuple[int, int]]:
        """(F.pad list, last dim first) applied before unfold, and the (h, w) padding unfold itself adds."""
        nd = self._nd
        k = self.kernel_size
        if self.padding == "valid":
            per_dim = [(0, 0)] * nd
        elif self.padding == "same":
            per_dim = []
            for d in range(nd):
                total = self.dilation[d] * (k[d] - 1)
                per_dim.append((total // 2, total - total // 2))
        else:
            per_dim = [(p, p) for p in self.padding]
        symmetric = all(a == b for a, b in per_dim)
        if self.padding_mode == "zeros" and symmetric:
            return [], tuple(a for a, _ in per_dim)
        flat = []
        for a, b in reversed(per_dim):
            flat += [a, b]
        return flat, (0,) * nd

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Explicit padding (non-zero modes, asymmetric 'same') on the N-D input; the rest is unfold's."""
        pad_list, unfold_pad = self._pads()
        if pad_list:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, pad_list, mode=mode)
        return x, unfold_pad

    def _forward_nd(self, x: torch.Tensor, unfold_pad: tuple[int, int]) -> torch.Tensor:
        """x (N, C, H, W), already padded beyond ``unfold_pad`` -> (N, out, oh, ow) via im2col + tiles."""
        n = x.shape[0]
        k, d, s = self._as2d(self.kernel_size, 1), self._as2d(self.dilation, 1), self._as2d(self.stride, 1)
        h, w = x.shape[-2] + 2 * unfold_pad[0], x.shape[-1] + 2 * unfold_pad[1]
        oh = (h - d[0] * (k[0] - 1) - 1) // s[0] + 1
        ow = (w - d[1] * (k[1] - 1) - 1) // s[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{type(self).__name__}: input of spatial size {tuple(x.shape[2:])} is smaller than "
                             f"the (dilated) kernel {self.kernel_size}")
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            readers = [self] if self.group_tiles is None else list(self.group_tiles)
            tiles = [m._fused_tiles() for m in readers]
            if all(t is not None for t in tiles):
                y = self._forward_fused(x, unfold_pad, tiles, oh, ow, k, d, s)
                return self._finish(y, n, oh, ow)
        if unfold_pad[0] or unfold_pad[1]:
            x = F.pad(x, (unfold_pad[1], unfold_pad[1], unfold_pad[0], unfold_pad[0]))
        x = x.contiguous()
        # im2col as a strided view (N, oh, ow, C, kh, kw) and one copy into the (N*oh*ow, C*kh*kw) patch
        # matrix the tiles read (F.unfold plus a transpose is several times slower on CPU); autograd keeps it
        sn, sc, sh, sw = x.stride()
        c = x.shape[1]
        patches = x.as_strided((n, oh, ow, c, k[0], k[1]), (sn, sh * s[0], sw * s[1], sc, sh * d[0], sw * d[1]))
        rows = n * oh * ow
        if self.group_tiles is None:
            y = self.analog_matmul(patches.reshape(rows, -1))
        else:
            cg = c // self.groups
            y = torch.cat([slot.analog_matmul(patches[:, :, :, g * cg:(g + 1) * cg].reshape(rows, -1))
                           for g, slot in enumerate(self.group_tiles)], dim=1)
        return self._finish(y, n, oh, ow)

    def _forward_fused(self, x, pad, tiles, oh, ow, k, d, s) -> torch.Tensor:
        """Inference without a patch matrix: every group's tiles gather their patches from the input chunk by
        chunk (``TileArray.forward_patches``; working memory bounded by ``aimc.tile.PATCH_CHUNK``), reading the
        zero padding ``pad`` (rows, columns) as zeros instead of padding the input. The input is read through
        its strides, in NCHW or channels-last layout (the layout of this layer's own output and of torch's
        element-wise ops on it), so no copy into NCHW precedes the gather."""
        n, c, h, w = x.shape
        cg = c // self.groups
        x = x.detach()
        if x.dtype != torch.float32 or x.device.type != "cpu":
            x = x.to("cpu", torch.float32)
        if x.is_contiguous():
            xflat = x.numpy().reshape(-1)
        elif x.is_contiguous(memory_format=torch.channels_last):  # what a conv's output and torch's ops on it
            xflat = x.permute(0, 2, 3, 1).numpy().reshape(-1)     # are: read in place through its strides
        else:
            x = x.contiguous()
            xflat = x.numpy().reshape(-1)
        sn, sc, sh, sw = x.stride()
        ci, ki, kj = np.meshgrid(np.arange(cg), np.arange(k[0]), np.arange(k[1]), indexing="ij")
        ky, kx = (ki * d[0]).reshape(-1), (kj * d[1]).reshape(-1)
        off = ci.reshape(-1) * sc + ky * sh + kx * sw
        geo = patch_geometry(sn, oh, ow, h, w, s, pad, sh, sw)
        rows = n * oh * ow
        outs = []
        for g, t in enumerate(tiles):
            koff = np.stack([off + g * cg * sc, ky, kx]).astype(np.int64)
            outs.append(t.forward_patches(xflat, geo, koff, rows))
        y = torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1))
        return y.to(x.dtype)

    def _finish(self, y, n, oh, ow) -> torch.Tensor:
        """(n*oh*ow, out) -> (n, out, oh, ow) plus the digital bias."""
        y = y.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def _check_input(self, x: torch.Tensor) -> bool:
        nd = self._nd
        if x.dim() not in (nd + 1, nd + 2):
            raise ValueError(f"{type(self).__name__}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) "
                             f"input, got shape {tuple(x.shape)}")
        c = x.shape[-nd - 1]
        if c != self.in_channels:
            raise ValueError(f"{type(self).__name__}: input has {c} channels, expected {self.in_channels}")
        return x.dim() == nd + 1

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.group_tiles is None:
            s += f", tiles={self.tiles.grid}"
        return s + f", config={self.config}"


class AnalogConv2d(_AnalogConvNd):
    """``torch.nn.Conv2d`` on crossbar tiles (im2col + analog matrix product; see the module docstring).

    Example::

        conv = AnalogConv2d(3, 16, 3, padding=1, config=aimc.presets.default(), seed=0)
        y = conv(torch.randn(8, 3, 32, 32))
    """

    _nd = 2
    _torch_cls = nn.Conv2d

    @staticmethod
    def _as2d(t, fill):
        return tuple(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = self._check_input(x)
        x, unfold_pad = self._pad(x.unsqueeze(0) if unbatched else x)
        y = self._forward_nd(x, unfold_pad)
        return y[0] if unbatched else y


class AnalogConv1d(_AnalogConvNd):
    """``torch.nn.Conv1d`` on crossbar tiles (computed as a 2-D unfold with height 1)."""

    _nd = 1
    _torch_cls = nn.Conv1d

    @staticmethod
    def _as2d(t, fill):
        return (fill, t[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = self._check_input(x)
        x, unfold_pad = self._pad(x.unsqueeze(0) if unbatched else x)
        y = self._forward_nd(x.unsqueeze(2), (0, unfold_pad[0])).squeeze(2)
        return y[0] if unbatched else y
