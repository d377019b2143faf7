"""The sweep spec: a TOML file (or dict) -> a validated :class:`SweepSpec`, expanded into chip-instance tasks.

No torch and no dask here: a spec is checked completely — every field, every axis, every hardware variant
on every device and compensation — before any task starts, and every error names the field.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import ConfigError, TileConfig, _SUBNODES, _Node, as_config

__all__ = ["SpecError", "SweepSpec", "Task", "load_spec"]

#: top-level fields of a spec and what they hold (the README of this folder documents each)
FIELDS = ("name", "data", "models", "devices", "compensation", "times", "chips", "seed", "config",
          "batch_size", "threads", "chip_images", "variants")
_COMPENSATIONS = ("none", "global", "per_column", "global_exact")
_RESERVED = {"inference.device": "devices", "inference.compensation": "compensation"}


class SpecError(ValueError):
    """A sweep spec is invalid; the message names the field."""


@dataclass(frozen=True)
class Task:
    """One chip instance of one grid point: programmed once, drifted through every time, evaluated."""

    index: int                # position in the grid order (models, devices, compensation, variants, chips)
    model: str                # model name (``SweepSpec.models``)
    device: str
    compensation: str
    variant: int              # index into ``SweepSpec.variants``
    chip: int                 # chip instance r; seed = spec.seed + r, as ``aimc deploy --seed``
    seed: int
    config: dict = field(repr=False, compare=False)   # the resolved TileConfig (dict)

    @property
    def coords(self) -> dict:
        return {"model": self.model, "device": self.device, "compensation": self.compensation,
                "variant": self.variant, "chip": self.chip, "seed": self.seed}


def _as_axis(where: str, v, kind=None) -> list:
    """A list of values (a scalar is a one-value axis); an empty list is an error naming ``where``."""
    vals = list(v) if isinstance(v, (list, tuple)) else [v]
    if not vals:
        raise SpecError(f"{where} is empty: give at least one value")
    if kind is not None:
        for i, x in enumerate(vals):
            if not isinstance(x, kind) or isinstance(x, bool) and kind is not bool:
                raise SpecError(f"{where}[{i}] = {x!r} must be a {getattr(kind, '__name__', kind)}")
    if len(set(map(repr, vals))) != len(vals):
        raise SpecError(f"{where} lists a value twice: {vals!r}")
    return vals


def _int(where: str, v, lo: int, hi: int = 2**31 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SpecError(f"{where} = {v!r} is out of range: an integer in [{lo}, {hi}]")
    return v


def _flatten(d: dict, prefix: str = "") -> dict:
    """``{"forward": {"out_bits": [6, 8]}}`` (TOML dotted keys or sub-tables) -> ``{"forward.out_bits": [6, 8]}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if not v:
                raise SpecError(f"variants.{key} is empty: give a list of values")
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_path(cfg: TileConfig, path: str, value) -> TileConfig:
    """``cfg`` with the field at the dotted ``path`` set to ``value``, validated by the config tree.

    Any field of the tree works (``forward.out_bits``, ``mapping.max_in``, ``inference.verify_tol``, a
    registered extension node's field, a key of a free-form dict field such as
    ``inference.device_params.prog_noise_scale``). Unknown fields raise SpecError naming the path.
    """
    parts = path.split(".")
    if not all(parts):
        raise SpecError(f"variants: bad field path {path!r}")
    d = cfg.to_dict()
    node, obj, cls = d, cfg, TileConfig
    for i, part in enumerate(parts):
        here = ".".join(parts[:i + 1])
        last = i == len(parts) - 1
        if isinstance(obj, _Node) or obj is None and cls is not None:
            known = [f for f in cls.__dataclass_fields__]
            if part not in known:
                raise SpecError(f"variants.{path}: unknown field {here!r} ({cls.__name__} has: {', '.join(known)})")
            if last:
                node[part] = value
                break
            sub = getattr(obj, part) if obj is not None else None
            sub_cls = _SUBNODES.get((cls, part))
            if node.get(part) is None:
                if sub_cls is None:
                    raise SpecError(f"variants.{path}: {here!r} is a value, not a section")
                node[part] = {}
            elif not isinstance(node[part], dict):
                raise SpecError(f"variants.{path}: {here!r} is a value, not a section")
            node, obj, cls = node[part], sub, sub_cls
        else:          # a free-form dict field (e.g. device_params): any key, validated by its owner
            if last:
                node[part] = value
                break
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"variants.{path}: {here!r} is a value, not a section")
            obj, cls = None, None
    return TileConfig.from_dict(d)


def _check_device(card: str) -> str:
    from ..deployment.deploy import check_device
    try:
        return check_device(card)
    except ValueError as e:
        raise SpecError(f"devices: {e}") from None


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: models x devices x compensation x variants x chips, each drifted through ``times``.

    Build it with :func:`load_spec` (a TOML file) or :meth:`from_dict`; both validate everything.
    ``variants`` is the product of the ``[variants]`` axes: a tuple of ``{dotted path: value}`` dicts
    (one empty dict when there are no axes).
    """

    data: str
    models: tuple            # ((name, path or None for the shipped default), ...)
    devices: tuple
    compensation: tuple
    times: tuple             # labels as given ("1s", "1d", ...)
    times_s: tuple
    chips: int
    seed: int = 0
    base_config: dict | None = None
    variant_axes: dict = field(default_factory=dict)
    variants: tuple = ({},)
    batch_size: int = 1000
    threads: int = 1
    chip_images: bool = False
    name: str = "sweep"

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, d: dict, base_dir: str | Path | None = None) -> "SweepSpec":
        """Validate a spec dict (the TOML's content); relative paths are taken from ``base_dir``."""
        from ..deployment.deploy import parse_times
        if not isinstance(d, dict):
            raise SpecError(f"a sweep spec must be a table of fields, got {type(d).__name__}")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise SpecError(f"unknown field(s) {unknown}; a sweep spec has: {', '.join(FIELDS)}")
        for req in ("models", "devices", "times", "chips"):
            if req not in d:
                raise SpecError(f"missing field {req!r} (required: models, devices, times, chips)")
        name = d.get("name", "sweep")
        if not isinstance(name, str) or not name:
            raise SpecError(f"name = {name!r} must be a non-empty string")
        data = d.get("data", "mnist5k")
        if not isinstance(data, str) or not (data in ("mnist5k", "digits") or (base / data).is_dir()):
            raise SpecError(f"data = {data!r}: use mnist5k, digits, or a folder holding MNIST IDX files")
        if data not in ("mnist5k", "digits"):
            data = str((base / data).resolve())
        models = []
        for i, m in enumerate(_as_axis("models", d["models"], str)):
            if m == "default":
                models.append(("default", None))
                continue
            p = (base / m).resolve()
            if not p.is_file():
                raise SpecError(f"models[{i}] = {m!r}: no such checkpoint file ({p})")
            models.append((m, str(p)))
        devices = tuple(_check_device(c) for c in _as_axis("devices", d["devices"], str))
        comps = _as_axis("compensation", d.get("compensation", "global"), str)
        for i, c in enumerate(comps):
            if c not in _COMPENSATIONS:
                raise SpecError(f"compensation[{i}] = {c!r} is not one of {', '.join(_COMPENSATIONS)}")
        times = d["times"]
        items = _as_axis("times", [s.strip() for s in times.split(",")] if isinstance(times, str) else times)
        try:
            secs, labels = parse_times(items)
        except ValueError as e:
            raise SpecError(f"times: {e}") from None
        chips = _int("chips", d["chips"], 1, 100_000)
        seed = _int("seed", d.get("seed", 0), 0, 2**31 - 1 - chips)
        batch = _int("batch_size", d.get("batch_size", 1000), 1, 10**7)
        threads = _int("threads", d.get("threads", 1), 1, 1024)
        images = d.get("chip_images", False)
        if not isinstance(images, bool):
            raise SpecError(f"chip_images = {images!r} must be true or false")
        base_cfg = None
        if "config" in d:
            c = d["config"]
            if not isinstance(c, (str, dict)):
                raise SpecError(f"config = {c!r}: a preset name, a TileConfig JSON file, or an inline table")
            if isinstance(c, str) and not c.endswith(".json"):
                src = c
            elif isinstance(c, str):
                src = base / c
                if not src.is_file():
                    raise SpecError(f"config = {c!r}: no such file ({src})")
            else:
                src = c
            try:
                base_cfg = as_config(src).to_dict()
            except (ConfigError, ValueError) as e:
                raise SpecError(f"config: {e}") from None
        raw = d.get("variants", {})
        if not isinstance(raw, dict):
            raise SpecError(f"variants must be a table of field paths -> lists of values, got {raw!r}")
        axes = {}
        for path, vals in _flatten(raw).items():
            if path in _RESERVED:
                raise SpecError(f"variants.{path}: sweep it with the top-level {_RESERVED[path]!r} axis")
            axes[path] = tuple(_as_axis(f"variants.{path}", vals))
        variants = tuple(dict(zip(axes, combo)) for combo in itertools.product(*axes.values())) or ({},)
        spec = cls(data=data, models=tuple(models), devices=devices, compensation=tuple(comps),
                   times=tuple(labels), times_s=tuple(secs), chips=chips, seed=seed, base_config=base_cfg,
                   variant_axes=axes, variants=variants, batch_size=batch, threads=threads, chip_images=images,
                   name=name)
        spec._check_configs()
        return spec

    def _check_configs(self) -> None:
        """Every axis value alone, then every (device, compensation, variant): a config the tree accepts."""
        from ..core.inference import build_device_model
        first = self._base(self.devices[0], self.compensation[0])
        for path, vals in self.variant_axes.items():
            for v in vals:
                try:
                    set_path(first, path, v)
                except ConfigError as e:
                    raise SpecError(f"variants.{path} = {v!r}: {e}") from None
        for dev, comp in itertools.product(self.devices, self.compensation):
            for k, var in enumerate(self.variants):
                where = f"device {dev!r}, compensation {comp!r}" + (f", variant {var}" if var else "")
                try:
                    cfg = self.config_for(dev, comp, k)
                    build_device_model(cfg.inference, cfg.mapping)
                except (ConfigError, ValueError) as e:
                    raise SpecError(f"{where}: {e}") from None

    # ---------------------------------------------------------------------------------------- the grid
    def _base(self, device: str, compensation: str) -> TileConfig:
        from ..deployment.deploy import deploy_config
        base = TileConfig.from_dict(self.base_config) if self.base_config is not None else None
        return deploy_config(device, compensation, base)

    def config_for(self, device: str, compensation: str, variant: int) -> TileConfig:
        """The TileConfig of a grid point: :func:`aimc.deploy.deploy_config` (or ``config``) + the variant."""
        cfg = self._base(device, compensation)
        for path, v in self.variants[variant].items():
            cfg = set_path(cfg, path, v)
        return cfg

    def tasks(self) -> list[Task]:
        """All tasks in grid order; chip r has seed ``seed + r`` whatever the model, device or variant."""
        out = []
        for m, dev, comp, k in itertools.product(self.models, self.devices, self.compensation,
                                                 range(len(self.variants))):
            cfg = self.config_for(dev, comp, k).to_dict()
            for r in range(self.chips):
                out.append(Task(len(out), m[0], dev, comp, k, r, self.seed + r, cfg))
        return out

    @property
    def n_tasks(self) -> int:
        return len(self.models) * len(self.devices) * len(self.compensation) * len(self.variants) * self.chips

    def variant_name(self, k: int) -> str:
        v = self.variants[k]
        return ", ".join(f"{p}={x}" for p, x in v.items()) or "base"

    def to_dict(self) -> dict:
        """The normalised spec (JSON-able); what a results folder is bound to."""
        return {"name": self.name, "data": self.data, "models": [list(m) for m in self.models],
                "devices": list(self.devices), "compensation": list(self.compensation), "times": list(self.times),
                "times_s": list(self.times_s), "chips": self.chips, "seed": self.seed, "config": self.base_config,
                "variants": {k: list(v) for k, v in self.variant_axes.items()}, "batch_size": self.batch_size,
                "threads": self.threads, "chip_images": self.chip_images}


def load_spec(path) -> SweepSpec:
    """Read and validate a TOML sweep spec (relative paths are relative to the spec's folder)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from ..core._io import read_regular_text
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"sweep spec not found: {p}")
    try:
        d = tomllib.loads(read_regular_text(p, "sweep spec"))  # a regular file only (never blocks on a FIFO)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML ({e})") from None
    except RecursionError:
        raise SpecError(f"{p}: nested too deeply") from None
    except ValueError as e:
        raise SpecError(str(e)) from None
    if "name" not in d:
        d["name"] = p.stem
    return SweepSpec.from_dict(d, base_dir=p.parent)

