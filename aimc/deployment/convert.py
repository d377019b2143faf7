"""Model conversion and the module-tree lifecycle (torch): ``convert_to_analog`` / ``convert_to_digital``,
``program``, ``drift``, ``unprogram``, ``read_weights``, ``analog_layers``.

The usual path (training.md §1.8)::

    analog = aimc.convert.convert_to_analog(model, config, seed=1)   # a copy; weights copied
    aimc.convert.program(analog)                                     # programming noise drawn once
    aimc.convert.drift(analog, "1d")                                 # one day later (read noise redrawn)
    accuracy = evaluate(analog, x, y)                                # drift-compensated in eval mode

Supported layers (``LAYER_TYPES``): ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.LSTM``, ``nn.GRU``,
``nn.RNN``, ``nn.MultiheadAttention``. Biases, activations, normalisation and pooling stay digital.
Embeddings (``nn.Embedding``, ``nn.EmbeddingBag``: a table lookup, no product) and normalisations stay
digital by design (``DIGITAL_BY_DESIGN``). Any other layer that holds a weight matrix (a leaf module with a
parameter of 2 or more dimensions, e.g. ``nn.Conv3d``, ``nn.ConvTranspose2d``, GPT-2's ``Conv1D``) is one
aimc cannot convert: ``convert_to_analog`` raises an error naming it (``unconverted="warn"`` / ``"ignore"``
to go on); ``conversion_report(model)`` lists what is analog and what is digital, and why.
A ``MultiheadAttention`` is converted as a whole (q/k/v/out projections); when it is not converted its
``out_proj`` (an ``nn.Linear`` subclass that torch reads directly) is left digital too.

Every analog layer gets the same ``seed``; its tiles are named after the layer's qualified name, so each
tile has its own random stream. Two conversions with different seeds are two independent chips.

Transformer layers: torch's fused eval-mode "fast path" of ``nn.TransformerEncoderLayer`` reads the
linear weights directly, i.e. digitally. ``convert_to_analog`` registers a no-op forward pre-hook on every
analog layer inside a ``Transformer*`` module (a documented reason for torch to take the regular path) and
sets ``use_nested_tensor = False`` on ``nn.TransformerEncoder``.
"""
from __future__ import annotations

import copy
from typing import Iterable, Mapping

import torch
from torch import nn

from ..core.config import TileConfig, as_config
from ..nn import (AnalogConv1d, AnalogConv2d, AnalogContainer, AnalogGRU, AnalogLinear, AnalogLSTM,
                 AnalogMultiheadAttention, AnalogRNN)
from ..nn.attention import _no_fast_path
from ..nn.base import AnalogModule

__all__ = ["DIGITAL_BY_DESIGN", "LAYER_TYPES", "LAYER_NAMES", "UnconvertedLayerError", "analog_layers", "calibrate",
           "clip_fractions", "conversion_report", "convert_to_analog",
           "convert_to_digital", "drift", "program", "read_weights", "reset_clip_counts", "unprogram", "is_analog"]


def _linear_from(layer, config, seed, name):
    return AnalogLinear.from_linear(layer, config, seed, name)


#: torch layer type -> analog builder ``(layer, config, seed, name) -> analog layer``
LAYER_TYPES: dict[type, callable] = {
    nn.Linear: _linear_from,
    nn.Conv1d: AnalogConv1d.from_torch,
    nn.Conv2d: AnalogConv2d.from_torch,
    nn.LSTM: AnalogLSTM.from_torch,
    nn.GRU: AnalogGRU.from_torch,
    nn.RNN: AnalogRNN.from_torch,
    nn.MultiheadAttention: AnalogMultiheadAttention.from_torch,
}

#: names accepted by ``layers=`` in place of types
LAYER_NAMES: dict[str, tuple[type, ...]] = {
    "linear": (nn.Linear,), "conv1d": (nn.Conv1d,), "conv2d": (nn.Conv2d,), "conv": (nn.Conv1d, nn.Conv2d),
    "lstm": (nn.LSTM,), "gru": (nn.GRU,), "rnn": (nn.RNN,), "attention": (nn.MultiheadAttention,),
}

_ANALOG_TYPES = (AnalogLinear, AnalogConv1d, AnalogConv2d, AnalogLSTM, AnalogGRU, AnalogRNN,
                 AnalogMultiheadAttention)


#: layer types whose weights stay digital by design (``conversion_report`` states the reason)
DIGITAL_BY_DESIGN: dict[type, str] = {
    nn.Embedding: "embedding (a table lookup, no matrix product): digital by design",
    nn.EmbeddingBag: "embedding (a table lookup, no matrix product): digital by design",
    nn.LayerNorm: "normalisation: digital by design",
    nn.GroupNorm: "normalisation: digital by design",
    nn.modules.batchnorm._NormBase: "normalisation: digital by design",
    nn.LocalResponseNorm: "normalisation: digital by design",
}
if hasattr(nn, "RMSNorm"):
    DIGITAL_BY_DESIGN[nn.RMSNorm] = "normalisation: digital by design"

_UNCONVERTED = ("error", "warn", "ignore")


class UnconvertedLayerError(ValueError):
    """A layer holding a weight matrix was left digital because aimc has no analog twin for it."""


def _digital_by_design(module: nn.Module) -> str | None:
    for t, why in DIGITAL_BY_DESIGN.items():
        if isinstance(module, t):
            return why
    return None


def _matrix_params(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of the module's own parameters with 2 or more dimensions (weight matrices/kernels)."""
    return [(n, tuple(p.shape)) for n, p in module.named_parameters(recurse=False) if p is not None and p.ndim >= 2]


def is_analog(module: nn.Module) -> bool:
    """Whether ``module`` is an analog layer (or a tile-holding part of one)."""
    return isinstance(module, AnalogModule)


def _layer_types(layers) -> tuple[type, ...]:
    if layers is None:
        return tuple(LAYER_TYPES)
    if isinstance(layers, (str, type)):
        layers = [layers]
    out: list[type] = []
    for item in layers:
        if isinstance(item, str):
            try:
                out += LAYER_NAMES[item.lower()]
            except KeyError:
                raise ValueError(f"convert_to_analog: unknown layer kind {item!r}; known: "
                                 f"{', '.join(LAYER_NAMES)} (or torch layer types)") from None
        elif isinstance(item, type) and issubclass(item, nn.Module):
            if not any(issubclass(item, t) for t in LAYER_TYPES):
                raise ValueError(f"convert_to_analog: {item.__name__} has no analog twin; supported: "
                                 f"{', '.join(t.__name__ for t in LAYER_TYPES)}")
            out.append(item)
        else:
            raise TypeError(f"convert_to_analog: layers must hold layer types or names, got {item!r}")
    return tuple(out)


def _builder(module: nn.Module):
    for t in type(module).__mro__:
        if t in LAYER_TYPES:
            return LAYER_TYPES[t]
    return None


def convert_to_analog(model: nn.Module, config: TileConfig | str | dict | None = None, *,
                      layers: Iterable | None = None, exclude: Iterable = (),
                      per_layer: Mapping[str, TileConfig | str | dict] | None = None, seed: int = 0,
                      unconverted: str = "error") -> nn.Module:
    """A copy of ``model`` with its supported layers replaced by analog twins (weights and biases copied).

    Args:
        model: any ``torch.nn.Module`` (the model itself may be a single supported layer).
        config: the ``TileConfig`` of every converted layer (a preset name, a dict or a JSON path also work;
            None = ``aimc.presets.default()``).
        layers: which layer kinds to convert: torch types (``nn.Linear``) and/or names from ``LAYER_NAMES``
            (``"linear"``, ``"conv"``, ``"lstm"``, ...). Default: every supported kind.
        exclude: qualified module names (as in ``model.named_modules()``) and/or module types to leave
            digital; an excluded module's whole subtree is left as it is.
        per_layer: ``{qualified name: config}`` overriding ``config`` for that module and everything below it
            (the most specific name wins).
        seed: random seed of every tile (tiles are told apart by their layer's name).
        unconverted: what to do about a layer left digital unexpectedly (a leaf module holding a weight
            matrix that has no analog twin, is not excluded and is not digital by design, e.g. ``nn.Conv3d``):
            ``"error"`` (default) raises ``UnconvertedLayerError`` naming every such layer, ``"warn"`` warns
            and converts the rest, ``"ignore"`` converts the rest silently. Layers of a supported kind that
            ``layers=`` did not select, excluded layers, embeddings and normalisations are expected to stay
            digital and never raise.

    Raises:
        ValueError: a name in ``exclude`` or ``per_layer`` that is not a module of ``model``, a ``per_layer``
            name under which nothing is converted, an unknown layer kind, a bad ``unconverted``.
        UnconvertedLayerError: (a ValueError) a layer left digital unexpectedly, with ``unconverted="error"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_analog: model must be a torch.nn.Module, got {type(model).__name__}")
    if unconverted not in _UNCONVERTED:
        raise ValueError(f"convert_to_analog: unconverted must be one of {', '.join(_UNCONVERTED)}, "
                         f"got {str(unconverted)[:40]!r}")
    base_cfg = as_config(config)
    types = _layer_types(layers)
    names = {n for n, _ in model.named_modules()}
    ex_names, ex_types = set(), []
    if isinstance(exclude, (str, type)):
        exclude = [exclude]
    for e in exclude:
        if isinstance(e, str):
            if e not in names:
                raise ValueError(f"convert_to_analog: exclude names {e!r}, which is not a module of the model "
                                 f"(names: {_some(names)})")
            ex_names.add(e)
        elif isinstance(e, type):
            ex_types.append(e)
        else:
            raise TypeError(f"convert_to_analog: exclude must hold module names or types, got {e!r}")
    overrides = {}
    for n, c in (per_layer or {}).items():
        if n not in names:
            raise ValueError(f"convert_to_analog: per_layer names {n!r}, which is not a module of the model "
                             f"(names: {_some(names)})")
        overrides[n] = as_config(c)
    used = set()
    left: list[str] = []  # layers left digital unexpectedly

    def cfg_for(qname: str) -> TileConfig:
        best, best_name = base_cfg, None
        for n, c in overrides.items():
            if (n == "" or qname == n or qname.startswith(n + ".")) and (best_name is None or len(n) > len(best_name)):
                best, best_name = c, n
        if best_name is not None:
            used.add(best_name)
        return best

    def convert(module: nn.Module, qname: str) -> nn.Module | None:
        """The replacement of ``module`` (None = keep it, after converting its children in place)."""
        if qname in ex_names or any(isinstance(module, t) for t in ex_types):
            return module
        if isinstance(module, AnalogModule):
            return module
        build = _builder(module)
        if build is not None and isinstance(module, types):
            return build(module, cfg_for(qname), seed, qname or type(module).__name__.lower())
        if isinstance(module, nn.MultiheadAttention):
            return module  # its out_proj is read directly by torch: leave the whole layer digital
        if build is None and next(module.children(), None) is None and _digital_by_design(module) is None:
            mats = _matrix_params(module)
            if mats:
                left.append(f"{qname or '<model>'!r} ({type(module).__name__}, "
                            + ", ".join(f"{n} {tuple(s)}" for n, s in mats) + ")")
        for cname, child in list(module.named_children()):
            new = convert(child, f"{qname}.{cname}" if qname else cname)
            if new is not child:
                setattr(module, cname, new)
        return module

    out = copy.deepcopy(model)
    out = convert(out, "")
    if left and unconverted != "ignore":
        msg = (f"convert_to_analog: {len(left)} layer(s) hold weight matrices but have no analog twin and were "
               f"left digital: {', '.join(left[:10])}{', ...' if len(left) > 10 else ''}. Supported: "
               f"{', '.join(t.__name__ for t in LAYER_TYPES)}. Replace them with a supported layer, exclude them "
               f"(exclude=[...]) to keep them digital on purpose, or pass unconverted='warn' or 'ignore'")
        if unconverted == "error":
            raise UnconvertedLayerError(msg)
        import warnings
        warnings.warn(msg, stacklevel=2)
    unused = sorted(set(overrides) - used)
    if unused:
        raise ValueError(f"convert_to_analog: per_layer names {unused} but no layer is converted there "
                         f"(excluded, or not a supported/selected layer type)")
    _fix_transformers(out)
    return out


def conversion_report(model: nn.Module) -> dict:
    """What of ``model`` computes in analog and what stays digital, and why.

    Returns ``{"analog": {name: type}, "digital": {name: reason}, "analog_weights": int,
    "digital_weights": int}``: ``digital`` holds every leaf layer outside the analog layers that has
    parameters (embeddings, normalisations, layers without an analog twin, layers of a supported kind left
    digital by ``layers=``/``exclude``); the weight counts are the parameters with 2 or more dimensions
    (biases, norm scales and other vectors, always digital, are not counted).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"conversion_report: model must be a torch.nn.Module, got {type(model).__name__}")
    analog, digital = {}, {}
    n_analog = n_digital = 0
    inside: tuple[str, ...] = ()
    for name, m in model.named_modules():
        label = name or "<model>"
        if inside and any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, AnalogModule):
            analog[label] = type(m).__name__
            n_analog += sum(p.numel() for p in m.parameters() if p.ndim >= 2)
            inside += (name,) if name else ("",)
            if not name:
                break
            continue
        own = list(m.parameters(recurse=False))
        if not own or next(m.children(), None) is not None and not isinstance(m, nn.MultiheadAttention):
            continue
        why = _digital_by_design(m)
        if why is None:
            if isinstance(m, nn.MultiheadAttention) or _builder(m) is not None:
                why = "supported layer left digital (excluded, or not selected by layers=)"
            elif _matrix_params(m):
                why = f"no analog twin for {type(m).__name__}: left digital"
            else:
                why = "vector parameters only (biases, scales): digital"
        digital[label] = why
        n_digital += sum(p.numel() for p in m.parameters() if p.ndim >= 2)
        if isinstance(m, nn.MultiheadAttention):
            inside += (name,)
    return {"analog": analog, "digital": digital, "analog_weights": int(n_analog),
            "digital_weights": int(n_digital)}


def _some(names) -> str:
    shown = sorted(n for n in names if n)[:12]
    return ", ".join(shown) + (", ..." if len(names) > 13 else "")


def _fix_transformers(model: nn.Module) -> None:
    for m in model.modules():
        if type(m).__name__.startswith("Transformer") and any(isinstance(s, AnalogModule) for s in m.modules()):
            if isinstance(m, nn.TransformerEncoder):
                m.use_nested_tensor = False
            for s in m.modules():
                if isinstance(s, AnalogModule) and _no_fast_path not in s._forward_pre_hooks.values():
                    s.register_forward_pre_hook(_no_fast_path)


def convert_to_digital(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every analog layer replaced by its ``torch.nn`` twin holding the layer's
    floating-point weights (the inverse of ``convert_to_analog``; programmed/drifted states are dropped).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_digital: model must be a torch.nn.Module, got {type(model).__name__}")

    def digital(m: nn.Module) -> nn.Module:
        if isinstance(m, AnalogLinear):
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(m.weight)
                if m.bias is not None:
                    lin.bias.copy_(m.bias)
            return lin
        if isinstance(m, _ANALOG_TYPES):
            return m.to_torch()
        for cname, child in list(m.named_children()):
            new = digital(child)
            if new is not child:
                setattr(m, cname, new)
        return m

    out = digital(copy.deepcopy(model))
    for m in out.modules():  # the fast-path hooks convert_to_analog added
        for k, h in list(m._forward_pre_hooks.items()):
            if h is _no_fast_path:
                del m._forward_pre_hooks[k]
    return out


# ------------------------------------------------------------------------------------------------------
# the module-tree lifecycle

def analog_layers(model: nn.Module) -> list[tuple[str, AnalogModule]]:
    """``(qualified name, module)`` of every tile-holding analog module of ``model`` (layers and slots)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, AnalogModule) and not isinstance(m, AnalogContainer) and getattr(m, "tiles", None)
            is not None]


def _holders(model: nn.Module, verb: str) -> list[tuple[str, AnalogModule]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{verb}: model must be a torch.nn.Module, got {type(model).__name__}")
    h = analog_layers(model)
    if not h:
        raise ValueError(f"{verb}: the model has no analog layers (convert it with convert_to_analog first)")
    return h


def program(model: nn.Module) -> nn.Module:
    """Physically write every analog layer's weights (programming noise drawn once; clock at t = 0).

    Returns ``model``. Programming again draws a fresh chip state from the tiles' streams.
    """
    for _, m in _holders(model, "program"):
        m.program()
    return model


def unprogram(model: nn.Module) -> nn.Module:
    """Back to mirroring the floating-point weights on every analog layer (e.g. to train further)."""
    for _, m in _holders(model, "unprogram"):
        m.unprogram()
    return model


def drift(model: nn.Module, t) -> nn.Module:
    """Move every analog layer to ``t`` after programming (seconds, or a string such as ``"1h"``, ``"10y"``).

    Time only moves forward: an error (before any layer moves) if ``t`` is earlier than a layer's clock,
    or if a layer was not programmed.
    """
    from ..core.inference import check_time
    t = check_time(t)  # seconds or "1h", "10y", ... (aimc.times.parse_time), before any layer moves
    holders = _holders(model, "drift")
    missing = [n or "<model>" for n, m in holders if not m.programmed]
    if missing:
        raise RuntimeError(f"drift: layers {missing[:5]} are not programmed; call program(model) first")
    for n, m in holders:
        now = m.tiles.time
        if now is not None and t < now:
            raise ValueError(f"drift: t = {t:g} s is earlier than the clock of layer {n or '<model>'!r} "
                             f"({now:g} s); time only moves forward (program again to restart at t = 0)")
    for _, m in holders:
        m.drift(t)
    return model


def read_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{qualified name: (out, in) float32 tensor}``: the weights every analog tile array computes with now
    (programmed, drifted; the digital column scales applied, the drift-compensation factor not)."""
    return {n: torch.from_numpy(m.tiles.read_weights()) for n, m in _holders(model, "read_weights")}


def calibrate(model: nn.Module, x, cal=None) -> dict:
    """Calibrate the converter ranges of a programmed model on calibration inputs ``x`` (``aimc.calibration``).

    One forward pass of ``x`` (eval mode, no gradients) in which every analog layer, when the pass reaches
    it, sets its static DAC range and ADC ranges from its own inputs (so each layer sees the outputs of the
    calibrated layers before it), by ``cal`` (a ``CalibrationConfig``) or, if None, its own
    ``config.calibration`` (layers without one are left uncalibrated). Draw ``x`` from the *training*
    split: calibrating on the test set makes test accuracies optimistic. Returns
    ``{layer name: TileArray.calibration_report()}``.

    Raises ValueError for an empty ``x``, NaN/inf, inputs the model does not accept, a 'learned' input range
    on a layer without HWA-learned ranges, or no layer to calibrate; RuntimeError if not programmed. After a
    failure no layer keeps a calibration (the earlier one is gone too: recalibrate).
    """
    from ..core.config import CalibrationConfig, InputCalibration
    holders = _holders(model, "calibrate")
    if cal is not None and not isinstance(cal, CalibrationConfig):
        raise TypeError(f"calibrate: cal must be a CalibrationConfig or None, got {type(cal).__name__}")
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        x = x.float()
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"calibrate: the calibration set is empty (shape {tuple(x.shape)}): pass at least one "
                         f"sample from the training split")
    if not torch.isfinite(x).all():
        raise ValueError("calibrate: the calibration set contains NaN or inf")
    todo = []
    for n, m in holders:
        c = cal if cal is not None else m.config.calibration
        if c is None:
            continue
        if not m.programmed:
            raise RuntimeError(f"calibrate: layer {n or '<model>'!r} is not programmed; call program(model) first "
                               f"(calibration is done on the programmed chip)")
        if c.inp == InputCalibration.LEARNED:
            hwa = getattr(m, "hwa", None)
            if hwa is None or getattr(hwa, "input_range", None) is None:
                raise ValueError(f"calibrate: layer {n or '<model>'!r} has calibration inp 'learned' but no learned "
                                 f"input ranges (it was not hardware-aware trained with input_range.enable); "
                                 f"use 'percentile' or 'max'")
        todo.append((n, m, c))
    if not todo:
        raise ValueError("calibrate: no analog layer has a calibration method (TileConfig.calibration is None "
                         "everywhere): pass cal=aimc.config.CalibrationConfig() or convert with one")
    was = model.training
    try:
        for _, m, c in todo:
            m.tiles.calibrate_on_next_forward(c)
        model.eval()
        try:
            with torch.no_grad():
                model(x.to(torch.float32))
        except (RuntimeError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"calibrate: the model does not accept the calibration set of shape "
                             f"{tuple(x.shape)} ({first})") from None
        return {n: m.tiles.finish_calibration(c) for n, m, c in todo}
    except BaseException:
        for _, m, _ in todo:   # all or nothing: a failed calibration leaves no layer half-calibrated
            for t in m.tiles.all_tiles():
                t._clear_calibration()
        raise
    finally:
        for _, m, _ in todo:
            for t in m.tiles.all_tiles():
                t._cal_pending = t._cal_sample = None
        model.train(was)


def reset_clip_counts(model: nn.Module) -> None:
    """Zero every analog layer's counts of ADC conversions and clipped outputs."""
    for _, m in _holders(model, "reset_clip_counts"):
        m.tiles.reset_clip_counts()


def clip_fractions(model: nn.Module) -> dict[str, float]:
    """``{layer name: fraction of ADC conversions clipped}`` since the last ``reset_clip_counts`` (0 for a layer
    with no conversions, e.g. a perfect forward)."""
    out = {}
    for n, m in _holders(model, "clip_fractions"):
        c, total = m.tiles.clip_counts()
        out[n] = c / total if total else 0.0
    return out
