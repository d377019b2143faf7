"""The analog MVM of one tile pass: y = alpha f * ADC(noise(W . DAC(x / (alpha f)))), physics.md §1.2.

``WeightView`` holds a weight matrix (out x in) with the derived arrays some stages need (|W| for PCM read
noise and IR drop, W*position for IR drop), computed once per weight version. ``mvm`` runs the pipeline:
noise management -> [input stage -> BLAS product(s) -> output stage] repeated by iterative bound
management on the rows that clipped -> rescale. Weight noise is drawn in output space with the exactly
equal distribution (one normal per output), so the cost is a few BLAS products plus O(batch x out) work.
"""
from __future__ import annotations

import threading

import numpy as np

from .config import ADCKind, BoundManagement, IOConfig, NoiseManagement, WeightNoiseType
from ..kernels import periphery as _k
from .rng import Stream
from .threads import dot, kernel_threads

_NM_CODE = {NoiseManagement.NONE: _k.NM_NONE, NoiseManagement.ABS_MAX: _k.NM_ABS_MAX,
            NoiseManagement.MAX: _k.NM_MAX, NoiseManagement.CONSTANT: _k.NM_CONSTANT}
_ADC_CODE = {ADCKind.UNIFORM: _k.ADC_UNIFORM, ADCKind.SAR: _k.ADC_SAR, ADCKind.RAMP: _k.ADC_RAMP}
_EMPTY2 = np.zeros((0, 0), np.float32)
_EMPTY1 = np.zeros(0, np.float32)
_EMPTY_I8 = np.zeros(0, np.int8)


class WeightView:
    """A weight matrix W (out x in, float32) seen by one read direction, with cached derived arrays.

    ``W`` may be a view (e.g. a transposed one for the backward read); nothing is copied until a stage
    needs a derived array. With a circuit (``aimc.crossbar.ArrayCircuit``, ``ArrayConfig.model`` 'circuit')
    the product is the array's: linear cells use the effective matrix of one state solve (computed at the
    first read, then one BLAS product per forward); sinh cells solve the circuit per input (``W`` stays the
    nominal matrix for the derived arrays, e.g. PCM read noise).
    """

    __slots__ = ("_W", "_absW", "_Wpos", "circuit")

    def __init__(self, W: np.ndarray, circuit=None):
        self.circuit = circuit
        self._W = None if circuit is not None and circuit.linear else W
        self._absW = None
        self._Wpos = None

    @property
    def W(self) -> np.ndarray:
        if self._W is None:
            We = self.circuit.effective()
            self._W = We.T if self.circuit.transposed else We
        return self._W

    def product(self, v: np.ndarray) -> np.ndarray:
        """W v for a batch v (R x in): one BLAS call, or the circuit solve of nonlinear cells."""
        if self.circuit is not None and not self.circuit.linear:
            return self.circuit.product(v)
        return dot(v, self.W.T)

    @property
    def absW(self) -> np.ndarray:
        if self._absW is None:
            self._absW = np.abs(self.W)
        return self._absW

    @property
    def Wpos(self) -> np.ndarray:
        """[W; W * (1 - (1 - j/n)^2)] stacked (2*out x in): one BLAS call gives W.v and the IR-drop term."""
        if self._Wpos is None:
            n = self.W.shape[1]
            j = np.arange(n, dtype=np.float32) / np.float32(n)
            pos = np.float32(1.0) - (np.float32(1.0) - j) ** 2
            self._Wpos = np.concatenate([self.W, self.W * pos[None, :]], axis=0)
        return self._Wpos


def adc_arrays(io: IOConfig, bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, bounds) float32 arrays of the ADC: the config's (length 1) or calibrated ``bounds`` (a scalar
    for the whole tile or one per output column), each with step 2 b / (2^out_bits - 2); bound 0 = no ADC."""
    if bounds is None:
        return np.array([io.out_step], np.float32), np.array([io.out_bound], np.float32)
    b = np.ascontiguousarray(np.atleast_1d(bounds), np.float32)
    steps = b * np.float32(2.0 / (2**io.out_bits - 2)) if io.out_bits > 0 else np.zeros_like(b)
    return np.ascontiguousarray(steps, np.float32), b


NO_ADC = (np.zeros(1, np.float32), np.zeros(1, np.float32))


def draw_adc(io: IOConfig, n_out: int, stream: Stream) -> dict:
    """The per-chip ADC errors of ``n_out`` columns, drawn once (circuits_and_cost.md C.3): ``gain`` =
    1 + adc_gain_std xi and ``offset`` = adc_offset_std out_bound xi per column; per ADC (``columns_per_adc``
    columns) a comparator offset ``comp`` (fraction of the ADC bound); for SAR the binary CDAC ``caps``
    C_n = 2^n + adc_cap_mismatch 2^(n/2) xi per ADC (unit capacitors, the mismatch of a 2^n-unit capacitor
    grows as its square root); for a ramp ADC the ``inl`` of its 2^B - 1 transitions (``ramp_inl``).
    float32 arrays, stored in chip images."""
    z = stream.normal((2, n_out))
    out = {"gain": (1.0 + io.adc_gain_std * z[0]).astype(np.float32),
           "offset": (io.adc_offset_std * io.out_bound * z[1]).astype(np.float32)}
    groups = -(-n_out // io.columns_per_adc)
    bits = max(io.out_bits, 1)
    n = np.arange(bits)
    zc = stream.normal((groups, bits + 1))
    out["caps"] = np.maximum(2.0 ** n + io.adc_cap_mismatch * 2.0 ** (n / 2) * zc[:, :bits], 0).astype(np.float32) \
        if io.adc == ADCKind.SAR else np.zeros((0, bits), np.float32)
    out["comp"] = (io.adc_comparator_offset * zc[:, bits]).astype(np.float32)
    if io.adc == ADCKind.RAMP:
        out["inl"] = ramp_inl(io.out_bits, io.adc_dnl_std, io.adc_inl_bow, stream)
    return out


def ramp_inl(bits: int, dnl_std: float, bow: float, stream: Stream) -> np.ndarray:
    """INL (LSB) of the 2^bits - 1 transitions of one single-slope ramp, float32, drawn once.

    Transition levels and INL/DNL as IEEE Std 1241-2010 defines them (T_k; INL_k = (T_k - T_k,ideal) / Q,
    DNL_k = (T_(k+1) - T_k) / Q - 1, terminal-based: the first and last transitions define the line, since
    gain and offset are modelled apart, ``adc_gain_std``/``adc_offset_std``). Two parts:

    * random: the ramp advances by one unit step per counter clock, each of width 1 + dnl_std xi_k LSB (the
      unit elements of a counter-driven ramp DAC, drawn independently). Referred to the end-point line, the
      INL is a Brownian bridge (Radulov et al., IEEE TCAS-II 54(2), 146, 2007, for unary unit-element
      arrays): Var INL_k = dnl_std^2 (k - 1)(N - 1 - k) / (N - 2) at transition k of N = 2^bits, and the
      DNL of the N - 2 inner codes has variance dnl_std^2 (1 - 1/(N - 2));
    * systematic bow: a ramp whose unit current sources have a finite output resistance (or an RC-charged
      ramp) is compressed quadratically, V_k = k / (1 + k rho); to first order in rho the deviation from the
      end-point line is a parabola with its peak at mid-scale (Razavi, Principles of Data Conversion System
      Design, IEEE Press 1995, current-steering DAC INL from output impedance: peak N^2 rho / 4 LSB). It is
      parameterised by that peak, ``bow``: INL_k += bow 4 u (1 - u), u = (k - 1) / (N - 2).
    """
    N = 2 ** bits
    k = np.arange(1, N, dtype=np.float64)
    steps = dnl_std * stream.normal(N - 2).astype(np.float64)       # width errors of the inner codes
    walk = np.concatenate([[0.0], np.cumsum(steps)])                 # T_k - ideal before the end-point fit
    u = (k - 1) / (N - 2)
    inl = walk - u * walk[-1] + bow * 4.0 * u * (1.0 - u)
    return inl.astype(np.float32)


def adc_convert(y: np.ndarray, io: IOConfig, conv: dict, bounds) -> np.ndarray:
    """What the chip's ADCs (drawn errors ``conv``, ``draw_adc``) output for analog outputs y (S x m, ADC units)
    with ranges ``bounds`` (one, or one per column): the ADC of a read (``kernels.periphery.adc_stage``), on
    a copy of y. The calibration's range search goes through it (``calibration.transfer_mse_bound``)."""
    out = np.array(y, np.float32, order="C", copy=True)
    S, m = out.shape
    steps, b = adc_arrays(io, np.broadcast_to(np.asarray(bounds, np.float32), (m,)))
    clipped, nclip = np.empty(S, np.int8), np.empty(S, np.int32)
    _k.adc_stage(out, _arange(S), conv["gain"], conv["offset"], steps, b, _ADC_CODE[io.adc], io.out_bits,
                 conv["caps"].astype(np.float64), conv["comp"], io.columns_per_adc,
                 conv["inl"].astype(np.float64) if "inl" in conv else _EMPTY1.astype(np.float64),
                 io.bm_test_negative_bound, clipped, nclip)
    return out


def draw_dac(io: IOConfig, n_in: int, stream: Stream) -> np.ndarray:
    """The per-chip level table of ``n_in`` input DACs, float32 (n_in, L + 1), L = 2^(inp_bits - 1) - 1
    magnitude codes: level c in DAC steps (sign-magnitude; CrossSim SignMagnitudeDAC, circuits_and_cost.md B.2).

    A unary (thermometer) current-steering DAC per input line: code c switches on c unit sources of current
    1 + dac_unit_mismatch xi_i. Referred to its end points (full scale exact: gain is not INL) level c is
    c + S_c - (c / L) S_L, S_c = sum_{i <= c} dac_unit_mismatch xi_i, so its INL is a Brownian bridge with
    Var INL_c = dac_unit_mismatch^2 c (L - c) / L and peak variance at mid-scale dac_unit_mismatch^2 L / 4
    (Van den Bosch et al., "An accurate statistical yield model for CMOS current-steering D/A converters",
    ISCAS 2000: the INL yield set by sigma_unit sqrt(N) / 2; Radulov et al., IEEE TCAS-II 54(2), 2007)."""
    L = 2 ** (io.inp_bits - 1) - 1
    e = io.dac_unit_mismatch * stream.normal((n_in, L)).astype(np.float64)
    S = np.concatenate([np.zeros((n_in, 1)), np.cumsum(e, axis=1)], axis=1)
    c = np.arange(L + 1, dtype=np.float64)
    return (c + S - (c / L) * S[:, -1:]).astype(np.float32)


def draw_converters(io: IOConfig, n_in: int, n_out: int, stream: Stream) -> dict | None:
    """Every per-chip converter error of one read direction (``draw_adc`` keys, plus ``dac`` with
    ``io.dac_drawn``), or None when the periphery has none."""
    if not (io.adc_drawn or io.dac_drawn):
        return None
    out = draw_adc(io, n_out, stream) if io.adc_drawn else {}
    if io.dac_drawn:
        out["dac"] = draw_dac(io, n_in, stream)
    return out


def dac_input_sum(x: np.ndarray, io: IOConfig, inp_range: float | None = None) -> np.ndarray:
    """Per row of x (B x in), the sum of the inputs as the DAC codes them, in input units (float32 (B,)): the
    digital value an offset-encoded sliced read subtracts its offset with (CrossSim OFFSET, digital removal).
    alpha by the noise management (or the static calibrated range ``inp_range``), then rint(x / alpha / step)
    step clipped to +-inp_bound, times alpha (deterministic rounding; the first bound-management pass). A
    perfect periphery or one without DAC quantisation: the inputs' own sum (clipped likewise)."""
    if io.is_perfect:
        return x.sum(axis=1, dtype=np.float64).astype(np.float32)
    alpha = np.empty(x.shape[0], np.float32)
    if inp_range is not None:
        alpha.fill(np.float32(inp_range / io.inp_bound))
    else:
        _k.nm_alpha(x, _NM_CODE[io.noise_management], np.float32(io.nm_thres), alpha)
        alpha[alpha < np.finfo(np.float32).tiny] = 1.0
    v = x * (np.float32(1.0) / alpha)[:, None]   # the arithmetic of kernels.periphery._input_row
    if io.inp_step > 0:
        step = np.float32(io.inp_step)
        v = np.rint(v * np.float32(1.0 / step)) * step
    v = np.clip(v, -io.inp_bound, io.inp_bound)
    return (v.sum(axis=1, dtype=np.float64) * alpha).astype(np.float32)


def mvm(view: WeightView, x: np.ndarray, io: IOConfig, stream: Stream, counts=None, g=None, *,
        inp_range: float | None = None, adc: tuple[np.ndarray, np.ndarray] | None = None,
        clip_counts: np.ndarray | None = None, raw: bool = False, conv: dict | None = None) -> np.ndarray:
    """y = W x for a batch x (B x in, float32, C-contiguous) through the periphery ``io``. Returns B x out.

    ``counts`` (an ``aimc.cost.Counts``) records what the read did; ``g`` (in,) is the conductance per input
    line in uS that its array-energy sums weight the applied inputs with (``aimc.cost.counters``). A perfect
    read counts the conversions a physical array would need and the inputs as an abs-max-scaled DAC applies them.

    Calibrated state of the tile (``aimc.calibration``) overrides two stages: ``inp_range`` r (a static DAC
    range: x is clipped at +-r, i.e. a constant noise-management scale r / inp_bound in place of the
    config's), ``adc`` (steps, bounds) from :func:`adc_arrays` (per-column or per-tile ADC ranges;
    ``NO_ADC`` reads the analog outputs before the ADC). ``clip_counts`` (int64 (2,)) accumulates
    [outputs beyond the ADC range, ADC conversions]. ``raw``: return the outputs in ADC units, before the
    digital rescale by the noise-management and bound-management factors and ``out_scale``. ``conv``: the
    chip's converter errors (:func:`draw_converters`) when ``io.adc_drawn`` or ``io.dac_drawn``.
    """
    W = view.W
    B, n = x.shape
    m = W.shape[0]
    if io.is_perfect:
        y = view.product(x)
        if io.out_scale != 1.0:
            y *= np.float32(io.out_scale)
        if counts is not None:
            amax = np.abs(x).max(axis=1) if n else np.zeros(B, np.float32)
            inv = np.divide(1.0, amax, out=np.zeros(B, np.float32), where=amax > 0).astype(np.float32)
            counts.mvms += B
            counts.add_pass(x, inv, g, io.inp_step, m)
        return y
    with kernel_threads(B * (n + m)):
        return _mvm(view, x, io, stream, counts, g, inp_range, adc, clip_counts, raw, conv, B, m)


class _Plan:
    """What ``mvm`` derives from an IOConfig, computed once per config object (``_plan``): the per-call
    work of a small read (an RNN time step) is then the kernels and products, not config look-ups."""

    __slots__ = ("nm", "nm_thres", "guard", "inp_step", "inp_bound", "inp_sto", "inp_noise", "steps", "bounds",
                 "iterative", "max_f", "managed", "dig_out", "out_scale", "pcm", "ir", "nl", "w_first",
                 "additive", "sig", "w_noise2", "ir_drop", "out_sto", "test_neg")

    def __init__(self, io: IOConfig):
        self.nm = _NM_CODE[io.noise_management]
        self.nm_thres = np.float32(io.nm_thres)
        self.guard = io.noise_management != NoiseManagement.NONE  # zero rows read as 0: the alpha -> 0 limit of alpha*W(x/alpha + n)
        self.inp_step, self.inp_bound = io.inp_step, io.inp_bound
        self.inp_sto, self.inp_noise = io.inp_sto_round, io.inp_noise
        self.steps, self.bounds = adc_arrays(io)
        self.iterative = io.bound_management == BoundManagement.ITERATIVE
        max_f = io.max_bm_factor
        if io.inp_step > 0:
            max_f = min(max_f, io.max_bm_res / io.inp_step)
        self.max_f = max_f
        self.managed = io.noise_management != NoiseManagement.NONE or io.bound_management != BoundManagement.NONE
        self.dig_out = self.managed or io.out_scale != 1.0
        self.out_scale = np.float32(io.out_scale)
        self.pcm = io.w_noise > 0 and io.w_noise_type == WeightNoiseType.PCM_READ
        self.ir = io.ir_drop > 0
        self.nl = io.out_nonlinearity / (io.out_bound if io.out_bound > 0 else 1.0)
        self.w_first = self.nl > 0 and io.w_noise > 0
        self.additive = io.w_noise > 0 and io.w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT
        self.sig = np.sqrt(np.float32(io.out_noise) ** 2)   # the output noise sigma of _noise_sigmas' rows
        self.w_noise2 = np.float32(io.w_noise) ** 2 if self.pcm else np.float32(0.0)
        self.ir_drop = np.float32(io.ir_drop)
        self.out_sto, self.test_neg = io.out_sto_round, io.bm_test_negative_bound


_PLANS: dict = {}
_ARANGE: dict = {}


def _plan(io: IOConfig) -> _Plan:
    e = _PLANS.get(id(io))
    if e is None or e[0] is not io:
        if len(_PLANS) > 256:
            _PLANS.clear()
        e = _PLANS[id(io)] = (io, _Plan(io))
    return e[1]


def _arange(B: int) -> np.ndarray:
    """0 .. B-1 (int64), shared between calls (kernels only read it)."""
    r = _ARANGE.get(B)
    if r is None:
        if len(_ARANGE) > 64:
            _ARANGE.clear()
        r = _ARANGE[B] = np.arange(B, dtype=np.int64)
    return r


def _nm_scales(x, io, p: _Plan, inp_range, alpha=None):
    """(alpha, zero_rows): the noise-management scale per row (a static DAC range when ``inp_range`` is set),
    and the rows whose scale is zero or subnormal (they read as zeros; their alpha is set to 1), or None.
    ``alpha``: a float32 (B,) array to write the scales into (else a new one)."""
    alpha = np.empty(x.shape[0], np.float32) if alpha is None else alpha
    zero_rows = None
    if inp_range is not None:
        alpha.fill(np.float32(inp_range / io.inp_bound))
    else:
        _k.nm_alpha(x, p.nm, p.nm_thres, alpha)
        if p.guard:
            zero = alpha < np.finfo(np.float32).tiny  # zero or subnormal: 1/alpha would overflow
            if zero.any():
                zero_rows = zero
                alpha[zero] = 1.0
    return alpha, zero_rows


def _mvm(view, x, io, stream, counts, g, inp_range, adc, clip_counts, raw, conv, B, m):
    p = _plan(io)
    alpha, zero_rows = _nm_scales(x, io, p, inp_range)
    steps, bounds = adc if adc is not None else (p.steps, p.bounds)
    if adc is NO_ADC and conv is not None:  # a raw read (analog outputs before the ADC) skips the ADCs too
        conv = {"dac": conv["dac"]} if "dac" in conv else None
    y = np.empty((B, m), np.float32)
    rows = _arange(B)
    if counts is not None:
        counts.mvms += B
        counts.dig_out += B * m if p.dig_out else 0
    if not p.iterative:  # one pass; the scale alpha * f with f = 1 is alpha itself
        # the rescale (and zero rows) in the output stage's sweep unless the raw outputs are asked for
        digital = () if raw else (alpha * p.out_scale, _zero8(zero_rows), _EMPTY1, _EMPTY2)
        _, nclip = _one_pass(view, x, rows, alpha, io, stream, y, counts, g, steps, bounds, conv, p, digital)
        if clip_counts is not None:
            clip_counts[0] += int(nclip.sum())
            clip_counts[1] += B * m
        return y
    f = np.ones(B, np.float32)
    max_f = p.max_f
    while True:
        clipped, nclip = _one_pass(view, x, rows, alpha[rows] * f[rows], io, stream, y, counts, g, steps, bounds,
                                   conv, p)
        if clip_counts is not None:
            clip_counts[0] += int(nclip.sum())
            clip_counts[1] += rows.shape[0] * m
        # stop rule (physics.md §1.7): after a pass with factor f, stop if f > max_bm_factor or
        # f > max_bm_res / DAC step (the last pass at 7 bits uses f = 16)
        redo = (clipped != 0) & (f[rows] <= max_f)
        if not redo.any():
            break
        rows = rows[redo]
        f[rows] *= 2.0
    if raw:
        return y
    y *= (alpha * f * p.out_scale)[:, None]
    if zero_rows is not None:
        y[zero_rows] = 0.0
    return y


def _noise_sigmas(io: IOConfig, v2: np.ndarray) -> tuple:
    """(nl, sigma^2 of the output noise per row, sigma of the weight noise drawn before the nonlinearity or
    empty).

    Weight noise comes before the output nonlinearity (aihwkit's order): drawn on its own there when both are
    on, else folded into the output noise (a sum of independent normals: one normal per output, same
    distribution)."""
    R = v2.shape[0]
    sig2 = np.full(R, np.float32(io.out_noise) ** 2, np.float32)
    nl = io.out_nonlinearity / (io.out_bound if io.out_bound > 0 else 1.0)
    w_first = nl > 0 and io.w_noise > 0
    sw = _EMPTY1
    if io.w_noise > 0 and io.w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT:
        sw2 = np.float32(io.w_noise) ** 2 * v2    # iid weight noise == one normal per output, sigma ||v||
        if w_first:
            sw = np.sqrt(sw2).astype(np.float32)
        else:
            sig2 += sw2
    elif w_first:
        sw = np.ones(R, np.float32)               # pcm_read: sigma from s_el; non-empty marks "weight noise first"
    return nl, sig2, sw


def _row_sigmas(io: IOConfig, p: _Plan, v2: np.ndarray, R: int) -> tuple:
    """(sigma of the output noise per row, sw) of ``_noise_sigmas`` for R rows; without additive weight noise
    the row sigmas are one constant (``_Plan.sig``: the same float32 sqrt of the same square) and ``v2`` is
    not read (``_input_pass`` leaves it empty)."""
    if p.additive:
        _, sig2, sw = _noise_sigmas(io, v2)
        return np.sqrt(sig2), sw
    return np.full(R, p.sig, np.float32), (np.ones(R, np.float32) if p.w_first else _EMPTY1)


def _one_pass(view: WeightView, x, rows, scale, io: IOConfig, stream: Stream, y, counts, g, steps, bounds,
              conv=None, p: _Plan | None = None, digital: tuple = ()):
    """One analog read of the selected rows into y[rows]: input stage, product(s), output stage (with
    ``digital`` as ``_output_pass``'s).

    Returns the per-row clip flags and counts of clipped outputs.
    """
    p = p or _plan(io)
    calls = draw_calls(stream, io)
    m = view.W.shape[0]
    v, v2, aux = _input_pass(x, rows, scale, p, conv, calls, counts, g, m)
    yin, s_el, a_mat = _products(view, v, aux, p)
    return _output_pass(yin, s_el, a_mat, v2, rows, io, p, calls, y, steps, bounds, conv, x.shape[1], digital)


def _input_pass(x, rows, scale, p: _Plan, conv, calls, counts=None, g=None, m: int = 0, scratch=None):
    """The input stage of one pass (DAC, with the chip's DAC levels when ``conv`` has them): the applied inputs
    v (R x n), their squared sums v2 (only for additive weight noise, else empty) and the aux rows (v^2 for PCM read noise, |v| for IR drop). With ``counts``
    the pass is counted (``m`` output lines, ``g`` as in ``mvm``): by the input stage itself while it writes v,
    or, after the chip's DAC levels, by a sweep over v. ``scratch``: reused arrays (``_scratch``)."""
    R, n = rows.shape[0], x.shape[1]
    k0, k1, cu, cn = calls[:4]
    pcm, ir = p.pcm, p.ir
    v = _scratch(scratch, "v", (R, n))
    v2 = _scratch(scratch, "v2", (R,)) if p.additive else _EMPTY1  # summed only for its one reader
    aux = _scratch(scratch, "aux", ((pcm + ir) * R, n))
    dac = conv.get("dac") if conv is not None else None
    if dac is None:
        cargs = ()
        if counts is not None:
            if p.managed:
                counts.dig_in += R * n   # x / (alpha f) before the DAC
            cargs = counts.fused_pass(R, n, m, g, p.inp_step)
        _k.input_stage(x, rows, scale, p.inp_step, p.inp_bound, p.inp_sto, p.inp_noise,
                       k0, k1, cu, cn, v, v2, aux, 0 if pcm else -1, R * pcm if ir else -1, *cargs)
    else:  # DAC with per-chip level errors: quantise and clip, then its levels, the noise and the sums
        _k.input_stage(x, rows, scale, p.inp_step, p.inp_bound, p.inp_sto, 0.0,
                       k0, k1, cu, cn, v, v2, aux, -1, -1)
        _k.dac_stage(v, rows, dac, p.inp_step, p.inp_noise, k0, k1, cn, v2, aux, 0 if pcm else -1,
                     R * pcm if ir else -1)
        if counts is not None:
            _count_pass(counts, p, v, g, m)
    return v, v2, aux


def _scratch(scratch: dict | None, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
    """An uninitialised array: a new one, or, with ``scratch`` (a dict the caller keeps between reads, e.g. an
    RNN's time steps), the one stored there under ``name`` -- itself when the shape is the same, else the
    leading part of it when it is large enough (a smaller read after a larger one), else a new one stored in
    its place. Reusing them spares the allocations and the page faults of fresh buffers on every small read."""
    if scratch is None:
        return np.empty(shape, dtype)
    a = scratch.get(name)
    if a is not None and a.dtype == dtype:
        if a.shape == shape:
            return a
        n = int(np.prod(shape))
        if a.size >= n:
            return a.reshape(-1)[:n].reshape(shape)
    a = scratch[name] = np.empty(shape, dtype)
    return a


class ScratchPool:
    """The ``scratch`` dicts a layer keeps between forwards (``pool.get(key)``: one per key and thread), so
    that a read of the same shape reuses its arrays instead of faulting in fresh pages on every forward
    (an analog LSTM's input read of a whole sequence: 13 MB of outputs per layer). One set per thread, so
    concurrent forwards never share arrays; a pickled or deep-copied layer starts with an empty pool."""

    def __init__(self):
        self._local = threading.local()

    def get(self, key) -> dict:
        d = self._local.__dict__.setdefault("d", {})
        return d.setdefault(key, {})

    def clear(self) -> None:
        """Drop this thread's arrays (they are made again on the next read)."""
        self._local.__dict__.pop("d", None)

    def __reduce__(self):
        return ScratchPool, ()

    def __deepcopy__(self, memo):
        return ScratchPool()


def _count_pass(counts, p: _Plan, v, g, m: int) -> None:
    if p.managed:
        counts.dig_in += v.size     # x / (alpha f) before the DAC
    counts.add_pass(v, None, g, p.inp_step, m)


def _products(view: WeightView, v, aux, p: _Plan, scratch=None):
    """(yin, s_el, a_mat) of one pass: W v (with IR drop [W v, (W*pos) v] in one BLAS call), and |W| v^2
    (read-noise variance) / |W| |v| (IR-drop load) in one more when PCM read noise or IR drop is on.
    ``scratch``: W v of a linear array goes into a reused array (``_scratch``)."""
    R = v.shape[0]
    if p.ir:
        yin = dot(v, view.Wpos.T)
    elif scratch is not None and view.circuit is None:
        yin = dot(v, view.W.T, _scratch(scratch, "yin", (R, view.W.shape[0])))
    else:
        yin = view.product(v)
    if p.pcm or p.ir:
        prod = dot(aux, view.absW.T)
        s_el = prod[:R] if p.pcm else _EMPTY2
        a_mat = prod[R * p.pcm:] if p.ir else _EMPTY2
    else:
        s_el = a_mat = _EMPTY2
    return yin, s_el, a_mat


def _output_pass(yin, s_el, a_mat, v2, rows, io: IOConfig, p: _Plan, calls, y, steps, bounds, conv, n: int,
                 digital: tuple = ()):
    """The output stage of one pass into y[rows] (noise, nonlinearity, ADC; the chip's ADCs when ``conv`` has
    them). Returns the per-row clip flags and counts of clipped outputs. ``digital`` (rows: all of y): the
    digital steps (row_scale, zero, col_scale, row_add) of ``output_stage_tiles``, in the same sweep, or after
    the chip's ADCs in numpy (same order, same float32 arithmetic)."""
    R, m = rows.shape[0], y.shape[1]
    k0, k1, _, _, cn2, cu2, cw = calls
    sig, sw = _row_sigmas(io, p, v2, R)
    clipped = np.empty(R, np.int8)
    nclip = np.empty(R, np.int32)
    drawn = conv is not None and "gain" in conv
    _k.output_stage(yin, rows, sig, s_el, p.w_noise2, p.ir_drop,
                    np.float32(n / io.ir_drop_g_ratio), a_mat, m, np.float32(p.nl),
                    NO_ADC[0] if drawn else steps, NO_ADC[1] if drawn else bounds, p.out_sto,
                    p.test_neg, k0, k1, cn2, cu2, clipped, y, sw, cw, nclip, 0, *(() if drawn else digital))
    if drawn:
        _k.adc_stage(y, rows, conv["gain"], conv["offset"], steps, bounds, _ADC_CODE[io.adc], io.out_bits,
                     conv["caps"].astype(np.float64), conv["comp"], io.columns_per_adc,
                     conv["inl"].astype(np.float64) if "inl" in conv else _EMPTY1.astype(np.float64),
                     p.test_neg, clipped, nclip)
        if digital:
            row_scale, zero, col_scale, row_add = digital
            y *= row_scale[:, None]
            if zero.size:
                y[zero.view(np.bool_)] = 0.0
            if col_scale.size:
                y *= col_scale
            if row_add.size:
                y += row_add
    return clipped, nclip


def _zero8(zero_rows) -> np.ndarray:
    """The zero-row flags of ``_nm_scales`` as the kernels take them (int8, empty for none)."""
    return _EMPTY_I8 if zero_rows is None else zero_rows.view(np.int8)


# ------------------------------------------------------------------ the reads of a sliced array

def slices_fusable(io: IOConfig) -> bool:
    """Whether the weight slices of one read can share ``mvm_slices``' input stage: the DAC's output does not
    depend on the random stream (no input noise, deterministic rounding) and every row is read once (no
    iterative bound management, whose re-reads differ per slice); a perfect read has no stages to share."""
    return (not io.is_perfect and io.bound_management != BoundManagement.ITERATIVE and io.inp_noise == 0
            and not io.inp_sto_round)


def mvm_slices(parts: list, cc: float, x: np.ndarray, io: IOConfig, stream: Stream, counts=None, gs=None, *,
               inp_range: float | None = None, adc=None, clip_counts: np.ndarray | None = None,
               conv: dict | None = None, acc: np.ndarray | None = None, stack: WeightView | None = None
               ) -> np.ndarray:
    """acc + sum_k cc c_k mvm(view_k, x) over the weight slices ``parts`` [(c_k, view_k)] of one read, needs
    ``slices_fusable(io)``: the same values as one ``mvm`` per slice (the same stream calls in the same order,
    the same arithmetic; the products agree within float32 rounding), with the input stage (noise management,
    DAC) done once for all slices, as the slices of an array share its word lines and DACs (CrossSim
    BitslicedCore), and with ``stack`` (a WeightView of the S slices' matrices stacked, slice k in rows
    k out .. (k + 1) out - 1) one product for all slices: one BLAS call and one wake-up of its thread pool
    where S reads would take S. One output stage (noise, ADC) per slice. ``gs`` (one per slice) as
    ``mvm``'s ``g``; ``adc`` one (steps, bounds) for all slices or a list of one per slice; ``acc`` (B x out)
    is added to in place (None: a new array)."""
    B, n = x.shape
    S = len(parts)
    m = parts[0][1].W.shape[0] if stack is None else stack.W.shape[0] // S
    with kernel_threads(B * (n + m)):
        p = _plan(io)
        alpha, zero_rows = _nm_scales(x, io, p, inp_range)
        calls = [draw_calls(stream, io) for _ in parts]
        rows = _arange(B)
        v, v2, aux = _input_pass(x, rows, alpha, p, conv, calls[0])
        row_f = alpha * p.out_scale
        yk = np.empty((B, m), np.float32)
        # the output stage applies the rescale, the slice factor and the shift-and-add in its sweep (the same
        # float32 operations as one mvm per slice, in the same order; acc + c yk == c yk + acc)
        acc_in = acc
        zero8 = _zero8(zero_rows)
        if stack is not None:
            yall, s_all, a_all = _products(stack, v, aux, p)
            yb = np.empty((B, 2 * m if p.ir else m), np.float32)   # slice k's product columns, reused
        for k, (ck, view) in enumerate(parts):
            if counts is not None:
                counts.mvms += B
                counts.dig_out += B * m if p.dig_out else 0
                _count_pass(counts, p, v, gs[k] if gs is not None else None, m)
            steps, bounds = adc[k] if isinstance(adc, list) else (adc if adc is not None else (p.steps, p.bounds))
            if stack is None:
                yin, s_el, a_mat = _products(view, v, aux, p)
            else:  # slice k's columns of the stacked products (with IR drop: [W_k v, (W_k*pos) v])
                cols = slice(k * m, (k + 1) * m)
                yin = yb
                np.copyto(yb[:, :m], yall[:, cols])
                if p.ir:
                    np.copyto(yb[:, m:], yall[:, S * m + k * m:S * m + (k + 1) * m])
                s_el = np.ascontiguousarray(s_all[:, cols]) if p.pcm else s_all
                a_mat = np.ascontiguousarray(a_all[:, cols]) if p.ir else a_all
            c = np.float32(cc * ck)
            digital = (row_f, zero8, np.full(m, c, np.float32), _EMPTY2 if acc is None else acc)
            _, nclip = _output_pass(yin, s_el, a_mat, v2, rows, io, p, calls[k], yk, steps, bounds, conv, n, digital)
            if clip_counts is not None:
                clip_counts[0] += int(nclip.sum())
                clip_counts[1] += B * m
            # yk holds acc + c yk: it becomes acc, the old acc the next slice's output
            yk, acc = (np.empty((B, m), np.float32) if acc is None or acc is acc_in else acc), yk
    if acc_in is not None and acc is not acc_in:
        acc_in[...] = acc
        acc = acc_in
    return acc


# ------------------------------------------------------------------ tiles that share their inputs

def shared_fusable(io: IOConfig) -> bool:
    """Whether tiles that read the same inputs (a TileArray's tiles of one input slice) can share
    ``mvm_shared``'s input stage and product: ``slices_fusable`` (the DAC's output does not depend on the
    tile's random stream, one pass per row) and no drawn converters (those differ from tile to tile)."""
    return slices_fusable(io) and not io.adc_drawn and not io.dac_drawn


def mvm_shared(stack: WeightView, ms: list, x: np.ndarray, io: IOConfig, streams: list, counts: list, gs: list,
               clips: list, *, inp_range: float | None = None, adc: tuple | None = None,
               col_scale: np.ndarray | None = None, col_add: np.ndarray | None = None,
               row_add: np.ndarray | None = None, scratch: dict | None = None) -> np.ndarray:
    """``mvm`` of one or more tiles that read the same inputs x (B x in), their outputs side by side: B x sum(ms)
    (one tile: a plain ``Tile`` forward, whose digital output factor the output stage applies in its sweep).

    ``stack``: a WeightView of the tiles' matrices stacked (tile k in rows sum(ms[:k]) ..), ``streams``,
    ``counts``, ``gs`` (line conductances), ``clips`` (clip counters): one per tile, as ``mvm``'s. Needs
    ``shared_fusable(io)`` and one ``inp_range``/``adc`` for all tiles. The values of one ``mvm`` per tile:
    the noise management and the DAC are the same for every tile (they do not use its stream), so they run
    once; the product is one BLAS call over the stacked matrix (each output the same dot product, summed
    perhaps in another order: within float32 rounding, |dy| <= gamma_n sum_j |W_ij v_j|); one output stage
    over all columns draws each tile's numbers from its own stream calls (``output_stage_tiles``), exactly
    as its own ``mvm``, and applies ``mvm``'s rescale and then ``col_scale`` (float32 (sum(ms),), the tiles'
    digital output factors, ``Tile._forward``'s y *= _out) in the same sweep, then y += ``col_add`` (float32
    (sum(ms),)) and y += ``row_add`` (float32 C-contiguous (B, sum(ms))), the caller's digital additions
    (an RNN step's bias and input part). Per-tile counts and clip counts as ``mvm`` records them.

    ``scratch``: a dict the caller keeps between reads of one shape (an RNN's time steps): the working arrays
    and the returned y are reused from it (``_scratch``), so y is overwritten by the next read with the same
    ``scratch``; the values are those of fresh arrays."""
    B, n = x.shape
    M = stack.W.shape[0]
    with kernel_threads(B * (n + M)):
        p = _plan(io)
        alpha, zero_rows = _nm_scales(x, io, p, inp_range, _scratch(scratch, "alpha", (B,)))
        steps, bounds = adc if adc is not None else (p.steps, p.bounds)
        calls = [draw_calls(s, io) for s in streams]
        rows = _arange(B)
        # the first tile's pass is counted by the input stage while it writes v, the others by a sweep over v
        v, v2, aux = _input_pass(x, rows, alpha, p, None, calls[0], counts[0], gs[0], ms[0], scratch=scratch)
        for k, (c, g, m) in enumerate(zip(counts, gs, ms)):
            if c is not None:
                c.mvms += B
                c.dig_out += B * m if p.dig_out else 0
                if k:
                    _count_pass(c, p, v, g, m)
        yin, s_el, a_mat = _products(stack, v, aux, p, scratch)
        sig, sw = _row_sigmas(io, p, v2, B)
        S = len(ms)
        clipped = _scratch(scratch, "clipped", (B, S), np.int8)
        nclip = _scratch(scratch, "nclip", (B, S), np.int32)
        y = _scratch(scratch, "y", (B, M))
        _k.output_stage_tiles(yin, rows, sig, s_el, p.w_noise2, p.ir_drop, np.float32(n / io.ir_drop_g_ratio),
                              a_mat, M, np.float32(p.nl), steps, bounds, p.out_sto, p.test_neg,
                              np.array(calls, np.uint64), clipped, y, sw, nclip, 0, _segments(ms),
                              alpha * p.out_scale, _zero8(zero_rows),
                              _EMPTY1 if col_scale is None else col_scale, _EMPTY1 if col_add is None else col_add,
                              _EMPTY2 if row_add is None else row_add)
        if any(cc is not None for cc in clips):
            tot = nclip.sum(axis=0)
            for k, cc in enumerate(clips):
                if cc is not None:
                    cc[0] += int(tot[k])
                    cc[1] += B * ms[k]
    return y


_SEGS: dict = {}


def _segments(ms: list) -> np.ndarray:
    """[0, m0, m0 + m1, ...] (int64) for the column widths ``ms``, shared between calls (kernels only read it)."""
    key = tuple(ms)
    r = _SEGS.get(key)
    if r is None:
        if len(_SEGS) > 64:
            _SEGS.clear()
        r = _SEGS[key] = np.concatenate([[0], np.cumsum(ms)]).astype(np.int64)
    return r


# ------------------------------------------------------------------ convolutions without a patch matrix

def fusable(io: IOConfig) -> bool:
    """Whether ``patch_pass`` reproduces ``mvm`` for this periphery (one pass per row: no iterative BM; the
    config's ADC without drawn converter errors)."""
    return (not io.is_perfect and io.bound_management != BoundManagement.ITERATIVE and not io.adc_drawn
            and not io.dac_drawn)


def draw_calls(stream: Stream, io: IOConfig) -> tuple:
    """The stream calls of one ``_one_pass`` (k0, k1, DAC-u, input-n, output-n, ADC-u, weight-n), in its order."""
    k0, k1, cu = stream.next_call()
    _, _, cn = stream.next_call()
    _, _, cn2 = stream.next_call()
    _, _, cu2 = stream.next_call()
    w_first = io.out_nonlinearity > 0 and io.w_noise > 0
    cw = stream.next_call()[2] if w_first else 0
    return k0, k1, cu, cn, cn2, cu2, cw


def patch_geometry(img_size: int, oh: int, ow: int, h: int, w: int, stride: tuple, pad: tuple, eh: int,
                   ew: int) -> np.ndarray:
    """The geometry array of ``patch_pass`` (``kernels.periphery.patch_input_stage``'s ``geo``): the flat size
    of one image, the output size (oh, ow), the input size (h, w), the stride and the zero padding (rows,
    columns) and the flat steps of one input row and column."""
    g = np.empty(11, np.int64)
    g[[_k.GEO_IMG, _k.GEO_OH, _k.GEO_OW, _k.GEO_H, _k.GEO_W]] = img_size, oh, ow, h, w
    g[[_k.GEO_SY, _k.GEO_SX, _k.GEO_PY, _k.GEO_PX, _k.GEO_EH, _k.GEO_EW]] = *stride, *pad, eh, ew
    return g


def patch_pass(view: WeightView, xflat, geo: np.ndarray, koff: np.ndarray, row0: int, R: int, io: IOConfig,
               calls: tuple, v: np.ndarray, yin: np.ndarray, y: np.ndarray, counts=None, g=None, clip_counts=None, *,
               inp_range: float | None = None, adc: tuple[np.ndarray, np.ndarray] | None = None,
               col_scale: np.ndarray | None = None) -> None:
    """``mvm`` of rows row0 .. row0 + R - 1 of a convolution's patch matrix into y (R x out), the patches
    gathered from the (unpadded) input on the fly, zero outside it (``kernels.periphery.patch_input_stage``:
    ``geo`` from :func:`patch_geometry`, ``koff`` (3, in) the columns' offsets).

    Same stages and the same random counters per element as ``mvm`` on the full patch matrix (``calls`` =
    ``draw_calls`` once per forward and tile; random numbers are keyed by the global row), so element-wise
    stages give identical values; only the product runs on R rows at a time (BLAS may round differently).
    ``v`` (>= R rows x in) and ``yin`` (>= R rows x out, 2 out with IR drop) are reused buffers; y is R x out.
    ``counts``/``g``/``clip_counts`` and a calibrated tile's ``inp_range`` (static DAC range: the constant
    noise-management scale inp_range / inp_bound, no zero-row guard, as in ``mvm``) and ``adc`` (per-tile or
    per-column ADC steps and bounds) as in ``mvm``. ``mvm``'s rescale (alpha out_scale, zero rows) and then
    ``col_scale`` (float32 (out,): the tile's digital output factors, ``Tile._forward``'s y *= _out) are applied
    in the output stage's sweep. Needs ``fusable(io)`` and a plain view (no circuit).
    """
    W = view.W
    m, n = W.shape
    k0, k1, cu, cn, cn2, cu2, cw = calls
    pcm = io.w_noise > 0 and io.w_noise_type == WeightNoiseType.PCM_READ
    ir = io.ir_drop > 0
    v = v[:R]
    additive = io.w_noise > 0 and io.w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT
    v2 = np.empty(R, np.float32)  # sum v^2 per row: summed only for additive weight noise (the one reader)
    alpha = np.empty(R, np.float32)
    zero = np.empty(R, np.int8)
    aux = np.empty(((pcm + ir) * R, n), np.float32)
    if inp_range is None:
        nm, thres = _NM_CODE[io.noise_management], np.float32(io.nm_thres)
        guard = io.noise_management != NoiseManagement.NONE
    else:  # mvm's alpha.fill(float32(inp_range / inp_bound)): a constant NM scale of that value, no guard
        nm, thres, guard = _k.NM_CONSTANT, np.float32(inp_range / io.inp_bound), False
    cargs = ()
    if counts is not None:
        managed = io.noise_management != NoiseManagement.NONE or io.bound_management != BoundManagement.NONE
        counts.mvms += R
        counts.dig_out += R * m if managed or io.out_scale != 1.0 else 0
        if managed:
            counts.dig_in += R * n
        cargs = counts.fused_pass(R, n, m, g, io.inp_step)  # the input stage adds the sums of the applied inputs
    with kernel_threads(R * (n + m)):
        _k.patch_input_stage(xflat, geo, koff, row0, nm, thres, guard, io.inp_step, io.inp_bound, io.inp_sto_round,
                             io.inp_noise, k0, k1, cu, cn, v, v2 if additive else _EMPTY1, alpha, zero, aux,
                             0 if pcm else -1, R * pcm if ir else -1, *cargs)
        yin = dot(v, (view.Wpos if ir else W).T, out=yin[:R])
        if pcm or ir:
            prod = dot(aux, view.absW.T)
            s_el = prod[:R] if pcm else _EMPTY2
            a_mat = prod[R * pcm:] if ir else _EMPTY2
        else:
            s_el = a_mat = _EMPTY2
        nl, sig2, sw_row = _noise_sigmas(io, v2)
        clipped = np.empty((R, 1), np.int8)
        nclip = np.empty((R, 1), np.int32)
        steps, bounds = adc if adc is not None else adc_arrays(io)
        # mvm's y *= alpha * out_scale (alpha * f with f = 1), then its zero rows, then the tile's factors
        scale = alpha if io.out_scale == 1.0 else alpha * np.float32(io.out_scale)
        _k.output_stage_tiles(yin, _arange(R), np.sqrt(sig2), s_el,
                              np.float32(io.w_noise) ** 2 if pcm else np.float32(0.0), np.float32(io.ir_drop),
                              np.float32(n / io.ir_drop_g_ratio), a_mat, m, np.float32(nl), steps, bounds,
                              io.out_sto_round, io.bm_test_negative_bound,
                              np.array([[k0, k1, cu, cn, cn2, cu2, cw]], np.uint64), clipped, y, sw_row, nclip, row0,
                              _segments((m,)), scale, zero if guard else _EMPTY_I8,
                              _EMPTY1 if col_scale is None else col_scale, _EMPTY1, _EMPTY2)
        if clip_counts is not None:
            clip_counts[0] += int(nclip.sum())
            clip_counts[1] += R * m
