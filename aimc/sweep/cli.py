"""``aimc sweep SPEC.toml``: run a sweep spec on Dask (a LocalCluster, or ``--scheduler``) or serially."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("spec", help="the sweep spec (TOML; see aimc/sweep/README.md)")
    p.add_argument("--out", help="results folder; re-running the same spec resumes it "
                                 "(default: aimc-sweeps/<spec name>)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://HOST:8786 "
                                       "(default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes, one thread each (default: the CPU count)")
    p.add_argument("--serial", action="store_true", help="run the tasks in a plain loop in this process")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for --scheduler before failing (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="validate the spec, print the grid size, run nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from .run import SweepError, run_sweep
    from .spec import load_spec
    spec = load_spec(args.spec)
    if args.serial and args.scheduler:
        raise ValueError("--serial runs in this process: drop --scheduler")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.check:
        print(f"aimc sweep: spec {args.spec} is valid: {len(spec.models)} model(s) x {len(spec.devices)} device(s) "
              f"x {len(spec.compensation)} compensation(s) x {len(spec.variants)} variant(s) x {spec.chips} chip(s) "
              f"= {spec.n_tasks} tasks, each through {len(spec.times)} time(s)")
        return 0
    out = Path(args.out) if args.out else Path("aimc-sweeps") / spec.name
    try:
        res = run_sweep(spec, out, scheduler=args.scheduler, workers=args.workers,
                        serial=True if args.serial else None, timeout=args.timeout,
                        progress=not args.no_progress and not args.json)
    except (SweepError, ConnectionError) as e:
        print(f"aimc sweep: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"meta": res.meta, "summary": res.summary(), "files": res.files}, indent=1))
        return 0
    m = res.meta
    print(f"aimc sweep: {spec.name}: {m['ran']} task(s) run, {m['skipped']} already recorded "
          f"({m['engine']}, {m['workers']} worker(s), {m['wall_s']:.1f} s)")
    print(res.table())
    print(f"results: {out}/ (results.csv, results.json, results.h5, summary.csv, plots/)")
    return 0
