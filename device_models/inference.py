"""Inference device models: programming noise, drift, read noise and faults of one cell, vectorised.

Every family is a frozen, validated dataclass registered under a card family name (``device_models.cards``);
a published device is a TOML card that instantiates one. All functions take whole arrays of conductances in
µS (float32 or float64; float32 in -> float32 out) and a ``numpy.random.Generator`` (seed it with
``numpy.random.Generator(numpy.random.Philox(seed))``), so results do not depend on thread count.

Life of a cell (time t in seconds after programming, ĝ = g/g_max)::

    g_target --levels--> g_T --program (+ verify)--> g_prog, ν, stuck   (drawn once: ProgrammedCells)
    read(cells, t, rng)  = clip(drift_mean(cells, t) + σ_read(t)·ξ)     (ξ redrawn on every read)
    drift_mean(cells, t) = the read without read noise (e.g. g_prog·((t + t0)/t0)^-ν for PCM)

Common to all families (``InferenceModel``):

* ``levels`` (0 = continuous): targets are first rounded to ``levels`` equally spaced values in [g_min, g_max].
* ``verify_tol`` (µS, 0 = off) and ``verify_max_iter``: iterative program-and-verify. After the first shot,
  devices with |g_prog − g_T| > verify_tol are programmed again (a fresh draw of the family's programming
  noise) up to ``verify_max_iter`` times; each device keeps its best attempt, so the error never grows.
* Stuck-at faults, drawn once at programming with probabilities ``stuck_on_prob`` (g = g_max),
  ``stuck_off_prob`` (g = g_min, which is 0 for the PCM families) and ``stuck_random_prob`` (uniform in
  [g_min, g_max]). A stuck device holds its value: no drift, no relaxation and no read noise, at any t.

References are cited next to each constant; formulas follow the public descriptions collected in
``shared/reference/physics.md`` §3 (the aihwkit noise models and the papers they are fitted to).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ._validate import check_range
from .cards import register

__all__ = [
    "ProgrammedCells",
    "InferenceModel",
    "PCM",
    "Hermes",
    "ReRamWan2022",
    "ReRamCMO",
    "StateIndependent",
    "LookupTable",
]


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------

def _as_g(x, name: str):
    """``x`` as a float64 array plus the dtype to hand back (float32 stays float32, else float64)."""
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
                                 or a.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    out = np.float32 if a.dtype == np.float32 else np.float64
    a = a.astype(np.float64, copy=True)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a, out


def _check_time(t) -> float:
    try:
        tv = float(t)
    except (TypeError, ValueError):
        raise TypeError(f"t must be a scalar time in seconds, got {t!r}") from None
    if not math.isfinite(tv) or tv < 0:
        raise ValueError(f"t = {t!r} must be a finite time >= 0 s")
    return tv


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.Generator(numpy.random.Philox(seed))), "
            f"got {type(rng).__name__}"
        )
    return rng


def _check_int(owner: str, name: str, value, lo: int, hi: float = math.inf) -> int:
    if isinstance(value, bool) or not float(check_range(owner, name, value, lo, hi)).is_integer():
        raise ValueError(f"{owner}.{name} = {value!r} must be an integer in [{lo}, {hi}]")
    return int(value)


def _check_coeffs(owner: str, name: str, value, n: int | None = None) -> tuple:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a list of numbers, got {value!r}") from None
    if n is not None and len(vals) != n:
        raise ValueError(f"{owner}.{name} must have {n} entries, got {len(vals)}")
    for i, v in enumerate(vals):
        if not math.isfinite(v):
            raise ValueError(f"{owner}.{name}[{i}] = {v!r} must be finite")
    return vals


def _poly(coeffs, x):
    """Σ_i c_i x^i (Horner)."""
    out = np.zeros_like(x)
    for c in reversed(coeffs):
        out = out * x + c
    return out


def _read_factor(t_total, t_read: float):
    """Accumulated 1/f read-noise factor sqrt(ln((t + t_read)/(2 t_read))) (Joshi et al. 2020, Methods)."""
    return math.sqrt(max(math.log((t_total + t_read) / (2.0 * t_read)), 0.0))


# ----------------------------------------------------------------------------------------------------------
# programmed state
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ProgrammedCells:
    """The drawn-once state of a programmed array (all arrays share the shape of ``g_target``).

    * ``g_target``: the target after level rounding (µS);
    * ``g_prog``: the programmed conductance at t = 0 (µS); a stuck device holds its stuck value here;
    * ``nu``: the drift exponent ν per device (0 for families without power-law drift and for stuck devices);
    * ``stuck``: bool mask of stuck-at devices (their value is ``g_prog``);
    * ``z``: a per-device standard-normal deviate the family keeps (``None`` if it needs none): the
      programming deviate for ``reram-wan2022``, the relaxation deviate for ``reram-cmo``.
    """

    g_target: np.ndarray
    g_prog: np.ndarray
    nu: np.ndarray
    stuck: np.ndarray
    z: np.ndarray | None = None

    @property
    def shape(self):
        return self.g_prog.shape

    @property
    def dtype(self):
        return self.g_prog.dtype


# ----------------------------------------------------------------------------------------------------------
# base class: common knobs and the program / read machinery
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class InferenceModel:
    """Base of all inference families: conductance range, faults, finite levels, program-and-verify.

    Families implement ``_prog_sigma`` (σ_prog in µS before ``prog_noise_scale``), ``_draw_state`` (ν and z),
    ``_drift_mean_raw`` (noise-free conductance at t), ``_read_sigma`` (read-noise σ at t, or None) and
    the clamps ``_clip_prog`` / ``_clip_read``.
    """

    family: ClassVar[str] = "inference"

    g_max: float = 25.0
    g_min: float = 0.0
    prog_noise_scale: float = 1.0
    stuck_on_prob: float = 0.0
    stuck_off_prob: float = 0.0
    stuck_random_prob: float = 0.0
    levels: int = 0
    verify_tol: float = 0.0
    verify_max_iter: int = 10

    # -- construction ------------------------------------------------------------------------------------
    def __post_init__(self):
        self._resolve_defaults()
        own = self.family
        check_range(own, "g_max", self.g_max, 0.0, math.inf, lo_open=True, hi_open=True)
        check_range(own, "g_min", self.g_min, 0.0, self.g_max, hi_open=True)
        check_range(own, "prog_noise_scale", self.prog_noise_scale, 0.0, math.inf, hi_open=True)
        for name in ("stuck_on_prob", "stuck_off_prob", "stuck_random_prob"):
            check_range(own, name, getattr(self, name), 0.0, 1.0)
        total = self.stuck_on_prob + self.stuck_off_prob + self.stuck_random_prob
        if total > 1.0 + 1e-12:
            raise ValueError(
                f"{own}: stuck_on_prob + stuck_off_prob + stuck_random_prob = {total} must be <= 1"
            )
        lv = _check_int(own, "levels", self.levels, 0, 2**31 - 1)
        if lv == 1:
            raise ValueError(f"{own}.levels = 1 is out of range: use 0 (continuous) or >= 2")
        object.__setattr__(self, "levels", lv)
        check_range(own, "verify_tol", self.verify_tol, 0.0, math.inf, hi_open=True)
        object.__setattr__(self, "verify_max_iter", _check_int(own, "verify_max_iter", self.verify_max_iter, 0, 10000))
        self._validate()

    def _resolve_defaults(self):
        """Fill family defaults that depend on other fields (e.g. HERMES g_max from num_devices)."""

    def _validate(self):
        """Family-specific field checks (errors name the field and the allowed range)."""

    def params(self) -> dict:
        """The init fields as a plain dict (tuples as lists): ``from_params(model.family, model.params())``."""
        out = {}
        for f in dataclasses.fields(self):
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    # -- public statistics --------------------------------------------------------------------------------
    def programming_noise_std(self, g):
        """σ_prog(g) in µS (already multiplied by ``prog_noise_scale``), evaluated at target conductances g."""
        a, dt = _as_g(g, "g")
        return (self.prog_noise_scale * self._prog_sigma(a)).astype(dt)

    def drift_exponent_stats(self, g):
        """(mean, std) of the normal ν is drawn from at target g, times ``drift_scale``: ν = |N(mean, std)|.

        Families without power-law drift return zeros.
        """
        a, dt = _as_g(g, "g")
        mu, sd = self._nu_stats(a)
        return mu.astype(dt), sd.astype(dt)

    # -- verbs --------------------------------------------------------------------------------------------
    def quantize(self, g_target):
        """Round targets to ``levels`` equally spaced values in [g_min, g_max] (identity for levels = 0)."""
        a, dt = _as_g(g_target, "g_target")
        return self._quantize(self._check_target(a)).astype(dt)

    def program(self, g_target, rng) -> ProgrammedCells:
        """Program target conductances (µS): levels, programming noise (+ verify), ν, faults; drawn once.

        Draw order from ``rng`` (fixed, so a seed reproduces the array): programming deviates (and the
        verify re-draws), the family state (ν or z), then the fault draws (only if a fault probability > 0).
        """
        _check_rng(rng)
        a, dt = _as_g(g_target, "g_target")
        shape = a.shape
        g_t = self._quantize(self._check_target(a)).reshape(-1)     # 1-D inside: 0-d draws are scalars
        g_prog, z = self._program_verified(g_t, rng)
        nu, z = self._draw_state(g_t, z, rng)
        stuck = np.zeros(g_t.shape, dtype=bool)
        ptot = self.stuck_on_prob + self.stuck_off_prob + self.stuck_random_prob
        if ptot > 0:
            u = rng.random(g_t.shape)
            on = u < self.stuck_on_prob
            off = (u >= self.stuck_on_prob) & (u < self.stuck_on_prob + self.stuck_off_prob)
            rnd = (u >= self.stuck_on_prob + self.stuck_off_prob) & (u < ptot)
            stuck = on | off | rnd
            g_prog[on] = self.g_max
            g_prog[off] = self.g_min
            g_prog[rnd] = self.g_min + (self.g_max - self.g_min) * rng.random(int(rnd.sum()))
            nu[stuck] = 0.0
        return ProgrammedCells(
            g_target=g_t.astype(dt).reshape(shape),
            g_prog=g_prog.astype(dt).reshape(shape),
            nu=nu.astype(dt).reshape(shape),
            stuck=stuck.reshape(shape),
            z=None if z is None else z.astype(dt).reshape(shape),
        )

    def drift_mean(self, cells: ProgrammedCells, t):
        """Noise-free conductance at t seconds after programming (a read with its read noise switched off)."""
        t = _check_time(t)
        g = self._clip_read(self._drift_mean_raw(cells, t))
        g = np.where(cells.stuck, cells.g_prog, g)
        return g.astype(cells.g_prog.dtype)

    def read_noise_std(self, cells: ProgrammedCells, t):
        """Per-device read-noise σ in µS at time t (× ``read_noise_scale``; 0 for stuck devices)."""
        t = _check_time(t)
        gm = self._drift_mean_raw(cells, t)
        sig = self._read_sigma(cells, gm, t)
        if sig is None:
            sig = np.zeros_like(gm)
        sig = np.where(cells.stuck, 0.0, sig)
        return sig.astype(cells.g_prog.dtype)

    def read(self, cells: ProgrammedCells, t, rng):
        """Conductances read at t seconds after programming: drift_mean + read noise (redrawn each call)."""
        t = _check_time(t)
        _check_rng(rng)
        gm = self._drift_mean_raw(cells, t)
        sig = self._read_sigma(cells, gm, t)
        if sig is not None:
            gm = gm + sig * rng.standard_normal(gm.shape)
        g = np.where(cells.stuck, cells.g_prog, self._clip_read(gm))
        return g.astype(cells.g_prog.dtype)

    def sample(self, g_target, t=0.0, *, seed: int = 0):
        """Program and read once at time t with ``Generator(Philox(seed))`` (for device studies)."""
        rng = np.random.Generator(np.random.Philox(seed))
        cells = self.program(g_target, rng)
        return self.read(cells, t, rng)

    # -- machinery ----------------------------------------------------------------------------------------
    def _check_target(self, a):
        tol = 1e-5 * self.g_max
        if a.size and (a.min() < self.g_min - tol or a.max() > self.g_max + tol):
            raise ValueError(
                f"g_target must lie in [g_min, g_max] = [{self.g_min}, {self.g_max}] µS for {self.family!r}; "
                f"got values in [{a.min()}, {a.max()}]"
            )
        return np.clip(a, self.g_min, self.g_max)

    def _quantize(self, g):
        if self.levels == 0:
            return g
        step = (self.g_max - self.g_min) / (self.levels - 1)
        return np.clip(self.g_min + np.round((g - self.g_min) / step) * step, self.g_min, self.g_max)

    def _program_once(self, g_t, rng):
        z = rng.standard_normal(g_t.shape)
        g = g_t + self.prog_noise_scale * self._prog_sigma(g_t) * z
        return self._clip_prog(g), z

    def _program_verified(self, gt, rng):
        g, z = self._program_once(gt, rng)
        if self.verify_tol > 0:
            for _ in range(self.verify_max_iter):
                bad = np.flatnonzero(np.abs(g - gt) > self.verify_tol)
                if bad.size == 0:
                    break
                g_new, z_new = self._program_once(gt[bad], rng)
                better = np.abs(g_new - gt[bad]) < np.abs(g[bad] - gt[bad])
                idx = bad[better]
                g[idx] = g_new[better]
                z[idx] = z_new[better]
        return g, z

    # -- family hooks (defaults: no drift, no read noise) ---------------------------------------------------
    def _prog_sigma(self, g):
        raise NotImplementedError

    def _nu_stats(self, g):
        return np.zeros_like(g), np.zeros_like(g)

    def _draw_state(self, g_t, z_prog, rng):
        """(ν, z) drawn once at programming; default: no drift exponent, nothing kept."""
        return np.zeros_like(g_t), None

    def _drift_mean_raw(self, cells, t):
        return np.asarray(cells.g_prog, dtype=np.float64)

    def _read_sigma(self, cells, g_mean, t):
        return None

    def _clip_prog(self, g):
        return np.maximum(g, 0.0)

    def _clip_read(self, g):
        return np.maximum(g, 0.0)


# ----------------------------------------------------------------------------------------------------------
# power-law drift families (PCM, HERMES, state-independent, lookup table)
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _PowerLawDrift(InferenceModel):
    """Shared PCM-like physics (Joshi et al., Nat. Commun. 11, 2473, 2020):

    * programming: g_prog = max(g_T + prog_noise_scale·σ_prog(g_T)·ξ, 0);
    * drift exponent, drawn once: ν = |μ_ν(g_T) + σ_ν(g_T)·ξ|·drift_scale;
    * drift: g_drift = g_prog·((t + t0)/t0)^(−ν) (t = 0 gives g_prog);
    * accumulated 1/f read noise: σ = read_noise_scale·|g_drift|·Q_s(|g_prog|/g_max)·
      sqrt(ln((t + t0 + t_read)/(2·t_read))); g = max(g_drift + σ·ξ, 0), ξ redrawn on every read.
    """

    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    t0: float = 20.0
    t_read: float = 250e-9

    def _validate(self):
        own = self.family
        check_range(own, "read_noise_scale", self.read_noise_scale, 0.0, math.inf, hi_open=True)
        check_range(own, "drift_scale", self.drift_scale, 0.0, math.inf, hi_open=True)
        check_range(own, "t0", self.t0, 0.0, math.inf, lo_open=True, hi_open=True)
        check_range(own, "t_read", self.t_read, 0.0, math.inf, lo_open=True, hi_open=True)
        self._validate_family()

    def _validate_family(self):
        pass

    # hooks for subclasses: raw (unscaled) statistics
    def _nu_raw(self, g):
        raise NotImplementedError

    def _qs(self, g_prog):
        """Relative read-noise amplitude Q_s at the programmed conductance."""
        raise NotImplementedError

    def _nu_stats(self, g):
        mu, sd = self._nu_raw(g)
        return mu * self.drift_scale, sd * self.drift_scale

    def _draw_state(self, g_t, z_prog, rng):
        mu, sd = self._nu_stats(g_t)
        return np.abs(mu + sd * rng.standard_normal(g_t.shape)), None

    def _drift_mean_raw(self, cells, t):
        g = np.asarray(cells.g_prog, dtype=np.float64)
        if t <= 0:
            return g.copy()
        return g * np.exp(-np.asarray(cells.nu, dtype=np.float64) * math.log((t + self.t0) / self.t0))

    def _read_sigma(self, cells, g_mean, t):
        if self.read_noise_scale == 0:
            return None
        q = self._qs(np.abs(np.asarray(cells.g_prog, dtype=np.float64)))
        return self.read_noise_scale * np.abs(g_mean) * q * _read_factor(t + self.t0, self.t_read)

    def read_noise_factor(self, t) -> float:
        """sqrt(ln((t + t0 + t_read)/(2·t_read))): the accumulated 1/f noise growth at time t."""
        return _read_factor(_check_time(t) + self.t0, self.t_read)

    def read_noise_relative(self, g_prog):
        """Q_s at programmed conductances g_prog (µS): σ_read/g_drift = read_noise_scale·Q_s·read_noise_factor."""
        a, dt = _as_g(g_prog, "g_prog")
        return self._qs(np.abs(a)).astype(dt)


# PCM constants (Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473, 2020):
_PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)   # µS, in ĝ, referenced to g_max = 25 µS


@register("pcm")
@dataclass(frozen=True, kw_only=True)
class PCM(_PowerLawDrift):
    """PCM statistical model calibrated on a 1M-device array.

    Nandakumar et al., "Phase-change memory models for deep learning training and inference", ICECS 2019;
    Joshi et al., "Accurate deep neural network inference using computational phase-change memory",
    Nat. Commun. 11, 2473 (2020). ĝ = g/g_max.

    * σ_prog = (c0 + c1·ĝ_T + c2·ĝ_T²)·g_max/g_ref µS, c = (0.26348, 1.9650, −1.1731) at g_ref = 25 µS
      (``prog_coeff``, ``prog_coeff_g_max_reference``; the reference is honoured, unlike aihwkit, which never
      stores an explicitly passed reference). No max(·, 0) wrapper (the code, not the docs, is followed).
    * ν = |μ_ν + σ_ν·ξ|·drift_scale with ĝ_T clamped ≥ 1e-7,
      μ_ν = clip(−0.0155·ln ĝ_T + 0.0244, 0.049, 0.1), σ_ν = clip(−0.0125·ln ĝ_T − 0.0059, 0.008, 0.045).
    * drift g_prog·((t + t0)/t0)^(−ν), t0 = 20 s.
    * read noise Q_s = min(0.0088/max(ĝ_prog^0.65, 1e-3), 0.2) on the *programmed* ĝ, t_read = 250 ns.
    * g_max = 25 µS, g_min = 0 (each device of a differential pair).
    """

    g_max: float = 25.0
    g_min: float = 0.0
    prog_coeff: tuple = _PCM_PROG_COEFF
    prog_coeff_g_max_reference: float = 25.0

    def _validate_family(self):
        object.__setattr__(self, "prog_coeff", _check_coeffs(self.family, "prog_coeff", self.prog_coeff, 3))
        check_range(self.family, "prog_coeff_g_max_reference", self.prog_coeff_g_max_reference, 0.0, math.inf,
                    lo_open=True, hi_open=True)

    def _prog_sigma(self, g):
        return _poly(self.prog_coeff, g / self.g_max) * (self.g_max / self.prog_coeff_g_max_reference)

    def _nu_raw(self, g):
        lg = np.log(np.maximum(g / self.g_max, 1e-7))
        mu = np.clip(-0.0155 * lg + 0.0244, 0.049, 0.1)
        sd = np.clip(-0.0125 * lg - 0.0059, 0.008, 0.045)
        return mu, sd

    def _qs(self, g_prog):
        return np.minimum(0.0088 / np.maximum((g_prog / self.g_max) ** 0.65, 1e-3), 0.2)


# HERMES constants (Le Gallo et al., Nat. Electron. 6, 680 (2023); Khaddam-Aljameh et al., JSSC 57 (2022)),
# per num_devices: g_max (also the σ_prog reference), t0, σ_prog cubic in ĝ (µS),
# σ_ν: (a, b, lo, hi, break) for clip(a·ln ĝ + b, lo, hi) below the break, quadratic (q2, q1, q0) above,
# Q_s: (a, b, lo, hi, break) below the break, cubic (k3, k2, k1, k0) above.
_HERMES = {
    1: dict(g_max=10.35, t0=200.0,
            prog=(0.15781817, 2.32443916, -2.16310839, 0.68841818),
            nu_sd_low=(-0.0120, -0.0023, 0.0124, 0.04, 0.3039), nu_sd_high=(-0.0165, 0.0116, 0.0104),
            qs_low=(-0.0078, 0.0038, 0.0179, 0.04, 0.1591), qs_high=(0.0664, -0.1352, 0.0768, 0.0088)),
    2: dict(g_max=20.7, t0=300.0,
            prog=(0.16603222, 4.71806468, -8.48101252, 4.68961419),
            nu_sd_low=(-0.0117, -0.0057, 0.0091, 0.04, 0.3055), nu_sd_high=(-0.0118, 0.0093, 0.0073),
            qs_low=(-0.0117, -0.0069, 0.015, 0.04, 0.16), qs_high=(0.0069, -0.0280, 0.0211, 0.0123)),
}


@register("hermes")
@dataclass(frozen=True, kw_only=True)
class Hermes(_PowerLawDrift):
    """HERMES project PCM chip (IBM, 14 nm, 64 cores of 256×256).

    Le Gallo et al., "A 64-core mixed-signal in-memory compute chip based on phase-change memory for deep
    neural network inference", Nat. Electron. 6, 680 (2023); Khaddam-Aljameh et al., JSSC 57, 1027 (2022).
    ``num_devices`` = 2 uses multi-device (MSF) programming, Vasilopoulos et al., IEEE TED 2023; its drift is
    modelled as if both devices held the same conductance, so it is pessimistic against the chip.

    ============================  ==============================  =================================
                                  num_devices = 1                 num_devices = 2
    g_max (= σ_prog reference)    10.35 µS                        20.7 µS
    t0                            200 s                           300 s
    σ_prog c0…c3 (µS, in ĝ)       0.15781817, 2.32443916,         0.16603222, 4.71806468,
                                  −2.16310839, 0.68841818         −8.48101252, 4.68961419
    σ_ν, ĝ < break                clip(−0.0120 ln ĝ − 0.0023,     clip(−0.0117 ln ĝ − 0.0057,
                                  0.0124, 0.04), break 0.3039     0.0091, 0.04), break 0.3055
    σ_ν, ĝ ≥ break                −0.0165ĝ² + 0.0116ĝ + 0.0104    −0.0118ĝ² + 0.0093ĝ + 0.0073
    Q_s, ĝ < break                clip(−0.0078 ln ĝ + 0.0038,     clip(−0.0117 ln ĝ − 0.0069,
                                  0.0179, 0.04), break 0.1591     0.015, 0.04), break 0.16
    Q_s, ĝ ≥ break                0.0664ĝ³ − 0.1352ĝ² +           0.0069ĝ³ − 0.0280ĝ² +
                                  0.0768ĝ + 0.0088                0.0211ĝ + 0.0123
    ============================  ==============================  =================================

    μ_ν (both): ĝ < 0.0945: clip(−0.0387 ln ĝ − 0.0182, 0.0720, 0.13); else −0.0436ĝ² − 0.0126ĝ + 0.0736.
    t_read = 512 ns. Drift law, ν draw, read-noise form and clamps as ``pcm``; Q_s on the programmed ĝ.
    ``g_max``/``t0`` left unset take the chip's value for ``num_devices``; an explicit g_max rescales
    σ_prog by g_max/g_chip (as ``pcm`` does), while ν and Q_s stay functions of ĝ.
    """

    num_devices: int = 2
    g_max: float | None = None
    t0: float | None = None
    t_read: float = 512e-9

    def _resolve_defaults(self):
        nd = _check_int(self.family, "num_devices", self.num_devices, 1, 2)
        object.__setattr__(self, "num_devices", nd)
        if self.g_max is None:
            object.__setattr__(self, "g_max", _HERMES[nd]["g_max"])
        if self.t0 is None:
            object.__setattr__(self, "t0", _HERMES[nd]["t0"])

    @property
    def _c(self):
        return _HERMES[self.num_devices]

    def _prog_sigma(self, g):
        c = self._c
        return _poly(c["prog"], g / self.g_max) * (self.g_max / c["g_max"])

    def _nu_raw(self, g):
        gh = np.maximum(g / self.g_max, 1e-7)
        lg = np.log(gh)
        mu = np.where(gh < 0.0945, np.clip(-0.0387 * lg - 0.0182, 0.0720, 0.13),
                      -0.0436 * gh**2 - 0.0126 * gh + 0.0736)
        a, b, lo, hi, brk = self._c["nu_sd_low"]
        q2, q1, q0 = self._c["nu_sd_high"]
        sd = np.where(gh < brk, np.clip(a * lg + b, lo, hi), q2 * gh**2 + q1 * gh + q0)
        return mu, sd

    def _qs(self, g_prog):
        gh = np.maximum(g_prog / self.g_max, 1e-7)
        a, b, lo, hi, brk = self._c["qs_low"]
        k3, k2, k1, k0 = self._c["qs_high"]
        return np.where(gh < brk, np.clip(a * np.log(gh) + b, lo, hi), ((k3 * gh + k2) * gh + k1) * gh + k0)


@register("state-independent")
@dataclass(frozen=True, kw_only=True)
class StateIndependent(_PowerLawDrift):
    """State-independent noise (aihwkit ``StateIndependentNoiseModel``, ``inference/noise/custom.py``).

    σ_prog = prog_noise_scale·(c0 + c1·ĝ + c2·ĝ²), c = (0.2 µS, 0, 0), no g_max rescale;
    ν = |nu_mean + nu_std·ξ|·drift_scale with nu_mean = 0.1, nu_std = 0.05; t0 = 20 s; drift as ``pcm``;
    read: g = max(g_drift + read_noise_scale·|g_drift/g_max|·sqrt(ln((t + t0 + t_read)/(2 t_read)))·ξ, 0)
    µS with t_read = 250 ns (the reference formula: its σ is ĝ_drift·factor µS, i.e. Q_s ≡ 1/g_max µS⁻¹).
    With all noise scales 0 it is a deterministic drift (a test fixture for compensation).
    """

    g_max: float = 25.0
    prog_coeff: tuple = (0.2, 0.0, 0.0)
    nu_mean: float = 0.1
    nu_std: float = 0.05

    def _validate_family(self):
        object.__setattr__(self, "prog_coeff", _check_coeffs(self.family, "prog_coeff", self.prog_coeff, 3))
        check_range(self.family, "nu_mean", self.nu_mean, 0.0, 10.0)
        check_range(self.family, "nu_std", self.nu_std, 0.0, 10.0)

    def _prog_sigma(self, g):
        return np.abs(_poly(self.prog_coeff, g / self.g_max))

    def _nu_raw(self, g):
        return np.full_like(g, self.nu_mean), np.full_like(g, self.nu_std)

    def _qs(self, g_prog):
        return np.full_like(g_prog, 1.0 / self.g_max)


@register("lookup-table")
@dataclass(frozen=True, kw_only=True)
class LookupTable(_PowerLawDrift):
    """A measured device as tables: σ_prog(G), μ_ν(G), σ_ν(G) and optionally Q_s(G) against G (µS, ascending).

    Values between nodes are linearly interpolated; G outside the table is clipped to its ends (as
    aihwkit's ``CustomDriftPCMLikeNoiseModel``, N. Li et al., Adv. Electron. Mater. 2023, does for ν).
    Physics otherwise as ``pcm``: ν = |μ_ν + σ_ν·ξ|·drift_scale, g_prog·((t + t0)/t0)^(−ν), read noise
    |g_drift|·Q_s(g_prog)·sqrt(ln((t + t0 + t_read)/(2 t_read))). Without ``read_qs_table`` there is no read
    noise. ``g_min``/``g_max`` default to the table's ends and must lie inside it.
    """

    g_table: tuple
    prog_std_table: tuple
    nu_mean_table: tuple
    nu_std_table: tuple
    read_qs_table: tuple = ()
    g_max: float | None = None
    g_min: float | None = None

    def _resolve_defaults(self):
        own = self.family
        g = _check_coeffs(own, "g_table", self.g_table)
        if len(g) < 2:
            raise ValueError(f"{own}.g_table needs at least 2 entries, got {len(g)}")
        if any(b <= a for a, b in zip(g, g[1:])):
            raise ValueError(f"{own}.g_table must be strictly ascending, got {list(g)}")
        if g[0] < 0:
            raise ValueError(f"{own}.g_table[0] = {g[0]} must be >= 0 µS")
        object.__setattr__(self, "g_table", g)
        names = ["prog_std_table", "nu_mean_table", "nu_std_table"]
        if len(self.read_qs_table):
            names.append("read_qs_table")
        for name in names:
            vals = _check_coeffs(own, name, getattr(self, name), len(g))
            if name != "nu_mean_table" and min(vals) < 0:
                raise ValueError(f"{own}.{name} must be >= 0 everywhere, got {list(vals)}")
            object.__setattr__(self, name, vals)
        if self.g_max is None:
            object.__setattr__(self, "g_max", g[-1])
        if self.g_min is None:
            object.__setattr__(self, "g_min", g[0])

    def _validate_family(self):
        check_range(self.family, "g_max", self.g_max, self.g_table[0], self.g_table[-1], lo_open=True)
        check_range(self.family, "g_min", self.g_min, self.g_table[0], self.g_table[-1])

    def _interp(self, table, g):
        return np.interp(g, self.g_table, table)   # np.interp holds the end values outside the table

    def _prog_sigma(self, g):
        return self._interp(self.prog_std_table, g)

    def _nu_raw(self, g):
        return self._interp(self.nu_mean_table, g), self._interp(self.nu_std_table, g)

    def _qs(self, g_prog):
        if not len(self.read_qs_table):
            return np.zeros_like(g_prog)
        return self._interp(self.read_qs_table, g_prog)

    def _read_sigma(self, cells, g_mean, t):
        if not len(self.read_qs_table):
            return None
        return super()._read_sigma(cells, g_mean, t)


# ----------------------------------------------------------------------------------------------------------
# ReRAM families
# ----------------------------------------------------------------------------------------------------------

# Wan et al., "A compute-in-memory chip based on resistive random-access memory", Nature 608, 504 (2022):
# σ_t(ĝ) = Σ c_i ĝ^i µS referenced to g_max = 40 µS, for t = 1 s, 1 day, 2 days.
_WAN_TIMES = (1.0, 86400.0, 172800.0)
_WAN_COEFF = (
    (0.348, 16.030, -43.853, 45.393, -16.815),
    (0.701, 22.086, -50.773, 47.095, -16.458),
    (0.782, 20.274, -43.507, 37.062, -11.934),
)


@register("reram-wan2022")
@dataclass(frozen=True, kw_only=True)
class ReRamWan2022(InferenceModel):
    """ReRAM relaxation statistics of the NeuRRAM chip (Wan et al., Nature 608, 504, 2022).

    σ_t(ĝ) = (c0 + c1ĝ + c2ĝ² + c3ĝ³ + c4ĝ⁴)·g_max/40 µS, ĝ = g_T/g_max, fitted at

    ======================  ============================================
    t = 1 s                 0.348, 16.030, −43.853, 45.393, −16.815
    t = 1 day (86 400 s)    0.701, 22.086, −50.773, 47.095, −16.458
    t = 2 days (172 800 s)  0.782, 20.274, −43.507, 37.062, −11.934
    ======================  ============================================

    Programming uses the 1 s polynomial: g_prog = max(g_T + prog_noise_scale·σ_1s·z, 0). At a later t the
    device sits at g(t) = max(g_T + prog_noise_scale·σ_t(ĝ_T)·z, 0) around the *target*, with the same
    per-device deviate z kept from programming (so g(1 s) = g_prog, and program-and-verify also tightens the
    later distributions). aihwkit draws a fresh z on every drift call instead; the marginal distribution at
    each t is the same. There is no separate read noise (add forward weight noise ≈ 0.01 at the tile).

    The σ is scaled by g_max/40 as the fit intends; aihwkit stores the 40 µS reference in the wrong
    attribute, so its effective factor is 1 (identical only at g_max = 40 µS).

    Times: t = 0 (the programmed state), 1 s, 1 day and 2 days are tabulated; any other t raises unless
    ``time_interpolation`` is true, in which case σ is linearly interpolated in ln t between the tabulated
    polynomials for 1 s ≤ t ≤ 2 days, and 0 < t < 1 s uses the 1 s polynomial (t > 2 days still raises:
    no data to extrapolate from).
    """

    g_max: float = 40.0
    g_min: float = 0.0
    time_interpolation: bool = False

    def _validate(self):
        if not isinstance(self.time_interpolation, (bool, np.bool_)):
            raise ValueError(f"{self.family}.time_interpolation must be true or false, got {self.time_interpolation!r}")

    def _sigma_t(self, g, k):
        return np.maximum(_poly(_WAN_COEFF[k], g / self.g_max), 0.0) * (self.g_max / 40.0)

    def sigma_at(self, g, t):
        """σ_t(g) in µS at time t (× prog_noise_scale), following the time rules above."""
        a, dt = _as_g(g, "g")
        return (self.prog_noise_scale * self._sigma_time(a, _check_time(t))).astype(dt)

    def _sigma_time(self, g, t):
        if t == 0:
            return self._sigma_t(g, 0)
        for k, tk in enumerate(_WAN_TIMES):
            if abs(t - tk) <= 1e-9 * tk:
                return self._sigma_t(g, k)
        if not self.time_interpolation:
            raise ValueError(
                f"reram-wan2022 is tabulated only at t = 0, 1 s, 86400 s (1 day) and 172800 s (2 days); got "
                f"t = {t} s (set time_interpolation = true to interpolate in ln t between 1 s and 2 days)"
            )
        if t < 1.0:
            return self._sigma_t(g, 0)
        if t > _WAN_TIMES[-1]:
            raise ValueError(f"reram-wan2022: t = {t} s is beyond the last tabulated time (172800 s = 2 days)")
        k = 0 if t <= _WAN_TIMES[1] else 1
        w = (math.log(t) - math.log(_WAN_TIMES[k])) / (math.log(_WAN_TIMES[k + 1]) - math.log(_WAN_TIMES[k]))
        return (1 - w) * self._sigma_t(g, k) + w * self._sigma_t(g, k + 1)

    def _prog_sigma(self, g):
        return self._sigma_t(g, 0)

    def _draw_state(self, g_t, z_prog, rng):
        return np.zeros_like(g_t), z_prog

    def _drift_mean_raw(self, cells, t):
        g_t = np.asarray(cells.g_target, dtype=np.float64)
        if t == 0:
            return np.asarray(cells.g_prog, dtype=np.float64).copy()
        sig = self.prog_noise_scale * self._sigma_time(g_t, t)
        return g_t + sig * np.asarray(cells.z, dtype=np.float64)


# Falcone et al., "All-in-one analog AI hardware: on-chip training and inference with conductive-metal-oxide/
# HfOx ReRAM devices", arXiv:2502.04524 (2025): σ_prog(g) = a + b·g µS per program-and-verify acceptance range.
_CMO_PROG = {0.2: (0.00081107, 0.00106879), 2.0: (0.0112185391, 0.01129027418)}


@register("reram-cmo")
@dataclass(frozen=True, kw_only=True)
class ReRamCMO(InferenceModel):
    """Conductive-metal-oxide/HfOx ReRAM, one device per weight (Falcone et al., arXiv:2502.04524, 2025).

    Works in µS over [g_min, g_max] = [9.0, 88.2] (the single-device-plus-offset mapping is the tile's job).

    * Programming (after the chip's own program-and-verify with the given ``acceptance_range`` in percent):
      σ = 0.00081107 + 0.00106879·g (0.2 %) or 0.0112185391 + 0.01129027418·g (2 %) µS; no clamp.
      (aihwkit's default argument 2e-2 is not one of its percent keys and falls back to 0.2 %; the family
      default here is 0.2 %, its effective behaviour.)
    * Relaxation, independent of g, for t > 0 (t in s, t = 0 gives g_prog): mean shift −0.08900206·ln t and
      σ_rel = 0.04201137·ln t + 0.41183342 µS, both × drift_scale; g_d = g_prog + shift + σ_rel·z. The
      relaxation deviate z is drawn once per device at programming (aihwkit redraws it on every drift call;
      the marginal at each t is the same). ln t is taken of max(t, 1 s): the fit starts at 1 s.
    * Read: σ_read = 0.0277316483·log10(g_d)·sqrt(ln((t + 1e-6)/(2e-6))) µS (the square root's argument is
      floored at 0, so reads before 1 µs are noiseless), g = clip(g_d + read_noise_scale·σ_read·ξ,
      g_min, g_max), ξ redrawn on every read.
    """

    g_max: float = 88.2
    g_min: float = 9.0
    acceptance_range: float = 0.2
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0

    def _validate(self):
        own = self.family
        a = check_range(own, "acceptance_range", self.acceptance_range, 0.2, 2.0)
        if a not in _CMO_PROG:
            raise ValueError(f"{own}.acceptance_range = {self.acceptance_range!r} must be one of 0.2 or 2.0 (percent)")
        check_range(own, "read_noise_scale", self.read_noise_scale, 0.0, math.inf, hi_open=True)
        check_range(own, "drift_scale", self.drift_scale, 0.0, math.inf, hi_open=True)

    def _prog_sigma(self, g):
        a, b = _CMO_PROG[float(self.acceptance_range)]
        return a + b * g

    def _clip_prog(self, g):
        return g

    def _clip_read(self, g):
        return np.clip(g, self.g_min, self.g_max)

    def _draw_state(self, g_t, z_prog, rng):
        return np.zeros_like(g_t), rng.standard_normal(g_t.shape)

    def relaxation_stats(self, t) -> tuple[float, float]:
        """(mean shift, σ_rel) in µS at time t (× drift_scale); (0, 0) at t = 0."""
        t = _check_time(t)
        if t == 0:
            return 0.0, 0.0
        lt = math.log(max(t, 1.0))
        return -0.08900206 * lt * self.drift_scale, abs(0.04201137 * lt + 0.41183342) * self.drift_scale

    def _drift_mean_raw(self, cells, t):
        g = np.asarray(cells.g_prog, dtype=np.float64)
        if t == 0:
            return g.copy()
        shift, sig = self.relaxation_stats(t)
        return g + shift + sig * np.asarray(cells.z, dtype=np.float64)

    def _read_sigma(self, cells, g_mean, t):
        f = math.sqrt(max(math.log((t + 1e-6) / 2e-6), 0.0))
        if self.read_noise_scale == 0 or f == 0:
            return None
        return self.read_noise_scale * 0.0277316483 * np.abs(np.log10(np.maximum(g_mean, 1e-3))) * f
