"""Timing of benchmark contenders (no imports of aimc modules: any module may time itself with it)."""
from __future__ import annotations

import statistics
import time

__all__ = ["timeit"]


def timeit(contenders: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per contender, interleaving the contenders on every repeat."""
    for f in contenders.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, f in contenders.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
