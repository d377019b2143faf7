"""Training-time weight modifiers (training.md §1.2): additive, multiplicative, polynomial and PCM noise."""
from __future__ import annotations

import numpy as np

from ...core.config import ConfigError
from ...core.rng import Stream
from .config import ModifierType, WeightModifier


# ============================================================================================ weight modifiers

_PCM_CACHE: dict = {}


def _device(name: str):
    if name not in _PCM_CACHE:
        import device_models as dm
        _PCM_CACHE[name] = dm.load(name)
    return _PCM_CACHE[name]


def _default_coeffs(mod: WeightModifier, relative: bool) -> np.ndarray:
    if mod.coeffs:
        return np.asarray(mod.coeffs, np.float64)
    card = _device("pcm-joshi2020")
    c = np.asarray(card.prog_coeff, np.float64)
    return c / card.prog_coeff_g_max_reference if relative else c


def _poly(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    out = np.full_like(a, np.float32(c[-1]))
    for ci in c[-2::-1]:
        out *= a
        out += np.float32(ci)
    return out


def _amax(W: np.ndarray, mod: WeightModifier) -> float:
    if not mod.rel_to_actual_wmax:
        return float(mod.assumed_wmax)
    a = float(np.abs(W).max()) if W.size else 0.0
    return a if a > 0 else 1.0


def _pcm_noise(W: np.ndarray, mod: WeightModifier, amax: float, stream: Stream) -> np.ndarray:
    from ...core.inference import DeviceArray  # program/read engine of the tiles (fused kernels for PCM-like cards)
    m = _device(mod.pcm_device)
    gmax = np.float32(m.g_max)
    gmin = np.float32(m.g_min)
    g = np.minimum(np.abs(W) * np.float32((gmax - gmin) / amax), gmax - gmin)
    G = np.full((2, *W.shape), gmin, np.float32)
    np.copyto(G[0], g + gmin, where=W > 0)
    np.copyto(G[1], g + gmin, where=W < 0)
    dev = DeviceArray.program(m, G, stream)
    t = float(mod.pcm_t_inference)
    Gt = dev.read(t, stream)
    w = (Gt[0] - Gt[1]) * np.float32(amax / (gmax - gmin))
    if t > 0:  # exclude the mean drift: the global factor drift compensation restores on the chip
        Gm = m.drift_mean(dev.cells, t)
        num = float(np.abs(dev.cells.g_prog[0] - dev.cells.g_prog[1]).sum(dtype=np.float64))
        den = float(np.abs(Gm[0] - Gm[1]).sum(dtype=np.float64))
        if den > 0:
            w *= np.float32(num / den)
    return np.ascontiguousarray(w, np.float32)


def modify_weights(W: np.ndarray, mod: WeightModifier, stream: Stream) -> np.ndarray:
    """One sample of the modified weights (float32, same shape as W); W (out, in) float32 is not changed.

    Randomness: ``stream`` (counter-based, thread-count independent). See ``WeightModifier`` for the math.
    """
    W = np.ascontiguousarray(W, np.float32)
    t = mod.type
    amax = _amax(W, mod)
    std = np.float32(mod.std_dev * amax)
    if t in (ModifierType.NONE, ModifierType.DROP_CONNECT):
        out = W.copy()
    elif t == ModifierType.ADD_NORMAL:
        out = W + std * stream.normal(W.shape)
    elif t == ModifierType.MULT_NORMAL:
        out = W * (np.float32(1.0) + std * stream.normal(W.shape))
    elif t == ModifierType.POLY:
        a = np.abs(W) * np.float32(1.0 / amax)
        sig = _poly(_default_coeffs(mod, relative=True), a)
        out = W + std * sig * stream.normal(W.shape)
    elif t == ModifierType.PROG_NOISE:
        a = np.abs(W) * np.float32(1.0 / amax)
        sig = _poly(_default_coeffs(mod, relative=False), a) * np.float32(amax * mod.std_dev / mod.g_max)
        out = np.abs(W + sig * stream.normal(W.shape))
        np.negative(out, out=out, where=W < 0)
    elif t in (ModifierType.DISCRETIZE, ModifierType.DISCRETIZE_ADD_NORMAL):
        r = mod.res if mod.res <= 1 else 1.0 / mod.res
        step = np.float32(amax * r)
        v = W * np.float32(1.0 / step)
        if mod.sto_round:
            v += stream.uniform(W.shape) - np.float32(0.5)
        out = np.rint(v) * step
        if t == ModifierType.DISCRETIZE_ADD_NORMAL:
            out += std * stream.normal(W.shape)
    elif t == ModifierType.PCM_NOISE:
        out = _pcm_noise(W, mod, amax, stream)
    else:  # pragma: no cover - enum is closed
        raise ConfigError(f"unknown modifier type {t!r}")
    if mod.pdrop > 0:
        out[stream.uniform(W.shape) < np.float32(mod.pdrop)] = 0.0
    return out.astype(np.float32, copy=False)
