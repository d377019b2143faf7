"""In-situ (on-chip) training on MNIST-5k: FP SGD vs analog SGD, Tiki-Taka, TTv2, c-TTv2, mixed precision
(training.md §2; published orderings of Gokmen & Haensch 2020, Nandakumar et al. 2020, Rasch et al. 2024).

Data: ``aimc.datasets.load("mnist5k")``, the fixed stratified 4000/1000 split; a stratified validation split of
``--val`` images (default 500, 50 per class, fixed) is carved from the 4000 training images and the rest trains.
Network (every row): MLP 784-H1-H2-10 (ReLU, default 256-128), all three weight matrices analog (biases digital,
trained by the digital SGD inside ``aimc.optim.AnalogSGD``), cross-entropy, mini-batch ``--batch``, ``--epochs``
epochs, constant learning rate, seeds 0..n-1 (model init, batch order, devices, periphery noise). Forward and
backward read through aimc's default periphery (= aihwkit's default IOParameters: 7-bit DAC, 9-bit ADC,
out_noise 0.06, abs-max noise management, bound management on the forward); accuracies are read through the
same noisy analog forward.

Learning rate: every row is trained at each learning rate of ``--lrs`` (default 0.03, 0.1, 0.3) and every seed;
the row reports the learning rate with the best mean validation accuracy and the test accuracy (mean ± std over
seeds) at that learning rate. The test split is never used for the choice.

Rows:
  1. FP SGD (torch.nn.Linear, the same network and schedule),
  2. analog SGD on the symmetric ``idealized`` card (constant step 2e-4, ~10 000 states),
  3.-8. on ``sb67``: soft bounds on [-1, 1] with dw_min 0.03 (~67 steps), 30 % device-to-device spread of step
     and bounds, 30 % c2c noise, 5 % d2d spread of the up/down ratio (5x aihwkit's default 1 %): asymmetric in
     the soft-bounds sense (up and down steps are equal only at each device's symmetry point, near 0). Analog
     SGD, Tiki-Taka v1, Tiki-Taka v1 reading one column per sample (``units_in_mbatch`` off: the read rate of
     TTv2), TTv2, c-TTv2, mixed precision;
  9.-12. the same device zero-shifted (``sb67-zs``: each device's symmetry point subtracted on read, Gong & Rasch
     et al., IEDM 2022): analog SGD, Tiki-Taka v1 per sample, TTv2, c-TTv2;
  13.-17. ``sb200`` (dw_min 0.01, ~200 steps): analog SGD, Tiki-Taka v1 per sample, TTv2, c-TTv2, mixed precision.
Algorithm settings are ``aimc.insitu``'s presets, i.e. aihwkit 1.1.0's ``build_config`` defaults (Tiki-Taka v1:
``TransferCompound`` with absolute fast LR 1, one column per mini-batch, transfer written with BL 31 and update
management, read without noise/bound management; TTv2/c-TTv2: update BL 5, c-TTv2 fast LR 0.1 with auto-scale
and choppers 0.1), except the one departure named in rows 5, 10 and 14.

    python benchmarks/insitu_mnist.py                          # the table (17 rows x 3 lrs x 2 seeds)
    python benchmarks/insitu_mnist.py --rows 1,3,4 --epochs 1 --seeds 1 --lrs 0.1   # smoke run
"""
from __future__ import annotations

import os

# torch's and numba's OpenMP pools spin-wait for each other on 2 shared cores: passive waiting keeps small
# steps fast. Must be set before torch/numba load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

def _soft_bounds(dw_min, zero_shift=False):
    """Soft bounds on [-1, 1] (symmetry point near 0), 30 % d2d spread of steps and bounds, 5 % d2d spread of the
    up/down ratio, 30 % multiplicative c2c noise; ``zero_shift``: each device's symmetry point subtracted on read."""
    return SoftBounds(dw_min=dw_min, w_max=1.0, w_min=-1.0, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0,
                      up_down_dtod=0.05, w_max_dtod=0.3, w_min_dtod=0.3, subtract_symmetry_point=zero_shift)


DEVICES = {"sb67": _soft_bounds(0.03),                        # ~67 steps across the range
           "sb67-zs": _soft_bounds(0.03, zero_shift=True),    # the same, zero-shifted
           "sb200": _soft_bounds(0.01)}                       # ~200 steps
PER_SAMPLE = {"units_in_mbatch": False}   # TT v1 reads one column per sample (transfer_every 1 MVM), as TTv2

# (label, algorithm, device, extra InsituConfig fields)
ROWS = [("FP SGD", "fp", None, {}),
        ("analog SGD, idealized (symmetric)", "sgd", "idealized", {})]
ROWS += [("analog SGD, sb67", "sgd", "sb67", {}),
         ("Tiki-Taka v1, sb67", "tiki-taka", "sb67", {}),
         ("Tiki-Taka v1 per sample, sb67", "tiki-taka", "sb67", PER_SAMPLE),
         ("TTv2, sb67", "ttv2", "sb67", {}),
         ("c-TTv2, sb67", "c-ttv2", "sb67", {}),
         ("mixed precision, sb67", "mixed-precision", "sb67", {})]
ROWS += [("analog SGD, sb67-zs", "sgd", "sb67-zs", {}),
         ("Tiki-Taka v1 per sample, sb67-zs", "tiki-taka", "sb67-zs", PER_SAMPLE),
         ("TTv2, sb67-zs", "ttv2", "sb67-zs", {}),
         ("c-TTv2, sb67-zs", "c-ttv2", "sb67-zs", {})]
ROWS += [("analog SGD, sb200", "sgd", "sb200", {}),
         ("Tiki-Taka v1 per sample, sb200", "tiki-taka", "sb200", PER_SAMPLE),
         ("TTv2, sb200", "ttv2", "sb200", {}),
         ("c-TTv2, sb200", "c-ttv2", "sb200", {}),
         ("mixed precision, sb200", "mixed-precision", "sb200", {})]


def _device(name):
    return DEVICES.get(name, name)


def split(n_val: int = 500, seed: int = 1234):
    """(x_tr, y_tr, x_val, y_val, x_te, y_te): a stratified validation split carved from the training images."""
    ds = datasets.load("mnist5k")
    y = ds.y_train
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n_val // len(classes)
    val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes]) if per else \
        np.zeros(0, int)
    tr = np.setdiff1d(np.arange(len(y)), val)
    t = torch.from_numpy
    return (t(ds.x_train[tr]), t(y[tr]).long(), t(ds.x_train[val]), t(y[val]).long(), t(ds.x_test),
            t(ds.y_test).long())


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


def run_one(algorithm: str, device="sb67", seed: int = 0, epochs: int = 5, lr: float = 0.1,
            hidden=(256, 128), batch: int = 10, extra: dict | None = None, n_val: int = 500,
            verbose: bool = False) -> dict:
    """Train one network in situ (or FP) on the training part; validation and test accuracy, time, counters."""
    x_tr, y_tr, x_val, y_val, x_te, y_te = split(n_val)
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
            print(f"  {algorithm} lr {lr} seed {seed} epoch {ep + 1}: val {accuracy(model, x_val, y_val):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    res = {"algorithm": algorithm, "device": device, "seed": seed, "epochs": epochs, "lr": lr, "batch": batch,
           "hidden": list(hidden), "val_accuracy": accuracy(model, x_val, y_val) if len(x_val) else float("nan"),
           "test_accuracy": accuracy(model, x_te, y_te), "train_s": round(time.perf_counter() - t0, 1)}
    if algorithm != "fp":
        s = opt.summary()
        res["pulses"] = s["pulses"]
        res["transfers"] = s["transfers"]
        res["pulses_per_device_per_epoch"] = round(s["pulses"] / sum(m.weight.numel() for _, m in opt._layers)
                                                   / epochs, 2)
    return res


def summarize(rows, results):
    """Per row: the lr with the best mean validation accuracy and the test accuracy (mean, std) at that lr."""
    out = []
    for i, (label, alg, dev, extra) in rows:
        rs = [r for r in results if r["row"] == label]
        if not rs:
            continue
        by_lr = {}
        for r in rs:
            by_lr.setdefault(r["lr"], []).append(r)
        val = {lr: statistics.mean(r["val_accuracy"] for r in v) for lr, v in by_lr.items()}
        best = max(val, key=val.get)
        acc = [r["test_accuracy"] for r in by_lr[best]]
        ppd = [r["pulses_per_device_per_epoch"] for r in by_lr[best] if "pulses_per_device_per_epoch" in r]
        out.append({"row": i, "label": label, "algorithm": alg, "device": dev, "extra": extra, "best_lr": best,
                    "val_by_lr": val, "val_accuracy": val[best], "test_mean": statistics.mean(acc),
                    "test_std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "test_accuracies": acc,
                    "pulses_per_device_per_epoch": statistics.mean(ppd) if ppd else None,
                    "seconds_per_run": statistics.mean(r["train_s"] for r in by_lr[best])})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--lrs", default="0.03,0.1,0.3", help="learning rates swept per row (best on validation)")
    p.add_argument("--val", type=int, default=500, help="validation images carved from the training split")
    p.add_argument("--rows", default="", help="comma-separated row numbers (1-based) to run; default all")
    p.add_argument("--threads", type=int, default=1, help="numba/torch threads (small layers: 1 is fastest)")
    p.add_argument("--out", default="", help="write the JSON results here (rewritten after every run)")
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
    if a.val < 10:
        p.error("--val must be at least 10 (one image per class): the learning rate is chosen on it")
    hidden = tuple(int(h) for h in a.hidden.split(",") if h)
    lrs = [float(v) for v in a.lrs.split(",") if v]
    rows = [(int(r), ROWS[int(r) - 1]) for r in a.rows.split(",") if r] if a.rows else list(enumerate(ROWS, 1))
    results = []
    t_all = time.perf_counter()
    meta = {"benchmark": "insitu_mnist", "epochs": a.epochs, "batch": a.batch, "hidden": list(hidden),
            "seeds": a.seeds, "lrs": lrs, "val": a.val, "devices": {k: repr(v) for k, v in DEVICES.items()},
            "command": "python benchmarks/insitu_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    for i, (label, alg, dev, extra) in rows:
        for lr in lrs:
            for seed in range(a.seeds):
                r = run_one(alg, dev, seed, a.epochs, lr, hidden, a.batch, extra, a.val, a.verbose)
                r["row"] = label
                results.append(r)
                print(f"{i:2d} {label:34s} lr {lr:<5g} seed {seed}: val {r['val_accuracy']:.4f} test "
                      f"{r['test_accuracy']:.4f}  ({r['train_s']:.0f} s"
                      + (f", {r['pulses_per_device_per_epoch']} pulses/device/epoch" if "pulses" in r else "") + ")",
                      flush=True)
                if a.out:
                    Path(a.out).write_text(json.dumps({**meta, "rows": summarize(rows, results), "runs": results},
                                                      indent=1))
    total = time.perf_counter() - t_all
    summary = summarize(rows, results)
    print(f"\nMNIST-5k ({len(split(a.val)[0])} train / {a.val} validation / 1000 test), MLP "
          f"784-{'-'.join(map(str, hidden))}-10, {a.epochs} epochs, batch {a.batch}, lrs {lrs}, {a.seeds} seeds, "
          f"total {total:.0f} s\n")
    print("| row | algorithm | device | best lr (val) | val accuracy | test accuracy (mean ± std) | "
          "pulses/device/epoch | s/run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in summary:
        ppd = r["pulses_per_device_per_epoch"]
        print(f"| {r['row']} | {r['label']} | {r['device'] or '-'} | {r['best_lr']:g} | {100 * r['val_accuracy']:.1f} | "
              f"{100 * r['test_mean']:.2f} ± {100 * r['test_std']:.2f} | {'-' if ppd is None else f'{ppd:.1f}'} | "
              f"{r['seconds_per_run']:.0f} |")
    out = {**meta, "total_s": round(total, 1), "rows": summary, "runs": results}
    print("\n" + json.dumps(out))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
