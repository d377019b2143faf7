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
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on py310 only
    import tomli as tomllib

CARD_DIR = Path(__file__).parent / "cards"
FAMILIES: dict[str, type] = {}
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


def _card_path(name: str | Path) -> Path:
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    q = CARD_DIR / f"{name}.toml"
    if q.exists():
        return q
    raise ValueError(f"unknown device card {str(name)!r}; available: {', '.join(available())}")


def read_card(name: str | Path) -> dict:
    """The raw card as a dict (name, kind, family, citation, provenance, params), validated for form."""
    path = _card_path(name)
    try:
        card = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"device card {path}: not valid TOML ({e})") from None
    for key in ("name", "kind", "family", "citation", "provenance", "params"):
        if key not in card:
            raise ValueError(f"device card {path}: missing field {key!r}")
    if card["kind"] not in KINDS:
        raise ValueError(f"device card {path}: kind {card['kind']!r} is not one of {KINDS}")
    if card["family"] not in FAMILIES:
        raise ValueError(f"device card {path}: unknown family {card['family']!r}; known: {sorted(FAMILIES)}")
    return card


def from_params(family: str, params: dict, *, source: str = "params"):
    """Instantiate ``family`` from a dict, naming unknown and missing fields in the error."""
    cls = FAMILIES.get(family)
    if cls is None:
        raise ValueError(f"unknown device family {family!r}; known: {sorted(FAMILIES)}")
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
    return cls(**params)


def load(name: str | Path, **overrides):
    """Instantiate the model a card describes; keyword overrides replace card parameters."""
    card = read_card(name)
    params = {**card["params"], **overrides}
    model = from_params(card["family"], params, source=f"device card {card['name']!r}")
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
