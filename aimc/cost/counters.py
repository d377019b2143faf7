"""What a tile really did: exact event counts of its analog reads (issue 10; circuits_and_cost.md §B.2, §D.3).

Counting is always on and cheap: integers per pass, plus the sums of the data-dependent array energy, taken by
the input-stage kernels while they write the applied inputs (``Counts.fused_pass``) or, where no such kernel
sees the inputs whole, by one O(rows x in) sweep over them (``aimc.kernels.cost.input_sums``). Turning counts into joules, seconds
and mm^2 happens on request with a technology card (``aimc.cost.report``).

Array energy: a cell (i, j) driven at V_j = v_j V_read for a time t conducts V_j^2 G_ij t. Summed over the
cells of input line j this is V_j^2 t g_j with g_j = sum_i G_ij (all devices of the line, G+ and G-, g_min
included), so one read costs V_read^2 t sum_j v_j^2 g_j — a product, not a per-cell loop. The sums kept are
the encoding-independent parts (uS, with v the applied input at full scale 1):

* ``e_amp`` = sum v^2 g (amplitude encoding: E = V_read^2 t_read e_amp);
* ``e_pwm`` = sum |v| g (pulse-width encoding, t_j = |v_j| / DAC step x t_LSB: E = V_read^2 t_LSB e_pwm / step);
* ``e_bits`` = sum popcount(code) g (bit-serial: each set bit applies V_read for t_bit: E = V_read^2 t_bit e_bits).

g comes from ``Tile.line_conductance``: the programmed, drifted conductances as last read (``program`` /
``drift``), or the conductances the mapping would write for an unprogrammed tile. This is the ideal array
(no wire resistance). The hook for a circuit model of the array is that method: a solver of the wired
array replaces g_j by the conductance the driver of line j really sees (I_j / V_j, wire loss included:
source-side energy V_j I_j t), and the sums above stay exact for amplitude encoding.
"""
from __future__ import annotations

import numpy as np

from ..kernels.cost import input_sums, input_sums_serial

_SERIAL_BELOW = 1 << 16  # elements per pass below which the sweep runs on the calling thread
_NOINV = np.zeros(0, np.float32)  # add_pass without per-row input scales
_INTS = ("mvms", "passes", "slice_reads", "dac", "adc", "dig_in", "dig_out", "dig_comp", "dig_partial",
         "dig_shift", "bit_passes")
_SUMS = ("e_amp", "e_pwm", "e_bits", "pulses", "bit_pulses")  # kept in one float64 array, added to by the kernel


class Counts:
    """Event counts of one direction of one tile (or, summed, of a layer or a model).

    An MVM is one input vector computed by the tile; a pass is one analog read of the array: one per weight
    slice and input cycle of a sliced or bit-serial tile (``Tile._read``; ``slice_reads`` = the reads beyond
    the first of each MVM for its other slices and cycles), and bound management reads a vector again with
    halved inputs (``rereads`` = passes - mvms - slice_reads).
    Conversions are counted per line and pass: one DAC conversion per input line, one ADC conversion per
    output line (so per slice and per cycle). Digital operations: ``dig_in`` input scalings x / (alpha f)
    before the DAC (noise / bound management) and the digital quantisation of bit-serial inputs, ``dig_out``
    output rescalings by alpha f (and by the row abs-max of bit-serial inputs), ``dig_comp`` digital column
    scale / drift compensation multiplies, ``dig_partial`` additions of partial sums across tiles of a split
    matrix (counted on the TileArray), ``dig_shift`` shift-and-adds of the slice and cycle results (one per
    output per slice and cycle). ``pulses``: non-zero inputs applied (one driver pulse each, PWM or
    amplitude); ``bit_pulses``: set bits of the DAC codes (the pulses of a bit-serial drive).

    The bit-plane sums (``e_bits``, ``bit_pulses``) cost a popcount per input, so they are counted only while
    ``bit_planes`` is true (``aimc.cost.prepare`` sets it for bit-serial cards); ``bit_passes`` says how many
    passes had them counted.
    """

    __slots__ = _INTS + ("_acc", "_buf", "bit_planes")

    def __init__(self, **values):
        for name in _INTS:
            setattr(self, name, 0)
        self._acc = np.zeros(len(_SUMS), np.float64)
        self._buf = np.empty((0, len(_SUMS)), np.float64)
        self.bit_planes = False
        for name, v in values.items():
            if name not in _INTS and name not in _SUMS:
                raise TypeError(f"Counts: unknown count {name!r}")
            setattr(self, name, v)

    @property
    def rereads(self) -> int:
        """Bound-management re-reads (passes beyond the first of each MVM, slice and cycle)."""
        return self.passes - self.mvms - self.slice_reads

    def _values(self) -> dict:
        return {name: getattr(self, name) for name in _INTS + _SUMS}

    def __eq__(self, other) -> bool:
        return isinstance(other, Counts) and self._values() == other._values()

    def __repr__(self) -> str:
        return "Counts(" + ", ".join(f"{k}={v!r}" for k, v in self._values().items()) + ")"

    def __iadd__(self, other: "Counts") -> "Counts":
        for name in _INTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._acc += other._acc
        return self

    def __add__(self, other: "Counts") -> "Counts":
        out = Counts()
        out += self
        out += other
        return out

    def reset(self) -> None:
        """Zero every count (the ``bit_planes`` switch stays)."""
        for name in _INTS:
            setattr(self, name, 0)
        self._acc[:] = 0.0

    def to_dict(self) -> dict:
        d = self._values()
        d["rereads"] = self.rereads
        return d

    def add_pass(self, v: np.ndarray, inv: np.ndarray | None, g: np.ndarray | None, step: float, m: int) -> None:
        """Count one analog pass of the R rows of applied inputs ``v`` (R x n, float32; applied input = v * inv
        per row, ``inv`` None: v itself) on an array with ``m`` output lines and per-input-line conductance
        ``g`` (n,) in uS. One kernel call that adds into the totals; no allocation once the buffer fits."""
        R, n = v.shape
        g, buf, acc, bstep = self.fused_pass(R, n, m, g, step)
        if R == 0:
            return
        (input_sums_serial if R * n < _SERIAL_BELOW else input_sums)(
            v, _NOINV if inv is None else inv, g, bstep, buf, acc)

    def fused_pass(self, R: int, n: int, m: int, g: np.ndarray | None, step: float) -> tuple:
        """Count one analog pass of R rows of n applied inputs on ``m`` output lines whose sums an input-stage
        kernel adds itself while it writes the inputs (``kernels.periphery.input_stage``'s ``g``, ``csum``,
        ``cacc``, ``cstep``): the event counts here, and the kernel's arguments returned: (g (n,) float32,
        per-row buffer (>= R, 5) float64, the totals (5,) it adds to, DAC step of the bit-plane sums or 0)."""
        self.passes += R
        self.dac += R * n
        self.adc += R * m
        if g is None:
            g = np.zeros(n, np.float32)
        if self._buf.shape[0] < R:
            self._buf = np.empty((R, len(_SUMS)), np.float64)
        bits = self.bit_planes and step > 0
        if bits and R:
            self.bit_passes += R
        return g, self._buf, self._acc, float(step) if bits else 0.0


def _sum_property(k: int, integer: bool):
    def get(self):
        v = self._acc[k]
        return int(v) if integer else float(v)

    def put(self, value):
        self._acc[k] = value
    return property(get, put)


for _k, _name in enumerate(_SUMS):
    setattr(Counts, _name, _sum_property(_k, _name in ("pulses", "bit_pulses")))
