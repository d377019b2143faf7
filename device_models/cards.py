"""Device cards: one TOML file per published device, instantiating a registered model family.

Card format (``device_models/cards/<name>.toml``)::

    name = "pcm-joshi2020"
    kind = "inference"            # "inference" (statistics for deployment) or "pulsed" (update response)
    family = "pcm"                # a name registered with @register
    citation = "Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473 (2020)"
    provenance = "coefficients as in aihwkit inference/noise/pcm.py (MIT)"
    [params]
    g_max = 25.0

A family is a frozen dataclass; its ``__post_init__`` validates every field (error names the field and the
allowed range). ``load`` turns unknown or missing fields into errors that name them.

Paths: a card name is a name (no path separators); a path to a user's own ``.toml`` is accepted where the
user writes it, never inside ``names_only``. A file a card names (a preparer's path field, e.g. ``csv``) is
taken from the card's folder, must be a regular file, and is turned into fields before the model is built,
so no model carries a path.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on py310 only
    import tomli as tomllib

CARD_DIR = Path(__file__).parent / "cards"
FAMILIES: dict[str, type] = {}
PREPARERS: dict[str, tuple] = {}  # family -> (fn, path_fields), see register_preparer
KINDS = ("inference", "pulsed")


def register(family: str):
    """Class decorator: make a dataclass model family loadable from cards under ``family``."""

    def deco(cls):
        if family in FAMILIES and FAMILIES[family] is not cls:
            raise RuntimeError(f"device family {family!r} registered twice")
        FAMILIES[family] = cls
        cls.family = family
        return cls

    return deco


def register_preparer(family: str, fn, *, path_fields: tuple = ()):
    """Let ``family`` take card inputs that are not fields of its class (e.g. a measured CSV to fit).

    ``fn(params, source=...) -> params`` runs in :func:`from_params` (and so in :func:`load`) before the class
    is built: it turns the inputs into the family's fields, so the model carries fitted numbers, never the
    input. ``path_fields`` name the inputs that are file paths; they reach ``fn`` as checked ``Path`` objects
    (:func:`_data_path`: relative to the card's folder, regular files only, refused inside ``names_only``).
    """
    if family in PREPARERS and PREPARERS[family][0] is not fn:
        raise RuntimeError(f"preparer of device family {family!r} registered twice")
    PREPARERS[family] = (fn, tuple(path_fields))
    return fn


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
_NAMES_ONLY: contextvars.ContextVar[str | None] = contextvars.ContextVar("device_models_names_only", default=None)
MAX_CARD_BYTES = 4 * 2**20


@contextlib.contextmanager
def names_only(source: str):
    """Within this block a card must be a shipped card's *name*: paths are refused. Used while reading
    configs out of saved files (``source`` names the file in the error), so a file never makes aimc open
    another file it names."""
    token = _NAMES_ONLY.set(source)
    try:
        yield
    finally:
        _NAMES_ONLY.reset(token)


def is_card_path(name) -> bool:
    """Whether ``name`` is written as a path (a separator or a ``.toml`` suffix) rather than a card name."""
    s = os.fspath(name)
    return isinstance(name, Path) or "/" in s or "\\" in s or s.endswith(".toml")


def _card_path(name: str | Path) -> Path:
    """A card name (``CARD_DIR/<name>.toml``) or, where the user wrote it, a path to a regular ``.toml`` file.

    A name is a name: letters, digits, ``_.+-``, no path separator, not starting with a dot (so
    ``../x`` never reaches outside the cards folder). Paths are refused inside ``names_only`` blocks.
    """
    if not isinstance(name, (str, Path)) or not os.fspath(name) or "\0" in os.fspath(name):
        raise ValueError(f"device card must be a card name or a path to a .toml file, got {name!r}")
    s = os.fspath(name)
    if is_card_path(name):
        source = _NAMES_ONLY.get()
        if source is not None:
            raise ValueError(f"device card {s!r} in {source} is a path; a card named inside a saved file must "
                             f"be the name of a shipped card ({', '.join(available())})")
        p = Path(s)
        if p.suffix != ".toml":
            raise ValueError(f"device card {s!r}: a card name has no path separators, and a path to a card must "
                             f"end in .toml; available names: {', '.join(available())}")
        try:
            st = os.stat(p)
        except OSError:
            raise ValueError(f"device card file {s!r} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"device card {s!r} is not a regular file")
        return p
    if not _NAME_RE.match(s):
        raise ValueError(f"device card name {s[:80]!r} is not a name (letters, digits and _.+- only, no path "
                         f"separators); available: {', '.join(available())}")
    q = CARD_DIR / f"{s}.toml"
    if q.is_file():
        return q
    raise ValueError(f"unknown device card {s!r}; available: {', '.join(available())}")


def open_regular(path, what: str = "file"):
    """``path`` opened for binary reading only if it is a regular file: opened non-blocking and checked with
    fstat before anything is read, so a FIFO never blocks; directories and devices are refused by name.
    A missing file is a FileNotFoundError, anything else a ValueError naming ``what``."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {name}") from None
    except OSError as e:
        raise ValueError(f"{what} {name!r}: cannot open ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{what} {name!r} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path, what: str = "device card", limit: int = MAX_CARD_BYTES) -> str:
    """A regular file's UTF-8 text, at most ``limit`` bytes (``open_regular``), or a ValueError naming it."""
    name = str(path)
    with open_regular(path, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ValueError(f"{what} {name!r}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise ValueError(f"{what} {name!r} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {name!r} is not UTF-8 text ({e})") from None


def _data_path(value, *, base: Path | None, what: str) -> Path:
    """The file a path written in a card (or in params) names: relative paths are taken from ``base`` (the
    card's folder; None = as written, i.e. from the working directory, where the user wrote it in code).
    Must exist and be a regular file; refused inside ``names_only`` (a saved file never makes us open
    another file: a saved model carries its fitted parameters instead)."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value) or "\0" in os.fspath(value):
        raise ValueError(f"{what} must be a file path string, got {value!r}")
    s = os.fspath(value)
    source = _NAMES_ONLY.get()
    if source is not None:
        raise ValueError(f"{what} = {s!r} in {source} is a file path; a device inside a saved file carries its "
                         "fitted parameters, never a path to read")
    p = Path(s)
    if base is not None and not p.is_absolute():
        p = base / p
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ValueError(f"{what} = {s!r}: file {str(p)!r} not found") from None
    except OSError as e:
        raise ValueError(f"{what} = {s!r}: cannot open {str(p)!r} ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} = {s!r}: {str(p)!r} is not a regular file")
    return p


def _resolve_paths(family: str, params: dict, base: Path | None, source: str) -> dict:
    """``params`` with the family's path fields (see :func:`register_preparer`) checked by :func:`_data_path`."""
    _, fields = PREPARERS.get(family, (None, ()))
    out = dict(params)
    for k in fields:
        v = out.get(k)
        if v is not None and not (isinstance(v, str) and not v):  # None or "": no file given
            out[k] = _data_path(v, base=base, what=f"{source}: {family}.{k}")
    return out


def read_card(name: str | Path) -> dict:
    """The raw card as a dict (name, kind, family, citation, provenance, params), validated for form."""
    return _read_card_at(_card_path(name))


def _read_card_at(path: Path) -> dict:
    try:
        card = tomllib.loads(read_regular_text(path))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"device card {path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ValueError(f"device card {path}: nested too deeply") from None
    for key in ("name", "kind", "family", "citation", "provenance", "params"):
        if key not in card:
            raise ValueError(f"device card {path}: missing field {key!r}")
    if not isinstance(card["params"], dict):
        raise ValueError(f"device card {path}: [params] must be a table")
    if card["kind"] not in KINDS:
        raise ValueError(f"device card {path}: kind {card['kind']!r} is not one of {KINDS}")
    if card["family"] not in FAMILIES:
        raise ValueError(f"device card {path}: unknown family {card['family']!r}; known: {sorted(FAMILIES)}")
    return card


def from_params(family: str, params: dict, *, source: str = "params", base: str | Path | None = None):
    """Instantiate ``family`` from a dict, naming unknown and missing fields in the error.

    A family with a preparer (:func:`register_preparer`; e.g. ``pulsed-lookup-table`` fits ``csv``) turns its
    inputs into fields first. ``base``: the folder relative file paths in ``params`` are taken from (None:
    as written, i.e. from the working directory).
    """
    cls = FAMILIES.get(family)
    if cls is None:
        raise ValueError(f"unknown device family {family!r}; known: {sorted(FAMILIES)}")
    if not isinstance(params, Mapping):
        raise ValueError(f"{source}: parameters must be a mapping of field names to values, got {params!r}")
    params = dict(params)
    if family in PREPARERS:
        fn, _ = PREPARERS[family]
        params = fn(_resolve_paths(family, params, None if base is None else Path(base), source), source=source)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown} for family {family!r}; allowed: {sorted(fields)}")
    missing = sorted(
        n for n, f in fields.items()
        if n not in params and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{source}: missing required field(s) {missing} for family {family!r}")
    try:
        return cls(**params)
    except OverflowError as e:  # an integer beyond float range
        raise ValueError(f"{source}: a parameter is out of range ({e})") from None
    except RecursionError:
        raise ValueError(f"{source}: a parameter is nested too deeply") from None


def load(name: str | Path, **overrides):
    """Instantiate the model a card describes; keyword overrides replace card parameters.

    File paths written in the card (e.g. a lookup table's ``csv``) are taken from the card's folder; paths
    given as overrides are taken as written (from the working directory). The model carries what they were
    fitted to, not the path.
    """
    path = _card_path(name)
    card = _read_card_at(path)
    source = f"device card {card['name']!r}"
    params = {**_resolve_paths(card["family"], card["params"], path.parent, source), **overrides}
    model = from_params(card["family"], params, source=source)
    object.__setattr__(model, "card", card["name"])
    return model


def available(kind: str | None = None) -> list[str]:
    """Names of the shipped cards, optionally only those of one kind."""
    out = []
    for p in sorted(CARD_DIR.glob("*.toml")):
        if kind is None:
            out.append(p.stem)
        else:
            try:
                if tomllib.loads(p.read_text()).get("kind") == kind:
                    out.append(p.stem)
            except tomllib.TOMLDecodeError:
                continue
    return out
