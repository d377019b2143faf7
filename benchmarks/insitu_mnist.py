"""In-situ (on-chip) training on MNIST-5k: FP SGD vs analog SGD, Tiki-Taka, TTv2, c-TTv2, mixed precision
(training.md §2, reproduction target R2/R12 of §4 as an ordering, not as numbers).

Data: ``aimc.datasets.load("mnist5k")``, the fixed stratified 4000/1000 split. Network (every row): MLP
784-H1-H2-10 (ReLU, default 256-128), all three weight matrices analog (biases digital, trained by the
digital SGD inside ``aimc.optim.AnalogSGD``), cross-entropy, mini-batch ``--batch``, ``--epochs`` epochs,
constant learning rate, seeds 0..n-1 (model init, batch order, devices, periphery noise). The analog forward
and backward read through aimc's default periphery (7-bit DAC, 9-bit ADC, out_noise 0.06, abs-max noise
management, bound management on the forward); test accuracy is read through the same noisy analog forward.

Rows (one learning rate, 0.1, for all; not tuned per row):
  1. FP SGD (torch.nn.Linear, the same network and schedule),
  2. analog SGD on the symmetric ``idealized`` card (constant step 2e-4, ~10 000 states),
  3.-7. analog SGD, Tiki-Taka v1, TTv2, c-TTv2 and mixed precision on ``soft-bounds-67``: soft bounds on
     [-1, 1] with dw_min 0.03 (~67 steps), 30 % device-to-device spread of step and bounds, 30 % c2c noise,
     5 % d2d spread of the up/down ratio — asymmetric in the soft-bounds sense (up and down steps are equal
     only at each device's symmetry point, near 0; elsewhere the step toward the bound is smaller);
  8.-12. the same on ``soft-bounds-200`` (dw_min 0.01, ~200 steps).
Algorithm settings are aimc.insitu's defaults (aihwkit's build_config defaults) except Tiki-Taka v1, which reads
32 columns of A per mini-batch (``TT``).

    python benchmarks/insitu_mnist.py                         # the table (3 seeds)
    python benchmarks/insitu_mnist.py --epochs 1 --seeds 1    # smoke run
"""
from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import aimc  # noqa: E402
from aimc import datasets  # noqa: E402
from aimc.nn import AnalogLinear  # noqa: E402
from aimc.optim import AnalogSGD  # noqa: E402
from device_models.pulsed import SoftBounds  # noqa: E402

def _soft_bounds(dw_min):
    """Soft bounds on [-1, 1] (symmetry point near 0), 30 % d2d spread of steps and bounds, 5 % d2d spread of the
    up/down ratio, 30 % multiplicative c2c noise."""
    return SoftBounds(dw_min=dw_min, w_max=1.0, w_min=-1.0, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0,
                      up_down_dtod=0.05, w_max_dtod=0.3, w_min_dtod=0.3)


DEVICES = {"soft-bounds-67": _soft_bounds(0.03),     # ~67 steps across the range
           "soft-bounds-200": _soft_bounds(0.01)}    # ~200 steps
ASYM = "soft-bounds-67"
TT = {"n_reads_per_transfer": 32}   # aihwkit's default 1 read per mini-batch cannot move C within 5 epochs

# (label, algorithm, device, lr, extra InsituConfig fields); one learning rate for every row (not tuned per row)
ROWS = [("FP SGD", "fp", None, 0.1, {}),
        ("analog SGD, idealized (symmetric)", "sgd", "idealized", 0.1, {})]
for _dev in ("soft-bounds-67", "soft-bounds-200"):
    ROWS += [(f"analog SGD, {_dev}", "sgd", _dev, 0.1, {}),
             (f"Tiki-Taka v1, {_dev}", "tiki-taka", _dev, 0.1, TT),
             (f"TTv2, {_dev}", "ttv2", _dev, 0.1, {}),
             (f"c-TTv2, {_dev}", "c-ttv2", _dev, 0.1, {}),
             (f"mixed precision, {_dev}", "mixed-precision", _dev, 0.1, {})]


def _device(name):
    return DEVICES.get(name, name)


def build(algorithm: str, device, hidden, seed: int, **extra) -> nn.Module:
    torch.manual_seed(seed)
    sizes = [784, *hidden, 10]
    layers = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        if algorithm == "fp":
            layers.append(nn.Linear(i, o))
        else:
            cfg = aimc.insitu(algorithm, device=_device(device), **extra)
            layers.append(AnalogLinear(i, o, config=cfg, seed=seed * 100 + k, name=f"fc{k}"))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    model.train()
    return float((pred == y).float().mean())


def run_one(algorithm: str, device=ASYM, seed: int = 0, epochs: int = 5, lr: float | None = None,
            hidden=(256, 128), batch: int = 10, extra: dict | None = None, verbose: bool = False) -> dict:
    """Train one network in situ (or FP) and return test accuracy, time and pulse/transfer counters."""
    ds = datasets.load("mnist5k")
    x_tr, y_tr = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train).long()
    x_te, y_te = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test).long()
    lr = 0.1 if lr is None else lr
    model = build(algorithm, device, hidden, seed, **(extra or {}))
    opt = torch.optim.SGD(model.parameters(), lr=lr) if algorithm == "fp" else AnalogSGD(model, lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    loss_fn = nn.CrossEntropyLoss()
    for ep in range(epochs):
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(x_tr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        if verbose:
            print(f"  {algorithm} seed {seed} epoch {ep + 1}: test {accuracy(model, x_te, y_te):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    res = {"algorithm": algorithm, "device": device if isinstance(device, str) or device is None else str(device),
           "seed": seed, "epochs": epochs, "lr": lr, "batch": batch, "hidden": list(hidden),
           "test_accuracy": accuracy(model, x_te, y_te), "train_s": round(time.perf_counter() - t0, 1)}
    if algorithm != "fp":
        s = opt.summary()
        res["pulses"] = s["pulses"]
        res["transfers"] = s["transfers"]
        res["pulses_per_device_per_epoch"] = round(s["pulses"] / sum(p.numel() for _, m in opt._layers
                                                                    for p in [m.weight]) / epochs, 2)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--rows", default="", help="comma-separated row numbers (1-based) to run; default all")
    p.add_argument("--threads", type=int, default=1, help="numba/torch threads (small layers: 1 is fastest)")
    p.add_argument("--out", default="", help="write the JSON results here")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    import numba
    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(a.threads)
    try:  # OpenBLAS threads spinning on small products cost ~10x here
        from threadpoolctl import threadpool_limits
        threadpool_limits(a.threads)
    except ImportError:
        pass
    hidden = tuple(int(h) for h in a.hidden.split(",") if h)
    rows = [ROWS[int(r) - 1] for r in a.rows.split(",") if r] if a.rows else ROWS
    results = []
    t_all = time.perf_counter()
    for label, alg, dev, lr, extra in rows:
        accs = []
        for seed in range(a.seeds):
            r = run_one(alg, dev, seed, a.epochs, lr, hidden, a.batch, extra, a.verbose)
            r["row"] = label
            results.append(r)
            accs.append(r["test_accuracy"])
            print(f"{label:38s} seed {seed}: {r['test_accuracy']:.4f}  ({r['train_s']:.0f} s"
                  + (f", {r['pulses_per_device_per_epoch']} pulses/device/epoch" if "pulses" in r else "") + ")",
                  flush=True)
    total = time.perf_counter() - t_all
    print(f"\nMNIST-5k, MLP 784-{'-'.join(map(str, hidden))}-10, {a.epochs} epochs, batch {a.batch}, "
          f"{a.seeds} seeds, total {total:.0f} s\n")
    print("| row | algorithm | device | lr | test accuracy (mean ± std) | pulses/device/epoch | s/run |")
    print("|---|---|---|---|---|---|---|")
    by = {}
    for r in results:
        by.setdefault(r["row"], []).append(r)
    summary = []
    for i, (label, alg, dev, lr, extra) in enumerate(rows):
        rs = by[label]
        accs = [r["test_accuracy"] for r in rs]
        m = statistics.mean(accs)
        s = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ppd = statistics.mean(r["pulses_per_device_per_epoch"] for r in rs) if "pulses" in rs[0] else None
        secs = statistics.mean(r["train_s"] for r in rs)
        print(f"| {i + 1} | {alg} | {dev or '-'} | {lr} | {100 * m:.2f} ± {100 * s:.2f} % | "
              f"{'-' if ppd is None else f'{ppd:.1f}'} | {secs:.0f} |")
        summary.append({"row": label, "algorithm": alg, "device": dev, "lr": lr, "extra": extra,
                        "accuracy_mean": m, "accuracy_std": s, "accuracies": accs, "pulses_per_device_per_epoch": ppd,
                        "seconds_per_run": secs})
    out = {"benchmark": "insitu_mnist", "epochs": a.epochs, "batch": a.batch, "hidden": list(hidden),
           "seeds": a.seeds, "devices": {k: repr(v) for k, v in DEVICES.items()}, "total_s": round(total, 1),
           "rows": summary,
           "runs": results}
    print("\n" + json.dumps(out))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
