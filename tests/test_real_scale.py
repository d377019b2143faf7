"""Models at real scale, in small configurations of the same architectures (torch; BERT needs transformers):
ResNet-32 (zoo.resnet) and a BERT encoder (zoo.bert) converted, programmed, drifted, evaluated and
HWA-trained one step; conversion coverage (conversion_report, the error for layers left digital)."""
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimc  # noqa: E402
from aimc import zoo  # noqa: E402
from aimc.convert import (UnconvertedLayerError, analog_layers, conversion_report, convert_to_analog,  # noqa: E402
                          drift, program)
from aimc.train import hwa  # noqa: E402

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=100, max_position_embeddings=16, num_labels=3)


def _tiny_bert():
    pytest.importorskip("transformers", reason="zoo.bert needs transformers (pip install 'aimc[transformers]')")
    torch.manual_seed(0)
    return zoo.bert(**TINY_BERT).eval()


def _linear_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _hwa_step(model, x, y):
    """One HWA step; returns (loss, largest weight change)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    hwa.post_step(model)
    change = max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters() if n in before)
    return float(loss.detach()), change


# ------------------------------------------------------------------------------------------------ ResNet-32

def test_resnet32_architecture():
    m = zoo.resnet()
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 33  # 1 + 3 stages x 5 blocks x 2, plus 2 projection shortcuts
    assert sum(p.numel() for p in m.parameters() if p.ndim >= 2) == 464_432
    x = torch.rand(2, 3 * 32 * 32)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m(x.reshape(2, 3, 32, 32)))
    assert zoo.parameter_count("resnet", {"depth": 32}) == 466_906
    with pytest.raises(ValueError, match="6n \\+ 2"):
        zoo.resnet(depth=30)
    with pytest.raises(ValueError, match="input must be"):
        m(torch.rand(2, 3, 16, 16))


def test_resnet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = zoo.resnet(depth=8, width=4).eval()
    path = zoo.save_checkpoint(m, tmp_path / "r.pt")
    back, _ = zoo.load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_resnet32_conversion_covers_every_conv_and_fc():
    torch.manual_seed(0)
    m = zoo.resnet().eval()
    a = convert_to_analog(m, aimc.presets.ideal(), seed=0)
    rep = aimc.conversion_report(a)  # the top-level name is the module's function
    assert rep == conversion_report(a)
    assert set(rep["analog"]) == {n for n, x in m.named_modules() if isinstance(x, (nn.Conv2d, nn.Linear))}
    assert len(rep["analog"]) == 34
    assert rep["analog_weights"] == 464_432 and rep["digital_weights"] == 0
    assert len(rep["digital"]) == 33 and all("normalisation" in why for why in rep["digital"].values())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), m(x), rtol=1e-4, atol=1e-4)


def test_resnet32_program_drift_evaluate_and_hwa_step():
    torch.manual_seed(0)
    m = zoo.resnet().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3 * 32 * 32, generator=g), torch.tensor([3, 7])
    a = convert_to_analog(m, "default", seed=0).eval()
    program(a)
    drift(a, "1d")
    with torch.no_grad():
        out, ref = a(x), m(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert not torch.allclose(out, ref)  # the chip is noisy
    assert all(layer.tiles.time == pytest.approx(86400.0) for _, layer in analog_layers(a))
    assert 0.0 <= zoo.evaluate(a, x, y) <= 1.0

    h = hwa.prepare(zoo.resnet(), "standard-hwa", seed=0)
    assert len(hwa.analog_layers(h)) == 34 and all(l.hwa.input_range is not None for _, l in hwa.analog_layers(h))
    loss, change = _hwa_step(h, x, y)
    assert loss == loss and change > 0  # finite loss, the weights moved


# ------------------------------------------------------------------------------------------------ BERT

def test_bert_conversion_covers_attention_and_mlp_linears():
    m = _tiny_bert()
    a = convert_to_analog(m, aimc.presets.ideal(), seed=0).eval()
    rep = conversion_report(a)
    linears = _linear_names(m)
    assert len(linears) == 2 * 6 + 2  # q, k, v, attention output, intermediate, output per layer; pooler, classifier
    assert set(rep["analog"]) == linears
    emb = {n for n, why in rep["digital"].items() if why.startswith("embedding")}
    norms = {n for n, why in rep["digital"].items() if why.startswith("normalisation")}
    assert emb == {f"model.bert.embeddings.{k}_embeddings" for k in ("word", "position", "token_type")}
    assert len(norms) == 1 + 2 * 2 and all("LayerNorm" in n for n in norms)
    assert set(rep["digital"]) == emb | norms
    assert rep["digital_weights"] == sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n and p.ndim == 2)
    ids = torch.randint(0, TINY_BERT["vocab_size"], (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(a(ids), m(ids), rtol=1e-4, atol=1e-4)


def test_bert_program_drift_evaluate_and_hwa_step():
    m = _tiny_bert()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, TINY_BERT["vocab_size"], (4, 8), generator=g)
    y = torch.tensor([0, 1, 2, 0])
    a = convert_to_analog(m, "default", seed=0).eval()
    program(a)
    drift(a, "1y")
    with torch.no_grad():
        out = a(ids)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    assert all(layer.programmed for _, layer in analog_layers(a)) and len(analog_layers(a)) == 14
    assert 0.0 <= zoo.evaluate(a, ids, y) <= 1.0

    torch.manual_seed(0)
    h = hwa.prepare(zoo.bert(**TINY_BERT), "standard-hwa", seed=0)
    assert len(hwa.analog_layers(h)) == 14
    loss, change = _hwa_step(h, ids, y)
    assert loss == loss and change > 0
    assert all(l.hwa.input_range.grad is not None for _, l in hwa.analog_layers(h))


def test_bert_needs_transformers_message(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"aimc\[transformers\]"):
        zoo.bert()


# ------------------------------------------------------------------------------------------------ coverage

class _Custom(nn.Module):
    """A leaf layer with a weight matrix aimc has no twin for."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return x @ self.w


def test_layer_left_digital_unexpectedly_is_an_error_naming_it():
    model = nn.Sequential(nn.Linear(4, 4), _Custom(), nn.Sequential(nn.Conv3d(1, 2, 1)))
    with pytest.raises(UnconvertedLayerError, match=r"'1' \(_Custom, w \(4, 4\)\).*'2.0' \(Conv3d, weight"):
        convert_to_analog(model)
    with pytest.warns(UserWarning, match="'2.0' \\(Conv3d"):
        a = convert_to_analog(model, unconverted="warn")
    assert [n for n, _ in analog_layers(a)] == ["0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = convert_to_analog(model, exclude=["1", nn.Conv3d])  # kept digital on purpose: no error
        convert_to_analog(model, unconverted="ignore")
    rep = conversion_report(a)
    assert rep["analog"] == {"0": "AnalogLinear"}
    assert "no analog twin for _Custom" in rep["digital"]["1"] and "Conv3d" in rep["digital"]["2.0"]
    with pytest.raises(ValueError, match="unconverted must be one of"):
        convert_to_analog(model, unconverted="skip")


def test_supported_layers_not_selected_are_expected_digital():
    model = nn.Sequential(nn.Conv1d(2, 2, 1), nn.Flatten(), nn.Linear(4, 4), nn.LayerNorm(4))
    a = convert_to_analog(model, layers="linear")  # no error: the conv is a supported kind, not selected
    rep = conversion_report(a)
    assert rep["analog"] == {"2": "AnalogLinear"}
    assert rep["digital"]["0"].startswith("supported layer left digital")
    assert rep["digital"]["3"].startswith("normalisation")
    mha = nn.MultiheadAttention(8, 2)
    rep = conversion_report(convert_to_analog(nn.Sequential(mha, nn.Linear(8, 8)), layers="linear"))
    assert rep["digital"] == {"0": "supported layer left digital (excluded, or not selected by layers=)"}


def test_gpt2_conv1d_is_named():
    pytest.importorskip("transformers", reason="needs transformers")
    from transformers.pytorch_utils import Conv1D
    model = nn.Sequential(nn.Linear(4, 6), Conv1D(8, 6))
    with pytest.raises(UnconvertedLayerError, match=r"'1' \(Conv1D, weight \(6, 8\)\)"):
        convert_to_analog(model)
