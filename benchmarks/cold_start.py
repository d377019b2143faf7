"""Cold start of ``aimc deploy``: the first run from a fresh clone (Numba compiles), then a warm run.

Each contender (a git revision of this repository) is cloned into a fresh temporary folder (so no Numba
cache exists) and ``python -m aimc deploy --no-files`` (the default model, data, times and 5 chips) runs
there twice, each in a process of its own: the first run compiles the kernels, the second loads them from
the on-disk cache. The compile share is cold - warm. A revision whose first run binds the kernels to their
serial compilations (``aimc.kernels.mode``) starts a background compile of the parallel ones when the cold
run exits; the warm run then runs beside it (as a user's second run would), and the script then waits for
it (``background_s``: from the end of the cold run until the warm stamp appears, at most ``--wait`` s) and
times a third run on the parallel kernels (``steady_s``, the state every later run is in). With ``--baseline REV`` the same is measured for
another revision in the same run, and the ratio of compile shares is printed (machine load affects both).
Each run also reports its CPU time (user + system of the child process): on a shared machine the wall
time grows with the load, the CPU time much less, so ``cold_cpu_s`` is the number to compare across runs
(both are printed next to the load average).

    python benchmarks/cold_start.py                       # HEAD only
    python benchmarks/cold_start.py --baseline main       # HEAD and main, ratio of compile times
    python benchmarks/cold_start.py --record-kernels      # print aimc.kernels.background.FIRST_DEPLOY anew
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _clone(rev: str, where: Path) -> Path:
    dst = where / rev.replace("/", "_")
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(dst)], check=True)
    subprocess.run(["git", "-C", str(dst), "checkout", "--quiet", _resolve(rev)], check=True)
    return dst


def _resolve(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _deploy(clone: Path, threads: int) -> tuple[float, float, str]:
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("NUMBA_CACHE_DIR", None)                      # the cache lives in the clone's __pycache__
    t, c = time.perf_counter(), _children_cpu()
    p = subprocess.run([sys.executable, "-m", "aimc", "deploy", "--no-files", "--threads", str(threads)],
                       cwd=clone, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _children_cpu() - c
    if p.returncode != 0:
        raise SystemExit(f"aimc deploy failed in {clone}:\n{p.stderr[-2000:]}")
    return wall, cpu, p.stderr


def _stamps(clone: Path) -> list:
    """The warm stamps of ``aimc.kernels`` (revisions without one have none) in the clone's in-tree cache."""
    return sorted((clone / "aimc" / "kernels" / "__pycache__").glob("aimc-parallel-ready-*"))


def measure(rev: str, where: Path, threads: int, wait: float) -> dict:
    clone = _clone(rev, where)
    cold, cold_cpu, err = _deploy(clone, threads)
    t_end = time.perf_counter()
    warm, warm_cpu, _ = _deploy(clone, threads)
    said = [line.strip() for line in err.replace("\r", "\n").splitlines() if "aimc: compiling" in line]
    out = {"rev": rev, "commit": _resolve(rev)[:10], "cold_s": round(cold, 1), "warm_s": round(warm, 1),
           "compile_s": round(cold - warm, 1), "cold_cpu_s": round(cold_cpu, 1), "warm_cpu_s": round(warm_cpu, 1),
           "compile_cpu_s": round(cold_cpu - warm_cpu, 1), "compile_messages": said}
    if any("background" in line for line in said):
        while not _stamps(clone) and time.perf_counter() - t_end < wait:
            time.sleep(0.5)
        out["background_s"] = round(time.perf_counter() - t_end, 1) if _stamps(clone) else None
        steady, steady_cpu, _ = _deploy(clone, threads)
        out.update(steady_s=round(steady, 1), steady_cpu_s=round(steady_cpu, 1))
    return out


def record_kernels() -> None:
    """Run a default ``aimc deploy`` here on serial kernels and print what it bound (``FIRST_DEPLOY``)."""
    import pprint
    os.environ.update(AIMC_KERNELS="serial", AIMC_BACKGROUND_COMPILE="0", NUMBA_CACHE_DIR=tempfile.mkdtemp())
    sys.path.insert(0, str(ROOT))
    from numba.core import event
    from aimc.cli import main as cli
    from aimc.kernels import background
    with event.install_recorder("numba:compile") as rec:   # an empty cache: every kernel compiles
        cli(["deploy", "--no-files", "--no-progress"])
    order = [e.data["dispatcher"] for _, e in rec.buffer if e.is_start]
    print("FIRST_DEPLOY: list = " + pprint.pformat(background.recorded(order), width=116, compact=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--baseline", default=None, help="another revision measured in the same run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait", type=float, default=600, help="longest wait for a background compile (s)")
    ap.add_argument("--record-kernels", action="store_true", help=record_kernels.__doc__)
    args = ap.parse_args(argv)
    if args.record_kernels:
        record_kernels()
        return 0
    out = {"load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    with tempfile.TemporaryDirectory(prefix="aimc-cold-") as tmp:
        out["aimc"] = measure(args.rev, Path(tmp), args.threads, args.wait)
        if args.baseline:
            out["baseline"] = measure(args.baseline, Path(tmp), args.threads, args.wait)
            out["compile_ratio"] = round(out["aimc"]["compile_s"] / max(out["baseline"]["compile_s"], 1e-9), 3)
            out["cold_ratio"] = round(out["aimc"]["cold_s"] / out["baseline"]["cold_s"], 3)
            out["compile_cpu_ratio"] = round(out["aimc"]["compile_cpu_s"]
                                             / max(out["baseline"]["compile_cpu_s"], 1e-9), 3)
    out["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
