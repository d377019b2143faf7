"""Sweep throughput on Dask: 2 workers vs 1 (one thread per worker in both), and the per-task overhead of a
sweep against the same tasks in a plain loop.

    python benchmarks/sweep_scaling.py [--tasks 32] [--rounds 2] [--json]

Tasks: the shipped MNIST-5k MLP on the PCM card, global compensation, drifted to 1 s, 1 d, 1 y (one task =
one chip programmed, drifted, evaluated). Each contender runs in a process of its own, after the same warm-up
(start-up, reported apart from throughput): a task on every worker (imports, Numba cache, data, the model's
digital accuracy, which workers cache), and for the sweeps one ``run_sweep`` of a 1-task spec through the same
engine (the driver's imports for the table files and plots):

* ``loop``: ``aimc.sweep.run_task`` called in a plain loop (no records, no Dask), 1 thread;
* ``loop-trim``: the same loop with ``MALLOC_TRIM_THRESHOLD_=65536``, what Dask sets for its workers by
  default (``aimc.sweep.run.local_cluster`` unsets it);
* ``loop-x2``: two such loops in two processes, half the tasks each, started together: what two cores give
  without any engine (the ceiling of a 2-worker run on this machine at this load);
* ``serial``: ``run_sweep(serial=True)``: the same loop plus an atomic record per task and the table files;
* ``dask-1`` / ``dask-2``: ``run_sweep`` on ``aimc.sweep.run.local_cluster`` of 1 / 2 worker processes x 1 thread.

Rounds alternate the contenders; the best round of each is reported (the machine is shared). Prints the
throughput ratio dask-2 / dask-1 (whole ``run_sweep`` calls: planning, tasks, table files and plots; and the
task phase alone, first submission to last record), the ceiling loop / loop-x2, and the overhead per task:
wall (contender - loop) / tasks for serial and dask-1, (dask-2 - loop-x2) / tasks for dask-2, and CPU
seconds of the contender's processes (driver, scheduler, workers) per task against the loop's, which the
load of a shared machine disturbs less. The 1-minute load average is recorded before and after each
contender.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spec_dict(n: int) -> dict:
    return {"data": "mnist5k", "models": ["default"], "devices": ["pcm-joshi2020"], "compensation": ["global"],
            "times": ["1s", "1d", "1y"], "chips": n, "seed": 0, "threads": 1}


def _task_s(out: Path) -> float:
    """Mean time a task spent inside ``run_task`` (as its worker measured it)."""
    w = [json.loads(p.read_text())["wall_s"] for p in (out / "tasks").glob("*.json")]
    return sum(w) / len(w)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its live children (Dask's worker processes)."""
    try:
        import psutil
    except ImportError:  # no dask either (psutil comes with it): this process alone
        t = os.times()
        return t.user + t.system
    me, tot = psutil.Process(), 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            c = p.cpu_times()
            tot += c.user + c.system
        except psutil.Error:  # a child that ended meanwhile
            pass
    return tot


def _clock(fn) -> dict:
    """Run ``fn`` and return its wall and CPU seconds (this process and its children), with load averages."""
    load0, c, t = os.getloadavg()[0], _cpu_s(), time.perf_counter()
    extra = fn() or {}
    return {"wall_s": time.perf_counter() - t, "cpu_s": _cpu_s() - c, "load_before": load0,
            "load_after": os.getloadavg()[0], **extra}


def contender(name: str, n: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from aimc.sweep import SweepSpec, run_sweep
    from aimc.sweep.run import _plan, _task_dict, run_task
    spec = SweepSpec.from_dict(spec_dict(n))
    tasks = spec.tasks()
    models, _ = _plan(spec)
    path, sha = models["default"]
    ctx = {"model_path": path, "model_sha256": sha, "data": spec.data, "times_s": list(spec.times_s),
           "batch_size": spec.batch_size, "threads": 1, "chip_images": False}
    warm = SweepSpec.from_dict({**spec_dict(1), "seed": 10_000})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        if name in ("loop", "loop-half"):
            run_task(_task_dict(warm.tasks()[0]), ctx)
            startup = time.perf_counter() - t0
            if name == "loop-half":     # one of two processes: start together when the parent says go
                print("ready", flush=True)
                sys.stdin.readline()
            r = _clock(lambda: {"task_s": sum(run_task(_task_dict(task), ctx)["wall_s"] for task in tasks) / n})
            return {"startup_s": startup, **r}

        def sweep(**engine):
            res = run_sweep(spec, Path(d) / "out", **engine)
            return {"task_s": _task_s(Path(d) / "out"), "tasks_wall_s": res.meta["wall_s"]}

        if name == "serial":
            run_sweep(warm, Path(d) / "warm", serial=True)
            startup = time.perf_counter() - t0
            return {"startup_s": startup, **_clock(lambda: sweep(serial=True))}
        from distributed import Client

        from aimc.sweep.run import local_cluster
        nw = int(name.split("-")[1])
        with local_cluster(nw) as cluster, Client(cluster, set_as_default=False) as client:
            wt = _task_dict(warm.tasks()[0])
            futs = [client.submit(run_task, wt, ctx, workers=[w], pure=False, key=f"warm-{i}")
                    for i, w in enumerate(client.scheduler_info()["workers"])]
            client.gather(futs)
            run_sweep(warm, Path(d) / "warm", client=client)   # the driver's warm-up, as serial's
            startup = time.perf_counter() - t0
            return {"startup_s": startup, **_clock(lambda: sweep(client=client))}


def _run(args: list, env: dict) -> dict:
    """One contender in a process of its own; its JSON result, or a RuntimeError with its last error line."""
    out = subprocess.run([sys.executable, __file__, "--contender", *args], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _two_loops(n: int, env: dict) -> dict:
    """The scaling ceiling of this machine: two plain-loop processes (n/2 tasks each), started together."""
    procs = [subprocess.Popen([sys.executable, __file__, "--contender", "loop-half", "--tasks", str(n // 2)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(2)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            for q in procs:
                q.kill()
                q.wait()
            raise RuntimeError("a loop-half process failed before its tasks started")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    rs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return {"startup_s": max(r["startup_s"] for r in rs), "wall_s": max(r["wall_s"] for r in rs),
            "cpu_s": sum(r["cpu_s"] for r in rs), "load_before": min(r["load_before"] for r in rs),
            "load_after": max(r["load_after"] for r in rs), "task_s": sum(r["task_s"] for r in rs) / 2}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", help="comma list of contenders (default: all)")
    ap.add_argument("--contender", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.contender:
        print(json.dumps(contender(a.contender, a.tasks)))
        return 0
    names = ["loop", "loop-trim", "loop-x2", "serial", "dask-1", "dask-2"]
    names = a.only.split(",") if a.only else names
    best: dict = {}
    env = dict(os.environ)  # the user's environment: no thread-pool variables the library does not set
    unknown = [x for x in names if x not in ("loop", "loop-trim", "loop-x2", "serial", "dask-1", "dask-2")]
    if unknown or a.tasks < 2 or a.rounds < 1:
        ap.error(f"unknown contenders {unknown}" if unknown else "--tasks must be >= 2 and --rounds >= 1")
    load_start = os.getloadavg()[0]
    for _ in range(a.rounds):
        for name in names:
            if "error" in best.get(name, {}):
                continue
            try:
                if name == "loop-x2":
                    r = _two_loops(a.tasks, env)
                else:   # loop-trim: the loop in the malloc setting Dask gives its workers by default
                    r = _run(["loop" if name == "loop-trim" else name, "--tasks", str(a.tasks)],
                             {**env, "MALLOC_TRIM_THRESHOLD_": "65536"} if name == "loop-trim" else env)
            except Exception as e:  # reported with its error, never dropped
                best[name] = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
                continue
            if "wall_s" not in best.get(name, {}) or r["wall_s"] < best[name]["wall_s"]:
                best[name] = r
    n = a.tasks
    loop = best.get("loop", {}).get("wall_s")
    res = {"tasks": n, "rounds": a.rounds, "cpus": os.cpu_count(), "loadavg_1min_start": load_start,
           "loadavg_1min": os.getloadavg()[0], "contenders": best}
    for name, r in best.items():
        if "wall_s" in r:
            r["tasks_per_s"] = n / r["wall_s"]
            r["cpu_ms_per_task"] = 1e3 * r["cpu_s"] / n
            ref = {"serial": "loop", "dask-1": "loop", "dask-2": "loop-x2"}.get(name)   # same parallelism
            if ref is not None and "wall_s" in best.get(ref, {}):
                r["overhead_ms_per_task"] = 1e3 * (r["wall_s"] - best[ref]["wall_s"]) / n
            if name in ("serial", "dask-1", "dask-2") and "cpu_s" in best.get("loop", {}):
                r["cpu_overhead_ms_per_task"] = 1e3 * (r["cpu_s"] - best["loop"]["cpu_s"]) / n
    d1, d2 = best.get("dask-1", {}), best.get("dask-2", {})
    if "wall_s" in d1 and "wall_s" in d2:
        res["throughput_ratio_2_vs_1"] = d1["wall_s"] / d2["wall_s"]
        res["tasks_phase_ratio_2_vs_1"] = d1["tasks_wall_s"] / d2["tasks_wall_s"]
    if loop is not None and "wall_s" in best.get("loop-x2", {}):
        res["ceiling_ratio_two_loops"] = loop / best["loop-x2"]["wall_s"]
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{n} tasks (MNIST-5k MLP, PCM, 3 times), best of {a.rounds} rounds, 1-min load average "
          f"{load_start:.1f} at the start, {res['loadavg_1min']:.1f} at the end, on {res['cpus']} CPUs")
    print("| contender | start-up + warm-up (s) | wall (s) | tasks/s | inside a task (s) | overhead (ms/task) vs loop; "
          "dask-2 vs loop-x2 | CPU (ms/task) | CPU overhead (ms/task) vs loop | load before/after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = best.get(name, {})
        if not r:
            continue
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | | | | |")
            continue
        ov = f"{r['overhead_ms_per_task']:.1f}" if "overhead_ms_per_task" in r else ""
        cov = f"{r['cpu_overhead_ms_per_task']:.1f}" if "cpu_overhead_ms_per_task" in r else ""
        print(f"| {name} | {r['startup_s']:.1f} | {r['wall_s']:.2f} | {r['tasks_per_s']:.2f} | {r['task_s']:.3f} | {ov} "
              f"| {r['cpu_ms_per_task']:.0f} | {cov} | {r['load_before']:.1f}/{r['load_after']:.1f} |")
    if "throughput_ratio_2_vs_1" in res:
        print(f"throughput 2 workers / 1 worker: {res['throughput_ratio_2_vs_1']:.2f}x whole sweeps, "
              f"{res['tasks_phase_ratio_2_vs_1']:.2f}x task phase")
    if "ceiling_ratio_two_loops" in res:
        print(f"ceiling on this machine now (two plain loops, half the tasks each, vs one loop): "
              f"{res['ceiling_ratio_two_loops']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
