"""Weights <-> conductances, digital column scales and tile splitting (physics.md §2).

All functions are vectorised over whole matrices; conductances are float32 arrays in uS with a leading
device axis: (2, out, in) for a differential pair, (2 N, out, in) for N pairs [G+_1, G-_1, G+_2, ...],
(1, out, in) for a single device with an offset.
"""
from __future__ import annotations

import numpy as np

from .config import MappingConfig, MappingKind


def split_sizes(n: int, max_size: int) -> list[int]:
    """Near-equal split of ``n`` into ceil(n / max_size) parts, larger parts first (1100, 512 -> 367/367/366)."""
    if max_size <= 0 or n <= max_size:
        return [n]
    k = -(-n // max_size)
    base, extra = divmod(n, k)
    return [base + 1] * extra + [base] * (k - extra)


def column_scales(W: np.ndarray, cfg: MappingConfig) -> np.ndarray:
    """Digital per-output scale c (out,) so that W / c has max |w| = omega per column (or per tile).

    omega = 0 gives c = 1 (no scaling). All-zero columns keep c = 1.
    """
    m = W.shape[0]
    if cfg.weight_scaling_omega <= 0:
        return np.ones(m, np.float32)
    amax = np.abs(W).max(axis=1) if cfg.weight_scaling_columnwise else np.full(m, np.abs(W).max(), np.float32)
    c = amax / np.float32(cfg.weight_scaling_omega)
    c[c <= 0] = 1.0
    return c.astype(np.float32)


def n_devices(cfg: MappingConfig) -> int:
    """Devices per weight of the mapping."""
    if cfg.kind == MappingKind.DIFFERENTIAL:
        return 2
    if cfg.sliced_offset:
        return cfg.n_slices
    if cfg.kind in (MappingKind.N_PAIRS, MappingKind.SLICED):
        return 2 * len(cfg.pair_factors)
    return 1


def to_conductances(W: np.ndarray, cfg: MappingConfig) -> tuple[np.ndarray, dict]:
    """Target conductances (devices, out, in) in uS and the parameters that map them back.

    differential: s = (g_max - g_min) / max|W|; G+ = clip(s w, 0, g_max - g_min) + g_min, G- likewise for -w.
    n_pairs: S = sum_k f_k (g_max - g_min); lower-significance pairs fill first (physics.md §2.3).
    single_offset: g = g_min + (w - min W) (g_max - g_min) / (max W - min W); the offset is subtracted
    digitally (physics.md §2.5).
    """
    W = np.asarray(W, np.float32)
    gmin, gmax = np.float32(cfg.g_min), np.float32(cfg.g_max)
    rng_g = gmax - gmin
    if cfg.kind == MappingKind.SINGLE_OFFSET:
        lo, hi = float(W.min()), float(W.max())
        span = hi - lo if hi > lo else 1.0
        s = np.float32(rng_g / span)
        G = (gmin + (W - np.float32(lo)) * s)[None]
        return G.astype(np.float32), {"scale": float(s), "w_min": lo}
    amax = max(float(np.abs(W).max()) if W.size else 0.0, 1e-7)
    if cfg.kind == MappingKind.SLICED:
        return _sliced(W, cfg, amax)
    f = np.asarray(cfg.significance, np.float32)
    s = np.float32(float(f.sum()) * float(rng_g) / amax)
    w_us = W * s
    pos, neg = np.maximum(w_us, 0), np.maximum(-w_us, 0)
    G = np.empty((2 * len(f), *W.shape), np.float32)
    level = np.float32(0.0)
    for k, fk in enumerate(f):
        G[2 * k] = np.clip((pos - level) / fk + gmin, gmin, gmax)
        G[2 * k + 1] = np.clip((neg - level) / fk + gmin, gmin, gmax)
        level += fk * rng_g
    return G, {"scale": float(s), "w_min": 0.0}


def offset_weight(cfg: MappingConfig, params: dict) -> float:
    """The offset 2^(B-1) of the offset slice encoding in normalised weight units: 2^(B-1) (g_max - g_min) /
    ((2^b - 1) scale); the digital offset removal subtracts it (plus g_min sum_k 2^(k b) / scale of the g_min
    floor every cell carries) times sum_j x_j."""
    return 2.0 ** (cfg.weight_bits - 1) * float(cfg.g_max - cfg.g_min) / ((2 ** cfg.bits_per_cell - 1) * params["scale"])


def reference_conductances(cfg: MappingConfig, n_in: int) -> np.ndarray:
    """Target conductances (slices, 1, n_in) in uS of the reference column of an offset-encoded sliced tile
    (``MappingConfig.reference_column``): slice k holds digit k of the offset 2^(B-1) in base 2^b on every row,
    g_min + (g_max - g_min) d_k / (2^b - 1), as a weight of 0 is stored (u = 0 + 2^(B-1)). Subtracting its
    read from every column of the slice removes the offset and the g_min floor: sum_k 2^(k b) (G_k - G_ref,k)
    / scale = the quantised weight, and cells that drift alike leave no constant error (CrossSim
    BitslicedCore's unit column holds the same: floor(2^b / 2) / (2^b - 1) in the top slice, 0 elsewhere,
    when b divides B)."""
    b, levels = cfg.bits_per_cell, 2 ** cfg.bits_per_cell - 1
    u = 2 ** (cfg.weight_bits - 1)
    span = np.float32(cfg.g_max - cfg.g_min)
    d = np.array([(u >> (k * b)) & levels for k in range(cfg.n_slices)], np.float32)
    g = np.float32(cfg.g_min) + span * (d / np.float32(levels))
    return np.ascontiguousarray(np.broadcast_to(g[:, None, None], (cfg.n_slices, 1, n_in)), np.float32)


def _sliced(W, cfg: MappingConfig, amax: float):
    """Bit slicing (CrossSim BitslicedCore; circuits_and_cost.md B.1). Balanced: integer weights
    W_i = rint(W / amax (2^(B-1) - 1)); digit k of |W_i| in base 2^b is stored as g_min + (g_max - g_min)
    d_k / (2^b - 1) in G+ of slice k if W_i > 0, in G- if W_i < 0 (the other device at g_min). Read back
    with pair factors 2^(k b): sum_k 2^(k b) (G+_k - G-_k) / scale = the quantised weight. Offset
    (``slice_encoding`` 'offset'): the digits of W_i + 2^(B-1), one device per slice, read back as
    sum_k 2^(k b) (G_k - g_min) / scale - ``offset_weight``."""
    b, lmax = cfg.bits_per_cell, 2 ** (cfg.weight_bits - 1) - 1
    wi = np.rint(W.astype(np.float64) / amax * lmax).astype(np.int64)
    mag, levels = np.abs(wi), 2 ** b - 1
    gmin, span = np.float32(cfg.g_min), np.float32(cfg.g_max - cfg.g_min)
    params = {"scale": float(span) * lmax / (levels * amax), "w_min": 0.0}
    if cfg.sliced_offset:
        # offset encoding (CrossSim OFFSET): u = W_i + 2^(B-1) in [1, 2^B - 1], its base-2^b digits, one device
        # per slice; the offset is removed digitally after the shift-and-add
        u = wi + 2 ** (cfg.weight_bits - 1)
        G = np.empty((cfg.n_slices, *W.shape), np.float32)
        for k in range(cfg.n_slices):
            G[k] = gmin + span * (((u >> (k * b)) & levels).astype(np.float32) / np.float32(levels))
        return G, params
    G = np.full((2 * cfg.n_slices, *W.shape), gmin, np.float32)
    for k in range(cfg.n_slices):
        g = gmin + span * (((mag >> (k * b)) & levels).astype(np.float32) / np.float32(levels))
        G[2 * k] = np.where(wi > 0, g, gmin)
        G[2 * k + 1] = np.where(wi < 0, g, gmin)
    return G, params


def line_conductance(W: np.ndarray, cfg: MappingConfig, axis: int) -> np.ndarray:
    """Sum of the target conductances (uS, all devices) over ``axis`` of W (0: per input line, (in,); 1: per
    output line, (out,)), as ``to_conductances(W, cfg)[0].sum((0, axis + 1))`` without building G for the
    differential pair (G+ + G- = s |w| + 2 g_min there, as one of the two is at g_min)."""
    W = np.ascontiguousarray(W, np.float32)
    if cfg.kind == MappingKind.DIFFERENTIAL:
        _, g = _pair_write(W, None, cfg, copy=False, backward=axis == 1)
        return g["forward" if axis == 0 else "backward"]
    return to_conductances(W, cfg)[0].sum(axis=(0, axis + 1), dtype=np.float64).astype(np.float32)


def _pair_write(W: np.ndarray, scale, cfg: MappingConfig, copy: bool, backward: bool) -> tuple:
    """(w = W / scale[:, None], or a copy of W, or None without ``copy``; the per-line conductance of the
    differential pair {'forward': (in,)} and with ``backward`` also 'backward': (out,)): s sum|w| + 2 g_min x
    cells with s = (g_max - g_min) / max|w| (``to_conductances``), summed in the same sweep that writes w
    (``kernels.cost.write_line_sums``) from the C-contiguous float32 W."""
    from ..kernels.cost import write_line_sums
    m, n = W.shape
    w = np.empty_like(W) if copy else np.empty((0, n), np.float32)
    c = np.ascontiguousarray(scale, np.float32) if scale is not None else np.zeros(0, np.float32)
    colsum, rowsum = np.empty(n, np.float32), np.empty(m if backward else 0, np.float32)
    amax = write_line_sums(W, c, w, colsum, rowsum)
    s = np.float32((cfg.g_max - cfg.g_min) / max(float(amax), 1e-7))
    g = {"forward": colsum * s + np.float32(2.0 * cfg.g_min * m)}
    if backward:
        g["backward"] = rowsum * s + np.float32(2.0 * cfg.g_min * n)
    return (w if copy else None), g


def write_weights(W: np.ndarray, scale: np.ndarray | None, cfg: MappingConfig, sums: bool = True,
                  backward: bool = True) -> tuple[np.ndarray, dict]:
    """The normalised weights of an exact write, w = W / scale[:, None] (``scale`` None: a copy of W), and the
    per-line conductance as ``line_conductance`` gives it ({'forward': (in,)} and with ``backward`` also
    'backward': (out,)) for the differential pair, summed in the write's own sweep: a weight rewrite before
    every forward (training) reads W once. Other mappings, or ``sums`` False: numpy's division / copy and {}
    (the tile computes a conductance when a read first needs it)."""
    W = np.ascontiguousarray(W, np.float32)
    if not sums or cfg.kind != MappingKind.DIFFERENTIAL:
        return (W / scale[:, None] if scale is not None else W.copy()), {}
    return _pair_write(W, scale, cfg, copy=True, backward=backward)


def from_conductances(G: np.ndarray, params: dict, cfg: MappingConfig, ref: np.ndarray | None = None) -> np.ndarray:
    """Weights (out, in) read back from conductances (the inverse of ``to_conductances``). ``ref`` (slices, 1,
    in): the reference column of an offset-encoded sliced tile as read, subtracted from each slice in place of
    the programmed offset."""
    s = np.float32(params["scale"])
    if cfg.kind == MappingKind.SINGLE_OFFSET:
        return ((G[0] - np.float32(cfg.g_min)) / s + np.float32(params["w_min"])).astype(np.float32)
    f = np.asarray(cfg.pair_factors, np.float32)
    W = np.zeros(G.shape[1:], np.float32)
    if cfg.sliced_offset and ref is not None:
        for k, fk in enumerate(f):
            W += fk * (G[k] - ref[k])
        return W / s
    if cfg.sliced_offset:
        for k, fk in enumerate(f):
            W += fk * (G[k] - np.float32(cfg.g_min))
        return W / s - np.float32(offset_weight(cfg, params))
    for k, fk in enumerate(f):
        W += fk * (G[2 * k] - G[2 * k + 1])
    return W / s
