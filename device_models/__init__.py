"""device_models: the physics of one memory cell, vectorised over arrays (numpy only; never imports aimc/torch).

Two faces: inference statistics (programming noise, drift, read noise, faults) and pulse response
(state-dependent steps for on-chip training). Published devices are TOML cards: ``load(name)``, ``available()``.
"""
from .cards import FAMILIES, available, from_params, load, read_card, register
from . import inference  # noqa: F401  (registers families)
from . import pulsed  # noqa: F401  (registers families)
from . import fit  # noqa: F401  (registers the csv preparer of pulsed-lookup-table; scipy is imported lazily)

__all__ = ["FAMILIES", "available", "from_params", "load", "read_card", "register"]
