"""HWA workflows: digital export, checkpoints, deployment of a trained model over time, a training loop,
the ``aimc train --method hwa`` command."""
from __future__ import annotations

import math
import numbers
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.config import (TileConfig, as_config)
from .config import HWAConfig
from .layer import HWALayer, analog_layers, hook_optimizer, prepare


def _is_hwa_key(k: str) -> bool:
    """HWA state and the analog layers' tile state (``_extra_state``) have no place in a torch.nn twin."""
    return k.startswith("hwa.") or ".hwa." in k or k.endswith("_extra_state")


def export_digital(model: nn.Module) -> dict:
    """The model's state dict with output scales folded into the weights and the HWA entries removed, i.e.
    the state dict of its torch.nn twin (input ranges are returned separately by ``input_ranges``)."""
    out = {k: v.clone() for k, v in model.state_dict().items() if not _is_hwa_key(k)}
    names = {id(m): n for n, m in model.named_modules()}
    with torch.no_grad():
        for _, layer in analog_layers(model):
            state = getattr(layer, "hwa", None)
            if state is None or state.out_scale is None:
                continue
            owner = getattr(layer, "_owner", layer)   # TileSlot: a row block of its owner's parameter
            param = getattr(layer, "_param", "weight")
            rows = getattr(layer, "_rows", None)
            oname = names[id(owner)]
            w = out[f"{oname}.{param}" if oname else param]
            block = w if rows is None else w[rows[0]:rows[1]]
            block.view(layer.tiles.out_size, -1).mul_(state.out_scale.detach()[:, None])
    return out


def input_ranges(model: nn.Module) -> dict:
    """{layer name: [r per input split]} of the layers with learned input ranges."""
    return {name: [float(v) for v in layer.hwa.input_range.detach()]
            for name, layer in analog_layers(model)
            if getattr(layer, "hwa", None) is not None and layer.hwa.input_range is not None}


def save_checkpoint(model: nn.Module, path, meta: dict | None = None, *, overwrite: bool = False,
                    arch: tuple[str, dict] | None = None) -> Path:
    """Write an aimc checkpoint (``aimc.zoo`` format) of the digital twin (output scales folded in), with
    ``meta["hwa"]`` = {tile_config, hwa_config, input_ranges} so ``load_checkpoint`` restores the analog
    model exactly and ``aimc.zoo.load_checkpoint`` / ``aimc deploy`` read it as a plain torch model."""
    from ...workloads import zoo
    tag = getattr(model, zoo._ARCH_ATTR, None)
    if arch is None and tag is None:
        raise ValueError("save_checkpoint: the model was not built by aimc.zoo; pass arch=(name, kwargs)")
    name, kwargs = arch if arch is not None else (tag["name"], tag["kwargs"])
    twin = zoo.build(name, **kwargs)
    twin.load_state_dict(export_digital(model), strict=True)
    layers = analog_layers(model)
    meta = dict(meta or {})
    if layers:
        first = layers[0][1]
        hcfg = first.hwa.config if getattr(first, "hwa", None) is not None else HWAConfig()
        meta["hwa"] = {"tile_config": first.config.to_dict(), "hwa_config": hcfg.to_dict(),
                       "input_ranges": input_ranges(model), "seed": int(first.tiles.seed)}
    return zoo.save_checkpoint(twin, path, meta, overwrite=overwrite, arch=(name, kwargs))


def load_checkpoint(path, *, analog: bool = True):
    """Load a checkpoint written by ``save_checkpoint``; returns (model, meta). With ``analog`` (default) and
    HWA metadata present, the model is prepared with the stored configs and its input ranges restored."""
    from ...workloads import zoo
    model, meta = zoo.load_checkpoint(path)
    h = meta.get("hwa") if isinstance(meta, dict) else None
    if not analog or not h:
        return model, meta
    tcfg = TileConfig.from_dict(h["tile_config"])
    hcfg = HWAConfig.from_dict(h["hwa_config"])
    model = prepare(model, None, tile_config=tcfg, hwa_config=hcfg, seed=int(h.get("seed", 0)))
    ranges = h.get("input_ranges", {})
    for name, layer in analog_layers(model):
        if name in ranges and layer.hwa.input_range is not None:
            with torch.no_grad():
                layer.hwa.input_range.copy_(torch.tensor(ranges[name], dtype=torch.float32))
                layer.hwa.ir_batches.fill_(hcfg.input_range.init_from_data)
    model.eval()
    return model, meta


# ============================================================================================ deployment

def deploy_config(model: nn.Module, device: str = "pcm-joshi2020", compensation: str = "global",
                  calibrate: bool = True) -> TileConfig:
    """The TileConfig to deploy an HWA-trained ``model`` on: its own (training) TileConfig with an inference
    section (device card, drift compensation) added; the forward periphery stays what HWA trained with.
    ``calibrate`` (default, as ``aimc deploy``): per-column MSE ADC ranges chosen on each programmed chip, and
    the learned input ranges (``inp='learned'``) if the model has them, else a static DAC range at the
    99.99th percentile (``aimc.calibration``)."""
    from ...core.config import CalibrationConfig, InferenceConfig
    layers = analog_layers(model)
    if not layers:
        raise ValueError("deploy_config: the model has no analog layers")
    cal = None
    if calibrate:
        learned = bool(input_ranges(model))
        cal = CalibrationConfig(inp="learned" if learned else "percentile")
    return layers[0][1].config.replace(inference=InferenceConfig(device=device, compensation=compensation),
                                       calibration=cal)


def deploy_copy(model: nn.Module, config: TileConfig | str | None = None, seed: int = 0) -> nn.Module:
    """A copy of an HWA-prepared ``model`` on fresh tiles (``config``, default ``deploy_config(model)``; seed
    ``seed``; tile names kept), with the same weights, input ranges and output scales: one chip instance,
    ready for ``aimc.convert.program`` / ``drift``."""
    import copy
    cfg = deploy_config(model) if config is None else as_config(config)
    chip = copy.deepcopy(model)
    for _, layer in analog_layers(chip):
        t = layer.tiles
        layer._init_tiles(t.out_size, t.in_size, cfg, seed, t.name)
        old = getattr(layer, "hwa", None)
        if old is not None:
            state = HWALayer(layer, old.config)
            state.load_state_dict(old.state_dict())
            layer.hwa = state
    return chip


def evaluate_over_time(model: nn.Module, data, config: TileConfig | str | None = None, times=("1s", "1h", "1d", "1y"),
                       repeats: int = 5, *, seed: int = 0, batch_size: int = 1000, calibration=None):
    """``aimc.deploy.evaluate_over_time`` for an HWA-trained analog model (which keeps its learned input ranges
    and output scales): for chip r = 0..repeats-1, ``deploy_copy(model, config, seed + r)``, program, drift
    to each time (eval mode: drift compensation on), test accuracy. Returns ``aimc.deploy.DeployResults``
    (``digital_accuracy``: the same model with a perfect forward, i.e. floating point with its input-range
    clipping and output scales, no analog noise).

    With ``config.calibration`` (e.g. ``CalibrationConfig(inp="learned")``: the learned input ranges, ADC
    ranges from the programmed chip) each chip is calibrated after programming on ``calibration`` (default:
    the training split; see ``aimc.deploy.calibration_set``), and the clipped fractions are reported."""
    from ... import __version__
    from ...workloads import zoo
    import warnings

    from ...deployment.convert import calibrate, clip_fractions, drift, program, reset_clip_counts
    from ...deployment.deploy import DeployResults, _xy, calibration_set, parse_times
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    secs, labels = parse_times(times)
    cfg = deploy_config(model) if config is None else as_config(config)
    if cfg.inference is None:
        raise ValueError("config has no inference section (device physics): use hwa.deploy_config(model)")
    x, y = _xy(data)
    x = torch.as_tensor(np.asarray(x, np.float32))
    y = torch.as_tensor(np.asarray(y, np.int64))
    ideal = cfg.replace(forward=cfg.forward.replace(is_perfect=True), inference=None)
    digital = zoo.evaluate(deploy_copy(model, ideal.replace(calibration=None), seed), x, y, batch_size)
    x_cal, notes, cal_info, clip = None, [], None, {}
    if cfg.calibration is not None:
        x_cal, source, warn = calibration_set(data, calibration, cfg.calibration.samples, x)
        if warn:
            warnings.warn(warn, stacklevel=2)
            notes.append(warn)
        x_cal = torch.as_tensor(x_cal)
        cal_info = {"method": cfg.calibration.to_dict(), "samples": int(len(x_cal)), "source": source, "ranges": []}
    acc = [[0.0] * repeats for _ in secs]
    t0 = time.perf_counter()
    for r in range(repeats):
        chip = deploy_copy(model, cfg, seed + r)
        chip.eval()
        program(chip)
        if x_cal is not None:
            cal_info["ranges"].append(calibrate(chip, x_cal))
        for i, t in enumerate(secs):
            drift(chip, t)
            reset_clip_counts(chip)
            acc[i][r] = zoo.evaluate(chip, x, y, batch_size)
            for n, f in clip_fractions(chip).items():
                clip.setdefault(n, [[0.0] * repeats for _ in secs])[i][r] = f
    meta = {"aimc": __version__, "torch": str(torch.__version__), "wall_s": round(time.perf_counter() - t0, 3),
            "hwa_config": _first_hwa_config(model)}
    return DeployResults(times=secs, time_labels=labels, accuracy=acc, digital_accuracy=digital,
                         seeds=[seed + r for r in range(repeats)], config=cfg.to_dict(), n_test=int(len(y)),
                         meta=meta, clip_fraction=clip, calibration=cal_info, warnings=notes)


def _first_hwa_config(model) -> dict | None:
    for _, layer in analog_layers(model):
        if getattr(layer, "hwa", None) is not None:
            return layer.hwa.config.to_dict()
    return None


# ============================================================================================ training loop

def train(model: nn.Module, dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          *, optimizer: str = "adam", scheduler: str = "cosine", verbose: bool = False,
          log=None) -> float:
    """Train a prepared ``model`` in place on ``dataset`` (``aimc.datasets.Dataset``) with cross-entropy,
    ``post_step`` after every step. Deterministic for a given model and ``seed`` (mini-batch order from
    Generator(Philox(seed)); torch RNG seeded inside ``fork_rng``; the tiles' own counter-based streams).

    ``optimizer``: 'adam' or 'sgd' (momentum 0.9); ``scheduler``: 'cosine' (to 0 over all steps) or 'none'.
    Returns the test accuracy (``model.eval()``, the noisy analog forward) after training.
    """
    from ...workloads import zoo
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: adam, sgd")
    x = torch.from_numpy(np.ascontiguousarray(dataset.x_train, np.float32))
    y = torch.from_numpy(np.asarray(dataset.y_train, np.int64))
    n = len(y)
    steps = epochs * (-(-n // batch_size))
    if scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif scheduler == "none":
        sched = None
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: cosine, none")
    handle = hook_optimizer(opt, model)
    loss_fn = nn.CrossEntropyLoss()
    order = np.random.Generator(np.random.Philox(int(seed)))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model.train()
            for epoch in range(epochs):
                t0 = time.perf_counter()
                perm = torch.from_numpy(order.permutation(n))
                total = 0.0
                for i in range(0, n, batch_size):
                    idx = perm[i:i + batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x[idx]), y[idx])
                    loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total += float(loss.detach()) * len(idx)
                msg = f"epoch {epoch + 1}/{epochs}  train loss {total / n:.4f}  ({time.perf_counter() - t0:.1f} s)"
                if log is not None:
                    log(msg)
                elif verbose:
                    print(msg, flush=True)
    finally:
        handle.remove()
    model.eval()
    return zoo.evaluate(model, dataset.x_test, dataset.y_test)


# ============================================================================================ CLI and bench

def run_cli(args) -> int:
    """``aimc train --method hwa``: train a zoo model with the HWA preset and write a checkpoint."""
    from ...workloads import datasets, zoo
    from ..cli import method_options
    opts = method_options(args, {"preset": "standard-hwa", "hidden": "256,128", "optimizer": "adam",
                                 "scheduler": "cosine", "batch_size": 64, "fp_epochs": 0})
    ds = datasets.load(args.data)
    lr = 1e-2 if args.lr is None else args.lr  # weights are remapped to max 1: Adam steps are relative to 1
    torch.manual_seed(args.seed)
    if args.arch == "mlp":
        hidden = [int(h) for h in str(opts["hidden"]).split(",") if h]
        net = zoo.mlp(ds.n_features, hidden, ds.n_classes)
    else:
        net = zoo.cnn(tuple(ds.shape), n_classes=ds.n_classes)
    log = (lambda m: print(m, flush=True)) if not args.quiet else None
    if int(opts["fp_epochs"]) > 0:
        zoo.train_digital(net, ds, epochs=int(opts["fp_epochs"]), lr=1e-3, seed=args.seed)
    model = prepare(net, str(opts["preset"]), seed=args.seed)
    t0 = time.perf_counter()
    acc = train(model, ds, epochs=args.epochs, lr=lr, batch_size=int(opts["batch_size"]), seed=args.seed,
                optimizer=str(opts["optimizer"]), scheduler=str(opts["scheduler"]), log=log)
    out = args.out or Path("aimc-results") / f"train-hwa-{args.data}-{args.arch}.pt"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"method": "hwa", "dataset": args.data, "accuracy": acc, "seed": args.seed, "epochs": args.epochs,
            "lr": lr, "preset": str(opts["preset"]), "train_s": round(time.perf_counter() - t0, 1)}
    save_checkpoint(model, out, meta, overwrite=args.overwrite or args.out is None)
    res = {"method": "hwa", "data": args.data, "arch": args.arch, "test_accuracy": acc, "checkpoint": str(out)}
    if args.json:
        import json
        print(json.dumps(res))
    else:
        print(f"hwa  {args.data}/{args.arch}  test accuracy {acc:.4f} (noisy analog forward)  -> {out}")
    return 0
