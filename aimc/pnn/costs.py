"""Cost accounting for training physical neural networks (numpy only; no torch).

Every training method of :mod:`aimc.pnn` reports the same counters, so methods can be compared at equal
budget (reference: training.md §3.10 item 4, "end-to-end training energy and time, including digital
overhead, data movement and hardware round trips").

Counters (:class:`Costs`), all exact integers counted by the code that does the work:

=====================  ==================================================================================
``phys_passes``        samples pushed through the *whole* physical network (one per example per forward)
``phys_calls``         batched whole-network forward calls (one host -> chip -> host transaction each)
``phys_mvms``          analog matrix-vector products: one input vector through one weight matrix
                       (forward reads, transposed reads and reads of analog feedback matrices)
``phys_macs``          analog multiply-accumulates = sum over MVMs of rows x columns of the matrix read
``relaxations``        steady states of an energy-based physical network (EP / coupled learning)
``device_writes``      cells (weights) reprogrammed: counted as the number of matrix entries whose written
                       value changed (a digital update followed by a rewrite)
``pulses``             update pulses of an in-situ (pulsed, rank-1) update, when the optimizer reports them
``digital_flops``      host floating-point operations, counted by formula (see the ``*_flops`` helpers)
``round_trips``        host <-> chip transactions (each batched physical call is one)
``bytes_moved``        bytes crossing the host <-> chip link (float32 = 4 bytes per value)
=====================  ==================================================================================

Energy proxy (:data:`ENERGY_PJ`; pJ per operation; every entry says whether it comes from a source or is
an assumption -- change them with ``Costs.energy_pj(table=...)``)::

    E = e_mac*phys_macs + e_relax_edge*relaxation_edges + e_pulse*(pulses + pulses_per_write*device_writes)
        + e_flop*digital_flops + e_byte*bytes_moved + e_round_trip*round_trips

Counting conventions for digital FLOPs (an operation count, not a profiler reading):

* dense ``(B, n) @ (n, m)``: ``2 B n m``; adding a bias: ``B m``; an element-wise op: one FLOP per element;
* softmax cross-entropy of ``(B, C)`` logits: ``5 B C`` (max-subtract, exp, sum, log, subtract);
* Adam: :data:`ADAM_FLOPS_PER_PARAM` per parameter per step; SGD (with momentum): 3 per parameter.

Counting happens under a *phase* (``"train"`` or ``"eval"``), so training budgets exclude evaluation.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

__all__ = ["ADAM_FLOPS_PER_PARAM", "ENERGY_PJ", "SGD_FLOPS_PER_PARAM", "CostMeter", "Costs", "adam_flops",
           "ce_flops", "linear_backward_flops", "linear_forward_flops", "outer_flops"]

#: Adam per parameter: m <- b1 m + (1-b1) g (3), v <- b2 v + (1-b2) g^2 (4), bias corrections folded into the
#: step size (1), sqrt(v) + eps (2), divide (1), axpy (2) = 13.
ADAM_FLOPS_PER_PARAM = 13
#: SGD with momentum per parameter: buf <- mu buf + g (2), p <- p - lr buf (2) = 4.
SGD_FLOPS_PER_PARAM = 4

#: Energy per operation in picojoules, with provenance. "source" entries are order-of-magnitude figures from
#: the cited work; "assumption" entries have no single source and should be replaced by the user's numbers.
ENERGY_PJ: dict[str, dict] = {
    "mac": {"pJ": 0.2, "kind": "source",
            "note": "analog MAC including DAC/ADC periphery: ~10 TOPS/W (1 MAC = 2 ops) system-level figure "
                    "of the 64-core PCM chip of Le Gallo et al., Nat. Electron. 6, 680 (2023); applied per MAC"},
    "relax_edge": {"pJ": 0.2, "kind": "assumption",
                   "note": "one conductance of a resistive network taking part in one relaxation costs as much "
                           "as one analog MAC (Ohm's law + Kirchhoff summation in both cases)"},
    "pulse": {"pJ": 10.0, "kind": "assumption",
              "note": "one programming/update pulse on a PCM/RRAM cell; reported values span ~1-100 pJ"},
    "pulses_per_write": {"pJ": 10.0, "kind": "assumption",
                         "note": "not an energy: pulses of one program-and-verify write of one cell (count)"},
    "flop": {"pJ": 2.3, "kind": "source",
             "note": "fp32 add 0.9 pJ and multiply 3.7 pJ averaged, 45 nm (Horowitz, ISSCC 2014)"},
    "byte": {"pJ": 160.0, "kind": "source",
             "note": "off-chip DRAM access, 640 pJ per 32-bit word (Horowitz, ISSCC 2014), per byte moved"},
    "round_trip": {"pJ": 1.0e5, "kind": "assumption",
                   "note": "fixed cost of one host <-> chip transaction (driver, link wake-up): 100 nJ"},
}


def linear_forward_flops(batch: int, n_in: int, n_out: int, bias: bool = True) -> int:
    """Digital y = x W^T (+ b): 2 B n m (+ B m)."""
    return 2 * batch * n_in * n_out + (batch * n_out if bias else 0)


def linear_backward_flops(batch: int, n_in: int, n_out: int, bias: bool = True, input_grad: bool = True) -> int:
    """Backward of a digital linear layer: grad W = g^T x (2 B n m), grad b (B m), grad x = g W (2 B n m)."""
    return 2 * batch * n_in * n_out + (batch * n_out if bias else 0) + (2 * batch * n_in * n_out if input_grad else 0)


def outer_flops(batch: int, n_in: int, n_out: int, bias: bool = True) -> int:
    """A batched outer-product update delta^T h: 2 B n m (+ B m for the bias sum)."""
    return 2 * batch * n_in * n_out + (batch * n_out if bias else 0)


def ce_flops(batch: int, n_classes: int) -> int:
    """Softmax cross-entropy (loss or its gradient) of ``(B, C)`` logits: 5 B C."""
    return 5 * batch * n_classes


def adam_flops(n_params: int) -> int:
    return ADAM_FLOPS_PER_PARAM * n_params


@dataclass
class Costs:
    """The counters of one phase (see the module docstring for their meaning)."""

    phys_passes: int = 0
    phys_calls: int = 0
    phys_mvms: int = 0
    phys_macs: int = 0
    relaxations: int = 0
    relaxation_edges: int = 0
    device_writes: int = 0
    pulses: int = 0
    digital_flops: int = 0
    round_trips: int = 0
    bytes_moved: int = 0

    def __add__(self, other: "Costs") -> "Costs":
        return Costs(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def energy_pj(self, table: dict | None = None) -> float:
        """The energy proxy in pJ (see module docstring); ``table`` overrides entries of :data:`ENERGY_PJ`."""
        t = {k: v["pJ"] for k, v in ENERGY_PJ.items()}
        if table:
            for k, v in table.items():
                if k not in t:
                    raise KeyError(f"unknown energy entry {k!r}; known: {sorted(t)}")
                t[k] = float(v["pJ"] if isinstance(v, dict) else v)
        return (t["mac"] * self.phys_macs + t["relax_edge"] * self.relaxation_edges
                + t["pulse"] * (self.pulses + t["pulses_per_write"] * self.device_writes)
                + t["flop"] * self.digital_flops + t["byte"] * self.bytes_moved
                + t["round_trip"] * self.round_trips)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["energy_uJ"] = self.energy_pj() * 1e-6
        return d


class CostMeter:
    """Counts costs into the current phase. Physical systems, feedback tiles and trainers share one meter.

    Example::

        meter = CostMeter()
        with meter.phase("eval"):
            ...                      # counted into meter.costs["eval"]
        meter.costs["train"].phys_mvms
    """

    def __init__(self):
        self.costs: dict[str, Costs] = {"train": Costs(), "eval": Costs()}
        self.current = "train"

    @contextlib.contextmanager
    def phase(self, name: str):
        prev = self.current
        self.current = name
        self.costs.setdefault(name, Costs())
        try:
            yield self
        finally:
            self.current = prev

    @property
    def c(self) -> Costs:
        return self.costs[self.current]

    @property
    def train(self) -> Costs:
        return self.costs["train"]

    # -- physical side ------------------------------------------------------------------------------------
    def mvm(self, batch: int, n_in: int, n_out: int) -> None:
        """``batch`` analog MVMs of an (n_out x n_in) matrix."""
        c = self.c
        c.phys_mvms += batch
        c.phys_macs += batch * n_in * n_out

    def call(self, batch: int, bytes_in: int, bytes_out: int) -> None:
        """One batched whole-network physical call: a round trip moving the given bytes."""
        c = self.c
        c.phys_passes += batch
        c.phys_calls += 1
        c.round_trips += 1
        c.bytes_moved += bytes_in + bytes_out

    def transfer(self, nbytes: int, round_trip: bool = True) -> None:
        """Bytes moved outside a forward call (e.g. an error vector sent for a transposed read)."""
        c = self.c
        c.bytes_moved += nbytes
        c.round_trips += int(round_trip)

    def relax(self, batch: int, n_edges: int) -> None:
        """``batch`` relaxations of an energy-based network with ``n_edges`` conductances."""
        c = self.c
        c.relaxations += batch
        c.relaxation_edges += batch * n_edges

    def writes(self, n: int) -> None:
        self.c.device_writes += int(n)

    def pulses(self, n: int) -> None:
        self.c.pulses += int(n)

    # -- digital side -------------------------------------------------------------------------------------
    def flops(self, n: int) -> None:
        self.c.digital_flops += int(n)
