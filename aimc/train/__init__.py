"""Training for analog hardware (torch adapters; training.md).

Methods live in submodules and are imported on use, so ``import aimc.train`` stays light (no torch):

* ``aimc.train.hwa`` — hardware-aware training for analog inference: ``prepare(model, "standard-hwa")``,
  ``post_step(model)`` / ``hook_optimizer(opt, model)``, weight modifiers, clipping, remapping, learned input
  ranges and output scales (Rasch et al. 2023).

The ``aimc train --method NAME`` command dispatches through ``aimc.train.cli.METHODS``.
"""
from __future__ import annotations

import importlib

__all__ = ["hwa"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
