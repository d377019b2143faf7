"""The thread-pool policy (aimc.threads) and the fused convolution path change speed only, never results."""
import numba
import numpy as np
import pytest

import aimc
from aimc import threads
from aimc.config import IOConfig, TileConfig

DEPLOY_IO = IOConfig(inp_bits=8, out_bits=8, out_bound=10.0, out_noise=0.04, noise_management="abs_max",
                     bound_management="none")


def _two_threads():
    return min(2, numba.config.NUMBA_NUM_THREADS)


def test_kernel_threads_serial_below_threshold_and_restores():
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(_two_threads())
        with threads.kernel_threads(threads.SMALL_WORK - 1):
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == _two_threads()
        with threads.kernel_threads(threads.SMALL_WORK):
            assert numba.get_num_threads() == _two_threads()
    finally:
        numba.set_num_threads(n0)


@pytest.mark.parametrize("io", [DEPLOY_IO, aimc.presets.default().forward, aimc.presets.standard_hwa().forward])
def test_serial_and_parallel_kernels_give_identical_reads(io, monkeypatch):
    cfg = TileConfig(forward=io)
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((40, 70)) * 0.1).astype(np.float32)
    x = rng.uniform(-1, 1, (300, 70)).astype(np.float32)
    out = []
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(_two_threads())
        for small in (0, 1 << 40):  # every call parallel, every call on the calling thread
            monkeypatch.setattr(threads, "SMALL_WORK", small)
            tile = aimc.Tile(40, 70, cfg, seed=3)
            tile.set_weights(W)
            out.append(tile.forward(x))
    finally:
        numba.set_num_threads(n0)
    np.testing.assert_array_equal(out[0], out[1])


def test_set_product_routes_every_product():
    calls = []

    def product(a, b):
        calls.append(a.shape)
        return np.dot(a, b)

    tile = aimc.Tile(8, 16, TileConfig(forward=DEPLOY_IO), seed=1)
    tile.set_weights(np.full((8, 16), 0.1, np.float32))
    x = np.ones((5, 16), np.float32)
    old = threads._product
    try:
        threads.set_product(product)
        y1 = tile.forward(x)
    finally:
        threads.set_product(old)
    assert calls == [(5, 16)]
    tile2 = aimc.Tile(8, 16, TileConfig(forward=DEPLOY_IO), seed=1)
    tile2.set_weights(np.full((8, 16), 0.1, np.float32))
    np.testing.assert_array_equal(y1, tile2.forward(x))


def test_lstm_same_result_on_1_and_2_threads_torch_and_numba():
    torch = pytest.importorskip("torch")
    from aimc.convert import convert_to_analog, drift, program
    from aimc.nn.bench import DEPLOY_CONFIG
    torch.manual_seed(0)
    model = torch.nn.LSTM(12, 20, num_layers=2)
    x = torch.randn(7, 300, 12)  # the input read has 2100 rows: above SMALL_WORK, parallel on 2 threads
    outs = []
    n0, t0 = numba.get_num_threads(), torch.get_num_threads()
    try:
        for nt in (1, _two_threads()):
            numba.set_num_threads(nt)
            torch.set_num_threads(nt)
            a = convert_to_analog(model, DEPLOY_CONFIG, seed=4).eval()
            program(a)
            drift(a, 3600.0)
            with torch.no_grad():
                outs.append(a(x)[0])
    finally:
        numba.set_num_threads(n0)
        torch.set_num_threads(t0)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
