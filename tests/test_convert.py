"""Analog conv / RNN / attention layers, conversion, module-tree lifecycle and state_dict (torch)."""
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimc  # noqa: E402
from aimc.config import InferenceConfig  # noqa: E402
from aimc.convert import (analog_layers, convert_to_analog, convert_to_digital, drift, program,  # noqa: E402
                          read_weights, unprogram)
from aimc.nn import (AnalogConv1d, AnalogConv2d, AnalogGRU, AnalogLinear, AnalogLSTM,  # noqa: E402
                     AnalogMultiheadAttention, AnalogRNN)

IDEAL = aimc.presets.ideal()
TOL = dict(rtol=1e-5, atol=1e-5)


def _deterministic_drift(compensation="global"):
    """Ideal IO, a device with no noise and one drift exponent (nu = 0.1): G(t) = G ((t + 20)/20)^-0.1."""
    inf = InferenceConfig(device="state-independent", compensation=compensation,
                          device_params={"prog_noise_scale": 0.0, "read_noise_scale": 0.0, "nu_std": 0.0})
    return IDEAL.replace(inference=inf)


def _grads_equal(ref, ana, x, out_fn=lambda y: y):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = out_fn(ref(x1)), out_fn(ana(x2))
    torch.testing.assert_close(y2, y1, **TOL)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, **TOL)
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ana.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p2.grad, p1.grad, **TOL, msg=lambda m: f"{n1}: {m}")


# ------------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("kw", [
    dict(),
    dict(stride=2, padding=1, bias=False),
    dict(dilation=2, padding="same", padding_mode="reflect"),
    dict(groups=2, padding=(1, 2), padding_mode="circular"),
    dict(groups=4, padding="valid", stride=(1, 2)),           # depthwise (4 -> 8, 2 filters per channel)
])
def test_conv2d_equals_torch(kw):
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 8, 3, **kw)
    ana = AnalogConv2d.from_torch(ref, IDEAL)
    _grads_equal(ref, ana, torch.randn(2, 4, 9, 10))
    torch.testing.assert_close(ana(torch.ones(4, 9, 10)), ref(torch.ones(4, 9, 10)), **TOL)  # unbatched
    if ana.groups > 1:
        assert ana.group_tiles is not None and len(ana.group_tiles) == ana.groups
        assert ana.group_tiles[0].tiles.shape == (8 // ana.groups, 4 // ana.groups * 9)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=2, groups=2), dict(padding="same", dilation=3,
                                                                                  padding_mode="replicate")])
def test_conv1d_equals_torch(kw):
    torch.manual_seed(1)
    ref = nn.Conv1d(4, 6, 4, **kw)
    ana = AnalogConv1d.from_torch(ref, IDEAL)
    _grads_equal(ref, ana, torch.randn(3, 4, 17))


def test_conv_split_tiles_and_bad_input():
    cfg = IDEAL.replace(mapping=IDEAL.mapping.replace(max_in=10, max_out=3))
    torch.manual_seed(2)
    ref = nn.Conv2d(3, 7, 3, padding=1)
    ana = AnalogConv2d.from_torch(ref, cfg)
    assert ana.tiles.grid == (3, 3)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ana(x), ref(x), **TOL)
    with pytest.raises(ValueError, match="channels"):
        ana(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="divisible by groups"):
        AnalogConv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="padding"):
        AnalogConv2d(3, 6, 3, padding="full")


@pytest.mark.parametrize("cls,tcls,kw", [
    (AnalogLSTM, nn.LSTM, dict(num_layers=2, bidirectional=True)),
    (AnalogLSTM, nn.LSTM, dict(proj_size=3, batch_first=True)),
    (AnalogGRU, nn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True)),
    (AnalogRNN, nn.RNN, dict(nonlinearity="relu", num_layers=2)),
])
def test_rnn_equals_torch(cls, tcls, kw):
    torch.manual_seed(3)
    ref = tcls(5, 7, **kw)
    ana = cls.from_torch(ref, IDEAL)
    assert set(ana.state_dict()) >= set(ref.state_dict())  # torch's parameter names
    x = torch.randn(4, 6, 5)
    _grads_equal(ref, ana, x, out_fn=lambda out: out[0])
    h1, h2 = ref(x)[1], ana(x)[1]
    for a, b in zip(h1 if isinstance(h1, tuple) else (h1,), h2 if isinstance(h2, tuple) else (h2,)):
        torch.testing.assert_close(b, a, **TOL)
    xu = torch.randn(6, 5)  # unbatched
    torch.testing.assert_close(ana(xu)[0], ref(xu)[0], **TOL)


def test_lstm_initial_state_and_errors():
    torch.manual_seed(4)
    ref = nn.LSTM(3, 4)
    ana = AnalogLSTM.from_torch(ref, IDEAL)
    x = torch.randn(5, 2, 3)
    hx = (torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    torch.testing.assert_close(ana(x, hx)[0], ref(x, hx)[0], **TOL)
    with pytest.raises(ValueError, match="h_0 has shape"):
        ana(x, (torch.randn(1, 3, 4), torch.randn(1, 3, 4)))
    with pytest.raises(TypeError, match="PackedSequence"):
        ana(nn.utils.rnn.pack_padded_sequence(x, [5, 3]))


@pytest.mark.parametrize("kw", [dict(), dict(batch_first=True, add_bias_kv=True, add_zero_attn=True),
                                dict(kdim=5, vdim=3, bias=False)])
def test_mha_equals_torch(kw):
    torch.manual_seed(5)
    ref = nn.MultiheadAttention(8, 2, **kw)
    ana = AnalogMultiheadAttention.from_torch(ref, IDEAL)
    bf = kw.get("batch_first", False)
    shape = (lambda L, N, E: (N, L, E)) if bf else (lambda L, N, E: (L, N, E))
    q = torch.randn(*shape(4, 3, 8))
    k = torch.randn(*shape(6, 3, kw.get("kdim", 8)))
    v = torch.randn(*shape(6, 3, kw.get("vdim", 8)))
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[0, -2:] = True
    am = torch.triu(torch.ones(4, 6, dtype=torch.bool), 3)
    for args in (dict(), dict(key_padding_mask=kpm, attn_mask=am),
                 dict(attn_mask=-1.5 * am.float(), average_attn_weights=False)):
        o1, w1 = ref(q, k, v, **args)
        o2, w2 = ana(q, k, v, **args)
        torch.testing.assert_close(o2, o1, **TOL)
        torch.testing.assert_close(w2, w1, **TOL)
    o1, _ = ref(q, k, v)
    o2, _ = ana(q, k, v)
    o1.sum().backward()
    o2.sum().backward()
    torch.testing.assert_close(ana.out_proj.weight.grad, ref.out_proj.weight.grad, **TOL)


def test_transformer_layer_reads_the_tiles_in_eval():
    """torch's eval fast path would read the float weights; the converted layer must use the tiles."""
    torch.manual_seed(6)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        want = enc(x)
    ana = convert_to_analog(enc, IDEAL).eval()
    assert isinstance(ana.layers[0].self_attn, AnalogMultiheadAttention)
    program(ana)
    with torch.no_grad():
        for p in ana.parameters():
            if p.dim() == 2:
                p.zero_()  # the chip keeps what was programmed: only analog reads still see the weights
        got = ana(x, src_key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    torch.testing.assert_close(got, want, **TOL)


# ------------------------------------------------------------------------------------------- conversion

def _net():
    torch.manual_seed(7)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 3))


def test_convert_round_trip():
    net = _net()
    x = torch.randn(5, 1, 6, 6)
    ana = convert_to_analog(net, IDEAL, seed=3)
    assert [type(m) for m in ana] == [AnalogConv2d, nn.ReLU, AnalogConv2d, nn.Flatten, AnalogLinear, nn.ReLU,
                                      AnalogLinear]
    assert type(net[0]) is nn.Conv2d  # the original is untouched
    torch.testing.assert_close(ana(x), net(x), **TOL)
    back = convert_to_digital(ana)
    assert [type(m) for m in back] == [type(m) for m in net]
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    # layer names become tile ids: every layer has its own random stream
    assert ana[4].tiles.name == "4" and ana[2].group_tiles[1].tiles.name == "2/g1"


def test_convert_single_layer_and_other_types():
    lin = nn.Linear(3, 2)
    assert isinstance(convert_to_analog(lin, IDEAL), AnalogLinear)
    model = nn.ModuleDict({"rnn": nn.GRU(3, 4), "att": nn.MultiheadAttention(4, 2), "c1": nn.Conv1d(2, 2, 1)})
    ana = convert_to_analog(model, IDEAL)
    assert isinstance(ana["rnn"], AnalogGRU) and isinstance(ana["att"], AnalogMultiheadAttention)
    assert isinstance(ana["c1"], AnalogConv1d)
    back = convert_to_digital(ana)
    assert type(back["rnn"]) is nn.GRU and type(back["att"]) is nn.MultiheadAttention
    assert not back["att"]._forward_pre_hooks


def test_exclude_layers_and_per_layer():
    net = _net()
    a = convert_to_analog(net, IDEAL, exclude=["0", nn.Conv2d])
    assert type(a[0]) is nn.Conv2d and type(a[2]) is nn.Conv2d and isinstance(a[4], AnalogLinear)
    a = convert_to_analog(net, IDEAL, layers=["conv"])
    assert isinstance(a[0], AnalogConv2d) and type(a[4]) is nn.Linear
    a = convert_to_analog(net, IDEAL, layers=[nn.Linear], exclude=["6"])
    assert isinstance(a[4], AnalogLinear) and type(a[6]) is nn.Linear
    cfg_b = aimc.presets.default()
    a = convert_to_analog(net, IDEAL, per_layer={"4": cfg_b, "2": "default"})
    assert a[4].config == cfg_b and a[6].config == IDEAL and a[2].group_tiles[0].config == cfg_b
    # MultiheadAttention left digital keeps its out_proj digital (torch reads it directly)
    m = nn.ModuleDict({"att": nn.MultiheadAttention(4, 2), "fc": nn.Linear(4, 4)})
    a = convert_to_analog(m, IDEAL, layers=["linear"])
    assert type(a["att"].out_proj) is not AnalogLinear and isinstance(a["fc"], AnalogLinear)
    with pytest.raises(ValueError, match="'nope'.*not a module"):
        convert_to_analog(net, IDEAL, exclude=["nope"])
    with pytest.raises(ValueError, match="per_layer names 'zz'"):
        convert_to_analog(net, IDEAL, per_layer={"zz": IDEAL})
    with pytest.raises(ValueError, match="no layer is converted"):
        convert_to_analog(net, IDEAL, per_layer={"1": IDEAL})
    with pytest.raises(ValueError, match="unknown layer kind 'dense'"):
        convert_to_analog(net, IDEAL, layers=["dense"])
    with pytest.raises(ValueError, match="has no analog twin"):
        convert_to_analog(net, IDEAL, layers=[nn.BatchNorm2d])


# ------------------------------------------------------------------------------------------- lifecycle

def test_program_drift_compensation_on_a_tree():
    net = _net()
    x = torch.randn(4, 1, 6, 6)
    want = net(x).detach()
    ana = convert_to_analog(net, _deterministic_drift("global")).eval()
    names = [n for n, _ in analog_layers(ana)]
    assert names == ["0", "2.group_tiles.0", "2.group_tiles.1", "2.group_tiles.2", "2.group_tiles.3", "4", "6"]
    with pytest.raises(RuntimeError, match="not programmed"):
        drift(ana, 1.0)
    program(ana)
    assert all(m.programmed for _, m in analog_layers(ana)) and ana[2].programmed
    drift(ana, "1y")
    f = ((365.25 * 86400 + 20) / 20) ** -0.1
    w = read_weights(ana)
    torch.testing.assert_close(w["4"], net[4].weight.detach() * f, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ana(x), want, rtol=1e-4, atol=1e-4)  # global compensation undoes the drift
    with pytest.raises(ValueError, match="earlier than the clock"):
        drift(ana, "1d")
    ana2 = convert_to_analog(net, _deterministic_drift("none")).eval()
    program(ana2)
    drift(ana2, "1y")
    with torch.no_grad():
        assert not torch.allclose(ana2(x), want, rtol=1e-2, atol=1e-2)
    unprogram(ana)
    assert not ana[0].programmed
    with pytest.raises(ValueError, match="no analog layers"):
        program(net)


def test_state_dict_round_trip_programmed():
    net = _net()
    cfg = aimc.presets.default().replace(inference=InferenceConfig(device="pcm-joshi2020"),
                                         mapping=aimc.MappingConfig(weight_scaling_omega=1.0))
    cfg = cfg.replace(forward=cfg.forward.replace(bound_management="none"))
    a = convert_to_analog(net, cfg, seed=1).eval()
    program(a)
    drift(a, 3600.0)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    b = convert_to_analog(net, cfg, seed=2).eval()  # another chip until the state is loaded
    b.load_state_dict(sd)
    x = torch.randn(6, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
        drift(a, 86400.0)
        drift(b, 86400.0)
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert b[0].programmed and b[0].tiles.time == 86400.0
    other = convert_to_analog(net, IDEAL)
    with pytest.raises(ValueError, match="another TileConfig"):
        other.load_state_dict(sd)


def test_state_dict_round_trip_unprogrammed_lstm():
    torch.manual_seed(8)
    ref = nn.LSTM(3, 4)
    a = convert_to_analog(ref, "default", seed=5)
    b = convert_to_analog(nn.LSTM(3, 4), "default", seed=5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(b(x)[0], a(x)[0], rtol=0, atol=0)  # same weights, same noise streams
    assert np.isfinite(b(x)[0].detach().numpy()).all()
