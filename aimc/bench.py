"""``aimc bench NAME``: speed against a plain baseline measured in the same run (ratios, not absolute claims).

Each benchmark is a function returning a dict with at least ``name``, ``aimc_ms``, ``baseline_ms``,
``ratio`` (aimc / baseline), and ``aihwkit_ms`` when aihwkit is installed. Thread counts are fixed for
numba, BLAS and torch alike (``--threads``). ``timeit_isolated`` times each contender in a process of its
own (forward, forward-hwa, rng); ``timeit`` interleaves contenders in one process (median of repeats),
for benchmarks whose contenders must share state. Benchmarks of other features register themselves in
``BENCHES`` as "module:function".
"""
from __future__ import annotations

import importlib
import json
import os

from .core.timing import timeit  # noqa: F401  (re-exported: benchmarks of other modules import it from aimc.timing)

BENCHES: dict[str, str] = {
    "drift": "aimc.bench:bench_drift",
    "forward": "aimc.bench:bench_forward",
    "forward-hwa": "aimc.bench:bench_forward_hwa",
    "hwa-step": "aimc.train.hwa:bench_hwa_step",
    "ir-drop": "aimc.circuit.bench:bench_ir_drop",
    "lstm": "aimc.nn.bench:bench_lstm",
    "resnet": "aimc.nn.bench:bench_resnet",
    "resnet-hwa-step": "aimc.nn.bench:bench_resnet_hwa_step",
    "rng": "aimc.bench:bench_rng",
    "tiki-taka": "aimc.train.optim:bench_tiki_taka",
    "torch-backend": "aimc.train.hwa.torch_bench:bench_torch_backend",
    "update": "aimc.train.optim:bench_update",
}


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", default=["forward", "forward-hwa"],
                   help=f"benchmarks to run (default: forward forward-hwa); known: {', '.join(BENCHES)}, all")
    p.add_argument("--json", action="store_true", help="print one JSON object per benchmark")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per contender (median reported)")
    p.add_argument("--threads", type=int, default=2, help="threads for numba, BLAS and torch")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--size", type=int, default=512, help="layer is size x size")
    p.add_argument("--circuit-size", type=int, default=256,
                   help="ir-drop: the array is N x N (batch 256; the exact baseline and errors up to N = 256)")


MAX_THREADS = 1024


def check_threads(n, what: str = "--threads") -> int:
    """A thread count as an int in [1, MAX_THREADS], or a ValueError naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{what} must be an integer in [1, {MAX_THREADS}] (this machine has {os.cpu_count()} "
                         f"CPUs), got {str(n)[:40]}")
    return n


def set_threads(n: int) -> None:
    """Fix numba, BLAS and torch thread counts to ``n`` (so the pools do not fight)."""
    n = check_threads(n)
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


def timeit_isolated(factories: dict[str, tuple[str, dict]], args, rounds: int = 2,
                    warmup: int = 2, errors: dict | None = None, cpu: bool = False) -> dict[str, float]:
    """Median ms per contender, each timed in a fresh process of its own (the fairest comparison here).

    ``factories`` maps a contender to ("module:function", kwargs); the function, given ``args`` and the
    kwargs, returns a zero-argument callable to time, or None when the contender is unavailable (then it is
    left out). Rounds alternate the contenders' processes; the best round's median is kept. Each process is
    a user's default process (``_CHILD``: torch imported first, no thread-pool environment variables that
    the user did not set), so what is measured is what a user's script gets.

    A contender whose process fails raises a RuntimeError, unless ``errors`` (a dict) is given: then its last
    error line is stored there under its name, it is not run again, and the others go on. ``cpu``: time the
    process's CPU time instead of wall time (``timing.timeit``).
    """
    import subprocess
    import sys
    best: dict[str, float] = {}
    payload = {"threads": args.threads, "repeats": args.repeats, "batch": args.batch, "size": args.size,
               "warmup": warmup, "cpu": cpu}
    for _ in range(rounds):
        for name, (spec, kw) in factories.items():
            if errors is not None and name in errors:
                continue
            job = json.dumps({"spec": spec, "kw": kw, "args": payload})
            out = subprocess.run([sys.executable, "-c", _CHILD], input=job, capture_output=True, text=True,
                                 env=user_environ())
            if out.returncode != 0:
                if errors is None:
                    raise RuntimeError(f"benchmark contender {name!r} failed:\n{out.stderr[-2000:]}")
                lines = out.stderr.strip().splitlines()
                errors[name] = (lines[-1] if lines else f"exit status {out.returncode}")[:500]
                continue
            ms = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
            if ms is not None:
                best[name] = min(best.get(name, float("inf")), ms)
    return best


# a user's process: torch (when installed) imported before aimc, the environment the user started with
_CHILD = "try:\n import torch\nexcept ImportError:\n pass\nimport aimc.bench as b\nb._child()"


def user_environ() -> dict:
    """The environment without what ``import aimc`` added (its ``OMP_WAIT_POLICY`` default): benchmark
    processes run with the user's environment, as the user's own scripts do."""
    import aimc
    env = dict(os.environ)
    if aimc._OMP_WAIT_POLICY_DEFAULTED:
        env.pop("OMP_WAIT_POLICY", None)
    return env


def _child() -> None:
    """Entry of one isolated contender process: build, warm up, time, print {"ms": median} on stdout."""
    import sys
    from types import SimpleNamespace
    job = json.loads(sys.stdin.read())
    args = SimpleNamespace(**job["args"])
    set_threads(args.threads)
    module, func = job["spec"].split(":")
    fn = getattr(importlib.import_module(module), func)(args, **job["kw"])
    ms = None if fn is None else timeit({"x": fn}, args.repeats, getattr(args, "warmup", 2),
                                        getattr(args, "cpu", False))["x"]
    print(json.dumps({"ms": ms}))


def _layer(args):
    import numpy as np
    rng = np.random.default_rng(0)
    n = args.size
    W = (rng.standard_normal((n, n)) * 0.05).astype(np.float32)
    x = rng.uniform(-1, 1, (args.batch, n)).astype(np.float32)
    return W, x


def _forward_config(preset: str):
    from .core.config import default, standard_hwa
    if preset == "default":
        return default()
    cfg = standard_hwa()
    return cfg.replace(mapping=cfg.mapping.replace(max_in=0))  # one size x size tile, as the baseline


def make_aimc_forward(args, preset: str):
    """aimc's tile forward with the preset's periphery (one tile, weights set exactly)."""
    from .core.tile import Tile
    W, x = _layer(args)
    tile = Tile(W.shape[0], W.shape[1], _forward_config(preset), seed=0)
    tile.set_weights(W)
    return lambda: tile.forward(x)


def make_torch_forward(args, sigma: float):
    """The floor: one product plus one normal per output, in torch."""
    import torch
    W, x = _layer(args)
    Wt, xt = torch.from_numpy(W), torch.from_numpy(x)
    return lambda: torch.matmul(xt, Wt.T) + sigma * torch.randn(args.batch, args.size)


def make_aihwkit_forward(args, preset: str):
    """aihwkit's CPU tile with the matching IO config, or None if aihwkit is not installed."""
    try:
        import torch
        from aihwkit.nn import AnalogLinear as AL
        from aihwkit.simulator.configs import InferenceRPUConfig
        from aihwkit.simulator.parameters.enums import (BoundManagementType, NoiseManagementType,
                                                        WeightNoiseType)
    except Exception:
        return None
    cfg = InferenceRPUConfig()
    if preset == "standard-hwa":
        f = cfg.forward
        f.inp_res, f.out_res, f.out_bound, f.out_noise = 1 / 254, 1 / 254, 10.0, 0.04
        f.w_noise, f.w_noise_type, f.ir_drop = 0.0175, WeightNoiseType.PCM_READ, 1.0
        f.noise_management, f.nm_thres = NoiseManagementType.CONSTANT, 1.0
        f.bound_management = BoundManagementType.NONE
    cfg.mapping.max_input_size = cfg.mapping.max_output_size = 0
    W, x = _layer(args)
    layer = AL(W.shape[1], W.shape[0], bias=False, rpu_config=cfg)
    layer.set_weights(torch.from_numpy(W))
    layer.eval()
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            layer(xt)
    return run


def _forward_bench(name: str, preset: str, args) -> dict:
    sigma = _forward_config(preset).forward.out_noise
    t = timeit_isolated({"aimc": ("aimc.bench:make_aimc_forward", {"preset": preset}),
                         "baseline": ("aimc.bench:make_torch_forward", {"sigma": sigma}),
                         "aihwkit": ("aimc.bench:make_aihwkit_forward", {"preset": preset})}, args)
    out = {"name": name, "shape": [args.size, args.size], "batch": args.batch, "threads": args.threads,
           "aimc_ms": round(t["aimc"], 3), "baseline_ms": round(t["baseline"], 3),
           "ratio": round(t["aimc"] / t["baseline"], 3),
           "baseline": "torch.matmul(x, W.T) + sigma * torch.randn", "isolated_processes": True}
    if "aihwkit" in t:
        out["aihwkit_ms"] = round(t["aihwkit"], 3)
        out["aihwkit_ratio"] = round(t["aihwkit"] / t["baseline"], 3)
    return out


def bench_forward(args) -> dict:
    """Default IO: 7-bit DAC, 9-bit ADC, out_noise 0.06, abs-max NM, iterative BM."""
    return _forward_bench("forward", "default", args)


def bench_forward_hwa(args) -> dict:
    """Standard HWA preset (Rasch et al. 2023): 8/8 bit, PCM-read w_noise 0.0175, IR drop 1.0, out_noise 0.04."""
    return _forward_bench("forward-hwa", "standard-hwa", args)


def make_aimc_normal(args):
    from .core.rng import Stream
    s = Stream(0, "bench")
    return lambda: s.normal((args.batch, args.size))


def make_torch_normal(args):
    import torch
    return lambda: torch.randn(args.batch, args.size)


def bench_rng(args) -> dict:
    """batch x size standard normals: aimc's counter-based generator against torch.randn."""
    t = timeit_isolated({"aimc": ("aimc.bench:make_aimc_normal", {}),
                         "baseline": ("aimc.bench:make_torch_normal", {})}, args)
    n = args.batch * args.size
    return {"name": "rng", "shape": [args.batch, args.size], "threads": args.threads,
            "aimc_ms": round(t["aimc"], 3), "baseline_ms": round(t["baseline"], 3),
            "ratio": round(t["aimc"] / t["baseline"], 3), "baseline": "torch.randn", "isolated_processes": True,
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
            def f(v, spec):
                return "n/a" if v is None else format(v, spec)
            extra = f"  aihwkit {f(res['aihwkit_ms'], '.2f')} ms" if res.get("aihwkit_ms") is not None else ""
            extra += "".join(f"  {k[:-3]} {v:.2f} ms" for k, v in res.items()
                             if k.endswith("_ms") and k not in ("aimc_ms", "baseline_ms", "aihwkit_ms") and
                             isinstance(v, (int, float)))
            extra += "".join(f"  {k}: {v}" for k, v in res.items() if k.endswith("_error"))
            print(f"{res['name']:<14} aimc {f(res.get('aimc_ms'), '8.2f')} ms  baseline "
                  f"{f(res.get('baseline_ms'), '8.2f')} ms  ratio {f(res.get('ratio'), '.2f')}{extra}", flush=True)
    return 0


def bench_drift(args) -> dict:
    """Program + drift(1 h) of 10^7 PCM devices (a differential 2236 x 2236 tile) vs plain numpy.

    aimc: ``Tile.program(W)`` then ``Tile.drift(3600)`` (mapping, fused device kernels, weights read back;
    compensation off so the one-hot readout's matmul is not timed). Baseline: the same formulas written as
    plain vectorised numpy (float32, ``numpy.random.default_rng`` normals) in the same run. Also reported:
    ``drift(t)`` alone (read + weights, the step repeated over a deployment's times) against the numpy read
    formula, and the ``device_models`` numpy engine (the oracle) through the same tile.
    """
    import math

    import numpy as np

    from .core.config import InferenceConfig, IOConfig, MappingConfig, TileConfig
    from .core.tile import Tile

    n = 2236
    devices = 2 * n * n
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((n, n)) * 0.05).astype(np.float32)
    inf = InferenceConfig(device="pcm-joshi2020", compensation="none")
    cfg = TileConfig(forward=IOConfig(is_perfect=True), backward=IOConfig(is_perfect=True),
                     mapping=MappingConfig(max_in=0, max_out=0), inference=inf)
    tile = Tile(n, n, cfg, seed=0)
    oracle = Tile(n, n, cfg, seed=0)
    oracle._fused = False
    model = inf.device_model()
    t_inf = 3600.0

    def aimc_run():
        tile.program(W)
        tile.drift(t_inf)

    def oracle_run():
        oracle.program(W)
        oracle.drift(t_inf)

    def numpy_run():
        f32 = np.float32
        g = np.random.default_rng(1)
        gmax = f32(model.g_max)
        s = gmax / f32(np.abs(W).max())
        G = np.stack([np.clip(s * W, 0, gmax), np.clip(-s * W, 0, gmax)])
        gh = G / gmax
        c0, c1, c2 = (f32(c) for c in model.prog_coeff)
        sig = (c0 + c1 * gh + c2 * gh * gh) * f32(model.g_max / model.prog_coeff_g_max_reference)
        gp = np.maximum(G + sig * g.standard_normal(G.shape, np.float32), 0)
        lg = np.log(np.maximum(gh, f32(1e-7)))
        mu = np.clip(f32(-0.0155) * lg + f32(0.0244), f32(0.049), f32(0.1))
        sd = np.clip(f32(-0.0125) * lg - f32(0.0059), f32(0.008), f32(0.045))
        nu = np.abs(mu + sd * g.standard_normal(G.shape, np.float32))
        qs = np.minimum(f32(0.0088) / np.maximum((gp / gmax) ** f32(0.65), f32(1e-3)), f32(0.2))
        gd = gp * np.exp(-nu * f32(math.log((t_inf + model.t0) / model.t0)))
        fac = f32(model.read_noise_factor(t_inf))
        gr = np.maximum(gd + np.abs(gd) * qs * fac * g.standard_normal(G.shape, np.float32), 0)
        return (gr[0] - gr[1]) / s

    # drift alone (the step repeated over t1, t2, ... in a deployment study): the clock must move forward
    clock = [t_inf]
    f32 = np.float32
    gp0 = np.abs(W).astype(np.float32)[None].repeat(2, 0) * f32(10)
    nu0 = np.full_like(gp0, 0.05)
    qs0 = np.full_like(gp0, 0.01)

    def aimc_drift():
        clock[0] *= 1.0001
        tile.drift(clock[0])

    def numpy_drift():
        g = np.random.default_rng(2)
        gd = gp0 * np.exp(-nu0 * f32(math.log((t_inf + model.t0) / model.t0)))
        gr = np.maximum(gd + np.abs(gd) * qs0 * f32(4.7) * g.standard_normal(gp0.shape, np.float32), 0)
        return (gr[0] - gr[1]) / f32(2.0)

    repeats = max(1, int(getattr(args, "repeats", 5)))
    t = timeit({"aimc": aimc_run, "baseline": numpy_run}, repeats, warmup=1)
    aimc_run()
    td = timeit({"aimc": aimc_drift, "baseline": numpy_drift}, repeats, warmup=1)
    t_or = timeit({"oracle": oracle_run}, max(1, min(repeats, 3)), warmup=0)
    return {"name": "drift", "devices": devices, "threads": getattr(args, "threads", None),
            "aimc_ms": round(t["aimc"], 2), "baseline_ms": round(t["baseline"], 2),
            "ratio": round(t["aimc"] / t["baseline"], 3),
            "devices_per_s": round(devices / (t["aimc"] / 1e3)),
            "baseline_devices_per_s": round(devices / (t["baseline"] / 1e3)),
            "device_models_ms": round(t_or["oracle"], 2),
            "drift_only_ms": round(td["aimc"], 2), "drift_only_baseline_ms": round(td["baseline"], 2),
            "drift_only_ratio": round(td["aimc"] / td["baseline"], 3),
            "baseline": "plain numpy: mapping, PCM programming noise, nu draw, drift + read noise, weights"}
