"""aimc: analog in-memory computing emulation.

Core (numpy + numba + h5py, no torch): ``Tile``, ``TileArray``, ``TileConfig`` and its presets.
Torch adapters live in ``aimc.nn`` (install ``aimc[torch]``).
"""
import os as _os

# numba's and torch's OpenMP runtimes busy-wait after parallel regions and slow each other down on few
# cores (measured 5-25x on small training steps here); passive waiting must be chosen before either starts.
# This only reaches pools started after ``import aimc`` (numba's, always); aimc.threads keeps aimc fast when
# torch's pool started first with the default (spinning) policy.
_OMP_WAIT_POLICY_DEFAULTED = "OMP_WAIT_POLICY" not in _os.environ
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._compat import install as _install_old_paths  # noqa: E402

_install_old_paths()  # aimc.tile, aimc.chip, ... keep working (modules moved into folders)

from .core import config as presets  # noqa: E402
from .core.config import (BoundManagement, CalibrationConfig, ConfigError, DriftCompensation, InferenceConfig, IOConfig,
                     MappingConfig, MappingKind, NoiseManagement, TileConfig, WeightNoiseType)
from .core.chip import ChipImageError, load_chip, save_chip
from .train import insitu  # callable module: aimc.insitu("tiki-taka", device="reram-es") -> InsituConfig
from .core.rng import Stream
from .core.tile import Tile, TileArray

__version__ = "0.1.0"

# Torch-based verbs at the top level, imported on first use so ``import aimc`` never loads torch.
_LAZY = {"convert_to_analog": "aimc.deployment.convert", "convert_to_digital": "aimc.deployment.convert", "program": "aimc.deployment.convert",
         "drift": "aimc.deployment.convert", "read_weights": "aimc.deployment.convert", "calibrate": "aimc.deployment.convert",
         "clip_fractions": "aimc.deployment.convert", "conversion_report": "aimc.deployment.convert",
         "UnconvertedLayerError": "aimc.deployment.convert", "evaluate_over_time": "aimc.deployment.deploy"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aimc' has no attribute {name!r}")

__all__ = ["BoundManagement", "CalibrationConfig", "ChipImageError", "ConfigError", "DriftCompensation", "InferenceConfig", "IOConfig",
           "MappingConfig", "MappingKind", "NoiseManagement", "Stream", "Tile", "TileArray", "TileConfig",
           "WeightNoiseType", "load_chip", "presets", "save_chip", "__version__", *_LAZY]
