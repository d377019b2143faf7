"""Overhead of the always-on cost counting on a tile forward (issue 10: <= 5 % of a forward).

Times ``Tile.forward`` (512 x 512, default IO) with counting against the same forward with the counters
detached (``periphery.mvm`` without ``counts``), alternating the two in one process so that load from other
jobs hits both alike; prints the median of the per-pair ratios. ``python benchmarks/cost_overhead.py``
"""
import time

import numpy as np

import aimc
import aimc.tile as _tile
from aimc import periphery


def main(batches=(1024, 64), pairs=200):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((512, 512)).astype(np.float32)
    counted = periphery.mvm

    def uncounted(view, x, io, stream, counts=None, g=None):
        return counted(view, x, io, stream)

    for B in batches:
        x = rng.standard_normal((B, 512)).astype(np.float32)
        t = aimc.Tile(512, 512, seed=0)
        t.set_weights(W)
        t.forward(x)
        ratios, on_t, off_t = [], [], []
        for _ in range(pairs):
            _tile.mvm = counted
            a = time.perf_counter(); t.forward(x); on = time.perf_counter() - a
            _tile.mvm = uncounted
            a = time.perf_counter(); t.forward(x); off = time.perf_counter() - a
            ratios.append(on / off); on_t.append(on); off_t.append(off)
        _tile.mvm = counted
        print(f"batch {B:5d}: forward with counting {np.median(on_t) * 1e3:.3f} ms, without {np.median(off_t) * 1e3:.3f} ms,"
              f" median ratio {np.median(ratios):.3f}")


if __name__ == "__main__":
    main()
