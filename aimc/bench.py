"""``aimc bench NAME``: speed against a plain baseline measured in the same run (ratios, not absolute claims).

Each benchmark is a function returning a dict with at least ``name``, ``aimc_ms``, ``baseline_ms``,
``ratio`` (aimc / baseline), and ``aihwkit_ms`` when aihwkit is installed. Timings are the median of
interleaved repeats (aimc, baseline, aimc, ...), so load on the machine hits both alike. Thread counts are
fixed for numba, BLAS and torch alike (``--threads``). Benchmarks of other features register themselves
in ``BENCHES`` as "module:function".
"""
from __future__ import annotations

import importlib
import json
import os
import statistics
import time

BENCHES: dict[str, str] = {
    "drift": "aimc.inference:bench_drift",
    "forward": "aimc.bench:bench_forward",
    "forward-hwa": "aimc.bench:bench_forward_hwa",
    "hwa-step": "aimc.train.hwa:bench_hwa_step",
    "rng": "aimc.bench:bench_rng",
    "tiki-taka": "aimc.optim:bench_tiki_taka",
    "update": "aimc.optim:bench_update",
}


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", default=["forward", "forward-hwa"],
                   help=f"benchmarks to run (default: forward forward-hwa); known: {', '.join(BENCHES)}, all")
    p.add_argument("--json", action="store_true", help="print one JSON object per benchmark")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per contender (median reported)")
    p.add_argument("--threads", type=int, default=2, help="threads for numba, BLAS and torch")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--size", type=int, default=512, help="layer is size x size")


def set_threads(n: int) -> None:
    """Fix numba, BLAS and torch thread counts to ``n`` (so the pools do not fight)."""
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(n))
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


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


def _aihwkit_forward(W, x, hwa: bool):
    """A forward closure on aihwkit's CPU tile with the matching config, or None if aihwkit is absent."""
    try:
        import torch
        from aihwkit.nn import AnalogLinear as AL
        from aihwkit.simulator.configs import InferenceRPUConfig
        from aihwkit.simulator.parameters.enums import (BoundManagementType, NoiseManagementType,
                                                        WeightNoiseType)
    except Exception:
        return None
    cfg = InferenceRPUConfig()
    if hwa:
        f = cfg.forward
        f.inp_res, f.out_res, f.out_bound, f.out_noise = 1 / 254, 1 / 254, 10.0, 0.04
        f.w_noise, f.w_noise_type, f.ir_drop = 0.0175, WeightNoiseType.PCM_READ, 1.0
        f.noise_management, f.nm_thres = NoiseManagementType.CONSTANT, 1.0
        f.bound_management = BoundManagementType.NONE
    cfg.mapping.max_input_size = cfg.mapping.max_output_size = 0
    layer = AL(W.shape[1], W.shape[0], bias=False, rpu_config=cfg)
    layer.set_weights(torch.from_numpy(W))
    layer.eval()
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            layer(xt)
    return run


def _forward_bench(name: str, cfg, args, hwa: bool) -> dict:
    import numpy as np
    import torch

    from .tile import Tile
    rng = np.random.default_rng(0)
    n = args.size
    W = (rng.standard_normal((n, n)) * 0.05).astype(np.float32)
    x = rng.uniform(-1, 1, (args.batch, n)).astype(np.float32)
    tile = Tile(n, n, cfg, seed=0)
    tile.set_weights(W)
    Wt, xt = torch.from_numpy(W), torch.from_numpy(x)
    sigma = cfg.forward.out_noise
    contenders = {
        "aimc": lambda: tile.forward(x),
        "baseline": lambda: torch.matmul(xt, Wt.T) + sigma * torch.randn(args.batch, n),
    }
    aih = _aihwkit_forward(W, x, hwa)
    if aih is not None:
        contenders["aihwkit"] = aih
    t = timeit(contenders, args.repeats)
    out = {"name": name, "shape": [n, n], "batch": args.batch, "threads": args.threads,
           "aimc_ms": round(t["aimc"], 3), "baseline_ms": round(t["baseline"], 3),
           "ratio": round(t["aimc"] / t["baseline"], 3),
           "baseline": "torch.matmul(x, W.T) + sigma * torch.randn"}
    if "aihwkit" in t:
        out["aihwkit_ms"] = round(t["aihwkit"], 3)
        out["aihwkit_ratio"] = round(t["aihwkit"] / t["baseline"], 3)
    return out


def bench_forward(args) -> dict:
    """Default IO: 7-bit DAC, 9-bit ADC, out_noise 0.06, abs-max NM, iterative BM."""
    from .config import default
    return _forward_bench("forward", default(), args, hwa=False)


def bench_forward_hwa(args) -> dict:
    """Standard HWA preset (Rasch et al. 2023): 8/8 bit, PCM-read w_noise 0.0175, IR drop 1.0, out_noise 0.04."""
    from .config import standard_hwa
    cfg = standard_hwa()
    cfg = cfg.replace(mapping=cfg.mapping.replace(max_in=0))  # one 512x512 tile, as the baseline
    return _forward_bench("forward-hwa", cfg, args, hwa=True)


def bench_rng(args) -> dict:
    """batch x size standard normals: aimc's counter-based generator against torch.randn."""
    import torch

    from .rng import Stream
    s = Stream(0, "bench")
    shape = (args.batch, args.size)
    t = timeit({"aimc": lambda: s.normal(shape), "baseline": lambda: torch.randn(*shape)}, args.repeats)
    n = args.batch * args.size
    return {"name": "rng", "shape": list(shape), "threads": args.threads,
            "aimc_ms": round(t["aimc"], 3), "baseline_ms": round(t["baseline"], 3),
            "ratio": round(t["aimc"] / t["baseline"], 3), "baseline": "torch.randn",
            "aimc_normals_per_s": round(n / t["aimc"] * 1e3), "baseline_normals_per_s": round(n / t["baseline"] * 1e3)}


def run(args) -> int:
    names = list(BENCHES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHES)} or 'all'")
    if args.threads < 1 or args.repeats < 1 or args.batch < 1 or args.size < 1:
        raise ValueError("--threads, --repeats, --batch and --size must be positive")
    set_threads(args.threads)
    for name in names:
        module, func = BENCHES[name].split(":")
        res = getattr(importlib.import_module(module), func)(args)
        if args.json:
            print(json.dumps(res), flush=True)
        else:
            extra = f"  aihwkit {res['aihwkit_ms']:.2f} ms" if "aihwkit_ms" in res else ""
            print(f"{res['name']:<14} aimc {res['aimc_ms']:8.2f} ms  baseline {res['baseline_ms']:8.2f} ms  "
                  f"ratio {res['ratio']:.2f}{extra}", flush=True)
    return 0
