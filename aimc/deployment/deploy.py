"""Deployment over time: ``aimc deploy`` and :func:`evaluate_over_time` (training.md §1.8, physics.md §3, §4).

The protocol: a trained (digital) model -> ``convert_to_analog`` -> ``program`` (programming noise, drift
exponents and faults drawn once per chip) -> ``drift`` to t_1 < t_2 < ... (a fresh read-noise draw at every
time) -> drift compensation (``config.inference.compensation``, applied in eval mode) -> test accuracy;
repeated over N chip instances (seeds ``seed, seed+1, ...``), reported as mean and sample std (ddof = 1;
0 for one chip).

Calibration (``config.calibration``, on by default in :func:`deploy_config`; ``aimc.calibration``): right
after programming, each chip sets a static DAC range and per-column ADC ranges from ``samples`` inputs of the
data set's *training* split (``calibration=`` overrides the set; a set that overlaps the test split gives a
warning, also recorded in the results). At every time the fraction of ADC conversions that clipped is
counted per layer (``DeployResults.clip_fraction``); fractions above ``clip_warn`` give a warning.

``aimc deploy`` with no arguments loads the shipped default MLP (``aimc.zoo.load_default``) and the mnist5k
test split, uses the PCM card ``pcm-joshi2020`` with :func:`deploy_config` (calibrated) and global
compensation, drifts to 1 s, 1 h, 1 d, 1 y, 10 y over 5 chips, prints the table and the clipped fractions
and writes into a **fresh run folder**
``<out>/run-001``, ``run-002``, ... (``--out``, default ``aimc-results``; the next free number is taken with
an exclusive ``mkdir``, so no earlier result is ever overwritten, also by two runs at once):

* ``results.json``: times, per-chip accuracies, mean, std, digital accuracy, the config, seeds, versions,
  the calibrated ranges of every chip and the clipped fraction per layer, time and chip, warnings;
* ``accuracy.png``: accuracy mean +- std against time (log axis), the digital accuracy dashed;
* ``chip.h5``: the chip image (``aimc.chip.save_chip``) of the last chip instance at the last time.

With a technology card (``--tech``, default ``hermes-pcm-14nm``; ``none`` to skip) the tiles take the card's
core size and every evaluation is costed (``aimc.cost``): the table and ``results.json`` give the energy per
inference and the latency at each time (energy changes as the conductances drift), mean over chips.

Times are seconds or strings with a unit: ``s``, ``min``, ``h``, ``d``, ``w``, ``y`` (Julian year,
365.25 d), e.g. ``1s,1h,1d,1y,10y``; they must increase (a chip only drifts forward).
"""
from __future__ import annotations

import json
import math
import warnings
import platform
import sys
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DEFAULT_CLIP_WARN", "DEFAULT_TIMES", "DeployResults", "deploy_config", "digital_accuracy",
           "evaluate_over_time", "format_time", "parse_time", "parse_times", "add_arguments", "run"]

DEFAULT_TIMES = ("1s", "1h", "1d", "1y", "10y")
#: warn when a layer clips more than this fraction of its ADC conversions at some time (mean over chips)
DEFAULT_CLIP_WARN = 0.01

from ..core.times import format_time, parse_time  # noqa: E402,F401  (the one time parser: aimc/core/times.py)


def parse_times(spec) -> tuple[list[float], list[str]]:
    """``"1s,1h,1d"`` (or a sequence) -> (seconds, labels); strictly increasing, at least one."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not items or any(isinstance(s, str) and not s for s in items):
        raise ValueError(f"bad --times {spec!r}: give a comma-separated list such as 1s,1h,1d,1y,10y")
    secs = [parse_time(s) for s in items]
    for a, b, la, lb in zip(secs, secs[1:], items, items[1:]):
        if b <= a:
            raise ValueError(f"bad times {spec!r}: {lb} is not later than {la}; times must increase "
                             f"(a chip only drifts forward)")
    labels = [s if isinstance(s, str) else format_time(s) for s in items]
    return secs, labels


def deploy_config(device: str = "pcm-joshi2020", compensation: str = "global", base=None, calibrate: bool = True):
    """The inference config ``aimc deploy`` uses (a ``TileConfig``).

    IO: the periphery of the standard HWA preset (Rasch et al., Nat. Commun. 14, 5282, 2023): 8-bit DAC
    and ADC, ADC bound 10, out_noise 0.04, no bound management (a saturating ADC, as on inference chips),
    but with abs-max noise management instead of a learned input range (a digitally trained model has
    none), no per-forward weight noise (the device's read noise is drawn at every ``drift``) and no IR
    drop. Mapping: columnwise weight scaling to omega = 1 (each column's largest weight maps to the full
    conductance range, the scale is applied digitally), tiles of at most 512 x 512, the conductance range
    of the device card; a differential pair per weight, or a single device plus a digital offset for
    devices with g_min > 0 (ReRAM CMO). ``base`` (a TileConfig) replaces IO and mapping; its ``inference``
    section is replaced by ``device``/``compensation``.

    ``calibrate`` (default): ``calibration = CalibrationConfig()`` (``base``'s own method if it has one): a
    static DAC range at the 99.99th percentile of each tile's inputs, as inference chips use (a fixed input
    scale instead of a digital max over every input vector), and per-column ADC ranges minimising the
    quantisation + clipping error of the analog outputs on the programmed chip at t = 0. An uncalibrated
    tile (``calibrate=False``, or before ``aimc.convert.calibrate``) falls back to the IO above: abs-max
    noise management and the fixed ADC bound 10.
    """
    from ..core.config import BoundManagement, InferenceConfig, IOConfig, MappingKind, NoiseManagement, TileConfig
    if base is None:
        model = InferenceConfig(device=device, compensation=compensation).device_model()
        fwd = IOConfig(inp_bits=8, out_bits=8, out_bound=10.0, out_noise=0.04,
                       noise_management=NoiseManagement.ABS_MAX, bound_management=BoundManagement.NONE)
        cfg = TileConfig(forward=fwd)
        kind = MappingKind.SINGLE_OFFSET if model is not None and model.g_min > 0 else MappingKind.DIFFERENTIAL
        mapping = cfg.mapping.replace(kind=kind, weight_scaling_omega=1.0, weight_scaling_columnwise=True,
                                      max_in=512, max_out=512)
        if model is not None:
            mapping = mapping.replace(g_min=float(model.g_min), g_max=float(model.g_max))
        base = cfg.replace(mapping=mapping)
    from ..core.config import CalibrationConfig
    cal = (base.calibration or CalibrationConfig()) if calibrate else None
    return base.replace(inference=InferenceConfig(device=device, compensation=compensation), calibration=cal)


def check_device(card: str) -> str:
    """``card`` if it names an inference card (or a .toml file), else a ValueError listing the cards."""
    import device_models
    if card == "none" or card.endswith(".toml") and Path(card).is_file():
        return card
    cards = device_models.available("inference")
    if card not in cards:
        all_cards = device_models.available()
        if card in all_cards:
            raise ValueError(f"device card {card!r} is a pulsed (training) card, not an inference card; "
                             f"inference cards: {', '.join(cards)}")
        raise ValueError(f"unknown device card {card!r}; inference cards: {', '.join(cards)} "
                         f"(see `aimc devices`)")
    return card


# ------------------------------------------------------------------------------------------------------
# results

@dataclass
class DeployResults:
    """Accuracy over time of N chip instances. ``accuracy[i][r]``: time ``i``, chip ``r``."""

    times: list[float]
    time_labels: list[str]
    accuracy: list[list[float]]
    digital_accuracy: float
    seeds: list[int]
    config: dict
    n_test: int
    meta: dict = field(default_factory=dict)
    clip_fraction: dict = field(default_factory=dict)  # {layer: [[chip r] per time i]}: ADC conversions clipped
    calibration: dict | None = None  # method, samples, source, per-chip ranges; None if not calibrated
    warnings: list = field(default_factory=list)
    last_model: Any = field(default=None, repr=False, compare=False)  # the last chip at the last time
    cost: dict | None = None  # aimc.cost per time and chip: card, energy_pJ[i][r], latency_ns[i][r], area_mm2

    def _cost_mean(self, key: str) -> list[float]:
        return [sum(v) / len(v) for v in self.cost[key]] if self.cost else []

    @property
    def mean(self) -> list[float]:
        return [sum(a) / len(a) for a in self.accuracy]

    @property
    def std(self) -> list[float]:
        out = []
        for a in self.accuracy:
            if len(a) < 2:
                out.append(0.0)
                continue
            m = sum(a) / len(a)
            out.append(math.sqrt(sum((v - m) ** 2 for v in a) / (len(a) - 1)))
        return out

    def to_dict(self) -> dict:
        return {"format": "aimc-deploy-results", "version": 1, "times_s": self.times,
                "time_labels": self.time_labels, "accuracy": self.accuracy, "mean": self.mean, "std": self.std,
                "digital_accuracy": self.digital_accuracy, "seeds": self.seeds, "repeats": len(self.seeds),
                "n_test": self.n_test, "config": self.config, "meta": self.meta,
                "clip_fraction": self.clip_fraction, "clip_fraction_mean": self.clip_fraction_mean,
                "calibration": self.calibration, "warnings": self.warnings,
                **({"cost": {**self.cost, "energy_pJ_mean": self._cost_mean("energy_pJ"),
                             "latency_ns_mean": self._cost_mean("latency_ns")}} if self.cost else {})}

    @property
    def clip_fraction_mean(self) -> dict:
        """{layer: [mean over chips, per time]}."""
        return {n: [sum(c) / len(c) for c in per_t] for n, per_t in self.clip_fraction.items()}

    def clip_table(self) -> str:
        """A markdown table: layer | clipped ADC outputs (%, mean over chips) at each time."""
        if not self.clip_fraction:
            return ""
        rows = ["| layer | " + " | ".join(self.time_labels) + " |", "|---|" + "---|" * len(self.time_labels)]
        for n, per_t in self.clip_fraction_mean.items():
            rows.append(f"| {n} | " + " | ".join(f"{100 * v:.2f}" for v in per_t) + " |")
        return "\n".join(rows)

    def table(self) -> str:
        """A markdown table: time | accuracy mean +- std (%) [| energy per inference (nJ) | latency (ns)]."""
        if not self.cost:
            rows = ["| time | accuracy (%) |", "|---|---|", f"| digital | {100 * self.digital_accuracy:.2f} |"]
            for lab, m, s in zip(self.time_labels, self.mean, self.std):
                rows.append(f"| {lab} | {100 * m:.2f} ± {100 * s:.2f} |")
            return "\n".join(rows)
        rows = ["| time | accuracy (%) | energy / inference (nJ) | latency (ns) |", "|---|---|---|---|",
                f"| digital | {100 * self.digital_accuracy:.2f} | | |"]
        for lab, m, s, e, t in zip(self.time_labels, self.mean, self.std, self._cost_mean("energy_pJ"),
                                   self._cost_mean("latency_ns")):
            rows.append(f"| {lab} | {100 * m:.2f} ± {100 * s:.2f} | {e / 1e3:.3f} | {t:.0f} |")
        return "\n".join(rows)


class _Progress:
    """tqdm on stderr when installed, else a one-line stderr counter; nothing when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.n, self.desc, self.enabled, self.bar = total, 0, desc, enabled, None
        self.t0 = _time.perf_counter()
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
        except ImportError:
            self._line()

    def _line(self):
        el = _time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} ({el:.0f} s)")
        sys.stderr.flush()

    def update(self, n: int = 1):
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            self._line()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _xy(data):
    """(x_test, y_test) from a Dataset, an (x, y) pair, or a dict with x/y."""
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return data.x_test, data.y_test
    if isinstance(data, dict) and "x" in data and "y" in data:
        return data["x"], data["y"]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data
    raise TypeError("data must be an aimc.datasets.Dataset (its test split is used) or an (x, y) pair")


def calibration_set(data, calibration, n: int, x_test) -> tuple[Any, str, str | None]:
    """(calibration inputs, source, warning or None) for a deployment.

    ``calibration`` None: ``n`` samples (a fixed random subset, the same for every chip) of ``data``'s
    training split; else an array/tensor of inputs, an ``(x, y)`` pair or a Dataset (its training split).
    Errors: no training split and no set given, an empty set. A set sharing samples with ``x_test`` gives a
    warning (returned and emitted): test accuracies after calibrating on test data are optimistic.
    """
    import numpy as np
    if calibration is None:
        if not hasattr(data, "x_train"):
            raise ValueError("calibration needs inputs from the training split: the data has none (an (x, y) "
                             "pair is the test set); pass calibration=x_train, or a config without calibration")
        xs, source = data.x_train, "train split"
    elif hasattr(calibration, "x_train"):
        xs, source = calibration.x_train, "train split of the given data set"
    elif isinstance(calibration, (tuple, list)) and len(calibration) == 2:
        xs, source = calibration[0], "given (x, y)"
    else:
        xs, source = calibration, "given inputs"
    xs = np.asarray(xs.detach().cpu() if hasattr(xs, "detach") else xs, dtype=np.float32)
    if xs.ndim == 0 or xs.shape[0] == 0:
        raise ValueError(f"the calibration set is empty (shape {xs.shape}): pass samples from the training split")
    if calibration is None and xs.shape[0] > n:
        idx = np.sort(np.random.default_rng(0).choice(xs.shape[0], n, replace=False))
        xs = xs[idx]
    xt = np.asarray(x_test.detach().cpu() if hasattr(x_test, "detach") else x_test, dtype=np.float32)
    warning = None
    if xt.shape[1:] == xs.shape[1:] and len(xt):
        test_rows = {r.tobytes() for r in np.ascontiguousarray(xt).reshape(len(xt), -1)}
        k = sum(r.tobytes() in test_rows for r in np.ascontiguousarray(xs).reshape(len(xs), -1))
        if k:
            warning = (f"the calibration set shares {k} of its {len(xs)} samples with the test split: calibrate "
                       f"on training data, test accuracies after calibrating on test data are optimistic")
    return xs, source, warning


def evaluate_over_time(model, data, config=None, times: Sequence = DEFAULT_TIMES, repeats: int = 5, *,
                       seed: int = 0, batch_size: int = 1000, progress: bool = False,
                       convert_kwargs: dict | None = None, keep_last: bool = False, calibration=None,
                       clip_warn: float = DEFAULT_CLIP_WARN, tech=None,
                       digital_accuracy: float | None = None) -> DeployResults:
    """Accuracy of ``model`` on ``data`` after programming, at each of ``times``, over ``repeats`` chips.

    Args:
        model: a trained digital ``torch.nn.Module`` (flat or shaped inputs, as ``data`` gives them).
        data: an ``aimc.datasets.Dataset`` (its test split) or an ``(x, y)`` pair.
        config: a ``TileConfig`` with an ``inference`` section (None: :func:`deploy_config` with the PCM card
            and global compensation); a preset name, dict or JSON path also works.
        times: increasing times after programming, seconds or strings ("1h", "10y").
        repeats: chip instances; chip ``r`` is converted with seed ``seed + r``.
        batch_size: evaluation batch size.
        progress: show a progress bar on stderr.
        convert_kwargs: extra arguments of ``convert_to_analog`` (``layers``, ``exclude``, ``per_layer``).
        keep_last: keep the last chip instance (at the last time) in ``results.last_model``.
        calibration: the calibration set when the config calibrates (see :func:`calibration_set`; default:
            ``config.calibration.samples`` samples of ``data``'s training split).
        clip_warn: warn when a layer's clipped fraction of ADC conversions (mean over chips) exceeds it.
        tech: a technology card (``aimc.cost``; name, path or ``TechCard``): tiles are fitted to its core size
            and the energy per inference and latency are reported at every time and chip (``results.cost``).
            None: no cost, tiles as ``config`` says.
        digital_accuracy: the model's digital accuracy on ``data`` when the caller already has it
            (:func:`digital_accuracy`, same ``batch_size``); None: evaluated here. A sweep worker evaluates it
            once per model and data set instead of once per chip.
    Returns:
        :class:`DeployResults` (with ``clip_fraction`` per layer and time, the calibrated ranges, warnings).
    """
    import torch

    from .. import __version__
    from ..core.config import as_config
    from .convert import calibrate, clip_fractions, convert_to_analog, drift, program, reset_clip_counts
    from ..workloads.zoo import evaluate

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    secs, labels = parse_times(times)
    cfg = deploy_config() if config is None else as_config(config)
    if cfg.inference is None:
        raise ValueError("config has no inference section (device physics): set TileConfig.inference, e.g. "
                         "aimc.deployment.deploy.deploy_config('pcm-joshi2020')")
    if isinstance(clip_warn, bool) or not isinstance(clip_warn, (int, float)) or not 0 <= clip_warn <= 1:
        raise ValueError(f"clip_warn must be a fraction in [0, 1], got {clip_warn!r}")
    if digital_accuracy is not None and (isinstance(digital_accuracy, bool) or not isinstance(
            digital_accuracy, (int, float)) or not 0 <= digital_accuracy <= 1):
        raise ValueError(f"digital_accuracy must be a fraction in [0, 1] or None, got {digital_accuracy!r}")
    card = None
    if tech is not None:
        from ..cost import fit_config, load_card
        card = load_card(tech) if isinstance(tech, (str, Path)) else tech
        cfg = fit_config(cfg, card)
    x, y = _xy(data)
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    _check_fits(model, x)
    notes = []
    cal_cfgs = [c for c in [cfg.calibration, *(as_config(v).calibration for v in
                                               ((convert_kwargs or {}).get("per_layer") or {}).values())]
                if c is not None]
    x_cal = cal_info = None
    if cal_cfgs:
        x_cal, source, warn = calibration_set(data, calibration, cal_cfgs[0].samples, x)
        if warn:
            warnings.warn(warn, stacklevel=2)
            notes.append(warn)
        x_cal = torch.as_tensor(x_cal)
        try:
            _check_fits(model, x_cal)
        except ValueError as e:
            raise ValueError(f"calibration set: {e}") from None
        cal_info = {"method": cfg.calibration.to_dict() if cfg.calibration else None, "samples": int(len(x_cal)),
                    "source": source, "ranges": []}
    digital = evaluate(model, x, y, batch_size) if digital_accuracy is None else float(digital_accuracy)
    acc = [[0.0] * repeats for _ in secs]
    clip: dict = {}
    energy = [[0.0] * repeats for _ in secs]
    latency = [[0.0] * repeats for _ in secs]
    area = None
    bar = _Progress(repeats * (len(secs) + 1), "deploy", progress)
    t0 = _time.perf_counter()
    last = None
    try:
        for r in range(repeats):
            chip = convert_to_analog(model, cfg, seed=seed + r, **(convert_kwargs or {}))
            chip.eval()
            program(chip)
            if x_cal is not None:
                cal_info["ranges"].append(calibrate(chip, x_cal))
            bar.update()
            for i, t in enumerate(secs):
                drift(chip, t)
                reset_clip_counts(chip)
                if card is None:
                    acc[i][r] = evaluate(chip, x, y, batch_size)
                else:  # energy changes as conductances drift: cost every evaluation
                    from ..cost import count_digital, prepare
                    prepare(chip, card)
                    with count_digital(chip) as dig:
                        acc[i][r] = evaluate(chip, x, y, batch_size)
                    rep = dig.report(int(len(y)), card)
                    energy[i][r], latency[i][r] = rep.energy_per_inference * 1e12, rep.latency * 1e9
                    area = rep.area * 1e6
                for n, f in clip_fractions(chip).items():
                    clip.setdefault(n, [[0.0] * repeats for _ in secs])[i][r] = f
                bar.update()
            last = chip
    finally:
        bar.close()
    meta = {"aimc": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "wall_s": round(_time.perf_counter() - t0, 3)}
    res = DeployResults(times=secs, time_labels=labels, accuracy=acc, digital_accuracy=digital,
                        seeds=[seed + r for r in range(repeats)], config=cfg.to_dict(), n_test=int(len(y)),
                        meta=meta, clip_fraction=clip, calibration=cal_info, last_model=last if keep_last else None,
                        cost=None if card is None else {"card": card.name, "energy_pJ": energy,
                                                        "latency_ns": latency, "area_mm2": area})
    for n, per_t in res.clip_fraction_mean.items():
        over = [f"{100 * f:.2f} % at {lab}" for lab, f in zip(labels, per_t) if f > clip_warn]
        if over:
            notes.append(f"layer {n!r}: clipped ADC outputs {', '.join(over)} (warning threshold "
                         f"{100 * clip_warn:g} %)" + ("" if cal_info else "; the chip is not calibrated"))
            warnings.warn(notes[-1], stacklevel=2)
    res.warnings = notes
    return res


def digital_accuracy(model, data, batch_size: int = 1000) -> float:
    """Test accuracy of the digital ``model`` on ``data`` (a Dataset's test split or an ``(x, y)`` pair),
    exactly as :func:`evaluate_over_time` reports it."""
    import torch

    from ..workloads.zoo import evaluate
    x, y = _xy(data)
    return evaluate(model, torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64), batch_size)


def _check_fits(model, x) -> None:
    import torch
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(x[:1])
            model.train(was)
    except (RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"the model does not accept the data: inputs of shape {tuple(x.shape[1:])} "
                         f"({first}); pass a --model trained on this --data") from None


# ------------------------------------------------------------------------------------------------------
# files

def fresh_run_dir(out) -> Path:
    """``out/run-NNN`` with the next free number, created exclusively (never an existing folder)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    nums = [int(p.name[4:]) for p in out.glob("run-*") if p.name[4:].isdigit()]
    n = max(nums, default=0) + 1
    while True:
        d = out / f"run-{n:03d}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


def plot_results(res: DeployResults, path, title: str = "") -> Path:
    """Accuracy mean +- std against time (log axis; symlog when t = 0 is included), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core._io import atomic_write
    fig, ax = plt.subplots(figsize=(6, 4))
    m = [100 * v for v in res.mean]
    s = [100 * v for v in res.std]
    ax.errorbar(res.times, m, yerr=s, marker="o", capsize=4, label=f"analog ({len(res.seeds)} chips, mean ± std)")
    ax.axhline(100 * res.digital_accuracy, ls="--", color="gray", label="digital")
    if min(res.times) > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks(res.times)
    ax.set_xticklabels(res.time_labels)
    ax.set_xlabel("time after programming")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120), overwrite=False)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------
# the command

def add_arguments(p) -> None:
    p.add_argument("--model", help="an aimc checkpoint (aimc.zoo.save_checkpoint); default: the shipped "
                                   "mnist5k MLP")
    p.add_argument("--data", default="mnist5k",
                   help="mnist5k, digits, or a folder of MNIST IDX files (default: mnist5k; its test split)")
    p.add_argument("--device", default=None,
                   help="inference device card (default: pcm-joshi2020, or the --config's); see `aimc devices`")
    p.add_argument("--times", default=",".join(DEFAULT_TIMES),
                   help="comma list of times after programming with units s/min/h/d/w/y (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="chip instances (seeds) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first chip (default: %(default)s)")
    p.add_argument("--compensation", default=None, choices=["none", "global", "per_column", "global_exact"],
                   help="drift compensation (default: global, or the --config's)")
    p.add_argument("--config", help="a TileConfig JSON file (IO, mapping, inference); --device and "
                                    "--compensation override its inference section")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the calibration of DAC/ADC ranges (abs-max noise management, fixed ADC bound)")
    p.add_argument("--calib-samples", type=int, default=None,
                   help="calibration samples drawn from the training split (default: 1000, or the --config's)")
    p.add_argument("--calib-data", default="train", choices=["train", "test"],
                   help="split the calibration set is drawn from (default: train; 'test' is for comparison "
                        "only and is flagged in the output)")
    p.add_argument("--clip-warn", type=float, default=100 * DEFAULT_CLIP_WARN,
                   help="warn when a layer clips more than this percentage of its ADC outputs at a time "
                        "(default: %(default)g)")
    p.add_argument("--tech", default="hermes-pcm-14nm",
                   help="technology card for energy per inference and latency (aimc cost --cards); tiles take its "
                        "core size; 'none': no cost (default: %(default)s)")
    p.add_argument("--out", default="aimc-results",
                   help="folder for results; each run writes a fresh run-NNN subfolder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--no-files", action="store_true", help="write nothing (no JSON/PNG/chip files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=2, help="threads for numba, BLAS and torch (default: 2)")


def _load_data(spec: str):
    from ..workloads import datasets
    p = Path(spec)
    if spec in ("mnist5k", "digits"):
        return datasets.load(spec)
    if p.is_dir():
        return datasets.load("mnist-idx", path=p)
    raise ValueError(f"bad --data {spec!r}: use mnist5k, digits, or a folder holding MNIST IDX files")


def _resolve_config(args):
    from ..core.config import CalibrationConfig, InferenceConfig, TileConfig
    if args.config:
        base = TileConfig.load(args.config)
        inf = base.inference or InferenceConfig()
        device = check_device(args.device) if args.device else inf.device
        comp = args.compensation or inf.compensation.value
        cfg = base.replace(inference=inf.replace(device=device, compensation=comp))
        cfg = cfg.replace(calibration=None if args.no_calibrate else cfg.calibration or CalibrationConfig())
    else:
        cfg = deploy_config(check_device(args.device or "pcm-joshi2020"), args.compensation or "global",
                            calibrate=not args.no_calibrate)
    if args.calib_samples is not None:
        if args.calib_samples < 1:
            raise ValueError(f"--calib-samples must be >= 1, got {args.calib_samples}")
        if cfg.calibration is not None:
            cfg = cfg.replace(calibration=cfg.calibration.replace(samples=args.calib_samples))
    return cfg


def run(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    from ..bench import check_threads
    check_threads(args.threads)
    if not 0 <= args.clip_warn <= 100:
        raise ValueError(f"--clip-warn is a percentage in [0, 100], got {args.clip_warn}")
    _, labels = parse_times(args.times)
    from ..kernels import background
    helper = background.helper()   # a first run: a second process compiles half of the kernels meanwhile
    try:
        return _run(args, labels)
    finally:
        background.stop(helper)


def _run(args, labels) -> int:
    from ..bench import set_threads
    cfg = _resolve_config(args)
    data = _load_data(args.data)
    set_threads(args.threads)
    from ..workloads import zoo
    if args.model:
        model, meta = zoo.load_checkpoint(args.model)
        model_name = str(args.model)
    else:
        model, meta = zoo.load_default()
        model_name = f"default ({zoo.DEFAULT_CHECKPOINT.name})"
    run_dir = None if args.no_files else fresh_run_dir(args.out)
    from ..kernels import compile_messages
    try:
        cal_set = None
        if cfg.calibration is not None and args.calib_data == "test":
            n = cfg.calibration.samples
            cal_set = data.x_test[:n]
        with warnings.catch_warnings(), compile_messages(enabled=not args.no_progress and not args.json):
            warnings.simplefilter("ignore")   # printed below, and recorded in results.json
            res = evaluate_over_time(model, data, cfg, labels, args.repeats,
                                     seed=args.seed, progress=not args.no_progress and not args.json,
                                     keep_last=run_dir is not None, calibration=cal_set,
                                     clip_warn=args.clip_warn / 100,
                                     tech=None if args.tech == "none" else args.tech)
    except BaseException:
        if run_dir is not None and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    res.meta.update({"model": model_name, "data": args.data, "command": "aimc deploy " + " ".join(sys.argv[2:])})
    files = {}
    if run_dir is not None:
        from ..core._io import atomic_write_text
        files["results"] = str(atomic_write_text(run_dir / "results.json",
                                                 json.dumps(res.to_dict(), indent=2), overwrite=False))
        title = f"{cfg.inference.device}, {cfg.inference.compensation.value} compensation"
        files["plot"] = str(plot_results(res, run_dir / "accuracy.png", title))
        files["chip"] = str(_save_chip(res.last_model, run_dir / "chip.h5"))
        _readable(files.values())
    if args.json:
        d = res.to_dict()
        d["files"] = files
        print(json.dumps(d, indent=2))
        return 0
    print(f"aimc deploy: model {model_name}, data {args.data} ({res.n_test} test samples), device "
          f"{cfg.inference.device}, compensation {cfg.inference.compensation.value}, {len(res.seeds)} chips "
          f"({res.meta['wall_s']:.1f} s)")
    print(res.table())
    if res.cost:
        from ..cost import ASSUMPTIONS
        print(f"cost: card {res.cost['card']}, {res.cost['area_mm2']:.3g} mm2 of cores; energy and latency per "
              f"inference, mean over chips (`aimc cost` gives the per-layer table); {ASSUMPTIONS[0]}")
    if res.calibration:
        c = res.calibration
        m = c["method"] or {}
        print(f"calibrated on {c['samples']} samples ({c['source']}): input range {m.get('inp')}, ADC range "
              f"{m.get('out')} per {m.get('out_granularity')}")
    else:
        print("not calibrated (--no-calibrate): abs-max noise management and the config's fixed ADC bound")
    print("clipped ADC outputs (%, mean over chips):")
    print(res.clip_table())
    for w in res.warnings:
        print(f"WARNING: {w}")
    if files:
        print(f"results: {run_dir}/ ({', '.join(Path(f).name for f in files.values())})")
    return 0


def _readable(paths) -> None:
    """Temp-file writes are created 0600; give the results the usual permissions (0666 less the umask)."""
    import os
    mask = os.umask(0)
    os.umask(mask)
    for p in paths:
        os.chmod(p, 0o666 & ~mask)


def _save_chip(model, path: Path) -> Path:
    from ..core.chip import save_chip
    save_chip(model, path)
    return path
