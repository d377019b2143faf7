"""Time the deployment path on a ResNet-20-size CIFAR-shaped model: convert + program + drift + evaluate.

Model: ResNet-20 for 32x32x3 inputs (He et al. 2016, CIFAR variant: 3x3 conv 16, three stages of three
basic blocks with 16/32/64 channels, stride-2 downsampling with 1x1 projection shortcuts, global average
pooling, fc 64 -> 10), batch norm kept digital; random weights (the timing does not depend on them);
~272k weights on tiles. Every conv and the fc go to analog tiles with ``aimc.deploy.deploy_config``
(PCM card ``pcm-joshi2020``, global drift compensation, tiles <= 512 x 512).

Timed, each once, in this order: ``convert_to_analog``, ``program`` (programming noise and drift exponents
for every device), ``drift(1 day)`` (a fresh read of every device + the compensation readout), and the eval
forward of one batch of ``--batch`` images (default 256) -- plus the same forward of the digital model as
the baseline, measured in the same run. ``--repeats`` repeats the whole sequence on fresh chips and reports
the median.

Run: ``python benchmarks/resnet_cifar_timing.py [--batch 256] [--repeats 3] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from aimc._io import atomic_write_text  # noqa: E402
from aimc.bench import set_threads  # noqa: E402
from aimc.convert import analog_layers, convert_to_analog, drift, program  # noqa: E402
from aimc.deploy import deploy_config  # noqa: E402
from aimc.nn.bench import resnet20  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here (refused if it exists)")
    args = p.parse_args(argv)
    if args.json and Path(args.json).exists():
        p.error(f"{args.json} exists; refusing to overwrite it")
    set_threads(args.threads)
    torch.manual_seed(0)
    model = resnet20().eval()
    n_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    x = torch.rand(args.batch, 3, 32, 32)
    cfg = deploy_config("pcm-joshi2020", "global")
    times = {k: [] for k in ("convert", "program", "drift", "forward", "digital_forward")}
    # warm-up: numba kernels (JIT cache), torch kernels
    warm = convert_to_analog(model, cfg, seed=99).eval()
    program(warm)
    drift(warm, 1.0)
    with torch.no_grad():
        warm(x[:8])
        model(x[:8])
    for r in range(args.repeats):
        t = time.perf_counter()
        chip = convert_to_analog(model, cfg, seed=r).eval()
        times["convert"].append(time.perf_counter() - t)
        t = time.perf_counter()
        program(chip)
        times["program"].append(time.perf_counter() - t)
        t = time.perf_counter()
        drift(chip, 86400.0)
        times["drift"].append(time.perf_counter() - t)
        with torch.no_grad():
            t = time.perf_counter()
            y = chip(x)
            times["forward"].append(time.perf_counter() - t)
            t = time.perf_counter()
            model(x)
            times["digital_forward"].append(time.perf_counter() - t)
        assert torch.isfinite(y).all()
    med = {k: statistics.median(v) for k, v in times.items()}
    total = med["convert"] + med["program"] + med["drift"] + med["forward"]
    n_arrays = len(analog_layers(chip))
    n_tiles = sum(len(list(m.tiles.all_tiles())) for _, m in analog_layers(chip))
    print(f"ResNet-20 (CIFAR shape), {n_weights} weights on {n_arrays} tile arrays ({n_tiles} tiles), "
          f"batch {args.batch}, {args.threads} threads, median of {args.repeats}:")
    for k in ("convert", "program", "drift", "forward"):
        print(f"  {k:<8} {med[k]:7.3f} s")
    print(f"  total    {total:7.3f} s   (digital forward {med['digital_forward']:.3f} s; analog/digital forward "
          f"ratio {med['forward'] / med['digital_forward']:.1f})")
    out = {"benchmark": "resnet_cifar_timing", "weights": n_weights, "tile_arrays": n_arrays, "tiles": n_tiles,
           "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
           "median_s": {k: round(v, 4) for k, v in med.items()}, "total_s": round(total, 3),
           "config": cfg.to_dict()}
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2), overwrite=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
