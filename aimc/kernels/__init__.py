"""Every Numba-compiled function of aimc lives in this folder, one module per topic.

``rng`` counter-based random numbers; ``periphery`` fused DAC/ADC/noise passes of the analog MVM;
``drift`` fused programming/drift/read noise of power-law devices; ``pulsed`` pulse-train updates;
``nodal`` nodal analysis of resistive networks with diodes (float64); ``cost`` the input sums of the
cost counters (``aimc.cost``).
Kernels trust their inputs: validation happens at the public entry points.

First run: kernels compile on first use (``cache=True`` keeps them on disk afterwards);
``compile_messages`` says which one is compiling while it happens. Compile time is dominated by the
IR-inlined per-element helpers (philox, box_muller, _log), which the loops need inlined to vectorise
(making the per-row helpers ordinary calls compiled faster but made the forward ~1.3x slower). So the
kernels whose generators depend on a switch (stochastic rounding, input noise, weight noise first,
program-and-verify) are compiled per switch setting, with the switch a constant that removes the unused
generators before typing (``periphery._variant``): a run compiles only what it uses.
"""
from __future__ import annotations

import contextlib
import sys
import time


@contextlib.contextmanager
def compile_messages(enabled: bool = True, stream=None):
    """While active, say on ``stream`` (stderr) which aimc kernel Numba is compiling and how long it took.

    Kernels compile on their first call after install (then load from the on-disk cache in milliseconds),
    so this prints only on a first run; ``aimc deploy`` wraps its work in it.
    """
    if not enabled:
        yield
        return
    from numba.core import event
    out = stream or sys.stderr

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
