"""``AnalogMultiheadAttention``: ``torch.nn.MultiheadAttention`` with its projections on crossbar tiles.

The four weight matrices -- the query, key and value in-projections and the output projection -- are
analog: q/k/v are :class:`~aimc.nn.conv.TileSlot` children (``q_proj``, ``k_proj``, ``v_proj``; each its own
``TileArray``, also when torch packs them into one ``in_proj_weight``) and ``out_proj`` is an
:class:`~aimc.nn.AnalogLinear`. The attention itself (Q K^T, softmax, the weighted sum of V) multiplies
two *activations*, which a crossbar holding static weights cannot do; it stays digital, as do the biases.

Parameters keep torch's names (``in_proj_weight`` or ``q/k/v_proj_weight``, ``in_proj_bias``, ``bias_k``,
``bias_v``, ``out_proj.weight``, ``out_proj.bias``), so a ``torch.nn.MultiheadAttention`` state dict loads.
All of torch's options work: ``batch_first``, ``kdim``/``vdim``, ``add_bias_kv``, ``add_zero_attn``,
bool or float ``attn_mask`` (2-D or 3-D) and ``key_padding_mask``, ``need_weights`` with
``average_attn_weights``, dropout on the attention weights in training. With the ideal preset it equals
torch's layer within float32 rounding.

Inside ``torch.nn.TransformerEncoderLayer`` torch takes a fused "fast path" in eval mode that reads the
projection weights directly (i.e. digitally). The layer registers a no-op forward pre-hook, which is one of
torch's documented reasons to leave the fast path, so the analog projections are always used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import as_config
from .conv import AnalogContainer, TileSlot
from .linear import AnalogLinear


def _no_fast_path(module, args):
    """Forward pre-hook that does nothing: its presence turns off torch's fused transformer fast path."""
    return None


def _float_mask(mask, name: str, dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise TypeError(f"AnalogMultiheadAttention: {name} must be bool or floating point, got {mask.dtype}")
    return mask.to(dtype)


class AnalogMultiheadAttention(AnalogContainer):
    """Multi-head attention whose q/k/v/out projections run on tiles (see the module docstring)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, config=None, seed: int = 0,
                 name: str = "mha"):
        super().__init__()
        for what, v in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AnalogMultiheadAttention: {what} must be a positive integer, got {v!r}")
        if embed_dim % num_heads:
            raise ValueError(f"AnalogMultiheadAttention: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"AnalogMultiheadAttention: dropout must be in [0, 1], got {dropout!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.add_zero_attn = float(dropout), bool(batch_first), bool(add_zero_attn)
        self.config = as_config(config)
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * E, E))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
            srcs = [("in_proj_weight", (0, E), E), ("in_proj_weight", (E, 2 * E), E),
                    ("in_proj_weight", (2 * E, 3 * E), E)]
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(E, E))
            self.k_proj_weight = nn.Parameter(torch.empty(E, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(E, self.vdim))
            self.register_parameter("in_proj_weight", None)
            srcs = [("q_proj_weight", None, E), ("k_proj_weight", None, self.kdim), ("v_proj_weight", None, self.vdim)]
        self.register_parameter("in_proj_bias", nn.Parameter(torch.empty(3 * E)) if bias else None)
        self.out_proj = AnalogLinear(E, E, bias=bias, config=self.config, seed=seed, name=f"{name}/out_proj")
        self.register_parameter("bias_k", nn.Parameter(torch.empty(1, 1, E)) if add_bias_kv else None)
        self.register_parameter("bias_v", nn.Parameter(torch.empty(1, 1, E)) if add_bias_kv else None)
        for slot, (param, rows, fan_in) in zip(("q_proj", "k_proj", "v_proj"), srcs):
            self.add_module(slot, TileSlot(self, param, rows, E, fan_in, self.config, seed, f"{name}/{slot}"))
        self._reset_parameters()
        self.register_forward_pre_hook(_no_fast_path)

    def _reset_parameters(self) -> None:
        """torch.nn.MultiheadAttention's initialisation (xavier-uniform projections, zero biases)."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    # -- conversion -----------------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, layer: nn.MultiheadAttention, config=None, seed: int = 0, name: str = "mha"):
        """The analog twin of a ``torch.nn.MultiheadAttention`` (all weights and biases copied)."""
        if not isinstance(layer, nn.MultiheadAttention):
            raise TypeError(f"{cls.__name__}.from_torch needs a MultiheadAttention, got {type(layer).__name__}")
        new = cls(layer.embed_dim, layer.num_heads, layer.dropout, layer.in_proj_bias is not None,
                  layer.bias_k is not None, layer.add_zero_attn, layer.kdim, layer.vdim, layer.batch_first,
                  config, seed, name)
        _copy(layer, new)
        return new

    def to_torch(self) -> nn.MultiheadAttention:
        """The digital twin with the floating-point weights."""
        layer = nn.MultiheadAttention(self.embed_dim, self.num_heads, self.dropout, self.in_proj_bias is not None,
                                      self.bias_k is not None, self.add_zero_attn, self.kdim, self.vdim,
                                      self.batch_first)
        _copy(self, layer)
        return layer

    # -- forward ----------------------------------------------------------------------------------------
    def _project(self, slot: str, x: torch.Tensor, idx: int) -> torch.Tensor:
        lead = x.shape[:-1]
        y = getattr(self, slot).analog_matmul(x.reshape(-1, x.shape[-1])).reshape(*lead, self.embed_dim)
        if self.in_proj_bias is not None:
            E = self.embed_dim
            y = y + self.in_proj_bias[idx * E:(idx + 1) * E]
        return y

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        """As ``torch.nn.MultiheadAttention.forward``: returns ``(attn_output, attn_weights or None)``."""
        name = "AnalogMultiheadAttention"
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"{name}: query, key and value must all be 2-D (unbatched) or 3-D, got "
                             f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        for what, t, d in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.shape[-1] != d:
                raise ValueError(f"{name}: {what} has {t.shape[-1]} features, expected {d}")
        if is_causal and attn_mask is None:
            raise ValueError(f"{name}: is_causal=True needs the causal attn_mask (as torch.nn.MultiheadAttention)")
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        L, N, E = query.shape
        S = key.shape[0]
        if key.shape[:2] != value.shape[:2] or key.shape[1] != N:
            raise ValueError(f"{name}: key {tuple(key.shape)} and value {tuple(value.shape)} do not match "
                             f"(or their batch differs from the query's {N})")
        H, hd = self.num_heads, self.head_dim
        dtype = query.dtype
        kpm = _float_mask(key_padding_mask, "key_padding_mask", dtype)
        am = _float_mask(attn_mask, "attn_mask", dtype)
        if kpm is not None and tuple(kpm.shape) != (N, S):
            raise ValueError(f"{name}: key_padding_mask has shape {tuple(kpm.shape)}, expected {(N, S)}")
        if am is not None:
            if am.dim() == 2:
                if tuple(am.shape) != (L, S):
                    raise ValueError(f"{name}: 2-D attn_mask has shape {tuple(am.shape)}, expected {(L, S)}")
                am = am.unsqueeze(0)
            elif am.dim() == 3:
                if tuple(am.shape) != (N * H, L, S):
                    raise ValueError(f"{name}: 3-D attn_mask has shape {tuple(am.shape)}, expected {(N * H, L, S)}")
            else:
                raise ValueError(f"{name}: attn_mask must be 2-D or 3-D, got {am.dim()}-D")

        q = self._project("q_proj", query, 0)
        k = self._project("k_proj", key, 1)
        v = self._project("v_proj", value, 2)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, N, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, N, 1)])
            am = F.pad(am, (0, 1)) if am is not None else None
            kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
        q = q.reshape(L, N * H, hd).transpose(0, 1)
        k = k.reshape(k.shape[0], N * H, hd).transpose(0, 1)
        v = v.reshape(v.shape[0], N * H, hd).transpose(0, 1)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(N * H, 1, hd)], dim=1)
            v = torch.cat([v, v.new_zeros(N * H, 1, hd)], dim=1)
            am = F.pad(am, (0, 1)) if am is not None else None
            kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
        S2 = k.shape[1]
        if kpm is not None:
            kpm = kpm.view(N, 1, 1, S2).expand(-1, H, -1, -1).reshape(N * H, 1, S2)
            am = kpm if am is None else am + kpm
        q = q * math.sqrt(1.0 / hd)
        if am is not None:
            w = torch.baddbmm(am, q, k.transpose(-2, -1))
        else:
            w = torch.bmm(q, k.transpose(-2, -1))
        w = torch.softmax(w, dim=-1)
        if self.dropout > 0 and self.training:
            w = F.dropout(w, p=self.dropout)
        out = torch.bmm(w, v).transpose(0, 1).reshape(L * N, E)
        out = self.out_proj(out).reshape(L, N, E)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        w = w.view(N, H, L, S2)
        if average_attn_weights:
            w = w.mean(dim=1)
        return out, (w if batched else w.squeeze(0))

    def extra_repr(self) -> str:
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if not self._qkv_same_embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.batch_first:
            s += ", batch_first=True"
        return s + f", config={self.config}"


def _copy(src: nn.Module, dst: nn.Module) -> None:
    """Copy the attention parameters (torch names, including out_proj) from ``src`` to ``dst``."""
    with torch.no_grad():
        for n in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                  "bias_k", "bias_v"):
            a, b = getattr(src, n), getattr(dst, n)
            if (a is None) != (b is None):
                raise ValueError(f"parameter {n} is present in one layer only")
            if a is not None:
                b.copy_(a)
        dst.out_proj.weight.copy_(src.out_proj.weight)
        if src.out_proj.bias is not None:
            dst.out_proj.bias.copy_(src.out_proj.bias)
