"""In-situ training algorithms (aimc.insitu) and the AnalogSGD optimizer (aimc.optim).

Hand-computed two-step examples of the Tiki-Taka (v1), buffered TTv2 and mixed-precision bookkeeping with
exact (floating-point) updates, noise-free devices and perfect reads; the config API; counters; AnalogSGD on a
tiny regression (Linear and Conv2d); deployment of an in-situ-trained layer with program().
"""
from __future__ import annotations

import numpy as np
import pytest

import aimc
import device_models as dm
from aimc.config import IOConfig, MappingConfig
from aimc.insitu import InsituArray, InsituConfig, InsituTile, UpdateConfig, insitu
from aimc.tile import Tile, TileArray
from device_models.pulsed import ConstantStep, SoftBounds

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_numba_thread():
    """Tiny layers: one numba thread (torch's and numba's OpenMP pools fighting over 2 shared cores cost
    milliseconds per parallel region; results do not depend on the thread count)."""
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)

QUIET = dict(dw_min_std=0.0, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0, w_max=1.0,
             w_min=-1.0)
W0 = np.array([[0.1, 0.2, 0.3], [-0.1, 0.0, 0.4]], np.float32)
X1, D1 = np.array([[1.0, 0.0, 2.0]], np.float32), np.array([[0.5, -1.0]], np.float32)
X2, D2 = np.array([[0.0, 1.0, 0.0]], np.float32), np.array([[1.0, 1.0]], np.float32)
EXACT = UpdateConfig(pulse_type="none")


def _tile(cfg, W=W0):
    t = Tile(2, 3, cfg, seed=0)
    t.set_weights(W)
    return InsituTile(t, cfg, seed=0, tile_id="t")


# ------------------------------------------------------------------------------------------- config

def test_one_line_config_and_json_round_trip():
    cfg = aimc.insitu("tiki-taka", device="reram-es")
    assert isinstance(cfg, InsituConfig) and isinstance(cfg, aimc.TileConfig)
    assert cfg.algorithm == "tiki-taka" and cfg.device == "reram-es" and cfg.backward_ideal is False
    assert InsituConfig.from_json(cfg.to_json()) == cfg
    c = insitu("ttv2", device="reram-sb", inference=aimc.InferenceConfig())   # with deployment physics
    assert InsituConfig.from_json(c.to_json()) == c
    for alias, name in (("tt", "tiki-taka"), ("ttv3", "c-ttv2"), ("mp", "mixed-precision"), ("SGD", "sgd")):
        assert insitu(alias).algorithm == name
    c = insitu("c-ttv2", device="reram-sb")
    assert c.in_chop_prob == 0.1 and c.auto_scale and c.fast_lr == 0.1 and c.update.desired_bl == 5
    assert insitu("ttv2").in_chop_prob == 0.0
    dev = SoftBounds(dw_min=0.003, up_down=0.1)
    c = insitu("sgd", device=dev)
    assert InsituConfig.from_json(c.to_json()) == c
    assert c.device_model() == dev
    with pytest.raises(aimc.ConfigError, match="unknown in-situ algorithm"):
        insitu("adam")
    with pytest.raises(aimc.ConfigError, match="pulse_type"):
        UpdateConfig(pulse_type="stochastic")
    with pytest.raises(aimc.ConfigError, match="in_chop_prob"):
        insitu("c-ttv2", in_chop_prob=1.5)
    with pytest.raises(ValueError, match="unknown device card"):
        insitu("sgd", device="no-such-device").device_model()
    with pytest.raises(aimc.ConfigError, match="not a pulsed"):
        insitu("sgd", device="pcm-joshi2020").device_model()


# ------------------------------------------------------------------------------------------- bookkeeping

def test_tiki_taka_v1_two_steps_by_hand():
    cfg = insitu("tiki-taka", device=ConstantStep(dw_min=0.1, **QUIET), fast_device=ConstantStep(dw_min=0.01, **QUIET),
                 update=EXACT, transfer_update=EXACT, transfer_forward=IOConfig(is_perfect=True), fast_lr=0.1)
    assert cfg.scale_fast_lr is False                                     # aihwkit 1.1.0: fast LR is absolute
    it = _tile(cfg)
    lr = 0.5
    it.update(X1, D1, lr)
    A1 = np.array([[-0.05, 0, -0.1], [0.1, 0, 0.2]], np.float32)        # A = -fast_lr d x^T (not lr)
    np.testing.assert_allclose(it.A.visible, A1, atol=1e-7)
    dC = np.zeros((2, 3), np.float32)
    dC[:, 0] = lr * A1[:, 0]                                              # column 0 read, C += lr_T v
    np.testing.assert_allclose(it.C.visible, W0 + dC, atol=1e-7)
    it.update(X2, D2, lr)
    A2 = A1 + np.array([[0, -0.1, 0], [0, -0.1, 0]], np.float32)
    np.testing.assert_allclose(it.A.visible, A2, atol=1e-7)
    dC[:, 1] = lr * A2[:, 1]                                              # then column 1
    np.testing.assert_allclose(it.C.visible, W0 + dC, atol=1e-6)
    np.testing.assert_allclose(it.weights(), W0 + dC, atol=1e-6)          # W = C (gamma 0)
    np.testing.assert_allclose(it.tile.read_weights(), W0 + dC, atol=1e-6)  # mirrored into the tile
    c = it.counters()
    assert c["transfers"] == 2 and c["updates"] == 2 and c["samples"] == 2


def test_buffered_ttv2_two_steps_by_hand():
    cfg = insitu("ttv2", device=ConstantStep(dw_min=0.1, **QUIET), fast_device=ConstantStep(dw_min=0.01, **QUIET),
                 update=EXACT, transfer_forward=IOConfig(is_perfect=True), fast_lr=0.5, scale_fast_lr=False,
                 units_in_mbatch=True, transfer_lr=1.0, max_transfer_pulses=2, momentum=0.5, forget_buffer=True)
    it = _tile(cfg)
    lr = 0.1                                   # lr_T / (thres_scale dw_min_A) = 0.1 / 0.01 = 10 pulses per unit
    it.update(X1, D1, lr)                      # A = -0.5 d x^T; column 0: H = 10 v = [-2.5, 5] -> n = [-2, 2]
    np.testing.assert_allclose(it.A.visible, [[-0.25, 0, -0.5], [0.5, 0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(it.H, [[-1.25, 0, 0], [2.5, 0, 0]], atol=1e-6)   # forget: H <- momentum H
    it.update(X2, D2, lr)                      # column 1: v = [-0.5, -0.5] -> H = [-5, -5] -> n = [-2, -2]
    np.testing.assert_allclose(it.H, [[-1.25, -2.5, 0], [2.5, -2.5, 0]], atol=1e-6)
    np.testing.assert_allclose(it.C.visible, W0 + np.array([[-0.2, -0.2, 0], [0.2, -0.2, 0]]), atol=1e-6)
    c = it.counters()
    assert c["transfers"] == 2 and c["pulses_C"] == 8 and c["pulses_per_device_C"].sum() == 8
    assert c["pulses_per_device_C"].tolist() == [[2, 2, 0], [2, 2, 0]]


def test_buffered_ttv2_without_forgetting_subtracts_the_pulses():
    cfg = insitu("ttv2", device=ConstantStep(dw_min=0.1, **QUIET), fast_device=ConstantStep(dw_min=0.01, **QUIET),
                 update=EXACT, transfer_forward=IOConfig(is_perfect=True), fast_lr=0.5, scale_fast_lr=False,
                 units_in_mbatch=True, max_transfer_pulses=0, momentum=0.0, forget_buffer=False)
    it = _tile(cfg)
    it.update(X1, D1, 0.1)                     # H = [-2.5, 5] -> n = [-2, 5]; H -= n -> [-0.5, 0]
    np.testing.assert_allclose(it.H[:, 0], [-0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(it.C.visible[:, 0], W0[:, 0] + [-0.2, 0.5], atol=1e-6)


def test_mixed_precision_two_steps_by_hand():
    cfg = insitu("mp", device=ConstantStep(dw_min=0.125, **QUIET), granularity=0.125)
    it = _tile(cfg)
    it.update(X1, D1, 0.25)                    # chi = [[-.125, 0, -.25], [.25, 0, .5]] -> n = [[-1,0,-2],[2,0,4]]
    n = np.array([[-1, 0, -2], [2, 0, 4]])
    np.testing.assert_allclose(it.W.visible, W0 + 0.125 * n, atol=1e-7)
    np.testing.assert_allclose(it.chi, 0, atol=1e-7)
    it.update(np.array([[0, 1, 0]], np.float32), np.array([[0.2, 0.1]], np.float32), 0.25)   # below eps: kept
    np.testing.assert_allclose(it.chi, [[0, -0.05, 0], [0, -0.025, 0]], atol=1e-7)
    np.testing.assert_allclose(it.W.visible, W0 + 0.125 * n, atol=1e-7)
    c = it.counters()
    assert c["pulses"] == 9 and c["transfers"] == 2


def test_chopped_ttv2_flips_choppers_and_counts_reads():
    cfg = insitu("c-ttv2", device=ConstantStep(dw_min=0.01, **QUIET), in_chop_prob=0.5, auto_scale=False,
                 transfer_forward=IOConfig(is_perfect=True))
    t = Tile(4, 6, cfg, seed=0)
    t.set_weights(np.zeros((4, 6), np.float32))
    it = InsituTile(t, cfg, seed=3, tile_id="c")
    rng = np.random.default_rng(0)
    for _ in range(10):                        # transfer_every 1 MVM: 8 column reads per mini-batch of 8
        it.update(rng.uniform(-1, 1, (8, 6)).astype(np.float32), rng.normal(0, 0.1, (8, 4)).astype(np.float32), 0.1)
    assert it.transfers == 80 and it.updates == 10
    assert set(np.unique(it.chop)) <= {-1.0, 1.0}
    assert it._col == 80 % 6


# ------------------------------------------------------------------------------------------- arrays

def test_insitu_array_over_split_tiles():
    cfg = insitu("sgd", device="idealized", mapping=MappingConfig(max_in=4, max_out=3))
    ta = TileArray(5, 9, cfg, seed=1, name="L")
    assert ta.grid == (2, 3)
    arr = InsituArray(ta, cfg)
    W = np.random.default_rng(0).uniform(-0.3, 0.3, (5, 9)).astype(np.float32)
    arr.set_weights(W)
    np.testing.assert_allclose(arr.weights(), np.clip(W, -1, 1), atol=0)
    rng = np.random.default_rng(1)
    arr.update(rng.uniform(-1, 1, (16, 9)).astype(np.float32), rng.normal(0, 1, (16, 5)).astype(np.float32), 0.05)
    c = arr.counters()
    assert c["pulses_per_device_W"].shape == (5, 9) and c["pulses_per_device_W"].sum() == c["pulses"] > 0
    np.testing.assert_array_equal(ta.read_weights(), arr.weights())
    with pytest.raises(ValueError, match="do not fit"):
        arr.update(np.zeros((2, 8), np.float32), np.zeros((2, 5), np.float32), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        arr.update(np.full((2, 9), np.nan, np.float32), np.zeros((2, 5), np.float32), 0.1)


# ------------------------------------------------------------------------------------------- torch

def _regression(n_in=8, n_out=3, n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_in, generator=g)
    Wt = torch.randn(n_out, n_in, generator=g) * 0.3
    return X, X @ Wt.T


@pytest.mark.parametrize("alg", ["sgd", "tiki-taka", "mp"])
def test_analog_sgd_reduces_loss_on_a_tiny_regression(alg):
    from aimc.nn import AnalogLinear
    from aimc.optim import AnalogSGD
    torch.manual_seed(0)
    X, Y = _regression()
    kw = {"n_reads_per_transfer": 8} if alg == "tiki-taka" else {}   # every column once per mini-batch
    cfg = insitu(alg, device=SoftBounds(dw_min=0.002, dw_min_std=0.1), **kw)
    layer = AnalogLinear(8, 3, bias=True, config=cfg, seed=1)
    opt = AnalogSGD(layer, lr=0.1)
    with torch.no_grad():
        l0 = ((layer(X) - Y) ** 2).mean().item()
    for _ in range(12):
        for i in range(0, 256, 16):
            opt.zero_grad()
            loss = ((layer(X[i:i + 16]) - Y[i:i + 16]) ** 2).mean()
            loss.backward()
            opt.step()
    with torch.no_grad():
        l1 = ((layer(X) - Y) ** 2).mean().item()
    assert l1 < 0.5 * l0, (alg, l0, l1)
    assert layer.weight.grad is None and not layer.weight.requires_grad   # no digital outer product
    np.testing.assert_array_equal(layer.weight.detach().numpy(), layer.insitu.weights())
    c = opt.counters()["" if isinstance(layer, torch.nn.Module) else None]
    assert c["pulses"] > 0 and c["updates"] == 12 * 16
    assert opt.summary()["pulses"] == c["pulses"]


def test_in_situ_layer_deploys_with_program():
    from aimc.nn import AnalogLinear
    from aimc.optim import AnalogSGD
    torch.manual_seed(1)
    X, Y = _regression(n=64)
    model = torch.nn.Sequential(AnalogLinear(8, 6, config=insitu("sgd", device="idealized"), seed=2),
                                torch.nn.ReLU(), torch.nn.Linear(6, 3))
    opt = AnalogSGD(model, lr=0.05, momentum=0.9)
    b0 = model[2].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        ((model(X) - Y) ** 2).mean().backward()
        opt.step()
    assert not torch.equal(b0, model[2].weight)              # digital layer trained by the inner SGD
    learned = model[0].weight.detach().clone()
    model[0].program()                                        # deploy the learned weights
    assert model[0].programmed
    np.testing.assert_allclose(model[0].tiles.read_weights(), learned.numpy(), atol=0.05)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(X)).all()
    with pytest.raises(RuntimeError, match="programmed"):
        AnalogSGD(model, lr=0.1)


def test_analog_sgd_on_conv2d():
    from aimc.nn import AnalogConv2d
    from aimc.optim import AnalogSGD
    torch.manual_seed(0)
    conv = AnalogConv2d(2, 3, 3, padding=1, config=insitu("sgd", device="idealized"), seed=0)
    opt = AnalogSGD(conv, lr=0.05)
    x = torch.randn(4, 2, 6, 6)
    target = torch.randn(4, 3, 6, 6)
    w0 = conv.weight.detach().clone()
    opt.zero_grad()
    ((conv(x) - target) ** 2).mean().backward()
    opt.step()
    assert not torch.equal(w0, conv.weight)
    np.testing.assert_array_equal(conv.weight.detach().reshape(3, -1).numpy(), conv.insitu.weights())
    assert opt.counters()[""]["pulses"] > 0


def test_analog_sgd_errors():
    from aimc.nn import AnalogLinear
    from aimc.optim import AnalogSGD
    with pytest.raises(ValueError, match="no analog layers"):
        AnalogSGD(torch.nn.Linear(3, 2), lr=0.1)
    with pytest.raises(ValueError, match="plain TileConfig"):
        AnalogSGD(AnalogLinear(3, 2), lr=0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        AnalogSGD([torch.zeros(2)], lr=0.1)
    opt = AnalogSGD(AnalogLinear(3, 2), lr=0.1, config="tiki-taka")       # config for a plain layer
    assert opt.counters()[""]["algorithm"] == "tiki-taka"


def test_eval_and_no_grad_forwards_are_not_captured():
    from aimc.nn import AnalogLinear
    from aimc.optim import AnalogSGD
    layer = AnalogLinear(4, 2, config=insitu("sgd", device="idealized"))
    opt = AnalogSGD(layer, lr=0.1)
    with torch.no_grad():
        layer(torch.randn(5, 4))
    layer.eval()
    layer(torch.randn(5, 4))
    assert layer._insitu_state["pairs"] == []
    layer.train()
    w0 = layer.weight.detach().clone()
    opt.step()                                  # nothing captured: no pulses
    assert torch.equal(w0, layer.weight) and opt.summary()["pulses"] == 0


def test_train_cli_insitu(tmp_path, capsys):
    import json

    from aimc import zoo
    from aimc.cli import main
    out = tmp_path / "m.pt"
    rc = main(["train", "--method", "insitu", "--data", "digits", "--epochs", "1", "--opt", "hidden=16",
               "--opt", "algorithm=mp", "--opt", "device=idealized", "--opt", "batch_size=32", "--json",
               "--out", str(out)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["algorithm"] == "mixed-precision" and res["pulses"] > 0 and res["test_accuracy"] > 0.3
    model, meta = zoo.load_checkpoint(out)                   # a digital model with the learned weights
    assert meta["method"] == "insitu" and isinstance(model[0], torch.nn.Linear)
    assert main(["train", "--method", "insitu", "--data", "digits", "--opt", "device=pcm-joshi2020",
                 "--out", str(tmp_path / "x.pt")]) == 2


def test_subnormal_gradients_do_not_poison_the_backward_read():
    from aimc.nn import AnalogLinear
    from aimc.optim import AnalogSGD
    torch.manual_seed(0)
    model = torch.nn.Sequential(AnalogLinear(6, 5, config=insitu("sgd", device="idealized")),
                                AnalogLinear(5, 3, config=insitu("sgd", device="idealized")))
    opt = AnalogSGD(model, lr=0.1)
    scale = torch.ones(4, 3)
    scale[0] = 1e-40                                     # a sample whose output gradient is subnormal
    opt.zero_grad()
    (model(torch.randn(4, 6)) * scale).sum().backward()
    for _, m in opt._layers:
        assert all(torch.isfinite(d).all() for _, d in m._insitu_state["pairs"])
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_insitu_layer_state_dict_round_trip():
    torch = pytest.importorskip("torch")
    from aimc.nn import AnalogLinear
    cfg = aimc.insitu("tiki-taka", device="reram-es")
    a = AnalogLinear(8, 4, config=cfg)
    b = AnalogLinear(8, 4, config=cfg)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.weight, a.weight)
