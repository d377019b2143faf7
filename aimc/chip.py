"""Chip images: a programmed chip as one HDF5 file, reloaded later to keep drifting (design.md §5).

``save_chip(obj, path)`` / ``load_chip(path, obj)`` where ``obj`` is a ``Tile``, a ``TileArray``, or any
object tree with ``named_modules()`` (a torch model; torch is never imported here) whose analog modules
carry ``.tiles`` (a ``TileArray``) and ``.programmed``.

Format ``aimc-chip``, version 1 (h5py). Root attributes ``format``, ``format_version`` and ``meta`` (JSON:
kind, aimc version, the model identity: per array its module name, class, shape, tile grid and split sizes,
plus the SHA-256 of that structure, and ``content_sha256``). One group ``a<i>`` per tile array (meta: name,
TileConfig JSON, seed, the module's ``programmed`` flag) with one group ``t<r>_<c>`` per tile (meta: tile id,
stream state (seed, stream id, call counter), clock, mapping parameters, compensation kind, device engine;
datasets: column scales, and either the exact weights ``w`` (never programmed) or the drawn-once device
state ``g_target``, ``g_prog``, ``nu``, ``stuck`` (``z``), the conductances as last read ``G`` and the
compensation reference/factor). ``content_sha256`` hashes every meta string and dataset (path, dtype, shape,
bytes), so a flipped byte anywhere in the payload is detected on load.

Writes are atomic (temp file + rename) and never replace an existing file unless ``overwrite=True``.
Loading checks format, version, integrity, then the target's identity (names, shapes, grids, configs)
before changing anything; every failure is a ``ChipImageError`` (a ``ValueError``) naming the problem.
Configs match up to the calibration method (the calibrated ranges are tile state, datasets
``cal_input_range`` / ``cal_adc_range``), so an image written before calibration existed loads into a model
converted with a calibrating config, and keeps its uncalibrated periphery.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .tile import Tile, TileArray

FORMAT = "aimc-chip"
FORMAT_VERSION = 1

__all__ = ["ChipImageError", "FORMAT", "FORMAT_VERSION", "load_chip", "save_chip"]


class ChipImageError(ValueError):
    """A chip image cannot be written or loaded: the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------- targets

def _arrays_of(obj) -> tuple[str, list]:
    """(kind, [(name, owner module or None, TileArray-or-Tile)]) for a Tile, TileArray or module tree."""
    if isinstance(obj, Tile):
        return "tile", [("", None, obj)]
    if isinstance(obj, TileArray):
        return "tile_array", [(obj.name, None, obj)]
    if hasattr(obj, "named_modules"):
        out = [(name, m, m.tiles) for name, m in obj.named_modules()
               if isinstance(getattr(m, "tiles", None), TileArray)]
        if not out:
            raise ChipImageError(f"{type(obj).__name__} has no analog modules (no module with a TileArray "
                                 f"'.tiles'): nothing to save or load")
        return "modules", out
    raise TypeError(f"save_chip/load_chip take a Tile, a TileArray or a module tree with named_modules(), "
                    f"got {type(obj).__name__}")


def _tiles_of(arr) -> list[tuple[int, int, Tile]]:
    if isinstance(arr, Tile):
        return [(0, 0, arr)]
    return [(r, c, t) for r, row in enumerate(arr.tiles) for c, t in enumerate(row)]


def _structure(kind: str, entries) -> list[dict]:
    out = []
    for name, module, arr in entries:
        if isinstance(arr, Tile):
            d = {"name": name, "class": "Tile", "shape": list(arr.shape), "grid": [1, 1],
                 "out_splits": [arr.out_size], "in_splits": [arr.in_size], "tile_id": arr.tile_id}
        else:
            d = {"name": name, "class": type(module).__name__ if module is not None else "TileArray",
                 "shape": list(arr.shape), "grid": list(arr.grid),
                 "out_splits": [int(v) for v in arr.out_splits], "in_splits": [int(v) for v in arr.in_splits]}
        out.append(d)
    return out


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- tree <-> file

def _digest(tree: dict, root_meta: dict) -> str:
    """SHA-256 over the root meta (less the digest itself), every group's meta JSON and every dataset
    (path, dtype, shape, bytes), in sorted order."""
    h = hashlib.sha256()
    core = {k: v for k, v in root_meta.items() if k != "content_sha256"}
    h.update(json.dumps(core, sort_keys=True).encode() + b"\0")
    for path in sorted(tree):
        node = tree[path]
        h.update(path.encode() + b"\0" + node["meta"].encode() + b"\0")
        for name in sorted(node["data"]):
            a = np.ascontiguousarray(node["data"][name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}".encode() + b"\0")
            h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return h.hexdigest()


def _write_tree(tmp: Path, tree: dict, root_meta: dict) -> None:
    import h5py
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["meta"] = json.dumps(root_meta, sort_keys=True)
        for path in sorted(tree):
            if path == "/":
                continue
            g = f.require_group(path)
            g.attrs["meta"] = tree[path]["meta"]
            for name, a in tree[path]["data"].items():
                g.create_dataset(name, data=np.ascontiguousarray(a))


def _read_tree(path: Path) -> tuple[dict, dict]:
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ChipImageError(f"{path}: not a readable HDF5 chip image (truncated or corrupt file?): {e}") from None
    try:
        with f:
            fmt = f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt != FORMAT:
                raise ChipImageError(f"{path}: not an aimc chip image (format attribute {fmt!r}, "
                                     f"expected {FORMAT!r})")
            ver = f.attrs.get("format_version")
            try:
                ver = int(ver)
            except (TypeError, ValueError):
                raise ChipImageError(f"{path}: chip image has an invalid format_version {ver!r} (corrupt file?)")
            if ver > FORMAT_VERSION:
                raise ChipImageError(f"{path}: chip image format version {ver} is newer than this aimc reads "
                                     f"(up to {FORMAT_VERSION}); upgrade aimc to load it")
            if ver < 1:
                raise ChipImageError(f"{path}: chip image has an invalid format_version {ver} (corrupt file?)")
            root_meta = json.loads(f.attrs["meta"])
            tree = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Group):
                    tree["/" + name] = {"meta": obj.attrs["meta"], "data": {
                        k: v[()] for k, v in obj.items() if isinstance(v, h5py.Dataset)}}

            f.visititems(visit)
    except ChipImageError:
        raise
    except Exception as e:  # h5py/HDF5 errors on damaged metadata or data, JSON errors, missing keys
        raise ChipImageError(f"{path}: cannot read the chip image (truncated or corrupt file?): "
                             f"{type(e).__name__}: {e}") from None
    if not isinstance(root_meta, dict) or root_meta.get("content_sha256") != _digest(tree, root_meta):
        raise ChipImageError(f"{path}: chip image is corrupt: content checksum mismatch (the file was damaged "
                             f"or modified after it was written)")
    return root_meta, tree


# ----------------------------------------------------------------------------------------------- API

def save_chip(obj, path, *, overwrite: bool = False) -> Path:
    """Write the chip state of ``obj`` (Tile, TileArray or module tree) to ``path`` (HDF5, atomic).

    An existing ``path`` is an error unless ``overwrite=True``. Returns the path.
    """
    from . import __version__
    kind, entries = _arrays_of(obj)
    structure = _structure(kind, entries)
    tree = {}
    arrays_meta = []
    for i, (name, module, arr) in enumerate(entries):
        programmed = None if module is None else bool(getattr(module, "programmed", False))
        a_meta = {"name": name, "config": arr.config.to_dict(), "seed": arr.seed, "module_programmed": programmed}
        tree[f"/a{i}"] = {"meta": json.dumps(a_meta, sort_keys=True), "data": {}}
        arrays_meta.append(a_meta)
        for r, c, tile in _tiles_of(arr):
            meta, data = tile._get_state()
            tree[f"/a{i}/t{r}_{c}"] = {"meta": json.dumps(meta, sort_keys=True), "data": data}
    root_meta = {"kind": kind, "aimc_version": __version__, "structure": structure,
                 "structure_sha256": _sha(structure)}
    root_meta["content_sha256"] = _digest(tree, root_meta)
    try:
        return atomic_write(path, lambda tmp: _write_tree(tmp, tree, root_meta), overwrite=overwrite,
                            suffix=".h5.tmp")
    except FileExistsError:
        raise FileExistsError(f"chip image {path} exists; refusing to overwrite it (pass overwrite=True)") from None


def load_chip(path, obj):
    """Restore the chip state saved at ``path`` into ``obj`` (same kind, names, shapes and configs).

    Everything is checked before ``obj`` changes: a missing file, a file that is not a chip image, a newer
    format version, a truncated or corrupt file, or a target that does not match the saved model's identity
    raise an error naming the problem. Returns ``obj``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chip image not found: {path}")
    root_meta, tree = _read_tree(path)
    kind, entries = _arrays_of(obj)
    saved = root_meta.get("structure", [])
    if root_meta.get("kind") != kind:
        raise ChipImageError(f"{path}: the chip image holds a {root_meta.get('kind')!r}, cannot load it into a "
                             f"{kind!r} ({type(obj).__name__})")
    mine = _structure(kind, entries)
    if root_meta.get("structure_sha256") != _sha(mine):
        raise ChipImageError(f"{path}: the model does not match the chip image: {_explain(saved, mine)}")
    for i, (name, module, arr) in enumerate(entries):
        a_meta = json.loads(tree[f"/a{i}"]["meta"])
        if a_meta["config"] != arr.config.to_dict() and not _same_chip(a_meta["config"], arr.config):
            from .config import TileConfig
            diff = TileConfig.from_dict(a_meta["config"]).diff(arr.config)
            raise ChipImageError(f"{path}: the config of {name or type(arr).__name__!r} differs from the chip "
                                 f"image's (saved values: {json.dumps(diff)})")
    # all checks passed: restore
    for i, (name, module, arr) in enumerate(entries):
        a_meta = json.loads(tree[f"/a{i}"]["meta"])
        for r, c, tile in _tiles_of(arr):
            node = tree[f"/a{i}/t{r}_{c}"]
            tile._set_state(json.loads(node["meta"]), node["data"])
        if isinstance(arr, TileArray):
            arr.seed = a_meta["seed"]
        if module is not None and a_meta.get("module_programmed") is not None:
            try:
                module.programmed = bool(a_meta["module_programmed"])
                if not module.programmed and hasattr(module, "_synced_version"):
                    module._synced_version = None
            except AttributeError:  # a read-only property
                pass
    return obj


def _same_chip(saved: dict, cfg) -> bool:
    """The saved config describes the same chip as ``cfg``: equal after parsing (fields added since the image
    was written take their defaults) up to the calibration method (``config.same_chip_config``)."""
    from .config import ConfigError, same_chip_config
    try:
        return same_chip_config(type(cfg).from_dict(saved), cfg)
    except (ConfigError, TypeError):
        return False


def _explain(saved: list[dict], mine: list[dict]) -> str:
    """A human account of how two structures differ."""
    sn = {d["name"]: d for d in saved}
    mn = {d["name"]: d for d in mine}
    parts = []
    missing = [n for n in sn if n not in mn]
    extra = [n for n in mn if n not in sn]
    if missing:
        parts.append(f"analog module(s) {missing} are in the image but not in the model")
    if extra:
        parts.append(f"analog module(s) {extra} are in the model but not in the image")
    for n in sn:
        if n in mn:
            for key in ("class", "shape", "grid", "out_splits", "in_splits", "tile_id"):
                if sn[n].get(key) != mn[n].get(key):
                    parts.append(f"{n or 'the array'!r}: {key} {sn[n].get(key)} in the image, "
                                 f"{mn[n].get(key)} in the model")
    if not parts and [d["name"] for d in saved] != [d["name"] for d in mine]:
        parts.append("the analog modules are in a different order")
    return "; ".join(parts) or "the structure hash differs"
