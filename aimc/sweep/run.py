"""Running a sweep: tasks on ``dask.distributed`` (or in a plain loop), one atomic record per finished task.

The engine is Dask's: a ``LocalCluster`` of worker processes (one thread each) by default, or the scheduler
at ``scheduler=`` (``tcp://HOST:PORT``), or a ``client`` the caller owns. aimc only submits one future per
task and writes each result as it arrives. A worker that dies is Dask's business: the scheduler re-runs its
tasks elsewhere (``distributed.scheduler.allowed-failures``); a task's result is recorded once, under a name
derived from what decides it, so nothing is lost or counted twice. Without dask installed (or with
``serial=True``) the same task function runs in a loop here, with the same results.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time as _time
import uuid
from pathlib import Path
from typing import Callable

from ..core._io import atomic_write, atomic_write_text
from .spec import SpecError, SweepSpec, Task, load_spec

__all__ = ["SweepError", "have_dask", "local_cluster", "run_sweep", "run_task"]

RECORD_FORMAT = "aimc-sweep-task"
RECORD_VERSION = 1
BOUND_FORMAT = "aimc-sweep"


class SweepError(RuntimeError):
    """Tasks failed (their records are missing; a re-run retries them), or the engine could not start."""


def have_dask() -> bool:
    """True when ``dask.distributed`` can be imported (``pip install aimc[dask]``)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------------
# the task (runs on a worker)

def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _model(path: str, sha256: str):
    from ..workloads import zoo
    if _sha256(path) != sha256:
        raise ValueError(f"checkpoint {path} changed since the sweep was planned (SHA-256 differs)")
    return zoo.load_checkpoint(path)[0]


@functools.lru_cache(maxsize=4)
def _data(spec: str):
    from ..deployment.deploy import _load_data
    return _load_data(spec)


@functools.lru_cache(maxsize=8)
def _digital(model_path: str, sha256: str, data: str, batch_size: int, threads: int) -> float:
    """The model's digital accuracy: the same for every chip of a model and data set, so a worker computes it
    once (keyed by all it depends on) instead of once per task (40 ms of a 0.25 s MNIST-5k MLP task)."""
    from ..deployment.deploy import digital_accuracy
    with _threads(threads):
        return digital_accuracy(_model(model_path, sha256), _data(data), batch_size)


@contextlib.contextmanager
def _threads(n: int):
    """numba, BLAS and torch limited to ``n`` threads inside the block (restored after)."""
    import numba
    import torch
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(n)
    except ImportError:  # comes with scikit-learn; without it BLAS keeps its pool (OPENBLAS_NUM_THREADS)
        blas = contextlib.nullcontext()
    nb, tt = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
    try:
        with blas:
            yield
    finally:
        numba.set_num_threads(nb)
        torch.set_num_threads(tt)


def run_task(task: dict, ctx: dict) -> dict:
    """Program one chip instance, drift it through every time, evaluate; ``aimc deploy``'s own code.

    What does not depend on the chip is done once per worker process and cached, keyed by what it depends
    on: the model (path + SHA-256), the data set, and the model's digital accuracy.

    ``task``: a :class:`Task` as a dict; ``ctx``: model path + SHA-256, data, times, batch size, threads,
    whether to return the chip image (bytes of the HDF5 file at the last time). Chip ``r`` is exactly
    chip ``r`` of ``evaluate_over_time(..., seed=spec.seed)``: both convert with seed ``spec.seed + r``.
    """
    from ..deployment.deploy import evaluate_over_time
    t0 = _time.perf_counter()
    model = _model(ctx["model_path"], ctx["model_sha256"])
    data = _data(ctx["data"])
    digital = _digital(ctx["model_path"], ctx["model_sha256"], ctx["data"], ctx["batch_size"], ctx["threads"])
    with _threads(ctx["threads"]):
        res = evaluate_over_time(model, data, task["config"], list(ctx["times_s"]), 1, seed=task["seed"],
                                 batch_size=ctx["batch_size"], keep_last=ctx["chip_images"],
                                 digital_accuracy=digital)
    chip = None
    if ctx["chip_images"]:
        from ..core.chip import save_chip
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "chip.h5"
            save_chip(res.last_model, p)
            chip = p.read_bytes()
    return {"accuracy": [a[0] for a in res.accuracy], "digital_accuracy": res.digital_accuracy,
            "n_test": res.n_test, "wall_s": _time.perf_counter() - t0, "chip": chip}


# ------------------------------------------------------------------------------------------------------
# planning (driver): models resolved and checked, results folder bound to the spec

def _plan(spec: SweepSpec) -> tuple[dict, dict]:
    """({model name: (path, sha256)}, the binding dict) after loading every model once against the data."""
    try:
        from ..workloads import zoo
    except ImportError:
        raise SweepError("aimc sweep needs torch: pip install aimc[torch]") from None
    from ..deployment.deploy import _check_fits, _xy
    import torch
    x, _ = _xy(_data(spec.data))
    models = {}
    for name, path in spec.models:
        path = str(zoo.DEFAULT_CHECKPOINT) if path is None else path
        if not Path(path).is_file():
            raise SpecError(f"models: {name!r}: checkpoint not found ({path})")
        sha = _sha256(path)
        try:
            _check_fits(_model(path, sha), torch.as_tensor(x[:1], dtype=torch.float32))
        except ValueError as e:
            raise SpecError(f"models: {name!r}: {e}") from None
        models[name] = (path, sha)
    bound = {"format": BOUND_FORMAT, "version": 1, "spec": spec.to_dict(),
             "model_sha256": {n: s for n, (_, s) in models.items()}}
    return models, bound


def task_id(bound: dict, task: Task) -> str:
    """The name of a task's record: a hash of everything that decides its result."""
    s = bound["spec"]
    blob = json.dumps({"coords": task.coords, "config": task.config, "data": s["data"], "times_s": s["times_s"],
                       "batch_size": s["batch_size"], "threads": s["threads"], "chip_images": s["chip_images"],
                       "model_sha256": bound["model_sha256"][task.model]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _bound_before(out: Path, bound: dict) -> bool:
    """Whether ``out`` already holds this sweep (``out/sweep.json``); another sweep there is refused."""
    f = out / "sweep.json"
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} exists and is not a folder; choose another --out")
    if not f.exists():
        return False
    try:
        old = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SweepError(f"{f} is not a sweep record (corrupt); choose another --out") from None
    if not isinstance(old, dict) or old.get("format") != BOUND_FORMAT:
        raise SweepError(f"{out} holds something else than an aimc sweep; choose another --out")
    if old != bound:
        a = {**old.get("spec", {}), "model_sha256": old.get("model_sha256")}
        b = {**bound["spec"], "model_sha256": bound["model_sha256"]}
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise SweepError(f"{out} holds results of a different sweep (differs in: {', '.join(diff)}); "
                         f"re-run that spec to resume it, or choose another --out")
    return True


def _bind(out: Path, bound: dict) -> None:
    """Create ``out/tasks`` and ``out/sweep.json`` (the spec this folder holds; never overwritten)."""
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.json", json.dumps(bound, indent=2), overwrite=False)


def _read_record(path: Path, tid: str, task: Task) -> dict:
    try:
        rec = json.loads(path.read_text())
        ok = rec.get("format") == RECORD_FORMAT and rec.get("id") == tid and rec.get("coords") == task.coords
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        raise SweepError(f"task record {path} is corrupt or not this task's; delete it to recompute the task")
    return rec


def _write_record(out: Path, tid: str, task: Task, result: dict) -> dict:
    """The chip image first, then the record: a record on disk means the task is complete."""
    rec = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "id": tid, "coords": task.coords,
           "accuracy": result["accuracy"], "digital_accuracy": result["digital_accuracy"],
           "n_test": result["n_test"], "wall_s": round(result["wall_s"], 4)}
    if result.get("chip") is not None:
        chip = out / "chips" / f"{tid}.h5"
        atomic_write(chip, lambda p: p.write_bytes(result["chip"]))
        rec["chip_image"] = f"chips/{tid}.h5"
    atomic_write_text(out / "tasks" / f"{tid}.json", json.dumps(rec))
    return rec


# ------------------------------------------------------------------------------------------------------
# engines

def _connect(scheduler: str | None, workers: int | None, timeout: float):
    """(client, cluster or None): a LocalCluster of ``workers`` processes x 1 thread, or the given scheduler."""
    from distributed import Client
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=timeout, set_as_default=False), None
        except (OSError, TimeoutError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s ({first}); "
                             f"is `dask scheduler` running there and the address right?") from None
    cluster = local_cluster(workers)
    return Client(cluster, set_as_default=False), cluster


#: Dask settings of aimc's LocalCluster (see :func:`local_cluster`); for workers you start yourself, put them
#: in their Dask config.
CLUSTER_CONFIG = {
    # glibc's default malloc tuning, not Dask's MALLOC_TRIM_THRESHOLD_=65536 (a task 2.0x slower)
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # no dashboard, so no statistical profiler sampling the task's thread every 10 ms
    "distributed.worker.profile.enabled": False,
    # housekeeping at a pace for tasks of ~0.1-10 s: event-loop tick checks (default 20 ms), dashboard
    # system monitor (500 ms), memory monitor (100 ms; it still pauses/restarts a worker near its limit)
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def local_cluster(workers: int | None = None):
    """A ``distributed.LocalCluster`` of ``workers`` processes (default: the CPU count) x 1 thread.

    Settings (:data:`CLUSTER_CONFIG`): workers keep glibc's default malloc tuning: Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536`` (set before spawning workers) freezes glibc's dynamic mmap threshold,
    so large numpy arrays are fresh mmaps that page-fault; it made a sweep task 2.0x slower here (0.42 s vs
    0.21 s, MNIST-5k MLP; ``python benchmarks/sweep_scaling.py --only loop,loop-trim``). Without a dashboard
    the workers' statistical profiler and the 20 ms housekeeping ticks are CPU taken from the tasks: an idle
    1-worker cluster used 75-80 ms of CPU per second with Dask's defaults, 5-15 ms with these.
    """
    import logging

    import dask
    from distributed import LocalCluster
    with dask.config.set(CLUSTER_CONFIG):
        return LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.CRITICAL)


def _run_dask(client, todo, ctxs, on_done) -> list[tuple[Task, str]]:
    from distributed import as_completed
    tag = uuid.uuid4().hex[:8]
    futs = {client.submit(run_task, _task_dict(t), ctxs[t.model], key=f"aimc-sweep-{tag}-{tid}", pure=False):
            (t, tid) for t, tid in todo}
    failed = []
    for fut in as_completed(list(futs), loop=client.loop):
        t, tid = futs[fut]
        if fut.status == "finished":
            on_done(t, tid, fut.result())
        else:
            try:
                e = fut.exception()
                failed.append((t, f"{type(e).__name__}: {e}"))
            except Exception as e:  # cancelled or lost (e.g. the scheduler went away)
                failed.append((t, f"{fut.status}: {type(e).__name__}: {e}"))
        fut.release()
    return failed


def _run_serial(todo, ctxs, on_done) -> list[tuple[Task, str]]:
    failed = []
    for t, tid in todo:
        try:
            res = run_task(_task_dict(t), ctxs[t.model])
        except Exception as e:  # recorded as a failed task, as on Dask; the others still run
            failed.append((t, f"{type(e).__name__}: {e}"))
            continue
        on_done(t, tid, res)
    return failed


def _task_dict(t: Task) -> dict:
    return {**t.coords, "config": t.config}


# ------------------------------------------------------------------------------------------------------
# the API

def run_sweep(spec, out, *, scheduler: str | None = None, workers: int | None = None, client=None,
              serial: bool | None = None, timeout: float = 10.0, progress: bool = False,
              on_result: Callable | None = None):
    """Run every task of ``spec`` not yet recorded in ``out``; write the tidy table; return SweepResults.

    Args:
        spec: a :class:`SweepSpec`, a TOML path, or a spec dict.
        out: the results folder (created; bound to this spec: re-running the same spec resumes it,
            another spec there is an error).
        scheduler: address of a running Dask scheduler (``tcp://HOST:PORT``); default: a LocalCluster.
        workers: LocalCluster worker processes (one thread each); default: the CPU count.
        client: a ``distributed.Client`` to use (the caller keeps ownership).
        serial: True: a plain loop in this process; None: serial only when dask is not installed.
        timeout: seconds to wait for ``scheduler`` before failing.
        progress: a progress bar on stderr.
        on_result: called as ``on_result(task, record)`` after each record is written.
    Raises:
        SpecError: the spec (or a model) is invalid — before any task starts.
        SweepError: the scheduler cannot be reached, or tasks failed (the rest are recorded).
    """
    from ..deployment.deploy import _Progress
    from .table import SweepResults
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec) if isinstance(spec, (str, os.PathLike)) else SweepSpec.from_dict(spec)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise SpecError(f"timeout = {timeout!r} must be a positive number of seconds")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SpecError(f"workers = {workers!r} must be a positive integer")
    use_dask = not serial if serial is not None else (have_dask() or scheduler is not None or client is not None)
    if use_dask and not have_dask():
        raise SweepError("a Dask scheduler/client was given but dask is not installed: pip install aimc[dask]")
    if serial and (scheduler is not None or client is not None):
        raise SpecError("serial=True runs in this process: do not pass a scheduler or client")
    models, bound = _plan(spec)
    out = Path(out)
    tasks = spec.tasks()
    ids = [task_id(bound, t) for t in tasks]
    if len(set(ids)) != len(ids):  # distinct coordinates must never share a record
        raise SweepError("internal error: two tasks map to the same record name")
    records, todo = {}, []
    bound_before = _bound_before(out, bound)
    for t, tid in zip(tasks, ids):
        p = out / "tasks" / f"{tid}.json"
        if bound_before and p.exists():
            records[tid] = _read_record(p, tid, t)
        else:
            todo.append((t, tid))
    own = None
    if use_dask and client is None and todo:
        client, own = _connect(scheduler, workers, timeout)   # before anything is written
    try:
        if not bound_before:
            _bind(out, bound)
        ctxs = {name: {"model_path": path, "model_sha256": sha, "data": spec.data, "times_s": list(spec.times_s),
                       "batch_size": spec.batch_size, "threads": spec.threads, "chip_images": spec.chip_images}
                for name, (path, sha) in models.items()}
        bar = _Progress(len(todo), "sweep", progress and bool(todo))
        t0 = _time.perf_counter()

        def done(t, tid, res):
            records[tid] = _write_record(out, tid, t, res)
            bar.update()
            if on_result is not None:
                on_result(t, records[tid])

        try:
            failed = _run_dask(client, todo, ctxs, done) if use_dask else _run_serial(todo, ctxs, done)
        finally:
            bar.close()
        wall = _time.perf_counter() - t0
        n_workers = len(client.scheduler_info().get("workers", {})) if use_dask and client is not None else 1
    finally:
        if own is not None:
            client.close()
            own.close()
    res = SweepResults.from_records(spec, tasks, ids, records, out,
                                    meta={"ran": len(todo) - len(failed), "skipped": len(tasks) - len(todo),
                                          "failed": len(failed), "wall_s": round(wall, 3),
                                          "engine": "dask" if use_dask else "serial", "workers": n_workers})
    res.write()
    if failed:
        lines = "; ".join(f"{t.coords}: {msg}" for t, msg in failed[:5])
        raise SweepError(f"{len(failed)} of {len(todo)} tasks failed ({lines}{' ...' if len(failed) > 5 else ''}); "
                         f"the {len(records)} finished tasks are recorded in {out}, a re-run retries the rest")
    return res
