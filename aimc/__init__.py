"""aimc: analog in-memory computing emulation.

Core (numpy + numba + h5py, no torch): ``Tile``, ``TileArray``, ``TileConfig`` and its presets.
Torch adapters live in ``aimc.nn`` (install ``aimc[torch]``).
"""
from . import config as presets
from .config import (BoundManagement, ConfigError, DriftCompensation, InferenceConfig, IOConfig, MappingConfig,
                     MappingKind, NoiseManagement, TileConfig, WeightNoiseType)
from .chip import ChipImageError, load_chip, save_chip
from . import insitu  # callable module: aimc.insitu("tiki-taka", device="reram-es") -> InsituConfig
from .rng import Stream
from .tile import Tile, TileArray

__version__ = "0.1.0"

__all__ = ["BoundManagement", "ChipImageError", "ConfigError", "DriftCompensation", "InferenceConfig", "IOConfig",
           "MappingConfig", "MappingKind", "NoiseManagement", "Stream", "Tile", "TileArray", "TileConfig",
           "WeightNoiseType", "load_chip", "presets", "save_chip", "__version__"]
