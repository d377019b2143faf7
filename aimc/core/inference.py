"""Programmed tiles over time: device physics, drift and drift compensation (physics.md §3, §4).

``DeviceArray`` holds what programming drew once for one tile (``device_models.ProgrammedCells`` of every
device slice, G+/G- or pairs or single, stacked as (devices, out, in)) and reads the array at a time t after
programming. Two engines compute the same formulas:

* power-law drift families (``pcm``, ``hermes``, ``state-independent``, ``lookup-table``): fused Numba
  kernels (``aimc.kernels.drift``) with counter-based normals; the family's statistics (σ_prog, μ_ν, σ_ν,
  Q_s) come from the model's public functions, so ``device_models`` stays the single source of the physics
  and the oracle the kernels are tested against. Cards with stuck-at faults are programmed by the model.
* every other family (ReRAM): ``model.program`` / ``model.read`` with ``stream.numpy_generator()``.

Both are pure functions of (seed, tile id, stream call), so results do not depend on the thread count.

Drift compensation (``compensation``; aihwkit ``inference/compensation``): right after programming the tile
is read with one-hot inputs (the identity batch, in_size rows) through its noisy forward periphery, Y (in,
out); ``global``: ref = max(mean |Y|, 1e-4); ``per_column``: ref_i = max(mean_j |Y_ji|, 1e-4);
``global_exact``: ref = max(mean |W_target|, 1e-4) from the ideal (normalised) weights. After every
``drift(t)`` the same readout gives ``current`` and α = ref / current multiplies the digital forward output.
"""
from __future__ import annotations

import math

import numpy as np

from .config import DriftCompensation, InferenceConfig, MappingConfig
from .rng import Stream
from .times import MAX_TIME_S, parse_time

__all__ = ["DeviceArray", "DriftCompensation", "InferenceConfig", "MAX_TIME_S", "build_device_model", "check_time",
           "compensation_readout"]


def check_time(t, what: str = "t") -> float:
    """A time after programming in seconds (a number, or a string such as ``"1h"``; ``aimc.times``) as a
    float in [0, MAX_TIME_S], or a clear error (type, NaN, negative, beyond 1000 years)."""
    return parse_time(t, what)


def build_device_model(cfg: InferenceConfig | None, mapping: MappingConfig):
    """The device model for a tile (None = ideal conductances); the mapping's range must fit the device's."""
    if cfg is None:
        return None
    model = cfg.device_model()
    if model is None:
        return None
    tol = 1e-6 * model.g_max
    if mapping.g_min < model.g_min - tol or mapping.g_max > model.g_max + tol:
        raise ValueError(
            f"MappingConfig conductance range [{mapping.g_min}, {mapping.g_max}] uS lies outside the range "
            f"[{model.g_min}, {model.g_max}] uS of device {cfg.device!r}: set mapping.g_min/g_max inside it "
            f"(e.g. g_min={model.g_min}, g_max={model.g_max})")
    return model


def _is_powerlaw(model) -> bool:
    from device_models.inference import _PowerLawDrift
    return isinstance(model, _PowerLawDrift)


def inline_family(model) -> tuple[int, np.ndarray]:
    """(family code, parameter vector) for families whose statistics the kernels evaluate inline
    (``pcm``, ``state-independent``); (FAM_ARRAYS, empty) for the others."""
    from device_models.inference import PCM, StateIndependent

    from ..kernels import drift as _kd
    p = np.zeros(_kd.N_PARAMS, np.float64)
    if type(model) is PCM:
        fam, ref = _kd.FAM_PCM, model.g_max / model.prog_coeff_g_max_reference
    elif type(model) is StateIndependent:
        fam, ref = _kd.FAM_STATE_INDEPENDENT, 1.0
        p[_kd.P_NU_MEAN], p[_kd.P_NU_STD] = model.nu_mean, model.nu_std
    else:
        return _kd.FAM_ARRAYS, p
    p[_kd.P_GMAX] = model.g_max
    p[_kd.P_C0], p[_kd.P_C1], p[_kd.P_C2] = (c * ref for c in model.prog_coeff)
    p[_kd.P_PROG_SCALE] = model.prog_noise_scale
    p[_kd.P_DRIFT_SCALE] = model.drift_scale
    p[_kd.P_READ_SCALE] = model.read_noise_scale
    return fam, p


def _2d(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)


class DeviceArray:
    """The programmed devices of one tile: model + drawn-once ``ProgrammedCells`` (devices, out, in).

    ``fused`` selects the Numba engine (default: whenever the family supports it); ``read(t, stream)`` gives
    the conductances (float32, uS) at t seconds after programming, read noise redrawn on every call.
    """

    def __init__(self, model, cells, fused: bool | None = None):
        self.model = model
        self.cells = cells
        self.fused = (model is not None and _is_powerlaw(model)) if fused is None else bool(fused)
        if self.fused and (model is None or not _is_powerlaw(model)):
            raise ValueError(f"the fused engine supports power-law drift families only, not {type(model).__name__}")
        self._rel = None

    # ---------------------------------------------------------------------------------------- programming
    @classmethod
    def program(cls, model, g_target: np.ndarray, stream: Stream, fused: bool | None = None) -> "DeviceArray":
        """Draw programming noise, drift exponents and faults once for target conductances (float32, uS)."""
        from device_models.inference import ProgrammedCells
        g_target = np.ascontiguousarray(g_target, np.float32)
        if model is None:
            cells = ProgrammedCells(g_target=g_target, g_prog=g_target.copy(), nu=np.zeros_like(g_target),
                                    stuck=np.zeros(g_target.shape, bool))
            return cls(None, cells, fused=False)
        fused = _is_powerlaw(model) if fused is None else fused
        faults = model.stuck_on_prob + model.stuck_off_prob + model.stuck_random_prob > 0
        if fused and not faults:
            from ..kernels import drift as _kd
            slack = 1e-6 * model.g_max     # float32 rounding of the mapping's range is not out of range
            if model.levels > 0 or g_target.size and (g_target.min() < model.g_min - slack
                                                      or g_target.max() > model.g_max + slack):
                g_t = np.ascontiguousarray(model.quantize(g_target), np.float32)  # also checks the range
            else:
                g_t = g_target
            g_prog = np.empty_like(g_t)
            nu = np.empty_like(g_t)
            k0, k1, c = stream.next_call()
            stream.call += 1 + int(model.verify_max_iter)   # calls c+1 (nu) and c+2+k (verify retries)
            fam, p = inline_family(model)
            tol, n_iter = np.float32(model.verify_tol), int(model.verify_max_iter)
            if fam == _kd.FAM_ARRAYS:
                sig = np.ascontiguousarray(model.programming_noise_std(g_t), np.float32)
                mu, sd = (np.ascontiguousarray(a, np.float32) for a in model.drift_exponent_stats(g_t))
                _kd.powerlaw_program(_2d(g_t), _2d(sig), _2d(mu), _2d(sd), tol, n_iter, k0, k1, c,
                                     _2d(g_prog), _2d(nu))
            else:
                scratch = np.empty_like(g_t) if tol > 0 else np.empty((0, 0), np.float32)
                _kd.powerlaw_program_inline(_2d(g_t), fam, p, tol, n_iter, k0, k1, c, _2d(g_prog), _2d(nu),
                                            _2d(scratch) if tol > 0 else scratch)
            cells = ProgrammedCells(g_target=g_t, g_prog=g_prog, nu=nu, stuck=np.zeros(g_t.shape, bool))
            return cls(model, cells, fused=True)
        cells = model.program(g_target, stream.numpy_generator())
        return cls(model, cells, fused=fused)

    # ---------------------------------------------------------------------------------------- reading
    def _rel_read(self) -> np.ndarray:
        """read_noise_scale * Q_s(|g_prog|) per device (0 where stuck): a pure function of the cells."""
        if self._rel is None:
            from ..kernels import drift as _kd
            m, c = self.model, self.cells
            fam, p = inline_family(m)
            if fam == _kd.FAM_ARRAYS:
                rel = np.float32(m.read_noise_scale) * np.asarray(m.read_noise_relative(c.g_prog), np.float32)
                rel[c.stuck] = 0.0
            else:
                rel = np.empty(c.g_prog.shape, np.float32)
                _kd.powerlaw_rel(_2d(np.ascontiguousarray(c.g_prog, np.float32)), _2d(np.ascontiguousarray(c.stuck)),
                                 fam, p, _2d(rel))
            self._rel = np.ascontiguousarray(rel, np.float32)
        return self._rel

    def check_time(self, t: float) -> None:
        """Raise if the device model cannot be read at t (e.g. a time its tables do not cover)."""
        if self.model is not None and not self.fused:
            from device_models.inference import ProgrammedCells
            e = np.zeros(0, np.float32)
            self.model.drift_mean(ProgrammedCells(g_target=e, g_prog=e, nu=e, stuck=np.zeros(0, bool),
                                                  z=None if self.cells.z is None else e), t)

    def read(self, t: float, stream: Stream) -> np.ndarray:
        """Conductances (float32, uS, same shape as the cells) read at t s after programming."""
        t = check_time(t)
        c = self.cells
        if self.model is None:
            return c.g_prog.copy()
        if not self.fused:
            return np.ascontiguousarray(self.model.read(c, t, stream.numpy_generator()), np.float32)
        from ..kernels import drift as _kd
        m = self.model
        log_ratio = math.log((t + m.t0) / m.t0) if t > 0 else 0.0
        out = np.empty(c.g_prog.shape, np.float32)
        k0, k1, call = stream.next_call()
        _kd.powerlaw_read(_2d(c.g_prog), _2d(c.nu), _2d(self._rel_read()), log_ratio,
                          m.read_noise_factor(t), k0, k1, call, _2d(out))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The drawn-once state as plain arrays (for chip images)."""
        c = self.cells
        out = {"g_target": c.g_target, "g_prog": c.g_prog, "nu": c.nu, "stuck": c.stuck}
        if c.z is not None:
            out["z"] = c.z
        return out

    @classmethod
    def from_arrays(cls, model, arrays: dict, fused: bool | None = None) -> "DeviceArray":
        from device_models.inference import ProgrammedCells
        cells = ProgrammedCells(g_target=arrays["g_target"], g_prog=arrays["g_prog"], nu=arrays["nu"],
                                stuck=np.asarray(arrays["stuck"], bool), z=arrays.get("z"))
        return cls(model, cells, fused=fused)


# -------------------------------------------------------------------------------------------- compensation

def compensation_readout(Y: np.ndarray, kind: DriftCompensation) -> np.ndarray:
    """The drift-compensation readout of a one-hot read Y (in, out): a scalar (0-d) or per-column (out,)."""
    a = np.abs(Y)
    if kind == DriftCompensation.PER_COLUMN:
        return np.maximum(a.mean(axis=0, dtype=np.float64), 1e-4).astype(np.float32)
    return np.asarray(max(float(a.mean(dtype=np.float64)), 1e-4), np.float32)
