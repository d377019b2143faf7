"""Equilibrium propagation / coupled learning on a resistive network vs a backprop MLP, scikit-learn's 8x8 digits.

Setup: ``aimc.datasets.load("digits")`` (fixed stratified split, 1,438 train / 359 test, pixels / 16 in [0, 1]);
inputs become source voltages (+x and -x volts, bias +-1 V). The resistive classifier
(:class:`aimc.pnn.equilibrium.ResistiveClassifier`) has 64 inputs, ``--hidden`` diode-ReLU hidden nodes and 10
differential output pairs, trained by equilibrium propagation (nudge beta = 1e-3, plain SGD with per-layer
rates) and by coupled learning (eta = 0.5) through the ideal clipped-conductance update. The baseline is a
64-H-10 ReLU MLP with softmax cross-entropy trained by backprop in plain numpy: same hidden size, epochs and
minibatch size, SGD. Each method runs for ``--seeds`` seeds (initial conductances/weights and shuffling).

Costs: "solves" counts physical equilibria (one per sample and phase, including test-set evaluation);
"updates" counts conductance (or weight) writes.

Rates: EP (hidden, output) = (1e4, 60), CL = (3e3, 30), both x0.85 per epoch, targets +-20 mV; MLP SGD 0.3
(each tuned by hand on seed 0; a passive network attenuates, so the hidden layer needs the larger rate).

Measured 2026-11-28 on the 2-core CPU shared with other jobs (load average ~8, so wall times are about 3x
the CPU time: 65 s CPU for the whole run), ``python benchmarks/ep_digits.py --json ep_digits.json`` with
the defaults (hidden 64, 10 epochs, batch 10, seeds 0 1 2)::

    method                           test acc (mean +- std)  train acc  solves/seed  updates/seed  s/seed
    EP resistive network                    93.50 +-  0.90 %     94.32%        29119      1.39e+07    28.1
    coupled learning resistive              91.36 +-  0.28 %     92.14%        29119      1.39e+07    38.4
    backprop MLP (numpy)                    97.03 +-  0.43 %     99.63%            0      6.93e+06     0.2

EP through pulsed ReRAM devices (``--methods ep-device --device reram-sb --seeds 0``; stochastic-rounded
pulses, soft bounds, additive c2c noise of 3.75 steps and write noise): 68.5 % test after 10 epochs
(still rising), 5.1e7 pulses. With an ideal device EP is 3.5 points below the equal-size backprop MLP;
the device noise costs far more than the learning rule.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimc import datasets  # noqa: E402
from aimc.pnn.equilibrium import DeviceUpdate, ResistiveClassifier, train  # noqa: E402


def run_resistive(ds, method, seed, args):
    model = ResistiveClassifier(ds.n_features, args.hidden, ds.n_classes, nonlinearity="relu",
                                target_high=args.target, target_low=-args.target, seed=seed)
    t0 = time.perf_counter()
    lr = (args.cl_lr1, args.cl_lr2) if method == "cl" else (args.lr1, args.lr2)
    update = DeviceUpdate(args.device, model.g_min, model.g_max) if method == "ep-device" else None
    res = train(model, ds.x_train, ds.y_train, method="cl" if method == "cl" else "ep", epochs=args.epochs,
                lr=lr, lr_decay=args.lr_decay, beta=args.beta, eta=args.eta, batch_size=args.batch,
                update=update, seed=seed)
    acc = model.score(ds.x_test, ds.y_test)
    sec = time.perf_counter() - t0
    c = model.costs()
    return {"test_acc": acc, "train_acc": model.score(ds.x_train, ds.y_train), "seconds": sec,
            "solves": c["solves"], "updates": c["conductance_updates"], "pulses": c["pulses"],
            "newton_iterations": c["newton_iterations"],
            "history": res.history}


def run_mlp(ds, seed, args):
    """64-H-10 ReLU MLP, softmax cross-entropy, minibatch SGD, backprop in numpy (float64)."""
    rng = np.random.Generator(np.random.Philox(seed))
    X, y = ds.x_train.astype(np.float64), ds.y_train
    n_in, h, n_out = ds.n_features, args.hidden, ds.n_classes
    W1 = rng.normal(0, np.sqrt(2.0 / n_in), (n_in, h))
    b1 = np.zeros(h)
    W2 = rng.normal(0, np.sqrt(1.0 / h), (h, n_out))
    b2 = np.zeros(n_out)
    lr = args.mlp_lr
    t0 = time.perf_counter()
    updates = 0

    def forward(x):
        a = x @ W1 + b1
        hdn = np.maximum(a, 0.0)
        return a, hdn, hdn @ W2 + b2

    for _ in range(args.epochs):
        order = rng.permutation(X.shape[0])
        for i in range(0, X.shape[0], args.batch):
            bi = order[i:i + args.batch]
            x = X[bi]
            a, hdn, z = forward(x)
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(bi.size), y[bi]] -= 1.0
            dz = p / bi.size
            dh = (dz @ W2.T) * (a > 0)
            W2 -= lr * hdn.T @ dz
            b2 -= lr * dz.sum(axis=0)
            W1 -= lr * x.T @ dh
            b1 -= lr * dh.sum(axis=0)
            updates += W1.size + b1.size + W2.size + b2.size
        lr *= args.mlp_lr_decay
    sec = time.perf_counter() - t0
    acc = float(np.mean(np.argmax(forward(ds.x_test.astype(np.float64))[2], axis=1) == ds.y_test))
    tr = float(np.mean(np.argmax(forward(X)[2], axis=1) == y))
    return {"test_acc": acc, "train_acc": tr, "seconds": sec, "solves": 0, "updates": updates}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["ep", "cl", "mlp"], choices=["ep", "cl", "ep-device", "mlp"],
                    help="ep-device: EP with conductance updates as pulses on --device")
    ap.add_argument("--device", default="reram-sb", help="pulsed device card for ep-device")
    ap.add_argument("--lr1", type=float, default=10000.0, help="EP rate, hidden layer")
    ap.add_argument("--lr2", type=float, default=60.0, help="EP rate, output layer")
    ap.add_argument("--cl-lr1", type=float, default=3000.0, help="CL rate, hidden layer")
    ap.add_argument("--cl-lr2", type=float, default=30.0, help="CL rate, output layer")
    ap.add_argument("--lr-decay", type=float, default=0.85, help="EP/CL per-epoch rate factor")
    ap.add_argument("--beta", type=float, default=1e-3)
    ap.add_argument("--eta", type=float, default=0.5)
    ap.add_argument("--target", type=float, default=0.02, help="differential output target (V), +-")
    ap.add_argument("--mlp-lr", type=float, default=0.3)
    ap.add_argument("--mlp-lr-decay", type=float, default=1.0)
    ap.add_argument("--json", type=str, default=None, help="write all results to this JSON file")
    args = ap.parse_args(argv)

    ds = datasets.load("digits")
    results = {m: [] for m in args.methods}
    for m in args.methods:
        for s in args.seeds:
            r = run_mlp(ds, s, args) if m == "mlp" else run_resistive(ds, m, s, args)
            r["seed"] = s
            results[m].append(r)
            print(f"  {m:4s} seed {s}: test {r['test_acc']:.4f} train {r['train_acc']:.4f} "
                  f"({r['seconds']:.1f} s)", flush=True)

    names = {"ep": "EP resistive network", "cl": "coupled learning resistive", "mlp": "backprop MLP (numpy)",
             "ep-device": f"EP, {args.device} pulses"}
    print(f"\ndigits, {ds.n_features}-{args.hidden}-{ds.n_classes}, {args.epochs} epochs, batch {args.batch}, "
          f"seeds {args.seeds}")
    print(f"{'method':30s} {'test acc (mean +- std)':>24s} {'train acc':>10s} {'solves/seed':>12s} "
          f"{'updates/seed':>13s} {'s/seed':>7s}")
    summary = {}
    for m, rs in results.items():
        acc = np.array([r["test_acc"] for r in rs])
        row = {"test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1) if acc.size > 1 else 0.0),
               "train_acc_mean": float(np.mean([r["train_acc"] for r in rs])),
               "solves_per_seed": float(np.mean([r["solves"] for r in rs])),
               "updates_per_seed": float(np.mean([r["updates"] for r in rs])),
               "seconds_per_seed": float(np.mean([r["seconds"] for r in rs]))}
        summary[m] = row
        print(f"{names[m]:30s} {row['test_acc_mean'] * 100:14.2f} +- {row['test_acc_std'] * 100:5.2f} % "
              f"{row['train_acc_mean'] * 100:9.2f}% {row['solves_per_seed']:12.0f} {row['updates_per_seed']:13.3g} "
              f"{row['seconds_per_seed']:7.1f}")
    if args.json:
        out = {"benchmark": "ep_digits", "args": vars(args), "summary": summary, "runs": results}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
