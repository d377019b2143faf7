"""Parallel scaling of the nonlinear (sinh) tile forward of ``aimc bench ir-drop`` (issue 9): 1 against 2 threads.

The contender is the bench's own (``aimc.circuit.bench:make_forward``, N x N sinh cells, batch 256, iterative
bound management: ~2 x (256 + ~175) fast solves per forward). Each thread count runs in processes of its own
(``aimc.bench.timeit_isolated``; the four contenders alternate over ``--rounds``, the best round's
median kept), timed twice: wall time (what the bench
reports) and the process's CPU time (all threads: the work done, whatever else runs on the machine). So

* ``speedup`` = wall(1 thread) / wall(2 threads): 2 on two free cores with perfect scaling;
* ``cpu_growth`` = CPU(2 threads) / CPU(1 thread): the extra work two threads do (spinning, cache or core
  sharing); 1 when the two threads cost what one does.

On a loaded machine the wall times say how much of the cores the process got, not how the code scales: print
the load average beside them (it is in the output) and compare the CPU times.

Run: ``python benchmarks/circuit_threads.py --size 256 --rounds 2`` (one JSON line).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimc.bench import timeit_isolated  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    spec = {"sinh": ("aimc.circuit.bench:make_forward", {"n": args.size, "model": "circuit", "cell": "sinh"})}
    res = {"size": args.size, "load_before": [round(x, 2) for x in os.getloadavg()]}
    best: dict[str, float] = {}
    for _ in range(args.rounds):            # the four contenders alternate, round after round
        for cpu in (False, True):
            for th in (1, 2):
                a = SimpleNamespace(threads=th, repeats=args.repeats, batch=256, size=args.size)
                ms = timeit_isolated(spec, a, rounds=1, warmup=1, cpu=cpu)["sinh"]
                key = f"{'cpu' if cpu else 'wall'}_ms_{th}t"
                best[key] = min(best.get(key, float("inf")), ms)
    res.update({k: round(v, 1) for k, v in best.items()})
    res["speedup"] = round(res["wall_ms_1t"] / res["wall_ms_2t"], 3)
    res["cpu_growth"] = round(res["cpu_ms_2t"] / res["cpu_ms_1t"], 3)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
