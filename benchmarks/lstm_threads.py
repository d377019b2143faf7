"""The thread threshold of the analog LSTM's time steps (issue 14): ``aimc.core.threads.SMALL_WORK_SHARED`` at
its value (2^13: the 64 x 1024 step reads use both cores where numba's pool is torch's) against the older 2^16
(the step reads on the calling thread), beside the digital ``nn.LSTM``, quiet or beside busy processes.

The contenders are ``aimc bench lstm``'s own (``aimc.nn.bench:make_lstm``: 2-layer LSTM 128 -> 256, seq 50,
batch 64, deploy configuration, programmed, drifted to 1 day), each in processes of its own
(``aimc.bench.timeit_isolated``: a user's default process, the contenders alternating over ``--rounds``, the
best round's median kept). ``--busy N`` keeps N single-threaded busy loops running during the measurement (other
work on the machine: every OpenMP region then waits for a time slice).

Run: ``python benchmarks/lstm_threads.py [--busy 1] [--rounds 3] [--repeats 15]`` (one JSON line).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimc.bench import timeit_isolated  # noqa: E402

SPEC = "aimc.nn.bench:make_lstm"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=0, help="single-threaded busy loops beside the measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    if args.busy < 0 or args.rounds < 1 or args.repeats < 1:
        p.error("--busy must be >= 0, --rounds and --repeats >= 1")
    from aimc.core import threads
    contenders = {"shared_2^13": (SPEC, {"kind": "deploy"}),
                  "old_2^16": (SPEC, {"kind": "deploy", "shared_threshold": threads.SMALL_WORK}),
                  "digital": (SPEC, {"kind": "digital"})}
    res = {"load_before": [round(x, 2) for x in os.getloadavg()], "busy": args.busy}
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        a = SimpleNamespace(threads=2, repeats=args.repeats, batch=64, size=0)
        t = timeit_isolated(contenders, a, rounds=args.rounds)
    finally:
        for q in loops:
            q.kill()
            q.wait()
    res.update({f"{k}_ms": round(v, 1) for k, v in t.items()})
    res["ratio_shared"] = round(t["shared_2^13"] / t["digital"], 3)
    res["ratio_old"] = round(t["old_2^16"] / t["digital"], 3)
    res["shared_over_old"] = round(t["shared_2^13"] / t["old_2^16"], 3)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
