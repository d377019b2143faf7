"""AnalogLinear: equals torch.nn.Linear with the ideal preset (forward, gradients, 100 SGD steps)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aimc  # noqa: E402
from aimc.nn import AnalogLinear  # noqa: E402


def _pair(seed=0, i=20, o=7, cfg=None):
    torch.manual_seed(seed)
    ref = torch.nn.Linear(i, o)
    return ref, AnalogLinear.from_linear(ref, cfg or aimc.presets.ideal())


def test_forward_and_gradients_equal():
    ref, al = _pair()
    x = torch.randn(16, 20, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = ref(x), al(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(al.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(al.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-6)


def test_100_sgd_steps_equal():
    ref, al = _pair(1)
    o1 = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    o2 = torch.optim.SGD(al.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    for _ in range(100):
        x = torch.randn(16, 20, generator=g)
        t = torch.randn(16, 7, generator=g)
        losses = []
        for m, o in ((ref, o1), (al, o2)):
            o.zero_grad()
            loss = ((m(x) - t) ** 2).mean()
            loss.backward()
            o.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(al.weight, ref.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(al.bias, ref.bias, rtol=1e-5, atol=1e-6)


def test_split_layer_equals_linear():
    cfg = aimc.presets.ideal()
    cfg = cfg.replace(mapping=cfg.mapping.replace(max_in=8, max_out=5))
    ref, al = _pair(2, i=20, o=12, cfg=cfg)
    assert al.tiles.grid == (3, 3)
    x = torch.randn(4, 3, 20)  # extra leading dims
    torch.testing.assert_close(al(x), ref(x), rtol=1e-5, atol=1e-5)


def test_noisy_forward_close_and_trainable():
    ref, al = _pair(3, cfg="default")
    x = torch.rand(64, 20)
    err = (al(x) - ref(x)).abs().mean().item()
    assert 0 < err < 0.2
    y = al(x).sum()
    y.backward()
    assert al.weight.grad is not None and torch.isfinite(al.weight.grad).all()


def test_program_then_reads_programmed_state():
    ref, al = _pair(4)
    al.program()
    with torch.no_grad():
        al.weight.zero_()  # the chip keeps what was programmed
    x = torch.randn(3, 20)
    torch.testing.assert_close(al(x), ref(x), rtol=1e-5, atol=1e-5)
    al.unprogram()
    torch.testing.assert_close(al(x), al.bias.expand(3, -1), rtol=0, atol=0)


def test_bad_input_shape():
    _, al = _pair()
    with pytest.raises(ValueError, match="features"):
        al(torch.randn(3, 19))


def test_numpy_views_not_copies():
    from aimc.nn._function import as_numpy
    t = torch.randn(5, 4)
    assert np.shares_memory(as_numpy(t), t.numpy())
