"""The torch backend (aimc/nn/torch_backend.py) against the Numba reference.

* noise off: every element-wise stage (NM, DAC, clip, IR drop, nonlinearity, ADC, clip flags/counts) equals
  the Numba kernels exactly given the same inputs; whole reads differ at most by one ADC step on a small
  fraction of outputs, analog products (no ADC) within k eps sum|w||v| with k = in_size;
* noise on: seeded moment tests against the published formulas (3 standard errors; physics.md §1);
* determinism per generator seed; layers, HWA, drift; unsupported stages; CUDA placement where a GPU exists.
"""
import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aimc  # noqa: E402
from aimc.core.config import (BoundManagement, IOConfig, MappingConfig, NoiseManagement, TileConfig,  # noqa: E402
                              WeightNoiseType, as_config)
from aimc.kernels import periphery as _k  # noqa: E402
from aimc.nn import AnalogLinear, set_backend  # noqa: E402
from aimc.nn import torch_backend as tb  # noqa: E402
from aimc.train.hwa import torch_backend as thwa  # noqa: E402
from aimc.core.periphery import WeightView, _NM_CODE, adc_arrays  # noqa: E402
from aimc.core.periphery import mvm as numba_mvm  # noqa: E402
from aimc.core.rng import Stream  # noqa: E402
from aimc.core.mapping import from_conductances  # noqa: E402

EPS = float(np.finfo(np.float32).eps)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _io(**kw) -> IOConfig:
    base = dict(out_noise=0.0)
    base.update(kw)
    return IOConfig(**base)


def _data(m=24, n=40, B=300, seed=0, wscale=0.3):
    r = np.random.default_rng(seed)
    return (r.standard_normal((m, n)).astype(np.float32) * wscale, r.standard_normal((B, n)).astype(np.float32))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ exact element-wise stages

@pytest.mark.parametrize("nm", list(NoiseManagement))
def test_nm_alpha_exact(nm):
    _, x = _data()
    x[3] = 0.0
    for thres in (0.0, 1.5):
        io = _io(noise_management=nm, nm_thres=thres)
        ref = np.empty(x.shape[0], np.float32)
        _k.nm_alpha(x, _NM_CODE[nm], np.float32(thres), ref)
        np.testing.assert_array_equal(tb.nm_alpha(torch.from_numpy(x), io).numpy(), ref)


@pytest.mark.parametrize("bits,bound", [(7, 1.0), (8, 1.0), (0, 1.0), (5, 0.5)])
def test_input_stage_exact(bits, bound):
    _, x = _data()
    io = _io(inp_bits=bits, inp_bound=bound, noise_management=NoiseManagement.NONE,
             w_noise=0.01, w_noise_type=WeightNoiseType.ADDITIVE_CONSTANT)   # additive: v2 is computed
    scale = np.abs(x).max(axis=1).astype(np.float32) * np.float32(0.7)   # some inputs clip
    B, n = x.shape
    v, v2, aux = np.empty((B, n), np.float32), np.empty(B, np.float32), np.empty((0, n), np.float32)
    _k.input_stage(x, np.arange(B, dtype=np.int64), scale, io.inp_step, io.inp_bound, False, 0.0,
                   *Stream(0).next_call(), np.uint64(1), v, v2, aux, -1, -1)
    vt, v2t = tb.input_stage(torch.from_numpy(x), torch.from_numpy(scale), io, _gen())
    np.testing.assert_array_equal(vt.numpy(), v)
    np.testing.assert_allclose(v2t.numpy(), v2, rtol=4 * n * EPS)   # a sum: order may differ


@pytest.mark.parametrize("kw", [dict(), dict(out_bound=3.0), dict(ir_drop=1.0), dict(out_nonlinearity=0.8),
                                dict(ir_drop=2.0, out_nonlinearity=0.5, out_bound=2.0, out_bits=6),
                                dict(out_bits=0, out_bound=0.0), dict(bm_test_negative_bound=False, out_bound=2.0),
                                dict(per_col=True), dict(per_col=True, bm_test_negative_bound=False)])
def test_output_stage_exact(kw):
    """Given the same product inputs, IR drop, nonlinearity, ADC, clipping, flags and counts are identical."""
    per_col = kw.pop("per_col", False)
    io = _io(**kw)
    r = np.random.default_rng(1)
    R, m, n = 200, 30, 50
    yin = (r.standard_normal((R, 2 * m)) * r.uniform(0.5, 6.0, (R, 1))).astype(np.float32)
    a_mat = np.abs(r.standard_normal((R, m))).astype(np.float32) * 4
    if per_col:
        steps, bounds = adc_arrays(io, np.linspace(0.0, 40.0, m).astype(np.float32))   # column 0: no ADC
    else:
        steps, bounds = adc_arrays(io)
    rows = np.arange(R, dtype=np.int64)
    y, clipped, nclip = np.empty((R, m), np.float32), np.empty(R, np.int8), np.empty(R, np.int32)
    nl = io.out_nonlinearity / (io.out_bound if io.out_bound > 0 else 1.0)
    k0, k1, c = Stream(0).next_call()
    _k.output_stage(yin, rows, np.zeros(R, np.float32), np.zeros((0, 0), np.float32), np.float32(0.0),
                    np.float32(io.ir_drop), np.float32(n / io.ir_drop_g_ratio), a_mat if io.ir_drop > 0 else
                    np.zeros((0, 0), np.float32), m, np.float32(nl), steps, bounds, False,
                    io.bm_test_negative_bound, k0, k1, c, c, clipped, y, np.zeros(0, np.float32), 0, nclip, 0)
    st, bd = (torch.from_numpy(steps), torch.from_numpy(bounds)) if per_col else \
        tb.adc_tensors(io, None, torch.device("cpu"))
    yt, ft, ct = tb.output_stage(torch.from_numpy(yin.copy()), m, n, None, None,
                                 torch.from_numpy(a_mat.copy()) if io.ir_drop > 0 else None, io, _gen(), st, bd,
                                 counts=True)
    np.testing.assert_array_equal(yt.numpy(), y)
    np.testing.assert_array_equal(ft.numpy().astype(np.int8), clipped)
    np.testing.assert_array_equal(ct.numpy(), nclip)
    if (io.out_bound > 0 or per_col) and io.out_nonlinearity == 0:
        assert clipped.any() and not clipped.all()   # the test exercises both decisions


# ------------------------------------------------------------------------------------ whole reads, noise off

NOISE_OFF = {
    "default": _io(),
    "iterative-bm": _io(out_bound=3.0),
    "max-nm-7bit": _io(noise_management=NoiseManagement.MAX, inp_bits=7, out_bits=7, out_bound=5.0),
    "ir-nl": _io(ir_drop=1.0, out_nonlinearity=0.5, bound_management=BoundManagement.NONE),
    "hwa": dataclasses.replace(aimc.presets.standard_hwa().forward, w_noise=0.0, out_noise=0.0),
}


@pytest.mark.parametrize("name", sorted(NOISE_OFF))
def test_read_parity_noise_off(name):
    """Torch vs Numba reads, noise off: outputs differ only by whole ADC steps (the products' rounding moves
    an output across a threshold), by at most one step, on < 1 % of the outputs."""
    io = NOISE_OFF[name]
    W, x = _data(B=400)
    yn = numba_mvm(WeightView(W), x, io, Stream(0), raw=True)
    yt = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(), raw=True).numpy()
    step = np.float32(io.out_step)
    d = np.abs(yt - yn)
    assert d.max() <= step * 1.001
    assert np.mean(d > 0) < 0.01
    full_n = numba_mvm(WeightView(W), x, io, Stream(0))
    full_t = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen()).numpy()
    same = (d == 0).all(axis=1)                     # rows without a flipped step: identical BM decisions too
    np.testing.assert_array_equal(full_t[same], full_n[same])


@pytest.mark.parametrize("kw", [dict(), dict(ir_drop=1.0), dict(w_noise_type=WeightNoiseType.PCM_READ)])
def test_products_within_rounding_bound(kw):
    """No ADC: the analog outputs agree within k eps sum_j |w_ij| |v_j| (k = in_size: BLAS summation order)."""
    io = _io(out_bits=0, out_bound=0.0, bound_management=BoundManagement.NONE, **kw)
    W, x = _data(n=300, B=128, seed=3)
    yn = numba_mvm(WeightView(W), x, io, Stream(0), raw=True)
    yt = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(), raw=True).numpy()
    a = np.abs(x).max(axis=1, keepdims=True)
    v = np.clip(np.rint(x / a / np.float32(io.inp_step)) * np.float32(io.inp_step), -1, 1)
    bound = W.shape[1] * EPS * (np.abs(v) @ np.abs(W).T) * (1 + io.ir_drop * 10)
    assert np.all(np.abs(yt - yn) <= bound)


# ------------------------------------------------------------------------------------ noise on: moments

def _moments(samples):
    """(mean, std, standard error of the mean, standard error of the std) over axis 0."""
    samples = np.asarray(samples, np.float64)
    N = samples.shape[0]
    mu, sd = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    return mu, sd, sd / math.sqrt(N), sd / math.sqrt(2 * (N - 1))


def _repeat(io, W, x, N, seed=0):
    view, g = tb.View(torch.from_numpy(W)), _gen(seed)
    xt = torch.from_numpy(np.repeat(x[None], N, 0).reshape(-1, x.shape[-1]))
    return tb.mvm(view, xt, io, g).numpy().reshape(N, -1)


def test_output_and_additive_weight_noise_moments():
    """sigma^2 = out_noise^2 + w_noise^2 ||v||^2 (physics.md §1.2), scaled by alpha = max|x| (abs-max NM)."""
    W, x = _data(m=16, n=64, B=1, seed=5)
    io = _io(inp_bits=0, out_bits=0, out_bound=0.0, out_noise=0.06, w_noise=0.02,
             w_noise_type=WeightNoiseType.ADDITIVE_CONSTANT, bound_management=BoundManagement.NONE)
    y = _repeat(io, W, x[0], 20000)
    alpha = np.abs(x).max()
    v = x[0] / alpha
    mu, sd, se_mu, se_sd = _moments(y)
    assert np.all(np.abs(mu - W @ x[0]) < 3.5 * se_mu)
    expect = alpha * math.sqrt(0.06 ** 2 + 0.02 ** 2 * float(v @ v))
    assert np.all(np.abs(sd - expect) < 3.5 * se_sd)


def test_pcm_read_and_input_noise_moments():
    """PCM read noise: sigma_i^2 = w_noise^2 sum_j |W_ij| v_j^2; input noise: + inp_noise^2 sum_j W_ij^2."""
    W, x = _data(m=16, n=64, B=1, seed=6)
    io = _io(inp_bits=0, out_bits=0, out_bound=0.0, inp_noise=0.05, w_noise=0.1,
             w_noise_type=WeightNoiseType.PCM_READ, noise_management=NoiseManagement.NONE,
             bound_management=BoundManagement.NONE)
    xs = np.clip(x[0], -1, 1)
    y = _repeat(io, W, xs, 20000, seed=2)
    mu, sd, se_mu, se_sd = _moments(y)
    assert np.all(np.abs(mu - W @ xs) < 3.5 * se_mu)
    # read noise uses the noisy v: E[v_j^2] = xs_j^2 + inp_noise^2
    expect = np.sqrt(0.1 ** 2 * (np.abs(W) @ (xs ** 2 + 0.05 ** 2)) + 0.05 ** 2 * (W ** 2).sum(1))
    assert np.all(np.abs(sd - expect) < 3.5 * se_sd)


def test_stochastic_rounding_unbiased():
    """Stochastic DAC and ADC rounding: E[Q(v)] = v, Var = f (1 - f) step^2 (f: fractional part)."""
    io = _io(inp_sto_round=True, out_sto_round=True, out_bits=6, out_bound=8.0,
             noise_management=NoiseManagement.NONE, bound_management=BoundManagement.NONE)
    r = np.random.default_rng(7)
    v = r.uniform(-1, 1, 32).astype(np.float32)
    N = 20000
    q = tb.quantise(torch.from_numpy(np.repeat(v[None], N, 0)), io.inp_step, True, _gen(3)).numpy()
    mu, sd, se_mu, se_sd = _moments(q)
    assert np.all(np.abs(mu - v) < 4 * se_mu + 1e-7)
    step = np.float32(io.inp_step)
    f = v / step - np.floor(v / step)
    p = f * (1 - f)   # a two-point distribution: Var(sample variance) = step^4 p (1 - 4 p) / N
    assert np.all(np.abs(sd ** 2 - step ** 2 * p) < 4 * step ** 2 * np.sqrt(p * (1 - 4 * p) / N) + 1e-9)
    # the whole read with stochastic DAC + ADC: the output mean equals the numba path's mean
    W, x = _data(m=8, n=32, B=1, seed=8, wscale=0.2)
    xs = np.clip(x[0], -1, 1)
    yt = _repeat(io, W, xs, 8000, seed=4)
    yn = numba_mvm(WeightView(W), np.repeat(xs[None], 8000, 0), io, Stream(4))
    mt, st, set_, _ = _moments(yt)
    mn, sn, sen, _ = _moments(yn)
    assert np.all(np.abs(mt - mn) < 4 * np.hypot(set_, sen))
    assert np.all(np.abs(mt - W @ xs) < 4 * set_ + 1e-6)


def test_noise_distribution_matches_numba_path():
    """The standard HWA forward (PCM read noise, IR drop, output noise, 8-bit converters): per output,
    mean and std of many torch reads equal those of many Numba reads (two-sample, 4 standard errors)."""
    io = aimc.presets.standard_hwa().forward
    W, x = _data(m=12, n=48, B=1, seed=9, wscale=0.4)
    xs = np.clip(x[0] * 0.5, -1, 1)
    N = 6000
    yt = _repeat(io, W, xs, N, seed=5)
    yn = numba_mvm(WeightView(W), np.repeat(xs[None], N, 0), io, Stream(5))
    mt, st, set_, sst = _moments(yt)
    mn, sn, sen, ssn = _moments(yn)
    assert np.all(np.abs(mt - mn) < 4 * np.hypot(set_, sen))
    assert np.all(np.abs(st - sn) < 4 * np.hypot(sst, ssn))


def test_same_seed_same_values_other_seed_other_values():
    io = aimc.presets.standard_hwa().forward
    W, x = _data()
    a = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(11)).numpy()
    b = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(11)).numpy()
    c = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(12)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.5


# ------------------------------------------------------------------------------------ layers

def _pair(cfg, seed=0, i=40, o=24):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(i, o)
    a, b = AnalogLinear.from_linear(lin, cfg, seed=3), AnalogLinear.from_linear(lin, cfg, seed=3)
    b.set_backend("torch")
    return lin, a, b


def test_ideal_layer_equals_linear_forward_and_gradients():
    lin, _, b = _pair(aimc.presets.ideal())
    x = torch.randn(16, 40, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    b(x).square().sum().backward()
    lin(x2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(b.weight.grad, lin.weight.grad)


def test_layer_parity_noise_off_with_splits_and_analog_backward():
    """Two input and two output splits, weight scaling, analog backward: torch == numba within 1 ADC step of
    the rescaled outputs on < 1 % of outputs; gradients likewise."""
    io = _io(out_bound=6.0)
    cfg = TileConfig(forward=io, backward=io, backward_ideal=False,
                     mapping=MappingConfig(weight_scaling_omega=1.0, max_in=24, max_out=16))
    _, a, b = _pair(cfg)
    assert a.tiles.grid == (2, 2)
    x = torch.randn(200, 40)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = a(xa), b(xb)
    d = (ya - yb).abs()
    assert float((d > 0).float().mean()) < 0.01
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    dx = (xa.grad - xb.grad).abs()
    assert float((dx > 1e-5 * xa.grad.abs().max()).float().mean()) < 0.01
    torch.testing.assert_close(a.weight.grad, b.weight.grad)


def test_layer_reproducible_per_seed_with_noise():
    """Noisy reads on the torch backend: fresh layers with the same seed give bit-identical outputs (forward
    and analog backward), another seed gives other values."""
    cfg = TileConfig(forward=aimc.presets.standard_hwa().forward, backward=IOConfig(out_noise=0.1),
                     backward_ideal=False)
    x = torch.randn(32, 40)

    def run(seed):
        torch.manual_seed(0)
        m = AnalogLinear(40, 24, config=cfg, seed=seed)
        m.set_backend("torch")
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y.sum().backward()
        return y.detach(), xi.grad
    (y1, g1), (y2, g2), (y3, g3) = run(5), run(5), run(6)
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    assert float((y1 != y3).float().mean()) > 0.5 and float((g1 != g3).float().mean()) > 0.5


def test_lstm_on_torch_backend_matches_numba_noise_off():
    from aimc.nn import AnalogLSTM
    cfg = TileConfig(forward=_io(bound_management=BoundManagement.NONE))
    torch.manual_seed(2)
    ref = torch.nn.LSTM(12, 16)
    a, b = AnalogLSTM.from_torch(ref, cfg, seed=1), AnalogLSTM.from_torch(ref, cfg, seed=1)
    set_backend(b, "torch")
    x = torch.randn(5, 3, 12)
    with torch.no_grad():
        ya, yb = a(x)[0], b(x)[0]
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert float((ya - ref(x)[0]).abs().max()) < 0.2   # and it is an analog LSTM of the reference


def test_deploy_program_drift_and_read_on_torch():
    """Programmed PCM layer: the torch drift updates the tile state (clock, conductances, weights,
    compensation factor); read noise has the card's moments; forwards read the drifted state."""
    from aimc.deployment import bench
    cfg = as_config(bench.DEPLOY_CONFIG)
    _, a, b = _pair(cfg, i=128, o=64)
    a.program()
    b.program()
    tile_a, tile_b = a.tiles.tiles[0][0], b.tiles.tiles[0][0]
    np.testing.assert_array_equal(tile_a.conductances(), tile_b.conductances())   # programming: numpy, same seed
    t = 86400.0
    b.drift(t)
    a.drift(t)
    assert tile_b.time == t
    dev = tile_b._device
    m = dev.model
    gd = dev.cells.g_prog * np.exp(-dev.cells.nu * math.log((t + m.t0) / m.t0))
    sig = np.abs(gd) * dev._rel_read() * m.read_noise_factor(t)
    ok = gd > 6 * sig
    z = (tile_b.conductances()[ok] - gd[ok]) / sig[ok]
    N = z.size
    assert N > 5000
    assert abs(z.mean()) < 4 / math.sqrt(N) and abs(z.std() - 1) < 4 / math.sqrt(2 * N)
    np.testing.assert_allclose(tile_b.read_weights(),
                               from_conductances(tile_b.conductances(), tile_b._map_params,
                                                              cfg.mapping) * tile_b._scale[:, None], rtol=1e-6,
                               atol=1e-7)
    # compensation factors of the two backends: same distribution, close values (read noise differs)
    assert abs(float(tile_a.compensation_alpha) / float(tile_b.compensation_alpha) - 1) < 0.02
    a.eval()
    b.eval()
    x = torch.randn(64, 128)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    ref = (x @ a.weight.T + a.bias).detach()
    ea, eb = float((ya - ref).std()), float((yb - ref).std())
    assert abs(ea / eb - 1) < 0.25               # same error level at 1 day (different random draws)
    with pytest.raises(ValueError, match="earlier"):
        b.drift(10.0)


def test_calibrated_layer_parity_and_state_dict():
    """Calibration through ``aimc.deployment.convert.calibrate`` on the torch backend (the calibration pass runs by the
    numba path), then calibrated reads (static DAC range, per-column ADC ranges) agree with the numba
    backend with noise off; a state dict saved from the torch-backend layer restores the same reads."""
    from aimc.core.config import CalibrationConfig, InferenceConfig
    from aimc.deployment.convert import calibrate
    io = _io(noise_management=NoiseManagement.ABS_MAX, bound_management=BoundManagement.NONE)
    cfg = TileConfig(forward=io, mapping=MappingConfig(weight_scaling_omega=1.0),
                     inference=InferenceConfig(device="none"), calibration=CalibrationConfig())
    _, a, b = _pair(cfg, i=64, o=32)
    for m in (a, b):
        m.program()
        m.eval()
    xc = torch.randn(256, 64)
    ra, rb = calibrate(torch.nn.Sequential(a), xc), calibrate(torch.nn.Sequential(b), xc)
    assert ra == rb and b.tiles.calibrated
    x = torch.randn(300, 64) * 1.5
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert float(((ya - yb).abs() > 0).float().mean()) < 0.01
    c = AnalogLinear(64, 32, config=cfg, seed=3)
    c.load_state_dict(b.state_dict())
    c.set_backend("torch")
    c.eval()
    with torch.no_grad():
        assert float(((c(x) - yb).abs() > 0).float().mean()) < 0.01


def test_conv_on_torch_backend_matches_numba_noise_off():
    """A convolution reads the patch matrix through analog_matmul on the torch backend (the fused numba
    patch path is not used there) and agrees with the numba backend's fused inference path."""
    from aimc.nn import AnalogConv2d
    cfg = TileConfig(forward=_io(bound_management=BoundManagement.NONE), mapping=MappingConfig(max_in=40))
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 8, 3, padding=1)
    a, b = AnalogConv2d.from_torch(conv, cfg, seed=2), AnalogConv2d.from_torch(conv, cfg, seed=2)
    set_backend(b, "torch")
    x = torch.randn(4, 6, 10, 10)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape == (4, 8, 10, 10)
    assert float(((ya - yb).abs() > 1e-6).float().mean()) < 0.01


def test_hwa_step_parity_noise_off():
    """Standard-HWA layer without noise: the torch HWA product gives the numba forward (within one ADC step
    on < 1 % of outputs) and the same gradients of weight, input range and output scale."""
    from aimc.train import hwa
    tcfg, hcfg = hwa.standard_hwa()
    tcfg = dataclasses.replace(tcfg, forward=dataclasses.replace(tcfg.forward, w_noise=0.0, out_noise=0.0),
                               mapping=dataclasses.replace(tcfg.mapping, max_in=24))
    torch.manual_seed(0)
    lin = torch.nn.Linear(40, 24)
    layers = [hwa.prepare(AnalogLinear.from_linear(lin, tcfg, 0, "l"), (tcfg, hcfg)) for _ in range(2)]
    layers[1].set_backend("torch")
    x = torch.randn(128, 40)
    outs = []
    for m in layers:
        m.train()
        y = m(x)
        y.square().mean().backward()
        outs.append((y.detach(), m.weight.grad, m.hwa.input_range.grad, m.hwa.out_scale.grad))
    (ya, gwa, gra, gsa), (yb, gwb, grb, gsb) = outs
    assert float(((ya - yb).abs() > 1e-6).float().mean()) < 0.01
    torch.testing.assert_close(gwa, gwb, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gra, grb, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(gsa, gsb, rtol=1e-2, atol=1e-4)
    # a full step with the optimizer hook runs on the torch backend
    opt = torch.optim.SGD(layers[1].parameters(), lr=1e-2)
    hwa.hook_optimizer(opt, layers[1])
    opt.step()
    assert float(layers[1].weight.detach().abs().max()) <= 1.0 + 1e-6


def test_hwa_modifier_moments_torch():
    """ADD_NORMAL: w' - w has std std_dev * amax; the straight-through gradient reaches the clean weights."""
    from aimc.train import hwa
    mod = hwa.WeightModifier(type=hwa.ModifierType.ADD_NORMAL, std_dev=0.05)
    W = torch.randn(200, 300)
    out = thwa.modify_weights(W, mod, _gen(1), Stream(0))
    d = (out - W).numpy().ravel()
    amax = float(W.abs().max())
    assert abs(d.mean()) < 4 * 0.05 * amax / math.sqrt(d.size)
    assert abs(d.std() / (0.05 * amax) - 1) < 4 / math.sqrt(2 * d.size)
    q = thwa.modify_weights(W, hwa.WeightModifier(type=hwa.ModifierType.DISCRETIZE, res=0.1), _gen(1), Stream(0))
    ref = hwa.modify_weights(W.numpy(), hwa.WeightModifier(type=hwa.ModifierType.DISCRETIZE, res=0.1), Stream(0))
    np.testing.assert_array_equal(q.numpy(), ref)   # deterministic modifier: exactly the numpy one


def test_hwa_pcm_noise_modifier_runs_numpy_device_model_on_torch_backend():
    """PCM_NOISE (device programming) runs the numpy device model and reaches the torch mirrors: the torch
    layer reads exactly the sample the numba path would draw from the same stream."""
    from aimc.train import hwa
    mod = hwa.WeightModifier(type=hwa.ModifierType.PCM_NOISE, pcm_t_inference=3600.0)
    W = torch.randn(16, 24) * 0.3
    a = thwa.modify_weights(W, mod, _gen(0), Stream(9, "m"))
    b = hwa.modify_weights(W.numpy(), mod, Stream(9, "m"))
    np.testing.assert_array_equal(a.numpy(), b)
    assert float((a - W).abs().mean()) > 0


# ------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("cfg,stage", [
    (TileConfig(mapping=MappingConfig(kind="sliced")), "weight slicing"),
    (TileConfig(forward=IOConfig(adc="sar")), "SAR ADC"),
    (TileConfig(forward=IOConfig(adc_gain_std=0.01)), "gain/offset"),
    (TileConfig(mapping=MappingConfig(input_bits=4)), "bit-serial"),
    (TileConfig(forward=IOConfig(adc="ramp")), "ramp ADC"),
    (TileConfig(backward=IOConfig(dac_unit_mismatch=0.01)), "DAC unit mismatch of the backward"),
])
def test_unsupported_stage_named(cfg, stage):
    m = AnalogLinear(8, 4, config=cfg)
    with pytest.raises(tb.TorchBackendUnsupported, match=stage):
        m.set_backend("torch")
    with pytest.raises(tb.TorchBackendUnsupported, match=stage):
        set_backend(torch.nn.Sequential(m), "torch")
    assert m.backend == "auto"          # nothing changed


def test_circuit_unsupported_named():
    from aimc.core.config import ArrayConfig
    m = AnalogLinear(8, 4, config=TileConfig(array=ArrayConfig(model="circuit"), forward=IOConfig(ir_drop=0.0)))
    with pytest.raises(tb.TorchBackendUnsupported, match="circuit solve"):
        m.set_backend("torch")


def test_bad_backend_name():
    m = AnalogLinear(8, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        m.set_backend("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend(m, "gpu")


def test_auto_selects_by_device_and_numba_refuses_non_cpu():
    """'auto' reads by torch exactly when the weight is off the CPU ('meta' stands in for a GPU here)."""
    m = AnalogLinear(8, 4)
    assert not m._use_torch()
    m.set_backend("torch")
    assert m._use_torch()
    m.set_backend("auto")
    m.to("meta")
    assert m._use_torch()
    m.set_backend("numba")
    with pytest.raises(RuntimeError, match="runs on the CPU"):
        m._use_torch()


# ------------------------------------------------------------------------------------ CUDA

@cuda
def test_cuda_placement_forward_backward_drift():
    cfg = aimc.presets.default()
    torch.manual_seed(0)
    m = AnalogLinear(64, 32, config=cfg).to("cuda")
    x = torch.randn(50, 64, device="cuda", requires_grad=True)
    y = m(x)
    assert y.device.type == "cuda" and m._use_torch()
    y.sum().backward()
    assert x.grad.device.type == "cuda" and m.weight.grad.device.type == "cuda"
    tt = m.__dict__["_torch_tiles"]
    assert tt.blocks[0][2].fwd.W.device.type == "cuda"
    from aimc.deployment import bench
    m2 = AnalogLinear(64, 32, config=as_config(bench.DEPLOY_CONFIG))
    m2 = m2.to("cuda")
    m2.program()
    m2.drift(3600.0)
    m2.eval()
    with torch.no_grad():
        assert m2(x).device.type == "cuda"
    # same seed, same device: the same values
    a = AnalogLinear(64, 32, config=cfg, seed=4).to("cuda")
    b = AnalogLinear(64, 32, config=cfg, seed=4).to("cuda")
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@cuda
def test_cuda_matches_cpu_torch_noise_off():
    io = NOISE_OFF["iterative-bm"]
    W, x = _data(B=400)
    torch.backends.cuda.matmul.allow_tf32 = False
    yc = tb.mvm(tb.View(torch.from_numpy(W)), torch.from_numpy(x), io, _gen(), raw=True).numpy()
    g = torch.Generator(device="cuda").manual_seed(0)
    yg = tb.mvm(tb.View(torch.from_numpy(W).cuda()), torch.from_numpy(x).cuda(), io, g, raw=True).cpu().numpy()
    d = np.abs(yg - yc)
    assert d.max() <= np.float32(io.out_step) * 1.001 and np.mean(d > 0) < 0.01


@cuda
def test_cuda_hwa_step():
    from aimc.train import hwa
    torch.manual_seed(0)
    m = hwa.prepare(torch.nn.Sequential(torch.nn.Linear(64, 32)), "standard-hwa").to("cuda")
    opt = torch.optim.SGD(m.parameters(), lr=1e-2)
    hwa.hook_optimizer(opt, m)
    x = torch.randn(16, 64, device="cuda")
    loss = m(x).square().mean()
    loss.backward()
    opt.step()
    assert all(p.device.type == "cuda" for p in m.parameters())
