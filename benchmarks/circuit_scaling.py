"""How the fast crossbar solver's cost grows with the array size N (issue 9), in CPU time of one process.

``aimc bench ir-drop --circuit-size N`` times every contender in a process of its own and runs the exact
baselines; above N = 512 that takes longer than a session on a loaded 2-core machine has. This script measures
the same quantities for large N in one process, one thread, on a subset, in CPU time (``time.process_time``,
less sensitive than wall time to other jobs on the machine, though cache sharing still inflates it):

* ``plain_ms``: the plain tile forward (N x N, batch 256, IR drop off; ``aimc.circuit.bench`` contender);
* ``sinh_ms_per_input``: the fast solve of one input of one N x N array of sinh cells (G ~ U(0, 25 uS),
  1 Ohm per segment, inputs U(-0.2, 0.2) V), mean over ``--inputs`` inputs; the tile forward solves two
  arrays (G+ and G-) per input, so ``nonlinear_ratio_est`` = 2 x 256 x that / ``plain_ms``;
* ``state_ms``: the linear per-state solve (``Crossbar.effective``) extrapolated from ``--state-rows`` of the
  N unit-input solves (N / state-rows times their CPU time; the solves are independent and alike).

Run: ``python benchmarks/circuit_scaling.py --sizes 512,1024`` (prints one JSON line per N).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from aimc.bench import set_threads  # noqa: E402
from aimc.circuit.bench import BATCH, make_forward  # noqa: E402
from aimc.circuit.crossbar import Crossbar  # noqa: E402


def cpu_ms(f, repeats: int) -> float:
    f()
    best = float("inf")
    for _ in range(repeats):
        c = time.process_time()
        f()
        best = min(best, time.process_time() - c)
    return best * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--inputs", type=int, default=4, help="sinh inputs timed per N")
    p.add_argument("--state-rows", type=int, default=64, help="unit-input solves timed per N")
    args = p.parse_args(argv)
    set_threads(1)
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        G = rng.uniform(0, 25, (n, n))
        plain = cpu_ms(make_forward(None, n, "none"), 5)
        xs = Crossbar(G, 1.0, 1.0, cell="sinh")
        V = rng.uniform(-0.2, 0.2, (args.inputs, n))
        info = {}
        sinh = cpu_ms(lambda: xs.fast(V, info), 1) / args.inputs
        xl = Crossbar(G, 1.0, 1.0)
        k = min(args.state_rows, n)
        state = cpu_ms(lambda: xl.fast(np.eye(n)[:k]), 1) * n / k
        print(json.dumps({"n": n, "plain_ms": round(plain, 2), "sinh_ms_per_input": round(sinh, 2),
                          "sinh_cg_iterations": float(np.mean(info["iterations"])),
                          "nonlinear_ratio_est": round(2 * BATCH * sinh / plain, 1),
                          "state_ms": round(state, 1), "cpu_time": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
