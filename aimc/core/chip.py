"""Chip images: a programmed chip as one HDF5 file, reloaded later to keep drifting (design.md §5).

``save_chip(obj, path)`` / ``load_chip(path, obj)`` where ``obj`` is a ``Tile``, a ``TileArray``, or any
object tree with ``named_modules()`` (a torch model; torch is never imported here) whose analog modules
carry ``.tiles`` (a ``TileArray``) and ``.programmed``.

Format ``aimc-chip``, version 2 (h5py; version 1 files load too). Root attributes ``format``,
``format_version``, ``meta`` (JSON: kind, aimc version, the model identity: per array its module name,
class, shape, tile grid and split sizes, plus the SHA-256 of that structure, and ``content_sha256``) and,
if a key was given, ``signature``. One group ``a<i>`` per tile array (meta: name, TileConfig JSON, seed,
the module's ``programmed`` flag and, since version 2, ``device_model``: the resolved device parameters
(family and every parameter value), so a reload never opens a card file and does not change when a shipped
card is edited) with one group ``t<r>_<c>`` per tile (meta: tile id, stream state, clock, mapping parameters,
compensation kind, device engine; datasets: column scales, and either the exact weights ``w`` (never
programmed) or the drawn-once device state ``g_target``, ``g_prog``, ``nu``, ``stuck`` (``z``), the
conductances as last read ``G`` and the compensation reference/factor; an offset-encoded sliced tile with a
reference column stores its cells likewise as ``ref_g_target`` ... ``ref_G`` (slices, 1, in), all or none:
images written before it existed hold none and load with the digital offset removal they were written with).

What the checksum promises: ``content_sha256`` (SHA-256 over every meta string and dataset: path, dtype,
shape, bytes) detects *damage* (a flipped byte, a truncated copy). It is not a seal: anyone who edits a file
can recompute it. For tamper evidence pass ``key=`` to ``save_chip`` and ``load_chip``: the image then
carries an HMAC-SHA256 of the checksum under that key, and a load with the key refuses an image that is
unsigned or signed with another key. Independently of both, every value is validated before use.

Loading reads nothing it has not checked, and changes nothing until everything has passed:
* only a regular file is opened; only hard links are followed (soft, external and user-defined links are
  refused), and datasets with external storage, virtual datasets and filters (compression) are refused, so
  no path named inside the file is ever opened and no small file expands into a large allocation;
* the groups, datasets and attributes must be exactly those the target model implies, and every dataset's
  declared shape and dtype must match what the config and model imply *before* its data is read;
* every array is validated (finite; conductances >= 0 and in range; scales and compensation factors > 0;
  clock >= 0), every meta field checked (types, seeds, stream counters, enums);
* the configs are compared after filling in defaults (``TileConfig.normalised_dict``), so images written
  before a config field existed keep loading while the new field is at its default; the calibration
  method (``TileConfig.calibration``) is left out of the comparison: the calibrated ranges are tile state
  (datasets ``cal_input_range``, ``cal_adc_range``), so an image written before calibration existed loads
  into a model converted with a calibrating config and keeps its uncalibrated periphery;
* the state is then restored into all tiles at once; if anything still fails, every tile is put back.
Every failure is a ``ChipImageError`` (a ``ValueError``; ``ChipImageNotFound`` is also a
``FileNotFoundError``) naming the file and the part.

Writes: temp file, ``fsync``, then linked into place (``overwrite=False``: fails if the name exists, also
against a concurrent writer) or renamed over (``overwrite=True``), then the folder is ``fsync``ed
(``aimc._io.atomic_write``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import os
import stat
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .tile import Tile, TileArray

FORMAT = "aimc-chip"
FORMAT_VERSION = 2
MAX_META_BYTES = 4 * 2**20     # one meta JSON string (configs, lookup-table cards): 4 MiB at most

__all__ = ["ChipImageError", "ChipImageExists", "ChipImageNotFound", "FORMAT", "FORMAT_VERSION", "load_chip",
           "save_chip"]


class ChipImageError(ValueError):
    """A chip image cannot be written or loaded: the message names the file and the problem."""


class ChipImageNotFound(ChipImageError, FileNotFoundError):
    """The chip image file does not exist."""


class ChipImageExists(ChipImageError, FileExistsError):
    """``save_chip`` refuses to replace an existing file (pass ``overwrite=True``)."""


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


def _first_tile(arr) -> Tile:
    return arr if isinstance(arr, Tile) else arr.tiles[0][0]


# ----------------------------------------------------------------------------------------------- device models

def _model_record(model) -> dict | None:
    """The resolved parameters of a device model, JSON-able: {family, card, params}."""
    if model is None:
        return None
    params = {}
    for f in dataclasses.fields(model):
        if f.init:
            v = getattr(model, f.name)
            params[f.name] = v.tolist() if isinstance(v, np.ndarray) else list(v) if isinstance(v, tuple) else v
    return {"family": model.family, "card": getattr(model, "card", None), "params": params}


def _model_from_record(rec, tile: Tile, where: str):
    """Rebuild a device model from the parameters stored in an image (never reads a card file)."""
    import device_models
    from device_models.cards import FAMILIES

    if rec is None:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("family"), str) or not isinstance(rec.get("params"), dict):
        raise ChipImageError(f"{where}: device_model must be an object with a family and params")
    fam = FAMILIES.get(rec["family"])
    from device_models.inference import InferenceModel
    if fam is None or not issubclass(fam, InferenceModel):
        raise ChipImageError(f"{where}: device_model family {rec['family']!r} is not a known inference family")
    try:
        model = device_models.from_params(rec["family"], rec["params"], source=f"{where} device_model")
    except (ValueError, TypeError, OverflowError) as e:
        raise ChipImageError(f"{where}: device_model: {e}") from None
    card = rec.get("card")
    object.__setattr__(model, "card", card if isinstance(card, str) else None)
    m = tile.config.mapping
    tol = 1e-6 * model.g_max
    if m.g_min < model.g_min - tol or m.g_max > model.g_max + tol:
        raise ChipImageError(f"{where}: the stored device range [{model.g_min}, {model.g_max}] uS does not "
                             f"contain the mapping's [{m.g_min}, {m.g_max}] uS")
    return model


# ----------------------------------------------------------------------------------------------- checks

ROOT_FIELDS = frozenset({"kind", "aimc_version", "structure", "structure_sha256", "content_sha256"})
ARRAY_FIELDS = frozenset({"name", "config", "seed", "module_programmed", "device_model"})
TILE_FIELDS = ("tile_id", "shape", "stream", "time", "programmed", "map_params", "compensation", "engine")


def _no_extra(meta: dict, allowed, where: str, what: str) -> None:
    """Refuse meta fields this format does not define (nothing unknown rides along in an image)."""
    extra = sorted(str(k)[:40] for k in set(meta) - set(allowed))
    if extra:
        _fail(where, f"{what} has unexpected field(s) {extra[:5]}")


def _fail(where: str, msg: str):
    raise ChipImageError(f"{where}: {msg}")


def _tile_spec(tile: Tile, meta: dict, model) -> dict:
    """name -> (shape, allowed dtypes, required) of the datasets a tile group must hold."""
    from .config import DriftCompensation
    from .mapping import n_devices
    out, inp = tile.shape
    spec = {"scale": ((out,), ("<f4",), True)}
    # the reference column of an offset-encoded sliced tile is one more forward column (ADC, calibrated range);
    # images written before it existed hold none (``tile.image_has_reference``; ``_check_reference``)
    ref = tile.config.mapping.reference_column
    for key, n, n_in in (("forward", out, inp), ("backward", inp, out)):  # converter errors drawn once per chip
        io = getattr(tile.config, key)
        if io.adc_drawn:
            ns = [n, n + 1] if ref and key == "forward" else [n]
            bits = max(io.out_bits, 1)
            groups = [-(-c // io.columns_per_adc) for c in ns]
            spec[f"adc_{key}_gain"] = ([(c,) for c in ns], ("<f4",), True)
            spec[f"adc_{key}_offset"] = ([(c,) for c in ns], ("<f4",), True)
            spec[f"adc_{key}_caps"] = ([(g if io.adc.value == "sar" else 0, bits) for g in groups], ("<f4",), True)
            # comparators per ADC; before columns_per_adc, a uniform ADC's (unused) ones came in groups of 8
            comp = [(g,) for g in groups] + ([(-(-n // 8),)] if io.adc.value == "uniform" else [])
            spec[f"adc_{key}_comp"] = (comp, ("<f4",), True)
            if io.adc.value == "ramp":
                spec[f"adc_{key}_inl"] = ((2 ** io.out_bits - 1,), ("<f4",), True)
        if io.dac_drawn:
            spec[f"dac_{key}_levels"] = ((n_in, 2 ** (io.inp_bits - 1)), ("<f4",), True)
    if not meta["programmed"]:
        spec["w"] = ((out, inp), ("<f4",), True)
        return spec
    d = (n_devices(tile.config.mapping), out, inp)
    for k in ("g_target", "g_prog", "nu", "G"):
        spec[k] = (d, ("<f4",), True)
    spec["stuck"] = (d, ("|b1",), True)
    spec["z"] = (d, ("<f4", "<f8"), False)
    if ref:  # all or none (``_check_reference``)
        S = tile.config.mapping.n_slices
        for k in ("ref_g_target", "ref_g_prog", "ref_nu", "ref_G"):
            spec[k] = ((S, 1, inp), ("<f4",), False)
        spec["ref_stuck"] = ((S, 1, inp), ("|b1",), False)
        spec["ref_z"] = ((S, 1, inp), ("<f4", "<f8"), False)
    comp = meta["compensation"] != DriftCompensation.NONE.value
    # a global factor is written as shape (1,) (np.ascontiguousarray of a 0-d array is 1-d)
    cshape = (out,) if meta["compensation"] == DriftCompensation.PER_COLUMN.value else [(1,), ()]
    spec["comp_ref"] = (cshape, ("<f4",), comp)
    spec["comp_alpha"] = (cshape, ("<f4",), comp)
    # calibrated converter ranges (aimc.calibration), optional: images written before calibration hold none
    spec["cal_input_range"] = ([(1,), ()], ("<f4",), False)
    S = tile.config.mapping.n_slices  # ranges per weight slice (each slice is its own ADC read)
    cols = [out, out + 1] if ref else [out]
    spec["cal_adc_range"] = ([(1,)] + [(c,) for c in cols] + ([(S, 1)] + [(S, c) for c in cols] if S > 1 else []),
                             ("<f4",), False)
    return spec


def _check_meta(meta, tile: Tile, model, where: str) -> None:
    """Every field of a tile's meta: types, ranges, and agreement with the target tile."""
    from .config import DriftCompensation
    from .inference import MAX_TIME_S, _is_powerlaw
    if not isinstance(meta, dict):
        _fail(where, "tile meta must be a JSON object")
    missing = [k for k in TILE_FIELDS if k not in meta]
    if missing:
        _fail(where, f"tile meta lacks {missing}")
    _no_extra(meta, TILE_FIELDS, where, "tile meta")
    if meta["shape"] != list(tile.shape):
        _fail(where, f"tile shape {meta['shape']!r} in the image, {list(tile.shape)} in the model")
    st = meta["stream"]
    if not isinstance(st, dict) or set(st) != {"seed", "stream_id", "call"}:
        _fail(where, f"stream must be {{seed, stream_id, call}}, got {str(st)[:80]}")
    for k in ("seed", "call"):
        v = st[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            _fail(where, f"stream.{k} must be an integer in [0, 2**63), got {str(v)[:40]}")
    if st["stream_id"] != tile.stream.stream_id:
        _fail(where, f"stream id {str(st['stream_id'])[:80]!r} in the image, {tile.stream.stream_id!r} in the model")
    if not isinstance(meta["programmed"], bool):
        _fail(where, "programmed must be true or false")
    comps = [c.value for c in DriftCompensation]
    if meta["compensation"] not in comps:
        _fail(where, f"compensation {str(meta['compensation'])[:40]!r} is not one of {comps}")
    t = meta["time"]
    if not meta["programmed"]:
        if t is not None or meta["map_params"] is not None or meta["engine"] is not None \
                or meta["compensation"] != "none":
            _fail(where, "an unprogrammed tile has no clock, map_params, engine or compensation")
        return
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 <= t <= MAX_TIME_S:
        _fail(where, f"clock (time) must be a finite number of seconds in [0, {MAX_TIME_S:g}], got {str(t)[:40]}")
    mp = meta["map_params"]
    if not isinstance(mp, dict) or set(mp) != {"scale", "w_min"}:
        _fail(where, "map_params must be {scale, w_min}")
    for k, lo in (("scale", 0.0), ("w_min", None)):
        v = mp[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (lo is not None and v <= lo) or abs(v) > 1e30:
            _fail(where, f"map_params.{k} must be a finite number{' > 0' if lo is not None else ''}, got {str(v)[:40]}")
    if meta["engine"] not in ("fused", "numpy"):
        _fail(where, f"engine must be 'fused' or 'numpy', got {str(meta['engine'])[:40]!r}")
    if meta["engine"] == "fused" and (model is None or not _is_powerlaw(model)):
        _fail(where, "engine 'fused' needs a power-law drift device model")


def _check_values(arrays: dict, tile: Tile, model, where: str) -> None:
    """Finiteness and physical ranges of every array of a tile (shapes and dtypes were checked on declaration)."""
    m = tile.config.mapping
    _check_reference(arrays, tile, where)
    g_hi = 10.0 * max(m.g_max, model.g_max if model is not None else 0.0)
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            _fail(f"{where}/{name}", "contains NaN or inf")
    for name in ("scale", "comp_ref", "comp_alpha", "cal_input_range", "cal_adc_range"):
        if name in arrays and not (arrays[name] > 0).all():
            _fail(f"{where}/{name}", "must be > 0 everywhere")
    if "w" in arrays and arrays["w"].size and np.abs(arrays["w"]).max() > 1e30:
        _fail(f"{where}/w", "holds values beyond 1e30")
    sc = arrays.get("scale")
    if sc is not None and sc.size and sc.max() > 1e30:   # the bound of the stored weights ``w`` above
        _fail(f"{where}/scale", "column scales beyond 1e30")
    tol = 1e-4 * m.g_max
    for name in ("g_target", "ref_g_target"):
        if name in arrays and arrays[name].size:
            g = arrays[name]
            lo, hi = (model.g_min, model.g_max) if model is not None else (m.g_min, m.g_max)
            if g.min() < lo - tol or g.max() > hi + tol:
                _fail(f"{where}/{name}", f"lies outside the conductance range [{lo}, {hi}] uS")
    for name in ("g_prog", "G", "ref_g_prog", "ref_G"):
        if name in arrays and arrays[name].size:
            g = arrays[name]
            if g.min() < 0 or g.max() > g_hi:
                _fail(f"{where}/{name}", f"conductances must lie in [0, {g_hi:g}] uS, got "
                                        f"[{float(g.min()):g}, {float(g.max()):g}]")
    for name in ("nu", "ref_nu"):
        if name in arrays and arrays[name].size and np.abs(arrays[name]).max() > 10:
            _fail(f"{where}/{name}", "drift exponents beyond |nu| = 10")
    for name, a in arrays.items():  # drawn converter errors: physical magnitudes (a sign or range check each)
        if name.startswith("adc_") and name.endswith("_caps") and a.size and a.min() < 0:
            _fail(f"{where}/{name}", "capacitors must be >= 0")
        if name.startswith(("adc_", "dac_")) and a.size and np.abs(a).max() > 1e9:
            _fail(f"{where}/{name}", "holds values beyond 1e9")
        if name.startswith("dac_") and a.size and (a[:, 0] != 0).any():
            _fail(f"{where}/{name}", "a DAC's code 0 must give level 0 (its end-point)")


def _check_reference(arrays: dict, tile: Tile, where: str) -> None:
    """The reference column's datasets all or none (``z`` as the weights' own), and every forward column count
    (drawn ADCs, per-column calibrated ranges) that of the weights plus the reference column if there is one."""
    from .tile import REF_KEYS, image_has_reference
    present = [k for k in REF_KEYS if k in arrays]
    if present:
        want = [k for k in REF_KEYS if k != "ref_z" or "z" in arrays]
        missing = [k for k in want if k not in arrays]
        if missing or ("ref_z" in arrays) != ("z" in arrays):
            _fail(where, f"the reference column's datasets come all or none: has {present}, lacks "
                         f"{missing or ['ref_z' if 'z' in arrays else 'z']}")
    programmed = "G" in arrays
    if not tile.config.mapping.reference_column:
        return
    ref = image_has_reference(tile, {"programmed": programmed}, arrays)
    n = tile.out_size + ref
    gain = arrays.get("adc_forward_gain")
    off = arrays.get("adc_forward_offset")
    if gain is not None and off is not None and off.shape != gain.shape:
        _fail(f"{where}/adc_forward_offset", f"has shape {off.shape}, adc_forward_gain {gain.shape}")
    if gain is not None and gain.shape[0] != n:
        _fail(f"{where}/adc_forward_gain", f"has {gain.shape[0]} columns, the tile reads {n} "
                                           f"({'with' if ref else 'without'} its reference column)")
    cal = arrays.get("cal_adc_range")
    if cal is not None and cal.shape[-1] not in (1, n):
        _fail(f"{where}/cal_adc_range", f"has {cal.shape[-1]} columns, the tile reads {n} "
                                        f"({'with' if ref else 'without'} its reference column)")


def check_tile_state(tile: Tile, meta, arrays: dict, model, where: str) -> None:
    """Check an in-memory tile state (``Tile._get_state`` form, e.g. from a torch state dict) as a chip image's
    is checked: meta fields, dataset names, shapes and dtypes, then values. Raises ChipImageError."""
    _check_meta(meta, tile, model, where)
    spec = _tile_spec(tile, meta, model)
    for n, a in arrays.items():
        if n not in spec:
            _fail(f"{where}/{n}", "unexpected array")
        shape, dtypes, _ = spec[n]
        shapes = [tuple(x) for x in shape] if isinstance(shape, list) else [tuple(shape)]
        if not isinstance(a, np.ndarray) or a.shape not in shapes or a.dtype.str not in dtypes:
            _fail(f"{where}/{n}", f"has shape {getattr(a, 'shape', None)} and dtype {getattr(a, 'dtype', None)}, "
                                  f"expected {' or '.join(map(str, shapes))} and {' or '.join(dtypes)}")
    for n, (_, _, required) in spec.items():
        if required and n not in arrays:
            _fail(f"{where}/{n}", "missing")
    _check_values(arrays, tile, model, where)


def restore_tiles(plan, where: str) -> None:
    """``tile._set_state`` for every (tile, meta, arrays, model) in ``plan``, all or nothing."""
    _restore(Path(where), plan, [])


# ----------------------------------------------------------------------------------------------- file access

class _Reader:
    """Reads a chip image through checked accessors only (see the module docstring)."""

    def __init__(self, path: Path):
        import h5py
        self.h5py = h5py
        self.path = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ChipImageNotFound(f"chip image not found: {path}") from None
        except OSError as e:
            raise ChipImageError(f"{path}: cannot access the chip image: {e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ChipImageError(f"{path}: not a regular file (a chip image is an HDF5 file)")
        try:
            self.f = h5py.File(path, "r")
        except OSError as e:
            raise ChipImageError(f"{path}: not a readable HDF5 chip image (truncated or corrupt file?): {e}") from None

    def close(self):
        self.f.close()

    def where(self, part: str) -> str:
        return f"{self.path}: {part}" if part else str(self.path)

    def attr(self, obj, name: str, part: str, kind: str = "str", required: bool = True):
        """A scalar attribute, type- and size-checked before it is read."""
        h5py = self.h5py
        w = self.where(f"{part} attribute {name!r}")
        if name not in obj.attrs:
            if required:
                _fail(w, "missing")
            return None
        aid = obj.attrs.get_id(name)
        if aid.shape not in ((), None) and aid.shape != (1,):
            _fail(w, f"must be a scalar, has shape {aid.shape}")
        if kind == "str":
            if h5py.check_string_dtype(aid.dtype) is None:
                _fail(w, f"must be a string, has dtype {aid.dtype}")
            if aid.get_storage_size() > MAX_META_BYTES:
                _fail(w, f"is larger than {MAX_META_BYTES} bytes")
            v = obj.attrs[name]
            if isinstance(v, np.ndarray):
                v = v.reshape(-1)[0]
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    _fail(w, "is not UTF-8 text")
            if not isinstance(v, str) or len(v) > MAX_META_BYTES:
                _fail(w, f"must be a string of at most {MAX_META_BYTES} bytes")
            return v
        if aid.dtype.kind not in "iu":
            _fail(w, f"must be an integer, has dtype {aid.dtype}")
        return int(np.asarray(obj.attrs[name]).reshape(-1)[0])

    def json(self, obj, part: str):
        from .config import ConfigError, loads_json
        text = self.attr(obj, "meta", part)
        try:
            d = loads_json(text, self.where(f"{part} meta"))
        except ConfigError as e:
            raise ChipImageError(str(e)) from None
        if not isinstance(d, dict):
            _fail(self.where(f"{part} meta"), "must be a JSON object")
        return text, d

    def members(self, g, part: str, expect_groups: set, expect_datasets: dict | None = None) -> dict:
        """Check a group's members: hard links only, exactly the expected groups; datasets checked against
        ``expect_datasets`` (name -> (shape, dtypes, required)); unknown datasets refused. Returns the
        dataset objects by name (nothing read yet)."""
        h5py = self.h5py
        names = list(g.keys())
        datasets = {}
        for n in names:
            w = self.where(f"{part}/{n}")
            link = g.get(n, getlink=True)
            if not isinstance(link, h5py.HardLink):
                _fail(w, f"is a {type(link).__name__}; chip images hold hard links only (soft and external "
                         f"links are refused: a file never names another file)")
            cls = g.get(n, getclass=True)
            if cls is h5py.Group:
                if n not in expect_groups:
                    _fail(w, "unexpected group")
            elif cls is h5py.Dataset:
                if expect_datasets is None or n not in expect_datasets:
                    _fail(w, "unexpected dataset")
                datasets[n] = self._check_dataset(g[n], expect_datasets[n], w)
            else:
                _fail(w, f"unexpected object ({getattr(cls, '__name__', cls)})")
        missing = sorted(expect_groups - set(names))
        if missing:
            _fail(self.where(part or "/"), f"missing group(s) {missing}")
        for n, (_, _, required) in (expect_datasets or {}).items():
            if required and n not in datasets:
                _fail(self.where(f"{part}/{n}"), "missing dataset")
        return datasets

    def _check_dataset(self, ds, spec, w: str):
        shape, dtypes, _ = spec
        if ds.is_virtual:
            _fail(w, "is a virtual dataset (it would read other files); refused")
        if ds.external:
            _fail(w, "uses external storage (it would read other files); refused")
        if ds.id.get_create_plist().get_nfilters() != 0:
            _fail(w, "is filtered (compressed); chip images store plain data")
        shapes = [tuple(x) for x in shape] if isinstance(shape, list) else [tuple(shape)]
        if ds.shape not in shapes:
            _fail(w, f"declares shape {ds.shape}, the model implies {' or '.join(map(str, shapes))}")
        if ds.dtype.str not in dtypes or ds.dtype.fields is not None:
            _fail(w, f"has dtype {ds.dtype}, expected {' or '.join(dtypes)}")
        return ds

    def read(self, ds, w: str) -> np.ndarray:
        try:
            return ds[()]
        except Exception as e:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError on damage
            raise ChipImageError(f"{w}: cannot read the data (truncated or corrupt file?): "
                                 f"{type(e).__name__}: {e}") from None


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


def _key_bytes(key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise TypeError("key must be bytes (or str) of at least 16 bytes")
    return bytes(key)


def _signature(key: bytes, digest: str) -> str:
    return "hmac-sha256:" + hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def _write_tree(tmp: Path, tree: dict, root_meta: dict, signature: str | None = None) -> None:
    import h5py
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["meta"] = json.dumps(root_meta, sort_keys=True)
        if signature is not None:
            f.attrs["signature"] = signature
        for path in sorted(tree):
            if path == "/":
                continue
            g = f.require_group(path)
            g.attrs["meta"] = tree[path]["meta"]
            for name, a in tree[path]["data"].items():
                g.create_dataset(name, data=np.ascontiguousarray(a))


# ----------------------------------------------------------------------------------------------- API

def save_chip(obj, path, *, overwrite: bool = False, key: bytes | str | None = None) -> Path:
    """Write the chip state of ``obj`` (Tile, TileArray or module tree) to ``path`` (HDF5, atomic).

    An existing ``path`` is an error (``ChipImageExists``, also a ``FileExistsError``) unless
    ``overwrite=True``, checked atomically when the file is put in place. ``key`` (>= 16 bytes) signs the
    image with HMAC-SHA256 (see the module docstring). Returns the path.
    """
    from .. import __version__
    kind, entries = _arrays_of(obj)
    kb = None if key is None else _key_bytes(key)
    path = Path(path)
    if path.is_dir():
        raise ChipImageError(f"{path}: is a folder; give the chip image a file name")
    if not overwrite and os.path.lexists(path):
        raise ChipImageExists(f"chip image {path} exists; refusing to overwrite it (pass overwrite=True)")
    structure = _structure(kind, entries)
    tree = {}
    for i, (name, module, arr) in enumerate(entries):
        programmed = None if module is None else bool(getattr(module, "programmed", False))
        try:
            record = _model_record(_first_tile(arr).device_model())
        except ValueError as e:
            raise ChipImageError(f"{path}: cannot resolve the device model of {name or 'the array'!r}: {e}") from None
        a_meta = {"name": name, "config": arr.config.to_dict(), "seed": arr.seed, "module_programmed": programmed,
                  "device_model": record}
        tree[f"/a{i}"] = {"meta": json.dumps(a_meta, sort_keys=True), "data": {}}
        for r, c, tile in _tiles_of(arr):
            meta, data = tile._get_state()
            tree[f"/a{i}/t{r}_{c}"] = {"meta": json.dumps(meta, sort_keys=True), "data": data}
    root_meta = {"kind": kind, "aimc_version": __version__, "structure": structure,
                 "structure_sha256": _sha(structure)}
    root_meta["content_sha256"] = _digest(tree, root_meta)
    sig = None if kb is None else _signature(kb, root_meta["content_sha256"])
    try:
        return atomic_write(path, lambda tmp: _write_tree(tmp, tree, root_meta, sig), overwrite=overwrite)
    except FileExistsError:
        raise ChipImageExists(f"chip image {path} exists; refusing to overwrite it (pass overwrite=True)") from None


def load_chip(path, obj, *, key: bytes | str | None = None):
    """Restore the chip state saved at ``path`` into ``obj`` (same kind, names, shapes and configs).

    Everything is checked before ``obj`` changes, and the restore is all or nothing (see the module
    docstring). With ``key`` the image must carry a valid HMAC signature under that key. Returns ``obj``.
    """
    path = Path(path)
    kind, entries = _arrays_of(obj)
    kb = None if key is None else _key_bytes(key)
    rd = _Reader(path)
    from device_models.cards import names_only
    try:
        with names_only(str(path)):  # a card inside the image must be a shipped card's name, never a path
            root_meta, tree, plan, arrays_plan, signature = _read_checked(rd, kind, entries)
    except ChipImageError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged HDF5 metadata surfaces as many exception types
        raise ChipImageError(f"{path}: cannot read the chip image (truncated or corrupt file?): "
                             f"{type(e).__name__}: {e}") from None
    finally:
        rd.close()
    digest = _digest(tree, root_meta)
    if root_meta.get("content_sha256") != digest:
        raise ChipImageError(f"{path}: chip image is corrupt: content checksum mismatch (the file was damaged "
                             f"or modified after it was written)")
    if kb is not None:
        if signature is None:
            raise ChipImageError(f"{path}: the chip image is not signed, but a key was given")
        if not hmac.compare_digest(signature, _signature(kb, digest)):
            raise ChipImageError(f"{path}: the chip image's signature does not match the key (modified, or "
                                 f"signed with another key)")
    for tile, meta, arrays, model in plan:
        _check_values(arrays, tile, model, str(path) + ": " + meta["_part"])
    _restore(path, plan, arrays_plan)
    return obj


def _read_checked(rd: _Reader, kind: str, entries):
    """Read and check everything the target implies: (root meta, digest tree, tile plan, array plan, signature)."""
    f, path = rd.f, rd.path
    fmt = rd.attr(f, "format", "root", required=False)
    if fmt != FORMAT:
        raise ChipImageError(f"{path}: not an aimc chip image (format attribute {fmt!r}, expected {FORMAT!r})")
    ver = rd.attr(f, "format_version", "root", kind="int")
    if ver > FORMAT_VERSION:
        raise ChipImageError(f"{path}: chip image format version {ver} is newer than this aimc reads "
                             f"(up to {FORMAT_VERSION}); upgrade aimc to load it")
    if ver < 1:
        raise ChipImageError(f"{path}: chip image has an invalid format_version {ver} (corrupt file?)")
    _, root_meta = rd.json(f, "root")
    signature = rd.attr(f, "signature", "root", required=False)
    _no_extra(root_meta, ROOT_FIELDS, str(path), "root meta")
    saved = root_meta.get("structure")
    if root_meta.get("kind") != kind:
        raise ChipImageError(f"{path}: the chip image holds a {str(root_meta.get('kind'))[:40]!r}, cannot load it "
                             f"into a {kind!r}")
    mine = _structure(kind, entries)
    if not isinstance(saved, list) or not all(isinstance(d, dict) for d in saved):
        raise ChipImageError(f"{path}: root meta 'structure' must be a list of objects")
    if root_meta.get("structure_sha256") != _sha(mine) or saved != mine:
        raise ChipImageError(f"{path}: the model does not match the chip image: {_explain(saved, mine)}")
    rd.members(f, "", {f"a{i}" for i in range(len(entries))})
    tree, plan, arrays_plan = {}, [], []
    for i, (name, module, arr) in enumerate(entries):
        part = f"a{i} ({name or type(arr).__name__!r})"
        g = f[f"a{i}"]
        tiles = _tiles_of(arr)
        rd.members(g, f"a{i}", {f"t{r}_{c}" for r, c, _ in tiles}, {})
        raw, a_meta = rd.json(g, f"a{i}")
        _check_array_meta(a_meta, name, arr, ver, rd.where(part))
        tree[f"/a{i}"] = {"meta": raw, "data": {}}
        arrays_plan.append((arr, module, a_meta))
        try:
            model = _model_from_record(a_meta["device_model"], tiles[0][2], rd.where(part)) if ver >= 2 \
                else tiles[0][2].device_model()   # format 1 stored no parameters: the model's own config
        except ValueError as e:
            if isinstance(e, ChipImageError):
                raise
            raise ChipImageError(f"{rd.where(part)}: cannot build the device model: {e}") from None
        for r, c, tile in tiles:
            tpart = f"a{i}/t{r}_{c}"
            w = rd.where(tpart)
            tg = g[f"t{r}_{c}"]
            raw_t, t_meta = rd.json(tg, tpart)
            _check_meta(t_meta, tile, model, w)
            spec = _tile_spec(tile, t_meta, model)
            dsets = rd.members(tg, tpart, set(), spec)
            data = {n: rd.read(ds, f"{w}/{n}") for n, ds in dsets.items()}
            tree[f"/{tpart}"] = {"meta": raw_t, "data": data}
            plan.append((tile, {**t_meta, "_part": tpart}, data, model))
    return root_meta, tree, plan, arrays_plan, signature


def _check_array_meta(a_meta: dict, name: str, arr, ver: int, where: str) -> None:
    from .config import dict_diff
    from .rng import check_seed
    _no_extra(a_meta, ARRAY_FIELDS, where, "array meta")
    if a_meta.get("name") != name:
        _fail(where, f"array name {str(a_meta.get('name'))[:80]!r} does not match")
    try:
        check_seed(a_meta.get("seed"))
    except (TypeError, ValueError) as e:
        _fail(where, str(e))
    if a_meta.get("module_programmed") not in (None, True, False):
        _fail(where, "module_programmed must be true, false or null")
    if ver >= 2 and "device_model" not in a_meta:
        _fail(where, "meta lacks device_model")
    cfg = arr.config
    saved = a_meta.get("config")
    if not isinstance(saved, dict):
        _fail(where, "config must be a JSON object")
    # what is no part of a chip's identity (the calibration *method*, the circuit solver's settings) is left out
    from .config import chip_identity
    a, b = (chip_identity(d) for d in (type(cfg).normalised_dict(saved), cfg.to_dict()))
    if a != b:
        diff = "; ".join(dict_diff(a, b)[:12])
        raise ChipImageError(f"{where}: the config of {name or type(arr).__name__!r} differs from the chip "
                             f"image's (image vs model: {diff})")


def _restore(path: Path, plan, arrays_plan) -> None:
    """Set every tile's state, seeds and module flags; if anything fails, put everything back as it was."""
    missing = object()
    saved_tiles = [(tile, dict(tile.__dict__)) for tile, *_ in plan]
    saved_arrays = [(arr, arr.seed) for arr, _, _ in arrays_plan if isinstance(arr, TileArray)]
    saved_modules = [(m, {k: getattr(m, k, missing) for k in ("programmed", "_synced_version")})
                     for _, m, _ in arrays_plan if m is not None]
    try:
        for tile, meta, arrays, model in plan:
            tile._model = model
            tile._set_state(meta, arrays)
        for arr, module, a_meta in arrays_plan:
            if isinstance(arr, TileArray):
                arr.seed = a_meta["seed"]
            if module is not None and a_meta.get("module_programmed") is not None:
                try:
                    module.programmed = bool(a_meta["module_programmed"])
                    if not module.programmed and hasattr(module, "_synced_version"):
                        module._synced_version = None
                except AttributeError:  # a read-only property
                    pass
    except BaseException as e:
        for tile, d in saved_tiles:
            tile.__dict__.clear()
            tile.__dict__.update(d)
        for arr, seed in saved_arrays:
            arr.seed = seed
        for m, d in saved_modules:
            for k, v in d.items():
                if v is not missing:
                    try:
                        setattr(m, k, v)
                    except AttributeError:
                        pass
        if not isinstance(e, Exception) or isinstance(e, ChipImageError):
            raise
        raise ChipImageError(f"{path}: restoring the chip state failed, nothing was changed: "
                             f"{type(e).__name__}: {e}") from None


def _explain(saved: list[dict], mine: list[dict]) -> str:
    """A human account of how two structures differ."""
    sn = {d.get("name"): d for d in saved}
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
    if not parts and [d.get("name") for d in saved] != [d["name"] for d in mine]:
        parts.append("the analog modules are in a different order")
    return "; ".join(parts) or "the structure hash differs"
