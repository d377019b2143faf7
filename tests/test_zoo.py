"""aimc.zoo: reference models, deterministic digital training, checkpoints, the shipped default model."""

import pytest

torch = pytest.importorskip("torch")

import copy  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from aimc import datasets, zoo  # noqa: E402

ALLOWED = (nn.Sequential, nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Unflatten)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return datasets.load("digits")


def _small_mlp(seed=0):
    torch.manual_seed(seed)
    return zoo.mlp(64, (32,), 10)


# ------------------------------------------------------------------------------------------------------
# architectures

def test_mlp_shapes():
    m = zoo.mlp()
    assert m(torch.zeros(5, 784)).shape == (5, 10)
    lin = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(784, 256), (256, 128), (128, 10)]
    assert sum(p.numel() for p in m.parameters()) == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert all(isinstance(mod, ALLOWED) for mod in m.modules())
    assert isinstance(m[-1], nn.Linear)  # logits, no final activation
    assert zoo.mlp(64, (), 3)(torch.zeros(2, 64)).shape == (2, 3)  # plain linear classifier


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8), (3, 12, 10)])
def test_cnn_shapes(in_shape):
    m = zoo.cnn(in_shape=in_shape)
    n = int(np.prod(in_shape))
    assert m(torch.zeros(4, n)).shape == (4, 10)
    assert all(isinstance(mod, ALLOWED) for mod in m.modules())
    assert sum(isinstance(mod, nn.Conv2d) for mod in m.modules()) == 2


@pytest.mark.parametrize("call, match", [
    (lambda: zoo.mlp(0), "in_features"),
    (lambda: zoo.mlp(784, (256, -1)), r"hidden\[1\]"),
    (lambda: zoo.mlp(784, (256,), 1.5), "n_classes"),
    (lambda: zoo.cnn(in_shape=(28, 28)), r"\(C, H, W\)"),
    (lambda: zoo.cnn(kernel_size=4), "odd"),
    (lambda: zoo.cnn(in_shape=(1, 2, 2), channels=(4, 4)), "too small"),
    (lambda: zoo.build("vgg"), "unknown architecture 'vgg'.*mlp, cnn, resnet"),
    (lambda: zoo.build("mlp", width=3), "bad arguments"),
])
def test_bad_architecture_args(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------------------
# training

def test_training_is_deterministic(digits):
    a = _small_mlp()
    b = copy.deepcopy(a)
    rng_before = torch.get_rng_state()
    acc_a = zoo.train_digital(a, digits, epochs=2, lr=1e-3, batch_size=32, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG untouched
    acc_b = zoo.train_digital(b, digits, epochs=2, lr=1e-3, batch_size=32, seed=7)
    assert acc_a == acc_b
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = _small_mlp()
    zoo.train_digital(c, digits, epochs=2, lr=1e-3, batch_size=32, seed=8)
    assert not torch.equal(c[0].weight, a[0].weight)  # the seed matters (batch order)


def test_training_learns(digits):
    m = _small_mlp()
    chance = zoo.evaluate(m, digits.x_test, digits.y_test)
    acc = zoo.train_digital(m, digits, epochs=10, lr=3e-3, batch_size=32, seed=0)
    assert chance < 0.3 and acc > 0.9
    assert not m.training
    torch.manual_seed(0)
    cnn = zoo.cnn(in_shape=digits.shape)
    assert zoo.train_digital(cnn, digits, epochs=4, lr=0.05, batch_size=32, optimizer="sgd") > 0.8


def test_train_bad_args(digits):
    m = _small_mlp()
    for kw, match in [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"),
                      ({"batch_size": 0}, "batch_size"), ({"seed": -2}, "seed"),
                      ({"optimizer": "lbfgs"}, "unknown optimizer"), ({"weight_decay": -1.0}, "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            zoo.train_digital(m, digits, **kw)


def test_evaluate(digits):
    m = _small_mlp()
    m.train()
    acc_np = zoo.evaluate(m, digits.x_test, digits.y_test, batch_size=50)
    acc_t = zoo.evaluate(m, torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test))
    assert acc_np == acc_t and m.training  # mode restored
    pred = m(torch.from_numpy(digits.x_test)).argmax(1).numpy()
    assert acc_np == pytest.approx(np.mean(pred == digits.y_test))
    with pytest.raises(ValueError, match="samples"):
        zoo.evaluate(m, digits.x_test, digits.y_test[:-1])


# ------------------------------------------------------------------------------------------------------
# checkpoints

@pytest.mark.parametrize("build", [lambda: zoo.mlp(64, (16, 8), 10), lambda: zoo.cnn(in_shape=(1, 8, 8), hidden=12)])
def test_checkpoint_round_trip(tmp_path, build):
    torch.manual_seed(1)
    m = build()
    path = tmp_path / "m.pt"
    meta = {"dataset": "digits", "accuracy": np.float64(0.5), "seed": 3, "tags": ("a", 1)}
    assert zoo.save_checkpoint(m, path, meta) == path
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    raw = torch.load(path, weights_only=True)  # plain dict, no pickled classes
    assert raw["format"] == "aimc-checkpoint" and raw["version"] == 1
    m2, meta2 = zoo.load_checkpoint(path)
    assert type(m2) is type(m) and not m2.training
    assert meta2["dataset"] == "digits" and meta2["accuracy"] == 0.5 and meta2["seed"] == 3
    assert meta2["tags"] == ["a", 1] and "date" in meta2 and meta2["torch"] == str(torch.__version__)
    assert m.state_dict().keys() == m2.state_dict().keys()
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    x = torch.rand(3, 64)
    assert torch.equal(m.eval()(x), m2(x))
    assert [p for p in os.listdir(tmp_path)] == ["m.pt"]  # no temp file left behind


def test_checkpoint_refuses_overwrite(tmp_path):
    path = tmp_path / "m.pt"
    a, b = _small_mlp(0), _small_mlp(1)
    zoo.save_checkpoint(a, path, {"which": "a"})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.save_checkpoint(b, path, {"which": "b"})
    assert zoo.load_checkpoint(path)[1]["which"] == "a"
    zoo.save_checkpoint(b, path, {"which": "b"}, overwrite=True)
    m, meta = zoo.load_checkpoint(path)
    assert meta["which"] == "b" and torch.equal(m[0].weight, b[0].weight)
    assert os.listdir(tmp_path) == ["m.pt"]


def test_save_errors(tmp_path):
    plain = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match="not built by aimc.zoo"):
        zoo.save_checkpoint(plain, tmp_path / "p.pt")
    # an untagged model with the right structure can be saved with arch=
    zoo.save_checkpoint(nn.Sequential(), tmp_path / "q.pt", arch=("mlp", {"in_features": 4, "hidden": [],
                                                                          "n_classes": 2}))
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.save_checkpoint(plain, tmp_path / "p.pt", arch=("vgg", {}))
    with pytest.raises(TypeError, match=r"meta\['f'\]"):
        zoo.save_checkpoint(_small_mlp(), tmp_path / "p.pt", {"f": object()})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.save_checkpoint(_small_mlp(), tmp_path / "no" / "p.pt")
    assert not (tmp_path / "p.pt").exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        zoo.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable aimc checkpoint"):
        zoo.load_checkpoint(tmp_path / "junk.pt")
    good = tmp_path / "good.pt"
    zoo.save_checkpoint(_small_mlp(), good)
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable aimc checkpoint"):
        zoo.load_checkpoint(tmp_path / "trunc.pt")
    torch.save(_small_mlp().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="not an aimc checkpoint"):
        zoo.load_checkpoint(tmp_path / "sd.pt")

    raw = torch.load(good, weights_only=True)
    for change, match in [({"arch": "transformer"}, "unknown architecture 'transformer'"),
                          ({"version": 99}, "newer"),
                          ({"kwargs": {"in_features": 64, "hidden": [33], "n_classes": 10}}, "do not fit")]:
        torch.save({**raw, **change}, tmp_path / "x.pt")
        with pytest.raises(ValueError, match=match):
            zoo.load_checkpoint(tmp_path / "x.pt")
    torch.save({k: v for k, v in raw.items() if k != "state_dict"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="missing state_dict"):
        zoo.load_checkpoint(tmp_path / "x.pt")


# ------------------------------------------------------------------------------------------------------
# the shipped default model

def test_shipped_checkpoint_reproduces_accuracy():
    pytest.importorskip("mlxtend")
    path = zoo.DEFAULT_CHECKPOINT
    assert path.is_file(), f"{path} missing: python data/make_default_model.py"
    assert path.stat().st_size < 2_000_000
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "mlp" and raw["kwargs"] == {"in_features": 784, "hidden": [256, 128], "n_classes": 10}
    assert all(v.dtype == torch.float32 for v in raw["state_dict"].values())
    model, meta = zoo.load_default()
    assert meta["dataset"] == "mnist5k" and meta["seed"] == 0
    ds = datasets.load("mnist5k")
    acc = zoo.evaluate(model, ds.x_test, ds.y_test)
    # the same split and weights: identical up to a near-tie flipped by a different BLAS (1 image in 1000)
    assert abs(acc - meta["accuracy"]) <= 0.0015
    assert meta["accuracy"] == meta["n_correct"] / 1000 and meta["accuracy"] > 0.93
