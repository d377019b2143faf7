"""Deployment over time: time parsing, evaluate_over_time, `aimc deploy` files and errors, `aimc devices`."""
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from aimc import datasets, zoo  # noqa: E402
from aimc.cli import main  # noqa: E402
from aimc.deploy import (DeployResults, calibration_set, deploy_config, evaluate_over_time, format_time, parse_time,  # noqa: E402
                         parse_times)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory, digits):
    model = zoo.mlp(64, (32,), 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and robust on a loaded machine
    try:
        acc = zoo.train_digital(model, digits, epochs=10, lr=3e-3, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.85
    path = tmp_path_factory.mktemp("ckpt") / "digits_mlp.pt"
    zoo.save_checkpoint(model, path, {"dataset": "digits", "accuracy": acc})
    return path


def test_parse_time():
    assert parse_time("1s") == 1.0 and parse_time("1h") == 3600.0 and parse_time("1d") == 86400.0
    assert parse_time("10y") == pytest.approx(10 * 365.25 * 86400)
    assert parse_time("30min") == 1800.0 and parse_time("2.5d") == 216000.0 and parse_time(60) == 60.0
    assert parse_time("0") == 0.0
    for bad, what in (("1 fortnight", "unknown unit"), ("-1h", "bad time"), ("h", "bad time"), ("", "bad time")):
        with pytest.raises(ValueError, match=what):
            parse_time(bad)
    assert parse_times("1s,1h,1d,1y,10y")[1] == ["1s", "1h", "1d", "1y", "10y"]
    with pytest.raises(ValueError, match="1h is not later than 1d"):
        parse_times("1d,1h")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_times("1s,,1h")
    assert format_time(3600.0) == "1h" and format_time(365.25 * 86400 * 10) == "10y" and format_time(90) == "1.5min"


def test_evaluate_over_time_api(digits_ckpt, digits):
    model, _ = zoo.load_checkpoint(digits_ckpt)
    res = evaluate_over_time(model, digits, deploy_config("pcm-joshi2020"), ["1s", "1d"], repeats=2, seed=4,
                             keep_last=True)
    assert isinstance(res, DeployResults)
    assert res.times == [1.0, 86400.0] and res.seeds == [4, 5] and res.n_test == len(digits.y_test)
    assert len(res.accuracy) == 2 and all(len(a) == 2 for a in res.accuracy)
    for m in res.mean:
        assert res.digital_accuracy - 0.15 < m <= 1.0  # programmed PCM chips stay close to digital
    assert res.last_model is not None and all(mod.tiles.time == 86400.0 for mod in
                                              [m for m in res.last_model.modules() if hasattr(m, "tiles")])
    d = res.to_dict()
    assert d["config"]["inference"]["device"] == "pcm-joshi2020" and "| 1d |" in res.table()
    # seeds decide the chips: the same call gives the same numbers
    res2 = evaluate_over_time(model, (digits.x_test, digits.y_test), deploy_config("pcm-joshi2020"), ["1s", "1d"],
                              repeats=2, seed=4, calibration=calibration_set(digits, None, 1000, digits.x_test)[0])
    assert res2.accuracy == res.accuracy
    # an (x, y) pair has no training split to calibrate on
    with pytest.raises(ValueError, match="training split"):
        evaluate_over_time(model, (digits.x_test, digits.y_test), deploy_config("pcm-joshi2020"), ["1s"], 1)
    with pytest.raises(ValueError, match="no inference section"):
        evaluate_over_time(model, digits, "default", ["1s"], 1)
    with pytest.raises(ValueError, match="repeats"):
        evaluate_over_time(model, digits, None, ["1s"], 0)


def test_cli_deploy_writes_files_and_never_overwrites(digits_ckpt, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["deploy", "--model", str(digits_ckpt), "--data", "digits", "--times", "1s,1d", "--repeats", "2",
            "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| digital |" in text and "| 1d |" in text and "run-001" in text
    run1 = out / "run-001"
    assert sorted(p.name for p in run1.iterdir()) == ["accuracy.png", "chip.h5", "results.json"]
    res = json.loads((run1 / "results.json").read_text())
    assert res["time_labels"] == ["1s", "1d"] and res["repeats"] == 2
    assert all(0.5 < a <= 1 for row in res["accuracy"] for a in row)
    assert (run1 / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {p.name: p.stat().st_mtime_ns for p in run1.iterdir()}
    # a second run goes to a fresh folder; the first one is left as it was
    assert main(argv + ["--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["files"]["results"].endswith("run-002/results.json")
    assert {p.name: p.stat().st_mtime_ns for p in run1.iterdir()} == before
    # the chip image holds the last chip at the last time and reloads into a converted model
    import aimc
    from aimc.convert import convert_to_analog
    model, _ = zoo.load_checkpoint(digits_ckpt)
    chip = convert_to_analog(model, aimc.TileConfig.from_dict(res["config"]), seed=res["seeds"][-1])
    aimc.load_chip(run1 / "chip.h5", chip)
    assert chip.fc1.tiles.time == 86400.0


@pytest.mark.parametrize("args,msg", [
    (["--device", "pcm-nonexistent"], "unknown device card 'pcm-nonexistent'"),
    (["--device", "reram-es"], "pulsed"),
    (["--times", "1s,1fortnight"], "unknown unit"),
    (["--times", "1d,1h"], "not later than"),
    (["--repeats", "0"], "--repeats"),
    (["--data", "nowhere"], "bad --data 'nowhere'"),
    (["--data", "digits"], "does not accept the data"),  # the default model takes 784 inputs
    (["--model", "/nonexistent/model.pt"], "no checkpoint file"),
])
def test_cli_deploy_bad_input(args, msg, tmp_path, capsys):
    assert main(["deploy", "--out", str(tmp_path / "o"), "--no-progress", "--threads", "1"] + args) == 2
    err = capsys.readouterr().err
    assert "aimc deploy: error:" in err and msg in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.json"))


def test_cli_devices(tmp_path, capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "pcm-joshi2020" in out and "reram-es" in out
    png = tmp_path / "pcm.png"
    assert main(["device", "show", "pcm-joshi2020", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "1.0554" in out and png.read_bytes()[:4] == b"\x89PNG"  # sigma_prog at g_max (physics.md §9)
    assert main(["device", "show", "pcm-joshi2020", "--plot", str(png)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["device", "show", "no-such-card"]) == 2
    assert "unknown device card 'no-such-card'" in capsys.readouterr().err
    assert main(["device", "show", "reram-sb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "pulsed"


def test_cli_deploy_on_an_idx_folder(digits_ckpt, digits, tmp_path, capsys):
    import numpy as np
    folder = tmp_path / "idx"
    folder.mkdir()
    for split in ("train", "test"):
        x, y = getattr(digits, f"x_{split}"), getattr(digits, f"y_{split}")
        stem = "train" if split == "train" else "t10k"
        datasets.write_idx(folder / f"{stem}-images-idx3-ubyte",
                           np.rint(x.reshape(-1, 8, 8) * 255).astype(np.uint8))
        datasets.write_idx(folder / f"{stem}-labels-idx1-ubyte", y.astype(np.uint8))
    assert main(["deploy", "--model", str(digits_ckpt), "--data", str(folder), "--times", "1h", "--repeats", "1",
                 "--no-files", "--json", "--threads", "1", "--device", "hermes-2dev", "--compensation", "per_column"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_test"] == len(digits.y_test) and res["files"] == {}
    assert res["config"]["inference"] == {**res["config"]["inference"], "device": "hermes-2dev",
                                          "compensation": "per_column"}
    assert 0.5 < res["accuracy"][0][0] <= 1
