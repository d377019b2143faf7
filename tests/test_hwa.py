"""Hardware-aware training (aimc.train.hwa): modifier statistics, eval/train switching, clipping and
remapping invariants, input-range learning (custom gradient vs its definition and finite differences),
parity with torch.nn under the ideal preset, checkpoints, conv layers, the CLI."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aimc  # noqa: E402
from aimc.config import ConfigError, IOConfig, NoiseManagement, TileConfig  # noqa: E402
from aimc.nn import AnalogLinear  # noqa: E402
from aimc.rng import Stream  # noqa: E402
from aimc.train import hwa  # noqa: E402
from aimc.train.hwa import (ClipType, HWAConfig, InputRange, ModifierType, RemapType, WeightClip,  # noqa: E402
                            WeightModifier, WeightRemap)

N = 200_000  # weights per moment test: relative SE of a std ~ 1/sqrt(2N) = 0.16 %


def _W(amax=2.0, seed=0, shape=(400, 500)):
    rng = np.random.default_rng(seed)
    W = rng.uniform(-amax, amax, shape).astype(np.float32)
    W[0, 0] = amax  # exact amax
    return W


def _z_ok(sample_mean, mu, sd, n, k=5.0):
    return abs(sample_mean - mu) < k * sd / math.sqrt(n)


# --------------------------------------------------------------------------------------------- modifiers

def test_add_normal_moments():
    W = _W()
    mod = WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.05)
    d = (hwa.modify_weights(W, mod, Stream(1, "m")) - W).ravel().astype(np.float64)
    sigma = 0.05 * 2.0  # relative to amax = 2
    assert _z_ok(d.mean(), 0.0, sigma, d.size)
    assert d.std() == pytest.approx(sigma, rel=5 / math.sqrt(2 * d.size))


def test_assumed_wmax_replaces_amax():
    W = _W()
    mod = WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.05, rel_to_actual_wmax=False, assumed_wmax=0.5)
    d = (hwa.modify_weights(W, mod, Stream(1, "m")) - W).ravel()
    assert d.std() == pytest.approx(0.025, rel=0.02)


def test_mult_normal_relative_to_amax():
    W = _W()
    W[np.abs(W) < 0.1] = 0.5
    mod = WeightModifier(ModifierType.MULT_NORMAL, std_dev=0.02)
    ratio = (hwa.modify_weights(W, mod, Stream(2, "m")) / W - 1).ravel().astype(np.float64)
    sigma = 0.02 * 2.0  # documented semantics: w (1 + std_dev amax xi)
    assert _z_ok(ratio.mean(), 0.0, sigma, ratio.size)
    assert ratio.std() == pytest.approx(sigma, rel=0.01)


def test_poly_default_coeffs_are_the_pcm_polynomial_over_25uS():
    import device_models as dm
    card = dm.load("pcm-joshi2020")
    c = hwa._default_coeffs(WeightModifier(ModifierType.POLY, std_dev=1.0), relative=True)
    np.testing.assert_allclose(c, np.asarray(card.prog_coeff) / 25.0)
    assert c[1] == pytest.approx(0.0786)  # not aihwkit's 0.0768 (digit swap)
    W = _W()
    mod = WeightModifier(ModifierType.POLY, std_dev=2.0)
    d = (hwa.modify_weights(W, mod, Stream(3, "m")) - W).astype(np.float64)
    a = np.abs(W) / 2.0
    sig = 2.0 * 2.0 * (c[0] + c[1] * a + c[2] * a * a)
    z = (d / sig).ravel()
    assert _z_ok(z.mean(), 0, 1, z.size)
    assert z.std() == pytest.approx(1.0, rel=0.01)


def test_prog_noise_sigma_and_sign_preserved():
    W = _W()
    mod = WeightModifier(ModifierType.PROG_NOISE, std_dev=1.0)
    Wm = hwa.modify_weights(W, mod, Stream(4, "m"))
    assert np.all(np.sign(Wm[W > 0]) >= 0) and np.all(np.sign(Wm[W < 0]) <= 0)
    big = np.abs(W) > 0.5  # far from 0: |.| does not fold the noise
    a = np.abs(W[big]) / 2.0
    sig = 2.0 * (1.0 / 25.0) * (0.26348 + 1.965 * a - 1.1731 * a * a)
    z = ((np.abs(Wm[big]) - np.abs(W[big])) / sig).astype(np.float64)
    assert _z_ok(z.mean(), 0, 1, z.size)
    assert z.std() == pytest.approx(1.0, rel=0.01)


def test_discretize_levels_and_error():
    W = _W()
    mod = WeightModifier(ModifierType.DISCRETIZE, res=0.1)
    Wm = hwa.modify_weights(W, mod, Stream(5, "m"))
    step = 2.0 * 0.1  # amax * res
    k = Wm / step
    np.testing.assert_allclose(k, np.rint(k), atol=1e-4)
    assert np.abs(Wm - W).max() <= step / 2 + 1e-6
    assert len(np.unique(np.rint(k))) == 21  # -10 .. 10
    # res > 1 is a step count
    Wm2 = hwa.modify_weights(W, WeightModifier(ModifierType.DISCRETIZE, res=10.0), Stream(5, "m"))
    np.testing.assert_array_equal(Wm, Wm2)


def test_discretize_stochastic_is_unbiased_and_neighbouring():
    W = np.full((400, 500), 0.33, np.float32)
    W[0, 0] = 1.0
    mod = WeightModifier(ModifierType.DISCRETIZE, res=0.25, sto_round=True)
    Wm = hwa.modify_weights(W, mod, Stream(6, "m")).ravel()[1:].astype(np.float64)
    assert set(np.round(np.unique(Wm), 6)) == {0.25, 0.5}
    p = (0.33 - 0.25) / 0.25  # probability of rounding up
    assert _z_ok((Wm == 0.5).mean(), p, math.sqrt(p * (1 - p)), Wm.size)
    assert _z_ok(Wm.mean(), 0.33, 0.25 * math.sqrt(p * (1 - p)), Wm.size)


def test_discretize_add_normal():
    W = _W()
    q = hwa.modify_weights(W, WeightModifier(ModifierType.DISCRETIZE, res=0.1), Stream(7, "m"))
    Wm = hwa.modify_weights(W, WeightModifier(ModifierType.DISCRETIZE_ADD_NORMAL, res=0.1, std_dev=0.03),
                            Stream(7, "m"))
    d = (Wm - q).ravel().astype(np.float64)
    assert _z_ok(d.mean(), 0, 0.06, d.size)
    assert d.std() == pytest.approx(0.06, rel=0.01)


def test_drop_connect_fraction_and_survivors():
    W = _W()
    mod = WeightModifier(ModifierType.DROP_CONNECT, pdrop=0.3)
    Wm = hwa.modify_weights(W, mod, Stream(8, "m"))
    dropped = Wm == 0
    assert _z_ok(dropped.mean(), 0.3, math.sqrt(0.3 * 0.7), W.size)
    np.testing.assert_array_equal(Wm[~dropped], W[~dropped])
    # pdrop combines with other types
    Wa = hwa.modify_weights(W, WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.01, pdrop=0.5), Stream(8, "m"))
    assert _z_ok((Wa == 0).mean(), 0.5, 0.5, W.size)


def test_pcm_noise_matches_device_model_oracle():
    """t = 0: the weights are those of a differential PCM pair programmed and read by device_models."""
    import device_models as dm
    m = dm.load("pcm-joshi2020")
    amax, w0 = 1.0, 0.6
    W = np.full((400, 500), w0, np.float32)
    W[0, 0] = amax
    mod = WeightModifier(ModifierType.PCM_NOISE)
    Wm = hwa.modify_weights(W, mod, Stream(9, "m")).ravel()[1:].astype(np.float64)
    G = np.zeros((2, Wm.size))
    G[0] = w0 * m.g_max
    oracle = m.sample(G, 0.0, seed=123)
    Wo = (oracle[0] - oracle[1]) / m.g_max
    se = Wo.std() / math.sqrt(Wo.size)
    assert abs(Wm.mean() - Wo.mean()) < 6 * se
    assert Wm.std() == pytest.approx(Wo.std(), rel=0.02)
    assert Wm.std() > 0.05  # really noisy (sigma_prog(0.6 g_max) ~ 1.8 uS ~ 7 % of g_max)


def test_pcm_noise_excludes_mean_drift():
    W = _W(amax=1.0)
    s = Stream(10, "m")
    w0 = hwa.modify_weights(W, WeightModifier(ModifierType.PCM_NOISE), s)
    wy = hwa.modify_weights(W, WeightModifier(ModifierType.PCM_NOISE, pcm_t_inference=3.15e7), s)
    # mean magnitude kept (global compensation), spread larger (drift variation + more read noise)
    assert np.abs(wy).mean() == pytest.approx(np.abs(W).mean(), rel=0.02)
    assert np.abs(w0).mean() == pytest.approx(np.abs(W).mean(), rel=0.02)
    assert (wy - W).std() > 1.1 * (w0 - W).std()


def test_modifier_config_errors():
    with pytest.raises(ConfigError, match="res"):
        WeightModifier(ModifierType.DISCRETIZE)
    with pytest.raises(ConfigError, match="pdrop"):
        WeightModifier(pdrop=1.0)
    with pytest.raises(ConfigError, match="pcm_device"):
        WeightModifier(ModifierType.PCM_NOISE, pcm_device="no-such-card")
    with pytest.raises(ConfigError, match="type"):
        WeightModifier("gaussian")


def test_config_json_round_trip():
    _, h = hwa.preset("standard-hwa")
    h2 = h.replace(modifier=WeightModifier(ModifierType.POLY, std_dev=0.5, coeffs=(0.1, 0.2)))
    assert HWAConfig.from_json(h2.to_json()) == h2
    with pytest.raises(ConfigError, match="unknown HWA preset"):
        hwa.preset("fancy")


# --------------------------------------------------------------------------------------------- layers

def _layer(hcfg, tcfg=None, i=30, o=8, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(i, o)
    al = AnalogLinear.from_linear(lin, tcfg or aimc.presets.ideal(), seed, "l")
    hwa.attach(al, hcfg)
    return lin, al


def test_modifier_on_in_training_off_in_eval():
    h = HWAConfig(modifier=WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.1))
    lin, al = _layer(h)
    x = torch.randn(5, 30)
    al.eval()
    torch.testing.assert_close(al(x), lin(x), rtol=1e-5, atol=1e-5)
    al.train()
    y1, y2 = al(x), al(x)
    assert (y1 - lin(x)).abs().max() > 1e-3
    torch.testing.assert_close(y1, y2)  # one sample per weight version (= per mini-batch)
    with torch.no_grad():
        al.weight.add_(0.0)  # an optimizer step changes the version: a fresh sample
    assert (al(x) - y1).abs().max() > 1e-4
    al.eval()
    torch.testing.assert_close(al(x), lin(x), rtol=1e-5, atol=1e-5)
    h2 = HWAConfig(modifier=WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.1, enable_during_test=True))
    lin, al = _layer(h2)
    al.eval()
    assert (al(x) - lin(x)).abs().max() > 1e-3


def test_modifier_gradient_is_straight_through():
    h = HWAConfig(modifier=WeightModifier(ModifierType.ADD_NORMAL, std_dev=0.2))
    lin, al = _layer(h)
    al.train()
    x = torch.randn(6, 30, requires_grad=True)
    g = torch.randn(6, 8)
    al(x).backward(g)
    wm = torch.from_numpy(al.hwa._sample[1])
    torch.testing.assert_close(al.weight.grad, g.t() @ x.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, g @ wm, rtol=1e-5, atol=1e-5)  # backward sees the modified weights


def test_clip_types():
    rng = np.random.default_rng(0)
    W = torch.from_numpy(rng.standard_normal((20, 50)).astype(np.float32))
    a = W.clone()
    hwa.clip_weights_(a, WeightClip(ClipType.FIXED_VALUE, fixed_value=0.5))
    assert a.abs().max() <= 0.5 and torch.equal(a[W.abs() < 0.5], W[W.abs() < 0.5])
    b = W.clone()
    hwa.clip_weights_(b, WeightClip(ClipType.LAYER_GAUSSIAN, sigma=1.5))
    assert b.abs().max() == pytest.approx(1.5 * float(W.std()), rel=1e-6)
    c = W.clone()
    hwa.clip_weights_(c, WeightClip(ClipType.AVERAGE_CHANNEL_MAX))
    assert c.abs().max() == pytest.approx(float(W.abs().amax(1).mean()), rel=1e-6)
    d = W.clone()
    hwa.clip_weights_(d, WeightClip(ClipType.LAYER_GAUSSIAN, sigma=2.5, fixed_value=0.3))
    assert d.abs().max() == pytest.approx(0.3)


@pytest.mark.parametrize("kind", [RemapType.CHANNELWISE_SYMMETRIC, RemapType.LAYERWISE_SYMMETRIC])
def test_remap_keeps_function_and_normalises(kind):
    rng = np.random.default_rng(1)
    W = torch.from_numpy(rng.standard_normal((20, 50)).astype(np.float32))
    W[3] = 0  # an all-zero column is left alone
    s = torch.from_numpy(rng.uniform(0.5, 2, 20).astype(np.float32))
    eff = s[:, None] * W
    Wr, sr = W.clone(), s.clone()
    hwa.remap_(Wr, sr, WeightRemap(kind, remapped_wmax=0.8))
    torch.testing.assert_close(sr[:, None] * Wr, eff, rtol=1e-6, atol=1e-6)
    if kind == RemapType.CHANNELWISE_SYMMETRIC:
        m = Wr.abs().amax(1)
        torch.testing.assert_close(m[torch.arange(20) != 3], torch.full((19,), 0.8))
        assert sr[3] == s[3]
    else:
        assert float(Wr.abs().max()) == pytest.approx(0.8)


def test_post_step_clip_then_remap_on_layer():
    tcfg, h = hwa.preset("standard-hwa")
    _, al = _layer(h, tcfg)
    eff0 = hwa.effective_weight(al)
    torch.testing.assert_close(al.weight.abs().amax(1), torch.ones(8))  # remapped at attach
    with torch.no_grad():
        al.weight[0, 0] = 3.0    # clipped to 1 (FIXED_VALUE 1.0), then the column remapped
        al.weight[1].mul_(0.5)  # remapped back to max 1, scale doubled
    s1 = al.hwa.out_scale[1].item()
    hwa.post_step(al)
    assert al.weight[0, 0].item() == pytest.approx(1.0)
    torch.testing.assert_close(al.weight.abs().amax(1), torch.ones(8))
    assert al.hwa.out_scale[1].item() == pytest.approx(0.5 * s1)
    torch.testing.assert_close(hwa.effective_weight(al)[2:], eff0[2:], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------- input ranges

def _ir_layer(i=12, o=5, max_in=0, decay=0.0, relative=False, init_from_data=0, seed=0):
    tcfg = aimc.presets.ideal()
    tcfg = tcfg.replace(mapping=tcfg.mapping.replace(max_in=max_in))
    h = HWAConfig(input_range=InputRange(enable=True, init_value=1.0, init_from_data=init_from_data, decay=decay,
                                         gradient_relative=relative))
    return _layer(h, tcfg, i, o, seed)


def test_input_range_forward_is_clip_then_scale_back():
    for max_in in (0, 5):
        lin, al = _ir_layer(max_in=max_in)
        with torch.no_grad():
            al.hwa.input_range.copy_(torch.linspace(0.5, 1.5, al.hwa.input_range.numel()))
        rv = al.hwa._expand(al.hwa.input_range.detach())
        x = 2 * torch.randn(7, 12)
        torch.testing.assert_close(al(x), lin(torch.clamp(x, -rv, rv)), rtol=1e-5, atol=1e-5)


def test_input_range_gradient_equals_definition():
    """Custom gradient (training.md §1.4) against the definition computed from a pure-torch reference."""
    for max_in, relative, decay in ((0, False, 0.0), (5, True, 0.0), (5, True, 0.01), (0, False, 0.01)):
        lin, al = _ir_layer(max_in=max_in, relative=relative, decay=decay)
        ir = al.hwa.config.input_range
        with torch.no_grad():
            al.hwa.input_range.copy_(torch.linspace(0.8, 1.2, al.hwa.input_range.numel()) * (3 if decay else 1))
        r = al.hwa.input_range.detach().clone()
        x = 1.2 * torch.randn(9, 12)
        g = torch.randn(9, 5)
        al(x).backward(g)
        # reference: delta at the clipped input = g W (straight-through), then the definition per split
        delta = g @ lin.weight.detach()
        bounds = al.hwa._bounds
        for k, (a, b) in enumerate(bounds):
            xk, dk = x[:, a:b], delta[:, a:b]
            ref = dk[xk >= r[k]].clamp(max=0).sum() - dk[xk <= -r[k]].clamp(min=0).sum()
            if relative:
                ref = ref * r[k]
            ref = ref * ir.gradient_scale
            if decay and (xk.abs() < r[k]).float().mean() > ir.input_min_percentage:
                ref = ref + decay * r[k]
            assert al.hwa.input_range.grad[k].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
        # the input gradient passes the clip unmasked; the weight gradient sees the clipped input
        rv = al.hwa._expand(r)
        torch.testing.assert_close(al.weight.grad, g.t() @ torch.clamp(x, -rv, rv), rtol=1e-5, atol=1e-5)


def test_input_range_gradient_finite_differences():
    """Where every clipped input's gradient pushes outwards, the one-sided custom gradient is the true
    derivative of the loss: compare with central finite differences of the (ideal) layer's loss."""
    torch.manual_seed(5)
    lin, al = _ir_layer(i=10, o=4)
    with torch.no_grad():
        al.weight.copy_(torch.rand(4, 10) + 0.1)      # positive weights
        al.hwa.input_range.fill_(0.7)
    x = torch.rand(16, 10) * 1.5                        # positive inputs, some above r
    x[(x - 0.7).abs() < 0.03] += 0.1                    # the loss is linear in r on [r - eps, r + eps]
    loss_fn = lambda m: -(m(x).sum())                   # dL/dy = -1 -> delta = -W^T 1 < 0
    al.zero_grad()
    loss_fn(al).backward()
    g = al.hwa.input_range.grad.item()
    eps = 0.02
    with torch.no_grad():
        al.hwa.input_range.fill_(0.7 + eps)
        lp = loss_fn(al).item()
        al.hwa.input_range.fill_(0.7 - eps)
        lm = loss_fn(al).item()
    fd = (lp - lm) / (2 * eps)
    assert g < 0 and g == pytest.approx(fd, rel=5e-3)


def test_input_range_init_from_data():
    lin, al = _ir_layer(max_in=5, init_from_data=3)
    al.train()
    xs = [s * torch.randn(20, 12) for s in (1.0, 2.0, 0.5, 4.0)]
    r = al.hwa.input_range.detach().clone().double()
    for i, x in enumerate(xs[:3]):
        al(x)
        for k, (a, b) in enumerate(al.hwa._bounds):
            r[k] = abs((r[k] * i + 3.0 * x[:, a:b].std().double()) / (i + 1))
    torch.testing.assert_close(al.hwa.input_range.detach().double(), r, rtol=1e-5, atol=1e-6)
    al(xs[3])  # past init_from_data: unchanged
    torch.testing.assert_close(al.hwa.input_range.detach().double(), r, rtol=1e-5, atol=1e-6)
    assert int(al.hwa.ir_batches) == 3


def test_input_range_needs_constant_nm():
    h = HWAConfig(input_range=InputRange(enable=True))
    with pytest.raises(ConfigError, match="noise_management"):
        _layer(h, aimc.presets.default())
    with pytest.raises(ConfigError, match="manage_output_clipping"):
        InputRange(enable=True, manage_output_clipping=True)


def test_output_scale_gradient():
    h = HWAConfig(learn_out_scaling=True)
    lin, al = _layer(h)
    with torch.no_grad():
        al.hwa.out_scale.copy_(torch.linspace(0.5, 2, 8))
    x = torch.randn(4, 30)
    g = torch.randn(4, 8)
    s = al.hwa.out_scale.detach()
    torch.testing.assert_close(al(x) - al.bias, (x @ al.weight.detach().t()) * s, rtol=1e-5, atol=1e-5)
    al(x).backward(g)
    torch.testing.assert_close(al.hwa.out_scale.grad, (g * (x @ al.weight.detach().t())).sum(0), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(al.weight.grad, s[:, None] * (g.t() @ x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- parity, training

def test_ideal_preset_equals_torch_linear_through_training():
    torch.manual_seed(1)
    ref = torch.nn.Sequential(torch.nn.Linear(20, 7))
    model = hwa.prepare(ref, "ideal")
    assert isinstance(model[0], AnalogLinear) and model is not ref
    o1 = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    o2 = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hwa.hook_optimizer(o2, model)
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        x, t = torch.randn(16, 20, generator=g), torch.randn(16, 7, generator=g)
        for m, o in ((ref, o1), (model, o2)):
            o.zero_grad()
            ((m(x) - t) ** 2).mean().backward()
            o.step()
    torch.testing.assert_close(model[0].weight, ref[0].weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[0].bias, ref[0].bias, rtol=1e-5, atol=1e-6)


def test_standard_hwa_trains_on_digits():
    from aimc import datasets, zoo
    ds = datasets.load("digits")
    torch.manual_seed(0)
    model = hwa.prepare(zoo.mlp(64, (32,), 10), "standard-hwa")
    acc = hwa.train(model, ds, epochs=3, lr=3e-2, batch_size=64, seed=0)  # 69 steps
    assert acc > 0.8
    r = model.fc1.hwa.input_range.detach()
    assert torch.all(r > 0) and int(model.fc1.hwa.ir_batches) == 69  # ranges initialised from every batch
    assert model.fc1.weight.abs().amax(1).sub(1).abs().max() < 1e-5  # remapped after every step


def test_conv_layers_train_with_hwa():
    from aimc import zoo
    torch.manual_seed(0)
    net = zoo.cnn((1, 8, 8), channels=(4,), hidden=16, kernel_size=3)
    net.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
    model = hwa.prepare(net, "standard-hwa")
    from aimc.nn import AnalogConv2d
    assert isinstance(model.conv1, AnalogConv2d) and model.conv1.hwa is not None
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    hwa.hook_optimizer(opt, model)
    x, y = torch.rand(16, 64), torch.randint(0, 10, (16,))
    w0 = model.conv1.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        assert model.conv1.hwa.input_range.grad is not None and model.conv1.hwa.out_scale.grad is not None
        opt.step()
    assert not torch.equal(model.conv1.weight, w0)
    torch.testing.assert_close(model.conv1.weight.reshape(4, -1).abs().amax(1), torch.ones(4))
    # grouped convolution: one TileSlot per group, each with its own HWA state
    g = torch.nn.Sequential(torch.nn.Unflatten(1, (2, 4, 4)), torch.nn.Conv2d(2, 4, 3, padding=1, groups=2),
                            torch.nn.Flatten())
    gm = hwa.prepare(g, "standard-hwa")
    slots = [n for n, _ in hwa.analog_layers(gm)]
    assert len(slots) == 2
    out = gm(torch.rand(3, 32))
    out.sum().backward()
    hwa.post_step(gm)
    sd = hwa.export_digital(gm)
    assert set(sd) == set(g.state_dict())


def test_prepare_keeps_analog_configs_and_errors():
    al = AnalogLinear(6, 3, config="default")
    with pytest.raises(ConfigError, match="noise_management"):
        hwa.prepare(al, None, hwa_config=HWAConfig(input_range=InputRange(enable=True)))
    m = hwa.prepare(al, None, hwa_config=HWAConfig(clip=WeightClip(ClipType.FIXED_VALUE, fixed_value=0.1)))
    assert m.config == aimc.presets.default() and float(m.weight.detach().abs().max()) <= 0.1 + 1e-7
    with pytest.raises(ValueError, match="no analog layers"):
        hwa.prepare(torch.nn.ReLU(), None)


def test_checkpoint_round_trip(tmp_path):
    from aimc import zoo
    tcfg, h = hwa.preset("standard-hwa")
    quiet = tcfg.forward.replace(out_noise=0.0, w_noise=0.0, w_noise_type="none")
    tcfg = tcfg.replace(forward=quiet)
    torch.manual_seed(0)
    model = hwa.prepare(zoo.mlp(64, (16,), 10), (tcfg, h))
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    hwa.hook_optimizer(opt, model)
    for _ in range(3):
        opt.zero_grad()
        model(torch.rand(8, 64)).sum().backward()
        opt.step()
    path = hwa.save_checkpoint(model, tmp_path / "m.pt", {"note": "t"})
    twin, meta = zoo.load_checkpoint(path)  # a plain torch model: output scales folded in
    assert meta["hwa"]["input_ranges"]["fc1"] == pytest.approx(model.fc1.hwa.input_range.tolist())
    loaded, _ = hwa.load_checkpoint(path)
    model.eval()
    x = torch.rand(10, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(twin.fc1.weight, hwa.effective_weight(model.fc1))


def test_hwa_model_survives_chip_image_round_trip(tmp_path):
    """Programmed + drifted HWA model: checkpoint (weights, input ranges, output scales) + chip image (tiles)
    reload into a model that computes exactly what the original computes next."""
    chip_mod = pytest.importorskip("aimc.chip")
    from aimc import convert, zoo
    torch.manual_seed(0)
    model = hwa.prepare(zoo.mlp(64, (16,), 10), "standard-hwa")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    hwa.hook_optimizer(opt, model)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.rand(16, 64)), torch.randint(0, 10, (16,))).backward()
        opt.step()
    chip = hwa.deploy_copy(model, seed=3)
    chip.eval()
    convert.program(chip)
    convert.drift(chip, 86400.0)
    ck = hwa.save_checkpoint(chip, tmp_path / "m.pt")
    img = chip_mod.save_chip(chip, tmp_path / "chip.h5")
    loaded, _ = hwa.load_checkpoint(ck)
    loaded = hwa.deploy_copy(loaded, chip.fc1.config, seed=3)
    chip_mod.load_chip(img, loaded)
    loaded.eval()
    assert loaded.fc1.programmed and loaded.fc1.tiles.time == 86400.0
    x = torch.rand(20, 64)
    torch.testing.assert_close(loaded(x), chip(x), rtol=1e-5, atol=1e-5)  # same conductances, same streams
    for a, b in zip(hwa.analog_layers(loaded), hwa.analog_layers(chip)):
        torch.testing.assert_close(a[1].hwa.input_range, b[1].hwa.input_range)


def test_cli_train_hwa_on_digits(tmp_path, capsys):
    from aimc.cli import main
    out = tmp_path / "d.pt"
    rc = main(["train", "--method", "hwa", "--data", "digits", "--epochs", "2", "--out", str(out), "--quiet",
               "--json", "--opt", "hidden=24", "--opt", "batch_size=64"])
    assert rc == 0
    import json
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["test_accuracy"] > 0.3 and out.is_file()  # 46 steps: a smoke test, accuracy is tested above
    model, meta = hwa.load_checkpoint(out)
    assert meta["method"] == "hwa" and model.fc1.hwa.input_range is not None
    assert main(["train", "--method", "nope"]) == 2
    assert main(["train", "--data", "digits", "--opt", "colour=red"]) == 2
    assert main(["train", "--data", "digits", "--out", str(out), "--epochs", "1"]) == 2  # exists, no --overwrite
