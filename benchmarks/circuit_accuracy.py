"""MNIST-5k accuracy against array size and wire resistance: the polynomial IR-drop model against the circuit
solve (issue 9), and the polynomial model's error against the solved circuit.

Setup: two models -- the shipped default MLP (``aimc.zoo.load_default``, 784-256-128-10) and the zoo CNN
(``aimc.zoo.cnn()``: conv 1->8, conv 8->16, fc 784->64->10, trained here digitally for ``--cnn-epochs`` epochs
on the mnist5k train split, seed 0) -- deployed with ``aimc.deploy.deploy_config`` (PCM card
``pcm-joshi2020``, global drift compensation, 8-bit DAC/ADC, out_noise 0.04, columnwise weight scaling,
calibrated DAC/ADC ranges from ``--cal-samples`` training images) on tiles of at most ``size`` x ``size``
(mapping ``max_in`` = ``max_out`` = 64, 256, 1024: the array size) with wires of 0.5, 1 and 2.5 Ohm per
segment, modelled three ways:

* ``none``: ideal wires (the reference);
* ``polynomial``: aihwkit's IR-drop fit (``IOConfig.ir_drop = 1``, ``ir_drop_g_ratio = 1 / (R g_max)``);
* ``circuit``: the array solved as a resistor network (``ArrayConfig(model="circuit")``, linear cells,
  geometry ``used``: each tile's used rows x columns, G+ and G- as two arrays, the fast solver), once per
  programmed / drifted state.

Each cell programs one chip (seed 0), drifts it to 1 s and 1 y and scores the first ``--test`` images of the
mnist5k test split. A second table gives the error of the polynomial model against the circuit solve on the
analog outputs of the MLP's first layer (784 -> 256, split into tiles of ``size``) for ``--err-images`` test
images, ideal periphery and weights (no converters, noise or drift): relative RMS
||y_poly - y_circuit|| / ||y_circuit||, beside the same for ideal wires (how much the wires change the
outputs at all). The circuit solve is the fast solver, within ~1e-4 of the exact sparse solve at these sizes
(``aimc bench ir-drop``); the exact solve itself is too slow at 1024 rows here.

Run: ``python benchmarks/circuit_accuracy.py [--json circuit_accuracy.json] [--plot docs/circuit_accuracy.png]``
(never overwrites a file). ``--models mlp`` / ``--sizes 64,256`` restrict the grid.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from aimc import datasets, zoo  # noqa: E402
from aimc._io import atomic_write_text  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.config import ArrayConfig, IOConfig, NoiseManagement, BoundManagement  # noqa: E402
from aimc.deploy import deploy_config, evaluate_over_time  # noqa: E402

SIZES = (64, 256, 1024)
WIRES = (0.5, 1.0, 2.5)
TIMES = ("1s", "1y")
WIRE_MODELS = ("polynomial", "circuit")


def wire_config(base, wire_model: str, r_ohm: float, size: int):
    """``base`` (a TileConfig) on tiles of at most size x size with wires of r_ohm per segment."""
    cfg = base.replace(mapping=base.mapping.replace(max_in=size, max_out=size))
    g_max_s = cfg.mapping.g_max * 1e-6
    if wire_model == "polynomial":
        return cfg.replace(forward=cfg.forward.replace(ir_drop=1.0, ir_drop_g_ratio=1.0 / (r_ohm * g_max_s)),
                           array=ArrayConfig(model="polynomial"))
    if wire_model == "circuit":
        return cfg.replace(forward=cfg.forward.replace(ir_drop=0.0),
                           array=ArrayConfig(model="circuit", wire_row_ohm=r_ohm, wire_col_ohm=r_ohm))
    if wire_model == "none":
        return cfg.replace(forward=cfg.forward.replace(ir_drop=0.0), array=ArrayConfig(model="none"))
    raise ValueError(f"unknown wire model {wire_model!r}")


def train_cnn(data, epochs: int):
    model = zoo.cnn()
    acc = zoo.train_digital(model, data, epochs=epochs, seed=0)
    model.eval()
    return model, acc


def layer_error(fc, x, size: int, r_ohm: float, base) -> dict:
    """Relative RMS of the polynomial model and of ideal wires against the circuit solve, on the outputs of
    the torch Linear ``fc`` converted alone, ideal periphery (no converters, noise), ideal weights."""
    import torch

    from aimc.convert import convert_to_analog
    io = IOConfig(inp_bits=0, out_bits=0, out_bound=0.0, out_noise=0.0, noise_management=NoiseManagement.NONE,
                  bound_management=BoundManagement.NONE)
    plain = base.replace(forward=io, backward=io, inference=None, calibration=None)
    out = {}
    with torch.no_grad():
        for wm in ("none", "polynomial", "circuit"):
            layer = convert_to_analog(fc, wire_config(plain, wm, r_ohm, size))
            layer.eval()
            out[wm] = layer(torch.as_tensor(x)).numpy().astype(np.float64) - fc.bias.numpy()
    ref = np.linalg.norm(out["circuit"])
    return {"poly_vs_circuit_rel_rms": float(np.linalg.norm(out["polynomial"] - out["circuit"]) / ref),
            "ideal_vs_circuit_rel_rms": float(np.linalg.norm(out["none"] - out["circuit"]) / ref)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="circuit_accuracy.json", help="results file (refused if it exists)")
    p.add_argument("--plot", default=None, help="PNG of accuracy vs wire resistance (refused if it exists)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--wires", default=",".join(map(str, WIRES)))
    p.add_argument("--test", type=int, default=500, help="test images scored (first N of the test split)")
    p.add_argument("--cal-samples", type=int, default=200, help="calibration images (training split)")
    p.add_argument("--err-images", type=int, default=200, help="images for the polynomial-model error table")
    p.add_argument("--cnn-epochs", type=int, default=3)
    args = p.parse_args(argv)
    for f in (args.json, args.plot):
        if f and Path(f).exists():
            p.error(f"{f} exists; refusing to overwrite it")
    set_threads(args.threads)
    models = args.models.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    wires = [float(s) for s in args.wires.split(",")]
    data = datasets.load("mnist5k")
    x_test, y_test = data.x_test[:args.test], data.y_test[:args.test]
    base = deploy_config()
    base = base.replace(calibration=base.calibration.replace(samples=args.cal_samples))
    nets = {}
    t0 = time.perf_counter()
    if "mlp" in models:
        nets["mlp"] = (zoo.load_default()[0], None)
    if "cnn" in models:
        nets["cnn"] = train_cnn(data, args.cnn_epochs)
    res = {"setup": {k: v for k, v in vars(args).items()}, "times": list(TIMES), "accuracy": [], "error": []}
    for name, (net, acc) in nets.items():
        digital = zoo.evaluate(net, x_test, y_test)
        res.setdefault("digital", {})[name] = digital
        print(f"{name}: digital accuracy {digital:.3f} on {len(y_test)} test images"
              + (f" (trained {args.cnn_epochs} epochs)" if acc is not None else ""), flush=True)
        for size in sizes:
            grid = [("none", 0.0)] + [(wm, r) for r in wires for wm in WIRE_MODELS]
            for wm, r in grid:
                t = time.perf_counter()
                cfg = wire_config(base, wm, r if r else 1.0, size)
                try:
                    dr = evaluate_over_time(net, (x_test, y_test), cfg, times=TIMES, repeats=1, seed=0,
                                            calibration=(data.x_train[:args.cal_samples],
                                                         data.y_train[:args.cal_samples]), clip_warn=1.0)
                    accs, err = [float(a) for a in dr.mean], None
                except Exception as e:  # a contender that fails is reported, never dropped
                    accs, err = [None] * len(TIMES), f"{type(e).__name__}: {e}"
                row = {"model": name, "size": size, "wire": wm, "ohm": r, "accuracy": accs,
                       "seconds": round(time.perf_counter() - t, 1), "error": err}
                res["accuracy"].append(row)
                print(json.dumps(row), flush=True)
    if "mlp" in nets:
        fc = nets["mlp"][0].fc1
        xe = np.asarray(data.x_test[:args.err_images], np.float32)
        for size in sizes:
            for r in wires:
                t = time.perf_counter()
                row = {"layer": "mlp.fc1 (784 -> 256)", "size": size, "ohm": r,
                       **layer_error(fc, xe, size, r, base), "seconds": round(time.perf_counter() - t, 1)}
                res["error"].append(row)
                print(json.dumps(row), flush=True)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(table(res))
    atomic_write_text(args.json, json.dumps(res, indent=1), overwrite=False)
    if args.plot:
        plot(res, args.plot)
    return 0


def table(res) -> str:
    lines = ["| model | rows | wire model | " + " | ".join(f"{o} Ohm: 1 s / 1 y" for o in _wires(res)) + " |",
             "|---|---|---|" + "---|" * len(_wires(res))]
    for name in res.get("digital", {}):
        for size in sorted({r["size"] for r in res["accuracy"] if r["model"] == name}):
            rows = [r for r in res["accuracy"] if r["model"] == name and r["size"] == size]
            none = next(r for r in rows if r["wire"] == "none")
            lines.append(f"| {name} | {size} | none (ideal wires) | " + " | ".join(
                _fmt(none) for _ in _wires(res)) + " |")
            for wm in WIRE_MODELS:
                cells = [_fmt(next(r for r in rows if r["wire"] == wm and r["ohm"] == o)) for o in _wires(res)]
                lines.append(f"| {name} | {size} | {wm} | " + " | ".join(cells) + " |")
    if res["error"]:
        lines += ["", "| rows | Ohm/segment | polynomial vs circuit (rel. RMS) | ideal vs circuit (rel. RMS) |",
                  "|---|---|---|---|"]
        for r in res["error"]:
            lines.append(f"| {r['size']} | {r['ohm']} | {r['poly_vs_circuit_rel_rms']:.3f} | "
                         f"{r['ideal_vs_circuit_rel_rms']:.3f} |")
    return "\n".join(lines)


def _wires(res):
    return sorted({r["ohm"] for r in res["accuracy"] if r["wire"] != "none"})


def _fmt(row) -> str:
    if row["error"]:
        return "failed"
    return " / ".join(f"{100 * a:.1f}" for a in row["accuracy"])


def plot(res, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(res.get("digital", {}))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for size, color in zip(sorted({r["size"] for r in res["accuracy"]}), ("C0", "C1", "C2", "C3")):
            for wm, ls in (("polynomial", "--"), ("circuit", "-")):
                rows = sorted((r for r in res["accuracy"] if r["model"] == name and r["size"] == size
                               and r["wire"] == wm and not r["error"]), key=lambda r: r["ohm"])
                if rows:
                    ax.plot([r["ohm"] for r in rows], [100 * r["accuracy"][-1] for r in rows], ls, color=color,
                            marker="o", label=f"{size} rows, {wm}")
            none = [r for r in res["accuracy"] if r["model"] == name and r["size"] == size and r["wire"] == "none"
                    and not r["error"]]
            if none:
                ax.axhline(100 * none[0]["accuracy"][-1], color=color, lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("wire resistance per segment (Ohm)")
        ax.set_ylabel(f"test accuracy at {res['times'][-1]} (%)")
        ax.set_title(f"{name} (MNIST-5k): polynomial --, circuit -, ideal wires :", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if Path(path).exists():
        raise FileExistsError(path)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
