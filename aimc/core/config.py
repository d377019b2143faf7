"""The config tree: nested dataclasses + enums, validated at construction, round-tripping through JSON.

Every field names its physical meaning; errors name the field and the allowed range. ``TileConfig`` is
the root; ``IOConfig`` describes one direction of the periphery (forward, backward); ``MappingConfig``
how weights become conductances and how matrices are split into tiles. Extensions (device statistics,
pulsed updates) add their own sub-configs here, so there is one tree and one JSON format.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any


class NoiseManagement(str, enum.Enum):
    """Input scaling alpha before the DAC (y = alpha * F(x / alpha)); physics.md §1.3."""

    NONE = "none"          # alpha = 1
    ABS_MAX = "abs_max"    # alpha = max_j |x_j| (capped at nm_thres if > 0)
    MAX = "max"            # alpha = max_j x_j (signed), capped likewise
    CONSTANT = "constant"  # alpha = nm_thres if > 0 else 1


class BoundManagement(str, enum.Enum):
    """Re-reads with halved inputs when the ADC clips; physics.md §1.7."""

    NONE = "none"
    ITERATIVE = "iterative"  # f = 1, 2, 4, ... until no output clips or the stop rule fires


class ADCKind(str, enum.Enum):
    """The output converter (physics.md §1.4; circuits_and_cost.md C.1, C.3)."""

    UNIFORM = "uniform"  # ideal uniform quantiser: out_bits levels incl. zero (aihwkit)
    SAR = "sar"          # SAR with binary CDAC: 2^out_bits mid-rise levels; capacitor mismatch, comparator offset
    RAMP = "ramp"        # single-slope: one ramp per tile (DNL, bow INL), a comparator + counter per ADC


class SliceEncoding(str, enum.Enum):
    """How a sliced mapping stores signed integer weights (circuits_and_cost.md B.1, CrossSim BitslicedCore)."""

    BALANCED = "balanced"  # digits of |W| in G+ (W > 0) or G- (W < 0) of every slice: 2 devices per slice
    OFFSET = "offset"      # digits of W + 2^(B-1) >= 0, one device per slice; the offset removed per ``OffsetReference``


class OffsetReference(str, enum.Enum):
    """How an offset-encoded sliced read removes its offset 2^(B-1) sum_j x_j (``MappingConfig.offset_reference``)."""
    COLUMN = "column"    # a reference column per slice on the array (cells programmed to the offset's digits, same
    #                      device model: programming noise, drift, read noise), read in the same pass with its own
    #                      ADC conversion and subtracted digitally from every column of its slice (CrossSim
    #                      BitslicedCore's analog offset, the "unit column"): it drifts with the weights
    DIGITAL = "digital"  # the programmed offset times the inputs' sum as the DAC codes them, subtracted digitally
    #                      (CrossSim DIGITAL_OFFSET): exact while the cells hold their programmed values


class WeightNoiseType(str, enum.Enum):
    """Output-referred short-term weight noise; physics.md §1.5."""

    NONE = "none"
    ADDITIVE_CONSTANT = "additive_constant"  # y_i += w_noise * ||v||_2 * xi_i  (== iid N(0, w_noise^2) per weight)
    PCM_READ = "pcm_read"                    # y_i += w_noise * sqrt(sum_j |w_ij| v_j^2) * xi_i


class MappingKind(str, enum.Enum):
    """How a weight becomes conductances; physics.md §2.2-2.5."""

    DIFFERENTIAL = "differential"    # G+ / G- pair, g_max scaling
    N_PAIRS = "n_pairs"              # several pairs with significance factors
    SINGLE_OFFSET = "single_offset"  # one device per weight plus an offset (reference) read digitally
    SLICED = "sliced"                # bit slicing: weight_bits over cells of bits_per_cell, one ADC read per slice


class DriftCompensation(str, enum.Enum):
    """Digital drift compensation of a programmed tile; physics.md §4."""

    NONE = "none"
    GLOBAL = "global"              # alpha = ref / max(mean |Y|, 1e-4), Y the one-hot readout (aihwkit default)
    PER_COLUMN = "per_column"      # the same per output column (a vector alpha)
    GLOBAL_EXACT = "global_exact"  # global, with ref from the ideal (target) weights instead of a noisy read


class WireModel(str, enum.Enum):
    """How the array's wires are modelled (``ArrayConfig.model``)."""

    NONE = "none"              # ideal wires; the periphery's ir_drop must be 0
    POLYNOMIAL = "polynomial"  # today's aihwkit-style IR-drop fit, scaled by IOConfig.ir_drop (0 = off)
    CIRCUIT = "circuit"        # the array solved as a resistor network (aimc/circuit/crossbar.py)


class CellKind(str, enum.Enum):
    """The I-V of one cell in the circuit model."""

    LINEAR = "linear"  # i = G v (an ideal switch in 1T1R, or a linear passive cell)
    T1R1 = "1t1r"      # i = v / (1/G + access_ohm): the access transistor's on-resistance in series
    SINH = "sinh"      # passive array with a selector-like I-V: i = G sinh(k v) / k (G = slope at 0 V)


class PairLayout(str, enum.Enum):
    """Where the devices of a weight (G+ / G-, or n pairs) sit in the circuit model."""

    TWO_ARRAYS = "two_arrays"    # every device slice is its own array of in x out cells
    INTERLEAVED = "interleaved"  # one array, the devices of an output side by side: columns [G+_0, G-_0, G+_1, ...]


class InputEncoding(str, enum.Enum):
    """How a DAC value x drives a line in the circuit model (the same for linear cells)."""

    AMPLITUDE = "amplitude"      # x * v_read volts for the whole read
    PULSE_WIDTH = "pulse_width"  # sign(x) v_read for a time |x| (of the full-scale pulse); charge integrated


class ArrayGeometry(str, enum.Enum):
    """Which array the circuit model solves."""

    USED = "used"          # only the used rows and columns (in_size x out_size cells per array)
    PHYSICAL = "physical"  # the physical max_in x max_out array, used block at the driver/sense corner


class CircuitSolver(str, enum.Enum):
    """Solver of the circuit model (aimc/circuit/crossbar.py)."""

    FAST = "fast"    # Numba Newton + conjugate gradients, batched over inputs, tolerance ``tol``
    EXACT = "exact"  # scipy.sparse nodal system (sparse LU; Newton for nonlinear cells): the reference


class InputCalibration(str, enum.Enum):
    """How a calibrated tile scales its inputs (``CalibrationConfig.inp``; aimc/core/calibration.py)."""

    NONE = "none"              # keep forward.noise_management (e.g. abs-max: a digital max per input vector)
    MAX = "max"                # static DAC range r = max |x| over the calibration set
    PERCENTILE = "percentile"  # static DAC range r = the inp_percentile-th percentile of |x|
    LEARNED = "learned"        # the learned input ranges of an HWA-trained model (the layer scales the inputs)


class OutputCalibration(str, enum.Enum):
    """How a calibrated tile chooses its ADC range (``CalibrationConfig.out``)."""

    NONE = "none"              # keep forward.out_bound
    MAX = "max"                # b = max |y| of the analog outputs on the calibration set at t = 0
    PERCENTILE = "percentile"  # b = the out_percentile-th percentile of |y|
    MSE = "mse"                # b minimising the mean squared quantisation + clipping error of the ADC


class SliceRanges(str, enum.Enum):
    """How the calibrated ADC ranges of a sliced tile's weight slices relate (``CalibrationConfig.slice_ranges``)."""

    POW2 = "pow2"  # power-of-two apart (the digital shift-and-add aligns the slices by shifts alone)
    FREE = "free"  # each slice its own range (the digital side scales each slice's output by a multiply)


class CalibrationGranularity(str, enum.Enum):
    """Which outputs share one calibrated ADC range."""

    LAYER = "layer"    # one range for every ADC of the layer (all its tiles)
    TILE = "tile"      # one range per tile
    COLUMN = "column"  # one range per output column of each tile
    ADC = "adc"        # one range per ADC: the columns_per_adc columns that share one converter


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the allowed values."""


MAX_DEPTH = 32  # nesting of config JSON/TOML beyond this is refused (the tree is 3 levels deep)


def _short(v, n: int = 60) -> str:
    """repr(v) cut to n characters (a 5000-digit integer in an error message helps nobody)."""
    try:
        r = repr(v) if not (isinstance(v, int) and v.bit_length() > 200) else f"<integer of {len(str(v))} digits>"
    except ValueError:  # int too large to print (Python's digit limit)
        r = f"<integer of more than {v.bit_length() * 3 // 10} digits>"
    return r if len(r) <= n else r[: n - 3] + "..."


def check_depth(obj, what: str, limit: int = MAX_DEPTH) -> None:
    """Raise ConfigError if dicts/lists in ``obj`` nest deeper than ``limit`` (iterative, no recursion)."""
    stack = [(obj, 0)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            items = o.values()
        elif isinstance(o, (list, tuple)):
            items = o
        else:
            continue
        if d >= limit:
            raise ConfigError(f"{what}: nested more than {limit} levels deep")
        stack.extend((v, d + 1) for v in items)


def loads_json(text, what: str):
    """json.loads with clear errors (not valid JSON, integers beyond 4300 digits, too deep nesting)."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: not valid JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ConfigError(f"{what}: not valid JSON ({e})") from None
    check_depth(d, what)
    return d


def _num(owner, name, v, lo=-math.inf, hi=math.inf, *, lo_open=False, integer=False):
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{owner}.{name} must be {kind}, got {_short(v)}")
    try:
        fv = float(v)
    except OverflowError:  # an int beyond float range
        raise ConfigError(f"{owner}.{name} = {_short(v)} is out of range [{lo}, {hi}]") from None
    if integer and not fv.is_integer():
        raise ConfigError(f"{owner}.{name} must be {kind}, got {v!r}")
    v = fv if not isinstance(v, int) else v
    if math.isnan(v) or (lo_open and v <= lo) or v < lo or v > hi:
        lb = "(" if lo_open else "["
        raise ConfigError(f"{owner}.{name} = {v!r} is out of range {lb}{lo}, {hi}]")


def _enum(owner, obj, name, cls):
    v = getattr(obj, name)
    if isinstance(v, cls):
        return
    try:
        object.__setattr__(obj, name, cls(v))
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"{owner}.{name} = {v!r} is not one of {allowed}") from None


def _plain(v):
    """A field value as ``to_dict`` writes it (nodes to dicts, enums to values, tuples to lists)."""
    if isinstance(v, _Node):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        return list(v)
    return v


def dict_diff(a, b, path: str = "") -> list[str]:
    """Where two (normalised) config dicts differ: ["forward.out_bits: 9 vs 8", ...]."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: absent vs {_short(b[k])}")
            elif k not in b:
                out.append(f"{p}: {_short(a[k])} vs absent")
            else:
                out.extend(dict_diff(a[k], b[k], p))
        return out
    return [] if a == b else [f"{path or 'value'}: {_short(a)} vs {_short(b)}"]


class _Node:
    """Shared behaviour of config nodes: JSON round trip, non-default diff, replace."""

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, _Node):
                v = v.to_dict()
            elif isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict, _path: str | None = None):
        path = _path or cls.__name__
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must be a JSON object, got {type(d).__name__}")
        if _path is None:
            check_depth(d, path)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(known)}")
        kw = {}
        for name, v in d.items():
            sub = _SUBNODES.get((cls, name))
            if sub is not None and v is not None:
                v = sub.from_dict(v, f"{path}.{name}")
            elif isinstance(v, list):
                v = tuple(v)
            kw[name] = v
        return cls(**kw)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(loads_json(text, cls.__name__))

    @classmethod
    def normalised_dict(cls, d, _path: str | None = None):
        """``d`` (a saved ``to_dict``) with every missing field filled with its default, without building
        (or validating) a node: two configs are the same iff their normalised dicts are equal, so a file
        written before a field existed still matches a config that leaves the field at its default.
        Never reads files (a device card named inside ``d`` is not opened)."""
        path = _path or cls.__name__
        if not isinstance(d, dict):
            return d
        out = {}
        for f in fields(cls):
            sub = _SUBNODES.get((cls, f.name))
            if f.name in d:
                v = d[f.name]
                out[f.name] = sub.normalised_dict(v, f"{path}.{f.name}") if sub is not None and isinstance(v, dict) \
                    else (list(v) if isinstance(v, tuple) else v)
            else:
                dv = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                out[f.name] = _plain(dv)
        for k in d:
            if k not in out:
                out[k] = d[k]  # an unknown field stays, so it shows up as a difference
        return out

    def diff(self, other=None) -> dict:
        """The fields that differ from ``other`` (default: a default-constructed node), nested."""
        other = other if other is not None else type(self)()
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, _Node) and isinstance(b, _Node):
                d = a.diff(b)
                if d:
                    out[f.name] = d
            elif a != b:
                out[f.name] = a.value if isinstance(a, enum.Enum) else a.to_dict() if isinstance(a, _Node) else a
        return out

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __str__(self):
        return f"{type(self).__name__}({json.dumps(self.diff())})"


@dataclass(frozen=True)
class IOConfig(_Node):
    """Periphery of one direction of an analog MVM (physics.md §1; order of stages in §1.2).

    Quantisers: ``bits`` b gives 2^b - 1 levels on [-bound, bound], step 2*bound/(2^b - 2)
    (b = 7: step 2/126, as aihwkit's inp_res = 1/126); quantise (round half to even, or stochastic), then
    clip. ``0`` bits = no quantisation. ``out_bound`` 0 = no ADC clipping.
    """

    is_perfect: bool = False          # y = out_scale * W x exactly; every stage below is skipped
    inp_bits: int = 7                 # DAC resolution (0 = none); Rasch et al. 2023 HWA preset: 8
    inp_bound: float = 1.0            # DAC range +-inp_bound (must be 1 with noise management)
    inp_sto_round: bool = False       # stochastic rounding in the DAC
    inp_noise: float = 0.0            # Gaussian sigma added after DAC and clip
    out_bits: int = 9                 # ADC resolution (0 = none)
    out_bound: float = 12.0           # ADC range +-out_bound (0 = infinite)
    out_sto_round: bool = False       # stochastic rounding in the ADC
    out_noise: float = 0.06           # additive Gaussian sigma per output (aihwkit default 0.06)
    w_noise: float = 0.0              # output-referred weight noise sigma (see w_noise_type)
    w_noise_type: WeightNoiseType = WeightNoiseType.NONE
    ir_drop: float = 0.0              # scale of the simple IR-drop model (physics.md §1.5); 0 = off
    ir_drop_g_ratio: float = 1 / 0.35 / 5e-6  # wire conductance (0.35 Ohm segment) over g_max (5 uS)
    out_nonlinearity: float = 0.0     # y <- y / (1 + |n y|), n = out_nonlinearity / out_bound (§1.6)
    noise_management: NoiseManagement = NoiseManagement.ABS_MAX
    nm_thres: float = 0.0             # CONSTANT value, else an upper cap on alpha (0 = none)
    bound_management: BoundManagement = BoundManagement.ITERATIVE
    max_bm_factor: int = 1000         # iterative BM stops once f > max_bm_factor
    max_bm_res: float = 0.25          # ... or once f > max_bm_res / DAC step (f = 16 at 7 bits)
    bm_test_negative_bound: bool = True  # clipping at -out_bound also triggers BM
    out_scale: float = 1.0            # extra digital output factor
    adc: ADCKind = ADCKind.UNIFORM    # converter model; 'sar' and 'ramp' draw their errors once per chip (below)
    adc_cap_mismatch: float = 0.0     # sar: sigma of a unit capacitor (relative); a 2^n cap gets sigma 2^(n/2)
    adc_comparator_offset: float = 0.0  # sar, ramp: comparator offset sigma, fraction of out_bound (per ADC)
    columns_per_adc: int = 1          # columns time-multiplexed onto one ADC (NeuroSim numColMuxed, CrossSim SAR
                                      # group_size): they share its drawn errors and, with calibration 'adc', its
                                      # range; the cost model reads it. JSON 'adc_group' (sar) loads into it
    adc_dnl_std: float = 0.0          # ramp: sigma of each code width (LSB), drawn once per tile (shared ramp)
    adc_inl_bow: float = 0.0          # ramp: peak of the bow-shaped INL at mid-scale (LSB, signed)
    adc_gain_std: float = 0.0         # per-column gain variation sigma (gain 1 + sigma xi), drawn once
    adc_offset_std: float = 0.0       # per-column offset sigma, fraction of out_bound, drawn once
    dac_unit_mismatch: float = 0.0    # unary current-steering DAC: sigma of a unit source (relative), per input
                                      # line, drawn once per chip (needs inp_bits > 0)

    def __post_init__(self):
        o = "IOConfig"
        for name in ("is_perfect", "inp_sto_round", "out_sto_round", "bm_test_negative_bound"):
            if not isinstance(getattr(self, name), (bool,)):
                raise ConfigError(f"{o}.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("inp_bits", "out_bits"):
            v = getattr(self, name)
            _num(o, name, v, 0, 24, integer=True)
            if v == 1:
                raise ConfigError(f"{o}.{name} = 1 is out of range: use 0 (no quantisation) or 2..24")
        _num(o, "inp_bound", self.inp_bound, 0, 1e6, lo_open=True)
        _num(o, "out_bound", self.out_bound, 0, 1e9)
        for name in ("inp_noise", "out_noise", "w_noise", "ir_drop", "out_nonlinearity", "nm_thres"):
            _num(o, name, getattr(self, name), 0, 1e6)
        _num(o, "ir_drop_g_ratio", self.ir_drop_g_ratio, 0, 1e12, lo_open=True)
        _num(o, "max_bm_factor", self.max_bm_factor, 1, 2**30, integer=True)
        _num(o, "max_bm_res", self.max_bm_res, 0, 1e6, lo_open=True)
        _num(o, "out_scale", self.out_scale, 0, 1e12, lo_open=True)
        _enum(o, self, "w_noise_type", WeightNoiseType)
        _enum(o, self, "noise_management", NoiseManagement)
        _enum(o, self, "bound_management", BoundManagement)
        _enum(o, self, "adc", ADCKind)
        for name in ("adc_cap_mismatch", "adc_comparator_offset", "adc_gain_std", "adc_offset_std"):
            _num(o, name, getattr(self, name), 0, 1.0)
        _num(o, "columns_per_adc", self.columns_per_adc, 1, 2**20, integer=True)
        _num(o, "adc_dnl_std", self.adc_dnl_std, 0, 10.0)
        _num(o, "adc_inl_bow", self.adc_inl_bow, -1e3, 1e3)
        _num(o, "dac_unit_mismatch", self.dac_unit_mismatch, 0, 1.0)
        if self.adc in (ADCKind.SAR, ADCKind.RAMP) and (self.out_bits < 2 or self.out_bound <= 0):
            raise ConfigError(f"{o}.adc = {self.adc.value!r} needs out_bits >= 2 and out_bound > 0 "
                              f"(got {self.out_bits}, {self.out_bound})")
        if self.adc == ADCKind.RAMP and self.out_bits > 16:
            raise ConfigError(f"{o}.adc = 'ramp' needs out_bits <= 16 (a ramp of 2^out_bits steps), "
                              f"got {self.out_bits}")
        if self.adc != ADCKind.RAMP and (self.adc_dnl_std > 0 or self.adc_inl_bow != 0):
            raise ConfigError(f"{o}.adc_dnl_std / adc_inl_bow describe the ramp of adc = 'ramp' "
                              f"(adc is {self.adc.value!r})")
        if self.adc_drawn and self.out_sto_round:
            raise ConfigError(f"{o}.out_sto_round is not supported with converter errors (adc 'sar' or 'ramp', "
                              f"adc_gain_std or adc_offset_std > 0)")
        if self.dac_unit_mismatch > 0 and self.inp_bits == 0:
            raise ConfigError(f"{o}.dac_unit_mismatch = {self.dac_unit_mismatch} needs a quantising DAC "
                              f"(inp_bits > 0)")
        if self.dac_unit_mismatch > 0 and self.inp_bits > 16:
            raise ConfigError(f"{o}.dac_unit_mismatch needs inp_bits <= 16 (one unit source per level), "
                              f"got {self.inp_bits}")
        if self.adc_offset_std > 0 and self.out_bound <= 0:
            raise ConfigError(f"{o}.adc_offset_std is a fraction of out_bound, which is 0 (infinite)")
        if self.noise_management != NoiseManagement.NONE and self.inp_bound != 1.0 and not self.is_perfect:
            raise ConfigError(f"{o}.inp_bound must be 1.0 when noise_management is {self.noise_management.value!r} "
                              f"(got {self.inp_bound})")
        if self.w_noise > 0 and self.w_noise_type == WeightNoiseType.NONE:
            raise ConfigError(f"{o}.w_noise = {self.w_noise} needs w_noise_type "
                              f"'additive_constant' or 'pcm_read' (got 'none')")

    @property
    def inp_step(self) -> float:
        """DAC step 2*inp_bound/(2^inp_bits - 2); 0 = no quantisation."""
        return 0.0 if self.inp_bits == 0 else 2.0 * self.inp_bound / (2**self.inp_bits - 2)

    @property
    def adc_drawn(self) -> bool:
        """Whether the ADCs have per-chip random errors (drawn once, stored in the chip image)."""
        return not self.is_perfect and (self.adc in (ADCKind.SAR, ADCKind.RAMP) or self.adc_gain_std > 0
                                        or self.adc_offset_std > 0)

    @property
    def dac_drawn(self) -> bool:
        """Whether the DACs have per-chip random errors (drawn once, stored in the chip image)."""
        return not self.is_perfect and self.dac_unit_mismatch > 0 and self.inp_bits > 0

    @staticmethod
    def _legacy(d):
        """A saved IOConfig dict with the pre-``columns_per_adc`` field ``adc_group`` (SAR columns per CDAC)
        translated: into ``columns_per_adc`` for adc 'sar', dropped otherwise (it had no effect there)."""
        if not isinstance(d, dict) or "adc_group" not in d:
            return d
        d = dict(d)
        g = d.pop("adc_group")
        if d.get("adc") == ADCKind.SAR.value:
            if "columns_per_adc" in d and d["columns_per_adc"] != g:
                raise ConfigError(f"IOConfig.adc_group = {_short(g)} (the old name of columns_per_adc) conflicts "
                                  f"with columns_per_adc = {_short(d['columns_per_adc'])}")
            d["columns_per_adc"] = g
        return d

    @classmethod
    def from_dict(cls, d: dict, _path: str | None = None):
        return super().from_dict(cls._legacy(d), _path)

    @classmethod
    def normalised_dict(cls, d, _path: str | None = None):
        return super().normalised_dict(cls._legacy(d), _path)

    @property
    def out_step(self) -> float:
        """ADC step 2*out_bound/(2^out_bits - 2); 0 = no quantisation (or infinite bound)."""
        return 0.0 if self.out_bits == 0 or self.out_bound == 0 else 2.0 * self.out_bound / (2**self.out_bits - 2)


@dataclass(frozen=True)
class MappingConfig(_Node):
    """Weights -> conductances -> tiles (physics.md §2).

    The tile stores normalised weights w/c with a digital per-output scale c (``weight_scaling_omega`` > 0:
    c = max|w| / omega per column if ``columnwise`` else per tile), then maps them to conductances in uS.
    """

    kind: MappingKind = MappingKind.DIFFERENTIAL
    g_max: float = 25.0               # uS; PCM reference of Nandakumar et al. 2019
    g_min: float = 0.0                # uS
    significance: tuple = (1.0,)      # n_pairs: factors f_1..f_N from lowest to highest significance
    weight_scaling_omega: float = 0.0  # 0 = off; else max|w| maps to omega (digital scale compensates)
    weight_scaling_columnwise: bool = True
    max_in: int = 512                 # tile rows (inputs) at most; 0 = no split
    max_out: int = 512                # tile columns (outputs) at most; 0 = no split
    weight_bits: int = 8              # sliced: signed weight bits B (integer weights +-(2^(B-1) - 1))
    bits_per_cell: int = 2            # sliced: bits b per cell; ceil((B-1)/b) slices of G+/G- (balanced)
    slice_encoding: SliceEncoding = SliceEncoding.BALANCED  # sliced: or 'offset': ceil(B/b) single-device slices
    offset_reference: OffsetReference = OffsetReference.COLUMN  # sliced offset: a drifting reference column or 'digital'
    input_bits: int = 0               # bit-serial inputs: signed input bits (0 = inputs in one read)
    input_bits_per_cycle: int = 1     # bit-serial inputs: bits per read cycle

    def __post_init__(self):
        o = "MappingConfig"
        _enum(o, self, "kind", MappingKind)
        _num(o, "g_max", self.g_max, 0, 1e6, lo_open=True)
        _num(o, "g_min", self.g_min, 0, 1e6)
        if self.g_min >= self.g_max:
            raise ConfigError(f"{o}.g_min = {self.g_min} must be below g_max = {self.g_max}")
        if not isinstance(self.significance, (list, tuple)):
            raise ConfigError(f"{o}.significance must be a list of factors, got {self.significance!r}")
        sig = tuple(self.significance)
        object.__setattr__(self, "significance", sig)
        if not sig:
            raise ConfigError(f"{o}.significance must list at least one factor")
        for i, f in enumerate(sig):
            _num(o, f"significance[{i}]", f, 0, 1e6, lo_open=True)
        if self.kind != MappingKind.N_PAIRS and len(sig) != 1:
            raise ConfigError(f"{o}.significance has {len(sig)} factors but kind is {self.kind.value!r} "
                              f"(use kind='n_pairs')")
        _num(o, "weight_scaling_omega", self.weight_scaling_omega, 0, 1e6)
        if not isinstance(self.weight_scaling_columnwise, bool):
            raise ConfigError(f"{o}.weight_scaling_columnwise must be true or false")
        _num(o, "max_in", self.max_in, 0, 2**31, integer=True)
        _num(o, "max_out", self.max_out, 0, 2**31, integer=True)
        _num(o, "weight_bits", self.weight_bits, 2, 24, integer=True)
        _num(o, "bits_per_cell", self.bits_per_cell, 1, 16, integer=True)
        _enum(o, self, "slice_encoding", SliceEncoding)
        _enum(o, self, "offset_reference", OffsetReference)
        if self.kind == MappingKind.SLICED:
            offset = self.slice_encoding == SliceEncoding.OFFSET
            top = self.weight_bits if offset else self.weight_bits - 1
            if self.bits_per_cell > top:
                raise ConfigError(f"{o}.bits_per_cell = {self.bits_per_cell} exceeds the {top} bits a "
                                  f"{self.slice_encoding.value} encoding of weight_bits = {self.weight_bits} stores")
        _num(o, "input_bits", self.input_bits, 0, 24, integer=True)
        if self.input_bits == 1:
            raise ConfigError(f"{o}.input_bits = 1 is out of range: use 0 (no bit-serial inputs) or 2..24")
        _num(o, "input_bits_per_cycle", self.input_bits_per_cycle, 1, 24, integer=True)
        if self.input_bits and self.input_bits_per_cycle > self.input_bits - 1:
            raise ConfigError(f"{o}.input_bits_per_cycle = {self.input_bits_per_cycle} exceeds the input_bits - 1 "
                              f"= {self.input_bits - 1} magnitude bits")

    @property
    def n_slices(self) -> int:
        """Weight slices of kind 'sliced': ceil((weight_bits - 1) / bits_per_cell) balanced, ceil(weight_bits /
        bits_per_cell) offset; else 1."""
        if self.kind != MappingKind.SLICED:
            return 1
        top = self.weight_bits if self.slice_encoding == SliceEncoding.OFFSET else self.weight_bits - 1
        return -(-top // self.bits_per_cell)

    @property
    def sliced_offset(self) -> bool:
        """Whether this is a sliced mapping with the offset encoding (one device per slice)."""
        return self.kind == MappingKind.SLICED and self.slice_encoding == SliceEncoding.OFFSET

    @property
    def reference_column(self) -> bool:
        """Whether a sliced offset-encoded tile reads a reference column per slice (``offset_reference``
        'column'): one more column per array, subtracted after its ADC conversion."""
        return self.sliced_offset and self.offset_reference == OffsetReference.COLUMN

    @property
    def pair_factors(self) -> tuple:
        """Significance of each G+/G- pair: (1,) differential, ``significance`` for n_pairs,
        2^(k b) for slice k of a sliced mapping."""
        if self.kind == MappingKind.SLICED:
            return tuple(float(2 ** (k * self.bits_per_cell)) for k in range(self.n_slices))
        return tuple(self.significance)


@dataclass(frozen=True)
class InferenceConfig(_Node):
    """Device physics of programmed tiles and drift compensation (physics.md §3, §4; aimc/core/inference.py).

    ``device``: an inference device card (``device_models.available('inference')``) or a path to a card
    ``.toml``; ``"none"`` programs ideal conductances (no noise, no drift). ``device_params`` overrides card
    parameters by name (e.g. ``{"prog_noise_scale": 0.5}``). ``verify_tol`` (uS, 0 = off) and
    ``verify_max_iter``: program-and-verify, handed to the device model. ``compensation``: the digital
    drift-compensation factor applied to the forward output after ``drift`` (see ``DriftCompensation``).
    The mapping's [g_min, g_max] must lie inside the device's conductance range.
    """

    device: str = "pcm-joshi2020"
    device_params: dict = field(default_factory=dict)
    compensation: DriftCompensation = DriftCompensation.GLOBAL
    verify_tol: float = 0.0
    verify_max_iter: int = 10

    def __post_init__(self):
        o = "InferenceConfig"
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"{o}.device must be a device card name or 'none', got {self.device!r}")
        if not isinstance(self.device_params, dict) or not all(isinstance(k, str) for k in self.device_params):
            raise ConfigError(f"{o}.device_params must be a mapping of parameter names to values, "
                              f"got {self.device_params!r}")
        object.__setattr__(self, "device_params", dict(self.device_params))
        _enum(o, self, "compensation", DriftCompensation)
        _num(o, "verify_tol", self.verify_tol, 0, 1e6)
        _num(o, "verify_max_iter", self.verify_max_iter, 0, 10000, integer=True)
        if self.device == "none":
            if self.device_params or self.verify_tol > 0:
                raise ConfigError(f"{o}: device 'none' (ideal conductances) takes no device_params or verify_tol")
            return
        for name in ("verify_tol", "verify_max_iter"):
            if name in self.device_params:
                raise ConfigError(f"{o}.device_params must not set {name!r}: use InferenceConfig.{name}")
        self.device_model()  # validates the card and the overrides

    def device_model(self):
        """The ``device_models`` inference model this config describes (None for device 'none')."""
        if self.device == "none":
            return None
        import device_models
        try:
            card = device_models.read_card(self.device)
            if card["kind"] != "inference":
                raise ValueError(f"card {self.device!r} is a {card['kind']!r} card, not an inference card")
            return device_models.load(self.device, **self.device_params, verify_tol=float(self.verify_tol),
                                      verify_max_iter=int(self.verify_max_iter))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"InferenceConfig.device = {self.device!r}: {e}") from None


@dataclass(frozen=True)
class ArrayConfig(_Node):
    """The physical array as a circuit: wires, drivers, sense and cells (aimc/circuit/crossbar.py).

    Wires belong to the array, not to one read direction. Geometry (forward read): input i drives word line
    (row) i from its left end, column 0, through ``driver_ohm`` plus one ``wire_row_ohm`` segment; output j
    is bit line (column) j, held at virtual ground (0 V) at its bottom end, below the last row, through one
    ``wire_col_ohm`` segment plus ``sense_ohm``; neighbouring cells are one segment apart; the far ends are
    open. The transposed read (backward) drives the bit lines from the bottom and senses the word lines at
    the left, so the row/column resistances keep their lines. Input x (after the DAC) is the amplitude
    x * ``v_read`` volts (``input_encoding`` 'amplitude'), or sign(x) ``v_read`` for a fraction |x| of the
    read ('pulse_width': the output is the integrated charge, solved per distinct pulse length; it differs
    from amplitude only for nonlinear cells). ``model``: 'polynomial' keeps today's IOConfig.ir_drop model (default, so old JSON
    loads unchanged), 'circuit' solves the network, 'none' has ideal wires. For linear cells the circuit is
    solved once per programmed/drifted state into an effective weight matrix (a never-programmed tile uses
    the ideal conductances its weights map to); sinh cells need a solve per input.

    ``solver``, ``tol``, ``max_iter`` and ``fallback`` (``SOLVER_FIELDS``) say how the circuit is computed,
    not what it is: they are no part of a chip's identity (``chip_identity``), so a chip image or state dict
    saved with other solver settings loads, and the model's own settings solve it.
    """

    SOLVER_FIELDS = ("solver", "tol", "max_iter", "fallback")   # no dataclass field (no annotation)

    model: WireModel = WireModel.POLYNOMIAL
    wire_row_ohm: float = 1.0      # word-line resistance per cell segment (Ohm)
    wire_col_ohm: float = 1.0      # bit-line resistance per cell segment (Ohm)
    driver_ohm: float = 0.0        # input driver source resistance (Ohm), in series with the first segment
    sense_ohm: float = 0.0         # bit-line terminal resistance to the virtual ground (Ohm)
    cell: CellKind = CellKind.LINEAR
    access_ohm: float = 0.0        # 1T1R access-transistor on-resistance (Ohm); cell '1t1r' only
    sinh_k: float = 2.71689828     # 1/V; i = G sinh(k v)/k. MemTorch Data_Driven2021 (I = a g sinh(b V), b)
    v_read: float = 0.2            # V applied for input 1.0 (full-scale DAC)
    input_encoding: InputEncoding = InputEncoding.AMPLITUDE
    pair_layout: PairLayout = PairLayout.TWO_ARRAYS
    geometry: ArrayGeometry = ArrayGeometry.USED
    solver: CircuitSolver = CircuitSolver.FAST
    tol: float = 1e-4              # fast solver: relative residual |s (V - v - L F(v))| / |s V| (crossbar.py)
    max_iter: int = 500            # fast solver: conjugate-gradient iterations per solve
    fallback: bool = True          # fast solver failed: warn and use the exact solve (else raise)

    def __post_init__(self):
        o = "ArrayConfig"
        for name, cls in (("model", WireModel), ("cell", CellKind), ("pair_layout", PairLayout),
                          ("input_encoding", InputEncoding),
                          ("geometry", ArrayGeometry), ("solver", CircuitSolver)):
            _enum(o, self, name, cls)
        for name in ("wire_row_ohm", "wire_col_ohm", "driver_ohm", "sense_ohm", "access_ohm"):
            _num(o, name, getattr(self, name), 0, 1e9)
        _num(o, "sinh_k", self.sinh_k, 0, 1e3, lo_open=True)
        _num(o, "v_read", self.v_read, 0, 100, lo_open=True)
        _num(o, "tol", self.tol, 0, 0.1, lo_open=True)
        _num(o, "max_iter", self.max_iter, 1, 10**6, integer=True)
        if not isinstance(self.fallback, bool):
            raise ConfigError(f"{o}.fallback must be true or false, got {self.fallback!r}")
        if self.model == WireModel.CIRCUIT:
            for wire, end in (("wire_row_ohm", "driver_ohm"), ("wire_col_ohm", "sense_ohm")):
                if getattr(self, wire) == 0 and getattr(self, end) > 0:
                    raise ConfigError(f"{o}.{wire} = 0 needs {end} = 0 (an ideal line), got {end} = "
                                      f"{getattr(self, end)}: a line of zero-resistance segments is one node")
        if self.cell == CellKind.T1R1 and self.access_ohm <= 0:
            raise ConfigError(f"{o}.access_ohm = {self.access_ohm} must be > 0 for cell '1t1r'")
        if self.cell != CellKind.T1R1 and self.access_ohm != 0:
            raise ConfigError(f"{o}.access_ohm = {self.access_ohm} is only used by cell '1t1r' "
                              f"(cell is {self.cell.value!r}); set it to 0")


@dataclass(frozen=True)
class CalibrationConfig(_Node):
    """Post-training calibration of a programmed chip's converter ranges (aimc/core/calibration.py).

    On the programmed chip at t = 0, a calibration set drawn from the *training* split is sent through the
    model once; each tile sets a static DAC range from its inputs (``inp``) and its ADC ranges from the
    distribution of its analog outputs before the ADC (``out``, per ``out_granularity``). The ranges are tile
    state (saved in chip images) and hold for every later time. ``samples``: size of the calibration set the
    deployment draws; ``max_rows``: tile input rows used at most (evenly spaced) for the ADC choice.
    """

    inp: InputCalibration = InputCalibration.PERCENTILE
    inp_percentile: float = 99.99
    out: OutputCalibration = OutputCalibration.MSE
    out_percentile: float = 99.99
    out_granularity: CalibrationGranularity = CalibrationGranularity.COLUMN
    samples: int = 1000
    max_rows: int = 4096
    slice_ranges: SliceRanges = SliceRanges.POW2   # weight slices: ranges power-of-two apart (CrossSim manual §9.3)

    def __post_init__(self):
        o = "CalibrationConfig"
        _enum(o, self, "inp", InputCalibration)
        _enum(o, self, "out", OutputCalibration)
        _enum(o, self, "out_granularity", CalibrationGranularity)
        _enum(o, self, "slice_ranges", SliceRanges)
        _num(o, "inp_percentile", self.inp_percentile, 0, 100, lo_open=True)
        _num(o, "out_percentile", self.out_percentile, 0, 100, lo_open=True)
        _num(o, "samples", self.samples, 1, 2**31, integer=True)
        _num(o, "max_rows", self.max_rows, 1, 2**31, integer=True)


@dataclass(frozen=True)
class TileConfig(_Node):
    """The root of the config tree for one layer's tiles.

    ``forward``/``backward``: periphery of y = W x and of the transposed read x' = W^T d
    (backward defaults to no bound management, as in aihwkit). ``mapping``: conductances and splitting.
    ``backward_ideal``: torch adapters use the exact transposed product for gradients (straight-through).
    """

    forward: IOConfig = field(default_factory=IOConfig)
    backward: IOConfig = field(default_factory=lambda: IOConfig(bound_management=BoundManagement.NONE))
    mapping: MappingConfig = field(default_factory=MappingConfig)
    backward_ideal: bool = True
    inference: InferenceConfig | None = None  # device physics for program/drift; None = ideal conductances
    array: ArrayConfig = field(default_factory=ArrayConfig)  # wires and cells of the array (circuit model)
    calibration: CalibrationConfig | None = None  # converter-range calibration method; None = uncalibrated

    def __post_init__(self):
        for name, cls in (("forward", IOConfig), ("backward", IOConfig), ("mapping", MappingConfig),
                          ("array", ArrayConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"TileConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.backward_ideal, bool):
            raise ConfigError("TileConfig.backward_ideal must be true or false")
        if self.inference is not None and not isinstance(self.inference, InferenceConfig):
            raise ConfigError(f"TileConfig.inference must be an InferenceConfig or None, "
                              f"got {type(self.inference).__name__}")
        if self.array.model != WireModel.POLYNOMIAL:
            for name in ("forward", "backward"):
                if getattr(self, name).ir_drop > 0:
                    raise ConfigError(f"TileConfig.{name}.ir_drop = {getattr(self, name).ir_drop} (the polynomial "
                                      f"IR-drop model) conflicts with array.model = {self.array.model.value!r}: "
                                      f"set {name}.ir_drop = 0 or array.model = 'polynomial'")
        if (self.array.model == WireModel.CIRCUIT and self.array.cell == CellKind.SINH
                and self.mapping.kind == MappingKind.SLICED):
            raise ConfigError("TileConfig.mapping.kind = 'sliced' with array.cell = 'sinh' is not supported "
                              "(sliced reads need the effective matrix of linear cells)")
        if self.array.geometry == ArrayGeometry.PHYSICAL and (self.mapping.max_in == 0 or self.mapping.max_out == 0):
            raise ConfigError("TileConfig.array.geometry = 'physical' needs mapping.max_in and mapping.max_out > 0 "
                              "(the physical array size)")
        if self.calibration is not None and not isinstance(self.calibration, CalibrationConfig):
            raise ConfigError(f"TileConfig.calibration must be a CalibrationConfig or None, "
                              f"got {type(self.calibration).__name__}")

    def save(self, path) -> None:
        """Write the config as JSON (atomic)."""
        from ._io import atomic_write_text
        atomic_write_text(path, self.to_json(indent=2))

    @classmethod
    def load(cls, path) -> "TileConfig":
        from ._io import read_regular_text
        try:
            text = read_regular_text(path, "config file")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        d = loads_json(text, f"config file {str(path)!r}")
        return cls.from_dict(d)


_SUBNODES: dict[tuple[type, str], type] = {
    (TileConfig, "forward"): IOConfig,
    (TileConfig, "backward"): IOConfig,
    (TileConfig, "mapping"): MappingConfig,
    (TileConfig, "array"): ArrayConfig,
}


def register_subnode(parent: type, name: str, cls: type) -> None:
    """Let an extension's config node (a field of ``parent``) round-trip through JSON."""
    _SUBNODES[(parent, name)] = cls


register_subnode(TileConfig, "inference", InferenceConfig)
register_subnode(TileConfig, "calibration", CalibrationConfig)


def chip_identity(d: dict) -> dict:
    """A config dict (``to_dict``/``normalised_dict``) less what is no part of the hardware: what must match
    for a saved chip state to fit a model. Left out: the calibration *method* (the calibrated ranges are
    tile state; an image written before calibration existed, or with another method, still fits) and the
    array's circuit-solver settings (``ArrayConfig.SOLVER_FIELDS``: a numerical tolerance or the choice of
    solver changes how closely the same circuit is computed, not the circuit)."""
    if not isinstance(d, dict):
        return d
    out = {k: v for k, v in d.items() if k != "calibration"}
    if isinstance(out.get("array"), dict):
        out["array"] = {k: v for k, v in out["array"].items() if k not in ArrayConfig.SOLVER_FIELDS}
    return out


# ----------------------------------------------------------------------------------------------- presets

def ideal() -> TileConfig:
    """Floating point: perfect forward/backward, no weight scaling, no split limits on accuracy."""
    return TileConfig(forward=IOConfig(is_perfect=True), backward=IOConfig(is_perfect=True))


def default() -> TileConfig:
    """aihwkit library defaults: 7-bit DAC, 9-bit ADC (bound 12), out_noise 0.06, abs-max NM, iterative BM."""
    return TileConfig()


def standard_hwa() -> TileConfig:
    """Standard HWA training preset (Rasch et al., Nat. Commun. 14, 5282, 2023; aihwkit StandardHWATrainingPreset).

    8-bit DAC and ADC, inp_bound 1, NM constant 1 (a learned input range does the scaling), no BM,
    out_bound 10, out_noise 0.04, PCM_READ w_noise 0.0175, ir_drop 1.0; columnwise weight scaling to 1.0,
    tiles of at most 512 inputs and no output split.
    """
    io = IOConfig(inp_bits=8, out_bits=8, inp_bound=1.0, out_bound=10.0, out_noise=0.04,
                  w_noise=0.0175, w_noise_type=WeightNoiseType.PCM_READ, ir_drop=1.0,
                  noise_management=NoiseManagement.CONSTANT, nm_thres=1.0,
                  bound_management=BoundManagement.NONE)
    return TileConfig(forward=io, backward=IOConfig(is_perfect=True),
                      mapping=MappingConfig(weight_scaling_omega=1.0, weight_scaling_columnwise=True,
                                            max_in=512, max_out=0))


PRESETS = {"ideal": ideal, "default": default, "standard-hwa": standard_hwa}


def preset(name: str) -> TileConfig:
    """A named preset: 'ideal', 'default' (7/9-bit), 'standard-hwa' (Rasch et al. 2023)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}") from None


def as_config(cfg: Any) -> TileConfig:
    """Accept a TileConfig, a preset name, a dict, or a JSON file path."""
    if cfg is None:
        return default()
    if isinstance(cfg, TileConfig):
        return cfg
    if isinstance(cfg, dict):
        return TileConfig.from_dict(cfg)
    if isinstance(cfg, str) and cfg in PRESETS:
        return preset(cfg)
    if isinstance(cfg, str) or hasattr(cfg, "__fspath__"):
        return TileConfig.load(cfg)
    raise ConfigError(f"cannot make a TileConfig from {type(cfg).__name__}: pass a TileConfig, a preset name "
                      f"({sorted(PRESETS)}), a dict or a JSON file path")
