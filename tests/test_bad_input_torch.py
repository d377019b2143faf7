"""Bad input at the torch-side entry points: state dicts, checkpoints, `aimc train` / `aimc deploy` options."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aimc  # noqa: E402
from aimc import zoo  # noqa: E402
from aimc.cli import main  # noqa: E402
from aimc.config import InferenceConfig, MappingConfig, TileConfig  # noqa: E402
from aimc.convert import convert_to_analog, drift, program  # noqa: E402

CFG = TileConfig(inference=InferenceConfig(), mapping=MappingConfig(max_in=5))


def analog(seed=1):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    return convert_to_analog(net, CFG, seed=seed).eval()


def programmed_state():
    a = analog()
    program(a)
    drift(a, "1h")
    return a, a.state_dict()


# ------------------------------------------------------------------------------------------- state dicts

def _edit_extra(sd, fn):
    sd = dict(sd)
    key = next(k for k in sd if k.endswith("_extra_state"))
    state = dict(sd[key])
    fn(state)
    sd[key] = state
    return sd


def test_drift_takes_seconds_or_strings_through_one_parser():
    a = analog()
    program(a)
    drift(a, "10")
    assert a[0].tiles.time == 10.0
    drift(a, "1h")
    assert a[0].tiles.time == 3600.0
    with pytest.raises(ValueError, match="1000 years"):
        drift(a, 1e308)
    with pytest.raises(ValueError, match="1000 years"):
        drift(a, "1e300y")
    assert a[0].tiles.time == 3600.0


def test_state_dict_naming_a_card_path_is_refused_without_opening_it(tmp_path):
    a, sd = programmed_state()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "evil.toml")

    def evil(state):
        cfg = json.loads(state["config"])
        cfg["inference"]["device"] = str(tmp_path / "evil.toml")
        state["config"] = json.dumps(cfg)
    b = analog(seed=2)
    before = b[0].tiles.read_weights()
    with pytest.raises(ValueError, match="another TileConfig.*inference.device"):
        b.load_state_dict(_edit_extra(sd, evil))
    np.testing.assert_array_equal(b[0].tiles.read_weights(), before)


@pytest.mark.parametrize("case, msg", [
    ("nan", "contains NaN"), ("shape", "has shape"), ("clock", "clock"), ("missing", "missing"),
])
def test_tampered_state_dicts_are_refused_and_change_nothing(case, msg):
    a, sd = programmed_state()

    def edit(state):
        tiles = [dict(t) for t in state["tiles"]]
        t = tiles[-1]                                   # the LAST tile is bad: the first must not be restored
        arrays = dict(t["arrays"])
        if case == "nan":
            g = arrays["G"].clone()
            g.view(-1)[0] = float("nan")
            arrays["G"] = g
        elif case == "shape":
            arrays["G"] = arrays["G"][:, :1]
        elif case == "missing":
            del arrays["nu"]
        else:
            meta = json.loads(t["meta"])
            meta["time"] = -1.0
            t["meta"] = json.dumps(meta)
        t["arrays"] = arrays
        tiles[-1] = t
        state["tiles"] = tiles
    b = analog(seed=2)
    program(b)
    before = [t.read_weights().copy() for t in b[0].tiles.all_tiles()]
    with pytest.raises(ValueError, match=msg):
        b.load_state_dict(_edit_extra(sd, edit))
    for t, w in zip(b[0].tiles.all_tiles(), before):
        np.testing.assert_array_equal(t.read_weights(), w)


def test_state_dicts_store_the_resolved_device_parameters(monkeypatch):
    import device_models.cards as cards
    a, sd = programmed_state()
    key = next(k for k in sd if k.endswith("_extra_state"))
    rec = json.loads(sd[key]["device_model"])
    assert rec["family"] == "pcm" and rec["params"]["t0"] == 20.0
    b = analog(seed=2)
    monkeypatch.setattr(cards, "read_card", lambda *a, **k: pytest.fail("a card file was read"))
    b.load_state_dict(sd)
    drift(a, "1d")
    drift(b, "1d")
    np.testing.assert_array_equal(a[0].tiles.read_weights(), b[0].tiles.read_weights())


# ------------------------------------------------------------------------------------------- checkpoints

def _forged(tmp_path, kwargs, state=None):
    p = tmp_path / "forged.pt"
    torch.save({"format": zoo.CHECKPOINT_FORMAT, "version": 1, "arch": "mlp", "kwargs": kwargs,
                "state_dict": state or {}, "meta": {}}, p)
    return p


@pytest.mark.parametrize("kwargs, msg", [
    ({"in_features": 100000, "hidden": [100000, 100000]}, "parameters, more than"),
    ({"in_features": 10**30}, "larger than"),
    ({"hidden": [1] * 5000}, "at most 1024"),
    ({"in_features": 784}, "stores only 0 values"),
    ({"bogus": 1}, "bad arguments"),
])
def test_checkpoints_declaring_huge_models_are_refused_before_building(tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        zoo.load_checkpoint(_forged(tmp_path, kwargs))


def test_overflowing_weights_are_never_reported_as_an_accuracy():
    model = zoo.mlp(4, (3,), 2)
    with torch.no_grad():
        model[0].weight.fill_(3e38)
    x = np.ones((5, 4), np.float32)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        zoo.evaluate(model, x, np.zeros(5, np.int64))


# ------------------------------------------------------------------------------------------- the command line

def test_train_out_is_decided_and_checked_before_training(tmp_path, monkeypatch, capsys):
    from aimc.train import cli as tcli
    called = []
    monkeypatch.setitem(tcli.METHODS, "hwa", "builtins:print")   # training would just print: must not run
    monkeypatch.setattr("builtins.print", lambda *a, **k: called.append(a))
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"my earlier model")
    assert main(["train", "--out", str(existing)]) == 2
    assert main(["train", "--out", str(tmp_path)]) == 2                   # a folder where a file is expected
    monkeypatch.chdir(tmp_path)
    os.makedirs("aimc-results")
    default = tmp_path / "aimc-results" / "train-hwa-mnist5k-mlp.pt"
    default.write_bytes(b"the previous default output")
    assert main(["train"]) == 2                                           # the default is no longer replaced
    assert not [c for c in called if c and not str(c[0]).startswith("aimc train: error")]
    assert existing.read_bytes() == b"my earlier model"
    assert default.read_bytes() == b"the previous default output"


@pytest.mark.parametrize("args, msg", [
    (["--threads", "100000"], "--threads must be an integer in"),
    (["--times", "1s,1e300y"], "1000 years"),
    (["--config", "."], "not a regular file"),
])
def test_cli_deploy_refuses_absurd_options_cleanly(args, msg, tmp_path, capsys):
    assert main(["deploy", "--out", str(tmp_path / "o"), "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert "aimc deploy: error:" in err and msg in err, err


def test_cli_deploy_out_that_cannot_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["deploy", "--out", str(f / "sub"), "--no-progress", "--threads", "1", "--repeats", "1",
                 "--times", "1s"]) == 2
    assert "aimc deploy: error:" in capsys.readouterr().err
