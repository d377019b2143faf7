"""MNIST-5k accuracy of the default model on PCM and ReRAM chips over time, without and with drift compensation.

Setup: the shipped default model (``aimc.zoo.load_default``: MLP 784-256-128-10 trained digitally on the
mnist5k train split, 95.0 % test accuracy), the mnist5k test split (1,000 images), the periphery and
mapping of ``aimc.deploy.deploy_config`` (8-bit DAC/ADC, out_noise 0.04, no bound management, columnwise
weight scaling, tiles <= 512 x 512) with its default calibration (static DAC range at the 99.99th percentile of
each tile's inputs, per-column ADC ranges minimising quantisation + clipping error, both chosen on the
programmed chip at t = 0 from 1,000 training images), and two device cards:

* ``pcm-joshi2020`` (differential pair; programming noise, power-law drift, 1/f read noise);
* ``reram-cmo-falcone2025`` (one device per weight plus a digital offset; programming noise with 0.2 %
  program-and-verify acceptance, log-time relaxation, read noise). The other ReRAM card, ``reram-wan2022``,
  is tabulated only up to 2 days and cannot be read at 1 y / 10 y. The CMO relaxation law is a fit over
  hours to days; 1 y and 10 y extrapolate it in ln t.

Each (device, compensation) cell programs ``--chips`` chip instances (seeds 0..N-1; the same seeds, hence
the same programmed chips, for both compensation settings), drifts each to 1 s, 1 h, 1 d, 1 y, 10 y (read
noise redrawn at every time) and reports the test accuracy mean +- sample std over the chips. One more
column repeats PCM with global compensation *uncalibrated* (``--no-calibrate``: abs-max noise management,
fixed ADC bound 10), the setting of the tables before calibration existed. A second table gives the
fraction of clipped ADC outputs of the first layer (mean over chips), and a last line checks issue 11's
acceptance on the default cell (PCM, global, calibrated): mean(10 y) - mean(1 s) against 2 standard errors,
mean(1 s) against digital. Prints markdown tables and writes JSON (``--json``, never overwriting a file).

Run: ``python benchmarks/deploy_table.py [--chips 10] [--json deploy_table.json]``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimc import datasets, zoo  # noqa: E402
from aimc._io import atomic_write_text  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.deploy import deploy_config, evaluate_over_time  # noqa: E402

TIMES = ["1s", "1h", "1d", "1y", "10y"]
DEVICES = ["pcm-joshi2020", "reram-cmo-falcone2025"]
COMPENSATIONS = ["none", "global"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chips", type=int, default=10, help="chip instances per cell (default 10)")
    p.add_argument("--json", default="deploy_table.json", help="results file (refused if it exists)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--devices", default=",".join(DEVICES))
    args = p.parse_args(argv)
    if Path(args.json).exists():
        p.error(f"{args.json} exists; refusing to overwrite it (pass another --json)")
    set_threads(args.threads)
    model, meta = zoo.load_default()
    ds = datasets.load("mnist5k")
    cells = {}
    t_all = time.perf_counter()
    todo = [(dev, comp, True) for dev in args.devices.split(",") for comp in COMPENSATIONS]
    todo.append((DEVICES[0], "global", False))
    for dev, comp, cal in todo:
        t0 = time.perf_counter()
        res = evaluate_over_time(model, ds, deploy_config(dev, comp, calibrate=cal), TIMES, args.chips, seed=0)
        key = f"{dev}/{comp}" + ("" if cal else "/uncalibrated")
        cells[key] = res.to_dict()
        print(f"{key:<40} " + "  ".join(f"{lab} {100 * m:.2f}±{100 * s:.2f}" for lab, m, s in
                                                   zip(res.time_labels, res.mean, res.std))
              + f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    digital = next(iter(cells.values()))["digital_accuracy"]
    keys = list(cells)
    lines = [f"MNIST-5k test accuracy (%), default MLP (digital {100 * digital:.2f} %), mean ± std over "
             f"{args.chips} chips", "",
             "| time | " + " | ".join(k.replace("/", ", ") for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for i, lab in enumerate(TIMES):
        row = [f"{100 * cells[k]['mean'][i]:.2f} ± {100 * cells[k]['std'][i]:.2f}" for k in keys]
        lines.append(f"| {lab} | " + " | ".join(row) + " |")
    lines += ["", "Clipped ADC outputs of the first layer (%, mean over chips)", "",
              "| time | " + " | ".join(k.replace("/", ", ") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for i, lab in enumerate(TIMES):
        row = [f"{100 * next(iter(cells[k]['clip_fraction_mean'].values()))[i]:.2f}" for k in keys]
        lines.append(f"| {lab} | " + " | ".join(row) + " |")
    d = cells[f"{DEVICES[0]}/global"]
    n = args.chips
    se = [s / math.sqrt(n) for s in d["std"]]
    rise = d["mean"][-1] - d["mean"][0]
    lines += ["", f"Acceptance (PCM, global, calibrated, {n} chips): mean(10y) - mean(1s) = {100 * rise:+.2f} points "
                  f"(2 standard errors: {200 * math.hypot(se[0], se[-1]):.2f}); mean(1s) - digital = "
                  f"{100 * (d['mean'][0] - digital):+.2f} points (limit ±0.70)"]
    table = "\n".join(lines)
    print(table)
    wall = time.perf_counter() - t_all
    print(f"\n({wall:.0f} s on {args.threads} threads)")
    out = {"benchmark": "deploy_table", "command": " ".join(["python", "benchmarks/deploy_table.py"] + (argv or sys.argv[1:])),
           "chips": args.chips, "times": TIMES, "digital_accuracy": digital, "cells": cells,
           "table_markdown": table, "wall_s": round(wall, 1)}
    atomic_write_text(args.json, json.dumps(out, indent=2), overwrite=False)
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
