"""Old import paths of modules that moved into folders (``aimc.tile`` -> ``aimc.core.tile``, ...).

``import aimc.tile`` (and ``from aimc.tile import Tile``, ``monkeypatch.setattr("aimc.tile.X", ...)``) gives the
very module object of the new place, so users' scripts keep working and there is one copy of each module.
The torch-side modules stay lazy: an old path imports its new module only when it is imported.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "aimc.config": "aimc.core.config", "aimc.rng": "aimc.core.rng", "aimc.mapping": "aimc.core.mapping",
    "aimc.periphery": "aimc.core.periphery", "aimc.tile": "aimc.core.tile",
    "aimc.calibration": "aimc.core.calibration", "aimc.inference": "aimc.core.inference",
    "aimc.chip": "aimc.core.chip", "aimc.times": "aimc.core.times", "aimc.timing": "aimc.core.timing",
    "aimc.threads": "aimc.core.threads", "aimc._io": "aimc.core._io",
    "aimc.circuits": "aimc.circuit.network", "aimc.crossbar": "aimc.circuit.crossbar",
    "aimc.crossbar_bench": "aimc.circuit.bench",
    "aimc.convert": "aimc.deployment.convert", "aimc.deploy": "aimc.deployment.deploy",
    "aimc.zoo": "aimc.workloads.zoo", "aimc.datasets": "aimc.workloads.datasets",
    "aimc.insitu": "aimc.train.insitu", "aimc.optim": "aimc.train.optim",
    "aimc.nn.bench": "aimc.deployment.bench",
    "aimc.devices_cli": "aimc.card_commands", "aimc.device_cli": "aimc.card_commands",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old name with the module at its new place (same object, its own ``__spec__`` kept)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the import system set the old name's spec on it; give its own back


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
