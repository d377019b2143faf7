"""Post-training calibration of converter ranges on a programmed chip (core, numpy only).

A deployed inference chip has a *static* DAC range and fixed ADC ranges, set once after programming from
the data the chip will see (the practice of inference chips, e.g. IBM HERMES, Le Gallo et al., Nat.
Electron. 6, 680, 2023). Without it, a fixed ADC bound clips whatever the programmed array produces at t = 0
and drift then "helps" by shrinking outputs back into range (issue 11). ``CalibrationConfig`` (aimc.config)
names the method; this module computes the ranges:

* **input range** r per tile (``inp``): ``max`` or ``percentile`` of |x| over the tile's calibration inputs.
  The DAC then maps [-r, r] onto its full scale (x is clipped at +-r) for every later input, in place of the
  config's noise management. ``learned``/``none``: the tile keeps its config (an HWA layer's learned range
  scales the inputs itself).
* **ADC range** b (``out``) from the tile's analog outputs *before* the ADC at t = 0, computed with the
  calibrated DAC range, the programmed (noisy) conductances and the forward noise: ``max``, ``percentile``
  of |y|, or ``mse``: the b minimising mean((clip(Q_b(y), +-b) - y)^2), Q_b the ADC's rounding with step
  2 b / (2^out_bits - 2): the quantisation + clipping error (as in ACIQ, Banner et al., NeurIPS 2019),
  searched on a geometric grid (22 points from max|y|/64 to max|y|, then 9 around the best; the finer
  grid's spacing is 5 %). Q_b is the converter the read uses: the output stage's rint-and-clip for the
  uniform ADC; for converters with drawn errors (SAR, ramp, per-column gain/offset) the chip's own ADCs at
  range b (``transfer_mse_bound``; their transfer is not the uniform one, see there; the search assumes the
  chip's converter errors are known, as from a converter test). Per ``out_granularity``:
  one b per layer, per tile, per output column, or per ADC (the ``columns_per_adc`` columns one converter
  serves share its range). Every ADC *read* has its own range: with weight slicing (``MappingConfig`` kind
  'sliced') each slice's outputs are read separately, so each slice gets its own ranges (the input cycles of
  bit-serial inputs share their slice's range, as in CrossSim), chosen from that slice's analog outputs and,
  by default (``slice_ranges`` 'pow2', ``pow2_apart``), rounded to powers of two apart from the most
  significant slice's, so that the digital shift-and-add needs shifts only.

The tile stores r and b (``Tile.calibration``), saves them in chip images, and counts its ADC conversions and
clipped outputs (``Tile.clip_counts``) so deployment reports the clipped fraction at every time.
"""
from __future__ import annotations

import numpy as np

from .config import (CalibrationConfig, CalibrationGranularity, InputCalibration, IOConfig, OutputCalibration,
                     SliceRanges)

__all__ = ["input_range", "adc_bound", "transfer_mse_bound", "column_groups", "pow2_apart", "rows_for", "per_column", "check_calibration_inputs", "N_GRID", "N_FINE"]

#: candidate ADC ranges of the ``mse`` search: a coarse geometric grid, then a finer one around its best
N_GRID, N_FINE = 22, 9


def check_calibration_inputs(x: np.ndarray, n: int, what: str = "calibration inputs") -> np.ndarray:
    """x as a float32 (rows, n) array, or a ValueError naming the problem (empty, shape, NaN/inf)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"{what} have shape {x.shape}, expected (rows, {n})")
    if x.shape[0] == 0:
        raise ValueError(f"{what} are empty: calibrate with at least one sample")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    return np.ascontiguousarray(x, np.float32)


def rows_for(n_rows: int, max_rows: int) -> np.ndarray | None:
    """Evenly spaced row indices (at most ``max_rows``), or None to use every row."""
    if n_rows <= max_rows:
        return None
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def input_range(x: np.ndarray, cal: CalibrationConfig) -> float | None:
    """The static DAC range r of a tile from its calibration inputs x (None: keep the config's scaling)."""
    if cal.inp not in (InputCalibration.MAX, InputCalibration.PERCENTILE):
        return None
    a = np.abs(x)
    r = float(a.max()) if cal.inp == InputCalibration.MAX else float(np.percentile(a, cal.inp_percentile))
    if not r > 0:  # all-zero inputs: any range works; keep the DAC's unit range
        r = float(a.max()) if a.max() > 0 else 1.0
    return r


def _grid_search(top: np.ndarray, err) -> np.ndarray:
    """Per entry g of ``top`` (float32, > 0), the b minimising ``err(b)[g]`` (err: candidate ranges (G,) -> mean
    squared errors (G,)): a geometric grid of ``N_GRID`` points from top/64 to top, refined by ``N_FINE``
    points between the best point's neighbours."""
    ratio = 64.0 ** (1.0 / (N_GRID - 1))
    best, best_b = np.full(top.shape[0], np.inf), top.copy()
    for grid in (np.geomspace(1.0 / 64, 1.0, N_GRID), np.geomspace(1.0 / ratio, ratio, N_FINE)):
        base = top if grid[-1] == 1.0 else best_b.copy()
        for c in grid:
            b = (base * np.float32(c)).astype(np.float32)
            e = err(b)
            better = e < best
            best = np.where(better, e, best)
            best_b = np.where(better, b, best_b)
    return best_b


def _top(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    return np.where(top > 0, top, np.float32(1.0)).astype(np.float32)


def _mse_bound(y: np.ndarray, bits: int) -> np.ndarray:
    """Per column of y (S, k): the b minimising mean((min(Q_b(|y|), b) - |y|)^2), Q_b the uniform ADC's
    rounding (odd, so |y| suffices), by ``_grid_search``."""
    a = np.abs(np.asarray(y, np.float32))
    levels = np.float32(2.0 / (2**bits - 2)) if bits > 0 else np.float32(0.0)
    q = np.empty_like(a)

    def err(b, q=q):
        if levels > 0:
            st = b * levels
            np.divide(a, st, out=q)
            np.rint(q, out=q)
            q *= st
        else:
            q[...] = a
        np.minimum(q, b, out=q)
        q -= a
        q *= q
        return q.mean(axis=0, dtype=np.float64)

    return _grid_search(_top(a), err)


def transfer_mse_bound(parts: list, groups: list, n_groups: int) -> np.ndarray:
    """The ``mse`` range search through the converters' own transfer: per group g of columns, the b minimising
    the mean of (ADC_b(y) - y)^2 over the group's columns and samples, ADC_b the chip's converters with range b
    (``parts``: [(y (S, m) analog outputs, convert(y, bounds (m,)) -> ADC outputs)]; ``groups``: per part,
    (m,) int64, the group of each column; ``_grid_search`` over candidate ranges of each group). Used for
    converters with drawn errors (SAR, ramp, gain/offset variation): their transfer is not the uniform
    quantiser's -- a SAR or ramp ADC has 2^B mid-rise levels 2 b / 2^B apart (the uniform model: 2^B - 1
    mid-tread levels 2 b / (2^B - 2) apart), its code transitions move with the CDAC mismatch or the ramp's
    INL, and gain/offset errors move every level -- so the uniform MSE picks another range."""
    top = np.zeros(n_groups, np.float32)
    count = np.zeros(n_groups)
    for (y, _), g in zip(parts, groups):
        np.maximum.at(top, g, np.abs(y).max(axis=0))
        count += np.bincount(g, minlength=n_groups) * y.shape[0]
    top = np.where(top > 0, top, np.float32(1.0)).astype(np.float32)

    def err(b):
        tot = np.zeros(n_groups)
        for (y, convert), g in zip(parts, groups):
            d = convert(y, b[g]) - y
            tot += np.bincount(g, (d.astype(np.float64) ** 2).sum(axis=0), minlength=n_groups)
        return tot / np.maximum(count, 1)

    return _grid_search(top, err)


def column_groups(m: int, granularity, columns_per_adc: int = 1) -> tuple[np.ndarray, int]:
    """The group of each of m columns that share one ADC range by ``granularity`` (int64 (m,)) and the number
    of groups: every column its own ('column'), ``columns_per_adc`` neighbours ('adc'), one group otherwise."""
    granularity = CalibrationGranularity(granularity)
    if granularity == CalibrationGranularity.COLUMN or (granularity == CalibrationGranularity.ADC
                                                        and columns_per_adc <= 1):
        return np.arange(m, dtype=np.int64), m
    if granularity == CalibrationGranularity.ADC:
        return np.arange(m, dtype=np.int64) // columns_per_adc, -(-m // columns_per_adc)
    return np.zeros(m, np.int64), 1


def adc_bound(y: np.ndarray, cal: CalibrationConfig, io: IOConfig, granularity=CalibrationGranularity.COLUMN,
              columns_per_adc: int = 1, convert=None) -> np.ndarray | None:
    """ADC range(s) from the analog outputs y (S, m) before the ADC, by ``granularity``: (m,) per column
    ('column', or True), (m,) with one value per ADC of ``columns_per_adc`` neighbouring columns ('adc': the
    columns one converter serves pool their outputs), else (1,) ('tile', 'layer', or False). ``convert``
    (y, bounds (m,)) -> ADC outputs: the chip's converters when they have drawn errors; the ``mse`` search
    then goes through them (``transfer_mse_bound``).

    None: keep the config's ``out_bound``.
    """
    if cal.out == OutputCalibration.NONE:
        return None
    if isinstance(granularity, bool):
        granularity = CalibrationGranularity.COLUMN if granularity else CalibrationGranularity.TILE
    granularity = CalibrationGranularity(granularity)
    y = np.asarray(y, np.float32)
    m = y.shape[1]
    if convert is not None and cal.out == OutputCalibration.MSE:
        g, n = column_groups(m, granularity, columns_per_adc)
        b = transfer_mse_bound([(y, convert)], [g], n)
        b = b[g] if granularity in (CalibrationGranularity.COLUMN, CalibrationGranularity.ADC) else b
        return np.maximum(np.asarray(b, np.float64), 1e-6).astype(np.float32)
    if granularity == CalibrationGranularity.ADC and columns_per_adc > 1:
        g = columns_per_adc
        b = np.concatenate([np.repeat(_bound(y[:, i:i + g].reshape(-1, 1), cal, io), min(g, m - i))
                            for i in range(0, m, g)])
    elif granularity in (CalibrationGranularity.COLUMN, CalibrationGranularity.ADC):
        b = _bound(y, cal, io)
    else:
        b = _bound(y.reshape(-1, 1), cal, io)
    return np.maximum(np.asarray(b, np.float64), 1e-6).astype(np.float32)


def _bound(cols: np.ndarray, cal: CalibrationConfig, io: IOConfig) -> np.ndarray:
    """One range per column of ``cols`` (S, k) by the method ``cal.out``."""
    a = np.abs(cols)
    if cal.out == OutputCalibration.MAX:
        return a.max(axis=0)
    if cal.out == OutputCalibration.PERCENTILE:
        return np.percentile(a, cal.out_percentile, axis=0)
    return _mse_bound(cols, io.out_bits)


def pow2_apart(bs: list, cal: CalibrationConfig) -> list:
    """The ADC ranges of a sliced tile's weight slices (one float32 array per slice, (1,) or (out,), least
    significant first) made power-of-two apart per column when ``cal.slice_ranges`` is 'pow2': the most
    significant slice (the last; its output carries the largest shift, so its error counts most) keeps its
    range b_top, slice k gets b_top 2^e_k, e_k the integer nearest log2(b_k / b_top) for 'mse' (within a factor
    sqrt 2 of its own optimum), the next one above for 'max' / 'percentile' (no more clipping than they chose).
    Every slice's ADC step is then the top slice's times a power of two, so the digital shift-and-add aligns
    the slices' codes by shifts alone (CrossSim Inference manual §9.3, eq. 9.1-9.2: y_max,i = y_max 2^(-C_i),
    C_i integer; circuits_and_cost.md B.1). 'free' returns ``bs`` (each slice's output is then scaled by a
    digital multiply)."""
    if len(bs) < 2 or bs[0] is None or SliceRanges(cal.slice_ranges) == SliceRanges.FREE:
        return bs
    top = np.asarray(bs[-1], np.float64)
    rnd = np.rint if cal.out == OutputCalibration.MSE else np.ceil
    out = []
    for b in bs:
        e = rnd(np.log2(np.asarray(b, np.float64) / top) - (1e-9 if rnd is np.ceil else 0.0))
        out.append((top * 2.0 ** e).astype(np.float32))
    return out


def per_column(cal: CalibrationConfig) -> bool:
    return cal.out_granularity == CalibrationGranularity.COLUMN
