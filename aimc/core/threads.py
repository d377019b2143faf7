"""How aimc uses threads: one policy, in one place (design.md §3 and §8 "Threads").

A Python process that runs aimc usually holds three thread pools: numba's (aimc's kernels), the BLAS of
numpy (OpenBLAS) and torch's OpenMP pool. Each pool's workers keep spinning for a while after a parallel
region; on a machine with few cores a pool that starts work while another one spins waits for a time slice
on every call. Measured here (2 cores, default environment, torch imported first): a loop of two small
torch ops and two 64x256x512 products ran 155 ms per step with the products in numpy's OpenBLAS and 17 ms
with the same products in torch's pool. So aimc does not add pools where the process already has one:

* **products** (``dot``) go to torch's own pool whenever torch is loaded in the process (the pool the
  user's model already wakes), to numpy's BLAS otherwise; ``set_product`` overrides both. Measured here
  (2 cores, torch imported first, 1024x512 @ 512x512, default IO): 12.9 ms per tile forward with the
  products in OpenBLAS, 4.1 ms in torch's pool;
* **element-wise kernels** (numba) run on the calling thread when a call has less than ``SMALL_WORK``
  elements (``kernel_threads``): waking a pool costs more than it saves there, and nothing spins against
  torch's pool. Larger calls use numba's pool (its workers wait passively: ``aimc/__init__.py`` sets
  ``OMP_WAIT_POLICY=PASSIVE`` for the pool numba starts, unless the user set it). Where numba's pool *is*
  torch's (``shared_pool``: numba's OpenMP layer and torch's OpenMP build load one GNU OpenMP runtime -- on
  Linux torch puts its libgomp in the global symbol scope, or binds by soname to the one numba loaded first),
  no second pool spins against the first and the threshold is ``SMALL_WORK_SHARED``: an analog LSTM's
  64 x 1024 time-step reads then use both cores (``python -m aimc bench lstm``).

Results do not depend on these choices: the kernels' randomness is counter-based (keyed by element, not
by thread), so 1 and 2 threads give identical numbers.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

SMALL_WORK = 1 << 16
"""Below this many elements per kernel call numba's kernels run on the calling thread (a parallel region
costs ~10-50 us on an idle machine and milliseconds when another pool spins on the same cores)."""

SMALL_WORK_SHARED = 1 << 13
"""The threshold where numba's and torch's pools are one runtime (``shared_pool``): a region then wakes the
workers torch's own ops keep warm (~10 us)."""

_product = None


def torch_product(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ bt by torch's matmul on zero-copy views (torch must be loaded: ``dot`` calls this only then)."""
    torch = sys.modules["torch"]
    if out is None:
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(bt)).numpy()
    torch.matmul(torch.from_numpy(a), torch.from_numpy(bt), out=torch.from_numpy(out))
    return out


def dot(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ bt (float32, 2-D) by the process's product backend: ``set_product``'s if set, else torch's pool
    when torch is loaded (never imported here), else numpy's BLAS.

    ``out`` (C-contiguous float32, the result's shape) receives the result when given."""
    if _product is not None:
        return _product(a, bt, out)
    if "torch" in sys.modules and _viewable(a) and _viewable(bt):
        return torch_product(a, bt, out)
    return np.dot(a, bt) if out is None else np.dot(a, bt, out=out)


def _viewable(a: np.ndarray) -> bool:
    """torch.from_numpy takes the array without a copy or a warning."""
    return a.flags.writeable and min(a.strides) >= 0


def set_product(fn) -> None:
    """Route aimc's matrix products through ``fn(a, b, out) -> a @ b`` (numpy arrays in and out, ``out`` None or
    the array to write; None = the default of ``dot``).
    """
    global _product
    _product = fn


_shared = False


def shared_pool() -> bool:
    """Whether numba's thread pool is torch's: numba's threading layer is OpenMP (known once a parallel kernel
    ran), torch is loaded and built with OpenMP, on Linux (one GNU OpenMP runtime serves both there: torch's
    libgomp is loaded RTLD_GLOBAL, so numba's ``omppool`` binds to it, or torch binds by soname to the libgomp
    numba loaded first). Not where numba runs TBB or its workqueue, or on other systems (separate pools)."""
    global _shared
    if _shared:          # once true it stays true: the layer is fixed once chosen, torch is never unloaded
        return True
    torch = sys.modules.get("torch")
    if torch is None or not sys.platform.startswith("linux") or not getattr(torch._C, "has_openmp", False):
        return False
    try:
        import numba
        _shared = numba.threading_layer() == "omp"
    except ValueError:   # no parallel kernel ran yet: the layer is not chosen
        return False
    return _shared


def small_work() -> int:
    """The element count below which ``kernel_threads`` runs numba's kernels on the calling thread."""
    return SMALL_WORK_SHARED if shared_pool() else SMALL_WORK


_serial = threading.local()   # .on: this thread is inside a kernel_threads context that made it serial


class kernel_threads:
    """Context: numba kernels inside run on the calling thread if ``work`` (elements) < ``SMALL_WORK``
    (``SMALL_WORK_SHARED`` where numba's pool is torch's, ``shared_pool``).

    Nested small contexts cost nothing (a loop of small reads, e.g. an RNN's time steps, enters one
    context around the loop); a large context inside a small one stays serial."""

    __slots__ = ("small", "old", "outer")

    def __init__(self, work: int):
        self.small = work < small_work()
        self.old = None
        self.outer = False

    def __enter__(self):
        if self.small and not getattr(_serial, "on", False):
            import numba
            self.outer = _serial.on = True
            self.old = numba.get_num_threads()
            if self.old != 1:
                numba.set_num_threads(1)
            else:
                self.old = None
        return self

    def __exit__(self, *exc):
        if self.outer:
            _serial.on = False
            if self.old is not None:
                import numba
                numba.set_num_threads(self.old)
        return False
