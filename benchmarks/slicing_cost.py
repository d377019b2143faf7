"""``slicing_cost_ratio`` of ``aimc bench ir-drop`` alone, at several array sizes (issue 9, "Speed", last bullet).

The forward of 8-bit weights over 2-bit cells (4 slices) over 4 plain one-read forwards of the same N x N
tile (batch 256, no bound management), each contender in processes of its own
(``aimc.circuit.bench.slicing_times``): wall time at ``--threads``, and CPU time on one thread (the work
alone). Prints one JSON line per size with the load average before and after.

Run: ``python benchmarks/slicing_cost.py --sizes 64,128,256``.
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

from aimc.circuit.bench import SLICES, slicing_times  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    for n in (int(s) for s in args.sizes.split(",")):
        load0 = os.getloadavg()[0]
        t = slicing_times(SimpleNamespace(threads=args.threads, repeats=args.repeats, batch=256, size=n), n)
        print(json.dumps({"n": n, **{k + "_ms": round(v, 3) for k, v in t.items()},
                          "slicing_cost_ratio": round(t["sliced"] / (SLICES * t["plain_1read"]), 3),
                          "slicing_cost_ratio_1thread": round(t["sliced_1t"] / (SLICES * t["plain_1read_1t"]), 3),
                          "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)]}), flush=True)


if __name__ == "__main__":
    main()
