"""Torch adapters (``pip install aimc[torch]``): analog layers over crossbar tiles."""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover
    raise ImportError("aimc.nn needs torch: pip install 'aimc[torch]' (torch==2.13.0)") from e

from .linear import AnalogLinear
from .conv import AnalogConv1d, AnalogConv2d, AnalogContainer, TileSlot
from .rnn import AnalogGRU, AnalogLSTM, AnalogRNN
from .attention import AnalogMultiheadAttention
from .torch_backend import set_backend

__all__ = ["AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogContainer", "TileSlot", "AnalogGRU",
           "AnalogLSTM", "AnalogRNN", "AnalogMultiheadAttention", "set_backend"]
