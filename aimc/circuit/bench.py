"""``aimc bench ir-drop``: the circuit model's cost and accuracy (aimc/circuit/crossbar.py), ratios measured in one run.

Keys (N x N array, batch 256, g ~ U(0, 25 uS), 1 Ohm per word- and bit-line segment, inputs ~ U(0, 1) at
v_read 0.2 V; every timing in a process of its own):

* ``ratio``: tile forward with the circuit model (linear cells; the state solve done) over the same tile's
  forward with the same periphery (aimc defaults) and no IR drop.
* ``state_solve_speedup``: the exact baseline -- factorise the array's sparse nodal system once (scipy ``splu``)
  and solve it for every input line -- over the fast per-state solve (``Crossbar.effective``) of the same array.
* ``nonlinear_ratio``: tile forward with sinh cells (a fast circuit solve per input) over the plain forward;
  ``nonlinear_ms_per_input`` beside it. Both forwards (and the fast state solve) are the best of two rounds
  of processes, the median of the repeats in each.
* ``max_error``: the fast solver's largest deviation from the exact solve over the largest exact output, for a
  batch of random inputs (``max_error_random``) and for all inputs on (``max_error_all_on``); sinh cells:
  ``nonlinear_max_error`` (two inputs, exact = sparse Newton; N <= 128).
* ``slicing_cost_ratio``: the forward of 8-bit weights over 2-bit cells (4 slices, one read each) over 4 plain
  forwards, both without bound management (whose re-reads depend on the data: a sliced forward with the default
  iterative BM re-reads its slices' clipped rows as well); ``slicing_cost_ratio_1thread`` the same on one
  thread in CPU time (see ``slicing_times``).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

BATCH = 256
SLICE_BITS = (8, 2)  # sliced contender: 8-bit weights over 2-bit cells = 4 slices, 4 reads per forward
SLICES = -(-(SLICE_BITS[0] - 1) // SLICE_BITS[1])
SLICING_ROUNDS, SLICING_REPEATS = 3, 40  # the slicing pair is cheap: more processes and repeats against noise
EXACT_MAX = 256  # the splu baseline / exact comparisons above this size take too long here (2 cores)


def _array(n: int):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 25, (n, n))


def _tile(n: int, model: str, cell: str = "linear", sliced: bool = False, bm: str = "iterative"):
    from ..core.config import ArrayConfig, IOConfig, MappingConfig, TileConfig
    from ..core.tile import Tile
    rng = np.random.default_rng(1)
    W = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    m = MappingConfig(max_in=0, max_out=0)
    if sliced:
        m = m.replace(kind="sliced", weight_bits=SLICE_BITS[0], bits_per_cell=SLICE_BITS[1])
    cfg = TileConfig(mapping=m, forward=IOConfig(bound_management=bm),
                     array=ArrayConfig(model=model, wire_row_ohm=1.0, wire_col_ohm=1.0, cell=cell))
    tile = Tile(n, n, cfg, seed=0)
    tile.set_weights(W)
    x = rng.uniform(-1, 1, (BATCH, n)).astype(np.float32)
    return tile, x


def make_forward(args, n: int, model: str, cell: str = "linear", sliced: bool = False, bm: str = "iterative"):
    tile, x = _tile(n, model, cell, sliced, bm)
    return lambda: tile.forward(x)


def make_state_fast(args, n: int):
    from .crossbar import Crossbar
    xb = Crossbar(_array(n), 1.0, 1.0)
    return lambda: xb.effective("fast")


def make_state_exact(args, n: int):
    """The exact baseline: splu of the nodal system once, then a solve for every input line."""
    import scipy.sparse.linalg as sla
    from .crossbar import Crossbar
    net, clamped, _, _ = Crossbar(_array(n), 1.0, 1.0).network()
    lff, lfc, _ = net.reduced_system(clamped)
    rhs = -lfc[:, :n].toarray()

    def run():
        sla.splu(lff.tocsc(), permc_spec="MMD_AT_PLUS_A").solve(rhs)
    return run


def _errors(n: int) -> dict:
    from .crossbar import Crossbar
    rng = np.random.default_rng(2)
    G = _array(n)
    out = {}
    V = rng.uniform(0, 0.2, (31, n))
    xb = Crossbar(G, 1.0, 1.0)
    for key, v in (("max_error_random", V), ("max_error_all_on", np.full((1, n), 0.2))):
        e = xb.exact(v)
        out[key] = float(np.abs(xb.fast(v) - e).max() / np.abs(e).max())
    out["max_error"] = max(out["max_error_random"], out["max_error_all_on"])
    e_ideal = V @ G
    e = xb.exact(V)
    out["ideal_vs_exact_rel_l2"] = float(np.linalg.norm(e_ideal - e) / np.linalg.norm(e))
    if n <= 128:  # the exact sparse Newton of a larger array takes minutes per input here
        xs = Crossbar(G, 1.0, 1.0, cell="sinh")
        v = np.vstack([rng.uniform(0, 0.2, (1, n)), np.full((1, n), 0.2)])
        e = xs.exact(v)
        out["nonlinear_max_error"] = float(np.abs(xs.fast(v) - e).max() / np.abs(e).max())
    return out


def slicing_times(args, n: int) -> dict:
    """The slicing pair (plain one-read forward, sliced forward), each contender in processes of its own,
    alternating over ``SLICING_ROUNDS`` rounds of at least ``SLICING_REPEATS`` repeats (the best round's median):
    wall time at ``args.threads``, and CPU time on one thread (``*_1t``: the work alone, robust to other jobs'
    load; on a loaded machine a wall-clock read at 2 threads costs a scheduler time slice per parallel region
    of the product, whatever its size: torch's 256x64 @ 64x256 product took 0.04-32 ms at load 7 here)."""
    from ..bench import timeit_isolated
    many = SimpleNamespace(**{**vars(args), "repeats": max(args.repeats, SLICING_REPEATS)})
    one = SimpleNamespace(**{**vars(many), "threads": 1})
    pair = {"plain_1read": ("aimc.circuit.bench:make_forward", {"n": n, "model": "none", "bm": "none"}),
            "sliced": ("aimc.circuit.bench:make_forward", {"n": n, "model": "none", "sliced": True, "bm": "none"})}
    t = timeit_isolated(pair, many, rounds=SLICING_ROUNDS)
    t.update({k + "_1t": v for k, v in timeit_isolated(pair, one, rounds=SLICING_ROUNDS, cpu=True).items()})
    return t


def bench_ir_drop(args) -> dict:
    from ..bench import timeit_isolated
    n = int(getattr(args, "circuit_size", 256))
    if n < 2:
        raise ValueError("--circuit-size must be >= 2")
    t = timeit_isolated({"plain": ("aimc.circuit.bench:make_forward", {"n": n, "model": "none"}),
                         "circuit": ("aimc.circuit.bench:make_forward", {"n": n, "model": "circuit"})}, args)
    t.update(slicing_times(args, n))
    slow = SimpleNamespace(**{**vars(args), "repeats": 3 if n <= 512 else 1})
    t.update(timeit_isolated({"sinh": ("aimc.circuit.bench:make_forward",
                                       {"n": n, "model": "circuit", "cell": "sinh"}),
                              "state_fast": ("aimc.circuit.bench:make_state_fast", {"n": n})},
                             slow, rounds=2, warmup=1))   # best of two rounds, as the plain forward's
    res = {"name": "ir-drop", "shape": [n, n], "batch": BATCH, "threads": args.threads,
           "wire_ohm_per_segment": 1.0, "g_max_uS": 25.0, "isolated_processes": True,
           "plain_ms": round(t["plain"], 3), "circuit_ms": round(t["circuit"], 3),
           "ratio": round(t["circuit"] / t["plain"], 3),
           "nonlinear_ms": round(t["sinh"], 1), "nonlinear_ratio": round(t["sinh"] / t["plain"], 1),
           "nonlinear_ms_per_input": round(t["sinh"] / BATCH, 3),
           "state_solve_fast_ms": round(t["state_fast"], 1),
           "plain_1read_ms": round(t["plain_1read"], 3), "sliced_ms": round(t["sliced"], 3),
           "sliced_reads": SLICES, "slicing_cost_ratio": round(t["sliced"] / (SLICES * t["plain_1read"]), 3),
           "slicing_cost_ratio_1thread": round(t["sliced_1t"] / (SLICES * t["plain_1read_1t"]), 3)}
    if n <= EXACT_MAX:
        once = SimpleNamespace(**{**vars(args), "repeats": 1})
        t.update(timeit_isolated({"state_exact": ("aimc.circuit.bench:make_state_exact", {"n": n})},
                                 once, rounds=1, warmup=0))
        res["state_solve_exact_ms"] = round(t["state_exact"], 1)
        res["state_solve_speedup"] = round(t["state_exact"] / t["state_fast"], 2)
        res.update({k: float(f"{v:.3g}") for k, v in _errors(n).items()})
    else:
        res["state_solve_speedup"] = None
        res["max_error"] = None
        res["note"] = f"exact baseline and errors only up to N = {EXACT_MAX}"
    return res
