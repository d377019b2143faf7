"""The background compile of a first run (plain Python; ``aimc.kernels`` module doc, "Serial first").

A process whose ``parallel=True`` kernels were bound to their serial compilations (no warm stamp yet) calls
``start`` when it exits: a detached child process at low priority (``nice`` 10, its own session, so the
user's terminal and the parent's exit do not stop it) builds the parallel version of every kernel the
parent used, compiles it for every signature the parent used (loading what the cache already holds), and
then writes the warm stamp atomically; processes started after that bind to the parallel versions. One
child at a time compiles (a lock file next to the stamp; a second child leaves at once). A child that dies
leaves no stamp: the next run stays serial and starts another.
"""
from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

NICE = 10
CHILD = [sys.executable, "-c", "from aimc.kernels.background import main; main()"]


def _root() -> str:
    """The folder that holds the ``aimc`` package this process runs (the child must import the same one)."""
    return str(Path(__file__).resolve().parents[2])


def start(jobs, stamp: Path) -> subprocess.Popen | None:
    """Start the child with ``jobs`` ((recipe, options, signatures) of ``aimc.kernels._bound``); its handle, or
    None if it could not be started (the next run tries again)."""
    env = {**os.environ, "AIMC_KERNELS": "parallel",
           "PYTHONPATH": os.pathsep.join(p for p in [_root(), os.environ.get("PYTHONPATH", "")] if p)}
    try:
        proc = subprocess.Popen(CHILD, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        proc.stdin.write(pickle.dumps((str(stamp), jobs)))
        proc.stdin.close()
    except (OSError, pickle.PicklingError):
        return None
    return proc


def _kernel(recipe, options):
    """The parallel dispatcher a recipe names: a module attribute (a dispatcher, or a plain function compiled
    here with ``options``), or a ``variant`` builder called with its switches."""
    from . import njit
    kind, module, qualname = recipe[:3]
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if kind == "variant":
        return obj(*recipe[3])
    return obj if hasattr(obj, "py_func") else njit(**options)(obj)


def compile_jobs(jobs) -> None:
    """Compile (or load from the cache) every signature of every job's parallel kernel."""
    for recipe, options, sigs in jobs:
        k = _kernel(recipe, options)
        for sig in sigs:
            k.compile(sig)


def main() -> None:
    """The child: read (stamp, jobs) from stdin, compile at low priority, write the stamp."""
    stamp, jobs = pickle.loads(sys.stdin.buffer.read())
    stamp = Path(stamp)
    try:
        os.nice(NICE)
    except (AttributeError, OSError):
        pass
    lock = None
    try:
        import fcntl
        lock = open(stamp.with_name("aimc-parallel-compile.lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:       # no fcntl (Windows): compile without the lock
        pass
    except OSError:           # another child is compiling
        return
    if stamp.exists():
        return
    compile_jobs(jobs)
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(f"parallel kernels compiled by process {os.getpid()}: "
                   f"{sorted({'.'.join(map(str, r[1:3])) for r, _, _ in jobs})}\n")
    os.replace(tmp, stamp)
