"""Technology cards: cited TOML files that turn counts into joules, seconds and mm^2 (issue 10).

A card describes one core (array + periphery) at one technology node. Every number is a quantity with its
unit and its source, never a bare number::

    name = "hermes-pcm-14nm"
    citation = "the chip this card stands for"
    provenance = "how the numbers were chosen"
    [array]
    v_read = { value = 0.2, unit = "V", source = "..." }
    encoding = "pwm"                    # pwm | amplitude | bit_serial

An area published at another node carries that node, ``at_node`` (nm), and is scaled to the card's node by
``scale_area``, the ideal rule area ~ (node / at_node)^2 (constant-field scaling, Dennard et al., IEEE JSSC 9(5),
1974: every dimension shrinks with the feature size). For digital logic only: analog blocks (an ADC) do not
shrink that way and are given at the card's node::

    [digital]
    area = { value = 3000, unit = "um2", at_node = 45, source = "Horowitz ISSCC 2014: FP16 mult + add" }

Component-level numbers only (a circuit paper, the ADC survey, a device paper): a card is never fitted to
the chip-level figure it is checked against (``benchmarks/cost_anchors.py``). ``load_card`` validates: a
missing field, a unit that does not fit the quantity, or a non-physical value raises ``CardError`` naming it.
Quantities are returned in SI units (J, s, V, m^2, W) in ``TechCard.q``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on py310 only
    import tomli as tomllib

CARD_DIR = Path(__file__).parent / "cards"

# unit -> factor to SI, per kind of quantity
UNITS = {
    "energy": {"fJ": 1e-15, "pJ": 1e-12, "nJ": 1e-9, "J": 1.0},
    "time": {"ps": 1e-12, "ns": 1e-9, "us": 1e-6, "s": 1.0},
    "voltage": {"mV": 1e-3, "V": 1.0},
    "area": {"nm2": 1e-18, "um2": 1e-12, "mm2": 1e-6, "F2": None},  # F2: in units of the node's feature size^2
    "length": {"nm": 1e-9, "um": 1e-6, "mm": 1e-3},
    "power": {"nW": 1e-9, "uW": 1e-6, "mW": 1e-3, "W": 1.0},
    "power_per_bit": {"uW/bit": 1e-6, "mW/bit": 1e-3},
    "energy_per_step": {"fJ/step": 1e-15, "pJ/step": 1e-12},
    "energy_per_byte": {"fJ/B": 1e-15, "pJ/B": 1e-12},
    "count": {"1": 1.0},
}

# (section, key) -> (kind, lower bound, upper bound, required?) ; bounds in SI, lower bound exclusive
_SCHEMA = {
    ("tech", "node"): ("length", 1e-9, 1e-6, True),
    ("core", "rows"): ("count", 0, 1e6, True),
    ("core", "cols"): ("count", 0, 1e6, True),
    ("array", "v_read"): ("voltage", 0, 5.0, True),
    ("array", "t_lsb"): ("time", 0, 1e-3, False),       # pwm: duration of one DAC step
    ("array", "t_read"): ("time", 0, 1e-3, False),      # amplitude: integration time; bit_serial: per bit
    ("array", "cell_area"): ("area", 0, 1e-9, True),    # per device
    ("dac", "bits"): ("count", 1, 24, True),            # used when the simulated config has no DAC
    ("dac", "pulse_energy"): ("energy", -1e-30, 1e-9, True),  # driver energy per applied pulse per line
    ("dac", "area"): ("area", -1e-30, 1e-6, True),      # per input line driver
    ("adc", "bits"): ("count", 1, 24, True),            # used when the simulated config has no ADC
    ("adc", "fom"): ("energy_per_step", 0, 1e-9, False),   # energy model "walden": E = fom 2^bits
    ("adc", "k1"): ("power_per_bit", 0, 1.0, False),       # energy model "sar_power": P = k1 bits + k0
    ("adc", "k0"): ("power", -1e-30, 1.0, False),
    ("adc", "t_lsb"): ("time", 0, 1e-3, False),         # time model "per_lsb": t = 2^bits t_lsb
    ("adc", "t_cycle"): ("time", 0, 1e-3, False),       # time model "per_bit": t = (bits + 1) t_cycle
    ("adc", "columns_per_adc"): ("count", 0, 1e6, True),
    ("adc", "area"): ("area", 0, 1e-6, True),           # per ADC
    ("digital", "mult_energy"): ("energy", -1e-30, 1e-9, True),  # one scaling multiply (scales, compensation)
    ("digital", "add_energy"): ("energy", -1e-30, 1e-9, True),   # one add (partial sums, shift-add)
    ("digital", "mac_energy"): ("energy", 0, 1e-9, True),        # one MAC of a digital (not converted) layer
    ("digital", "area"): ("area", -1e-30, 1e-3, True),           # one digital unit (area per unit)
    ("digital", "units"): ("count", 0, 1e6, False),              # digital units per core (default 1)
    ("static", "column_power"): ("power", -1e-30, 1e-2, True),   # static/leakage power per output column
    ("static", "core_power"): ("power", -1e-30, 1.0, True),      # static/leakage power per core besides columns
    ("movement", "energy_per_byte"): ("energy_per_byte", -1e-30, 1e-9, True),  # buffer <-> core, per byte
}
_CHOICES = {
    ("array", "encoding"): ("pwm", "amplitude", "bit_serial"),
    ("adc", "energy_model"): ("walden", "sar_power"),
    ("adc", "time_model"): ("per_lsb", "per_bit"),
}
_NEEDS = {  # a choice -> the quantities it needs
    ("array", "encoding", "pwm"): [("array", "t_lsb")],
    ("array", "encoding", "amplitude"): [("array", "t_read")],
    ("array", "encoding", "bit_serial"): [("array", "t_read")],
    ("adc", "energy_model", "walden"): [("adc", "fom")],
    ("adc", "energy_model", "sar_power"): [("adc", "k1"), ("adc", "k0")],
    ("adc", "time_model", "per_lsb"): [("adc", "t_lsb")],
    ("adc", "time_model", "per_bit"): [("adc", "t_cycle")],
}
_FLAGS = {("adc", "overlaps_input"): False}  # a CCO ADC integrates during the input window


def scale_area(area: float, from_node: float, to_node: float) -> float:
    """An area published at ``from_node`` scaled to ``to_node`` (both in m) by the ideal rule
    (to_node / from_node)^2 (constant-field scaling: Dennard et al., IEEE JSSC 9(5), 1974). The ideal rule; the
    Stillmaker-Baas factors fitted to real processes (Integration 58, 2017) shrink less below ~32 nm
    (45 -> 14 nm: 0.17 against 0.097), so below that node this is a lower bound on the area."""
    return area * (to_node / from_node) ** 2


class CardError(ValueError):
    """A technology card is malformed; the message names the card and the field."""


@dataclass(frozen=True)
class TechCard:
    """A validated technology card: SI quantities ``q[(section, key)]``, choices and their sources."""

    name: str
    citation: str
    provenance: str
    q: dict
    choice: dict
    sources: dict = field(repr=False)
    path: str = ""

    def __getitem__(self, key: str) -> float:
        """``card["adc.fom"]``: a quantity in SI units."""
        sec, k = key.split(".")
        return self.q[(sec, k)]

    def get(self, key: str, default=None):
        sec, k = key.split(".")
        return self.q.get((sec, k), default)

    @property
    def rows(self) -> int:
        return int(self.q[("core", "rows")])

    @property
    def cols(self) -> int:
        return int(self.q[("core", "cols")])

    @property
    def encoding(self) -> str:
        return self.choice[("array", "encoding")]

    def adc_energy(self, bits: int) -> float:
        """Energy of one conversion at ``bits`` (J): Walden FOM x 2^bits, or (k1 bits + k0) x conversion time."""
        if self.choice[("adc", "energy_model")] == "walden":
            return self.q[("adc", "fom")] * 2.0 ** bits
        return (self.q[("adc", "k1")] * bits + self.q[("adc", "k0")]) * self.adc_time(bits)

    def adc_time(self, bits: int) -> float:
        """Time of one conversion at ``bits`` (s): 2^bits t_lsb (counting ADC) or (bits + 1) t_cycle (SAR)."""
        if self.choice[("adc", "time_model")] == "per_lsb":
            return self.q[("adc", "t_lsb")] * 2.0 ** bits
        return self.q[("adc", "t_cycle")] * (bits + 1)

    @property
    def adc_overlaps_input(self) -> bool:
        return self.choice[("adc", "overlaps_input")]

    def to_dict(self) -> dict:
        return {"name": self.name, "citation": self.citation, "provenance": self.provenance, "path": self.path,
                "quantities_SI": {f"{s}.{k}": v for (s, k), v in self.q.items()},
                "choices": {f"{s}.{k}": v for (s, k), v in self.choice.items()},
                "sources": {f"{s}.{k}": v for (s, k), v in self.sources.items()}}


def available() -> list[str]:
    """Names of the shipped technology cards."""
    return sorted(p.stem for p in CARD_DIR.glob("*.toml"))


def _path(name) -> Path:
    p = Path(name)
    if p.suffix == ".toml":
        if not p.is_file():
            raise FileNotFoundError(f"technology card file not found: {p}")
        return p
    q = CARD_DIR / f"{name}.toml"
    if q.is_file():
        return q
    raise CardError(f"unknown technology card {str(name)!r}; available: {', '.join(available())}")


def load_card(name) -> TechCard:
    """A shipped card by name (``aimc.cost.available()``) or a path to a ``.toml`` card, validated."""
    path = _path(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise CardError(f"technology card {path}: not valid TOML ({e})") from None
    return parse_card(raw, str(path))


def parse_card(raw: dict, where: str = "card") -> TechCard:
    """Validate a card given as a dict (the parsed TOML); errors name the field."""
    for key in ("name", "citation", "provenance"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CardError(f"technology card {where}: missing field {key!r} (a non-empty string)")
    known = {s for s, _ in _SCHEMA} | {s for s, _ in _CHOICES}
    unknown_sec = sorted(k for k, v in raw.items() if isinstance(v, dict) and k not in known)
    if unknown_sec:
        raise CardError(f"technology card {where}: unknown section(s) {unknown_sec}; allowed: {sorted(known)}")
    for sec in known:
        allowed = {k for s, k in (*_SCHEMA, *_CHOICES, *_FLAGS) if s == sec}
        extra = sorted(set(raw.get(sec, {})) - allowed)
        if extra:
            raise CardError(f"technology card {where}: unknown field(s) {[f'{sec}.{k}' for k in extra]}; "
                            f"allowed in [{sec}]: {sorted(allowed)}")
    choice, q, sources = {}, {}, {}
    for (sec, key), options in _CHOICES.items():
        v = raw.get(sec, {}).get(key)
        if v not in options:
            what = "missing field" if v is None else f"{v!r} is not one of {options} for"
            raise CardError(f"technology card {where}: {what} {sec}.{key}" + ("" if v is not None else
                            f" (one of {options})"))
        choice[(sec, key)] = v
    for (sec, key), default in _FLAGS.items():
        v = raw.get(sec, {}).get(key, default)
        if not isinstance(v, bool):
            raise CardError(f"technology card {where}: {sec}.{key} must be true or false, got {v!r}")
        choice[(sec, key)] = v
    needed = {k for (s, c, opt), ks in _NEEDS.items() if choice[(s, c)] == opt for k in ks}
    node = None
    for (sec, key), (kind, lo, hi, required) in sorted(_SCHEMA.items(), key=lambda kv: kv[0] != ("tech", "node")):
        name = f"{sec}.{key}"
        entry = raw.get(sec, {}).get(key)
        if entry is None:
            if required or (sec, key) in needed:
                raise CardError(f"technology card {where}: missing field {name} ({kind}, units "
                                f"{', '.join(UNITS[kind])})")
            continue
        if not isinstance(entry, dict) or set(entry) - {"value", "unit", "source", "note", "at_node"} or \
                not {"value", "unit", "source"} <= set(entry):
            raise CardError(f"technology card {where}: {name} must be a table {{ value = ..., unit = \"...\", "
                            f"source = \"...\" }}, got {entry!r}")
        v, unit, src = entry["value"], entry["unit"], entry["source"]
        if not isinstance(src, str) or not src.strip():
            raise CardError(f"technology card {where}: {name} has no source (every number needs its citation)")
        if unit not in UNITS[kind]:
            raise CardError(f"technology card {where}: {name} has unit {unit!r}, which is not a unit of {kind}; "
                            f"use one of {', '.join(UNITS[kind])}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CardError(f"technology card {where}: {name} = {v!r} is not a finite number")
        if kind == "count" and not float(v).is_integer():
            raise CardError(f"technology card {where}: {name} = {v!r} must be a whole number")
        if unit == "F2":
            si = float(v) * node ** 2
        else:
            si = float(v) * UNITS[kind][unit]
        if "at_node" in entry:
            at = entry["at_node"]
            if kind != "area" or unit == "F2":
                raise CardError(f"technology card {where}: {name} has at_node, which only an area in um2/nm2/mm2 "
                                f"may carry (the node it was published at, scaled to the card's node)")
            if isinstance(at, bool) or not isinstance(at, (int, float)) or not (1 <= at <= 1000):
                raise CardError(f"technology card {where}: {name} has at_node = {at!r}; give the node the area "
                                f"was published at in nm (1 to 1000)")
            si = scale_area(si, at * 1e-9, node)
        if not (lo < si <= hi):
            raise CardError(f"technology card {where}: {name} = {v} {unit} is not physical (allowed: "
                            f"{'>=' if lo < 0 else '>'} {max(lo, 0):g} and <= {hi:g} in SI units)")
        q[(sec, key)] = si
        sources[(sec, key)] = src
        if (sec, key) == ("tech", "node"):
            node = si
    return TechCard(raw["name"], raw["citation"], raw["provenance"], q, choice, sources, where)
