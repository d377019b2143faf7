"""The torch backend: the tile periphery, drift reads and the HWA product on torch tensors, on the device the
model lives on (CPU torch, CUDA). The Numba path (``aimc.core.periphery``, ``aimc.kernels``) stays the reference;
this module re-expresses the same stages with torch ops, reading the same config tree (``TileConfig``).

Selection: ``AnalogModule.backend`` ('auto' | 'numba' | 'torch'; ``aimc.nn.set_backend(model, ...)``).
'auto' runs torch when the module's weight is on a non-CPU device (``model.to("cuda")``), Numba otherwise.

What runs here, per tile pass (``mvm``; the order and formulas of ``aimc.core.periphery.mvm``, physics.md §1.2):
noise management (none / abs_max / max / constant, ``nm_thres``) or a calibrated static DAC range -> DAC
(round half to even or stochastic) -> clip -> input noise -> product(s) (W v; |W| v^2 for PCM read noise;
[W; W*pos] v and |W| |v| for the simple IR drop) -> IR drop -> weight noise before the nonlinearity ->
nonlinearity -> output noise (+ additive / PCM weight noise in output space) -> ADC (config or calibrated
per-tile / per-column ranges; deterministic or stochastic) -> clip flags -> iterative bound management ->
digital rescale. Drift: the read of programmed power-law cells (``DeviceArray`` with the fused engine: pcm,
hermes, state-independent, lookup-table) and the compensation readout. HWA: weight modifiers, input ranges,
output scales (``aimc.train.hwa``; its torch product is ``aimc.train.hwa.torch_backend``, built on this module).

Not supported here (a ``TorchBackendUnsupported`` names the stage): the circuit solve (``ArrayConfig.model``
'circuit'), weight slicing (``MappingConfig.kind`` 'sliced'), bit-serial inputs (``input_bits``), converters
with drawn errors (``IOConfig.adc`` 'sar' / 'ramp', ``adc_gain_std``, ``adc_offset_std``,
``dac_unit_mismatch``). Run by the Numba path
instead (a host round trip, documented in aimc/nn/README.md): programming, calibration passes, drift of
non-power-law cards, the PCM_NOISE weight modifier. The cost counters (``tile.counts``, ``clip_counts``)
are recorded by the Numba path only.

Randomness: a ``torch.Generator`` per tile on the tile's device, seeded from (tile seed, tile id); torch's
streams differ from the Philox streams of the Numba path, so noisy values differ from it (same
distributions), but the same seed gives the same values on the same device and torch build. A mirror moved
to another device gets a fresh generator from the same seed.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.config import (BoundManagement, DriftCompensation, MappingKind, NoiseManagement, TileConfig,
                      WeightNoiseType, WireModel)
from ..core.rng import Stream

BACKENDS = ("auto", "numba", "torch")
_TINY = float(np.finfo(np.float32).tiny)


class TorchBackendUnsupported(NotImplementedError):
    """A stage the torch backend does not implement; the message names it and the way out."""


def _unsupported(stage: str, where: str) -> TorchBackendUnsupported:
    return TorchBackendUnsupported(f"{where}: {stage} is not supported by the torch backend; use backend='numba' "
                                   f"(aimc.nn.set_backend(model, 'numba')) on CPU for this configuration")


def check_supported(config: TileConfig, where: str = "tile") -> None:
    """Raise ``TorchBackendUnsupported`` naming the first stage of ``config`` the torch backend lacks."""
    if config.array.model == WireModel.CIRCUIT:
        raise _unsupported("the circuit solve of the array (ArrayConfig.model = 'circuit')", where)
    if config.mapping.kind == MappingKind.SLICED:
        raise _unsupported("weight slicing (MappingConfig.kind = 'sliced')", where)
    if config.mapping.input_bits > 0:
        raise _unsupported("bit-serial inputs (MappingConfig.input_bits > 0)", where)
    for direction in ("forward", "backward"):
        io = getattr(config, direction)
        if io.adc_drawn:
            what = {"sar": "the SAR ADC", "ramp": "the ramp ADC"}.get(io.adc.value, "ADC gain/offset errors")
            raise _unsupported(f"{what} of the {direction} periphery (IOConfig.adc = {io.adc.value!r}, "
                               f"adc_gain_std = {io.adc_gain_std}, adc_offset_std = {io.adc_offset_std})", where)
        if io.dac_drawn:
            raise _unsupported(f"DAC unit mismatch of the {direction} periphery (IOConfig.dac_unit_mismatch = "
                               f"{io.dac_unit_mismatch})", where)


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def generator_for(seed: int, stream_id: str, device) -> torch.Generator:
    """A torch generator on ``device`` seeded from (seed, stream id) (the Philox key of ``aimc.rng.Stream``)."""
    k0, k1 = Stream(seed, stream_id).key
    g = torch.Generator(device=device)
    g.manual_seed(((int(k1) << 32) | int(k0)) & ((1 << 63) - 1))
    return g


def _f32(v) -> float:
    """A Python float holding the float32 value of v (how the kernels see a float64 config value)."""
    return float(np.float32(v))


def _inv32(step: float) -> float:
    """float32(1 / float32(step)) computed in float64, as the kernels compute their inverse step."""
    return float(np.float32(1.0 / float(np.float32(step)))) if step > 0 else 0.0


# ============================================================================================ one tile pass

class View:
    """A weight matrix W (out x in) as one read direction sees it, with cached derived tensors (as
    ``aimc.core.periphery.WeightView``): |W| (PCM read noise, IR-drop load) and [W; W*pos] (IR drop)."""

    __slots__ = ("W", "_absW", "_Wpos")

    def __init__(self, W: torch.Tensor):
        self.W = W
        self._absW = None
        self._Wpos = None

    @property
    def absW(self) -> torch.Tensor:
        if self._absW is None:
            self._absW = self.W.abs()
        return self._absW

    @property
    def Wpos(self) -> torch.Tensor:
        if self._Wpos is None:
            n = self.W.shape[1]
            j = torch.arange(n, dtype=torch.float32, device=self.W.device) / _f32(n)
            pos = 1.0 - (1.0 - j) ** 2
            self._Wpos = torch.cat([self.W, self.W * pos[None, :]], dim=0)
        return self._Wpos


def nm_alpha(x: torch.Tensor, io) -> torch.Tensor:
    """Noise-management scale per row (``kernels.periphery.nm_alpha``)."""
    B = x.shape[0]
    kind, thres = io.noise_management, _f32(io.nm_thres)
    if kind == NoiseManagement.NONE:
        return torch.ones(B, dtype=torch.float32, device=x.device)
    if kind == NoiseManagement.CONSTANT:
        return torch.full((B,), thres if thres > 0 else 1.0, dtype=torch.float32, device=x.device)
    if x.shape[1] == 0:
        a = torch.full((B,), -math.inf if kind == NoiseManagement.MAX else 0.0, device=x.device)
    elif kind == NoiseManagement.MAX:
        a = x.amax(dim=1)
    else:
        a = torch.linalg.vector_norm(x, math.inf, dim=1)   # max |x| in one pass
    if thres > 0:
        a = torch.where(a > thres, torch.full_like(a, thres), a)
    return a


def quantise_(v: torch.Tensor, step: float, sto: bool, gen) -> torch.Tensor:
    """In place: rint(v/step)*step (half to even) or stochastic rint(v/step + U - 0.5)*step; step 0 = none
    (physics.md §1.4; the kernels' arithmetic: v * float32(1/step), then * step)."""
    if step <= 0:
        return v
    s, inv = _f32(step), _inv32(step)
    v.mul_(inv)
    if sto:
        v.add_(torch.rand(v.shape, generator=gen, dtype=torch.float32, device=v.device)).sub_(0.5)
    return v.round_().mul_(s)


def quantise(v: torch.Tensor, step: float, sto: bool, gen) -> torch.Tensor:
    """``quantise_`` on a copy."""
    return quantise_(v.clone(), step, sto, gen)


def _additive(io) -> bool:
    return io.w_noise > 0 and io.w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT


def input_stage(x: torch.Tensor, scale: torch.Tensor, io, gen):
    """(v, v2): v = clip(Q(x / scale), +-inp_bound) + inp_noise xi and v2 = sum_j v^2 per row, computed only
    when additive weight noise needs it (else None) (``kernels.periphery.input_stage``)."""
    v = x * (1.0 / scale)[:, None]
    quantise_(v, io.inp_step, io.inp_sto_round, gen)
    b = _f32(io.inp_bound)
    v.clamp_(-b, b)
    if io.inp_noise > 0:
        v.add_(torch.randn(v.shape, generator=gen, dtype=torch.float32, device=v.device), alpha=_f32(io.inp_noise))
    return v, ((v * v).sum(dim=1) if _additive(io) else None)


def noise_sigmas(io, v2):
    """(nl, sigma^2 of the output noise (a float, or per row with additive weight noise), sigma of the weight
    noise drawn before the nonlinearity or None, whether weight noise comes first)
    (``aimc.core.periphery._noise_sigmas``: weight noise folds into the output noise unless a nonlinearity
    separates them)."""
    sig2 = _f32(io.out_noise) ** 2
    nl = io.out_nonlinearity / (io.out_bound if io.out_bound > 0 else 1.0)
    w_first = nl > 0 and io.w_noise > 0
    sw = None
    if _additive(io):
        sw2 = _f32(_f32(io.w_noise) ** 2) * v2   # iid weight noise == one normal per output, sigma ||v||
        if w_first:
            sw = torch.sqrt(sw2)
        else:
            sig2 = sw2 + _f32(sig2)
    return nl, sig2, sw, w_first


def output_stage(yin: torch.Tensor, m: int, n: int, v2, s_el, a_mat, io, gen, steps, bounds, *,
                 flags: bool = True, counts: bool = False):
    """(y, clip flag per row or None, clipped outputs per row or None) from the product yin (overwritten)
    (``kernels.periphery.output_stage``): IR drop -> weight noise first (with a nonlinearity) -> nonlinearity
    -> output (+ weight) noise -> ADC -> clip. ``steps``/``bounds``: floats (one ADC range) or (out,)
    tensors (calibrated per column), see ``adc_tensors``; ``s_el`` = |W| v^2 (PCM read noise) and ``a_mat`` =
    |W| |v| (IR drop) or None; ``flags``/``counts``: compute the clip flags (bound management) / counts."""
    dev = yin.device
    if io.ir_drop > 0:
        # y = W v - ir_drop a (0.5 - 0.2 a + 0.05 a^2) (W*pos) v, a = scale |W| |v|, in the kernel's order of
        # operations ((ir_drop a) P) ypos with P = (0.5 - 0.2 a) + (0.05 a) a, in place (two temporaries)
        a = a_mat.mul_(_f32(n / io.ir_drop_g_ratio))
        p = (a * 0.2).neg_().add_(0.5)
        p.add_((a * 0.05).mul_(a))
        y = yin[:, :m].sub_(a.mul_(_f32(io.ir_drop)).mul_(p).mul_(yin[:, m:2 * m]))
    else:
        y = yin if yin.shape[1] == m else yin[:, :m]
    nl, sig2, sw, w_first = noise_sigmas(io, v2)
    pcm = s_el is not None
    w2 = _f32(_f32(io.w_noise) ** 2) if pcm else 0.0

    def normal():
        return torch.randn(y.shape, generator=gen, dtype=torch.float32, device=dev)
    if w_first:
        y.addcmul_(torch.sqrt(s_el.mul_(w2)) if pcm else sw[:, None], normal())
    if nl > 0:
        y = y / (1.0 + (_f32(nl) * y).abs())
    if pcm and not w_first:
        y.addcmul_(torch.sqrt(s_el.mul_(w2).add_(sig2)), normal())
    elif isinstance(sig2, torch.Tensor):
        y.addcmul_(torch.sqrt(sig2)[:, None], normal())
    elif sig2 > 0:
        y.add_(normal(), alpha=math.sqrt(sig2))
    test_neg = io.bm_test_negative_bound
    if not isinstance(steps, torch.Tensor):
        quantise_(y, steps, io.out_sto_round, gen)
        bd = bounds
        if bd <= 0:
            return y, (torch.zeros(y.shape[0], dtype=torch.bool, device=dev) if flags else None), \
                (torch.zeros(y.shape[0], dtype=torch.int32, device=dev) if counts else None)
        flag = cnt = None
        if flags:
            flag = y.amax(dim=1) > bd
            if test_neg:
                flag |= y.amin(dim=1) < -bd
        if counts:
            cnt = (y.abs() > bd).sum(dim=1, dtype=torch.int32)
        return y.clamp_(-bd, bd), flag, cnt
    # calibrated per-column ADC ranges (aimc.calibration): steps/bounds (out,) tensors
    st, bd = steps, bounds
    q = st > 0
    shift = torch.rand(y.shape, generator=gen, dtype=torch.float32, device=dev) - 0.5 \
        if io.out_sto_round else 0.0
    safe = torch.where(q, st, torch.ones_like(st))
    y = torch.where(q, torch.round(y / safe + shift) * safe, y)
    hb = bd > 0
    hi, lo = (y > bd) & hb, (y < -bd) & hb
    flag = (hi.any(dim=1) | (lo.any(dim=1) if test_neg else False)) if flags else None
    cnt = (hi | lo).sum(dim=1, dtype=torch.int32) if counts else None
    y = torch.where(hb, torch.minimum(torch.maximum(y, -bd), bd), y)
    return y, flag, cnt


def adc_tensors(io, bounds, device) -> tuple:
    """(steps, bounds) of the ADC (``aimc.core.periphery.adc_arrays``): Python floats (the float32 values) for one
    range of the whole tile, float32 tensors (out,) on ``device`` for per-column ranges."""
    from ..core.periphery import adc_arrays
    s, b = adc_arrays(io, bounds)
    if s.shape[0] == 1:
        return float(s[0]), float(b[0])
    return torch.from_numpy(s).to(device), torch.from_numpy(b).to(device)


def one_pass(view: View, x: torch.Tensor, scale: torch.Tensor, io, gen, steps, bounds, flags: bool):
    """One analog read of the rows of x (scaled by ``scale``): (y, clip flag per row or None)."""
    v, v2 = input_stage(x, scale, io, gen)
    m, n = view.W.shape
    pcm = io.w_noise > 0 and io.w_noise_type == WeightNoiseType.PCM_READ
    ir = io.ir_drop > 0
    yin = v @ (view.Wpos if ir else view.W).T
    s_el = (v * v) @ view.absW.T if pcm else None
    a_mat = v.abs_() @ view.absW.T if ir else None   # v is not needed after this
    y, flag, _ = output_stage(yin, m, n, v2, s_el, a_mat, io, gen, steps, bounds, flags=flags)
    return y, flag


def mvm(view: View, x: torch.Tensor, io, gen, *, inp_range: float | None = None, adc=None,
        raw: bool = False) -> torch.Tensor:
    """y = W x for x (B x in, float32) through the periphery ``io`` (``aimc.core.periphery.mvm`` on torch tensors).

    ``inp_range``: calibrated static DAC range; ``adc``: (steps, bounds) from ``adc_tensors`` replacing
    the config's; ``raw``: outputs in ADC units before the digital rescale. Returns a new tensor."""
    if io.is_perfect:
        y = x @ view.W.T
        return y.mul_(_f32(io.out_scale)) if io.out_scale != 1.0 else y
    if io.adc_drawn or io.dac_drawn:
        raise _unsupported("converter errors (IOConfig.adc 'sar'/'ramp', adc_gain_std, adc_offset_std, "
                           "dac_unit_mismatch)", "mvm")
    B = x.shape[0]
    zero = None
    if inp_range is not None:
        alpha = torch.full((B,), _f32(inp_range / io.inp_bound), dtype=torch.float32, device=x.device)
    else:
        alpha = nm_alpha(x, io)
        if io.noise_management != NoiseManagement.NONE and io.inp_noise <= 0:
            zero = alpha < _TINY   # zero or subnormal: 1/alpha would overflow
            alpha = torch.where(zero, torch.ones_like(alpha), alpha)
    steps, bounds = adc if adc is not None else adc_tensors(io, None, x.device)
    iterative = io.bound_management == BoundManagement.ITERATIVE
    y, clipped = one_pass(view, x, alpha, io, gen, steps, bounds, iterative)
    fac = alpha
    if iterative:
        max_f = io.max_bm_factor
        if io.inp_step > 0:
            max_f = min(max_f, io.max_bm_res / io.inp_step)
        f = torch.ones(B, dtype=torch.float32, device=x.device)
        rows = torch.arange(B, device=x.device)
        while True:
            # stop rule (physics.md §1.7): re-read the clipped rows with 2 f while f <= max_f
            redo = clipped & (f[rows] <= max_f)
            if not bool(redo.any()):
                break
            rows = rows[redo]
            f[rows] *= 2.0
            y[rows], clipped = one_pass(view, x[rows], alpha[rows] * f[rows], io, gen, steps, bounds, True)
        fac = alpha * f
    if raw:
        return y
    if io.out_scale != 1.0:
        fac = fac * _f32(io.out_scale)
    if zero is not None:
        fac = torch.where(zero, torch.zeros_like(fac), fac)
    return y.mul_(fac[:, None])


# ============================================================================================ tiles on a device

def column_scales(W: torch.Tensor, mapping) -> torch.Tensor | None:
    """``aimc.mapping.column_scales`` in torch (None when weight scaling is off)."""
    if mapping.weight_scaling_omega <= 0:
        return None
    if mapping.weight_scaling_columnwise:
        amax = W.abs().amax(dim=1) if W.shape[1] else torch.zeros(W.shape[0], device=W.device)
    else:
        amax = W.abs().amax().expand(W.shape[0])
    c = amax / _f32(mapping.weight_scaling_omega)
    return torch.where(c <= 0, torch.ones_like(c), c)


def from_conductances(G: torch.Tensor, params: dict, mapping) -> torch.Tensor:
    """``aimc.mapping.from_conductances`` in torch."""
    s = _f32(params["scale"])
    if mapping.kind == MappingKind.SINGLE_OFFSET:
        return (G[0] - _f32(mapping.g_min)) / s + _f32(params["w_min"])
    W = torch.zeros(G.shape[1:], dtype=torch.float32, device=G.device)
    for k, fk in enumerate(mapping.pair_factors):
        W = W + _f32(fk) * (G[2 * k] - G[2 * k + 1])
    return W / s


class TileState:
    """The torch mirror of one ``aimc.Tile`` on a device: weights, digital factors, calibrated ranges, a generator.

    Two sources: the numpy tile's state (``sync``: uploaded when the tile's arrays changed, i.e. after
    ``program``/``drift``/calibration/compensation changes) or torch weights written directly (``set_weights``,
    the mirroring state of training: nothing crosses to the host)."""

    def __init__(self, tile, device):
        self.tile = tile
        self.device = torch.device(device)
        self.gen = generator_for(tile.seed, f"{tile.tile_id}/torch", self.device)
        self._src = {}       # numpy objects the tensors were uploaded from (identity = unchanged)
        self.fwd = self.bwd = None
        self.scale = None    # (out,) digital column scales, or None (weight scaling off)
        self.out = None      # (out,) digital output factor (scale x compensation), or None
        self.inp_range = None
        self.adc = None
        self.cells = None    # (device array, g_prog, nu, rel) tensors of a programmed tile

    def _set_w(self, w: torch.Tensor) -> None:
        self.fwd, self.bwd = View(w), View(w.T)

    def set_weights(self, W: torch.Tensor) -> None:
        """Exact write (``Tile.set_weights`` in torch): column scales and normalised weights."""
        mapping = self.tile.config.mapping
        c = column_scales(W, mapping)
        self._set_w(W if c is None else W / c[:, None])
        self.scale = self.out = c
        self.inp_range = self.adc = None
        self._src = {"torch": True}

    def _up(self, a):
        return None if a is None else torch.as_tensor(np.asarray(a, np.float32)).to(self.device)

    def sync(self) -> None:
        """Upload what changed in the numpy tile since the last sync."""
        t, src = self.tile, self._src
        if src.get("w") is not t._w:
            self._set_w(self._up(t._w))
            src["w"] = t._w
        if src.get("scale") is not t._scale:
            self.scale = self._up(t._scale) if t.config.mapping.weight_scaling_omega > 0 else None
            src["scale"] = t._scale
        if "out" not in src or src["out"] is not t._out:
            self.out = self._up(t._out)
            src["out"] = t._out
        if "adc" not in src or src["adc"] is not t._adc:
            if t._adc is None:
                self.adc = None
            elif t._adc[1].shape[0] == 1:   # one calibrated range for the tile: the kernels' one-range path
                self.adc = (float(t._adc[0][0]), float(t._adc[1][0]))
            else:
                self.adc = tuple(self._up(a) for a in t._adc)
            src["adc"] = t._adc
        self.inp_range = t._cal_inp
        src.pop("torch", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = mvm(self.fwd, x, self.tile.config.forward, self.gen, inp_range=self.inp_range, adc=self.adc)
        return y if self.out is None else y.mul_(self.out)

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            d = d * self.scale
        return mvm(self.bwd, d, self.tile.config.backward, self.gen)

    # -- drift of programmed power-law cells ---------------------------------------------------------------
    def drift(self, t: float) -> None:
        """``Tile.drift(t)`` with the read, the weights and the compensation readout in torch; the numpy
        tile's state is updated (one device-to-host copy of G and W) so chip images and state dicts hold it.
        Needs a fused (power-law) device array; the caller checked time and order."""
        from ..core.inference import compensation_readout
        tile = self.tile
        dev = tile._device
        if self.cells is None or self.cells[0] is not dev:
            self.cells = (dev, self._up(dev.cells.g_prog), self._up(dev.cells.nu), self._up(dev._rel_read()))
        _, g_prog, nu, rel = self.cells
        m = dev.model
        L = math.log((t + m.t0) / m.t0) if t > 0 else 0.0
        F = _f32(m.read_noise_factor(t))
        gd = g_prog * torch.exp(-nu * _f32(L))
        z = torch.randn(gd.shape, generator=self.gen, dtype=torch.float32, device=self.device)
        G = (gd + gd.abs() * rel * F * z).clamp_min(0.0)
        w = from_conductances(G, tile._map_params, tile.config.mapping).contiguous()
        tile._time = t
        tile._G = G.cpu().numpy()
        tile._set_normalised(w.cpu().numpy())
        self._set_w(w)
        self._src["w"] = tile._w
        if tile._comp_kind != DriftCompensation.NONE:
            eye = torch.eye(tile.in_size, dtype=torch.float32, device=self.device)
            Y = mvm(self.fwd, eye, tile.config.forward, self.gen).cpu().numpy()
            tile._alpha = (tile._comp_ref / compensation_readout(Y, tile._comp_kind)).astype(np.float32)
        tile._refresh_out()


class TorchTiles:
    """A ``TileArray`` on a torch device: per-tile mirrors (``TileState``) and the array's reads."""

    def __init__(self, tiles, device):
        check_supported(tiles.config, f"tile array {tiles.name!r}")
        self.tiles = tiles
        self.device = torch.device(device)
        self.blocks = [(rs, cs, TileState(tile, self.device)) for rs, cs, tile in tiles._blocks()]
        self.key = None      # what the mirrors hold: ('numpy',) after sync, or the torch weights' version key

    def sync(self) -> None:
        for _, _, ts in self.blocks:
            ts.sync()
        self.key = ("numpy",)

    def set_weights(self, W: torch.Tensor, key) -> None:
        """Exact write of the (out, in) torch matrix W into the mirrors when ``key`` (its version) changed."""
        if key is not None and key == self.key:
            return
        W = W.detach().to(self.device, torch.float32)
        for rs, cs, ts in self.blocks:
            ts.set_weights(W if len(self.blocks) == 1 else W[rs, cs])
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.blocks) == 1:
            return self.blocks[0][2].forward(x)
        y = torch.zeros(x.shape[0], self.tiles.out_size, dtype=torch.float32, device=x.device)
        for rs, cs, ts in self.blocks:
            y[:, rs] += ts.forward(x[:, cs])
        return y

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        if len(self.blocks) == 1:
            return self.blocks[0][2].backward(d)
        x = torch.zeros(d.shape[0], self.tiles.in_size, dtype=torch.float32, device=d.device)
        for rs, cs, ts in self.blocks:
            x[:, cs] += ts.backward(d[:, rs])
        return x

    def drift(self, t) -> None:
        """``TileArray.drift`` (same checks) with power-law reads in torch; other cards drift by the numpy path."""
        from ..core.inference import check_time
        arr = self.tiles
        t = check_time(t)
        if not arr.programmed:
            raise RuntimeError(f"tile array {arr.name!r} is not programmed: call program(W) before drift(t)")
        if t < arr.time:
            raise ValueError(f"t = {t} s is earlier than the clock of tile array {arr.name!r} ({arr.time} s): "
                             f"drift only moves forward in time; call program(W) again to restart at t = 0")
        for tile in arr.all_tiles():
            tile._device.check_time(t)
        for _, _, ts in self.blocks:
            if ts.tile._device.fused:
                ts.drift(t)
            else:
                ts.tile.drift(t)
        self.key = None


# ============================================================================================ autograd

def _f(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32)


class TorchMatmul(torch.autograd.Function):
    """``AnalogMatmul`` on the torch backend: y = tiles(x); grads: x by the ideal or analog transposed read,
    W exact."""

    @staticmethod
    def forward(ctx, x2d, weight, tt: TorchTiles, backward_ideal: bool):
        y = tt.forward(_f(x2d))
        ctx.save_for_backward(x2d, weight)
        ctx.tt, ctx.backward_ideal = tt, backward_ideal
        return y.to(x2d.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            if ctx.backward_ideal:
                grad_x = grad_y @ weight.to(grad_y.dtype)
            else:
                grad_x = ctx.tt.backward(_f(grad_y)).to(grad_y.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.t() @ x2d
        return grad_x, grad_w, None, None


def torch_tiles(layer) -> TorchTiles:
    """The layer's ``TorchTiles`` on the device of its weight (built, or moved, on first use)."""
    dev = layer.weight.device
    tt = layer.__dict__.get("_torch_tiles")
    if tt is None or tt.tiles is not layer.tiles or tt.device != dev:
        tt = TorchTiles(layer.tiles, dev)
        layer.__dict__["_torch_tiles"] = tt
    return tt


def _prepare(layer, tt: TorchTiles) -> None:
    """Bring the mirrors up to date: the programmed numpy state, or the layer's weights (mirroring)."""
    if layer.programmed:
        if any(t._cal_pending is not None for t in layer.tiles.all_tiles()):
            return
        tt.sync()
    else:
        w = layer.analog_weight()
        tt.set_weights(w, (layer.weight._version, layer.weight.data_ptr(), "w"))


def _calibration_pass(layer, x2d: torch.Tensor):
    """A pending calibration (``TileArray.calibrate_on_next_forward``) reads by the numpy path (once)."""
    if layer.programmed and any(t._cal_pending is not None for t in layer.tiles.all_tiles()):
        from ._function import as_numpy
        return torch.from_numpy(layer.tiles._forward(as_numpy(x2d))).to(x2d.device, x2d.dtype)
    return None


def analog_matmul(layer, x2d: torch.Tensor) -> torch.Tensor:
    """``AnalogModule.analog_matmul`` (no HWA hook) on the torch backend."""
    tt = torch_tiles(layer)
    y = _calibration_pass(layer, x2d)
    if y is not None:
        return y
    _prepare(layer, tt)
    return TorchMatmul.apply(x2d, layer.analog_weight(), tt, layer.config.backward_ideal)


def drift(layer, t) -> None:
    """``AnalogModule.drift`` on the torch backend."""
    torch_tiles(layer).drift(t)


def set_backend(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    """Set ``backend`` ('auto' | 'numba' | 'torch') on every analog layer of ``model``; returns ``model``.
    Checked before any layer changes: an unknown name or a configuration the torch backend does not
    support is an error naming it."""
    check_backend(backend)
    layers = [m for m in model.modules()   # analog layers (AnalogModule; not imported: base imports this module)
              if callable(getattr(m, "_use_torch", None)) and getattr(m, "tiles", None) is not None]
    if backend == "torch":
        for m in layers:
            check_supported(m.config, f"{type(m).__name__} {m.tiles.name!r}")
    for m in layers:
        m.backend = backend
    return model
