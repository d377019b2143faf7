"""What a tile really did: exact event counts of its analog reads (issue 10; circuits_and_cost.md §B.2, §D.3).

Counting is always on and cheap: integers per pass, plus one O(rows x in) sweep over the applied inputs
(``aimc.kernels.cost.input_sums``) for the data-dependent array energy. Turning counts into joules, seconds
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

from dataclasses import dataclass, field, fields

import numpy as np

from ..kernels.cost import input_sums, input_sums_serial

_SERIAL_BELOW = 1 << 16  # elements per pass below which the sweep runs on the calling thread


@dataclass
class Counts:
    """Event counts of one direction of one tile (or, summed, of a layer or a model).

    An MVM is one input vector read by the array; a pass is one analog read of it (bound management reads
    a vector again with halved inputs: ``rereads`` = passes - mvms). Conversions are counted per line and
    pass: one DAC conversion per input line, one ADC conversion per output line. Digital operations:
    ``dig_in`` input scalings x / (alpha f) before the DAC (noise / bound management), ``dig_out`` output
    rescalings by alpha f, ``dig_comp`` digital column scale / drift compensation multiplies, ``dig_partial``
    additions of partial sums across tiles of a split matrix (counted on the TileArray). ``pulses``: non-zero
    inputs applied (one driver pulse each, PWM or amplitude); ``bit_pulses``: set bits of the DAC codes (the
    pulses of a bit-serial drive).

    The bit-plane sums (``e_bits``, ``bit_pulses``) cost a popcount per input, so they are counted only while
    ``bit_planes`` is true (``aimc.cost.prepare`` sets it for bit-serial cards); ``bit_passes`` says how many
    passes had them counted.
    """

    mvms: int = 0
    passes: int = 0
    dac: int = 0
    pulses: int = 0
    bit_pulses: int = 0
    adc: int = 0
    dig_in: int = 0
    dig_out: int = 0
    dig_comp: int = 0
    dig_partial: int = 0
    e_amp: float = 0.0
    e_pwm: float = 0.0
    e_bits: float = 0.0
    bit_passes: int = 0
    bit_planes: bool = field(default=False, compare=False, repr=False)  # a switch, not a count

    @property
    def rereads(self) -> int:
        """Bound-management re-reads (passes beyond the first of each MVM)."""
        return self.passes - self.mvms

    def _sums(self):
        return [f.name for f in fields(self) if f.name != "bit_planes"]

    def __iadd__(self, other: "Counts") -> "Counts":
        for name in self._sums():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def __add__(self, other: "Counts") -> "Counts":
        out = Counts(**{name: getattr(self, name) for name in self._sums()})
        out += other
        return out

    def reset(self) -> None:
        """Zero every count (the ``bit_planes`` switch stays)."""
        for name in self._sums():
            setattr(self, name, type(getattr(self, name))(0))

    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self._sums()}
        d["rereads"] = self.rereads
        return d

    def add_pass(self, v: np.ndarray, inv: np.ndarray, g: np.ndarray | None, step: float, m: int) -> None:
        """Count one analog pass of the R rows of applied inputs ``v`` (R x n; applied input = v * inv per row)
        on an array with ``m`` output lines and per-input-line conductance ``g`` (n,) in uS."""
        R, n = v.shape
        self.passes += R
        self.dac += R * n
        self.adc += R * m
        if R == 0:
            return
        if g is None:
            g = np.zeros(n, np.float32)
        s = np.empty((R, 5), np.float64)
        bits = self.bit_planes and step > 0
        (input_sums_serial if R * n < _SERIAL_BELOW else input_sums)(v, inv, g, float(step) if bits else 0.0, s)
        self.bit_passes += R if bits else 0
        t = s.sum(axis=0)
        self.e_amp += float(t[0])
        self.e_pwm += float(t[1])
        self.e_bits += float(t[2])
        self.pulses += int(t[3])
        self.bit_pulses += int(t[4])
