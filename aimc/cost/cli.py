"""``aimc cost``: the per-layer cost table (energy, latency, area, TOPS, TOPS/W, TOPS/mm^2) of a model.

The model (``--model``, default the shipped MLP) is converted with the config (``--config``, default the
``aimc deploy`` config) fitted to the card's core size (``aimc.cost.fit_config``), programmed, drifted to
``--time`` and run on ``--samples`` test inputs of ``--data``; the tiles' counts are turned into costs by the
technology card ``--tech``. ``--cards`` lists the shipped cards.
"""
from __future__ import annotations

import json


def add_arguments(p) -> None:
    p.add_argument("--model", help="an aimc checkpoint (aimc.zoo.save_checkpoint); default: the shipped mnist5k MLP")
    p.add_argument("--tech", default="hermes-pcm-14nm",
                   help="technology card name or .toml path (default: %(default)s; --cards lists them)")
    p.add_argument("--config", help="a TileConfig JSON file (default: the aimc deploy config, PCM card)")
    p.add_argument("--data", default="mnist5k", help="mnist5k, digits, or a folder of MNIST IDX files")
    p.add_argument("--samples", type=int, default=100, help="test inputs to run (default: %(default)s)")
    p.add_argument("--time", default="1s", help="time after programming, e.g. 1s, 1d, 10y (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="chip seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--cards", action="store_true", help="list the technology cards and exit")
    p.add_argument("--threads", type=int, default=2, help="threads for numba, BLAS and torch (default: 2)")


def run(args) -> int:
    from . import available, load_card
    if args.cards:
        for name in available():
            c = load_card(name)
            print(f"{name:22s} {c.rows}x{c.cols} core, {c.encoding} inputs, {c['tech.node'] * 1e9:g} nm: {c.citation}")
        return 0
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    import torch

    from ..workloads import zoo
    from ..bench import set_threads
    from ..core.config import TileConfig
    from ..deployment.convert import convert_to_analog, drift, program
    from ..deployment.deploy import _load_data, deploy_config, parse_time
    from . import fit_config, measure
    card = load_card(args.tech)
    t = parse_time(args.time)
    base = TileConfig.load(args.config) if args.config else deploy_config()
    cfg = fit_config(base, card)
    data = _load_data(args.data)
    set_threads(args.threads)
    model, _ = zoo.load_checkpoint(args.model) if args.model else zoo.load_default()
    chip = convert_to_analog(model, cfg, seed=args.seed)
    if cfg.inference is not None:
        program(chip)
        drift(chip, t)
    x = torch.as_tensor(data.x_test[: args.samples], dtype=torch.float32)
    rep = measure(chip, x, card)
    if args.json:
        print(rep.to_json(indent=2))
    else:
        print(rep.table())
    return 0
