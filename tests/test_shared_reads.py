"""Tiles of a TileArray that share one input slice read as one (``periphery.mvm_shared``): the values, counts,
clip counts and stream positions of one read per tile (issue 14, the analog LSTM's speed)."""
import numpy as np
import pytest

import aimc.core.tile as tile_mod
from aimc import InferenceConfig, IOConfig, MappingConfig, Tile, TileArray, TileConfig
from aimc.core import threads

IOS = [
    IOConfig(bound_management="none", out_bound=2.0),   # the deploy periphery (abs-max NM, 8 bits, output noise)
    IOConfig(bound_management="none", w_noise=0.05, w_noise_type="pcm_read", ir_drop=1.0, out_nonlinearity=0.1,
             out_sto_round=True),                        # weight noise drawn first, PCM read noise, IR drop, stochastic ADC
    IOConfig(bound_management="none", w_noise=0.05, w_noise_type="additive_constant", bm_test_negative_bound=True),
]


def _float64_product(a, bt, out=None):
    """A product whose float32 result does not depend on how BLAS splits the columns: the test holds the
    element-wise stages to exact equality; the stacked product itself may sum in another order (float32
    rounding, ``periphery.mvm_shared``)."""
    y = (a.astype(np.float64) @ bt.astype(np.float64)).astype(np.float32)
    if out is None:
        return y
    out[...] = y
    return out


@pytest.fixture
def f64_product():
    old = threads._product
    threads.set_product(_float64_product)
    yield
    threads.set_product(old)


def _count_shared(monkeypatch) -> list:
    """A list that gets one entry per ``mvm_shared`` call of ``aimc.core.tile``."""
    calls = []
    real = tile_mod.mvm_shared
    monkeypatch.setattr(tile_mod, "mvm_shared", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _both_ways(monkeypatch, run) -> dict:
    """``run()``'s results with shared reads allowed (True) and not (False: one ``mvm`` read per tile)."""
    out = {}
    for shared in (True, False):
        monkeypatch.setattr(tile_mod, "shared_fusable", (lambda io: True) if shared else (lambda io: False))
        out[shared] = run()
    return out


def _assert_same(out: dict) -> None:
    for a, c in zip(out[True], out[False]):
        np.testing.assert_array_equal(a, c) if isinstance(a, np.ndarray) else (a == c or pytest.fail(f"{a} != {c}"))


@pytest.mark.parametrize("io", IOS)
@pytest.mark.parametrize("max_in", [64, 8])   # one input split, three
def test_shared_reads_equal_one_read_per_tile(monkeypatch, f64_product, io, max_in):
    rng = np.random.default_rng(0)
    W = rng.uniform(-1, 1, (13, 20)).astype(np.float32)
    x = rng.uniform(-1, 1, (9, 20)).astype(np.float32)
    x[2] = 0.0                                          # a zero row (the noise-management guard)
    b = rng.uniform(-1, 1, 13).astype(np.float32)
    add = rng.uniform(-1, 1, (9, 13)).astype(np.float32)
    cfg = TileConfig(forward=io, mapping=MappingConfig(max_out=5, max_in=max_in, weight_scaling_omega=1.0,
                                                      weight_scaling_columnwise=True),
                     inference=InferenceConfig(device="pcm-joshi2020", compensation="global"))
    calls = _count_shared(monkeypatch)

    def run():
        arr = TileArray(13, 20, cfg, seed=3)
        arr.program(W)
        arr.drift(3600.0)                               # per-column output factors (omega scale x compensation)
        y = arr.forward(x)
        y2 = arr._forward_add(x, b, add)
        assert arr.grid == (3, 20 // max_in + (20 % max_in > 0))
        return y, y2, arr.counts().to_dict(), arr.clip_counts(), [t.stream.call for t in arr.all_tiles()]
    out = _both_ways(monkeypatch, run)
    assert len(calls) == 2 * (20 // max_in + (20 % max_in > 0))  # both reads of the shared run: mvm_shared
    _assert_same(out)


@pytest.mark.parametrize("io", IOS)
@pytest.mark.parametrize("omega", [0.0, 1.0])   # no digital factor; per-column factors (omega x compensation)
def test_single_tile_forward_equals_its_mvm_read(monkeypatch, io, omega):
    """A plain Tile forward is one ``mvm_shared`` read whose output stage applies ``mvm``'s rescale and the
    tile's digital factor: the values, counts, clip counts and stream position of ``mvm`` plus y *= factor
    (the same product: exact equality)."""
    rng = np.random.default_rng(1)
    W = rng.uniform(-1, 1, (13, 20)).astype(np.float32)
    x = rng.uniform(-1, 1, (9, 20)).astype(np.float32)
    x[4] = 0.0
    cfg = TileConfig(forward=io, mapping=MappingConfig(weight_scaling_omega=omega, weight_scaling_columnwise=True),
                     inference=InferenceConfig(device="pcm-joshi2020", compensation="global"))
    calls = _count_shared(monkeypatch)

    def run():
        t = Tile(13, 20, cfg, seed=5)
        t.program(W)
        t.drift(3600.0)
        assert t._out is not None
        return t.forward(x), t.forward(x[:3]), t.counts.to_dict(), t.clip_counts(), t.stream.call
    out = _both_ways(monkeypatch, run)
    assert len(calls) == 2
    _assert_same(out)


def test_reads_that_cannot_share_fall_back_to_one_read_per_tile(monkeypatch):
    """Input noise (keyed by the tile's stream) makes each tile's DAC output its own: no shared read."""
    monkeypatch.setattr(tile_mod, "mvm_shared", lambda *a, **k: pytest.fail("shared read with input noise"))
    arr = TileArray(13, 20, TileConfig(forward=IOConfig(inp_noise=0.01, bound_management="none"),
                                       mapping=MappingConfig(max_out=5)), seed=1)
    arr.set_weights(np.ones((13, 20), np.float32) * 0.1)
    assert arr.forward(np.ones((2, 20), np.float32)).shape == (2, 13)


def test_lstm_with_shared_reads_equals_one_read_per_tile(monkeypatch, f64_product):
    torch = pytest.importorskip("torch")
    from aimc.convert import convert_to_analog, drift, program
    from aimc.nn.bench import DEPLOY_CONFIG
    cfg = {**DEPLOY_CONFIG, "mapping": {**DEPLOY_CONFIG["mapping"], "max_out": 16}}   # 4 x 6 gates: 2 tiles
    torch.manual_seed(0)
    model = torch.nn.LSTM(5, 6, num_layers=2)
    x = torch.randn(7, 3, 5)
    outs = []
    for shared in (True, False):
        monkeypatch.setattr(tile_mod, "shared_fusable", (lambda io: True) if shared else (lambda io: False))
        a = convert_to_analog(model, cfg, seed=4).eval()
        program(a)
        drift(a, 3600.0)
        assert a.slots["hh_l0"].tiles.grid == (2, 1)
        with torch.no_grad():
            y, (h, c) = a(x)
        outs.append((y, h, c))
    for p, q in zip(*outs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("io", IOS)
def test_shared_read_with_scratch_equals_fresh_arrays(f64_product, io):
    """A hidden read that reuses its working arrays and result between calls (``scratch``, an RNN's time
    steps) gives the values, counts and stream positions of reads with fresh arrays, read after read and
    when the batch changes between reads."""
    rng = np.random.default_rng(1)
    W = rng.uniform(-1, 1, (13, 20)).astype(np.float32)
    b = rng.uniform(-1, 1, 13).astype(np.float32)
    reads = [(rng.uniform(-1, 1, (B, 20)).astype(np.float32), rng.uniform(-1, 1, (B, 13)).astype(np.float32))
             for B in (9, 9, 4, 9)]
    cfg = TileConfig(forward=io, mapping=MappingConfig(max_out=5, weight_scaling_omega=1.0,
                                                      weight_scaling_columnwise=True),
                     inference=InferenceConfig(device="pcm-joshi2020", compensation="global"))
    out = {}
    for reuse in (True, False):
        arr = TileArray(13, 20, cfg, seed=3)
        arr.program(W)
        arr.drift(3600.0)
        scratch = {} if reuse else None
        ys, ids = [], []
        for x, add in reads:
            y = arr._forward_add(x, b, add, scratch)
            ys.append(y.copy())
            ids.append(id(y))
        out[reuse] = (ys, arr.counts().to_dict(), arr.clip_counts(), [t.stream.call for t in arr.all_tiles()])
        if reuse:
            assert ids[0] == ids[1] and ids[2] != ids[1]   # reused while the shape stays, remade when it changes
    for a, c in zip(out[True][0], out[False][0]):
        np.testing.assert_array_equal(a, c)
    assert out[True][1:] == out[False][1:]


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_rnn_inference_loop_with_shared_reads_equals_autograd_loop(kind):
    """With the hidden read shared by several tiles (its arrays reused from step to step), the no-autograd
    step loop gives the autograd loop's numbers bit for bit."""
    torch = pytest.importorskip("torch")
    from aimc import nn as ann
    from aimc.nn.bench import DEPLOY_CONFIG
    cfg = {**DEPLOY_CONFIG, "mapping": {**DEPLOY_CONFIG["mapping"], "max_out": 8}}   # 3-4 x 6 gates: 3 tiles
    outs = []
    for fast in (True, False):
        torch.manual_seed(0)
        m = getattr(ann, "Analog" + kind)(5, 6, num_layers=2, config=cfg, seed=2).eval()
        m.program()
        m.drift(60.0)
        assert m.slots["hh_l0"].tiles.grid[0] == 3
        x = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(1))
        if fast:
            with torch.no_grad():
                outs.append(m(x))
        else:
            outs.append(m(x.requires_grad_(True)))
    for a, c in zip(torch.utils._pytree.tree_leaves(outs[0]), torch.utils._pytree.tree_leaves(outs[1])):
        torch.testing.assert_close(a, c.detach(), rtol=0, atol=0)
