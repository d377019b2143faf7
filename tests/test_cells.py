"""The LSTM cell kernel (kernels.cells) against float64 formulas, its autograd bridge (nn._function.LSTMCell)
against torch's own ops, and the analog LSTM's kept working arrays (core.periphery.ScratchPool)."""
import copy
import pickle
import threading

import numba
import numpy as np
import pytest

from aimc.kernels import cells


@numba.njit
def _apply(x, e, s, t):
    for k in range(x.size):
        e[k] = cells.exp32(x[k])
        s[k] = cells.sigmoid32(x[k])
        t[k] = cells.tanh32(x[k])


def _ulp(got, exact):
    return float(np.max(np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)))


def test_exp_sigmoid_tanh_within_a_few_ulp_of_float64():
    x = np.concatenate([np.linspace(-12, 12, 200001), np.geomspace(1e-30, 1e-2, 2001),
                        -np.geomspace(1e-30, 1e-2, 2001), [0.0, 0.25, -0.25]]).astype(np.float32)
    e, s, t = (np.empty_like(x) for _ in range(3))
    _apply(x, e, s, t)
    x64 = x.astype(np.float64)
    assert _ulp(e, np.exp(x64)) <= 1.5
    assert _ulp(s, 1 / (1 + np.exp(-x64))) <= 2.5
    assert _ulp(t, np.tanh(x64)) <= 5.0
    assert np.all(t[x == 0] == 0) and np.all(np.sign(t) == np.sign(x))
    big = np.array([-1e4, -100, 100, 1e4], np.float32)   # clipped arguments: saturated, finite
    e, s, t = (np.empty_like(big) for _ in range(3))
    _apply(big, e, s, t)
    assert np.all(np.isfinite(e)) and np.all(s[:2] < 1e-37) and s[2:].tolist() == [1.0, 1.0]
    assert t.tolist() == [-1.0, -1.0, 1.0, 1.0]


def _cell64(gates, c):
    g = gates.astype(np.float64)
    H = c.shape[1]
    sig = lambda z: 1 / (1 + np.exp(-z))
    i, f, gg, o = sig(g[:, :H]), sig(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), sig(g[:, 3 * H:])
    cn = f * c + i * gg
    return o * np.tanh(cn), cn, np.concatenate([i, f, gg, o, np.tanh(cn)], axis=1)


@pytest.mark.parametrize("B,H", [(3, 5), (64, 256), (1, 17)])
def test_lstm_cell_matches_float64_and_is_thread_count_independent(rng, B, H):
    gates = (rng.standard_normal((B, 4 * H)) * 4).astype(np.float32)
    c = (rng.standard_normal((B, H)) * 2).astype(np.float32)
    h64, c64, a64 = _cell64(gates, c.astype(np.float64))
    outs = []
    n0 = numba.get_num_threads()
    try:
        for nt in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(nt)
            h, cn, act = np.empty_like(c), np.empty_like(c), np.empty((B, 5 * H), np.float32)
            cells.lstm_cell(gates, c, h, cn, act)
            outs.append((h, cn, act))
    finally:
        numba.set_num_threads(n0)
    h, cn, act = outs[0]
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(h, h64, rtol=0, atol=4e-7)
    np.testing.assert_allclose(cn, c64, rtol=3e-7, atol=3e-7)
    np.testing.assert_allclose(act, a64, rtol=0, atol=4e-7)
    h2, c2 = np.empty_like(c), c.copy()   # in place (c_out is c), no activations saved: the same values
    cells.lstm_cell(gates, c2, h2, c2, np.empty((1, 0), np.float32))
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(c2, cn)


def test_lstm_cell_autograd_matches_torch_ops():
    torch = pytest.importorskip("torch")
    from aimc.nn._function import LSTMCell
    g = torch.Generator().manual_seed(0)
    gates = (torch.randn(6, 4 * 9, generator=g) * 3).requires_grad_(True)
    c = torch.randn(6, 9, generator=g).requires_grad_(True)
    wh, wc = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    h, cn = LSTMCell.apply(gates, c)
    ((h * wh).sum() + (cn * wc).sum()).backward()
    got = gates.grad.clone(), c.grad.clone()
    g64, c64 = gates.detach().double().requires_grad_(True), c.detach().double().requires_grad_(True)

    def ref():
        i, f, gg, o = g64.chunk(4, dim=1)
        c_ref = torch.sigmoid(f) * c64 + torch.sigmoid(i) * torch.tanh(gg)
        return torch.sigmoid(o) * torch.tanh(c_ref), c_ref

    h_ref, c_ref = ref()
    ((h_ref * wh).sum() + (c_ref * wc).sum()).backward()
    torch.testing.assert_close(h.double(), h_ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(got[0].double(), g64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1].double(), c64.grad, rtol=1e-5, atol=1e-6)
    h, cn = LSTMCell.apply(gates, c)   # only h used: the missing gradient of c' counts as zero
    gates.grad = c.grad = None
    (h * wh).sum().backward()
    g64.grad = c64.grad = None
    (ref()[0] * wh).sum().backward()
    torch.testing.assert_close(gates.grad.double(), g64.grad, rtol=1e-5, atol=1e-6)


def _lstm(torch):
    from aimc.convert import convert_to_analog, drift, program
    from aimc.nn.bench import DEPLOY_CONFIG
    cfg = {**DEPLOY_CONFIG, "mapping": {**DEPLOY_CONFIG["mapping"], "max_out": 16}}   # 40 gates: 3 tiles per read
    torch.manual_seed(0)
    a = convert_to_analog(torch.nn.LSTM(6, 10, num_layers=2), cfg, seed=3).eval()
    program(a)
    drift(a, 60.0)
    return a


def test_kept_arrays_change_no_value_and_are_never_saved():
    """An analog LSTM keeps its inference reads' arrays between forwards (``ScratchPool``): two forwards
    give the values of two forwards of a copy whose arrays are dropped before each; pickles and deep copies
    carry none of them; another thread gets arrays of its own."""
    torch = pytest.importorskip("torch")
    a = _lstm(torch)
    b = copy.deepcopy(a)
    x = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya = [a(x)[0] for _ in range(2)]
        yb = []
        for _ in range(2):
            b._scratch_pool().clear()
            yb.append(b(x)[0])
    assert not torch.equal(ya[0], ya[1])    # two reads, two draws of the noise
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    kept = a._scratch_pool().get("ih")
    assert kept and all(isinstance(v, np.ndarray) for v in kept.values())
    size = len(pickle.dumps(a))
    a._scratch_pool().clear()
    assert len(pickle.dumps(a)) == size     # the kept arrays are not in the pickle
    with torch.no_grad():
        a(x)
    assert not pickle.loads(pickle.dumps(a))._scratch_pool().get("ih")
    assert not copy.deepcopy(a)._scratch_pool().get("ih")
    other = []
    assert a._scratch_pool().get("ih")
    th = threading.Thread(target=lambda: other.append(a._scratch_pool().get("ih")))
    th.start()
    th.join()
    assert other == [{}]
