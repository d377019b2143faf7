"""``AnalogLinear``: a ``torch.nn.Linear`` whose matrix product runs on emulated crossbar tiles."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.config import TileConfig
from .base import AnalogModule


class AnalogLinear(AnalogModule):
    """y = tiles(x) + bias, with ``weight`` (out, in) a torch Parameter and the bias kept digital.

    Two states: before ``program()`` the tiles mirror ``weight`` exactly at every forward (the state for
    hardware-aware training with any torch optimizer); after ``program()`` they hold physically written
    conductances and the forward reads those (deployment). With ``aimc.presets.ideal()`` it equals
    ``torch.nn.Linear`` within float32 rounding, for forward, gradients and training.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 config: TileConfig | str | None = None, seed: int = 0, name: str = "linear"):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self._init_tiles(self.out_features, self.in_features, config, seed, name)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of torch.nn.Linear (Kaiming-uniform weights, uniform bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, layer: nn.Linear, config=None, seed: int = 0, name: str = "linear") -> "AnalogLinear":
        """An AnalogLinear with the weights and bias of ``layer``."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, config, seed, name)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[-1]} features, expected {self.in_features}")
        lead = x.shape[:-1]
        y = self.analog_matmul(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, tiles={self.tiles.grid}, config={self.config}")
