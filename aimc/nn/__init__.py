"""Torch adapters (``pip install aimc[torch]``): analog layers over crossbar tiles."""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover
    raise ImportError("aimc.nn needs torch: pip install 'aimc[torch]' (torch==2.13.0)") from e

from .linear import AnalogLinear

__all__ = ["AnalogLinear"]
