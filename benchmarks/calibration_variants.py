"""Calibration methods compared on the default deployment (README "Calibrated converter ranges").

The shipped MLP on MNIST-5k, ``aimc.deploy.deploy_config()`` (PCM, global compensation) with each
``CalibrationConfig`` variant below (and uncalibrated), ``--chips`` chips, accuracy at 1 s, 1 d, 10 y as
mean ± standard error (%), and the clipped fraction of ADC outputs per layer (%, mean over chips).

    python benchmarks/calibration_variants.py [--chips 10]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimc import datasets, zoo  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.config import CalibrationConfig  # noqa: E402
from aimc.deploy import deploy_config, evaluate_over_time  # noqa: E402

VARIANTS = {
    "uncalibrated (abs-max NM, ADC bound 10)": None,
    "percentile / mse / column (default)": {},
    "max / mse / column": {"inp": "max"},
    "percentile / percentile / column": {"out": "percentile"},
    "percentile / max / column": {"out": "max"},
    "percentile / mse / tile": {"out_granularity": "tile"},
    "percentile / mse / layer": {"out_granularity": "layer"},
    "none (abs-max NM) / mse / column": {"inp": "none"},
}
TIMES = ("1s", "1d", "10y")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chips", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    model, _ = zoo.load_default()
    ds = datasets.load("mnist5k")
    print("| input / ADC / granularity | " + " | ".join(TIMES) + " | clipped at 1 s (fc1, fc2, fc3) |")
    print("|---|" + "---|" * (len(TIMES) + 1))
    t_all = time.perf_counter()
    for name, kw in VARIANTS.items():
        cfg = deploy_config(calibrate=kw is not None)
        if kw:
            cfg = cfg.replace(calibration=CalibrationConfig(**kw))
        r = evaluate_over_time(model, ds, cfg, TIMES, args.chips)
        cells = [f"{100 * m:.2f} ± {100 * s / math.sqrt(args.chips):.2f}" for m, s in zip(r.mean, r.std)]
        clip = ", ".join(f"{100 * v[0]:.2f}" for v in r.clip_fraction_mean.values())
        print(f"| {name} | " + " | ".join(cells) + f" | {clip} |", flush=True)
    print(f"\n(digital {100 * r.digital_accuracy:.2f} %, {args.chips} chips, mean ± standard error, "
          f"{time.perf_counter() - t_all:.0f} s on {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
