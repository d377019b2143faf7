"""Small reference models for MNIST-5k / digits, digital training and architecture-tagged checkpoints (torch).

``mlp`` and ``cnn`` are plain ``torch.nn.Sequential`` stacks of ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ReLU``
(plus the parameter-free ``nn.Unflatten``, ``nn.MaxPool2d``, ``nn.Flatten``), so ``convert_to_analog`` can
swap the layers. Every zoo model takes **flat** inputs ``(batch, C*H*W)``, exactly as :mod:`aimc.datasets`
returns them (``resnet`` also takes ``(batch, C, H, W)``).

Models at real scale: ``resnet`` (the CIFAR ResNets of He et al. 2016, ResNet-32 by default, batch norm
digital) and ``bert`` (a BERT encoder with a classification head built from a ``transformers.BertConfig``,
random weights, nothing downloaded; needs the optional extra ``aimc[transformers]``; not a checkpoint
architecture).

A checkpoint is a ``torch.save`` of a plain dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "aimc-checkpoint", "version": 1,
     "arch": "mlp", "kwargs": {"in_features": 784, "hidden": [256, 128], "n_classes": 10},
     "state_dict": {name: tensor, ...},
     "meta": {"dataset": ..., "accuracy": ..., "seed": ..., "date": ..., ...}}

so a model is rebuilt from the architecture name and its keyword arguments, never from pickled classes.

This module imports torch; import it only where torch is needed.
"""

from __future__ import annotations

import math
import numbers
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = [
    "ARCHITECTURES", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "DEFAULT_CHECKPOINT",
    "bert", "build", "cnn", "evaluate", "resnet", "load_checkpoint", "load_default", "mlp", "save_checkpoint", "train_digital",
]

CHECKPOINT_FORMAT = "aimc-checkpoint"
CHECKPOINT_VERSION = 1

#: The default model of ``aimc deploy``: MLP 784-256-128-10 trained on mnist5k by
#: ``data/make_default_model.py`` (see ``data/README.md``). Lives in the source tree, not in wheels.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "mnist5k_mlp.pt"

_ARCH_ATTR = "_aimc_arch"


MAX_DIM = 2**24  # one layer dimension (features, channels, classes) at most


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {str(value)[:40]}")
    if value > MAX_DIM:
        raise ValueError(f"{name} = {str(value)[:40]} is larger than {MAX_DIM}")
    return int(value)


def _int_tuple(name: str, value: Any, allow_empty: bool = True) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if len(items) > 1024:
        raise ValueError(f"{name} has {len(items)} entries; at most 1024")
    if not items and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(_positive_int(f"{name}[{i}]", v) for i, v in enumerate(items))


def _tag(model: nn.Module, arch: str, kwargs: dict) -> nn.Module:
    setattr(model, _ARCH_ATTR, {"name": arch, "kwargs": kwargs})
    return model


# ---------------------------------------------------------------------------------------------------------
# architectures

def mlp(in_features: int = 784, hidden: tuple[int, ...] = (256, 128), n_classes: int = 10) -> nn.Sequential:
    """Fully connected net ``in_features -> hidden[0] -> ... -> n_classes`` with ReLU between layers.

    Layers are named ``fc1, relu1, fc2, relu2, ..., fc<k>`` (no activation after the last).
    """
    in_features = _positive_int("in_features", in_features)
    hidden = _int_tuple("hidden", hidden)
    n_classes = _positive_int("n_classes", n_classes)
    layers: dict[str, nn.Module] = {}
    sizes = (in_features, *hidden, n_classes)
    for i in range(len(sizes) - 1):
        layers[f"fc{i + 1}"] = nn.Linear(sizes[i], sizes[i + 1])
        if i < len(sizes) - 2:
            layers[f"relu{i + 1}"] = nn.ReLU()
    model = nn.Sequential(_ordered(layers))
    return _tag(model, "mlp", {"in_features": in_features, "hidden": list(hidden), "n_classes": n_classes})


def cnn(in_shape: tuple[int, int, int] = (1, 28, 28), channels: tuple[int, ...] = (8, 16), hidden: int = 64,
        n_classes: int = 10, kernel_size: int = 5) -> nn.Sequential:
    """Small LeNet-like CNN taking flat inputs ``(batch, C*H*W)``.

    ``unflatten -> [conv k×k (same padding) -> ReLU -> maxpool 2]`` per entry of ``channels``
    ``-> flatten -> fc(hidden) -> ReLU -> fc(n_classes)``. With the defaults on 28×28 inputs:
    conv 1→8 (28×28) → pool 14×14 → conv 8→16 → pool 7×7 → 784 → 64 → 10; about 55 k parameters,
    a few seconds per mnist5k epoch on 2 cores. Works for 8×8 digits too (``in_shape=(1, 8, 8)``).
    """
    in_shape = _int_tuple("in_shape", in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W), got {in_shape!r}")
    channels = _int_tuple("channels", channels, allow_empty=False)
    hidden = _positive_int("hidden", hidden)
    n_classes = _positive_int("n_classes", n_classes)
    kernel_size = _positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
    c, h, w = in_shape
    if h >> len(channels) < 1 or w >> len(channels) < 1:
        raise ValueError(f"in_shape {in_shape} is too small for {len(channels)} conv+pool stages "
                         f"(each halves H and W)")
    layers: dict[str, nn.Module] = {"unflatten": nn.Unflatten(1, in_shape)}
    for i, out_c in enumerate(channels):
        layers[f"conv{i + 1}"] = nn.Conv2d(c, out_c, kernel_size, padding=kernel_size // 2)
        layers[f"relu_c{i + 1}"] = nn.ReLU()
        layers[f"pool{i + 1}"] = nn.MaxPool2d(2)
        c, h, w = out_c, h // 2, w // 2
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(c * h * w, hidden)
    layers["relu_f1"] = nn.ReLU()
    layers["fc2"] = nn.Linear(hidden, n_classes)
    model = nn.Sequential(_ordered(layers))
    return _tag(model, "cnn", {"in_shape": list(in_shape), "channels": list(channels), "hidden": hidden,
                               "n_classes": n_classes, "kernel_size": kernel_size})


class _BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a 1x1 strided conv + BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., CVPR 2016, §4.2): conv3x3(width), three stages of ``n`` basic blocks with
    width, 2·width, 4·width channels (stride 2 at the start of stages 2 and 3, 1x1 projection shortcuts),
    global average pooling, fc to ``n_classes``. Depth = 6n + 2. Takes ``(B, C*H*W)`` or ``(B, C, H, W)``."""

    def __init__(self, depth: int, in_shape: tuple[int, int, int], n_classes: int, width: int):
        super().__init__()
        self.in_shape = tuple(in_shape)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                blocks.append(_BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.reshape(x.shape[0], *self.in_shape)
        elif x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"ResNet: input must be (batch, {'*'.join(map(str, self.in_shape))}) or "
                             f"(batch, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        y = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(self.layers(y)), 1))


def resnet(depth: int = 32, in_shape: tuple[int, int, int] = (3, 32, 32), n_classes: int = 10,
           width: int = 16) -> ResNet:
    """CIFAR ResNet-``depth`` (``depth`` = 6n + 2: 20, 32, 44, 56, 110; He et al. 2016). ResNet-32 on 32x32x3
    with width 16: 31 convolutions on the main path, 2 projection shortcuts and the fc, 464,432 weights
    (kernels and fc matrix; 466,906 parameters with biases and batch norm)."""
    depth = _positive_int("depth", depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    in_shape = _int_tuple("in_shape", in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W), got {in_shape!r}")
    if in_shape[1] < 4 or in_shape[2] < 4:
        raise ValueError(f"in_shape {in_shape} is too small: H and W must be >= 4 (two stride-2 stages)")
    n_classes = _positive_int("n_classes", n_classes)
    width = _positive_int("width", width)
    model = ResNet(depth, in_shape, n_classes, width)
    return _tag(model, "resnet", {"depth": depth, "in_shape": list(in_shape), "n_classes": n_classes,
                                  "width": width})


class _Logits(nn.Module):
    """A ``transformers`` classification model returning its logits tensor (so ``evaluate`` and plain
    training loops work): ``forward(input_ids)`` -> ``(batch, num_labels)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def bert(num_labels: int = 2, **config) -> nn.Module:
    """A BERT encoder with a sequence-classification head, random weights (``transformers``:
    ``BertForSequenceClassification(BertConfig(num_labels=..., **config))``; nothing is downloaded).

    The defaults of ``BertConfig`` are BERT-base (Devlin et al. 2019): 12 layers, hidden 768, 12 heads,
    intermediate 3072, vocabulary 30522: 84.9 M weights in the encoder's linear layers, 0.6 M in the
    pooler, 23.8 M in the embeddings (109.5 M parameters in all). Pass e.g. ``hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128`` for a tiny model of the same architecture. The model takes token ids
    ``(batch, seq)`` (int64) and returns logits ``(batch, num_labels)``. Its attention uses ``nn.Linear``
    for q, k, v and output (converted by ``convert_to_analog``); embeddings and LayerNorm stay digital.
    Dropout follows the config (call ``eval()`` for deterministic outputs).
    """
    try:
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError as e:
        raise ImportError(f"aimc.zoo.bert needs the transformers package: pip install 'aimc[transformers]' "
                          f"({e})") from None
    num_labels = _positive_int("num_labels", num_labels)
    try:
        cfg = BertConfig(num_labels=num_labels, **config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bert: bad BertConfig arguments: {e}") from None
    model = _Logits(BertForSequenceClassification(cfg))
    return model


def _ordered(layers: dict[str, nn.Module]):
    from collections import OrderedDict
    return OrderedDict(layers)


#: name -> builder; a checkpoint's ``arch`` must be one of these.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn, "resnet": resnet}


def build(arch: str, **kwargs) -> nn.Module:
    """Build a zoo architecture by name (``"mlp"``, ``"cnn"``, ``"resnet"``)."""
    try:
        builder = ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}") from None
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for architecture {arch!r}: {exc}") from None


#: The largest model a checkpoint may describe (parameters): 2**28 float32 values = 1 GiB.
MAX_PARAMETERS = 2**28


def parameter_count(arch: str, kwargs: dict, where: str = "checkpoint") -> int:
    """Parameters of ``build(arch, **kwargs)``, counted on torch's meta device (nothing allocated);
    an error naming ``where`` if the arguments are invalid or the model exceeds ``MAX_PARAMETERS``."""
    from ..core.config import ConfigError, check_depth
    try:
        check_depth(kwargs, f"{where}: kwargs", limit=4)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    try:
        with torch.device("meta"):
            model = build(arch, **kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except (RuntimeError, OverflowError, TypeError, MemoryError) as e:
        raise ValueError(f"{where}: architecture {arch!r} with {str(kwargs)[:200]} cannot be built: "
                         f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}") from None
    n = sum(int(p.numel()) for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise ValueError(f"{where}: architecture {arch!r} would have {n} parameters, more than the "
                         f"{MAX_PARAMETERS} aimc loads from a checkpoint")
    return n


# ---------------------------------------------------------------------------------------------------------
# training and evaluation

def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _as_tensors(x, y, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
    y = torch.as_tensor(np.asarray(y, dtype=np.int64) if isinstance(y, np.ndarray) else y)
    if x.ndim < 2:
        raise ValueError(f"{name}: x must have a batch dimension, got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0]} samples but y has shape {tuple(y.shape)}")
    if x.dtype in (torch.int64, torch.int32):   # token ids (zoo.bert): passed on as int64
        x = x.long()
    elif not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point (or int64 token ids), got {x.dtype}")
    elif x.dtype != torch.float32:
        x = x.float()
    if y.dtype != torch.int64:
        y = y.long()
    return x, y


@torch.no_grad()
def evaluate(model: nn.Module, x, y, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (numpy arrays or tensors; x float, or int64 token ids), in
    eval mode; returns a float.

    The model's train/eval mode is restored afterwards.
    """
    batch_size = _positive_int("batch_size", batch_size)
    x, y = _as_tensors(x, y, "evaluate")
    if len(y) == 0:
        raise ValueError("evaluate: empty data")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size].to(device))
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"evaluate: the model's outputs hold NaN or inf (samples {i}.."
                                         f"{min(i + batch_size, len(y)) - 1}); no accuracy is reported for them "
                                         f"(weights or inputs out of range?)")
            correct += int((logits.argmax(dim=1).cpu() == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


def train_digital(model: nn.Module, dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
                  seed: int = 0, *, optimizer: str = "adam", weight_decay: float = 0.0,
                  verbose: bool = False) -> float:
    """Train ``model`` in place on ``dataset`` (an :class:`aimc.datasets.Dataset`) with cross-entropy.

    Deterministic for a given initial model and ``seed``: the mini-batch order of epoch ``e`` is
    ``numpy.random.Generator(Philox(seed)).permutation`` drawn once per epoch, and torch's CPU RNG is
    seeded with ``seed`` inside ``torch.random.fork_rng`` (the caller's global torch RNG is left untouched).
    The last partial batch is kept.

    Args:
        optimizer: ``"adam"`` (torch.optim.Adam) or ``"sgd"`` (plain SGD, momentum 0.9).

    Returns:
        Test accuracy (``dataset.x_test``, ``dataset.y_test``) after training, as a float in [0, 1].
    """
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(weight_decay, numbers.Real) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_digital: model has no trainable parameters")
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: adam, sgd")
    x, y = _as_tensors(dataset.x_train, dataset.y_train, "train_digital")
    device = _device_of(model)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = np.random.Generator(np.random.Philox(int(seed)))
    n = len(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model.train()
        for epoch in range(epochs):
            perm = torch.from_numpy(order_rng.permutation(n))
            total = 0.0
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}  train loss {total / n:.4f}", flush=True)
    model.eval()
    return evaluate(model, dataset.x_test, dataset.y_test)


# ---------------------------------------------------------------------------------------------------------
# checkpoints

def _plain(value: Any, where: str) -> Any:
    """``value`` as plain Python types that ``torch.load(weights_only=True)`` accepts."""
    # exact builtin types only: subclasses (torch.__version__ is a str subclass, IntEnum, ...) are pickled
    # as their class, which weights_only loading refuses
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint "
                    f"(use str, int, float, bool, None, list, dict)")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, *,
                    overwrite: bool = False, arch: tuple[str, dict] | None = None) -> Path:
    """Write ``model`` to ``path`` as an aimc checkpoint (format in the module docstring).

    The architecture comes from the tag the zoo builders put on the model, or from ``arch=(name, kwargs)``.
    ``meta`` (plain JSON-like values) is stored as given; ``"date"`` (UTC, ISO 8601) and ``"torch"``
    (version) are added when absent. The write is atomic: a temporary file in the same folder, then
    ``os.replace``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: the model carries no architecture tag and ``arch`` is not given, or the architecture is
            unknown.
    """
    path = Path(path)
    if arch is None:
        tag = getattr(model, _ARCH_ATTR, None)
        if tag is None:
            raise ValueError("save_checkpoint: the model was not built by aimc.zoo; pass arch=(name, kwargs) "
                             f"with name in {list(ARCHITECTURES)}")
        name, kwargs = tag["name"], tag["kwargs"]
    else:
        name, kwargs = arch
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    meta = _plain(dict(meta or {}), "meta")
    meta.setdefault("date", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("torch", str(torch.__version__))
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": name,
               "kwargs": _plain(dict(kwargs), "kwargs"), "state_dict": state, "meta": meta}
    if path.is_dir():
        raise IsADirectoryError(f"save_checkpoint: {str(path)!r} is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_checkpoint: folder {str(path.parent)!r} does not exist")
    from ..core._io import atomic_write
    atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=overwrite)  # exclusive unless overwrite
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict]:
    """Rebuild the model stored at ``path``; returns ``(model, meta)`` with the model in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an aimc checkpoint (corrupt, truncated, another format), a newer format version,
            an unknown architecture, or weights that do not fit the architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is not a regular file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError / ... for bad files
        raise ValueError(f"{path}: not a readable aimc checkpoint (corrupt, truncated or another format): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an aimc checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
                         "plain state dicts are not accepted, use save_checkpoint")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: bad checkpoint version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {version} is newer than this aimc reads "
                         f"({CHECKPOINT_VERSION}); upgrade aimc")
    missing = [k for k in ("arch", "kwargs", "state_dict", "meta") if k not in payload]
    if missing:
        raise ValueError(f"{path}: corrupt aimc checkpoint, missing {', '.join(missing)}")
    name = payload["arch"]
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {str(name)[:40]!r}; known: {', '.join(ARCHITECTURES)}")
    kwargs, state = payload["kwargs"], payload["state_dict"]
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"{path}: corrupt aimc checkpoint: kwargs must be a dict of named arguments")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: corrupt aimc checkpoint: state_dict must map names to tensors")
    n = parameter_count(name, kwargs, where=str(path))
    stored = sum(int(v.numel()) for v in state.values())
    if n > stored:  # before building: a 1 KB file must not make us allocate gigabytes
        raise ValueError(f"{path}: weights do not fit architecture {name!r} {kwargs}: it has {n} parameters but "
                         f"the checkpoint stores only {stored} values (corrupt or forged checkpoint)")
    model = build(name, **kwargs)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit architecture {name!r} {payload['kwargs']}: {exc}") from exc
    model.to(map_location)
    model.eval()
    return model, payload["meta"]


def load_default() -> tuple[nn.Module, dict]:
    """Load the default model (:data:`DEFAULT_CHECKPOINT`); ``(model, meta)``."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(f"default model {str(DEFAULT_CHECKPOINT)!r} not found (it ships in the source "
                                "tree's data/ folder; rebuild it with: python data/make_default_model.py)")
    return load_checkpoint(DEFAULT_CHECKPOINT)
