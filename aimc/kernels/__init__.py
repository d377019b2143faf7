"""Every Numba-compiled function of aimc lives in this folder, one module per topic.

``rng`` counter-based random numbers; ``periphery`` fused DAC/ADC/noise passes of the analog MVM;
``drift`` fused programming/drift/read noise of power-law devices; ``pulsed`` pulse-train updates;
``nodal`` nodal analysis of resistive networks with diodes (float64); ``cost`` the input sums of the
cost counters (``aimc.cost``); ``cells`` the LSTM cell's gate arithmetic; ``background`` (plain Python) the compiles of a first run.
Kernels trust their inputs: validation happens at the public entry points.

First run: kernels compile on first use (``cache=True`` keeps them on disk afterwards);
``compile_messages`` says which one is compiling while it happens. Compile time is dominated by the
IR-inlined per-element helpers (philox, box_muller, _log), which the loops need inlined to vectorise
(making the per-row helpers ordinary calls compiled faster but made the forward ~1.3x slower). So the
kernels whose generators depend on a switch (stochastic rounding, input noise, weight noise first,
program-and-verify) are compiled per switch setting, with the switch a constant that removes the unused
generators before typing (``variant``): a run compiles only what it uses.

Serial first, parallel in the background (``njit``, ``mode``): Numba's ``parallel=True`` lowering is more
than half of a kernel's compile time. So a kernel declared ``@njit(parallel=True, ...)`` binds, once per
process, to one of two compilations of the same source: ``"parallel"`` (Numba's thread pool; the steady
state, the same dispatcher ``numba.njit`` would give) once the warm stamp says the parallel compilations of
this exact kernel source are in the on-disk cache, ``"serial"`` (``prange`` is ``range``; cached under a name
of its own) before that. A process that compiled or loaded serial kernels starts, when it exits, a
detached, niced process (``aimc.kernels.background``) that compiles the parallel versions of the
kernels it used into the cache and then writes the stamp. Both give the same numbers: a ``prange`` body
computes its row whichever thread runs it, and the serial copy is compiled with the error model Numba's
parallel loops use (``error_model="numpy"``) and fast-math flags without "arcp" in both (``_FAST``);
tests/test_kernel_modes.py compares a deploy in both modes bit for bit.
During a first ``aimc deploy`` a helper process compiles half of the serial kernels meanwhile
(``background.helper``). ``AIMC_KERNELS=serial|parallel`` forces a mode (and starts no background compile);
``AIMC_BACKGROUND_COMPILE=0`` keeps the automatic mode but starts no background process.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import sys
import time
import types
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_mode: str | None = None       # "serial" or "parallel", decided on the first parallel kernel (``mode``)
_forced = False                # the mode came from AIMC_KERNELS (then no background compile)
_stamp: Path | None = None     # the warm stamp of this kernel source in the kernels' cache folder
_serial: dict = {}             # (function, options) -> its serial dispatcher (one per kernel and options)
_bound: list = []              # [recipe, options, dispatcher] of every serial binding (``_at_exit``)
_started = False               # this process started its background compile
_say = None                    # a stream to tell the user about the background compile (``compile_messages``)


def source_key() -> str:
    """What the parallel compilations in the cache depend on: this folder's kernel sources, Numba, Python."""
    import numba
    h = hashlib.sha256(f"{numba.__version__} {sys.version_info[:2]} {sys.platform}".encode())
    for p in sorted(_HERE.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stamp_path() -> Path | None:
    """The warm stamp: a file in the folder where Numba caches these kernels (found by Numba's own cache
    locators, so ``NUMBA_CACHE_DIR`` and read-only installs are followed), named after ``source_key``. Its
    suffix is ``.nbi`` so that deleting the cache (``find aimc -name "*.nb[ic]" -delete``) deletes it too.
    None if the folder cannot be told (then kernels bind to their parallel compilation, as plain Numba)."""
    try:
        from numba.core.caching import CacheImpl
        for cls in CacheImpl._locator_classes:
            loc = cls.from_function(source_key, __file__)
            if loc is not None:
                return Path(loc.get_cache_path()) / f"aimc-parallel-ready-{source_key()}.nbi"
    except Exception:   # numba internals moved: behave as plain numba.njit
        return None
    return None


def mode() -> str:
    """``"parallel"`` or ``"serial"``: which compilation the ``parallel=True`` kernels of this process bind to
    (decided once, on the first such kernel: ``AIMC_KERNELS`` if set, else whether the warm stamp exists)."""
    global _mode, _forced, _stamp
    if _mode is None:
        env = os.environ.get("AIMC_KERNELS", "")
        if env not in ("", "serial", "parallel"):
            raise ValueError(f"AIMC_KERNELS must be 'serial' or 'parallel', got {env!r}")
        _forced = bool(env)
        if env:
            _mode = env
        else:
            _stamp = stamp_path()
            _mode = "parallel" if _stamp is None or _stamp.exists() else "serial"
    return _mode


def njit(*args, **options):
    """``numba.njit`` for aimc's kernels; a kernel with ``parallel=True`` binds to the compilation ``mode``
    names (module doc). Used as ``@njit(...)`` or ``njit(...)(f)``, with options only."""
    import numba
    if args:
        if len(args) == 1 and callable(args[0]) and not options:
            return numba.njit(args[0])
        raise TypeError("aimc.kernels.njit takes options only (no signatures)")
    if not options.get("parallel"):
        return numba.njit(**options)

    options = _no_arcp(options)

    def bind(f):
        return numba.njit(**options)(f) if mode() == "parallel" else _serial_binding(f, options)

    return bind


_FAST = {"nnan", "ninf", "nsz", "contract", "afn", "reassoc"}
"""What ``fastmath=True`` means for a parallel kernel and its serial copy: every fast-math flag but "arcp"
(x / y -> x * (1 / y)). With "arcp", LLVM rewrote divisions by loop invariants differently in a serial loop
and in a parallel loop's outlined body: ``drift.powerlaw_rel`` and ``powerlaw_program_inline`` gave other last
bits in ~9 % of the elements of a deploy; without it, the same bits in both (tests/test_kernel_modes.py), and
no slower (powerlaw_rel on a 512 x 196 array: 0.50 ms against 0.72 ms with "arcp", load 6)."""


def _no_arcp(options: dict) -> dict:
    fm = options.get("fastmath")
    if not fm:
        return options
    return {**options, "fastmath": _FAST if fm is True else set(fm) - {"arcp"}}


def serial(f, **options):
    """The serial compilation of ``f`` (a ``prange`` loop runs as ``range``) with ``options``, under a cache
    name of its own (a plain ``numba.njit`` of the same function would share the parallel version's cache
    entries); memoised, so a kernel's cold binding and an explicit serial twin are one dispatcher."""
    import numba
    opts = {**_no_arcp(options), "parallel": False, "error_model": "numpy"}
    key = (f, tuple(sorted((k, repr(sorted(v) if isinstance(v, (set, frozenset)) else v)) for k, v in opts.items())))
    d = _serial.get(key)
    if d is None:
        copy = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
        copy.__kwdefaults__, copy.__doc__, copy.__module__ = f.__kwdefaults__, f.__doc__, f.__module__
        copy.__qualname__ = f"{f.__qualname__}.serial"      # Numba names cache files by qualname
        d = _serial[key] = numba.njit(**opts)(copy)
    return d


def _serial_binding(f, options):
    d = serial(f, **options)
    if not any(e[2] is d for e in _bound):
        recipe = None if "<locals>" in f.__qualname__ else ("attr", f.__module__, f.__qualname__)
        _bound.append([recipe, options, d])   # variants get their recipe from ``variant``
        if len(_bound) == 1 and not _forced:
            atexit.register(_at_exit)
    return d


def variant(build):
    """Memoised ``build(*switches)`` -> the kernel compiled with those switches as constants (module doc);
    remembers how the kernel was built so the background compile can build its parallel version."""
    @functools.cache
    def get(*switches):
        k = build(*switches)
        for e in _bound:
            if e[2] is k:
                e[0] = ("variant", build.__module__, build.__qualname__, switches)
        return k

    return functools.wraps(build)(get)


def start_background():
    """Start the background compile of the parallel versions of the kernels this process bound serially
    (``aimc.kernels.background``); its ``subprocess.Popen``, or None when there is nothing to do (a forced
    mode, ``AIMC_BACKGROUND_COMPILE=0``, the stamp already there, no serial kernel used) or it failed to
    start. Called when the process exits; whoever wants the parallel kernels sooner may call it (and wait)."""
    global _started
    if _started or _forced or os.environ.get("AIMC_BACKGROUND_COMPILE", "1") == "0" or _stamp is None or _stamp.exists():
        return None
    jobs = [(recipe, options, list(d.signatures)) for recipe, options, d in _bound if recipe and d.signatures]
    if not jobs:
        return None
    from . import background
    proc = background.start(jobs, _stamp)
    _started = proc is not None
    if proc is not None and _say is not None:
        _say.write(f"aimc: compiling the multi-threaded kernels in the background (process {proc.pid}, "
                   f"niced); runs after it has finished use them\n")
        _say.flush()
    return proc


def _at_exit() -> None:
    start_background()


@contextlib.contextmanager
def compile_messages(enabled: bool = True, stream=None):
    """While active, say on ``stream`` (stderr) which aimc kernel Numba is compiling and how long it took.

    Kernels compile on their first call after install (then load from the on-disk cache in milliseconds),
    so this prints only on a first run; ``aimc deploy`` wraps its work in it.
    """
    global _say
    if not enabled:
        yield
        return
    from numba.core import event
    out = stream or sys.stderr
    _say = out
    first = [mode() == "serial"]

    class _Say(event.Listener):
        def __init__(self):
            self.depth, self.t0 = 0, 0.0

        def _name(self, ev):
            d = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            mod = getattr(getattr(d, "py_func", None), "__module__", "") or ""
            return f"{mod.rsplit('.', 1)[-1]}.{d.py_func.__name__}" if mod.startswith("aimc.kernels") else None

        def on_start(self, ev):
            name = self._name(ev)
            if name is None:
                return
            if self.depth == 0:
                self.t0 = time.perf_counter()
                if first[0]:
                    first[0] = False
                    out.write("\naimc: compiling kernels (first run after install): single-threaded versions "
                              "now, cached afterwards; the multi-threaded ones compile in the background after "
                              "this run")
                out.write(f"\naimc: compiling kernel {name} (first run after install; cached afterwards) ...")
                out.flush()
            self.depth += 1

        def on_end(self, ev):
            if self._name(ev) is None:
                return
            self.depth -= 1
            if self.depth == 0:
                out.write(f" {time.perf_counter() - self.t0:.1f} s\n")
                out.flush()

    with event.install_listener("numba:compile", _Say()):
        yield
