"""Counts x technology card -> energy (pJ), latency (ns), area (mm^2), TOPS, TOPS/W, TOPS/mm^2 (issue 10).

``cost_tiles`` costs one weight matrix (a ``TileArray``) from what its tiles counted; ``report`` walks a model
(any object with ``named_modules``, e.g. a converted torch model) or a dict of TileArrays; ``measure`` (torch)
resets the counters, runs one forward and reports, counting digital layers as digital. The model of each
term, with the counters it uses (``aimc.cost.counters``), for a tile of n inputs x m outputs read with a
b_in-bit DAC and a b_out-bit ADC (K = b_in - 1 magnitude bits of a signed input):

* array: V_read^2 x G-weighted input sums x time — pwm: t_LSB e_pwm / DAC step; amplitude: t_read e_amp;
  bit-serial: t_read e_bits (circuits_and_cost.md D.3; bit planes counted after ``prepare(model, card)``);
* drivers: ``pulses`` (``bit_pulses`` if bit-serial) x pulse energy;
* ADC: ``adc`` conversions (x K if bit-serial: one per column per input bit) x E_conv(b_out);
* digital: (``dig_in`` + ``dig_out`` + ``dig_comp``) x multiply + (``dig_partial`` + ``dig_shift``) x add (+ the
  shift-adds of a bit-serial card, ``adc`` x (K - 1) x add); digital (unconverted) layers: MACs x MAC energy;
* static: (cols x ``static.column_power`` + ``static.core_power``) per core x cores x the model's latency;
* movement: bytes into and out of every core (inputs at b_in bits, or the tile's ``input_bits``; outputs at
  b_out bits) x ``movement.energy_per_byte``.

A pass is one analog read: one per MVM, weight slice, input cycle and bound-management re-read
(``aimc.cost.counters``), so the ADC conversions of sliced and bit-serial tiles are those the tile did.
Latency of one pass: the input window — pwm (2^(b_in-1) - 1) t_LSB, amplitude t_read, bit-serial K t_read —
then the conversions, t_conv(b_out) x ceil(m / ADCs of the core) (x K if bit-serial), or overlapping the
window when the card's ADC integrates during the input (CCO). ADCs of a core: ceil(cols / columns per ADC),
columns per ADC from the config's ``columns_per_adc`` when above its default 1 (the columns whose converter
errors and range the simulation shares), else the card's.
Assumptions (printed with every report): see ``ASSUMPTIONS``. Area: every tile occupies a full core of the
card (its utilisation is reported).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .cards import TechCard, load_card
from .counters import Counts

ASSUMPTIONS = (
    "latency of one inference alone: the tiles of a layer run in parallel, the passes (MVMs and bound-management "
    "re-reads) of one tile in sequence, layers one after another (no pipelining across layers or inputs)",
    "the weight slices and input cycles of a tile are read one after another, sharing its column ADCs",
    "digital operations (scales, compensation, partial sums, shift-add) overlap the analog reads (not on the "
    "critical path)",
    "static power: every core of the model leaks for the whole inference (no power gating); data movement: each "
    "MVM reads its inputs from the buffer into the core and writes its outputs back (one buffer access and one "
    "bus transfer per byte; router hops between tiles not counted)",
    "area: each tile occupies one full core of the card (array + ADCs + drivers + digital units)",
    "ops = 2 per multiply-accumulate of the weight matrices (re-reads are not ops)",
)


def _resolution(bits_cfg: int, perfect: bool, card_bits: float, what: str, notes: list) -> int:
    if perfect or bits_cfg == 0:
        notes.append(f"the simulated config has no {what} (ideal); costed at the card's {int(card_bits)} bits")
        return int(card_bits)
    return int(bits_cfg)


@dataclass
class LayerCost:
    """Cost of one layer (one weight matrix) over the inputs of a forward; energies in J, latency in s."""

    name: str
    kind: str                       # "analog" or "digital"
    inputs: int
    macs: int = 0
    counts: Counts = field(default_factory=Counts)
    energy: dict = field(default_factory=dict)   # J, all inputs: array, drivers, adc, digital
    latency: float = 0.0            # s per inference (nan: not modelled)
    area: float = 0.0               # m^2
    area_parts: dict = field(default_factory=dict)  # m^2 by part (cells, adcs, drivers, digital)
    tiles: int = 0
    utilisation: float = 0.0
    bits: tuple = ()
    adc_conversions: int = 0        # as costed: x input bits for a bit-serial card
    notes: list = field(default_factory=list)

    @property
    def energy_total(self) -> float:
        return float(sum(self.energy.values()))

    @property
    def energy_per_inference(self) -> float:
        return self.energy_total / self.inputs

    @property
    def tops(self) -> float:
        return 2.0 * self.macs / self.inputs / self.latency / 1e12 if self.latency > 0 else math.nan

    @property
    def tops_per_w(self) -> float:
        e = self.energy_total
        return 2.0 * self.macs / e / 1e12 if e > 0 else math.nan

    @property
    def tops_per_mm2(self) -> float:
        return self.tops / (self.area * 1e6) if self.area > 0 else math.nan

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "tiles": self.tiles, "utilisation": self.utilisation,
                "bits_in_out": list(self.bits), "macs_per_inference": self.macs / self.inputs,
                "adc_conversions_per_inference": self.adc_conversions / self.inputs,
                "counts_per_inference": {k: v / self.inputs for k, v in self.counts.to_dict().items()},
                "energy_pJ_per_inference": {k: v / self.inputs * 1e12 for k, v in self.energy.items()},
                "energy_pJ": self.energy_per_inference * 1e12, "latency_ns": self.latency * 1e9,
                "area_mm2": self.area * 1e6, "area_mm2_by_part": {k: v * 1e6 for k, v in self.area_parts.items()},
                "TOPS": self.tops, "TOPS_per_W": self.tops_per_w,
                "TOPS_per_mm2": self.tops_per_mm2, "notes": list(self.notes)}


def columns_per_adc(card: TechCard, io) -> tuple[int, str]:
    """(columns sharing one ADC, where the number comes from) for a tile read through the IO config ``io``.

    The config's ``columns_per_adc`` (the columns whose converter errors and calibrated range the simulation
    shares) overrides the card when it is above its default 1; at 1 the card's ``adc.columns_per_adc`` holds (a
    config that does not say how ADCs are shared is costed as the card's core)."""
    own = int(getattr(io, "columns_per_adc", 1) or 1)
    if own > 1:
        return own, "config columns_per_adc"
    return int(card["adc.columns_per_adc"]), "card"


def _tile_terms(tile, counts: Counts, card: TechCard, notes: list):
    """(energy dict J, seconds per pass, bits, ADC conversions as costed) of one tile's forward counts."""
    cfg = tile.config
    io = cfg.forward
    b_in = _resolution(io.inp_bits, io.is_perfect, card["dac.bits"], "DAC", notes)
    b_out = _resolution(io.out_bits, io.is_perfect, card["adc.bits"], "ADC", notes)
    K = max(b_in - 1, 1)
    enc = card.encoding
    V2 = card["array.v_read"] ** 2
    uS = 1e-6
    mp = cfg.mapping
    if mp.input_bits and b_in > mp.input_bits_per_cycle + 1:
        notes.append(f"bit-serial inputs of {mp.input_bits_per_cycle} bit(s) per cycle are applied through a "
                     f"{b_in}-bit DAC (forward.inp_bits) and costed so; forward.inp_bits = "
                     f"{mp.input_bits_per_cycle + 1} costs the cycle's own resolution")
    if enc == "pwm":
        step = 2.0 / (2 ** b_in - 2)
        e_array = V2 * card["array.t_lsb"] * counts.e_pwm / step * uS
        t_in = (2 ** (b_in - 1) - 1) * card["array.t_lsb"]
        pulses, conv, shift_adds = counts.pulses, counts.adc, 0
    elif enc == "amplitude":
        e_array = V2 * card["array.t_read"] * counts.e_amp * uS
        t_in = card["array.t_read"]
        pulses, conv, shift_adds = counts.pulses, counts.adc, 0
    else:  # bit_serial
        if io.is_perfect or io.inp_bits == 0:
            raise ValueError(f"tile {tile.tile_id!r}: a bit-serial card needs the DAC codes the tile applied; "
                             f"simulate with forward.inp_bits > 0 (and is_perfect false)")
        if counts.bit_passes != counts.passes:
            raise ValueError(f"tile {tile.tile_id!r}: a bit-serial card needs the bit planes of the DAC codes, "
                             f"counted on {counts.bit_passes} of {counts.passes} passes; call "
                             f"aimc.cost.prepare(model, card) before the forward (measure() and deploy do)")
        e_array = V2 * card["array.t_read"] * counts.e_bits * uS
        t_in = K * card["array.t_read"]
        pulses, conv, shift_adds = counts.bit_pulses, counts.adc * K, counts.adc * (K - 1)
    cpa, where = columns_per_adc(card, io)
    if where != "card":
        notes.append(f"{cpa} columns per ADC from the {where}, not the card's {int(card['adc.columns_per_adc'])}")
    n_adc = max(1, math.ceil(card.cols / cpa))
    t_adc = card.adc_time(b_out) * math.ceil(tile.out_size / n_adc) * (K if enc == "bit_serial" else 1)
    t_pass = max(t_in, t_adc) if card.adc_overlaps_input else t_in + t_adc
    bits_in = mp.input_bits if mp.input_bits else b_in
    moved = counts.mvms * (tile.in_size * bits_in + tile.out_size * b_out) / 8.0
    energy = {"array": e_array, "drivers": pulses * card["dac.pulse_energy"],
              "adc": conv * card.adc_energy(b_out),
              "digital": (counts.dig_in + counts.dig_out + counts.dig_comp) * card["digital.mult_energy"]
              + (counts.dig_partial + counts.dig_shift + shift_adds) * card["digital.add_energy"],
              "movement": moved * card["movement.energy_per_byte"]}
    return energy, t_pass, (b_in, b_out), conv, cpa


def core_static_power(card: TechCard) -> float:
    """Static (leakage and bias) power of one core, W: the card's per-column power x cols + per-core power."""
    return card.cols * card["static.column_power"] + card["static.core_power"]


def core_area_parts(card: TechCard, devices_per_weight: int, cols_per_adc: int | None = None) -> dict:
    """Area (m^2) of one core by part: cells (rows x cols x devices), ADCs (ceil(cols / columns per ADC),
    the card's unless ``cols_per_adc`` is given), row drivers (rows x ``dac.area``), digital units
    (``digital.units`` x ``digital.area``)."""
    n_adc = max(1, math.ceil(card.cols / (cols_per_adc or card["adc.columns_per_adc"])))
    return {"cells": card.rows * card.cols * devices_per_weight * card["array.cell_area"],
            "adcs": n_adc * card["adc.area"], "drivers": card.rows * card["dac.area"],
            "digital": card.get("digital.units", 1.0) * card["digital.area"]}


def core_area(card: TechCard, devices_per_weight: int, cols_per_adc: int | None = None) -> float:
    """Area (m^2) of one core (``core_area_parts`` summed)."""
    return sum(core_area_parts(card, devices_per_weight, cols_per_adc).values())


def fit_config(config, card):
    """``config`` (a TileConfig or anything ``aimc.config.as_config`` takes) with tiles of the card's core size
    (``mapping.max_in`` = rows, ``max_out`` = cols), so that what is costed is what is simulated."""
    from ..core.config import as_config
    card = card if isinstance(card, TechCard) else load_card(card)
    cfg = as_config(config)
    return cfg.replace(mapping=cfg.mapping.replace(max_in=card.rows, max_out=card.cols))


def cost_tiles(name: str, tiles, card: TechCard, inputs: int) -> LayerCost:
    """The cost of one ``TileArray`` from its tiles' forward counts over ``inputs`` inferences."""
    from ..core.mapping import n_devices
    notes: list = []
    lc = LayerCost(name, "analog", inputs)
    parts = core_area_parts(card, n_devices(tiles.config.mapping),
                            columns_per_adc(card, tiles.config.forward)[0])
    area = sum(parts.values())
    lat = 0.0
    used = 0
    bits = set()
    for t in tiles.all_tiles():
        if t.in_size > card.rows or t.out_size > card.cols:
            raise ValueError(f"layer {name!r}: tile {t.tile_id!r} is {t.in_size} inputs x {t.out_size} outputs, "
                             f"larger than the {card.rows} x {card.cols} core of card {card.name!r}; convert with "
                             f"aimc.cost.fit_config(config, card) (mapping.max_in/max_out = the core size)")
        energy, t_pass, b, conv, _ = _tile_terms(t, t.counts, card, notes)
        lc.adc_conversions += conv
        bits.add(b)
        for k, v in energy.items():
            lc.energy[k] = lc.energy.get(k, 0.0) + v
        lat = max(lat, t.counts.passes / inputs * t_pass)
        lc.macs += t.counts.mvms * t.in_size * t.out_size
        used += t.in_size * t.out_size
        if t.counts_backward.mvms:
            notes.append("backward (transposed) reads were counted but are not part of the inference cost")
    lc.counts = tiles.counts("forward")  # the tiles' counts + the partial sums across tiles (on the TileArray)
    lc.energy["digital"] = lc.energy.get("digital", 0.0) + lc.counts.dig_partial * card["digital.add_energy"]
    lc.tiles = sum(1 for _ in tiles.all_tiles())
    lc.area = lc.tiles * area
    lc.area_parts = {k: lc.tiles * v for k, v in parts.items()}
    lc.utilisation = used / (lc.tiles * card.rows * card.cols)
    lc.latency = lat
    lc.energy["static"] = lc.tiles * core_static_power(card) * lat * inputs  # the layer alone; report() uses
    lc.bits = sorted(bits)[0] if bits else ()                                  # the model's latency
    lc.notes = sorted(set(notes))
    return lc


@dataclass
class CostReport:
    """Per-layer and model cost of the inferences of a forward; ``table()``, ``to_dict()``/``to_json()``."""

    card: TechCard
    inputs: int
    layers: list
    time: float | None = None       # seconds since programming of the costed chip (None: not programmed)
    assumptions: tuple = ASSUMPTIONS

    @property
    def analog(self):
        return [lc for lc in self.layers if lc.kind == "analog"]

    @property
    def energy_per_inference(self) -> float:
        """J per inference, analog and digital layers."""
        return sum(lc.energy_total for lc in self.layers) / self.inputs

    @property
    def latency(self) -> float:
        """s per inference over the analog layers (digital layers' latency is not modelled)."""
        return sum(lc.latency for lc in self.analog)

    @property
    def area(self) -> float:
        return sum(lc.area for lc in self.analog)

    @property
    def macs_per_inference(self) -> float:
        return sum(lc.macs for lc in self.layers) / self.inputs

    @property
    def tops(self) -> float:
        macs = sum(lc.macs for lc in self.analog) / self.inputs
        return 2.0 * macs / self.latency / 1e12 if self.latency > 0 else math.nan

    @property
    def tops_per_w(self) -> float:
        e = self.energy_per_inference
        return 2.0 * self.macs_per_inference / e / 1e12 if e > 0 else math.nan

    @property
    def tops_per_mm2(self) -> float:
        return self.tops / (self.area * 1e6) if self.area > 0 else math.nan

    def breakdown(self) -> dict:
        """pJ per inference by term (array, drivers, adc, digital, movement, static, digital_layers)."""
        out: dict = {}
        for lc in self.layers:
            for k, v in lc.energy.items():
                out[k] = out.get(k, 0.0) + v / self.inputs * 1e12
        return out

    def to_dict(self) -> dict:
        return {"card": self.card.name, "card_citation": self.card.citation, "inputs": self.inputs,
                "time_s": self.time,
                "model": {"energy_pJ_per_inference": self.energy_per_inference * 1e12,
                          "latency_ns": self.latency * 1e9, "area_mm2": self.area * 1e6, "TOPS": self.tops,
                          "TOPS_per_W": self.tops_per_w, "TOPS_per_mm2": self.tops_per_mm2,
                          "macs_per_inference": self.macs_per_inference,
                          "energy_breakdown_pJ": self.breakdown()},
                "layers": [lc.to_dict() for lc in self.layers], "assumptions": list(self.assumptions)}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        """A per-layer table, per inference, then the model line, the notes and the assumptions."""
        def f(v, fmt):
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
        hdr = ("layer", "kind", "tiles", "util", "MVMs", "DAC conv", "ADC conv", "re-reads", "energy pJ",
               "latency ns", "area mm2", "TOPS", "TOPS/W", "TOPS/mm2")
        rows = []
        n = self.inputs
        for lc in self.layers:
            c = lc.counts
            analog = lc.kind == "analog"
            rows.append((lc.name, lc.kind, str(lc.tiles) if analog else "-",
                         f"{100 * lc.utilisation:.0f}%" if analog else "-", f(c.mvms / n, ".4g") if analog else "-",
                         f(c.dac / n, ".4g") if analog else "-",
                         f(lc.adc_conversions / n, ".4g") if analog else "-",
                         f(c.rereads / n, ".4g") if analog else "-", f(lc.energy_per_inference * 1e12, ".4g"),
                         f(lc.latency * 1e9, ".4g") if analog else "n/a", f(lc.area * 1e6, ".4g") if analog else "n/a",
                         f(lc.tops, ".3g") if analog else "n/a", f(lc.tops_per_w, ".3g"),
                         f(lc.tops_per_mm2, ".3g") if analog else "n/a"))
        rows.append(("model", "", str(sum(lc.tiles for lc in self.analog)), "", "", "", "", "",
                     f(self.energy_per_inference * 1e12, ".4g"), f(self.latency * 1e9, ".4g"),
                     f(self.area * 1e6, ".4g"), f(self.tops, ".3g"), f(self.tops_per_w, ".3g"),
                     f(self.tops_per_mm2, ".3g")))
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
        line = lambda r: "  ".join(s.rjust(w[i]) if i > 1 else s.ljust(w[i]) for i, s in enumerate(r))  # noqa: E731
        out = [f"cost per inference ({n} inferences) on card {self.card.name}"
               + (f", chip at t = {self.time:g} s" if self.time is not None else ""), line(hdr)]
        out += [line(r) for r in rows]
        b = self.breakdown()
        out.append("energy by term (pJ/inference): " + ", ".join(f"{k} {v:.4g}" for k, v in b.items()))
        if self.analog:
            c = self.card
            out.append(f"static: {core_static_power(c) * 1e6:.4g} uW per core ({c.cols} x "
                       f"{c['static.column_power'] * 1e9:.3g} nW per column + {c['static.core_power'] * 1e9:.3g} nW), "
                       f"source: {c.sources[('static', 'column_power')]}")
            out.append(f"data movement: {b.get('movement', 0.0):.4g} pJ/inference at "
                       f"{c['movement.energy_per_byte'] * 1e12:.3g} pJ/B, source: "
                       f"{c.sources[('movement', 'energy_per_byte')]}")
        notes = sorted({f"{lc.name}: {m}" for lc in self.layers for m in lc.notes})
        out += [f"note: {m}" for m in notes]
        out += [f"assumption: {a}" for a in self.assumptions]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _find_tile_arrays(model) -> list:
    from ..core.tile import TileArray
    if isinstance(model, TileArray):
        return [(model.name or "tiles", model)]
    if isinstance(model, dict):
        bad = [k for k, v in model.items() if not isinstance(v, TileArray)]
        if bad:
            raise TypeError(f"report: dict values must be TileArrays; {bad} are not")
        return list(model.items())
    if not hasattr(model, "named_modules"):
        raise TypeError(f"report: expected a converted model (with named_modules), a TileArray or a dict of "
                        f"TileArrays, got {type(model).__name__}")
    out, seen = [], set()
    for name, mod in model.named_modules():
        for attr, v in vars(mod).items():
            if isinstance(v, TileArray) and id(v) not in seen:
                seen.add(id(v))
                out.append((name or type(mod).__name__, v))
    return out


def report(model, inputs: int, card="hermes-pcm-14nm", digital: dict | None = None) -> CostReport:
    """Cost of the forward reads the tiles of ``model`` counted since their last reset, per inference.

    ``inputs``: number of inferences (samples) those reads served. ``card``: a ``TechCard`` or card name/path.
    ``digital``: {layer name: MACs} of layers that stayed digital (``measure`` fills it), costed as digital.
    """
    if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
        raise ValueError(f"report: inputs must be a positive integer (the number of inferences), got {inputs!r}")
    card = card if isinstance(card, TechCard) else load_card(card)
    arrays = _find_tile_arrays(model)
    if arrays and not any(ta.counts().mvms for _, ta in arrays):
        raise ValueError("report: the model's tiles counted no forward reads; run a forward first "
                         "(or use aimc.cost.measure(model, x))")
    layers = [cost_tiles(name, ta, card, inputs) for name, ta in arrays]
    for name, macs in (digital or {}).items():
        lc = LayerCost(name, "digital", inputs, macs=int(macs), latency=math.nan)
        lc.energy = {"digital_layers": macs * card["digital.mac_energy"]}
        lc.notes = ["not converted to analog: costed as digital MACs (card digital.mac_energy); latency and area "
                    "not modelled"]
        layers.append(lc)
    times = [ta.time for _, ta in arrays if ta.time is not None]
    rep = CostReport(card, inputs, layers, max(times) if times else None)
    t_model = rep.latency  # every core leaks while any layer computes
    for lc in rep.analog:
        lc.energy["static"] = lc.tiles * core_static_power(card) * t_model * inputs
    return rep


def reset(model) -> None:
    """Zero the counters of every tile of ``model`` (before the forward to be costed)."""
    for _, ta in _find_tile_arrays(model):
        ta.reset_counts()


def prepare(model, card) -> None:
    """Switch the bit-plane sums (a popcount per input) on in every tile of ``model`` if ``card`` drives its
    inputs bit-serially (off otherwise: the other counts are always on), and zero the counters."""
    card = card if isinstance(card, TechCard) else load_card(card)
    on = card.encoding == "bit_serial"
    for _, ta in _find_tile_arrays(model):
        for t in ta.all_tiles():
            t.counts.bit_planes = on
        ta.reset_counts()


class count_digital:
    """Context manager (torch): while open, count the MACs of Linear/Conv layers that stayed digital.

    ``macs``: {layer name: MACs} from each forward's output sizes; ``uncosted``: other digital layers with
    weights (listed in the report's notes, not costed).
    """

    def __init__(self, model):
        self.model = model
        self.macs: dict = {}
        self.uncosted: list = []
        self._hooks: list = []

    def __enter__(self):
        from torch import nn
        analog = {id(ta) for _, ta in _find_tile_arrays(self.model)}
        for name, mod in self.model.named_modules():
            if any(id(v) in analog for v in vars(mod).values()) or any(True for _ in mod.children()):
                continue
            if isinstance(mod, nn.Linear):
                per_out = lambda m: m.in_features  # noqa: E731
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                per_out = lambda m: math.prod(m.kernel_size) * m.in_channels // m.groups  # noqa: E731
            else:
                if any(True for _ in mod.parameters(recurse=False)):
                    self.uncosted.append(name)
                continue

            def hook(m, inp, out, name=name, per_out=per_out):
                self.macs[name] = self.macs.get(name, 0) + out.numel() * per_out(m)
            self._hooks.append(mod.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return False

    def report(self, inputs: int, card) -> CostReport:
        """``report`` of the model with the digital layers counted while open."""
        rep = report(self.model, inputs, card, digital=self.macs)
        if self.uncosted:
            lc = LayerCost("(digital, not costed)", "digital", inputs, latency=math.nan)
            lc.notes = [f"digital layers with weights not costed (no MAC model): {', '.join(self.uncosted)}"]
            rep.layers.append(lc)
        return rep


def measure(model, x, card="hermes-pcm-14nm") -> CostReport:
    """Reset the counters, run ``model(x)`` once (eval mode, no grad) and report its cost per sample.

    Linear and convolution layers that were not converted are counted as digital MACs (``count_digital``).
    ``x``: a tensor whose first dimension is the batch (the number of inferences), or a tuple of model inputs.
    """
    import torch

    card = card if isinstance(card, TechCard) else load_card(card)
    args = x if isinstance(x, tuple) else (x,)
    if not args or not hasattr(args[0], "shape") or len(args[0].shape) == 0:
        raise ValueError("measure: x must be a batched tensor (first dimension = number of inferences)")
    prepare(model, card)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), count_digital(model) as dig:
            model(*args)
    finally:
        model.train(was)
    return dig.report(int(args[0].shape[0]), card)
