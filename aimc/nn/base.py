"""``AnalogModule``: what every analog layer shares — a TileArray per weight matrix, the training/deployment
states, and the one place where a layer's 2-D matrix product meets the tiles.

A layer subclass only reshapes its input to (rows, in) and calls ``self.analog_matmul(x2d)``; it gets
hardware-aware-training hooks, programming and drift for free. Hooks are small objects kept in
``self.hooks`` (see ``analog_matmul``), so features such as weight modifiers, learned input ranges and
output scales are added in one place and reach every layer type.
"""
from __future__ import annotations

import importlib.util
import sys

import torch
from torch import nn

from ..core.config import TileConfig, as_config
from ..core.tile import TileArray
from ._function import AnalogMatmul


class AnalogModule(nn.Module):
    """Base of analog layers. Subclasses set ``self.weight`` ((out, in) view-able parameter) and call
    ``self._init_tiles(out, in, config, seed, name)``.

    States: training/mirroring (tiles hold ``analog_weight()`` exactly, refreshed when it changes) and
    programmed (after ``program()``: tiles hold physically written conductances).

    ``backend`` ('auto' | 'numba' | 'torch'; ``set_backend``): where the tile reads run. 'auto' (default)
    reads by the torch backend (``aimc.nn.torch_backend``) when the weight lives on a non-CPU device
    (``model.to("cuda")``: the tile state follows at the next read), by the Numba reference otherwise.
    """

    backend = "auto"

    def _init_tiles(self, out_size: int, in_size: int, config, seed: int, name: str) -> None:
        self.config: TileConfig = as_config(config)
        self.tiles = TileArray(out_size, in_size, self.config, seed, name)
        self.programmed = False
        self._synced_version = None

    # -- backend -----------------------------------------------------------------------------------------
    def set_backend(self, backend: str) -> None:
        """Select where this layer's tile reads run: 'auto', 'numba' (CPU reference) or 'torch'."""
        from .torch_backend import check_backend, check_supported
        backend = check_backend(backend)
        if backend == "torch":
            check_supported(self.config, f"{type(self).__name__} {self.tiles.name!r}")
        self.backend = backend

    def _use_torch(self) -> bool:
        """Whether this read runs on the torch backend (an error for 'numba' on a non-CPU device)."""
        b = self.backend
        on_cpu = self.weight.device.type == "cpu"
        if b == "numba" and not on_cpu:
            raise RuntimeError(f"{type(self).__name__}: backend 'numba' runs on the CPU, but the weight is on "
                               f"{self.weight.device}; use set_backend('torch') or 'auto'")
        return b == "torch" or (b == "auto" and not on_cpu)

    # -- the matrix the tiles hold ------------------------------------------------------------------
    def analog_weight(self) -> torch.Tensor:
        """The (out, in) matrix mapped onto the tiles (a view of ``self.weight`` by default)."""
        return self.weight.reshape(self.tiles.out_size, -1)

    def _sync(self) -> None:
        w = self.analog_weight()
        version = (self.weight._version, self.weight.data_ptr())
        if version != self._synced_version:
            self.tiles.set_weights(w.detach().cpu().numpy())
            self._synced_version = version

    # -- lifecycle ------------------------------------------------------------------------------------
    def program(self) -> None:
        """Physically write the weights onto the tiles; later forwards read the programmed state."""
        self.tiles.program(self.analog_weight().detach().cpu().numpy())
        self.programmed = True

    def unprogram(self) -> None:
        """Return to mirroring the floating-point weights (e.g. to train further)."""
        self.programmed = False
        self._synced_version = None

    def drift(self, t: float) -> None:
        """Move the programmed tiles to ``t`` seconds after programming (``TileArray.drift``); later
        forwards read the drifted conductances (with fresh read noise and the config's drift compensation).
        """
        if not self.programmed:
            raise RuntimeError(f"{type(self).__name__}: drift({t!r}) before program(); program the layer first")
        if self._use_torch():
            from .torch_backend import drift
            drift(self, t)
        else:
            self.tiles.drift(t)

    # -- the analog state in state_dict ---------------------------------------------------------------
    def get_extra_state(self) -> dict:
        """The tiles' chip state for ``state_dict`` (key ``<module>._extra_state``).

        Per tile: its meta (``Tile._get_state``: stream state, clock, mapping parameters, compensation) as
        JSON, and its arrays (column scales; exact weights, or after ``program`` the drawn-once device state,
        the conductances as last read and the compensation reference/factor) as tensors; plus the config
        (JSON) and the ``programmed`` flag. Everything is a tensor, str, bool or list, so
        ``torch.load(weights_only=True)`` reads it; a model that loads it computes the same as the saved one
        (same conductances, same clock, same random streams).
        """
        import json

        import numpy as np
        tiles = getattr(self, "tiles", None)
        if tiles is None:
            return {}
        out = []
        for tile in tiles.all_tiles():
            meta, arrays = tile._get_state()
            out.append({"meta": json.dumps(meta, sort_keys=True),
                        "arrays": {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()
                                   if v is not None}})
        from ..core.chip import _model_record
        return {"format": "aimc-analog-state", "version": 1, "config": self.config.to_json(),
                "device_model": json.dumps(_model_record(tiles.tiles[0][0].device_model())),
                "programmed": bool(self.programmed), "grid": list(tiles.grid), "tiles": out}

    def set_extra_state(self, state) -> None:
        """Restore ``get_extra_state``; the config and the tile grid must match (an error names the difference).

        Nothing is restored unless every tile's state passes the checks chip images get (``aimc.chip``)."""
        if not state:
            return
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("format") != "aimc-analog-state":
            raise ValueError(f"{name}: the state dict's _extra_state is not an aimc analog state")
        if not isinstance(state.get("version"), int) or state["version"] > 1:
            raise ValueError(f"{name}: analog state version {state.get('version')} is newer than this aimc reads (1)")
        from ..core.chip import ChipImageError, _model_from_record, check_tile_state, restore_tiles
        from ..core.config import ConfigError, dict_diff, loads_json
        try:  # compared as normalised dicts: no config is built from the file, so no card it names is opened
            saved = loads_json(state.get("config"), f"{name}: saved config") if isinstance(state.get("config"), str) \
                else None
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if not isinstance(saved, dict):
            raise ValueError(f"{name}: the state dict's analog config must be a JSON object")
        from ..core.config import chip_identity
        a, b = (chip_identity(d) for d in (type(self.config).normalised_dict(saved), self.config.to_dict()))
        if a != b:
            raise ValueError(f"{name}: the state dict was saved with another TileConfig (saved vs this layer: "
                             f"{'; '.join(dict_diff(a, b)[:12])}); build the model with the same config")
        tiles = list(self.tiles.all_tiles())
        entries = state.get("tiles")
        if list(state.get("grid", [])) != list(self.tiles.grid) or not isinstance(entries, list) \
                or len(entries) != len(tiles):
            raise ValueError(f"{name}: the state dict holds a tile grid {state.get('grid')}, this layer has "
                             f"{list(self.tiles.grid)}")
        try:
            rec = state.get("device_model")
            model = _model_from_record(loads_json(rec, f"{name}: device_model"), tiles[0], name) \
                if isinstance(rec, str) else tiles[0].device_model()   # older state dicts: this layer's config
            plan = []
            for tile, e in zip(tiles, entries):
                where = f"{name} tile {tile.tile_id!r}"
                if not isinstance(e, dict) or not isinstance(e.get("meta"), str) or not isinstance(e.get("arrays"), dict):
                    raise ChipImageError(f"{where}: malformed analog state entry")
                meta = loads_json(e["meta"], f"{where} meta")
                arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
                          for k, v in e["arrays"].items()}
                check_tile_state(tile, meta, arrays, model, where)
                plan.append((tile, meta, arrays, model))
        except (ChipImageError, ConfigError) as e:
            raise ValueError(f"{name}: bad analog state in the state dict: {e}") from None
        restore_tiles(plan, name)
        self.programmed = bool(state.get("programmed"))
        self._synced_version = None

    # -- the product ----------------------------------------------------------------------------------
    def _fused_tiles(self):
        """The tiles, ready for a read that bypasses ``analog_matmul`` (the fused inference path of a
        convolution), or None when this layer's read needs ``analog_matmul`` (an HWA hook, or a periphery
        ``TileArray.forward_patches`` does not reproduce). Prepares the tiles as ``analog_matmul`` does."""
        if not self.tiles.fusable:
            return None
        return self._inference_tiles()

    def _inference_tiles(self):
        """The tiles, prepared as ``analog_matmul`` prepares them, for reads without autograd that call
        ``tiles._forward`` on numpy arrays directly (inference loops: no autograd node per read); None when
        the read needs ``analog_matmul`` (an HWA hook, or the torch backend)."""
        if self._modules.get("hwa") is not None or self._use_torch():
            return None
        if self.programmed:
            comp = not self.training
            if self.tiles.compensate != comp:
                self.tiles.compensate = comp
        else:
            self._sync()
        return self.tiles

    def analog_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        """(rows, in) -> (rows, out) through the tiles, with autograd (see ``AnalogMatmul``).

        Hook: a layer prepared for hardware-aware training has an ``hwa`` submodule
        (``aimc.train.hwa.HWALayer``: weight modifiers, learned input ranges, output scales) that runs the
        product instead. Programmed tiles apply their drift compensation in eval mode only.

        ``torch.compile``: the product runs in numpy/numba, which dynamo cannot trace; it is excluded from
        compilation (``torch.compiler.disable``, applied when dynamo loads: ``_exclude_from_dynamo``), so a
        compiled model runs its digital parts compiled and breaks the graph around every analog product (which
        runs eagerly, gradients included).
        """
        if self.programmed:
            comp = not self.training
            if self.tiles.compensate != comp:
                self.tiles.compensate = comp
        hwa = self._modules.get("hwa")
        if hwa is not None:
            return hwa.matmul(self, x2d)
        if self._use_torch():
            from .torch_backend import analog_matmul
            return analog_matmul(self, x2d)
        if not self.programmed:
            self._sync()
        return AnalogMatmul.apply(x2d, self.analog_weight(), self.tiles, self.config.backward_ideal)


def _exclude_from_dynamo(cls, name: str) -> None:
    """``cls.name = torch.compiler.disable(cls.name)`` as soon as ``torch._dynamo`` is loaded, never loading it.

    ``torch.compiler.disable`` imports dynamo, which took ~2.4 s of every ``aimc deploy`` (measured by cProfile
    here) although a process that never compiles never needs it; anything that traces with dynamo
    (``torch.compile``, ``torch.export``) imports ``torch._dynamo`` first, and the wrapping happens right
    after that import, before any tracing.
    """
    fn = cls.__dict__[name]

    def apply():
        setattr(cls, name, torch.compiler.disable(fn, recursive=True))

    if "torch._dynamo" in sys.modules:
        apply()
    else:
        sys.meta_path.insert(0, _AfterImport("torch._dynamo", apply))


class _AfterImport:
    """A ``sys.meta_path`` entry that calls ``callback()`` right after module ``name`` has been imported
    (by anyone, the first time) and then removes itself; it finds and loads nothing itself."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)   # by the finders after this one
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module, callback = spec.loader, spec.loader.exec_module, self.callback

        def exec_then_callback(module):
            exec_module(module)
            del loader.exec_module   # this loader object belongs to this one import: restore it
            callback()

        loader.exec_module = exec_then_callback
        return spec

    def invalidate_caches(self):
        pass


_exclude_from_dynamo(AnalogModule, "analog_matmul")
