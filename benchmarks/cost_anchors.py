"""Published chips vs aimc's cost model at the operating point each paper states (issue 10).

The operating point of both IBM chips: one 256 x 256 core, 8-bit input / 8-bit output MVMs (stated for the
64-core chip: Le Gallo et al., Nat. Electron. 6, 680 (2023), abstract; for HERMES-Core, JSSC 2022, the
precision behind 10.5 TOPS/W is not given in the abstract: UNCONFIRMED, we assume the same core and 8/8 bit),
inputs pulse-width modulated at the 1 GHz main clock, one-phase read. aimc simulates exactly that MVM on a
tile of the card's core size with the card ``hermes-pcm-14nm`` (component-level numbers, not fitted to the
chip figures below): weights W ~ U(-1, 1) (columnwise scaled, the digital affine scale of the chip's local
digital unit), programmed on PCM (``pcm-joshi2020``, 25 uS) and read at t = 60 s, inputs x ~ U(-1, 1)
through the 8-bit DAC, 8-bit ADC; 100 MVMs. Two mappings: a differential pair (aimc default) and two pairs
per weight (4 PCM devices per unit cell, as the 64-core chip's unit cell is described; UNCONFIRMED here).

Throughput of the 64-core chip is compared per core (63.1 TOPS / 64) and for 64 cores in parallel.
NeuroSim's example figures are not reproduced: its 8-bit weights in 1-bit cells (weight bit slicing) and its
buffer/interconnect model are not simulated here.

Run: ``python benchmarks/cost_anchors.py [--json out.json]`` (prints a markdown table).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:
    import aimc  # noqa: F401
except ImportError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimc import IOConfig, MappingConfig, TileArray, TileConfig, cost  # noqa: E402
from aimc.config import BoundManagement, InferenceConfig, MappingKind, NoiseManagement  # noqa: E402

PUBLISHED = [  # (chip, metric, value, source)
    ("HERMES core", "TOPS/W", 10.5, "Khaddam-Aljameh et al., IEEE JSSC 2022, abstract (at 1 GHz)"),
    ("HERMES core", "TOPS/mm2", 1.59, "Khaddam-Aljameh et al., IEEE JSSC 2022, abstract"),
    ("64-core PCM chip", "TOPS/W", 9.76, "Le Gallo et al., Nat. Electron. 2023, abstract: 8-bit I/O, one-phase"),
    ("64-core PCM chip", "TOPS (64 cores)", 63.1, "Le Gallo et al., Nat. Electron. 2023, abstract: one-phase"),
]


def simulate(kind: str, card, n_mvm: int = 100, seed: int = 0):
    io = IOConfig(inp_bits=8, out_bits=8, out_bound=12.0, out_noise=0.0,
                  noise_management=NoiseManagement.NONE, bound_management=BoundManagement.NONE)
    mp = MappingConfig(kind=kind, significance=(1.0, 1.0) if kind == MappingKind.N_PAIRS else (1.0,),
                       weight_scaling_omega=1.0)
    cfg = cost.fit_config(TileConfig(forward=io, mapping=mp, inference=InferenceConfig()), card)
    rng = np.random.default_rng(seed)
    ta = TileArray(card.cols, card.rows, cfg, seed=seed, name="core")
    ta.program(rng.uniform(-1, 1, (card.cols, card.rows)).astype(np.float32))
    ta.drift(60.0)
    ta.forward(rng.uniform(-1, 1, (n_mvm, card.rows)).astype(np.float32))
    return cost.report({"core": ta}, inputs=n_mvm, card=card)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results as JSON (never overwriting)")
    args = ap.parse_args(argv)
    card = cost.load_card("hermes-pcm-14nm")
    out = {"card": card.name, "rows": []}
    print("| chip | metric | published | aimc, 2 devices/weight | aimc, 4 devices/weight | ratio (4 dev) | source |")
    print("|---|---|---|---|---|---|---|")
    reps = {k: simulate(k, card) for k in (MappingKind.DIFFERENTIAL, MappingKind.N_PAIRS)}
    for chip, metric, pub, src in PUBLISHED:
        vals = []
        for rep in reps.values():
            lc = rep.layers[0]
            vals.append({"TOPS/W": lc.tops_per_w, "TOPS/mm2": lc.tops_per_mm2,
                         "TOPS (64 cores)": 64 * lc.tops}[metric])
        print(f"| {chip} | {metric} | {pub:g} | {vals[0]:.3g} | {vals[1]:.3g} | {vals[1] / pub:.2f} | {src} |")
        out["rows"].append({"chip": chip, "metric": metric, "published": pub, "aimc_2dev": vals[0],
                            "aimc_4dev": vals[1], "source": src})
    for k, rep in reps.items():
        lc = rep.layers[0]
        b = {t: v / rep.inputs * 1e9 for t, v in lc.energy.items()}
        print(f"\n{k.value}: per 256x256 MVM {lc.energy_per_inference * 1e9:.3f} nJ "
              f"({', '.join(f'{t} {v:.3f}' for t, v in b.items())} nJ), latency {lc.latency * 1e9:.1f} ns, "
              f"core area {lc.area * 1e6:.3f} mm2, {lc.tops:.3f} TOPS per core")
        out[k.value] = lc.to_dict()
    if args.json:
        p = Path(args.json)
        if p.exists():
            raise SystemExit(f"{p} exists; not overwriting")
        p.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
