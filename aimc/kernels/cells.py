"""Recurrent cells: the LSTM cell's digital gate arithmetic in one vectorised pass.

torch's LSTM cell is ten tensor ops (chunk, three sigmoids, two tanh, three products, a sum), each a pass
over the gates and a dispatch; an analog LSTM's time step pays them after every hidden read. ``lstm_cell``
does the same arithmetic per hidden unit in one loop, with float32 exp / sigmoid / tanh that LLVM vectorises
(libm's do not): exp by range reduction to |r| <= ln2/2 and a degree-7 Taylor polynomial (fused
multiply-adds), scaled by 2^n in the exponent bits; sigmoid = 1 / (1 + exp(-x)); tanh = an odd Taylor polynomial below |x| = 1/4 and
1 - 2 / (exp(2|x|) + 1) above. Measured against float64 on [-12, 12] (tests/test_cells.py): sigmoid within
2 ulp, tanh within 5 ulp of the exact value (torch's float32 functions: 1 ulp). No fast-math: the values are
the same in the serial and the parallel compilation and on any thread count (each row is one thread's).
"""
from __future__ import annotations

import numpy as np
from numba import int32, prange, types
from numba.extending import intrinsic

from . import njit  # numba.njit; parallel kernels bind per aimc.kernels.mode()
from .rng import _bits_f32

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)          # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI exact in 9 bits (Cody-Waite)
_LN2_LO = np.float32(-2.1219444005469057e-4)
_ROUND = np.float32(12582912.0)            # 1.5 * 2^23: x + _ROUND - _ROUND rounds x to an integer


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma): the Horner steps below are fused-multiply-adds in every compilation
    (fast-math "contract" would leave the choice to each compilation)."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(inline="always", error_model="numpy", cache=True)
def exp32(x):
    """float32 e^x, x clipped to [-87, 88] (results stay normal numbers: sigmoid(x) below x = -87 is ~6e-39
    instead of smaller, tanh is +-1 there in float32 anyway)."""
    x = x if x > np.float32(-87.0) else np.float32(-87.0)
    x = x if x < np.float32(88.0) else np.float32(88.0)
    n = (x * _LOG2E + _ROUND) - _ROUND
    r = _fma(-n, _LN2_LO, _fma(-n, _LN2_HI, x))
    p = _fma(r, np.float32(1 / 5040), np.float32(1 / 720))
    p = _fma(p, r, np.float32(1 / 120))
    p = _fma(p, r, np.float32(1 / 24))
    p = _fma(p, r, np.float32(1 / 6))
    p = _fma(p, r, np.float32(0.5))
    p = _fma(p, r, np.float32(1.0))
    p = _fma(p, r, np.float32(1.0))
    return p * _bits_f32((int32(n) + 127) << 23)


@njit(inline="always", error_model="numpy", cache=True)
def sigmoid32(x):
    """float32 1 / (1 + e^-x)."""
    return np.float32(1.0) / (np.float32(1.0) + exp32(-x))


@njit(inline="always", error_model="numpy", cache=True)
def tanh32(x):
    """float32 tanh(x): Taylor to x^9 below |x| = 1/4 (next term < 2e-9 relative), 1 - 2 / (e^2|x| + 1) above."""
    a = abs(x)
    x2 = x * x
    p = _fma(x2, np.float32(62 / 2835), np.float32(-17 / 315))
    p = _fma(p, x2, np.float32(2 / 15))
    p = _fma(p, x2, np.float32(-1 / 3))
    small = _fma(p * x2, x, x)
    big = np.float32(1.0) - np.float32(2.0) / (exp32(np.float32(2.0) * a) + np.float32(1.0))
    big = big if x >= np.float32(0.0) else -big
    return small if a < np.float32(0.25) else big


@njit(parallel=True, cache=True)
def lstm_cell(gates, c, h_out, c_out, act):
    """One LSTM step from its gate pre-activations ``gates`` (B, 4H: i, f, g, o as torch.nn.LSTM orders them)
    and cell state ``c`` (B, H): c_out = sigmoid(f) c + sigmoid(i) tanh(g) (one fused multiply-add), h_out = sigmoid(o) tanh(c_out).
    ``c_out`` may be ``c`` (updated in place). ``act`` (B, 5H), or (1, 0) for none: receives sigmoid(i), sigmoid(f),
    tanh(g), sigmoid(o), tanh(c_out) (what the backward needs)."""
    B, H = c.shape
    save = act.shape[1] > 0
    for b in prange(B):
        gi = gates[b, :H]
        gf = gates[b, H:2 * H]
        gg = gates[b, 2 * H:3 * H]
        go = gates[b, 3 * H:]
        cb = c[b]
        co = c_out[b]
        ho = h_out[b]
        a = act[b * int32(save)]
        for j in range(H):
            i = sigmoid32(gi[j])
            f = sigmoid32(gf[j])
            g = tanh32(gg[j])
            o = sigmoid32(go[j])
            cn = _fma(f, cb[j], i * g)
            tc = tanh32(cn)
            co[j] = cn
            ho[j] = o * tc
            if save:
                a[j] = i
                a[H + j] = f
                a[2 * H + j] = g
                a[3 * H + j] = o
                a[4 * H + j] = tc
