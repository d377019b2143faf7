"""``aimc train --method {twin,pat,insitu-bp,fa,dfa,ff,spsa,wp,np,ep}``: the PNN methods of :mod:`aimc.pnn.methods`.

Registered in ``aimc.train.cli.METHODS`` as ``"twin": "aimc.pnn.cli:run_twin"`` etc. The shared options of
``aimc train`` apply (``--data``, ``--epochs``, ``--lr``, ``--seed``, ``--json``, ``--quiet``, ``--out``);
``--epochs`` and ``--lr`` left at that command's defaults (10 and 1e-3, chosen for HWA) mean "the method's
own defaults" (:data:`aimc.pnn.methods.DEFAULTS`; pass ``--opt epochs=...``/``--opt lr=...`` to force those
exact values). Method options come as ``--opt key=value``:

* every method: ``mismatch`` (none/small/large), ``hidden`` (comma-separated widths, default 32),
  ``config`` (a TileConfig preset name or JSON file; empty = the PNN default), ``batch_size``,
  ``budget_passes`` (stop after that many physical forward passes; 0 = none), ``optimizer`` (adam/sgd);
* zeroth order (spsa, wp): ``c``, ``n_dirs``; np: ``c``; ff: ``threshold``; ep: ``beta``, ``centered``.

Example: ``aimc train --method pat --data digits --opt mismatch=large``. ``--out FILE`` writes the full
result (accuracies on the physical system and the twin, cost counters, history) as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["run", "run_dfa", "run_ep", "run_fa", "run_ff", "run_insitu_bp", "run_np", "run_pat", "run_spsa",
           "run_twin", "run_wp"]

_CLI_DEFAULT_EPOCHS, _CLI_DEFAULT_LR = 10, 1e-3


def _defaults(method: str) -> dict:
    from .methods import DEFAULTS
    d = {"mismatch": "small", "hidden": "32", "config": "", "batch_size": 64, "budget_passes": 0,
         "optimizer": "adam"}
    d.update(DEFAULTS[method])
    d["epochs"], d["lr"] = 0, 0.0  # 0: not given
    if method == "ep":
        d["centered"] = False
    return d


def run(method: str, args) -> int:
    """Run ``method`` from parsed ``aimc train`` arguments; prints a summary (or JSON) and returns 0."""
    from ..train.cli import method_options
    from .methods import DEFAULTS, train
    opts = method_options(args, _defaults(method))
    epochs = int(opts.pop("epochs")) or (args.epochs if args.epochs != _CLI_DEFAULT_EPOCHS
                                         else DEFAULTS[method]["epochs"])
    lr = float(opts.pop("lr")) or (args.lr if args.lr != _CLI_DEFAULT_LR else DEFAULTS[method]["lr"])
    hidden = tuple(int(h) for h in str(opts.pop("hidden")).split(",") if h)
    cfg = opts.pop("config") or None
    budget = int(opts.pop("budget_passes")) or None
    res = train(method, args.data, hidden=hidden, config=cfg, epochs=epochs, lr=lr, seed=args.seed,
                budget_passes=budget, verbose=not args.quiet and not args.json, **opts)
    d = res.to_dict()
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(d, indent=1))
    if args.json:
        print(json.dumps({k: v for k, v in d.items() if k != "history"}))
    else:
        c = res.costs
        print(f"{method}  {res.dataset} {'-'.join(map(str, res.sizes))}  mismatch {res.mismatch}  "
              f"acc physical {res.acc_physical:.4f}  twin {res.acc_twin:.4f}  |  physical passes "
              f"{c['phys_passes']}  MVMs {c['phys_mvms']}  writes {c['device_writes']}  FLOPs "
              f"{c['digital_flops']:.3g}  round trips {c['round_trips']}  energy {c['energy_uJ']:.3g} uJ"
              + (f"  -> {args.out}" if args.out else ""))
    return 0


def run_twin(args) -> int:
    return run("twin", args)


def run_pat(args) -> int:
    return run("pat", args)


def run_insitu_bp(args) -> int:
    return run("insitu-bp", args)


def run_fa(args) -> int:
    return run("fa", args)


def run_dfa(args) -> int:
    return run("dfa", args)


def run_ff(args) -> int:
    return run("ff", args)


def run_spsa(args) -> int:
    return run("spsa", args)


def run_wp(args) -> int:
    return run("wp", args)


def run_np(args) -> int:
    return run("np", args)


def run_ep(args) -> int:
    return run("ep", args)
