"""The thread-pool policy (aimc.threads) and the fused convolution path change speed only, never results."""
import json
import os
import subprocess
import sys

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
        small = threads.small_work()
        assert small in (threads.SMALL_WORK, threads.SMALL_WORK_SHARED)
        with threads.kernel_threads(small - 1):
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == _two_threads()
        with threads.kernel_threads(small):
            assert numba.get_num_threads() == _two_threads()
    finally:
        numba.set_num_threads(n0)


_POOL_PROBE = """
import os, json, torch, numpy as np
torch.set_num_threads(2)
a = torch.randn(1500, 1500); (a @ a).sum(); torch.tanh(a)   # torch's pool is up
import numba, aimc
from aimc.core import threads
n0 = len(os.listdir("/proc/self/task"))
numba.set_num_threads(2)   # launches numba's threading layer
tile = aimc.Tile(256, 256)
for _ in range(3):
    tile.forward(np.ones((512, 256), np.float32)); (a @ a).sum()
print(json.dumps({"new_threads": len(os.listdir("/proc/self/task")) - n0, "shared": threads.shared_pool(),
                  "layer": numba.threading_layer()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or numba.config.NUMBA_NUM_THREADS < 2,
                    reason="counts threads in /proc; needs 2 numba threads")
@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_shared_pool_means_no_second_pool(layer):
    """``threads.shared_pool`` claims numba's kernels run on torch's OpenMP workers: then numba's parallel
    kernels start no thread of their own; numba's workqueue layer (a pool of its own) is not shared."""
    pytest.importorskip("torch", reason="the shared pool is torch's: needs torch (the py311-torch environment)")
    env = dict(os.environ, AIMC_KERNELS="parallel")   # numba's parallel kernels, also before the warm stamp exists
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, "-c", _POOL_PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if layer == "workqueue":
        assert not r["shared"]
    if r["shared"]:
        assert r["new_threads"] == 0   # numba's regions ran on torch's workers
    else:
        assert r["new_threads"] >= 1   # a pool of numba's own


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

    def product(a, b, out=None):
        calls.append(a.shape)
        return np.dot(a, b, out=out)

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


RNN_CASES = [
    ("LSTM", dict(input_size=6, hidden_size=10, num_layers=2), (5, 3, 6), False),
    ("LSTM", dict(input_size=6, hidden_size=10, proj_size=4, bidirectional=True, batch_first=True), (3, 5, 6), True),
    ("GRU", dict(input_size=6, hidden_size=8, num_layers=2, bidirectional=True), (4, 6), False),  # unbatched
    ("RNN", dict(input_size=6, hidden_size=8, nonlinearity="relu", bias=False), (5, 2, 6), True),
]


@pytest.mark.parametrize("preset", ["deploy", "noisy-input"])
@pytest.mark.parametrize("kind,kw,shape,with_hx", RNN_CASES)
def test_rnn_inference_loop_equals_autograd_loop(kind, kw, shape, with_hx, preset):
    """The no-autograd time-step loop (``_steps_inference``) gives the autograd loop's numbers bit for bit
    (same reads, same random counters; the hidden bias and input part added in numpy)."""
    torch = pytest.importorskip("torch")
    from aimc import nn as ann
    cfg = _configs()[preset]
    if preset == "noisy-input":  # a zero initial state through abs-max NM with input noise reads NaN (any path)
        cfg = cfg.replace(forward=cfg.forward.replace(noise_management="constant", nm_thres=1.0))
    outs, used = [], []
    for fast in (True, False):
        torch.manual_seed(0)
        m = getattr(ann, "Analog" + kind)(**kw, config=cfg, seed=2).eval()
        if cfg.inference is not None:
            m.program()
            m.drift(60.0)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        hx = None
        if with_hx:
            ndir = 2 if m.bidirectional else 1
            b = shape[0] if m.batch_first else shape[1]
            hx = torch.randn(m.num_layers * ndir, b, m.proj_size or m.hidden_size)
            if kind == "LSTM":
                hx = (hx, torch.randn(m.num_layers * ndir, b, m.hidden_size))
        real = m._steps_inference
        m._steps_inference = lambda *a: used.append(fast) or real(*a)
        if fast:
            with torch.no_grad():
                outs.append(m(x, hx))
        else:  # gradients needed: every read through analog_matmul
            outs.append(m(x.requires_grad_(True), hx))
    assert used == [True] * (m.num_layers * (2 if m.bidirectional else 1))
    flat = [torch.utils._pytree.tree_leaves(o) for o in outs]
    assert len(flat[0]) == len(flat[1])
    for a, b in zip(*flat):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- fused conv

CONV_CASES = [
    ("Conv2d", dict(in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2),
     (3, 8, 11, 13)),
    ("Conv2d", dict(in_channels=6, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 0),
                    groups=6), (2, 6, 9, 8)),
    ("Conv2d", dict(in_channels=64, out_channels=20, kernel_size=3, padding=1), (2, 64, 6, 6)),  # 2 input tiles
    ("Conv2d", dict(in_channels=4, out_channels=5, kernel_size=3, padding="same", padding_mode="reflect"),
     (2, 4, 7, 7)),
    ("Conv1d", dict(in_channels=6, out_channels=4, kernel_size=5, stride=3, padding=2, dilation=2, groups=2),
     (2, 6, 40)),
]


def _exact_product(a, b, out=None):
    """A product whose rows do not depend on how many rows are multiplied (float64, then rounded)."""
    r = np.dot(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    if out is None:
        return r
    out[...] = r
    return out


def _fused_and_reference(kind, kw, shape, cfg, monkeypatch, chunk=300):
    torch = pytest.importorskip("torch")
    import aimc.tile
    from aimc import nn as ann
    monkeypatch.setattr(aimc.tile, "PATCH_CHUNK", chunk)  # many chunks, chunk borders inside images
    calls = []
    real = aimc.tile.TileArray.forward_patches
    monkeypatch.setattr(aimc.tile.TileArray, "forward_patches", lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = []
    for fused in (True, False):
        torch.manual_seed(0)
        m = getattr(ann, "Analog" + kind)(**kw, config=cfg, seed=1).eval()
        if cfg.inference is not None:
            m.program()
            m.drift(100.0)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        if cfg.calibration is not None:  # static DAC range and ADC ranges chosen on other inputs (unfused read)
            from aimc.convert import calibrate
            calibrate(m, 0.7 * torch.randn(*shape, generator=torch.Generator().manual_seed(3)))
            arrays = [m.tiles] if m.group_tiles is None else [g.tiles for g in m.group_tiles]
            assert all(t.calibrated and t.fusable for t in arrays)
        if fused:
            with torch.no_grad():
                outs.append(m(x))
            assert calls, "the fused path was not taken"
        else:  # a gradient is needed: the layer builds the patch matrix and reads it through analog_matmul
            n = len(calls)
            outs.append(m(x.requires_grad_(True)).detach())
            assert len(calls) == n
    return outs


def _configs():
    from aimc.config import TileConfig
    from aimc.nn.bench import DEPLOY_CONFIG
    deploy = TileConfig.from_dict(DEPLOY_CONFIG)
    noisy_in = deploy.replace(forward=deploy.forward.replace(inp_noise=0.02, inp_sto_round=True,
                                                             w_noise=0.01, w_noise_type="additive_constant"),
                              inference=None)
    from aimc.config import CalibrationConfig
    cal_col = deploy.replace(calibration=CalibrationConfig(out="percentile", out_percentile=99.0))
    cal_tile = noisy_in.replace(inference=deploy.inference,
                                calibration=CalibrationConfig(inp="max", out_granularity="tile"))
    return {"deploy": deploy, "standard-hwa": aimc.presets.standard_hwa(), "noisy-input": noisy_in,
            "calibrated-column": cal_col, "calibrated-tile": cal_tile}


@pytest.mark.parametrize("preset", ["deploy", "standard-hwa", "noisy-input", "calibrated-column",
                                    "calibrated-tile"])
@pytest.mark.parametrize("kind,kw,shape", CONV_CASES)
def test_fused_conv_equals_unfused_element_wise(kind, kw, shape, preset, monkeypatch):
    """With a product whose rows do not depend on the chunking, the fused path gives today's values exactly
    (same random counters per element: NM, DAC, input noise, output noise, ADC)."""
    pytest.importorskip("torch")
    old = threads._product
    threads.set_product(_exact_product)
    try:
        fused, ref = _fused_and_reference(kind, kw, shape, _configs()[preset], monkeypatch)
    finally:
        threads.set_product(old)
    assert fused.shape == ref.shape
    assert (fused == ref).all()


@pytest.mark.parametrize("kind,kw,shape", CONV_CASES)
def test_fused_conv_with_blas_products_within_one_adc_step(kind, kw, shape, monkeypatch):
    """With the process's BLAS the chunked products may round differently (float32: |dy| <~ n eps |W||x|), so
    an output next to an ADC threshold may move by one ADC step; everything else is identical."""
    pytest.importorskip("torch")
    cfg = _configs()["deploy"]
    fused, ref = _fused_and_reference(kind, kw, shape, cfg, monkeypatch)
    d = (fused - ref).abs()
    assert (d > 0).float().mean() <= 0.01
    # one ADC step at the output, scaled back by NM alpha (<= max|x|) and the column scale (<= max|w|)
    step = cfg.forward.out_step * float(ref.abs().max()) * 10
    assert float(d.max()) <= step


def test_fused_conv_working_memory_bounded_by_the_chunk(monkeypatch):
    torch = pytest.importorskip("torch")
    import tracemalloc

    import aimc.tile
    from aimc.nn import AnalogConv2d
    from aimc.nn.bench import DEPLOY_CONFIG
    monkeypatch.setattr(aimc.tile, "PATCH_CHUNK", 1 << 12)
    conv = AnalogConv2d(16, 8, 3, padding=1, config=DEPLOY_CONFIG, seed=0).eval()
    x = torch.randn(8, 16, 32, 32)
    with torch.no_grad():
        conv(x)  # warm-up (kernels compiled, weights synced)
        tracemalloc.start()
        y = conv(x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    patch_matrix = 8 * 32 * 32 * 16 * 9 * 4   # what the unfused path writes (4.7 MB)
    output = y.numel() * 4                    # the result itself (262 kB)
    assert peak < output + 16 * (1 << 12) * 4 < patch_matrix / 8, (peak, output)
    with torch.enable_grad():  # the unfused reference path holds the patch matrix
        tracemalloc.start()
        conv(x.requires_grad_(True))
        peak_unfused = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak_unfused > patch_matrix


def test_fused_conv_counts_what_the_unfused_read_counts(monkeypatch):
    """The cost counters (aimc.cost) of a fused read equal those of the patch-matrix read."""
    torch = pytest.importorskip("torch")
    import aimc.tile
    from aimc.nn import AnalogConv2d
    monkeypatch.setattr(aimc.tile, "PATCH_CHUNK", 300)
    counts = []
    for fused in (True, False):
        torch.manual_seed(0)
        conv = AnalogConv2d(64, 20, 3, padding=1, config=_configs()["deploy"], seed=1).eval()  # 2 input tiles
        x = torch.randn(2, 64, 6, 6, generator=torch.Generator().manual_seed(2))
        conv.tiles.reset_counts()
        if fused:
            with torch.no_grad():
                conv(x)
        else:
            conv(x.requires_grad_(True))
        counts.append(conv.tiles.counts().to_dict())
    for k, v in counts[1].items():
        assert counts[0][k] == pytest.approx(v, rel=1e-5), k
    assert counts[0]["mvms"] == 2 * 36 * 2  # rows x input tiles


def test_fused_conv_reads_channels_last_inputs_and_padding_in_place():
    """The fused gather reads a channels-last input through its strides and the zero padding as zeros: the
    same values as from the NCHW input (two layers of the same seed: the same programmed chip and noise)."""
    torch = pytest.importorskip("torch")
    from aimc.nn import AnalogConv2d
    x = torch.randn(2, 16, 9, 11, generator=torch.Generator().manual_seed(4))
    xl = x.to(memory_format=torch.channels_last)
    assert not xl.is_contiguous()
    ys = []
    for inp in (x, xl):
        torch.manual_seed(0)
        conv = AnalogConv2d(16, 8, 3, stride=2, padding=(2, 1), config=_configs()["deploy"], seed=3).eval()
        conv.program()
        with torch.no_grad():
            ys.append(conv(inp))
    assert ys[0].shape == (2, 8, 6, 6) and bool(ys[0].abs().sum() > 0)
    assert (ys[0] == ys[1]).all()
