"""The background compiles of a first run (plain Python; ``aimc.kernels`` module doc, "Serial first").

A process whose ``parallel=True`` kernels were bound to their serial compilations (no warm stamp yet) calls
``start`` when it exits: a detached child process at low priority (``nice`` 10, its own session, so the
user's terminal and the parent's exit do not stop it) builds the parallel version of every kernel the
parent used, compiles it for every signature the parent used (loading what the cache already holds), and
then writes the warm stamp atomically; processes started after that bind to the parallel versions. One
child at a time compiles (a lock file next to the stamp; a second child leaves at once). A child that dies
leaves no stamp: the next run stays serial and starts another.

During a first ``aimc deploy`` (``helper``) a second child compiles the serial kernels that a default deploy
uses (``FIRST_DEPLOY``) in reverse order, at normal priority, while the command compiles them in its own
order: a process that needs a kernel another process has put in the cache meanwhile loads it, so on two
cores the two meet in the middle and the compile part of the first run roughly halves. The command stops
the helper when it ends. ``FIRST_DEPLOY`` is recorded by ``benchmarks/cold_start.py --record-kernels``;
tests/test_kernel_modes.py checks that it is what a default deploy uses.
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


def start(jobs, stamp: Path | None, kernels: str = "parallel", nice: int = NICE) -> subprocess.Popen | None:
    """Start a child compiling ``jobs`` ((recipe, options, signatures) as in ``aimc.kernels._bound``) in mode
    ``kernels`` at priority ``nice``, and writing ``stamp`` when done (None: no stamp, no lock); its handle,
    or None if it could not be started (the next run tries again)."""
    env = {**os.environ, "AIMC_KERNELS": kernels,
           "PYTHONPATH": os.pathsep.join(p for p in [_root(), os.environ.get("PYTHONPATH", "")] if p)}
    try:
        proc = subprocess.Popen(CHILD, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=stamp is not None)
        proc.stdin.write(pickle.dumps((None if stamp is None else str(stamp), jobs, nice)))
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
    """The child: read (stamp, jobs, nice) from stdin, compile, write the stamp (if any)."""
    stamp, jobs, nice = pickle.loads(sys.stdin.buffer.read())
    try:
        if nice:
            os.nice(nice)
    except (AttributeError, OSError):
        pass
    if stamp is None:
        compile_jobs(jobs)
        return
    stamp = Path(stamp)
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


# (recipe, options, argument types) of every kernel a default ``aimc deploy`` binds, in the order it first
# calls them; ``python benchmarks/cold_start.py --record-kernels`` prints it anew
FIRST_DEPLOY: list = [(('variant', 'aimc.kernels.drift', '_powerlaw_program_inline', (False,)),
  {'cache': True, 'fastmath': ['afn', 'contract', 'ninf', 'nnan', 'nsz', 'reassoc'], 'parallel': True},
  ['array(float32, 2d, C)', 'int64', 'array(float64, 1d, C)', 'float32', 'int64', 'uint32', 'uint32', 'uint64',
   'array(float32, 2d, C)', 'array(float32, 2d, C)', 'array(float32, 2d, C)']),
 (('attr', 'aimc.kernels.drift', 'powerlaw_rel'),
  {'cache': True, 'fastmath': ['afn', 'contract', 'ninf', 'nnan', 'nsz', 'reassoc'], 'parallel': True},
  ['array(float32, 2d, C)', 'array(bool, 2d, C)', 'int64', 'array(float64, 1d, C)', 'array(float32, 2d, C)']),
 (('attr', 'aimc.kernels.drift', 'powerlaw_read'),
  {'cache': True, 'fastmath': ['afn', 'contract', 'ninf', 'nnan', 'nsz', 'reassoc'], 'parallel': True},
  ['array(float32, 2d, C)', 'array(float32, 2d, C)', 'array(float32, 2d, C)', 'float64', 'float64', 'uint32',
   'uint32', 'uint64', 'array(float32, 2d, C)']),
 (('attr', 'aimc.kernels.periphery', 'nm_alpha'), {'cache': True, 'parallel': True},
  ['array(float32, 2d, C)', 'int64', 'float32', 'array(float32, 1d, C)']),
 (('variant', 'aimc.kernels.periphery', '_input_stage', (False, False)),
  {'cache': True, 'fastmath': False, 'parallel': True},
  ['array(float32, 2d, C)', 'array(int64, 1d, C)', 'array(float32, 1d, C)', 'float64', 'float64', 'float64',
   'uint32', 'uint32', 'uint64', 'uint64', 'array(float32, 2d, C)', 'array(float32, 1d, C)',
   'array(float32, 2d, C)', 'int64', 'int64', 'array(float32, 1d, C)', 'array(float64, 2d, C)',
   'array(float64, 1d, C)', 'float64']),
 (('variant', 'aimc.kernels.periphery', '_output_stage', (False, False)),
  {'cache': True, 'fastmath': False, 'parallel': True},
  ['array(float32, 2d, C)', 'array(int64, 1d, C)', 'array(float32, 1d, C)', 'array(float32, 2d, C)', 'float32',
   'float32', 'float32', 'array(float32, 2d, C)', 'int64', 'float32', 'array(float32, 1d, C)',
   'array(float32, 1d, C)', 'bool', 'array(uint64, 2d, C)', 'array(int8, 2d, C)', 'array(float32, 2d, C)',
   'array(float32, 1d, C)', 'array(int32, 2d, C)', 'int64', 'array(int64, 1d, C)', 'array(float32, 1d, C)',
   'array(int8, 1d, C)', 'array(float32, 1d, C)', 'array(float32, 1d, C)', 'array(float32, 2d, C)'])]


_SCALARS = {"bool": "boolean"}


def _type(s: str):
    """A numba type from its str(): scalars by name, 'array(float32, 2d, C)' (optionally 'readonly ')."""
    from numba.core import types
    ro = s.startswith("readonly ")
    if ro:
        s = s[len("readonly "):]
    if s.startswith("array(") and s.endswith(")"):
        dt, nd, layout = (p.strip() for p in s[len("array("):-1].split(","))
        return types.Array(getattr(types, _SCALARS.get(dt, dt)), int(nd.rstrip("d")), layout, readonly=ro)
    t = getattr(types, _SCALARS.get(s, s), None)
    if not isinstance(t, types.Type):
        raise ValueError(f"aimc.kernels.background: unknown numba type {s!r}")
    return t


def recorded(order=()) -> list:
    """What this process bound, in the format of ``FIRST_DEPLOY``; dispatchers in ``order`` first, in its order."""
    from . import _bound
    rank = {id(d): i for i, d in enumerate(order)}
    plain = lambda o: {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in o.items()}  # noqa: E731
    return [(recipe, plain(options), [str(t) for t in sig])
            for recipe, options, d in sorted(_bound, key=lambda e: rank.get(id(e[2]), len(rank))) if recipe
            for sig in d.signatures]


def _cached(kernel, sig) -> bool:
    """Whether the on-disk cache holds ``kernel`` for ``sig`` (Numba's cache index, read as the dispatcher
    reads it before compiling)."""
    cache = kernel._cache
    return cache._index_key(sig, kernel.targetctx.codegen()) in cache._cache_file._load_index()


def helper(entries=None):
    """In a process whose kernels bind serially: if some of ``entries`` (default ``FIRST_DEPLOY``) are not in
    the cache, start a child compiling them in reverse order (module doc); its handle (``stop`` it at the
    end) or None."""
    from . import mode
    if mode() != "serial" or os.environ.get("AIMC_BACKGROUND_COMPILE", "1") == "0":
        return None
    try:
        todo = []
        for recipe, options, sig in FIRST_DEPLOY if entries is None else entries:
            types = tuple(_type(t) for t in sig)
            if not _cached(_kernel(recipe, options), types):
                todo.append((recipe, options, [types]))
    except Exception:   # numba internals moved: no helper, the run compiles as before
        return None
    if len(todo) < 2:
        return None
    return start(todo[::-1], None, kernels="serial", nice=0)


def stop(proc) -> None:
    """Stop a ``helper`` if it still runs (what it compiled is cached; the command compiled the rest)."""
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
