"""Crossbar tiles: ``Tile`` (one physical array) and ``TileArray`` (a matrix split over several tiles).

A tile holds its state as contiguous float32 arrays: the normalised weights the MVM reads (``_w``, out x in),
the digital per-output scales (``_scale``), and after ``program`` the conductances (devices x out x in, uS)
with the parameters that map them back. Verbs: ``set_weights`` (an exact write, as during training),
``program`` (a physical write through the mapping and the device model), ``drift`` (move the clock),
``forward`` (y = W x through the forward periphery), ``backward`` (x' = W^T d through the backward
periphery), ``read_weights``.

Lifecycle of a programmed tile (``config.inference``; physics.md §3, §4; ``aimc.inference``):

* ``program(W)``: column scales, weight -> conductance targets of every device slice (G+/G-, pairs or the
  single device), programming noise / drift exponents / faults drawn ONCE by the device model
  (``ProgrammedCells``, kept in ``tile.cells``); the clock is set to t = 0 and the array is read once at
  t = 0 (read noise included, as ``drift(0)`` would); the compensation reference is read out.
* ``drift(t)``: the array is read at t seconds after programming (drift mean + read noise, the read noise
  redrawn on every ``drift`` call; it is NOT redrawn per forward: per-forward fluctuations are the forward
  periphery's ``w_noise``); the MVM weights become ``mapping.from_conductances`` of that read; the
  compensation factor alpha is re-measured. t may not decrease (re-``program`` to start again).
* the compensation factor alpha multiplies the digital forward output while ``tile.compensate`` is true
  (default). It is an evaluation-time correction (aihwkit applies it in eval mode only): the torch adapter
  switches it off in training mode; ``backward`` never applies it; ``set_weights`` clears it.

Without ``config.inference`` (None) ``program`` writes ideal conductances and ``drift`` only moves the clock.

Calibration (``calibrate(x)``, ``config.calibration``; ``aimc.calibration``): on the programmed tile, a static
DAC range and ADC ranges are chosen from calibration inputs and kept as tile state for every later time
(saved in chip images); ``program`` and ``set_weights`` drop them (a new chip needs a new calibration). The
tile counts its ADC conversions and the outputs beyond the ADC range (``clip_counts``).
"""
from __future__ import annotations

import warnings

import numpy as np

from . import mapping as _map
from . import calibration as _cal
from .config import (CalibrationConfig, CalibrationGranularity, DriftCompensation, MappingKind,
                     OutputCalibration, TileConfig, WireModel, as_config)
from ..circuit.crossbar import ArrayCircuit, tile_circuits
from ..cost.counters import Counts
from .inference import DeviceArray, build_device_model, check_time, compensation_readout
from .periphery import (NO_ADC, WeightView, adc_arrays, adc_convert, dac_input_sum, draw_calls, draw_converters, fusable,
                        mvm, mvm_shared, mvm_slices, patch_pass, shared_fusable,
                        slices_fusable)
from .rng import Stream, check_seed


PATCH_CHUNK = 1 << 23
"""Patch elements per chunk of ``TileArray.forward_patches`` (32 MB of float32): the bound of a convolution's
working memory in inference, whatever the batch and image size. Large because every chunk costs three
parallel regions: ResNet-20, batch 64, on the loaded 2-core machine took 4.7-5.1 s per forward with 2^18,
2.1-3.2 s with 2^21 and 1.3-2.1 s with 2^23 (digital: 0.4-0.8 s), timing three calls of
``aimc.nn.bench.make_resnet`` (batch 64, 'deploy') at each value."""


MAX_WEIGHTS = 1 << 31
"""Largest weight matrix of one Tile or TileArray (2^31 weights: 8 GiB of float32 for the weights alone, before
conductances and device state); a larger request is refused before any allocation, not with a MemoryError."""


def _check_size(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_shape(out_size, in_size) -> tuple[int, int]:
    out_size, in_size = _check_size("out_size", out_size), _check_size("in_size", in_size)
    if out_size * in_size > MAX_WEIGHTS:
        raise ValueError(f"a {out_size} x {in_size} weight matrix ({out_size * in_size:.3g} weights) exceeds the "
                         f"largest supported tile matrix of {MAX_WEIGHTS:.3g} weights; split the layer")
    return out_size, in_size


def check_matrix(W, shape: tuple[int, int], what: str = "W") -> np.ndarray:
    """W as a C-contiguous float32 (out, in) array, or a clear error (shape, dtype, NaN/inf)."""
    if hasattr(W, "detach"):  # a torch tensor
        W = W.detach().cpu().numpy()
    W = np.asarray(W)
    if W.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {W.dtype}")
    if W.shape != tuple(shape):
        raise ValueError(f"{what} has shape {W.shape}, expected {tuple(shape)} (out_size, in_size)")
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.isfinite(W).all():
        raise ValueError(f"{what} contains NaN or inf")
    return W


def check_batch(x, n: int, what: str = "x") -> tuple[np.ndarray, bool]:
    """x as a C-contiguous float32 (batch, n) array and whether it was 1-D, or a clear error."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] != n:
        raise ValueError(f"{what} has shape {x.shape}, expected ({n},) or (batch, {n})")
    vec = x.ndim == 1
    x = np.ascontiguousarray(x.reshape(1, -1) if vec else x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf")
    return x, vec


class _Reads:
    """The public read verbs of Tile and TileArray: validate, call ``_forward``/``_backward``, keep 1-D shape."""

    def forward(self, x) -> np.ndarray:
        """y = W x through the forward periphery; x (in,) or (batch, in) -> float32 (out,) or (batch, out).

        On a TileArray every tile reads its slice of x and partial sums are added digitally.
        """
        x, vec = check_batch(x, self.in_size, "x")
        y = self._forward(x)
        return y[0] if vec else y

    def backward(self, d) -> np.ndarray:
        """x' = W^T d (the transposed read) through the backward periphery; d (out,) or (batch, out)."""
        d, vec = check_batch(d, self.out_size, "d")
        x = self._backward(d)
        return x[0] if vec else x


class Tile(_Reads):
    """One crossbar array of ``out_size`` x ``in_size`` weights with its own periphery and random stream.

    Example::

        tile = aimc.Tile(64, 128, config=aimc.presets.default(), seed=1)
        tile.program(W)          # W: (64, 128)
        y = tile.forward(x)      # x: (batch, 128) -> (batch, 64)

    A new tile is an erased array: all weights 0 until ``set_weights`` or ``program``, so ``forward``
    before either returns the periphery's response to zero weights (output noise only), as a fresh chip would.
    This is intended; ``tile.programmed`` tells whether the array holds a physical write.
    """

    def __init__(self, out_size: int, in_size: int, config: TileConfig | str | None = None, seed: int = 0,
                 tile_id: str | int = 0):
        self.out_size, self.in_size = _check_shape(out_size, in_size)
        self.config = as_config(config)
        self.seed = check_seed(seed)
        self.tile_id = tile_id
        self.stream = Stream(self.seed, tile_id)
        self._scale = np.ones(self.out_size, np.float32)
        self._G = None            # conductances as last read (program/drift): (devices, out, in) uS
        # the reference column of an offset-encoded sliced tile (MappingConfig.reference_column): whether the
        # chip has one (False for a chip image written before it existed), its programmed cells (a DeviceArray
        # after program()) and its conductances as last read (slices, 1, in) uS
        self._refcol = self.config.mapping.reference_column
        self._ref_device = None
        self._Gref = None
        self._map_params = None
        self._device = None       # DeviceArray after program(): model + drawn-once cells
        self._model = None        # device model, built from config.inference at the first program()
        self._time = None         # seconds since programming; None before program()
        self._comp_kind = DriftCompensation.NONE
        self._comp_ref = None     # compensation reference (0-d or (out,)), set by program()
        self._alpha = None        # current compensation factor (0-d or (out,))
        self._compensate = True
        self._fused = None        # device engine: None = fused kernels where supported, False = device_models
        self._out = None          # digital output factor of the forward: scale (omega > 0) x alpha, or None
        self._cal_inp = None      # calibrated static DAC range (float) or None (config's noise management)
        self._cal_adc = None      # calibrated ADC ranges, float32 (1,) or (out,), or None (config's out_bound)
        self._adc = None          # (steps, bounds) handed to mvm for _cal_adc
        self._cal_pending = None  # a CalibrationConfig: calibrate on the next forward's inputs
        self._cal_sample = None   # analog outputs kept for a layer-wide ADC range (TileArray.finish_calibration)
        self._clip = np.zeros(2, np.int64)  # [outputs beyond the ADC range, ADC conversions] of the forward
        self.counts = Counts()    # what the forward reads did (aimc.cost); reset with counts.reset()
        self.counts_backward = Counts()
        self._conv = {}           # per-chip converter errors per direction (draw_adc), drawn at the first read
        self._set_normalised(np.zeros((self.out_size, self.in_size), np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_size, self.in_size)

    def _set_normalised(self, w: np.ndarray) -> None:
        """New weights to read: the nominal matrix, and with ``array.model`` 'circuit' the array circuits
        built from the conductances as last read (or the ideal conductances of w if never programmed);
        with a sliced mapping one view per weight slice (``_fwd_parts``, ``_bwd_parts``)."""
        self._w = w
        self._gline = {}
        cfg = self.config
        G, params = self._G, self._map_params
        if cfg.mapping.kind == MappingKind.SLICED and G is None:
            G, params = _map.to_conductances(w, cfg.mapping)
        fwd = bwd = None
        if cfg.array.model == WireModel.CIRCUIT:
            fwd, bwd = tile_circuits(G, params if G is not None else {"weights": w}, cfg, str(self.tile_id))
        self._fwd = WeightView(w, fwd)
        self._bwd = WeightView(w.T, bwd)
        self._fwd_parts = [(1.0, self._fwd)]
        self._bwd_parts = [(1.0, self._bwd)]
        self._offset = {"forward": 0.0, "backward": 0.0}
        self._stacks = {}  # per read direction, the weight slices stacked (periphery.mvm_slices); sliced only
        if cfg.mapping.kind == MappingKind.SLICED:
            m = cfg.mapping
            span = float(m.g_max - m.g_min)
            coef = [f * span / params["scale"] for f in m.pair_factors]
            off = m.sliced_offset
            ref = off and self._refcol  # the forward read has one more column: the reference (last row)
            if off:  # the digital offset removal: 2^(B-1) and the g_min floor of every cell, times sum_j x_j
                o = _map.offset_weight(m, params) + m.g_min * sum(m.pair_factors) / params["scale"]
                self._offset = {"forward": 0.0 if ref else o, "backward": o}
            Gref = None
            if ref:
                Gref = self._Gref if self._Gref is not None else _map.reference_conductances(m, w.shape[1])
            if fwd is None:  # the slices' matrices in one array (each slice a view of its rows): mvm_slices' stack
                Wk = np.empty((len(coef), w.shape[0] + ref, w.shape[1]), np.float32)
                for k in range(len(coef)):
                    np.divide(G[k] if off else G[2 * k] - G[2 * k + 1], np.float32(span), out=Wk[k, :w.shape[0]])
                    if ref:
                        np.divide(Gref[k], np.float32(span), out=Wk[k, w.shape[0]:])
                self._fwd_parts = [(c, WeightView(W)) for c, W in zip(coef, Wk)]
                self._bwd_parts = [(c, WeightView(W[:w.shape[0]].T)) for c, W in zip(coef, Wk)]
                self._stacks["forward"] = WeightView(Wk.reshape(-1, w.shape[1]))
            else:
                sfwd = fwd if not ref else ArrayCircuit(np.concatenate([G, Gref], axis=1).astype(np.float64), params,
                                                        cfg, False, str(self.tile_id))
                self._fwd_parts = [(c, WeightView(None, _SliceCircuit(sfwd, k, span, off)))
                                   for k, c in enumerate(coef)]
                self._bwd_parts = [(c, WeightView(None, _SliceCircuit(bwd, k, span, off)))
                                   for k, c in enumerate(coef)]
                self._stacks["forward"] = _stacked(self._fwd_parts)
            self._stacks["backward"] = _stacked(self._bwd_parts)

    def _reference(self) -> bool:
        """Whether the forward read has a reference column (the last column of every slice's read): an
        offset-encoded sliced tile with ``offset_reference`` 'column', unless its chip image predates it."""
        return self._refcol

    def _conv_of(self, direction: str):
        """The converter errors of a read direction ('forward' or 'backward'; None without any), drawn once
        from a stream of their own (drawing them does not move the tile's main stream; kept in chip images)."""
        io = getattr(self.config, direction)
        if not (io.adc_drawn or io.dac_drawn):
            return None
        if direction not in self._conv:
            n_out, n_in = self.shape if direction == "forward" else self.shape[::-1]
            n_out += direction == "forward" and self._reference()
            self._conv[direction] = draw_converters(io, n_in, n_out,
                                                    Stream(self.seed, f"{self.tile_id}/adc/{direction}"))
        return self._conv[direction]

    def _cycles(self, x: np.ndarray) -> tuple[list, np.ndarray | None]:
        """The input cycles [(shift factor, inputs)] of a read and the row abs-max they were scaled by (None
        without bit-serial inputs): x is quantised digitally to m = input_bits - 1 magnitude bits of its row's
        abs-max and sliced into cycles of ``input_bits_per_cycle`` bits (the sign on every cycle)."""
        m = self.config.mapping
        if m.input_bits == 0:
            return [(1.0, x)], None
        mb, sb = m.input_bits - 1, m.input_bits_per_cycle
        amax = np.abs(x).max(axis=1, keepdims=True)
        amax[amax == 0] = 1.0
        xi = np.rint(np.abs(x) / amax * (2 ** mb - 1)).astype(np.int64)
        sg, lv = np.sign(x), 2 ** sb - 1
        return [(2.0 ** (c * sb) * lv / (2 ** mb - 1), (sg * ((xi >> (c * sb)) & lv) / lv).astype(np.float32))
                for c in range(-(-mb // sb))], amax

    def _read(self, parts, x: np.ndarray, direction: str, **kw) -> np.ndarray:
        """One analog read (``mvm`` with ``kw``) per weight slice and input cycle, shift-and-added digitally
        (circuits_and_cost.md B.1-B.2), through the periphery of ``direction`` ('forward' / 'backward').
        Bit-serial inputs (``mapping.input_bits`` > 0): see ``_cycles``. ``kw['adc']`` may hold one
        (steps, bounds) per weight slice (ranges calibrated per slice). The offset slice encoding removes its
        offset with the reference column (``_reference``: the last column of every slice's forward read,
        converted by its own ADC and subtracted from the slice's other columns: after the shift-and-add,
        which is linear, the same numbers) or digitally: ``_offset`` times the sum of each cycle's inputs as
        the DAC codes them (``periphery.dac_input_sum``)."""
        io, conv = getattr(self.config, direction), self._conv_of(direction)
        counts = kw.pop("counts", None)
        cycles, amax = self._cycles(x)
        adc = kw.pop("adc", None)
        per_slice = isinstance(adc, list)
        ref = direction == "forward" and self._reference()
        offset = self._offset[direction]
        if counts is None:
            gs = [None] * len(parts)
        elif len(parts) == 1 and not ref:
            gs = [self.line_conductance(direction)]
        else:
            gs = self._slice_conductance(direction, len(parts))
        y = None
        fused = len(parts) > 1 and slices_fusable(io)
        for cc, xc in cycles:
            if fused:  # one input stage for all slices (periphery.mvm_slices)
                y = mvm_slices(parts, cc, xc, io, self.stream, counts, gs, conv=conv, acc=y, adc=adc,
                               stack=self._stacks.get(direction) if parts is self._parts(direction) else None, **kw)
            for k, (ck, view) in enumerate(() if fused else parts):
                yk = mvm(view, xc, io, self.stream, conv=conv, adc=adc[k] if per_slice else adc, counts=counts,
                         g=gs[k], **kw)
                if len(parts) * len(cycles) == 1 and cc * ck == 1.0 and amax is None and not offset and not ref:
                    return yk  # the plain read
                y = yk * np.float32(cc * ck) if y is None else y + yk * np.float32(cc * ck)
            if offset:
                s = dac_input_sum(xc, io, kw.get("inp_range"))
                y -= (np.float32(offset * cc) * s)[:, None]
                if counts is not None:
                    counts.dig_comp += y.size  # the digital offset removal, one multiply-add per output
        if ref:  # the reference column's shift-and-added codes from every other column
            y = y[:, :-1] - y[:, -1:]
            if counts is not None:
                counts.dig_comp += y.size
        if counts is not None:  # one MVM of B rows; its other slices and cycles are reads of it (aimc.cost)
            B, k = x.shape[0], len(parts) * len(cycles)
            counts.mvms -= (k - 1) * B
            counts.slice_reads += (k - 1) * B
            counts.dig_shift += k * (y.size + B * ref) if k > 1 else 0  # the reference column's codes too
            if amax is not None:
                counts.dig_in += x.size   # x / amax (2^mb - 1), rounded: the digital input quantiser
                counts.dig_out += y.size  # y * amax
        return y if amax is None else y * amax.astype(np.float32)

    def _parts(self, direction: str) -> list:
        return self._fwd_parts if direction == "forward" else self._bwd_parts

    def _slice_conductance(self, direction: str, n_slices: int) -> list:
        """Conductance per input line of each of the ``n_slices`` weight slices (its devices — G+_k and G-_k,
        or the one device of an offset-encoded slice and its reference cell — summed over the cells a driver
        reaches), uS float32, from the conductances as last read or those the mapping would write."""
        key = direction + "/slices"
        gs = self._gline.get(key)
        if gs is None:
            G = self._G if self._G is not None else _map.to_conductances(self._w, self.config.mapping)[0]
            d = G.shape[0] // n_slices  # devices per slice
            axis = 1 if direction == "forward" else 2
            gs = [G[k * d:(k + 1) * d].sum(axis=(0, axis), dtype=np.float64).astype(np.float32)
                  for k in range(n_slices)]
            if direction == "forward" and self._reference():  # the reference column's cells on every row
                Gref = self._Gref if self._Gref is not None else _map.reference_conductances(self.config.mapping,
                                                                                             self.in_size)
                gs = [(g + Gref[k, 0]).astype(np.float32) for k, g in enumerate(gs)]
            self._gline[key] = gs
        return gs

    def line_conductance(self, direction: str = "forward") -> np.ndarray:
        """Conductance per input line of a read in uS, float32: g_j = sum of G over every cell (all devices)
        that input line j drives — (in,) for the forward, (out,) for the transposed read.

        From the conductances as last read (``program``/``drift``: programmed and drifted) or, before
        ``program``, those the mapping would write. This is the ideal array, used for the array energy
        (``aimc.cost.counters``); a circuit model of the wired array hooks in here by returning the
        conductance each line's driver really sees.
        """
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        g = self._gline.get(direction)
        if g is None:
            axis = 0 if direction == "forward" else 1
            if self._G is not None:
                g = self._G.sum(axis=(0, axis + 1), dtype=np.float64).astype(np.float32)
            else:
                g = _map.line_conductance(self._w, self.config.mapping, axis)
            self._gline[direction] = g
        return g

    def _refresh_out(self) -> None:
        f = self._scale if self.config.mapping.weight_scaling_omega > 0 else None
        if self._compensate and self._alpha is not None:
            f = (self._alpha * f if f is not None else np.broadcast_to(self._alpha, (self.out_size,))).astype(np.float32)
        self._out = f

    # ------------------------------------------------------------------ writes
    def set_weights(self, W) -> None:
        """Exact write of W (no device physics): the state during hardware-aware training."""
        W = check_matrix(W, self.shape)
        self._scale = _map.column_scales(W, self.config.mapping)
        self._G = self._map_params = self._device = self._time = None
        self._ref_device = self._Gref = None
        self._comp_kind, self._comp_ref, self._alpha = DriftCompensation.NONE, None, None
        self._clear_calibration()
        m = self.config.mapping
        # the per-line conductances for the cost counters, taken in the write's sweep; the transposed read's
        # too when the adapters read it (backward_ideal False), else when a backward read first needs it
        w, gline = _map.write_weights(W, self._scale if m.weight_scaling_omega > 0 else None, m,
                                      backward=not self.config.backward_ideal)
        self._set_normalised(w)
        self._gline.update(gline)
        self._refresh_out()

    def device_model(self):
        """The inference device model of ``config.inference`` (None = ideal conductances)."""
        if self._model is None and self.config.inference is not None:
            self._model = build_device_model(self.config.inference, self.config.mapping)
        return self._model

    def program(self, W) -> None:
        """Physical write of W at t = 0: column scales, mapping, device physics drawn once, read at t = 0.

        With ``config.inference`` the device model draws programming noise (and program-and-verify, drift
        exponents, faults) once for every device slice independently; the drift-compensation reference is
        read out right after. Randomness: the tile's stream (same seed => same chip, any thread count).
        """
        W = check_matrix(W, self.shape)
        cfg = self.config
        scale = _map.column_scales(W, cfg.mapping)
        wn = W / scale[:, None]
        g_target, params = _map.to_conductances(wn, cfg.mapping)
        device = DeviceArray.program(self.device_model(), g_target, self.stream, fused=self._fused)
        # the reference column: its cells programmed by the same device model, after the weights' cells
        self._ref_device = None if not self._reference() else DeviceArray.program(
            self.device_model(), _map.reference_conductances(cfg.mapping, self.in_size), self.stream,
            fused=self._fused)
        self._scale, self._map_params, self._device = scale, params, device
        self._time = 0.0
        self._clear_calibration()
        self._comp_kind = cfg.inference.compensation if cfg.inference is not None else DriftCompensation.NONE
        self._comp_ref = self._alpha = None
        self._read_at(0.0)
        if self._comp_kind != DriftCompensation.NONE:
            cur = self._readout(wn)
            if self._comp_kind == DriftCompensation.GLOBAL_EXACT:
                self._comp_ref = compensation_readout(wn.T, self._comp_kind)
            else:
                self._comp_ref = cur
            self._alpha = (self._comp_ref / cur).astype(np.float32)
        self._refresh_out()

    def drift(self, t) -> None:
        """Move to t seconds after programming: read the array (drift + fresh read noise), re-compensate.

        ``t`` must be a finite number >= the tile's current time (``tile.time``); an error otherwise.
        """
        t = check_time(t)
        if self._device is None:
            raise RuntimeError("tile is not programmed: call program(W) before drift(t)")
        if t < self._time:
            raise ValueError(f"t = {t} s is earlier than the tile's clock ({self._time} s): drift only moves "
                             f"forward in time; call program(W) again to restart at t = 0")
        self._device.check_time(t)
        self._time = t
        self._read_at(t)
        if self._comp_kind != DriftCompensation.NONE:
            self._alpha = (self._comp_ref / self._readout()).astype(np.float32)
        self._refresh_out()

    def _read_at(self, t: float) -> None:
        self._G = self._device.read(t, self.stream)
        if self._ref_device is not None:  # read in the same pass as the weights: drift and read noise alike
            self._Gref = self._ref_device.read(t, self.stream)
        self._set_normalised(_map.from_conductances(self._G, self._map_params, self.config.mapping, self._Gref))

    def _readout(self, wn=None) -> np.ndarray:
        """Compensation readout: one-hot inputs through the noisy forward (no digital scales).

        With the programmed weights ``wn`` (at program time) it warns when the ADC resolves fewer than half of
        the nonzero weights (coarse ADC: each one-hot output is a single weight, below half a step reads 0),
        because the compensation factor is then unreliable."""
        eye = np.eye(self.in_size, dtype=np.float32)
        Y = self._read(self._fwd_parts, eye, "forward")
        if wn is not None:
            nz = wn.T != 0
            resolved = float(np.mean(Y[nz] != 0)) if nz.any() else 1.0
            if resolved < 0.5:
                warnings.warn(f"tile {self.tile_id!r}: the drift-compensation readout (one-hot inputs through the "
                              f"{self.config.forward.out_bits}-bit ADC) resolves only {100 * resolved:.0f} % of the "
                              f"nonzero weights, so the compensation factor is unreliable: use more ADC bits or "
                              f"compensation 'none'", RuntimeWarning, stacklevel=3)
        return compensation_readout(Y, self._comp_kind)

    # ------------------------------------------------------------------ calibration
    def _clear_calibration(self) -> None:
        self._cal_inp = self._cal_adc = self._adc = self._cal_pending = self._cal_sample = None

    def _set_calibration(self, inp, adc) -> None:
        """Set the calibrated DAC range and ADC ranges: (1,) for the tile, (out,) per column, or with weight
        slices (n_slices, 1) / (n_slices, out): a range per slice (each slice is its own ADC read)."""
        self._cal_inp = None if inp is None else float(inp)
        self._cal_adc = None if adc is None else np.ascontiguousarray(np.atleast_1d(adc), np.float32)
        io = self.config.forward
        if self._cal_adc is None:
            self._adc = None
        elif self._cal_adc.ndim == 2:
            self._adc = [adc_arrays(io, row) for row in self._cal_adc]
        else:
            self._adc = adc_arrays(io, self._cal_adc)

    def _calibration_cfg(self, cal) -> CalibrationConfig:
        cal = _calibration_method(self, f"tile {self.tile_id!r}", cal)
        if self.config.forward.is_perfect:
            raise ValueError(f"tile {self.tile_id!r}: a perfect forward (is_perfect) has no converters to calibrate")
        return cal

    def adc_transfer(self):
        """The forward ADCs' transfer as the range search uses it: (y, bounds) -> ADC outputs of analog outputs
        y (S x out, ADC units) at ranges ``bounds`` through this chip's drawn converters (``adc_convert``);
        None when the ADC has no drawn errors (the uniform quantiser of the config)."""
        io = self.config.forward
        if not io.adc_drawn:
            return None
        conv = self._conv_of("forward")
        return lambda y, bounds: adc_convert(y, io, conv, bounds)

    def analog_outputs(self, x, *, inp_range: float | None = None) -> np.ndarray:
        """The tile's analog outputs before the ADC (ADC units; B x out) for inputs x (B x in): the forward
        with no ADC, the given static DAC range (None: the config's noise management), noise included."""
        x, _ = check_batch(x, self.in_size, "x")
        return mvm(self._fwd, x, self.config.forward, self.stream, inp_range=inp_range, adc=NO_ADC, raw=True)

    def analog_reads(self, x, *, inp_range: float | None = None) -> list[np.ndarray]:
        """What each ADC read sees: per weight slice, the analog outputs before the ADC (ADC units) of every
        input cycle of x stacked, a list of (cycles * B, out) arrays (one array for an unsliced tile; for a
        plain tile the same numbers as ``analog_outputs``). The DAC's drawn errors apply, the ADC's do not."""
        x, _ = check_batch(x, self.in_size, "x")
        io, conv = self.config.forward, self._conv_of("forward")
        cycles, _ = self._cycles(x)
        return [np.concatenate([mvm(view, xc, io, self.stream, inp_range=inp_range, adc=NO_ADC, raw=True, conv=conv)
                                for _, xc in cycles]) for _, view in self._fwd_parts]

    def calibrate(self, x, cal: CalibrationConfig | None = None, *, keep_sample: bool = False) -> dict:
        """Choose the static DAC range and the ADC ranges of the programmed tile from inputs x (rows, in),
        by ``cal`` (default ``config.calibration``; see ``aimc.calibration``). Returns the ranges and the
        fraction of calibration inputs / analog outputs beyond them. The ranges hold until ``program``.
        """
        cal = self._calibration_cfg(cal)
        x = _cal.check_calibration_inputs(x, self.in_size)
        r = _cal.input_range(x, cal)
        if r is not None and self.config.mapping.input_bits:
            r = 1.0  # bit-serial: the DAC reads digital cycle levels in [-1, 1] (Tile._cycles), its full scale
        idx = _cal.rows_for(x.shape[0], cal.max_rows)
        xs = x if idx is None else np.ascontiguousarray(x[idx])
        ys = self.analog_reads(xs, inp_range=r)
        b = _slice_bounds([_cal.adc_bound(y, cal, self.config.forward, cal.out_granularity,
                                          self.config.forward.columns_per_adc, self.adc_transfer()) for y in ys], cal)
        self._set_calibration(r, b)
        self._cal_sample = ys if keep_sample else None
        return self._cal_report(x, ys)

    def _cal_report(self, x, ys) -> dict:
        r, b = self._cal_inp, self._cal_adc
        io = self.config.forward
        clipped = 0
        for k, y in enumerate(ys):
            bound = (b[k] if b.ndim == 2 else b) if b is not None else np.float32(io.out_bound or np.inf)
            clipped += int(np.count_nonzero(np.abs(y) > bound))
        return {"input_range": r, "adc_range": None if b is None else b.tolist(),
                "input_clip": float(np.mean(np.abs(x) > r)) if r is not None else 0.0,
                "adc_clip_t0": clipped / sum(y.size for y in ys)}

    @property
    def calibration(self) -> dict | None:
        """{"input_range": r or None, "adc_range": float32 array or None}; None if never calibrated."""
        if self._cal_inp is None and self._cal_adc is None:
            return None
        return {"input_range": self._cal_inp, "adc_range": self._cal_adc}

    def clip_counts(self) -> tuple[int, int]:
        """(outputs beyond the ADC range, ADC conversions) of the forward reads since the last reset."""
        return int(self._clip[0]), int(self._clip[1])

    def reset_clip_counts(self) -> None:
        self._clip[:] = 0

    # ------------------------------------------------------------------ state
    @property
    def time(self) -> float | None:
        """Seconds since programming (0 right after ``program``); None if the tile was never programmed."""
        return self._time

    @property
    def programmed(self) -> bool:
        return self._device is not None

    @property
    def cells(self):
        """The drawn-once device state (``device_models.inference.ProgrammedCells``, arrays (devices, out,
        in)); None before ``program``."""
        return None if self._device is None else self._device.cells

    @property
    def compensate(self) -> bool:
        """Whether the drift-compensation factor multiplies the forward output (eval mode); default True."""
        return self._compensate

    @compensate.setter
    def compensate(self, on: bool) -> None:
        self._compensate = bool(on)
        self._refresh_out()

    @property
    def compensation_alpha(self):
        """The current drift-compensation factor (0-d array, or (out,) per column); None if off."""
        return self._alpha

    # ------------------------------------------------------------------ chip images (aimc.chip)
    def _get_state(self) -> tuple[dict, dict]:
        """(meta, arrays): everything that makes this tile's chip state, as JSON-able meta + numpy arrays."""
        meta = {"tile_id": self.tile_id, "shape": list(self.shape), "stream": self.stream.state(),
                "time": self._time, "programmed": self.programmed, "map_params": self._map_params,
                "compensation": self._comp_kind.value,
                "engine": None if self._device is None else ("fused" if self._device.fused else "numpy")}
        arrays = {"scale": self._scale}
        for key in ("forward", "backward"):  # converter errors (drawn once per chip)
            draws = self._conv_of(key)
            if draws is not None:
                arrays.update({_conv_name(key, k): v for k, v in draws.items()})
        if self._device is None:
            arrays["w"] = self._w
        else:
            arrays.update(self._device.arrays())
            arrays["G"] = self._G
            if self._ref_device is not None:
                arrays.update({"ref_" + k: v for k, v in self._ref_device.arrays().items()})
                arrays["ref_G"] = self._Gref
            if self._comp_ref is not None:
                arrays["comp_ref"] = np.asarray(self._comp_ref, np.float32)
                arrays["comp_alpha"] = np.asarray(self._alpha, np.float32)
            if self._cal_inp is not None:
                arrays["cal_input_range"] = np.asarray(self._cal_inp, np.float32)
            if self._cal_adc is not None:
                arrays["cal_adc_range"] = self._cal_adc
        return meta, arrays

    def _set_state(self, meta: dict, arrays: dict) -> None:
        """Restore a state from ``_get_state`` (shapes and config were checked by the caller)."""
        from .rng import Stream
        st = meta["stream"]
        stream = Stream(st["seed"], st["stream_id"], st["call"])
        scale = np.ascontiguousarray(arrays["scale"], np.float32)
        self._conv = {}
        for key in ("forward", "backward"):
            draws = {k: np.ascontiguousarray(arrays[_conv_name(key, k)]) for k in CONV_KEYS
                     if _conv_name(key, k) in arrays}
            if draws:
                self._conv[key] = draws
        self._refcol = image_has_reference(self, meta, arrays)
        self._ref_device = self._Gref = None
        if not meta["programmed"]:
            w = np.ascontiguousarray(arrays["w"], np.float32)
            self._G = self._map_params = self._device = self._time = None
            self._comp_kind, self._comp_ref, self._alpha = DriftCompensation.NONE, None, None
            self._clear_calibration()
            self._scale = scale
            self._set_normalised(w)
        else:
            cells = {k: np.ascontiguousarray(arrays[k]) for k in ("g_target", "g_prog", "nu", "stuck", "z")
                     if k in arrays}
            device = DeviceArray.from_arrays(self.device_model(), cells, fused=meta["engine"] == "fused")
            self._scale, self._map_params, self._device = scale, dict(meta["map_params"]), device
            self._time = float(meta["time"])
            self._G = np.ascontiguousarray(arrays["G"], np.float32)
            if self._refcol:
                ref = {k: np.ascontiguousarray(arrays["ref_" + k]) for k in ("g_target", "g_prog", "nu", "stuck", "z")
                       if "ref_" + k in arrays}
                self._ref_device = DeviceArray.from_arrays(self.device_model(), ref, fused=meta["engine"] == "fused")
                self._Gref = np.ascontiguousarray(arrays["ref_G"], np.float32)
            self._set_normalised(_map.from_conductances(self._G, self._map_params, self.config.mapping, self._Gref))
            self._comp_kind = DriftCompensation(meta["compensation"])
            if "comp_ref" in arrays:
                self._comp_ref = np.asarray(arrays["comp_ref"], np.float32)
                self._alpha = np.asarray(arrays["comp_alpha"], np.float32)
            else:
                self._comp_ref = self._alpha = None
            self._clear_calibration()   # images written before calibration existed hold none
            inp = arrays.get("cal_input_range")
            self._set_calibration(None if inp is None else float(np.asarray(inp).reshape(-1)[0]),
                                  arrays.get("cal_adc_range"))
        self.seed = stream.seed
        self.stream = stream
        self._refresh_out()

    def conductances(self) -> np.ndarray:
        """The conductances as last read (devices, out, in) in uS; an error before ``program``."""
        if self._G is None:
            raise RuntimeError("tile has no conductances: call program(W) first (set_weights is an exact, "
                               "non-physical write)")
        return self._G

    def reference_conductances(self) -> np.ndarray | None:
        """The reference column's conductances as last read (slices, 1, in) in uS (``offset_reference``
        'column' of an offset-encoded sliced tile), None for a tile without one; an error before ``program``."""
        self.conductances()
        return self._Gref

    # ------------------------------------------------------------------ reads
    def _plain(self) -> bool:
        """Whether the forward is one plain read: one weight slice at factor 1, no bit-serial inputs, no array
        circuit, no offset removal or reference column, no calibration pending."""
        return (self._cal_pending is None and self.config.mapping.input_bits == 0 and len(self._fwd_parts) == 1
                and self._fwd_parts[0][1] is self._fwd and self._fwd_parts[0][0] == 1.0
                and self._fwd.circuit is None and not self._offset["forward"] and not self._reference())

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self._cal_pending is not None:
            cal, self._cal_pending = self._cal_pending, None
            self.calibrate(x, cal, keep_sample=cal.out_granularity == CalibrationGranularity.LAYER)
        f = self._out
        if (self._plain() and shared_fusable(self.config.forward) and not isinstance(self._adc, list)
                and (f is None or (f.dtype == np.float32 and f.shape == (self.out_size,)))):
            # one read whose output stage also applies mvm's rescale and the digital factor (same values,
            # one sweep in place of two numpy passes over y)
            y = mvm_shared(self._fwd, [self.out_size], x, self.config.forward, [self.stream], [self.counts],
                           [self.line_conductance("forward")], [self._clip], inp_range=self._cal_inp,
                           adc=self._adc, col_scale=None if f is None else np.ascontiguousarray(f))
            if f is not None:
                self.counts.dig_comp += y.size
            return y
        y = self._read(self._fwd_parts, x, "forward", counts=self.counts, inp_range=self._cal_inp, adc=self._adc,
                       clip_counts=self._clip)
        if self._out is not None:
            y *= self._out
            self.counts.dig_comp += y.size
        return y

    def _backward(self, d: np.ndarray) -> np.ndarray:
        if self.config.mapping.weight_scaling_omega > 0:
            d = d * self._scale
            self.counts_backward.dig_comp += d.size
        return self._read(self._bwd_parts, d, "backward", counts=self.counts_backward)

    def read_weights(self) -> np.ndarray:
        """The weights the tile currently computes with (digital scales applied), float32 (out, in)."""
        return self._w * self._scale[:, None] if self.config.mapping.weight_scaling_omega > 0 else self._w.copy()


CONV_KEYS = ("gain", "offset", "caps", "comp", "inl", "dac")
REF_KEYS = ("ref_g_target", "ref_g_prog", "ref_nu", "ref_stuck", "ref_z", "ref_G")
"""Chip-image datasets of the reference column (``Tile._reference``): its drawn-once cells and conductances."""


def image_has_reference(tile: "Tile", meta: dict, arrays: dict) -> bool:
    """Whether a tile state (``Tile._get_state`` form) has a reference column: a programmed tile holds its
    cells (``ref_G``); an unprogrammed one has one if its config asks for it, unless the forward ADCs drawn
    for it cover only the weight columns (a chip image written before the reference column existed)."""
    if not tile.config.mapping.reference_column:
        return False
    if meta["programmed"]:
        return "ref_G" in arrays
    gain = arrays.get(_conv_name("forward", "gain"))
    return gain is None or gain.shape[0] == tile.out_size + 1


def _conv_name(direction: str, key: str) -> str:
    """Chip-image dataset of a drawn converter array: adc_<direction>_<key>, the DAC's dac_<direction>_levels."""
    return f"dac_{direction}_levels" if key == "dac" else f"adc_{direction}_{key}"


class _SliceCircuit:
    """The effective matrix of one weight slice k of a circuit: (G+_k - G-_k) / (g_max - g_min)."""

    linear = True

    def __init__(self, circuit, k: int, span: float, offset: bool = False):
        self.circuit, self.k, self.span, self.transposed = circuit, k, span, circuit.transposed
        self.offset = offset

    def effective(self) -> np.ndarray:
        E = self.circuit.effective_stack()
        if self.offset:  # offset encoding: one device per slice, read as it is (g_min removed digitally)
            return E[self.k] / np.float32(self.span)
        return (E[2 * self.k] - E[2 * self.k + 1]) / np.float32(self.span)


class _Stack:
    """The weight slices of one read direction stacked (slice k in rows k out .. (k + 1) out - 1), built from
    their views at the first fused read (``periphery.mvm_slices``); linear views only."""

    transposed = False
    linear = True

    def __init__(self, views: list):
        self.views = views

    def effective(self) -> np.ndarray:
        return np.concatenate([v.W for v in self.views], axis=0)


def _stacked(parts: list) -> WeightView | None:
    """A WeightView of the slices of ``parts`` stacked (built at its first read), or None when a slice solves
    its circuit per input (nonlinear cells: no matrix to stack)."""
    views = [v for _, v in parts]
    if any(v.circuit is not None and not v.circuit.linear for v in views):
        return None
    return WeightView(None, _Stack(views))


class TileArray(_Reads):
    """A weight matrix split into near-equal tiles of at most ``mapping.max_out`` x ``mapping.max_in``.

    Each tile has its own periphery (NM, BM, ADC) and random stream; partial outputs are summed
    digitally across input splits and concatenated across output splits (physics.md §2.7).
    """

    def __init__(self, out_size: int, in_size: int, config: TileConfig | str | None = None, seed: int = 0,
                 name: str = ""):
        self.out_size, self.in_size = _check_shape(out_size, in_size)
        self.config = as_config(config)
        self.seed = check_seed(seed)
        self.name = name
        m = self.config.mapping
        self.out_splits = _map.split_sizes(self.out_size, m.max_out)
        self.in_splits = _map.split_sizes(self.in_size, m.max_in)
        self._ro = np.concatenate([[0], np.cumsum(self.out_splits)])
        self._ci = np.concatenate([[0], np.cumsum(self.in_splits)])
        self.tiles = [[Tile(o, i, self.config, self.seed, f"{name}/tile({r},{c})")
                       for c, i in enumerate(self.in_splits)] for r, o in enumerate(self.out_splits)]
        self._partial = Counts()          # digital additions of partial sums across input splits
        self._partial_backward = Counts()

    def counts(self, direction: str = "forward") -> Counts:
        """The counts of all tiles of the array summed, with the digital partial-sum additions (``aimc.cost``)."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        fwd = direction == "forward"
        total = Counts() + (self._partial if fwd else self._partial_backward)
        for t in self.all_tiles():
            total += t.counts if fwd else t.counts_backward
        return total

    def reset_counts(self) -> None:
        """Zero the counts of every tile and of the partial sums."""
        self._partial.reset()
        self._partial_backward.reset()
        for t in self.all_tiles():
            t.counts.reset()
            t.counts_backward.reset()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_size, self.in_size)

    @property
    def grid(self) -> tuple[int, int]:
        return (len(self.out_splits), len(self.in_splits))

    def all_tiles(self):
        for row in self.tiles:
            yield from row

    def _blocks(self):
        for r, row in enumerate(self.tiles):
            for c, tile in enumerate(row):
                yield slice(self._ro[r], self._ro[r + 1]), slice(self._ci[c], self._ci[c + 1]), tile

    def set_weights(self, W) -> None:
        """Exact write of W into the tiles (see ``Tile.set_weights``)."""
        W = check_matrix(W, self.shape)
        for rs, cs, tile in self._blocks():
            tile.set_weights(W[rs, cs])

    def program(self, W) -> None:
        """Physical write of W into the tiles at t = 0 (see ``Tile.program``)."""
        W = check_matrix(W, self.shape)
        for rs, cs, tile in self._blocks():
            tile.program(np.ascontiguousarray(W[rs, cs]))

    def drift(self, t) -> None:
        """Move every tile to t seconds after programming (see ``Tile.drift``); checked before any tile moves."""
        t = check_time(t)
        if not self.programmed:
            raise RuntimeError(f"tile array {self.name!r} is not programmed: call program(W) before drift(t)")
        now = self.time
        if t < now:
            raise ValueError(f"t = {t} s is earlier than the clock of tile array {self.name!r} ({now} s): drift "
                             f"only moves forward in time; call program(W) again to restart at t = 0")
        for tile in self.all_tiles():
            tile._device.check_time(t)
        for tile in self.all_tiles():
            tile.drift(t)

    @property
    def programmed(self) -> bool:
        return all(t.programmed for t in self.all_tiles())

    @property
    def time(self) -> float | None:
        """Seconds since programming (the latest tile clock); None if not programmed."""
        times = [t.time for t in self.all_tiles()]
        return None if any(v is None for v in times) else max(times)

    @property
    def compensate(self) -> bool:
        """Whether drift compensation scales the forward output (eval mode); set on every tile."""
        return all(t.compensate for t in self.all_tiles())

    @compensate.setter
    def compensate(self, on: bool) -> None:
        for t in self.all_tiles():
            t.compensate = on

    # ------------------------------------------------------------------ calibration (aimc.calibration)
    def _cal_of(self, cal) -> CalibrationConfig:
        return _calibration_method(self, f"tile array {self.name!r}", cal)

    def calibrate(self, x, cal: CalibrationConfig | None = None) -> dict:
        """Calibrate every tile on its slice of the inputs x (rows, in) (``Tile.calibrate``); with
        ``out_granularity`` 'layer' one ADC range for all tiles. Returns ``calibration_report()``."""
        cal = self._cal_of(cal)
        x = _cal.check_calibration_inputs(x, self.in_size, f"calibration inputs of {self.name or 'the array'!r}")
        layer = cal.out_granularity == CalibrationGranularity.LAYER
        for _, cs, tile in self._blocks():
            tile.calibrate(np.ascontiguousarray(x[:, cs]), cal, keep_sample=layer)
        return self.finish_calibration(cal)

    def calibrate_on_next_forward(self, cal: CalibrationConfig | None = None) -> None:
        """Let every tile calibrate itself on the inputs of its next forward read (used by
        ``aimc.convert.calibrate``: layer after layer, each on the outputs of the calibrated layers before
        it); ``finish_calibration`` completes it."""
        cal = self._cal_of(cal)
        for tile in self.all_tiles():
            tile._clear_calibration()
            tile._cal_pending = cal

    def finish_calibration(self, cal: CalibrationConfig | None = None) -> dict:
        """Complete a calibration: check every tile was calibrated; for 'layer' granularity set the one ADC
        range chosen from all tiles' analog outputs (the layer's outputs during the calibration pass were
        read with per-tile ranges). Returns ``calibration_report()``."""
        cal = self.config.calibration if cal is None else cal
        missing = [t.tile_id for t in self.all_tiles() if t._cal_pending is not None]
        if missing:
            for t in self.all_tiles():
                t._cal_pending = None
            raise RuntimeError(f"tile array {self.name!r}: tiles {missing[:4]} saw no input during calibration "
                               f"(the calibration forward never reached them)")
        if cal is not None and cal.out_granularity == CalibrationGranularity.LAYER:
            samples = [t._cal_sample for t in self.all_tiles()]
            if all(y is not None for y in samples):
                b = _slice_bounds([self._layer_bound([ys[k] for ys in samples], cal) for k in range(len(samples[0]))],
                                  cal)
                for t in self.all_tiles():
                    t._set_calibration(t._cal_inp, b)
        for t in self.all_tiles():
            t._cal_sample = None
        return self.calibration_report()

    def _layer_bound(self, ys: list, cal: CalibrationConfig) -> np.ndarray | None:
        """One ADC range (1,) for the layer from every tile's analog outputs ``ys`` (one array per tile); with
        drawn converters the ``mse`` search goes through each tile's own (``transfer_mse_bound``)."""
        tiles = list(self.all_tiles())
        if cal.out == OutputCalibration.MSE and self.config.forward.adc_drawn:
            b = _cal.transfer_mse_bound([(y, t.adc_transfer()) for y, t in zip(ys, tiles)],
                                        [np.zeros(y.shape[1], np.int64) for y in ys], 1)
            return np.maximum(b.astype(np.float64), 1e-6).astype(np.float32)
        return _cal.adc_bound(np.concatenate([y.reshape(-1) for y in ys])[:, None], cal, self.config.forward,
                              CalibrationGranularity.LAYER)

    def calibration_report(self) -> dict:
        """{"input_range": [per tile], "adc_range": [per tile: list or None]} in tile order (row-major)."""
        out = {"input_range": [], "adc_range": []}
        for t in self.all_tiles():
            c = t.calibration or {"input_range": None, "adc_range": None}
            out["input_range"].append(c["input_range"])
            out["adc_range"].append(None if c["adc_range"] is None else np.asarray(c["adc_range"], float).tolist())
        return out

    @property
    def calibrated(self) -> bool:
        return all(t.calibration is not None for t in self.all_tiles())

    def clip_counts(self) -> tuple[int, int]:
        """(outputs beyond the ADC ranges, ADC conversions) summed over the tiles since the last reset."""
        c = [t.clip_counts() for t in self.all_tiles()]
        return sum(a for a, _ in c), sum(b for _, b in c)

    def reset_clip_counts(self) -> None:
        for t in self.all_tiles():
            t.reset_clip_counts()

    def read_weights(self) -> np.ndarray:
        W = np.empty(self.shape, np.float32)
        for rs, cs, tile in self._blocks():
            W[rs, cs] = tile.read_weights()
        return W

    def read_work(self, batch: int) -> int:
        """Elements a ``batch``-row read touches in its largest tile (what ``aimc.threads.kernel_threads``
        weighs)."""
        return batch * (max(self.in_splits) + max(self.out_splits))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if len(self.tiles) == 1 and len(self.tiles[0]) == 1:
            return self.tiles[0][0]._forward(x)
        if len(self.in_splits) == 1:
            stack = self._shared_stack(0)
            if stack is not None:   # one output split after the other, all reading x: one fused read
                return self._forward_shared(0, stack, x)
        y = np.zeros((x.shape[0], self.out_size), np.float32)
        for c in range(len(self.in_splits)):
            cs = slice(self._ci[c], self._ci[c + 1])
            xc = np.ascontiguousarray(x[:, cs])
            stack = self._shared_stack(c)
            if stack is not None:
                y += self._forward_shared(c, stack, xc)
                continue
            for r, row in enumerate(self.tiles):
                y[:, self._ro[r]:self._ro[r + 1]] += row[c]._forward(xc)
        self._partial.dig_partial += x.shape[0] * self.out_size * (len(self.in_splits) - 1)
        return y

    def _shared_stack(self, c: int) -> WeightView | None:
        """The stacked weights (a WeightView, cached per weight version) of the tiles of input split ``c`` when
        they can be read as one (``periphery.mvm_shared``): two or more output splits, a periphery that
        ``shared_fusable`` allows, plain reads (one weight slice, no bit-serial inputs, no offset, no circuit,
        no calibration pending) and one calibrated input range and ADC range (or none) for all of them; else
        None (one ``Tile._forward`` per tile)."""
        if len(self.tiles) < 2 or self.config.mapping.input_bits != 0 or not shared_fusable(self.config.forward):
            return None
        col = [row[c] for row in self.tiles]
        t0 = col[0]
        for t in col:
            if not t._plain() or t._cal_inp != t0._cal_inp or not _same_adc(t._adc, t0._adc):
                return None
        views = tuple(t._fwd for t in col)
        cache = self.__dict__.setdefault("_stacks", {})
        e = cache.get(c)
        if e is None or any(a is not b for a, b in zip(e[0], views)):
            e = cache[c] = (views, WeightView(np.concatenate([v.W for v in views], axis=0)))
        return e[1]

    def _forward_shared(self, c: int, stack: WeightView, x: np.ndarray, col_add=None, row_add=None,
                        scratch=None) -> np.ndarray:
        """The tiles of input split ``c`` read x in one ``mvm_shared`` (B x out): the values of their
        ``Tile._forward`` side by side, digital output factors included, plus ``col_add``/``row_add``
        and ``scratch`` (``mvm_shared``'s)."""
        col = [row[c] for row in self.tiles]
        t0 = col[0]
        f = self._col_scale(col)
        fused = f is not None or all(t._out is None for t in col)
        y = mvm_shared(stack, self.out_splits, x, self.config.forward, [t.stream for t in col],
                       [t.counts for t in col], [t.line_conductance("forward") for t in col],
                       [t._clip for t in col], inp_range=t0._cal_inp, adc=t0._adc, col_scale=f,
                       col_add=col_add if fused else None, row_add=row_add if fused else None, scratch=scratch)
        for r, t in enumerate(col):
            if t._out is not None:
                if f is None:   # factors that are not float32: numpy's multiply, as Tile._forward does
                    y[:, self._ro[r]:self._ro[r + 1]] *= t._out
                t.counts.dig_comp += x.shape[0] * t.out_size
        if not fused:
            _add(y, col_add, row_add)
        return y

    def _forward_add(self, x: np.ndarray, col_add: np.ndarray | None, row_add: np.ndarray | None,
                     scratch: dict | None = None) -> np.ndarray:
        """``_forward(x)`` + ``col_add`` (float32 (out,)) + ``row_add`` (float32 C-contiguous (B, out)), added in
        this order (either may be None): an RNN step's hidden read with its bias and input part. A read of
        tiles that share their inputs adds them in its output-stage sweep (``periphery.mvm_shared``), with
        ``scratch`` (a dict kept by the caller between steps) its working arrays and its result are reused:
        the returned array is then overwritten by the next call with the same ``scratch``."""
        if len(self.in_splits) == 1 and len(self.tiles) > 1:
            stack = self._shared_stack(0)
            if stack is not None:
                return self._forward_shared(0, stack, x, col_add, row_add, scratch)
        y = self._forward(x)
        _add(y, col_add, row_add)
        return y

    def _col_scale(self, col: list) -> np.ndarray | None:
        """The digital output factors (``Tile._out``) of the tiles ``col`` side by side, float32 (out,) (1 where a
        tile has none; cached per set of factors), or None when no tile has one or one is not float32."""
        outs = tuple(t._out for t in col)
        if all(o is None for o in outs):
            return None
        e = self.__dict__.get("_col_scale_cache")
        if e is None or len(e[0]) != len(outs) or any(a is not b for a, b in zip(e[0], outs)):
            f = np.concatenate([np.ones(t.out_size, np.float32) if o is None else np.broadcast_to(o, (t.out_size,))
                                for t, o in zip(col, outs)])
            ok = all(o is None or o.dtype == np.float32 for o in outs)
            e = self._col_scale_cache = (outs, f if ok else None)
        return e[1]

    # ------------------------------------------------------------------ convolutions
    @property
    def fusable(self) -> bool:
        """Whether ``forward_patches`` reproduces ``forward`` of the patch matrix: ``periphery.fusable``, and
        every tile reads its plain weights (no weight slices, bit-serial inputs or array circuit) and no tile
        waits to calibrate on this read (calibrated ranges are read as ``forward`` reads them)."""
        if not fusable(self.config.forward) or self.config.mapping.input_bits != 0:
            return False
        return all(len(t._fwd_parts) == 1 and t._fwd_parts[0] == (1.0, t._fwd) and t._fwd.circuit is None
                   and t._cal_pending is None and (t._cal_inp is None or np.float32(t._cal_inp / self.config.forward.inp_bound) > 0)
                   for t in self.all_tiles())

    def forward_patches(self, xflat: np.ndarray, geo: np.ndarray, koff: np.ndarray, n_rows: int,
                        chunk: int | None = None) -> np.ndarray:
        """``_forward`` of a convolution's (n_rows x in) patch matrix without building it: (n_rows, out) float32.

        ``xflat``: the convolution's input (not padded), flat float32; ``geo`` (``periphery.patch_geometry``):
        where its patches lie (image size, output and input sizes, stride, zero padding, flat steps); ``koff``
        (int64 (3, in)): each patch column's flat offset and kernel row and column offsets
        (``kernels.periphery.patch_input_stage``; padding reads as 0). Rows go through the tiles
        in chunks of about ``chunk`` (default ``PATCH_CHUNK``) patch elements with reused buffers, so the working memory is bounded by
        the chunk. Element-wise stages give the values of ``_forward`` (same random counters per element);
        products agree within float32 rounding (``periphery.patch_pass``): BLAS may sum a chunk's dot products in
        another order, |dy| <= gamma_n sum_j |W_ij v_j| with gamma_n ~ n 2^-24 (Higham, Accuracy and Stability
        of Numerical Algorithms, 2002, §3.1), so an output moves by one ADC step only when it lies within that
        distance of a quantisation threshold (observed: no flip in three test convolutions, deploy config).
        Needs ``fusable``.
        """
        blocks = list(self._blocks())
        single = len(blocks) == 1
        rows = int(min(n_rows, max(64, (chunk or PATCH_CHUNK) // self.in_size)))
        io = self.config.forward
        ir = io.ir_drop > 0
        plan = []
        for rs, cs, tile in blocks:
            m_t, n_t = tile.shape
            o = tile._out  # the tile's digital output factors: in the output stage's sweep when float32 (out,)
            fold = (isinstance(o, np.ndarray) and o.dtype == np.float32 and o.shape == (m_t,)
                    and o.flags.c_contiguous)
            plan.append((rs, tile, np.ascontiguousarray(koff[:, cs], dtype=np.int64), draw_calls(tile.stream, io),
                         np.empty((rows, n_t), np.float32), np.empty((rows, m_t * (2 if ir else 1)), np.float32),
                         None if single else np.empty((rows, m_t), np.float32), o if fold else None))
        out = np.empty((n_rows, self.out_size), np.float32)
        for row0 in range(0, n_rows, rows):
            R = min(rows, n_rows - row0)
            yc = out[row0:row0 + R]
            if not single:
                yc[:] = 0.0
            for rs, tile, koff_t, calls, v, yin, ybuf, folded in plan:
                yt = yc if single else ybuf[:R]
                patch_pass(tile._fwd, xflat, geo, koff_t, row0, R, io, calls, v, yin, yt, tile.counts,
                           tile.line_conductance("forward"), tile._clip, inp_range=tile._cal_inp, adc=tile._adc,
                           col_scale=folded)
                if tile._out is not None:
                    if folded is None:
                        yt *= tile._out
                    tile.counts.dig_comp += yt.size
                if not single:
                    yc[:, rs] += yt
        self._partial.dig_partial += n_rows * self.out_size * (len(self.in_splits) - 1)
        return out

    def _backward(self, d: np.ndarray) -> np.ndarray:
        if len(self.tiles) == 1 and len(self.tiles[0]) == 1:
            return self.tiles[0][0]._backward(d)
        x = np.zeros((d.shape[0], self.in_size), np.float32)
        for rs, cs, tile in self._blocks():
            x[:, cs] += tile._backward(np.ascontiguousarray(d[:, rs]))
        self._partial_backward.dig_partial += d.shape[0] * self.in_size * (len(self.out_splits) - 1)
        return x


def _add(y: np.ndarray, col_add, row_add) -> None:
    if col_add is not None:
        y += col_add
    if row_add is not None:
        y += row_add


def _same_adc(a, b) -> bool:
    """Whether two tiles' calibrated ADC ranges (``Tile._adc``: None or (steps, bounds)) read alike: both
    the config's, or both one range of the same value (per-column ranges: not shared)."""
    if a is None or b is None:
        return a is b
    return a[1].shape == (1,) and b[1].shape == (1,) and a[0][0] == b[0][0] and a[1][0] == b[1][0]


def _slice_bounds(bs: list, cal: CalibrationConfig):
    """The ADC ranges of one tile from one ``adc_bound`` result per weight slice: that result for an unsliced
    tile, else (n_slices, 1) or (n_slices, out), power-of-two apart by ``cal.slice_ranges``
    (``calibration.pow2_apart``); None when the ranges stay the config's."""
    if bs[0] is None:
        return None
    return bs[0] if len(bs) == 1 else np.stack(_cal.pow2_apart(bs, cal))


def _calibration_method(obj, what: str, cal) -> CalibrationConfig:
    """``cal`` or the config's calibration method of a programmed Tile/TileArray ``obj``; clear errors else."""
    cal = obj.config.calibration if cal is None else cal
    if not isinstance(cal, CalibrationConfig):
        raise ValueError(f"{what}: no calibration method: set TileConfig.calibration or pass a "
                         f"CalibrationConfig (got {type(cal).__name__})")
    if not obj.programmed:
        raise RuntimeError(f"{what} is not programmed: calibrate the programmed chip (call program(W) first)")
    return cal
