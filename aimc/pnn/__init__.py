"""Training physical neural networks (training.md §3).

Importing this package never imports torch: the numpy/numba methods are exported here, and torch-based
modules of ``aimc.pnn`` are imported by their full path when needed.

* :mod:`aimc.pnn.equilibrium` -- resistor/diode classifiers trained by equilibrium propagation and coupled
  learning, with device-aware conductance updates (on :class:`aimc.circuits.ResistiveNetwork`).
"""
from .equilibrium import (ClippedUpdate, DeviceUpdate, QuantisedUpdate, ResistiveClassifier, TrainResult,
                          finite_difference_gradient, train)

__all__ = ["ClippedUpdate", "DeviceUpdate", "QuantisedUpdate", "ResistiveClassifier", "TrainResult",
           "finite_difference_gradient", "train"]
