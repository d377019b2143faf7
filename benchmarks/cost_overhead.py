"""Overhead of the always-on cost counting (issue 10: <= 5 % of a forward).

Times ``Tile.forward`` (default IO) with counting against the same call with the counters detached
(``periphery.mvm`` without ``counts`` and no per-line conductance), alternating the two in one process so that
load from other jobs hits both alike; reports the ratio of the fastest of ``--reps`` calls of each (the least
disturbed ones). Cases: 512 x 512 at batch 1024 and 64; 784 -> 256 at batch 10 forward only, and with a weight
rewrite before every forward (``set_weights``, as training does), where the per-line conductance of the new
weights is recomputed once. Bit-plane sums (bit-serial cards only) are off, as by default.

Also times counting one pass alone (``Counts.add_pass``) against the BLAS product of the same pass.

Run: ``python benchmarks/cost_overhead.py [--reps 300]``.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aimc  # noqa: E402
import aimc.cost  # noqa: E402
import aimc.tile as _tile  # noqa: E402
from aimc import periphery  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    counted, line_g = periphery.mvm, _tile.Tile.line_conductance

    def uncounted(view, x, io, stream, counts=None, g=None):
        return counted(view, x, io, stream)

    def arm(on: bool):
        _tile.mvm = counted if on else uncounted
        _tile.Tile.line_conductance = line_g if on else (lambda self, direction="forward": None)

    for (m, n, B, rewrite) in ((512, 512, 1024, False), (512, 512, 64, False), (256, 784, 10, False),
                               (256, 784, 10, True)):
        W = rng.standard_normal((m, n)).astype(np.float32)
        x = rng.standard_normal((B, n)).astype(np.float32)
        t = aimc.Tile(m, n, seed=0)
        t.set_weights(W)
        best = {True: np.inf, False: np.inf}
        for i in range(args.reps):
            for on in (True, False):
                arm(on)
                if rewrite:
                    W[0, 0] += 1e-3
                a = time.perf_counter()
                if rewrite:
                    t.set_weights(W)
                t.forward(x)
                best[on] = min(best[on], time.perf_counter() - a)
        arm(True)
        c = aimc.cost.Counts()
        v = np.clip(x, -1, 1)
        g = t.line_conductance()
        k = {"count": np.inf, "dot": np.inf}
        for i in range(args.reps):
            a = time.perf_counter(); c.add_pass(v, np.ones(B, np.float32), g, 1 / 63, m)
            k["count"] = min(k["count"], time.perf_counter() - a)
            a = time.perf_counter(); np.dot(v, W.T)
            k["dot"] = min(k["dot"], time.perf_counter() - a)
        print(f"{'':33s}counting one pass {k['count'] * 1e3:.3f} ms = {k['count'] / k['dot']:.3f} x the BLAS "
              f"product of the pass ({k['dot'] * 1e3:.3f} ms)")
        what = "set_weights + forward" if rewrite else "forward"
        print(f"{n:4d} -> {m:3d}, batch {B:5d}, {what:21s}: counted {best[True] * 1e3:7.3f} ms, "
              f"uncounted {best[False] * 1e3:7.3f} ms, ratio {best[True] / best[False]:.3f}")


if __name__ == "__main__":
    main()
