"""Overhead of the always-on cost counting (issue 10: <= 5 % of a forward at every batch size).

Two contenders, each in its own process: ``Tile.forward`` (default IO) as shipped, with counting, and the same
call with the counters detached (``Tile._read`` handed no ``counts``: no sweep, no per-line conductance, no
bookkeeping; ``Tile.set_weights`` writes with numpy's plain copy / division, without the per-line sums). The processes alternate for ``--rounds`` rounds so that load from other jobs hits both alike;
each process reports the fastest of ``--reps`` calls (the least disturbed one) and the ratio is taken of the
fastest per contender over the rounds. Cases: 784 -> 256 at batch 1 and 10, 512 x 512 at batch 64 and 1024,
and 784 -> 256 at batch 10 with a weight rewrite before every forward (``set_weights``, as training does: the
per-line conductances of the new weights are summed in the write's own sweep, ``mapping.write_weights``).
Bit-plane sums (bit-serial cards only) are off, as by default.

Where the overhead is: the counted process also times, in the same process, the counting alone on the same
pass — ``Counts.add_pass`` (one kernel call: Python bookkeeping plus the O(batch x in) sweep), the bare kernel
call, and (rewrite case) the write with the sums against the plain write (``write_weights`` with and without
``sums``) — each as a fraction of its own forward.

Run: ``python benchmarks/cost_overhead.py [--reps 200] [--rounds 3] [--cases 0,1,2,3,4]``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = [  # (out, in, batch, rewrite)
    (256, 784, 1, False),
    (256, 784, 10, False),
    (512, 512, 64, False),
    (512, 512, 1024, False),
    (256, 784, 10, True),
]


def _best(f, reps):
    b = np.inf
    for _ in range(reps):
        a = time.perf_counter()
        f()
        b = min(b, time.perf_counter() - a)
    return b


def child(mode: str, case: int, reps: int) -> dict:
    import aimc
    import aimc.tile as _tile
    from aimc.cost import Counts
    from aimc.kernels.cost import input_sums, input_sums_serial

    m, n, B, rewrite = CASES[case]
    from aimc.core import mapping as _map
    write = _map.write_weights
    if mode == "uncounted":
        read = _tile.Tile._read

        def uncounted(self, parts, x, direction, **kw):
            kw.pop("counts", None)
            return read(self, parts, x, direction, **kw)
        _tile.Tile._read = uncounted
        _map.write_weights = lambda W, scale, cfg, **kw: write(W, scale, cfg, sums=False)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, n)).astype(np.float32)
    x = rng.standard_normal((B, n)).astype(np.float32)
    t = aimc.Tile(m, n, seed=0)
    t.set_weights(W)
    t.forward(x)  # warm: compiled kernels loaded from the cache

    def step():
        if rewrite:
            W[0, 0] += 1e-3
            t.set_weights(W)
        t.forward(x)
    out = {"forward": _best(step, reps)}
    if mode == "counted":
        v = np.clip(x, -1, 1)
        g = t.line_conductance()
        c = Counts()
        out["add_pass"] = _best(lambda: c.add_pass(v, None, g, 1 / 63, m), reps)
        buf, acc, noinv = np.empty((B, 5)), np.zeros(5), np.zeros(0, np.float32)
        k = input_sums_serial if B * n < 1 << 16 else input_sums
        out["kernel"] = _best(lambda: k(v, noinv, g, 0.0, buf, acc), reps)
        if rewrite:
            mp = t.config.mapping
            out["write"] = _best(lambda: write(W, None, mp, sums=False), reps)
            out["write+sums"] = _best(lambda: write(W, None, mp), reps)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))),
                    help="indices of the cases to run (default: all)")
    ap.add_argument("--child", choices=("counted", "uncounted"), help=argparse.SUPPRESS)
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.case, args.reps)))
        return
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} (1/5/15 min), "
          f"{os.cpu_count()} cpus; fastest of {args.reps} calls per process, {args.rounds} rounds")
    for i, (m, n, B, rewrite) in enumerate(CASES):
        if str(i) not in args.cases.split(","):
            continue
        res = {"counted": [], "uncounted": []}
        errors = {}
        for _ in range(args.rounds):
            for mode in ("counted", "uncounted"):
                p = subprocess.run([sys.executable, __file__, "--child", mode, "--case", str(i), "--reps",
                                    str(args.reps)], capture_output=True, text=True)
                if p.returncode != 0:
                    errors[mode] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"
                    continue
                res[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
        what = "set_weights + forward" if rewrite else "forward"
        head = f"{n:4d} -> {m:3d}, batch {B:5d}, {what:21s}"
        if errors:
            print(f"{head}: FAILED {errors}")
            continue
        on = min(r["forward"] for r in res["counted"])
        off = min(r["forward"] for r in res["uncounted"])
        best = min(res["counted"], key=lambda r: r["forward"])
        line = (f"{head}: counted {on * 1e3:8.3f} ms, uncounted {off * 1e3:8.3f} ms, ratio {on / off:.3f}; "
                f"in the counted process: add_pass {best['add_pass'] * 1e6:.1f} us "
                f"({100 * best['add_pass'] / best['forward']:.1f} % of its forward), bare kernel "
                f"{best['kernel'] * 1e6:.1f} us")
        if rewrite:
            gcost = best["write+sums"] - best["write"]
            line += (f", write of new weights {best['write'] * 1e6:.1f} us plain, {best['write+sums'] * 1e6:.1f} us "
                     f"with the line sums (+{gcost * 1e6:.1f} us, {100 * gcost / best['forward']:.1f} %)")
        print(line, flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main()
