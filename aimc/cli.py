"""The ``aimc`` command: one sub-command per user verb, each defined next to the code it drives.

Each entry of ``COMMANDS`` names a module (or ``module:OBJECT``) with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs (torch is not imported for
``aimc bench forward``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("aimc.bench", "time aimc against a plain torch baseline (and aihwkit when installed)"),
    "cost": ("aimc.cost.cli", "energy, latency and area of a model on a technology card (per-layer table)"),
    "deploy": ("aimc.deployment.deploy", "accuracy of a trained model on simulated analog chips over time (drift)"),
    "devices": ("aimc.card_commands:LIST", "list the device cards (inference statistics and pulse responses)"),
    "device": ("aimc.card_commands:SHOW", "show one device card (`aimc device show CARD [--plot FILE]`)"),
    "sweep": ("aimc.sweep.cli", "run a sweep spec (models x devices x variants x times x chips) on Dask or serially"),
    "train": ("aimc.train.cli", "train a model for analog hardware (--method hwa, ...) on built-in data"),
}


def _command(spec: str):
    """The object with ``add_arguments``/``run`` that a ``COMMANDS`` entry names."""
    module, _, attr = spec.partition(":")
    m = importlib.import_module(module)
    return getattr(m, attr) if attr else m


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aimc", description="Analog in-memory computing emulation.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(_module=module)
        _command(module).add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    empty = sorted(k for k, v in vars(args).items() if v == "" or (isinstance(v, list) and "" in v))
    if empty:  # an empty name or path would silently fall back to the default (a model, a config, a card)
        print(f"aimc {args.command}: error: empty value for {', '.join('--' + k.replace('_', '-') for k in empty)}",
              file=sys.stderr)
        return 2
    try:
        return int(_command(args._module).run(args) or 0)
    except (ValueError, TypeError, OSError) as e:  # OSError: missing, existing, read-only, folder-not-file paths
        print(f"aimc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"aimc {args.command}: error: input nested too deeply", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
