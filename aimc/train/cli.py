"""``aimc train --method NAME``: train a model on built-in data with one of the training methods.

Methods register in ``METHODS`` as ``"name": "module:function"``; the function takes the parsed arguments
and returns an exit code. Common options are defined here; a method's own knobs come as repeated
``--opt key=value`` (read with ``method_options(args, defaults)``), so adding a method is one line here and
nothing is imported (no torch) until the command runs.
"""
from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "hwa": "aimc.train.hwa:run_cli",
    "insitu": "aimc.train.insitu_cli:run_cli",
    "twin": "aimc.pnn.cli:run_twin",
    "pat": "aimc.pnn.cli:run_pat",
    "fa": "aimc.pnn.cli:run_fa",
    "dfa": "aimc.pnn.cli:run_dfa",
    "ff": "aimc.pnn.cli:run_ff",
    "spsa": "aimc.pnn.cli:run_spsa",
    "wp": "aimc.pnn.cli:run_wp",
    "np": "aimc.pnn.cli:run_np",
    "ep": "aimc.pnn.cli:run_ep",
}


def add_arguments(p) -> None:
    p.add_argument("--method", default="hwa", help=f"training method (default hwa); known: {', '.join(METHODS)}")
    p.add_argument("--data", default="mnist5k", help="built-in data set: mnist5k (default) or digits")
    p.add_argument("--arch", default="mlp", choices=["mlp", "cnn"], help="aimc.zoo architecture (default mlp)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's; hwa 1e-2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init, batch order and tiles")
    p.add_argument("--out", default=None, help="checkpoint path (default aimc-results/train-METHOD-DATA-ARCH.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method-specific option, repeatable (hwa: preset, hidden, optimizer, scheduler, "
                        "batch_size, fp_epochs)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def method_options(args, defaults: dict) -> dict:
    """``--opt key=value`` pairs merged over ``defaults`` (values converted to the default's type);
    an unknown key is an error naming the allowed ones."""
    out = dict(defaults)
    for item in args.opt:
        if "=" not in item:
            raise ValueError(f"--opt {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in defaults:
            raise ValueError(f"--opt {k!r} is not an option of method {args.method!r}; known: {sorted(defaults)}")
        d = defaults[k]
        try:
            out[k] = type(d)(v) if not isinstance(d, bool) else v.lower() in ("1", "true", "yes", "on")
        except ValueError:
            raise ValueError(f"--opt {k}={v!r}: expected a {type(d).__name__}") from None
    return out


#: methods that always write a checkpoint (default name below); the others write one only with --out
SAVING = ("hwa", "insitu")


def _decide_out(args) -> None:
    """Decide and check the checkpoint path before any training: an existing file (the default name
    included) is an error unless --overwrite; a folder, an unwritable folder or a bad path fail now."""
    from pathlib import Path

    from ..core._io import check_destination
    if args.out is None and args.method in SAVING:
        args.out = str(Path("aimc-results") / f"train-{args.method}-{args.data}-{args.arch}.pt")
    if args.out is not None:
        if not str(args.out).strip():
            raise ValueError("--out must not be empty")
        check_destination(args.out, overwrite=args.overwrite, what="--out")


def run(args) -> int:
    try:
        target = METHODS[args.method]
    except KeyError:
        raise ValueError(f"unknown training method {args.method!r}; known: {', '.join(METHODS)}") from None
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    _decide_out(args)
    module, func = target.split(":")
    return int(getattr(importlib.import_module(module), func)(args) or 0)
