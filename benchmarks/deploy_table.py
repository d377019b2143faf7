"""MNIST-5k accuracy of the default model on PCM and ReRAM chips over time, without and with drift compensation.

Setup: the shipped default model (``aimc.zoo.load_default``: MLP 784-256-128-10 trained digitally on the
mnist5k train split, 95.0 % test accuracy), the mnist5k test split (1,000 images), the periphery and
mapping of ``aimc.deploy.deploy_config`` (8-bit DAC/ADC, ADC bound 10, out_noise 0.04, abs-max noise
management, no bound management, columnwise weight scaling, tiles <= 512 x 512), and two device cards:

* ``pcm-joshi2020`` (differential pair; programming noise, power-law drift, 1/f read noise);
* ``reram-cmo-falcone2025`` (one device per weight plus a digital offset; programming noise with 0.2 %
  program-and-verify acceptance, log-time relaxation, read noise). The other ReRAM card, ``reram-wan2022``,
  is tabulated only up to 2 days and cannot be read at 1 y / 10 y. The CMO relaxation law is a fit over
  hours to days; 1 y and 10 y extrapolate it in ln t.

Each (device, compensation) cell programs ``--chips`` chip instances (seeds 0..N-1; the same seeds, hence
the same programmed chips, for both compensation settings), drifts each to 1 s, 1 h, 1 d, 1 y, 10 y (read
noise redrawn at every time) and reports the test accuracy mean +- sample std over the chips. Prints a
markdown table and writes JSON (``--json``, never overwriting an existing file).

Run: ``python benchmarks/deploy_table.py [--chips 5] [--json deploy_table.json]``.
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
from aimc._io import atomic_write_text  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.deploy import deploy_config, evaluate_over_time  # noqa: E402

TIMES = ["1s", "1h", "1d", "1y", "10y"]
DEVICES = ["pcm-joshi2020", "reram-cmo-falcone2025"]
COMPENSATIONS = ["none", "global"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chips", type=int, default=5, help="chip instances per cell (default 5)")
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
    for dev in args.devices.split(","):
        for comp in COMPENSATIONS:
            t0 = time.perf_counter()
            res = evaluate_over_time(model, ds, deploy_config(dev, comp), TIMES, args.chips, seed=0)
            cells[f"{dev}/{comp}"] = res.to_dict()
            print(f"{dev:<24} {comp:<7} " + "  ".join(f"{lab} {100 * m:.2f}±{100 * s:.2f}" for lab, m, s in
                                                       zip(res.time_labels, res.mean, res.std))
                  + f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    digital = next(iter(cells.values()))["digital_accuracy"]
    keys = list(cells)
    lines = [f"MNIST-5k test accuracy (%), default MLP (digital {100 * digital:.2f} %), mean ± std over "
             f"{args.chips} chips", "",
             "| time | " + " | ".join(k.replace("/", ", ") + " comp." for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for i, lab in enumerate(TIMES):
        row = [f"{100 * cells[k]['mean'][i]:.2f} ± {100 * cells[k]['std'][i]:.2f}" for k in keys]
        lines.append(f"| {lab} | " + " | ".join(row) + " |")
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
