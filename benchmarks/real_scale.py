"""Models at real scale: ResNet-32 (CIFAR-10 shape) and BERT-base (random weights from a transformers config)
converted, programmed, drifted and evaluated on random inputs, one HWA fine-tuning step each; and a
100 M-weight stack of linear layers programmed and drifted, with its memory.

    python benchmarks/real_scale.py                     # all parts, a table on stdout
    python benchmarks/real_scale.py --json              # one JSON object per part
    python benchmarks/real_scale.py --parts resnet32 --repeats 1

Every part runs in a process of its own (peak RSS is that process's: ``resource.getrusage`` ru_maxrss), a
default process (no thread-pool variable set), with the digital model timed in a separate process of its
own beside it. Times are the best of ``--repeats`` after one warm-up (the first forward of a kernel also
compiles it). Deployment: ``aimc.presets.default()`` tiles (7-bit DAC, 9-bit ADC, out noise 0.06, abs-max
NM, iterative BM; PCM of Joshi et al. 2020, global drift compensation), programmed and drifted to 1 day.
HWA: ``hwa.prepare(model, "standard-hwa")`` (Rasch et al. 2023: 8/8 bit, PCM read noise, IR drop),
cross-entropy, SGD, ``post_step``. BERT-base needs ``transformers`` (``pip install 'aimc[transformers]'``);
without it that part is reported with its error.

State per weight (``state_bytes``): the numpy arrays each programmed tile holds, summed over tiles and
divided by the analog weights: conductances of both devices of the differential pair (G, float32), device
state (programmed conductance g_prog, target g_target, drift exponent nu: float32 per device; stuck flags:
bool per device), the effective weights the forward reads (``_w``, float32) and the column scales; plus the
torch weight parameter (float32) the analog layer keeps for training and export.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PARTS = ("resnet32", "bert-base", "linear-100m")


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (compiles kernels, fills caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _state_bytes(model) -> dict:
    """Bytes of chip state per analog weight, by kind (see the module docstring)."""
    import numpy as np
    from aimc.convert import analog_layers
    by: dict[str, int] = {}
    n = 0
    for _, layer in analog_layers(model):
        n += int(layer.weight.numel()) if hasattr(layer, "weight") else 0
        by["torch weight (float32)"] = by.get("torch weight (float32)", 0) + sum(
            p.numel() * p.element_size() for p in layer.parameters() if p.ndim >= 2)
        for tile in layer.tiles.all_tiles():
            _, arrays = tile._get_state()
            for k, v in arrays.items():
                by[k] = by.get(k, 0) + int(v.nbytes)
            w = getattr(tile, "_w", None)
            if isinstance(w, np.ndarray):
                by["_w (forward weights)"] = by.get("_w (forward weights)", 0) + int(w.nbytes)
    total = sum(by.values())
    return {"analog_weights": n, "bytes_per_weight": round(total / max(n, 1), 2),
            "by_kind": {k: round(v / max(n, 1), 3) for k, v in sorted(by.items())}}


def _deploy(model, x, repeats: int) -> dict:
    """Convert, program, drift 1 day, evaluate ``x``; timings in seconds."""
    import torch
    import aimc
    from aimc.convert import conversion_report, convert_to_analog, drift, program
    out = {}
    t0 = time.perf_counter()
    a = convert_to_analog(model, aimc.presets.default(), seed=0).eval()
    out["convert_s"] = round(time.perf_counter() - t0, 3)
    rep = conversion_report(a)
    out["analog_layers"] = len(rep["analog"])
    out["digital_layers"] = sorted(set(rep["digital"].values()))
    out["analog_weights"], out["digital_weights"] = rep["analog_weights"], rep["digital_weights"]
    t0 = time.perf_counter()
    program(a)
    out["program_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    drift(a, "1d")
    out["drift_s"] = round(time.perf_counter() - t0, 3)
    out["state"] = _state_bytes(a)

    def run():
        with torch.no_grad():
            y = a(x)
        assert torch.isfinite(y).all()
    t = _best(run, repeats)
    out["eval_batch"] = int(x.shape[0])
    out["eval_ms_per_sample"] = round(t * 1e3 / x.shape[0], 3)
    return out


def _step(model, x, y, repeats: int) -> float:
    """Seconds of one training step (forward, cross-entropy backward, SGD, HWA post_step if any)."""
    import torch
    from aimc.train import hwa
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        hwa.post_step(model)
    return _best(step, repeats)


def _inputs(part: str, eval_batch: int, step_batch: int, seq: int):
    import torch
    g = torch.Generator().manual_seed(1)
    if part == "resnet32":
        return (torch.rand(eval_batch, 3, 32, 32, generator=g), torch.rand(step_batch, 3, 32, 32, generator=g),
                torch.randint(0, 10, (step_batch,), generator=g))
    return (torch.randint(0, 30522, (eval_batch, seq), generator=g),
            torch.randint(0, 30522, (step_batch, seq), generator=g), torch.randint(0, 2, (step_batch,), generator=g))


def _build(part: str):
    import torch
    from aimc import zoo
    torch.manual_seed(0)
    return zoo.resnet(32) if part == "resnet32" else zoo.bert()


def child(part: str, mode: str, a) -> dict:
    import torch
    out: dict = {"part": part, "mode": mode, "torch_threads": torch.get_num_threads()}
    if part == "linear-100m":
        return _linear_100m(out)
    eval_batch, step_batch = (a.resnet_eval_batch, a.resnet_step_batch) if part == "resnet32" else \
        (a.bert_eval_batch, a.bert_step_batch)
    x_eval, x_step, y_step = _inputs(part, eval_batch, step_batch, a.seq)
    model = _build(part).eval()
    if part == "bert-base":
        out["seq"] = a.seq
    out["weights"] = sum(p.numel() for p in model.parameters() if p.ndim >= 2)
    if mode == "digital":
        def run():
            with torch.no_grad():
                model(x_eval)
        out["eval_ms_per_sample"] = round(_best(run, a.repeats) * 1e3 / eval_batch, 3)
        out["step_batch"] = step_batch
        out["step_ms"] = round(_step(model, x_step, y_step, a.repeats) * 1e3, 1)
    else:
        out.update(_deploy(model, x_eval, a.repeats))
        from aimc.train import hwa
        h = hwa.prepare(_build(part), "standard-hwa", seed=0)
        out["step_batch"] = step_batch
        out["hwa_step_ms"] = round(_step(h, x_step, y_step, a.repeats) * 1e3, 1)
    out["peak_rss_gib"] = round(_rss_gib(), 3)
    return out


def _linear_100m(out: dict) -> dict:
    """6 x Linear(4096, 4096): 100.7 M weights, programmed and drifted (1 day, then 10 years), one forward."""
    import torch
    from torch import nn
    import aimc
    from aimc.convert import convert_to_analog, drift, program
    torch.manual_seed(0)
    layers = [nn.Linear(4096, 4096) for _ in range(6)]
    model = nn.Sequential(*sum(([lin, nn.ReLU()] for lin in layers), [])[:-1])
    out["weights"] = sum(p.numel() for p in model.parameters() if p.ndim >= 2)
    t0 = time.perf_counter()
    a = convert_to_analog(model, aimc.presets.default(), seed=0).eval()
    del model, layers
    out["convert_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    program(a)
    out["program_s"] = round(time.perf_counter() - t0, 2)
    out["rss_after_program_gib"] = round(_rss_gib(), 3)
    t0 = time.perf_counter()
    drift(a, "1d")
    drift(a, "10y")
    out["drift_2_times_s"] = round(time.perf_counter() - t0, 2)
    out["state"] = _state_bytes(a)
    x = torch.rand(16, 4096, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    with torch.no_grad():
        y = a(x)
    out["forward_16_s"] = round(time.perf_counter() - t0, 2)
    out["finite"] = bool(torch.isfinite(y).all())
    out["peak_rss_gib"] = round(_rss_gib(), 3)
    return out


def _run_child(part: str, mode: str, a) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", part, mode, "--repeats", str(a.repeats),
           "--seq", str(a.seq), "--resnet-eval-batch", str(a.resnet_eval_batch),
           "--resnet-step-batch", str(a.resnet_step_batch), "--bert-eval-batch", str(a.bert_eval_batch),
           "--bert-step-batch", str(a.bert_step_batch)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return {"part": part, "mode": mode, "error": err[:500], "returncode": p.returncode}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_s"] = round(time.perf_counter() - t0, 1)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up (best kept)")
    p.add_argument("--seq", type=int, default=128, help="BERT sequence length")
    p.add_argument("--resnet-eval-batch", type=int, default=64)
    p.add_argument("--resnet-step-batch", type=int, default=32)
    p.add_argument("--bert-eval-batch", type=int, default=4)
    p.add_argument("--bert-step-batch", type=int, default=2)
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    p.add_argument("--child", nargs=2, metavar=("PART", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("repeats", "seq", "resnet_eval_batch", "resnet_step_batch", "bert_eval_batch", "bert_step_batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a)), flush=True)
        return 0
    parts = [s.strip() for s in a.parts.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad or not parts:
        p.error(f"--parts: unknown {bad}; known: {', '.join(PARTS)}")
    print(f"# load: {open('/proc/loadavg').read().split()[:3]} ({os.cpu_count()} CPUs)", file=sys.stderr, flush=True)
    for part in parts:
        modes = ("analog",) if part == "linear-100m" else ("analog", "digital")
        res = {m: _run_child(part, m, a) for m in modes}
        for m, r in res.items():
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"{part} [{m}] " + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("part", "mode")),
                      flush=True)
        if not a.json and len(res) == 2 and "error" not in res["analog"] and "error" not in res["digital"]:
            an, di = res["analog"], res["digital"]
            print(f"{part}: eval {an['eval_ms_per_sample']:.1f} ms/sample (digital {di['eval_ms_per_sample']:.1f}, "
                  f"x{an['eval_ms_per_sample'] / di['eval_ms_per_sample']:.2f}); HWA step {an['hwa_step_ms']:.0f} ms "
                  f"at batch {an['step_batch']} (digital step {di['step_ms']:.0f} ms, "
                  f"x{an['hwa_step_ms'] / di['step_ms']:.2f}); peak RSS {an['peak_rss_gib']:.2f} GiB "
                  f"(digital {di['peak_rss_gib']:.2f}); state {an['state']['bytes_per_weight']} B/weight", flush=True)
    print(f"# load at end: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
