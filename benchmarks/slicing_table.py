"""Accuracy of the default MLP on MNIST-5k against weight slicing (bits per cell), ADC bits and bit-serial
inputs (issue 9, "Weight/input slicing table").

Setup: the shipped default MLP (784-256-128-10), the mnist5k test split (1,000 images), the ``aimc deploy``
config (PCM card ``pcm-joshi2020``, global drift compensation, 8-bit DAC, out_noise 0.04, no bound
management, calibrated: static DAC range at the 99.99th percentile, per-column ADC ranges by MSE, on 1,000
training images) with the mapping replaced by a sliced one: 8-bit weights (integers +-127 per tile), balanced
encoding (``--encoding``), ``bits_per_cell`` b in {1, 2, 4, 7} (7, 4, 2, 1 slices of G+/G- pairs; b = 7 is
one slice), ADC bits in ``--adc-bits``; every slice is its own ADC read with its own calibrated ranges
(per slice and column; power-of-two apart, ``--slice-ranges``). Inputs: in one read through the 8-bit DAC
("8-bit DAC"), or bit-serial, 8 signed bits in cycles of 1 or 7 bits (one ADC read per cycle and slice). Also
the unsliced differential mapping as the reference row. With ``--encoding offset`` the offset 2^7 sum_j x_j is
removed by a reference column per slice that drifts with the weights (``--offset-reference column``, default)
or digitally with its programmed value (``digital``). ``--chips`` chips per point (seeds 0..N-1), evaluated at ``--times``.

Prints a markdown table (mean +- std over chips, reads per MVM) and writes JSON (``--json``, never
overwriting). Run: ``python benchmarks/slicing_table.py``.
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


def configs(base, cells, adc_bits, inputs, encoding, offset_reference="column"):
    """(label dict, TileConfig) for every point of the grid."""
    out = []
    for bo in adc_bits:
        fwd = base.forward.replace(out_bits=bo)
        out.append(({"mapping": "differential", "bits_per_cell": None, "adc_bits": bo, "inputs": "8-bit DAC"},
                    base.replace(forward=fwd)))
        for inp in inputs:
            ib, s = (0, 1) if inp == "dac" else (8, int(inp))
            for b in cells:
                m = base.mapping.replace(kind="sliced", weight_bits=8, bits_per_cell=b, slice_encoding=encoding,
                                         input_bits=ib, input_bits_per_cycle=s, offset_reference=offset_reference)
                enc = encoding if encoding == "balanced" else f"offset, {offset_reference} reference"
                label = {"mapping": f"sliced ({enc})", "bits_per_cell": b, "adc_bits": bo,
                         "inputs": "8-bit DAC" if ib == 0 else f"bit-serial, {s} bit/cycle"}
                out.append((label, base.replace(forward=fwd, mapping=m)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=2)
    ap.add_argument("--times", default="1s")
    ap.add_argument("--cells", default="1,2,4,7", help="bits per cell")
    ap.add_argument("--adc-bits", default="4,6,8")
    ap.add_argument("--inputs", default="dac,1,7", help="'dac' (one read) and/or bits per bit-serial cycle")
    ap.add_argument("--encoding", default="balanced", choices=("balanced", "offset"))
    ap.add_argument("--offset-reference", default="column", choices=("column", "digital"),
                    help="offset encoding: a drifting reference column per slice, or digital removal")
    ap.add_argument("--slice-ranges", default="pow2", choices=("pow2", "free"),
                    help="calibrated per-slice ADC ranges power-of-two apart (default) or each slice its own")
    ap.add_argument("--json", help="write the results as JSON (never overwriting)")
    args = ap.parse_args(argv)
    if args.json and Path(args.json).exists():
        raise SystemExit(f"{args.json} exists; not overwriting")
    set_threads(2)
    times = tuple(args.times.split(","))
    model, _ = zoo.load_default()
    data = datasets.load("mnist5k")
    base = deploy_config()
    base = base.replace(calibration=base.calibration.replace(slice_ranges=args.slice_ranges))
    grid = configs(base, [int(b) for b in args.cells.split(",")], [int(b) for b in args.adc_bits.split(",")],
                   args.inputs.split(","), args.encoding, args.offset_reference)
    rows = []
    t0 = time.perf_counter()
    for label, cfg in grid:
        m = cfg.mapping
        reads = m.n_slices * (-(-(m.input_bits - 1) // m.input_bits_per_cycle) if m.input_bits else 1)
        t1 = time.perf_counter()
        try:
            res = evaluate_over_time(model, data, cfg, times=times, repeats=args.chips)
            row = dict(label, reads=reads, accuracy=res.mean, accuracy_std=res.std, error=None)
        except Exception as e:  # a failing point is reported, never dropped
            row = dict(label, reads=reads, accuracy=None, accuracy_std=None, error=f"{type(e).__name__}: {e}")
        row["seconds"] = round(time.perf_counter() - t1, 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"default MLP, mnist5k test, {args.chips} chips, times {', '.join(times)}, calibrated deploy config, "
          f"slice ranges {args.slice_ranges} "
          f"({time.perf_counter() - t0:.0f} s; machine shared with other jobs)")
    head = " | ".join(f"accuracy at {t} (%)" for t in times)
    print(f"| mapping | bits/cell | ADC bits | inputs | reads/MVM | {head} |")
    print("|---|---|---|---|---|" + "---|" * len(times))
    for r in rows:
        acc = " | ".join(f"{100 * a:.2f} ± {100 * s:.2f}" for a, s in zip(r["accuracy"], r["accuracy_std"])) \
            if r["error"] is None else f"failed: {r['error']}"
        print(f"| {r['mapping']} | {r['bits_per_cell'] or '-'} | {r['adc_bits']} | {r['inputs']} | {r['reads']} | "
              f"{acc} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"chips": args.chips, "times": times, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
