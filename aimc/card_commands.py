"""The device-card commands: ``aimc devices`` (list the cards, ``LIST``) and ``aimc device show CARD
[--plot FILE]`` (one card in detail, ``SHOW``). (Formerly ``aimc.devices_cli`` / ``aimc.device_cli``, which
remain as aliases.)

``show`` prints the card (citation, provenance, parameters) and, for an inference card, its statistics at
a few conductances (programming noise sigma_prog, drift exponent nu mean/std, read-noise sigma at 1 h) and
the mean drift factor over time. ``--plot FILE`` writes a PNG (matplotlib, Agg): for an inference card
sigma_prog(G), the drift exponent (mean +- std) against G and sample device traces over 1 s ... 10 y
(programming noise, drift and read noise; devices programmed at 1/4, 1/2 and 1 of the range); for a pulsed
card the up/down pulse response of the nominal device and of sampled devices. An existing FILE is never
replaced (an error). No torch needed.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

_TRACE_TIMES = np.logspace(0, math.log10(10 * 365.25 * 86400), 60)


# ------------------------------------------------------------------------------------------------------
# aimc devices

def add_arguments(p) -> None:
    p.add_argument("--kind", choices=["inference", "pulsed"], default=None, help="only cards of this kind")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def _cards(kind=None) -> list[dict]:
    import device_models
    out = []
    for name in device_models.available(kind):
        c = device_models.read_card(name)
        out.append({"name": name, "kind": c["kind"], "family": c["family"], "citation": c.get("citation", "")})
    return out


def run(args) -> int:
    cards = _cards(args.kind)
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    w = max(len(c["name"]) for c in cards)
    wf = max(len(c["family"]) for c in cards)
    print(f"{'card':<{w}}  {'kind':<9}  {'family':<{wf}}  citation")
    for c in cards:
        cit = c["citation"] if len(c["citation"]) <= 70 else c["citation"][:67] + "..."
        print(f"{c['name']:<{w}}  {c['kind']:<9}  {c['family']:<{wf}}  {cit}")
    print("\n`aimc device show CARD` for details; deploy with `aimc deploy --device CARD` (inference cards)")
    return 0


# ------------------------------------------------------------------------------------------------------
# aimc device show CARD

def add_device_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    s = sub.add_parser("show", help="print one device card (and plot it with --plot FILE)",
                       description="print one device card (and plot it with --plot FILE)")
    s.add_argument("card", help="card name (see `aimc devices`) or a path to a card .toml")
    s.add_argument("--plot", metavar="FILE", help="write a PNG of the card's statistics (never overwrites)")
    s.add_argument("--json", action="store_true", help="print the card and statistics as JSON")
    sub.add_parser("list", help="list the cards (as `aimc devices`)")


def _load(card: str):
    """The card and its model; ``device_models`` applies the one rule for names and paths (``cards._card_path``)."""
    import device_models
    return device_models.read_card(card), device_models.load(card)


def _levels(model) -> np.ndarray:
    lo, hi = float(model.g_min), float(model.g_max)
    return np.array([lo + f * (hi - lo) for f in (0.01, 0.1, 0.25, 0.5, 1.0)])


def inference_stats(model) -> dict:
    """sigma_prog, nu mean/std and read-noise sigma (1 h) at a few conductances; mean drift factors."""
    g = _levels(model)
    sp = np.asarray(model.programming_noise_std(g), float)
    mu, sd = (np.asarray(a, float) for a in model.drift_exponent_stats(g))
    rng = np.random.Generator(np.random.Philox(0))
    stats = {"g_uS": g.tolist(), "g_norm": (g / model.g_max).tolist(), "sigma_prog_uS": sp.tolist(),
             "nu_mean": mu.tolist(), "nu_std": sd.tolist()}
    cells = model.program(np.full(2000, float(model.g_max)), rng)
    try:
        stats["read_sigma_1h_uS"] = np.asarray(model.read_noise_std(model.program(g, rng), 3600.0), float).tolist()
    except ValueError:
        pass
    drift = {}
    for lab, t in (("1s", 1.0), ("1h", 3600.0), ("1d", 86400.0), ("1y", 365.25 * 86400), ("10y", 3652.5 * 86400)):
        try:
            drift[lab] = float(np.mean(model.drift_mean(cells, t)) / np.mean(cells.g_prog))
        except ValueError:
            drift[lab] = None
    stats["mean_drift_factor_at_g_max"] = drift
    return stats


def run_device(args) -> int:
    if getattr(args, "action", None) in (None, "list"):
        if args.action is None:
            print("usage: aimc device show CARD [--plot FILE]   (or `aimc devices` to list the cards)",
                  file=sys.stderr)
            return 2
        return run(type("A", (), {"kind": None, "json": False})())
    card, model = _load(args.card)
    if args.plot and Path(args.plot).exists():
        raise FileExistsError(f"--plot {args.plot!r} exists; refusing to overwrite it (choose another file)")
    out = {"name": card["name"], "kind": card["kind"], "family": card["family"],
           "citation": card.get("citation", ""), "provenance": card.get("provenance", ""),
           "params": card.get("params", {})}
    if card["kind"] == "inference":
        out["statistics"] = inference_stats(model)
    if args.plot:
        out["plot"] = str(plot_card(card, model, args.plot))
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"{out['name']}  ({out['kind']} card, family {out['family']})")
    print(f"citation:   {out['citation']}")
    print(f"provenance: {out['provenance']}")
    print("parameters:")
    for k, v in out["params"].items():
        print(f"  {k} = {v}")
    st = out.get("statistics")
    if st:
        print("statistics (G in uS; nu = drift exponent, G(t) = G_prog ((t + t0)/t0)^-nu):")
        print(f"  {'G':>8} {'G/g_max':>8} {'sigma_prog':>11} {'nu mean':>8} {'nu std':>8}"
              + (f" {'read sigma 1h':>14}" if "read_sigma_1h_uS" in st else ""))
        for i, g in enumerate(st["g_uS"]):
            line = (f"  {g:8.3f} {st['g_norm'][i]:8.3f} {st['sigma_prog_uS'][i]:11.4f} {st['nu_mean'][i]:8.4f} "
                    f"{st['nu_std'][i]:8.4f}")
            if "read_sigma_1h_uS" in st:
                line += f" {st['read_sigma_1h_uS'][i]:14.4f}"
            print(line)
        d = st["mean_drift_factor_at_g_max"]
        print("  mean conductance at g_max over time (read noise off): "
              + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in d.items()))
    if args.plot:
        print(f"plot: {out['plot']}")
    return 0


# ------------------------------------------------------------------------------------------------------
# plots

def plot_card(card: dict, model, path) -> Path:
    """Write the card's plot to ``path`` (PNG, atomic, never overwriting)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .core._io import atomic_write
    if card["kind"] == "inference":
        fig = _plot_inference(plt, card, model)
    else:
        fig = _plot_pulsed(plt, card, model)
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110), overwrite=False)
    finally:
        plt.close(fig)


def _plot_inference(plt, card, model):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    g = np.linspace(float(model.g_min), float(model.g_max), 200)
    ax = axes[0]
    ax.plot(g, model.programming_noise_std(g))
    ax.set_xlabel("target G (uS)")
    ax.set_ylabel("sigma_prog (uS)")
    ax.set_title("programming noise")
    ax = axes[1]
    mu, sd = (np.asarray(a, float) for a in model.drift_exponent_stats(g))
    ax.plot(g, mu, label="mean")
    ax.fill_between(g, np.maximum(mu - sd, 0), mu + sd, alpha=0.3, label="± std")
    ax.set_xlabel("target G (uS)")
    ax.set_ylabel("drift exponent nu")
    ax.set_title("drift exponent" + ("" if np.any(mu > 0) else " (no power-law drift in this family)"))
    ax.legend()
    ax = axes[2]
    rng = np.random.Generator(np.random.Philox(1))
    lo, hi = float(model.g_min), float(model.g_max)
    targets = np.repeat([lo + f * (hi - lo) for f in (0.25, 0.5, 1.0)], 4)
    cells = model.program(targets, rng)
    ts, reads = [], []
    for t in _TRACE_TIMES:
        try:
            reads.append(model.read(cells, float(t), rng))
            ts.append(t)
        except ValueError:  # families tabulated at a few times only
            continue
    if not ts:
        for t in (1.0, 86400.0, 172800.0):
            try:
                reads.append(model.read(cells, t, rng))
                ts.append(t)
            except ValueError:
                pass
    reads = np.array(reads)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j in range(targets.size):
        ax.plot(ts, reads[:, j], color=colors[j // 4], lw=0.8, marker="." if len(ts) < 10 else None,
                label=f"target {targets[j]:.1f} uS" if j % 4 == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("read conductance (uS)")
    ax.set_title("sample devices over time")
    ax.legend(fontsize=8)
    fig.suptitle(f"{card['name']} ({card['family']}): {card.get('citation', '')[:100]}", fontsize=9)
    fig.tight_layout()
    return fig


def _plot_pulsed(plt, card, model):
    fig, ax = plt.subplots(figsize=(7, 4))
    n = 500
    nominal = model.response_curve(n, n)
    ax.plot(nominal, color="k", lw=1.5, label="nominal device")
    devs = model.sample_devices((5,), 1)
    trace = model.response_curve(n, n, devs=devs, rng=np.random.Generator(np.random.Philox(2)))
    ax.plot(trace, lw=0.7, alpha=0.8)
    ax.set_xlabel(f"pulse ({n} up, then {n} down)")
    ax.set_ylabel("weight (normalised)")
    ax.set_title(f"{card['name']} ({card['family']}): pulse response")
    ax.legend()
    fig.tight_layout()
    return fig


#: the two commands as ``aimc.cli`` entries ("aimc.card_commands:LIST" / ":SHOW")
LIST = SimpleNamespace(add_arguments=add_arguments, run=run)
SHOW = SimpleNamespace(add_arguments=add_device_arguments, run=run_device)
