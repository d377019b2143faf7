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

# ---------------------------------------------------------------------------------------------------------------
# Physical neural networks on aimc analog layers (aimc.pnn.physical / methods / costs): a PhysicalSystem (noisy
# AnalogLinear crossbars + hidden mismatch, forward-only, every read counted) and its DigitalTwin, trained by
# twin-only, PAT, in-situ BP, FA/DFA, forward-forward, SPSA/WP/NP or EP with one cost accounting.
# The torch-based names are imported on first use; aimc.pnn.costs is numpy-only.
from .costs import ENERGY_PJ, CostMeter, Costs  # noqa: E402

_equilibrium_train = train
_LAZY = {"DigitalTwin": "physical", "PhysicalSystem": "physical", "Mismatch": "physical",
         "MISMATCH_LEVELS": "physical", "default_config": "physical", "evaluate": "physical",
         "PNNResult": "methods", "METHODS": "methods",
         "FeedbackTiles": "methods", "pat_forward": "methods", "train_ep": "methods"}


def train(method, *args, **kwargs):  # noqa: F811
    """``train("pat", "digits", mismatch="large", ...)``: a PNN method by name (:func:`aimc.pnn.methods.train`,
    methods twin, pat, insitu-bp, fa, dfa, ff, spsa, wp, np, ep; needs torch). Called with a
    :class:`ResistiveClassifier` first, it is :func:`aimc.pnn.equilibrium.train` (unchanged)."""
    if isinstance(method, str):
        from .methods import train as _train
        return _train(method, *args, **kwargs)
    return _equilibrium_train(method, *args, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += ["CostMeter", "Costs", "ENERGY_PJ", *_LAZY]
