"""Timing of benchmark contenders (no imports of aimc modules: any module may time itself with it)."""
from __future__ import annotations

import statistics
import time

__all__ = ["timeit"]


def timeit(contenders: dict, repeats: int, warmup: int = 2, cpu: bool = False) -> dict[str, float]:
    """Median ms per contender, interleaving the contenders on every repeat; ``cpu``: the process's CPU time
    (all its threads; robust to other jobs' load where the contender runs on one thread), else wall time."""
    clock = time.process_time if cpu else time.perf_counter
    for f in contenders.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, f in contenders.items():
            t = clock()
            f()
            times[k].append((clock() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
