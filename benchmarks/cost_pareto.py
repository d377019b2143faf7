"""Accuracy vs energy per inference of the default model as DAC (input) bits, ADC bits and bits per cell vary.

Setup: the shipped default MLP (784-256-128-10, mnist5k), the mnist5k test split (1,000 images), the
``aimc deploy`` config without calibration (PCM card ``pcm-joshi2020``, global drift compensation, abs-max
noise management, ADC bound 10, out_noise 0.04) with ``inp_bits`` x ``out_bits`` in ``--bits``^2 and the weights
stored either as one analog differential pair (``analog``) or bit-sliced (``--cells``: 8-bit weights, b bits
per cell, ceil(7 / b) slices of G+/G-, each slice read through its own ADC conversion and shift-added), tiles of
the technology card's core size; ``--chips`` chips per point (seeds 0..N-1), evaluated at t = 1 day; energy per
inference and accuracy are means over the chips, costed with the card (default ``hermes-pcm-14nm``: PWM
inputs, so fewer input bits also shorten the pulses; Walden ADC, so every ADC bit doubles the conversion
energy; each weight slice is one more read with its conversions, and more cells).

Prints a markdown table (the Pareto-optimal points marked) and writes a plot (``--plot``) and JSON
(``--json``), never overwriting. Run: ``python benchmarks/cost_pareto.py --plot docs/cost_pareto.png``.
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

from aimc import datasets, zoo  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.deploy import deploy_config, evaluate_over_time  # noqa: E402


def pareto(points):
    """Indices of the points no other point beats in both energy (lower) and accuracy (higher)."""
    out = []
    for i, (e, a) in enumerate(points):
        if not any((e2 <= e and a2 >= a) and (e2 < e or a2 > a) for e2, a2 in points):
            out.append(i)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=3)
    ap.add_argument("--tech", default="hermes-pcm-14nm")
    ap.add_argument("--bits", default="4,6,8")
    ap.add_argument("--cells", default="analog,1,2,4",
                    help="'analog' (one differential pair) and/or bits per cell of sliced 8-bit weights")
    ap.add_argument("--plot", help="write the Pareto plot (PNG) here (never overwriting)")
    ap.add_argument("--json", help="write the results as JSON (never overwriting)")
    args = ap.parse_args(argv)
    for p in (args.plot, args.json):
        if p and Path(p).exists():
            raise SystemExit(f"{p} exists; not overwriting")
    set_threads(2)
    bits = [int(b) for b in args.bits.split(",")]
    cells = [c if c == "analog" else int(c) for c in args.cells.split(",")]
    model, _ = zoo.load_default()
    data = datasets.load("mnist5k")
    # uncalibrated (abs-max noise management, ADC bound 10), as when this table was measured: with calibrated
    # static DAC ranges, 4-bit ADCs collapse at 1 d because the one-hot drift-compensation readout quantises
    # to a few levels (alpha 11-23 instead of ~1.1; README "Calibrated converter ranges", known limit)
    base = deploy_config(calibrate=False)
    rows = []
    t0 = time.perf_counter()
    for cell in cells:
        mp = base.mapping if cell == "analog" else base.mapping.replace(kind="sliced", weight_bits=8,
                                                                         bits_per_cell=cell)
        for bi in bits:
            for bo in bits:
                cfg = base.replace(forward=base.forward.replace(inp_bits=bi, out_bits=bo), mapping=mp)
                res = evaluate_over_time(model, data, cfg, times=("1d",), repeats=args.chips, tech=args.tech)
                e = res.cost["energy_pJ"][0]
                rows.append({"cells": cell, "slices": mp.n_slices, "inp_bits": bi, "out_bits": bo,
                             "accuracy": res.mean[0], "accuracy_std": res.std[0],
                             "energy_nJ": sum(e) / len(e) / 1e3,
                             "latency_ns": sum(res.cost["latency_ns"][0]) / args.chips})
                print(f"  {cell} {bi}/{bo}: {100 * res.mean[0]:.2f} %, {rows[-1]['energy_nJ']:.2f} nJ "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    front = set(pareto([(r["energy_nJ"], r["accuracy"]) for r in rows]))
    print(f"default MLP, mnist5k test, t = 1 d, {args.chips} chips, card {args.tech} "
          f"({time.perf_counter() - t0:.0f} s; machine shared with other jobs)")
    print("| bits per cell (slices) | DAC bits | ADC bits | accuracy (%) | energy / inference (nJ) | latency (ns) "
          "| Pareto |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        r["pareto"] = i in front
        cell = "analog pair" if r["cells"] == "analog" else f"{r['cells']} ({r['slices']})"
        print(f"| {cell} | {r['inp_bits']} | {r['out_bits']} | {100 * r['accuracy']:.2f} ± "
              f"{100 * r['accuracy_std']:.2f} | {r['energy_nJ']:.3f} | {r['latency_ns']:.0f} | "
              f"{'*' if i in front else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"tech": args.tech, "chips": args.chips, "rows": rows}, indent=2))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7.0, 4.8))
        marks = {c: m for c, m in zip(cells, "osD^v<>")}
        for c in cells:
            rs = [r for r in rows if r["cells"] == c]
            sc = ax.scatter([r["energy_nJ"] for r in rs], [100 * r["accuracy"] for r in rs], marker=marks[c],
                            c=[r["out_bits"] for r in rs], s=[12 * r["inp_bits"] for r in rs], cmap="viridis",
                            vmin=min(bits), vmax=max(bits), edgecolors="k", linewidths=0.3,
                            label="analog pair" if c == "analog" else f"{c} bit/cell")
        fr = sorted((rows[i] for i in front), key=lambda r: r["energy_nJ"])
        ax.plot([r["energy_nJ"] for r in fr], [100 * r["accuracy"] for r in fr], "k--", lw=1, label="Pareto front")
        for r in fr:
            lab = "A" if r["cells"] == "analog" else f"{r['cells']}b"
            ax.annotate(f"{lab} {r['inp_bits']}/{r['out_bits']}", (r["energy_nJ"], 100 * r["accuracy"]),
                        fontsize=7, xytext=(3, -9), textcoords="offset points")
        fig.colorbar(sc, ax=ax, label="ADC bits (marker size: DAC bits)")
        ax.set_xscale("log")
        ax.set_xlabel(f"energy per inference (nJ), card {args.tech}")
        ax.set_ylabel("test accuracy at 1 day (%)")
        ax.set_title("default MLP on PCM: accuracy vs energy (labels: cells DAC/ADC bits)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
