"""Pulse-response device models: the weight change of one cell per programming pulse, vectorised (numpy only).

Every family is a frozen, validated dataclass registered under a card family name (``device_models.cards``)
and shares one base, :class:`PulsedDevice`, which owns everything that is not state dependence:
device-to-device (d2d) sampling of step sizes and bounds, cycle-to-cycle (c2c) noise, clipping, write noise,
stuck devices, reset, decay and diffusion. A family only defines its **step factor** f^d(w) >= 0, the
deterministic, state-dependent multiplier of the nominal step (formulas follow ``shared/reference/physics.md``
§5, i.e. the public descriptions of the aihwkit ``PulsedDevice`` models and the papers cited per family).

The per-pulse rule (the contract an ``aimc`` Numba kernel must reproduce; d = +1 up, -1 down, 0 no pulse)::

    up   = d > 0
    dw   = dw_up[ij] if up else dw_down[ij]                     (> 0, drawn once: sample_devices)
    f    = step_factor(w, d)  = max(f_family^d(w), 0)          (deterministic, per family below)
    s    = dw_min_std·dw·f               if mult_noise          (multiplicative c2c: w + d·dw·f·(1 + σξ))
         = dw_min_std·dw                 otherwise              (additive c2c:       w + d·dw·(f + σξ))
         (exp-step with dw_min_std_add/slope > 0: s = dw_min_std·(std_add + dw·f + std_slope·|w|))
    w'   = min(max(w + d·(dw·f + s·ξ), w_min[ij]), w_max[ij])   if d != 0, else w' = w

ξ ~ N(0, 1) is one fresh draw per element and pulse (float32; ``pulse(..., xi=...)`` takes it from the
caller so a kernel with its own generator can be held equal to this oracle). ``rng=None`` means the
deterministic part only (as if dw_min_std = 0). All arithmetic is float32.

Device-to-device draws (``sample_devices``; physics.md §5.1), with ξ_k independent standard normals::

    s_ij     = 1 + dw_min_dtod·ξ_0        (or exp(dw_min_dtod·ξ_0) if dw_min_dtod_log_normal: median dw_min)
    β_ij     = up_down + up_down_dtod·ξ_1
    dw_up    = dw_min·(s_ij + β_ij),   dw_down = dw_min·(s_ij − β_ij)       (magnitudes; abs() if enforce_consistency)
    w_max_ij = w_max·(1 + w_max_dtod·ξ_2),   w_min_ij = w_min·(1 + w_min_dtod·ξ_3)
    enforce_consistency: w_max_ij = |w_max_ij| if w_max >= 0, w_min_ij = −|w_min_ij| if w_min <= 0,
                         then swapped where w_min_ij > w_max_ij
    stuck (corrupt_devices_prob): both bounds := one value U(−corrupt_devices_range, +corrupt_devices_range)

Write noise (``write_noise_std``, physics.md §5.1): every update verb here (``pulse``, ``apply_pulses``,
``apply_reset``, ``decay``, ``diffuse``) acts on the *hidden persistent* weight w_p, which is the array the
caller holds. What the periphery reads is ``visible(w_p, devs, rng)`` = w_p − reference_ij +
write_noise_std·dw_min·ξ, re-drawn for the elements an update touched (pass ``previous=`` and ``touched=``
to keep the old visible value elsewhere). ``reference_ij`` is 0 except for ``soft-bounds`` reference cells.

Families (f^d(w) before the max(·, 0); all bounds are the per-device ones unless stated):

===================  ==========================================================================================
constant-step        f = 1                                                   (Gokmen & Vlasov 2016)
linear-step          f^d = 1 + slope^d·w,  slope^+ = −|γ_up + γ_up_dtod·ξ|/B^+, slope^- = −|γ_down + ...|/B^-,
                     B = the mean bounds (mean_bound_reference) or the device's; no abs() if allow_increasing
soft-bounds          f^+ = 1 − w/w_max_ij,  f^- = 1 − w/w_min_ij              (linear-step with γ = 1)
soft-bounds-pmax     soft-bounds with (dw_min, up_down, w_max, w_min) mapped from (p_max, alpha, range)
exp-step             f^d = 1 − A^d·exp(d·γ^d·z),  z = 2a·w/(w_max_ij − w_min_ij) + b
pow-step             ω = clip((w_max_ij − w)/(w_max_ij − w_min_ij), 0, 1); f^+ = ω^γ+_ij, f^- = (1 − ω)^γ-_ij
piecewise            f^d = linear interpolation of the node multipliers v^d at equally spaced nodes on
                     [w_min_ij, w_max_ij]
pulsed-lookup-table  f^d = np.interp(w, w_nodes, v^d) (absolute node positions, clamped at the ends);
                     a card may give a CSV of an up-then-down pulse experiment instead (``csv = "file.csv"``),
                     fitted when the card is loaded (``device_models.fit``)
===================  ==========================================================================================

(The name ``lookup-table`` is taken by the inference family of the same idea; the pulsed one is
``pulsed-lookup-table``.)
"""
from __future__ import annotations

import math
import types
from dataclasses import InitVar, dataclass, field
from typing import ClassVar, Mapping

import numpy as np

from ._validate import check_range
from .cards import register

__all__ = [
    "DeviceArray",
    "PulsedDevice",
    "ConstantStep",
    "LinearStep",
    "SoftBounds",
    "SoftBoundsPmax",
    "ExpStep",
    "PowStep",
    "PiecewiseStep",
    "PulsedLookupTable",
    "as_generator",
    "stack_devices",
]

F32 = np.float32
_EXP_CAP = F32(80.0)  # exp() argument cap: keeps float32 finite (e^80 ~ 5.5e34) so 0·exp never gives NaN


def as_generator(rng):
    """``rng`` as a ``numpy.random.Generator``: an int seeds ``Generator(Philox(seed))``; a Generator passes."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.Generator(np.random.Philox(int(rng)))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _const(value, shape) -> np.ndarray:
    """A read-only float32 array of ``shape`` holding one value (a zero-stride view: no memory per device)."""
    return np.broadcast_to(F32(value), shape)


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only float32 version of ``a`` (copied if it was writeable, so callers' arrays stay theirs)."""
    a = np.asarray(a, dtype=F32)
    if a.flags.writeable:
        a = a.copy()
        a.setflags(write=False)
    return a


# ----------------------------------------------------------------------------------------------------------
# the per-device parameter arrays
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class DeviceArray:
    """Per-device pulse parameters, drawn once (d2d) by :meth:`PulsedDevice.sample_devices`.

    ``arrays``: float32 arrays of exactly ``shape`` (read only; tile-wide values are zero-stride views, use
    ``np.ascontiguousarray`` if a kernel needs contiguous memory). Always present: ``dw_up``, ``dw_down``
    (step magnitudes, >= 0), ``w_max``, ``w_min`` (clipping bounds), ``reset_target``, ``decay_rate``
    (1/lifetime_ij, 0 = off), ``diffusion_rate``, ``reference`` (subtracted on read), plus the family's arrays
    (e.g. ``slope_up``/``slope_down`` for linear-step and soft-bounds; ``A_up``, ``A_down``, ``gamma_up``,
    ``gamma_down``, ``exp_scale``, ``exp_offset`` for exp-step; ``gamma_up``/``gamma_down`` for pow-step).
    ``tables``: tile-wide 1-D float32 arrays (node multipliers of piecewise and lookup-table devices).
    Every name is also an attribute: ``devs.dw_up``.
    """

    family: str
    shape: tuple
    arrays: Mapping[str, np.ndarray]
    tables: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        arrays = {}
        for k, v in self.arrays.items():
            a = np.asarray(v)
            if a.dtype != F32:
                a = a.astype(F32)
            if a.shape != self.shape:
                a = np.broadcast_to(a, self.shape)
            arrays[k] = _ro(a)
        object.__setattr__(self, "arrays", types.MappingProxyType(arrays))
        object.__setattr__(self, "tables", types.MappingProxyType(
            {k: _ro(np.array(v, dtype=F32, copy=True)) for k, v in self.tables.items()}))
        reserved = {"family", "shape", "arrays", "tables", "keys", "with_arrays"}
        for k, v in (*self.arrays.items(), *self.tables.items()):  # plain attributes: fast lookup in hot loops
            if k in reserved:
                raise ValueError(f"DeviceArray: array name {k!r} is reserved")
            object.__setattr__(self, k, v)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("arrays", "tables", "family", "shape"):
            raise AttributeError(name)
        try:
            arrays = object.__getattribute__(self, "arrays")
            tables = object.__getattribute__(self, "tables")
        except AttributeError:
            raise AttributeError(name) from None
        if name in arrays:
            return arrays[name]
        if name in tables:
            return tables[name]
        raise AttributeError(f"DeviceArray of family {self.family!r} has no array {name!r}; "
                             f"arrays: {sorted(arrays)}, tables: {sorted(tables)}")

    def __getitem__(self, name):
        return getattr(self, name)

    def __reduce__(self):  # MappingProxyType does not pickle; rebuild from plain dicts
        return (DeviceArray, (self.family, self.shape, dict(self.arrays), dict(self.tables)))

    def keys(self):
        return list(self.arrays) + list(self.tables)

    def with_arrays(self, **arrays) -> "DeviceArray":
        """A copy with some arrays replaced (e.g. to hand-build devices for a test or a fit)."""
        unknown = sorted(set(arrays) - set(self.arrays))
        if unknown:
            raise ValueError(f"unknown device array(s) {unknown}; known: {sorted(self.arrays)}")
        return DeviceArray(self.family, self.shape, {**self.arrays, **arrays}, dict(self.tables))


def stack_devices(devs_list) -> DeviceArray:
    """Concatenate 1-D DeviceArrays of one family along axis 0 (used to batch parameter sets in fits)."""
    fam = devs_list[0].family
    if any(d.family != fam for d in devs_list):
        raise ValueError("stack_devices: all DeviceArrays must be of one family")
    keys = list(devs_list[0].arrays)
    arrays = {k: np.concatenate([np.atleast_1d(np.asarray(d.arrays[k])) for d in devs_list]) for k in keys}
    n = len(arrays[keys[0]])
    return DeviceArray(fam, (n,), arrays, dict(devs_list[0].tables))


# ----------------------------------------------------------------------------------------------------------
# the shared base
# ----------------------------------------------------------------------------------------------------------

def _check_bool(owner: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}.{name} must be true or false, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class PulsedDevice:
    """Common parameters of every pulsed family (physics.md §5.1; aihwkit ``PulsedDevice`` names).

    Relative spreads are fractions of the named mean. Defaults are aihwkit's library defaults.

    * ``dw_min`` 0.001: mean step (weight units). ``dw_min_dtod`` 0.3 (+ ``dw_min_dtod_log_normal``): d2d
      spread of the step. ``dw_min_std`` 0.3: c2c spread σ of each step; ``mult_noise`` True selects the
      multiplicative form w + d·dw·f(1 + σξ), False the additive w + d·dw(f + σξ).
    * ``up_down`` 0, ``up_down_dtod`` 0.01: systematic up/down bias β (dw_up = dw_min(s + β), dw_down =
      dw_min(s − β)).
    * ``w_max`` 0.6, ``w_min`` −0.6, ``w_max_dtod``/``w_min_dtod`` 0.3: hard bounds, drawn per device.
    * ``write_noise_std`` 0: visible weight = w_p + write_noise_std·dw_min·ξ (see :meth:`visible`).
    * ``corrupt_devices_prob`` 0, ``corrupt_devices_range`` 0.1: stuck devices (both bounds := one value
      drawn uniformly in ±range).
    * ``reset`` 0, ``reset_dtod`` 0, ``reset_std`` 0.01: reset target b_ij = reset(1 + reset_dtod·ξ), plus
      reset_std·ξ per reset (:meth:`apply_reset`).
    * ``lifetime`` 0 (off), ``lifetime_dtod`` 0: decay toward b_ij once per call of :meth:`decay`
      (w ← b + (w − b)(1 − α/lifetime_ij), lifetime_ij = max(lifetime(1 + lifetime_dtod·ξ), 1)).
    * ``diffusion`` 0, ``diffusion_dtod`` 0: :meth:`diffuse` adds ρ_ij·ξ, ρ_ij = diffusion(1 + diffusion_dtod·ξ)
      clipped at 0.
    * ``enforce_consistency`` True: step magnitudes made positive, bound signs and order repaired.
    """

    dw_min: float = 0.001
    dw_min_dtod: float = 0.3
    dw_min_dtod_log_normal: bool = False
    dw_min_std: float = 0.3
    mult_noise: bool = True
    up_down: float = 0.0
    up_down_dtod: float = 0.01
    w_max: float = 0.6
    w_min: float = -0.6
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3
    write_noise_std: float = 0.0
    corrupt_devices_prob: float = 0.0
    corrupt_devices_range: float = 0.1
    reset: float = 0.0
    reset_dtod: float = 0.0
    reset_std: float = 0.01
    lifetime: float = 0.0
    lifetime_dtod: float = 0.0
    diffusion: float = 0.0
    diffusion_dtod: float = 0.0
    enforce_consistency: bool = True

    family: ClassVar[str] = ""  # set by @register on each family
    # number of standard-normal fields the family draws in sample_devices (fixed, for reproducible streams)
    _family_draws: ClassVar[int] = 0
    _BOOL_FIELDS: ClassVar[tuple] = ("dw_min_dtod_log_normal", "mult_noise", "enforce_consistency")

    # ------------------------------------------------------------------ validation
    @property
    def _owner(self) -> str:
        return type(self).family or type(self).__name__

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def __post_init__(self):
        o = self._owner
        num = lambda n, lo=-math.inf, hi=math.inf, **kw: self._set(n, check_range(o, n, getattr(self, n), lo, hi, **kw))  # noqa: E731
        for b in self._BOOL_FIELDS:
            _check_bool(o, b, getattr(self, b))
        num("dw_min", 0.0, math.inf, lo_open=True, hi_open=True)
        num("dw_min_dtod", 0.0, 10.0)
        num("dw_min_std", 0.0, 1e4)
        num("up_down", -1.0, 1.0)
        num("up_down_dtod", 0.0, 10.0)
        num("w_max", -1e6, 1e6)
        num("w_min", -1e6, 1e6)
        if not self.w_min < self.w_max:
            raise ValueError(f"{o}.w_max = {self.w_max!r} must be greater than {o}.w_min = {self.w_min!r}")
        num("w_max_dtod", 0.0, 10.0)
        num("w_min_dtod", 0.0, 10.0)
        num("write_noise_std", 0.0, 1e6)
        num("corrupt_devices_prob", 0.0, 1.0)
        num("corrupt_devices_range", 0.0, 1e6)
        num("reset", -1e6, 1e6)
        num("reset_dtod", 0.0, 10.0)
        num("reset_std", 0.0, 1e6)
        num("lifetime", 0.0, math.inf, hi_open=True)
        if 0.0 < self.lifetime < 1.0:
            raise ValueError(f"{o}.lifetime = {self.lifetime!r} is out of range: 0 (off) or [1, inf)")
        num("lifetime_dtod", 0.0, 10.0)
        num("diffusion", 0.0, 1e6)
        num("diffusion_dtod", 0.0, 10.0)
        self._validate()

    def _validate(self):
        """Family hook: validate the family's own fields (errors name the field and the range)."""

    # ------------------------------------------------------------------ family hooks
    def _family_arrays(self, shape, z: list, devs: dict) -> dict:
        """Family hook: per-device arrays from ``self._family_draws`` normal fields ``z`` and the common ones."""
        return {}

    def _tables(self) -> dict:
        """Family hook: tile-wide 1-D tables."""
        return {}

    def _factor(self, w, up: bool, devs: DeviceArray):
        """Family hook: f^d(w) before max(·, 0) (float32 arrays of w's shape)."""
        raise NotImplementedError

    def _noise_scale(self, w, dw, f, devs: DeviceArray):
        """|c2c noise amplitude| s of one pulse (see the module docstring)."""
        sigma = F32(self.dw_min_std)
        return sigma * dw * f if self.mult_noise else sigma * dw

    # ------------------------------------------------------------------ d2d sampling
    def sample_devices(self, shape, rng) -> DeviceArray:
        """Draw the per-device parameters of an array of ``shape`` cells once (d2d variation).

        ``rng``: a ``numpy.random.Generator`` (seeded, e.g. ``Generator(Philox(seed))``) or an int seed.
        Draw order (fixed, independent of parameter values): ξ_0 step, ξ_1 up/down bias, ξ_2 w_max, ξ_3 w_min,
        the family's fields, ξ reset, ξ lifetime, ξ diffusion, U stuck selection, U stuck value.
        """
        g = as_generator(rng)
        shape = self._check_shape(shape)

        def draw():
            return g.standard_normal(shape, dtype=F32)

        return self._build(shape, draw, lambda: g.random(shape, dtype=F32))

    def nominal_devices(self, shape=()) -> DeviceArray:
        """Per-device arrays without d2d variation (every ξ = 0, no stuck devices)."""
        shape = self._check_shape(shape)
        zero = np.zeros(shape, dtype=F32)
        return self._build(shape, lambda: zero, lambda: np.ones(shape, dtype=F32))

    @staticmethod
    def _check_shape(shape):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}") from None
        if any(s < 0 for s in shape):
            raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
        return shape

    def _build(self, shape, draw, uniform) -> DeviceArray:
        z_dw, z_ud, z_max, z_min = draw(), draw(), draw(), draw()
        z_fam = [draw() for _ in range(self._family_draws)]
        z_reset, z_life, z_diff = draw(), draw(), draw()
        u_sel, u_val = uniform(), uniform()

        one = F32(1.0)
        dmin = F32(self.dw_min)
        if self.dw_min_dtod_log_normal:
            s = np.exp(F32(self.dw_min_dtod) * z_dw)
        else:
            s = one + F32(self.dw_min_dtod) * z_dw
        beta = F32(self.up_down) + F32(self.up_down_dtod) * z_ud
        dw_up = dmin * (s + beta)
        dw_down = dmin * (s - beta)
        b_max = F32(self.w_max) * (one + F32(self.w_max_dtod) * z_max)
        b_min = F32(self.w_min) * (one + F32(self.w_min_dtod) * z_min)
        if self.enforce_consistency:
            dw_up, dw_down = np.abs(dw_up), np.abs(dw_down)
            if self.w_max >= 0:
                b_max = np.abs(b_max)
            if self.w_min <= 0:
                b_min = -np.abs(b_min)
            swap = b_min > b_max
            b_max, b_min = np.where(swap, b_min, b_max), np.where(swap, b_max, b_min)
        arrays = {"dw_up": dw_up, "dw_down": dw_down, "w_max": b_max, "w_min": b_min}

        arrays["reset_target"] = F32(self.reset) * (one + F32(self.reset_dtod) * z_reset)
        if self.lifetime > 0:
            life = np.maximum(F32(self.lifetime) * (one + F32(self.lifetime_dtod) * z_life), one)
            arrays["decay_rate"] = one / life
        else:
            arrays["decay_rate"] = _const(0.0, shape)
        arrays["diffusion_rate"] = np.maximum(F32(self.diffusion) * (one + F32(self.diffusion_dtod) * z_diff),
                                              F32(0.0))
        arrays["reference"] = _const(0.0, shape)
        arrays.update(self._family_arrays(shape, z_fam, arrays))
        devs = DeviceArray(self.family, shape, arrays, self._tables())
        devs = self._finish(devs)
        if self.corrupt_devices_prob > 0:
            stuck = u_sel < F32(self.corrupt_devices_prob)
            val = (F32(2.0) * u_val - one) * F32(self.corrupt_devices_range)
            devs = devs.with_arrays(w_max=np.where(stuck, val, devs.w_max),
                                    w_min=np.where(stuck, val, devs.w_min))
        return devs

    def _finish(self, devs: DeviceArray) -> DeviceArray:
        """Family hook run after the arrays exist (soft-bounds: reference incl. the symmetry point)."""
        return devs

    # ------------------------------------------------------------------ the update
    def _check_w(self, w, devs: DeviceArray, name="w"):
        if not isinstance(devs, DeviceArray):
            raise TypeError(f"devs must be a DeviceArray from sample_devices/nominal_devices, got {type(devs).__name__}")
        if devs.family != self.family:
            raise ValueError(f"devs were drawn for family {devs.family!r}, not {self.family!r}")
        a = np.asarray(w)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        if a.shape != devs.shape:
            try:
                a = np.broadcast_to(a, devs.shape)
            except ValueError:
                raise ValueError(f"{name} has shape {a.shape}, devices have shape {devs.shape}") from None
        a = a.astype(F32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf")
        return a

    @staticmethod
    def _check_direction(direction, shape):
        d = np.asarray(direction)
        if not (np.issubdtype(d.dtype, np.integer) or np.issubdtype(d.dtype, np.floating) or d.dtype == np.bool_):
            raise TypeError(f"direction must be -1, 0 or +1 (scalar or array), got dtype {d.dtype}")
        if d.size and not np.all((d == 1) | (d == 0) | (d == -1)):
            raise ValueError("direction must hold only -1 (down), 0 (no pulse) or +1 (up)")
        try:
            np.broadcast_shapes(d.shape, shape)
        except ValueError:
            raise ValueError(f"direction has shape {d.shape}, devices have shape {shape}") from None
        return d.astype(F32)

    def step_factor(self, w, direction, devs: DeviceArray) -> np.ndarray:
        """f^d(w) >= 0: the state-dependent multiplier of the nominal step dw^d (deterministic part).

        ``direction``: +1 / −1 scalar or array (0 gives 0). The pulse adds d·dw^d·f^d(w) (+ c2c noise).
        """
        w = np.asarray(w, dtype=F32)
        d = np.asarray(direction)
        zero = F32(0.0)
        if d.ndim == 0:
            if d > 0:
                return np.maximum(self._factor(w, True, devs), zero)
            if d < 0:
                return np.maximum(self._factor(w, False, devs), zero)
            return np.zeros(np.broadcast_shapes(w.shape, devs.shape), dtype=F32)
        fu = np.maximum(self._factor(w, True, devs), zero)
        fd = np.maximum(self._factor(w, False, devs), zero)
        return np.where(d > 0, fu, np.where(d < 0, fd, zero)).astype(F32)

    def _pulse(self, w, d, devs: DeviceArray, xi):
        """One pulse without input checks (w float32 of devs.shape, d float32 in {-1, 0, 1})."""
        up = d > 0
        if d.ndim == 0:
            if d == 0:
                return w
            dw = devs.dw_up if up else devs.dw_down
        else:
            dw = np.where(up, devs.dw_up, devs.dw_down)
        f = self.step_factor(w, d, devs)
        delta = dw * f
        if xi is not None:
            delta = delta + self._noise_scale(w, dw, f, devs) * xi
        new = np.minimum(np.maximum(w + d * delta, devs.w_min), devs.w_max)
        if d.ndim == 0:
            return new.astype(F32, copy=False)
        return np.where(d != 0, new, w).astype(F32, copy=False)

    def _noisy(self, rng) -> bool:
        return rng is not None and self.dw_min_std > 0

    def pulse(self, w, direction, devs: DeviceArray, rng=None, *, xi=None) -> np.ndarray:
        """One pulse on every element: w' = clip(w + d·(dw^d·f^d(w) + s·ξ), w_min_ij, w_max_ij).

        ``direction``: +1 (up), −1 (down), 0 (no pulse); scalar or array broadcastable to ``devs.shape``.
        ``rng``: Generator or int seed for the c2c draw ξ; None = deterministic (no c2c noise). ``xi``: the
        standard normals to use instead of drawing (for parity with a kernel). Returns a new float32 array
        (the hidden weight; see :meth:`visible`).
        """
        w = self._check_w(w, devs)
        d = self._check_direction(direction, devs.shape)
        if xi is not None:
            xi = np.broadcast_to(np.asarray(xi, dtype=F32), devs.shape)
        elif self._noisy(rng):
            xi = as_generator(rng).standard_normal(devs.shape, dtype=F32)
        return self._pulse(w, d, devs, xi)

    def apply_pulses(self, w, n, devs: DeviceArray, rng=None) -> np.ndarray:
        """|n_ij| pulses of sign(n_ij) on every element, one at a time, each with its own c2c draw.

        Round k = 0, 1, ... max|n| − 1 pulses every element with |n_ij| > k (a full-shape ξ is drawn each
        round when noisy). The order matters for state-dependent devices; elements are independent.
        """
        w = self._check_w(w, devs)
        n = np.asarray(n)
        if not np.issubdtype(n.dtype, np.integer):
            if np.issubdtype(n.dtype, np.floating) and np.all(np.isfinite(n)) and np.all(n == np.round(n)):
                n = n.astype(np.int64)
            else:
                raise TypeError(f"n must be an integer array of pulse counts, got dtype {n.dtype}")
        try:
            n = np.broadcast_to(n, devs.shape)
        except ValueError:
            raise ValueError(f"n has shape {n.shape}, devices have shape {devs.shape}") from None
        sign = np.sign(n).astype(F32)
        mag = np.abs(n)
        rounds = int(mag.max()) if mag.size else 0
        g = as_generator(rng) if self._noisy(rng) else None
        for k in range(rounds):
            d = np.where(mag > k, sign, F32(0.0))
            xi = g.standard_normal(devs.shape, dtype=F32) if g is not None else None
            w = self._pulse(w, d, devs, xi)
        return w

    def visible(self, w, devs: DeviceArray, rng=None, *, previous=None, touched=None) -> np.ndarray:
        """What the periphery reads: w_p − reference_ij + write_noise_std·dw_min·ξ (ξ fresh).

        Without ``rng`` (or with write_noise_std = 0) no write noise is added. With ``previous`` and
        ``touched`` (bool array), only touched elements get a fresh draw; the others keep ``previous``
        (aihwkit's write noise is re-drawn whenever a device is updated).
        """
        w = self._check_w(w, devs)
        v = w - devs.reference
        if rng is not None and self.write_noise_std > 0:
            g = as_generator(rng)
            v = v + F32(self.write_noise_std * self.dw_min) * g.standard_normal(devs.shape, dtype=F32)
        if touched is not None:
            if previous is None:
                raise ValueError("visible: touched= needs previous= (the visible weights to keep)")
            v = np.where(np.asarray(touched, dtype=bool), v, np.asarray(previous, dtype=F32))
        return v.astype(F32, copy=False)

    def clip(self, w, devs: DeviceArray) -> np.ndarray:
        """w clipped to the per-device bounds."""
        w = self._check_w(w, devs)
        return np.minimum(np.maximum(w, devs.w_min), devs.w_max)

    def apply_reset(self, w, devs: DeviceArray, rng=None, mask=None) -> np.ndarray:
        """Reset (where ``mask``, default all): w = clip(reset_target_ij + reset_std·ξ)."""
        w = self._check_w(w, devs)
        new = np.array(devs.reset_target, dtype=F32)
        if rng is not None and self.reset_std > 0:
            new = new + F32(self.reset_std) * as_generator(rng).standard_normal(devs.shape, dtype=F32)
        new = np.minimum(np.maximum(new, devs.w_min), devs.w_max)
        if mask is not None:
            new = np.where(np.broadcast_to(np.asarray(mask, dtype=bool), devs.shape), new, w)
        return new.astype(F32, copy=False)

    def decay(self, w, devs: DeviceArray, alpha: float = 1.0) -> np.ndarray:
        """One decay step (once per mini-batch): w ← b + (w − b)(1 − α/lifetime_ij), b = reset_target_ij."""
        w = self._check_w(w, devs)
        a = check_range(self._owner, "decay.alpha", alpha, 0.0, math.inf)
        b = devs.reset_target
        out = b + (w - b) * (F32(1.0) - F32(a) * devs.decay_rate)
        return np.minimum(np.maximum(out, devs.w_min), devs.w_max).astype(F32, copy=False)

    def diffuse(self, w, devs: DeviceArray, rng) -> np.ndarray:
        """One diffusion step (once per mini-batch): w += ρ_ij·ξ, clipped to the bounds."""
        w = self._check_w(w, devs)
        g = as_generator(rng)
        out = w + devs.diffusion_rate * g.standard_normal(devs.shape, dtype=F32)
        return np.minimum(np.maximum(out, devs.w_min), devs.w_max).astype(F32, copy=False)

    # ------------------------------------------------------------------ experiments and properties
    def response_curve(self, n_up: int, n_down: int, w0=None, devs: DeviceArray | None = None, rng=None,
                       *, hidden: bool = False) -> np.ndarray:
        """Trace of an up-then-down pulse experiment: shape (1 + n_up + n_down, *devs.shape).

        Row 0 is the start w0 (default: the device's w_min), row k the weight after k pulses (n_up up
        pulses, then n_down down pulses). ``devs`` default: nominal devices of w0's shape. ``rng`` None:
        deterministic; otherwise c2c noise per pulse and, unless ``hidden``, write noise per read. The rows are
        what :meth:`visible` returns (hidden weight minus reference, plus write noise).
        """
        n_up = int(check_range(self._owner, "response_curve.n_up", n_up, 0, 1e8))
        n_down = int(check_range(self._owner, "response_curve.n_down", n_down, 0, 1e8))
        if devs is None:
            devs = self.nominal_devices(np.shape(w0) if w0 is not None else ())
        w = devs.w_min if w0 is None else w0
        w = self.clip(w, devs)
        g = as_generator(rng) if rng is not None else None
        noisy = g is not None and self.dw_min_std > 0
        wn = None if (hidden or g is None) else g
        trace = np.empty((1 + n_up + n_down,) + devs.shape, dtype=F32)
        trace[0] = self.visible(w, devs, wn)
        for k in range(n_up + n_down):
            d = F32(1.0) if k < n_up else F32(-1.0)
            xi = g.standard_normal(devs.shape, dtype=F32) if noisy else None
            w = self._pulse(w, np.asarray(d), devs, xi)
            trace[k + 1] = w - devs.reference if wn is None else self.visible(w, devs, wn)
        return trace

    @property
    def states(self) -> float:
        """Number of steps across the nominal range: (w_max − w_min)/dw_min."""
        return (self.w_max - self.w_min) / self.dw_min

    def symmetry_points(self, devs: DeviceArray) -> np.ndarray:
        """Per-device w* in [w_min_ij, w_max_ij] where up and down steps are equal (NaN where none).

        Found by bisection on g(w) = dw_up·f^+(w) − dw_down·f^-(w) (60 halvings, float64 bookkeeping).
        """
        lo = np.array(devs.w_min, dtype=np.float64)
        hi = np.array(devs.w_max, dtype=np.float64)

        def gfun(x):
            x = x.astype(F32)
            return (devs.dw_up * self.step_factor(x, 1, devs)
                    - devs.dw_down * self.step_factor(x, -1, devs)).astype(np.float64)

        g_lo, g_hi = gfun(lo), gfun(hi)
        ok = (g_lo * g_hi <= 0) & ~((g_lo == 0) & (g_hi == 0)) & (hi > lo)
        rising = g_hi > g_lo
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            gm = gfun(mid)
            go_up = np.where(rising, gm < 0, gm > 0)
            lo = np.where(go_up, mid, lo)
            hi = np.where(go_up, hi, mid)
        out = np.where(ok, 0.5 * (lo + hi), np.nan)
        return out.astype(F32)

    @property
    def symmetry_point(self) -> float | None:
        """The nominal device's symmetry point (None if up and down steps never cross, e.g. constant-step)."""
        v = float(self.symmetry_points(self.nominal_devices(())))
        return None if math.isnan(v) else v


def _safe_div(num, den):
    """num/den with 0 where den == 0 (float32)."""
    den = np.asarray(den, dtype=F32)
    out = np.zeros(np.broadcast_shapes(np.shape(num), den.shape), dtype=F32)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ----------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------

@register("constant-step")
@dataclass(frozen=True)
class ConstantStep(PulsedDevice):
    """Constant step: f^d(w) = 1, i.e. w' = clip(w + d·dw^d_ij(1 + σξ)).

    The device specification of Gokmen & Vlasov, "Acceleration of deep neural network training with
    resistive cross-point devices", Front. Neurosci. 10:333 (2016). From 0 with σ = 0, n up pulses give
    n·dw_up until the bound (physics.md §9).
    """

    def _factor(self, w, up, devs):
        return np.ones(np.broadcast_shapes(np.shape(w), devs.shape), dtype=F32)


def _linear_factor(w, up, devs):
    slope = devs.slope_up if up else devs.slope_down
    return F32(1.0) + slope * w


@register("linear-step")
@dataclass(frozen=True)
class LinearStep(PulsedDevice):
    """Linear state dependence: f^d(w) = 1 + slope^d_ij·w (physics.md §5.2; aihwkit ``LinearStepDevice``).

    slope^+_ij = −|γ_up + γ_up_dtod·ξ|/B^+, slope^-_ij = −|γ_down + γ_down_dtod·ξ|/B^-; B^± = the mean bounds
    w_max, w_min if ``mean_bound_reference`` else the device's bounds (a bound of 0 gives slope 0). With
    ``allow_increasing`` the abs() is dropped (steps may grow toward a bound). ``mult_noise`` False gives the
    additive c2c form. γ = 1 with per-device bounds is :class:`SoftBounds`.
    Used for capacitor (Li et al., VLSI 2018) and ECRAM (Tang et al., IEDM 2018; Kim et al., IEDM 2019) cards.
    """

    gamma_up: float = 0.0
    gamma_down: float = 0.0
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    mean_bound_reference: bool = True
    allow_increasing: bool = False

    _family_draws: ClassVar[int] = 2
    _BOOL_FIELDS: ClassVar[tuple] = PulsedDevice._BOOL_FIELDS + ("mean_bound_reference", "allow_increasing")

    def _validate(self):
        o = self._owner
        for n in ("gamma_up", "gamma_down"):
            self._set(n, check_range(o, n, getattr(self, n), -1e3, 1e3))
        for n in ("gamma_up_dtod", "gamma_down_dtod"):
            self._set(n, check_range(o, n, getattr(self, n), 0.0, 1e3))

    def _family_arrays(self, shape, z, devs):
        gu = F32(self.gamma_up) + F32(self.gamma_up_dtod) * z[0]
        gd = F32(self.gamma_down) + F32(self.gamma_down_dtod) * z[1]
        if not self.allow_increasing:
            gu, gd = np.abs(gu), np.abs(gd)
        if self.mean_bound_reference:
            bu, bd = _const(self.w_max, shape), _const(self.w_min, shape)
        else:
            bu, bd = devs["w_max"], devs["w_min"]
        return {"slope_up": -_safe_div(gu, bu), "slope_down": -_safe_div(gd, bd)}

    def _factor(self, w, up, devs):
        return _linear_factor(w, up, devs)


@register("soft-bounds")
@dataclass(frozen=True)
class SoftBounds(PulsedDevice):
    """Soft bounds: f^+(w) = 1 − w/w_max_ij, f^-(w) = 1 − w/w_min_ij (physics.md §5.2; aihwkit
    ``SoftBoundsDevice``/``SoftBoundsReferenceDevice``): the step shrinks linearly to 0 at the device's bound.

    From w = 0 with σ = 0, n up pulses give w_n = b(1 − (1 − dw_up/b)^n), b = w_max_ij (physics.md §9).
    Symmetry point w* = (dw_up − dw_down)/(dw_up/w_max − dw_down/w_min).

    Reference cell (``SoftBoundsReference``): the read value is w − r_ij with r_ij = reference_mean +
    reference_std·ξ drawn once, plus the device's own symmetry point if ``subtract_symmetry_point``
    (Gong & Rasch et al., IEDM 2022: zero-shifting of the reference device). Requires w_min < 0 < w_max.
    """

    reference_mean: float = 0.0
    reference_std: float = 0.0
    subtract_symmetry_point: bool = False

    _family_draws: ClassVar[int] = 1
    _BOOL_FIELDS: ClassVar[tuple] = PulsedDevice._BOOL_FIELDS + ("subtract_symmetry_point",)

    def _validate(self):
        o = self._owner
        if not self.w_max > 0:
            raise ValueError(f"{o}.w_max = {self.w_max!r} must be > 0 for soft bounds")
        if not self.w_min < 0:
            raise ValueError(f"{o}.w_min = {self.w_min!r} must be < 0 for soft bounds")
        self._set("reference_mean", check_range(o, "reference_mean", self.reference_mean, -1e6, 1e6))
        self._set("reference_std", check_range(o, "reference_std", self.reference_std, 0.0, 1e6))

    def _family_arrays(self, shape, z, devs):
        one = F32(1.0)
        ref = F32(self.reference_mean) + F32(self.reference_std) * z[0]
        return {"slope_up": -_safe_div(one, devs["w_max"]), "slope_down": -_safe_div(one, devs["w_min"]),
                "reference": ref}

    def _finish(self, devs):
        if not self.subtract_symmetry_point:
            return devs
        wstar = np.nan_to_num(self.symmetry_points(devs), nan=0.0)
        return devs.with_arrays(reference=devs.reference + wstar)

    def _factor(self, w, up, devs):
        return _linear_factor(w, up, devs)

    def symmetry_points(self, devs):
        """Closed form w* = (dw_up − dw_down)/(dw_up/w_max − dw_down/w_min) (NaN outside the bounds)."""
        du = devs.dw_up.astype(np.float64)
        dd = devs.dw_down.astype(np.float64)
        den = -(du * devs.slope_up.astype(np.float64) - dd * devs.slope_down.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            ws = np.where(den != 0, (du - dd) / np.where(den != 0, den, 1.0), np.nan)
        inside = (ws >= devs.w_min) & (ws <= devs.w_max)
        return np.where(inside, ws, np.nan).astype(F32)


@register("soft-bounds-pmax")
@dataclass(frozen=True)
class SoftBoundsPmax(SoftBounds):
    """Soft bounds parameterised by a pulse experiment (physics.md §5.2, aihwkit ``SoftBoundsPmaxDevice``).

    B = (range_max − range_min)/(1 − e^(−α·p_max)); w_min = range_min, w_max = range_min + B,
    dw_min = B·α, up_down = 1 + 2·range_min/B. (p_max 1000, α 5e-4, range ±1 → B ≈ 5.083, w_max ≈ 4.083,
    dw_min ≈ 2.541e-3, up_down ≈ 0.6065; physics.md §9.)

    With this module's soft-bounds rule the mapped nominal device follows, exactly, up:
    w_p = w_max − (w_max − w_0)(1 − 2α)^p and down: w_p = w_min + (w_0 − w_min)(1 − 2α)^p, because
    dw_min(1 + up_down) = 2α·w_max and dw_min(1 − up_down) = 2α·|w_min|. (Note: that is a rate of 2α with
    asymptotes range_min and range_min + B, not the experiment written next to the mapping in physics.md;
    the mapping numbers are kept as published.) dw_min, up_down, w_max, w_min are derived and cannot be set.
    """

    p_max: int = 1000
    alpha: float = 5e-4
    range_min: float = -1.0
    range_max: float = 1.0
    dw_min: float = field(default=0.001, init=False)
    up_down: float = field(default=0.0, init=False)
    w_max: float = field(default=0.6, init=False)
    w_min: float = field(default=-0.6, init=False)

    def __post_init__(self):
        o = self._owner
        p = check_range(o, "p_max", self.p_max, 1, 1e9)
        if p != int(p):
            raise ValueError(f"{o}.p_max = {self.p_max!r} must be an integer number of pulses")
        self._set("p_max", int(p))
        a = check_range(o, "alpha", self.alpha, 0.0, 1.0, lo_open=True)
        rmin = check_range(o, "range_min", self.range_min, -1e6, 0.0, hi_open=True)
        rmax = check_range(o, "range_max", self.range_max, 0.0, 1e6, lo_open=True)
        self._set("alpha", a)
        self._set("range_min", rmin)
        self._set("range_max", rmax)
        b = (rmax - rmin) / (1.0 - math.exp(-a * p))
        self._set("w_min", rmin)
        self._set("w_max", rmin + b)
        self._set("dw_min", b * a)
        self._set("up_down", 1.0 + 2.0 * rmin / b)
        super().__post_init__()

    @property
    def B(self) -> float:
        """B = (range_max − range_min)/(1 − e^(−α·p_max))."""
        return (self.range_max - self.range_min) / (1.0 - math.exp(-self.alpha * self.p_max))


@register("exp-step")
@dataclass(frozen=True)
class ExpStep(PulsedDevice):
    """Exponential state dependence (physics.md §5.2; aihwkit ``ExpStepDevice``, fitted to ReRAM by
    Gong et al., Nat. Commun. 9, 2102 (2018) and to PCM by Nandakumar et al., Front. Neurosci. 14:406 (2020)).

    f^d(w) = 1 − A^d·exp(d·γ^d·z),  z = 2a·w/(w_max_ij − w_min_ij) + b  (A, γ, a, b tile-wide; a stuck device
    with zero range has z = b). Extended c2c noise if ``dw_min_std_add`` or ``dw_min_std_slope`` > 0: the
    noise amplitude is s = σ·(dw_min_std_add + dw^d·f + dw_min_std_slope·|w|) (weight units), added as
    d·s·ξ; otherwise the base rule (multiplicative or additive).
    """

    A_up: float = 0.00081
    A_down: float = 0.36833
    gamma_up: float = 12.44625
    gamma_down: float = 12.78785
    a: float = 0.244
    b: float = 0.2425
    dw_min_std_add: float = 0.0
    dw_min_std_slope: float = 0.0

    def _validate(self):
        o = self._owner
        for n in ("A_up", "A_down", "a", "b"):
            self._set(n, check_range(o, n, getattr(self, n), -1e6, 1e6))
        for n in ("gamma_up", "gamma_down"):
            self._set(n, check_range(o, n, getattr(self, n), 0.0, 1e3))
        for n in ("dw_min_std_add", "dw_min_std_slope"):
            self._set(n, check_range(o, n, getattr(self, n), 0.0, 1e6))

    def _family_arrays(self, shape, z, devs):
        rng_w = devs["w_max"] - devs["w_min"]
        return {"A_up": _const(self.A_up, shape), "A_down": _const(self.A_down, shape),
                "gamma_up": _const(self.gamma_up, shape), "gamma_down": _const(self.gamma_down, shape),
                "exp_scale": _safe_div(F32(2.0 * self.a), rng_w), "exp_offset": _const(self.b, shape)}

    def _factor(self, w, up, devs):
        z = devs.exp_scale * w + devs.exp_offset
        if up:
            return F32(1.0) - devs.A_up * np.exp(np.minimum(devs.gamma_up * z, _EXP_CAP))
        return F32(1.0) - devs.A_down * np.exp(np.minimum(-devs.gamma_down * z, _EXP_CAP))

    def _noise_scale(self, w, dw, f, devs):
        if self.dw_min_std_add > 0 or self.dw_min_std_slope > 0:
            return F32(self.dw_min_std) * (F32(self.dw_min_std_add) + dw * f
                                           + F32(self.dw_min_std_slope) * np.abs(w))
        return super()._noise_scale(w, dw, f, devs)


@register("pow-step")
@dataclass(frozen=True)
class PowStep(PulsedDevice):
    """Power-law state dependence (physics.md §5.2; Fusi & Abbott, Nat. Neurosci. 10, 485 (2007);
    Frascaroli et al., Sci. Rep. 8, 7178 (2018); aihwkit ``PowStepDevice``).

    ω = clip((w_max_ij − w)/(w_max_ij − w_min_ij), 0, 1);  f^+ = ω^γ+_ij,  f^- = (1 − ω)^γ-_ij,
    γ^d_ij = pow_gamma·(1 + d·β_ij + pow_gamma_dtod·ξ), β_ij = pow_up_down + pow_up_down_dtod·ξ'
    (abs() if enforce_consistency). A stuck device with zero range has ω = 0.
    """

    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.1
    pow_up_down: float = 0.0
    pow_up_down_dtod: float = 0.0

    _family_draws: ClassVar[int] = 2

    def _validate(self):
        o = self._owner
        self._set("pow_gamma", check_range(o, "pow_gamma", self.pow_gamma, 0.0, 100.0, lo_open=True))
        self._set("pow_gamma_dtod", check_range(o, "pow_gamma_dtod", self.pow_gamma_dtod, 0.0, 10.0))
        self._set("pow_up_down", check_range(o, "pow_up_down", self.pow_up_down, -1.0, 1.0))
        self._set("pow_up_down_dtod", check_range(o, "pow_up_down_dtod", self.pow_up_down_dtod, 0.0, 10.0))

    def _family_arrays(self, shape, z, devs):
        one = F32(1.0)
        g = one + F32(self.pow_gamma_dtod) * z[0]
        beta = F32(self.pow_up_down) + F32(self.pow_up_down_dtod) * z[1]
        gu = F32(self.pow_gamma) * (g + beta)
        gd = F32(self.pow_gamma) * (g - beta)
        if self.enforce_consistency:
            gu, gd = np.abs(gu), np.abs(gd)
        return {"gamma_up": gu, "gamma_down": gd}

    def _factor(self, w, up, devs):
        omega = np.clip(_safe_div(devs.w_max - w, devs.w_max - devs.w_min), F32(0.0), F32(1.0))
        if up:
            return np.power(omega, devs.gamma_up)
        return np.power(F32(1.0) - omega, devs.gamma_down)


def _as_float_tuple(owner, name, value, *, min_len=1, max_len=None, lo=0.0, hi=1e6):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"{owner}.{name} must be a list of numbers, got {value!r}")
    vals = tuple(check_range(owner, f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value))
    if len(vals) < min_len or (max_len is not None and len(vals) > max_len):
        raise ValueError(f"{owner}.{name} must have {min_len} to {max_len} entries, got {len(vals)}")
    return vals


def _interp_nodes(t, table):
    """Linear interpolation of ``table`` at fractional node positions t in [0, n − 1] (float32)."""
    n = table.shape[0]
    if n == 1:
        return np.full(np.shape(t), table[0], dtype=F32)
    t = np.clip(t, F32(0.0), F32(n - 1))
    i = np.minimum(np.floor(t).astype(np.int64), n - 2)
    q = (t - i).astype(F32)
    return ((F32(1.0) - q) * table[i] + q * table[i + 1]).astype(F32)


@register("piecewise")
@dataclass(frozen=True)
class PiecewiseStep(PulsedDevice):
    """Piecewise-linear step multipliers (physics.md §5.2; aihwkit ``PiecewiseStepDevice``).

    n nodes equally spaced over each device's [w_min_ij, w_max_ij]: t = (w − w_min_ij)/(w_max_ij −
    w_min_ij)·(n − 1) clipped to [0, n − 1], i = min(floor(t), n − 2), q = t − i;
    f^d(w) = (1 − q)·v^d[i] + q·v^d[i + 1] (v^d = piecewise_up / piecewise_down, >= 0, equal length
    1 to 64; one node = a constant multiplier). A stuck device with zero range has t = 0.
    """

    piecewise_up: tuple = (1.0,)
    piecewise_down: tuple = (1.0,)

    def _validate(self):
        o = self._owner
        up = _as_float_tuple(o, "piecewise_up", self.piecewise_up, max_len=64)
        down = _as_float_tuple(o, "piecewise_down", self.piecewise_down, max_len=64)
        if len(up) != len(down):
            raise ValueError(f"{o}.piecewise_down has {len(down)} nodes but {o}.piecewise_up has {len(up)}; "
                             "they must be equal")
        self._set("piecewise_up", up)
        self._set("piecewise_down", down)

    def _tables(self):
        return {"piecewise_up": np.array(self.piecewise_up, dtype=F32),
                "piecewise_down": np.array(self.piecewise_down, dtype=F32)}

    def _factor(self, w, up, devs):
        table = devs.piecewise_up if up else devs.piecewise_down
        n = table.shape[0]
        t = _safe_div(w - devs.w_min, devs.w_max - devs.w_min) * F32(n - 1)
        return _interp_nodes(t, table)


@register("pulsed-lookup-table")
@dataclass(frozen=True)
class PulsedLookupTable(PulsedDevice):
    """A measured device: step multipliers tabulated against the absolute weight (no code needed).

    f^d(w) = np.interp(w, w_nodes, v^d) (linear between nodes, clamped to the end values outside), so one
    pulse changes w by d·dw^d_ij·f^d(w) (+ c2c noise): ``up``/``down`` are multiples of ``dw_min``
    (``up[k]·dw_min`` is the mean up-step at ``w_nodes[k]``). Nodes are strictly increasing, 2 to 256 of them.

    The tables are given here (``w_nodes``, ``up``, ``down`` and ``dw_min``, e.g. the numbers
    ``device_models.fit`` printed); ``w_min``/``w_max`` default to the first/last node. A measured CSV is not
    read by this class: a card (or ``device_models.from_params("pulsed-lookup-table", {...})``) may give
    ``csv = "path/to/experiment.csv"`` and ``n_nodes`` (16) instead of the tables, and the loader fits them
    (:func:`device_models.fit.prepare_lookup_table`) before building the model, which so carries the fitted
    numbers and never the path. ``PulsedLookupTable(csv=...)`` is refused with a pointer to that route.

    Fields left as None default to: w_min/w_max the end nodes, dw_min_std 0.3, write_noise_std 0,
    mult_noise true.
    """

    w_nodes: tuple = ()
    up: tuple = ()
    down: tuple = ()
    dw_min: float | None = None
    w_max: float | None = None
    w_min: float | None = None
    dw_min_std: float | None = None
    write_noise_std: float | None = None
    mult_noise: bool | None = None
    csv: InitVar[object] = None      # refused: a CSV is fitted by the card loader (see the docstring)
    n_nodes: InitVar[object] = None  # refused likewise: the fit's node count

    def __post_init__(self, csv=None, n_nodes=None):
        o = self._owner
        for name, v in (("csv", csv), ("n_nodes", n_nodes)):
            if v is not None:
                raise ValueError(
                    f"{o}.{name}: PulsedLookupTable does not read files; a measured CSV is fitted where a device is "
                    f"loaded: device_models.from_params('pulsed-lookup-table', {{'csv': path, 'n_nodes': 16, ...}}) "
                    f"or a card with csv = \"...\" and device_models.load(card) (or give w_nodes/up/down/dw_min "
                    f"from device_models.fit.fit_lookup_table)")
        nodes = _as_float_tuple(o, "w_nodes", self.w_nodes, min_len=2, max_len=256, lo=-1e6, hi=1e6)
        if any(b <= a for a, b in zip(nodes, nodes[1:])):
            raise ValueError(f"{o}.w_nodes must be strictly increasing")
        up = _as_float_tuple(o, "up", self.up, min_len=2, max_len=256)
        down = _as_float_tuple(o, "down", self.down, min_len=2, max_len=256)
        if len(up) != len(nodes):
            raise ValueError(f"{o}.up has {len(up)} entries but {o}.w_nodes has {len(nodes)}; they must be equal")
        if len(down) != len(nodes):
            raise ValueError(f"{o}.down has {len(down)} entries but {o}.w_nodes has {len(nodes)}; they must be equal")
        self._set("w_nodes", nodes)
        self._set("up", up)
        self._set("down", down)
        if self.dw_min is None:
            raise ValueError(f"{o}.dw_min is required (the step unit of up/down)")
        defaults = {"w_min": nodes[0], "w_max": nodes[-1], "dw_min_std": 0.3, "write_noise_std": 0.0,
                    "mult_noise": True}
        for k, v in defaults.items():
            if getattr(self, k) is None:
                self._set(k, v)
        super().__post_init__()

    def _tables(self):
        return {"w_nodes": np.array(self.w_nodes, dtype=F32), "lut_up": np.array(self.up, dtype=F32),
                "lut_down": np.array(self.down, dtype=F32)}

    def _factor(self, w, up, devs):
        table = devs.lut_up if up else devs.lut_down
        w = np.broadcast_to(np.asarray(w, dtype=F32), np.broadcast_shapes(np.shape(w), devs.shape))
        return np.interp(w, devs.w_nodes, table).astype(F32)
