"""The crossbar tile: ideal parity, quantisers, bound management, weight noise, IR drop, splitting, seeds."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimc import IOConfig, MappingConfig, Tile, TileArray, TileConfig
from aimc.config import BoundManagement as BM
from aimc.config import NoiseManagement as NM
from aimc.config import WeightNoiseType as WN
from aimc.config import ideal
from aimc.mapping import split_sizes

QUIET = dict(out_noise=0.0, inp_bits=0, out_bits=0, out_bound=0.0, noise_management=NM.NONE,
             bound_management=BM.NONE, inp_bound=1e6)


def cfg(**kw):
    io = IOConfig(**{**QUIET, **kw})
    return TileConfig(forward=io, backward=io, mapping=MappingConfig(max_in=0, max_out=0))


def test_ideal_tile_equals_matmul(rng):
    W = rng.standard_normal((37, 53)).astype(np.float32)
    x = rng.standard_normal((9, 53)).astype(np.float32)
    d = rng.standard_normal((9, 37)).astype(np.float32)
    t = Tile(37, 53, ideal(), seed=0)
    t.program(W)
    np.testing.assert_allclose(t.forward(x), x @ W.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.backward(d), d @ W, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.read_weights(), W, rtol=1e-6, atol=1e-6)
    assert t.forward(x[0]).shape == (37,)


def test_quiet_pipeline_equals_matmul(rng):
    """All stages present but switched off: the noisy path reduces to the product."""
    W = rng.standard_normal((20, 30)).astype(np.float32)
    x = rng.standard_normal((5, 30)).astype(np.float32)
    t = Tile(20, 30, cfg(), seed=1)
    t.set_weights(W)
    np.testing.assert_allclose(t.forward(x), x @ W.T, rtol=1e-5, atol=1e-5)


def test_dac_quantiser_step_and_clip(rng):
    n = 64
    t = Tile(n, n, cfg(inp_bits=7, inp_bound=1.0), seed=0)
    t.set_weights(np.eye(n, dtype=np.float32))
    x = rng.uniform(-1.5, 1.5, (200, n)).astype(np.float32)
    y = t.forward(x)
    step = 2 / (2**7 - 2)
    expect = np.clip(np.rint(x / np.float32(step)) * np.float32(step), -1, 1)
    np.testing.assert_allclose(y, expect, atol=1e-6)
    levels = np.unique(np.round(y / step))
    assert levels.min() == -63 and levels.max() == 63 and len(levels) == 127


def test_adc_quantiser_step_and_clip(rng):
    n = 32
    t = Tile(n, n, cfg(out_bits=9, out_bound=12.0), seed=0)
    t.set_weights(np.eye(n, dtype=np.float32))
    x = rng.uniform(-20, 20, (100, n)).astype(np.float32)
    y = t.forward(x)
    step = 24 / 510
    np.testing.assert_allclose(y, np.clip(np.rint(x / np.float32(step)) * np.float32(step), -12, 12), atol=1e-5)


def test_stochastic_rounding_is_unbiased():
    n = 8
    t = Tile(n, n, cfg(inp_bits=3, inp_bound=1.0, inp_sto_round=True), seed=3)
    t.set_weights(np.eye(n, dtype=np.float32))
    x = np.full((20000, n), 0.1, np.float32)  # step 1/3: levels 0 and 1/3
    y = t.forward(x)
    assert set(np.unique(np.round(y * 3))) <= {0.0, 1.0}
    m = y.mean()
    assert abs(m - 0.1) < 3 * np.sqrt(0.3 * 0.7 / y.size) / 3 + 1e-6


def _bm_tile(n=64, **kw):
    c = cfg(inp_bits=7, inp_bound=1.0, out_bits=9, out_bound=12.0, noise_management=NM.ABS_MAX,
            bound_management=BM.ITERATIVE, **kw)
    return Tile(n, n, c, seed=0)


def test_iterative_bm_removes_clipping_noise_off(rng):
    n = 64
    t = _bm_tile(n)
    W = rng.uniform(0.2, 0.6, (n, n)).astype(np.float32)  # outputs ~ 25 > out_bound 12
    t.set_weights(W)
    x = rng.uniform(0.5, 1, (50, n)).astype(np.float32)
    y = t.forward(x)
    ideal_y = x @ W.T
    assert np.abs(ideal_y).max() > 12  # would clip without BM
    alpha = np.abs(x).max(axis=1, keepdims=True)
    # f = 4 suffices here (ideal/alpha < 48): error is at most the rescaled DAC+ADC rounding
    out_step = 24 / 510
    in_err = (2 / 126) / 2 * np.abs(W).sum(axis=1)[None, :]
    assert np.all(np.abs(y - ideal_y) <= alpha * 4 * (out_step / 2 + in_err / 4) + 1e-4)
    assert np.all(np.abs(y) < alpha * 4 * 12)  # not stuck at a clipped value


def test_iterative_bm_rereads_only_clipped_rows(rng):
    """Rows that clip are re-read with larger f; the others keep their first read (noise off: exact)."""
    n = 64
    t = _bm_tile(n)
    t.set_weights(np.full((n, n), 0.5, np.float32))
    x = np.zeros((6, n), np.float32)
    x[::2] = 1.0                      # W x = 32: clips at f = 1, fine at f = 4
    x[1::2, 0] = 1.0                  # W x = 0.5: never clips
    y = t.forward(x)
    err = lambda f, row_abs: f * (row_abs * (2 / 126) / 2 + (24 / 510) / 2)  # rescaled DAC + ADC rounding
    np.testing.assert_allclose(y[::2], 32.0, atol=err(4, 32.0) + 1e-5)
    np.testing.assert_allclose(y[1::2], 0.5, atol=err(1, 0.5) + 1e-5)
    assert np.all(np.abs(y[::2]) > 24)  # not left at a clipped f = 1 or f = 2 read


def test_iterative_bm_stop_rule_last_pass_f16():
    n = 64
    t = _bm_tile(n)
    t.set_weights(np.full((n, n), 50.0, np.float32))  # ideal output 3200 >> 12 * 16
    y = t.forward(np.ones((3, n), np.float32))
    np.testing.assert_allclose(y, 12 * 16, rtol=1e-6)  # clipped at f = 16, the last allowed pass


def test_bm_none_clips():
    n = 64
    t = Tile(n, n, cfg(out_bits=9, out_bound=12.0, noise_management=NM.ABS_MAX, inp_bound=1.0), seed=0)
    t.set_weights(np.full((n, n), 1.0, np.float32))
    np.testing.assert_allclose(t.forward(np.ones((2, n), np.float32)), 12.0)


def _std_per_output(t, x, W, reps=6000):
    X = np.repeat(x[None], reps, axis=0)
    y = t.forward(X) - x @ W.T
    return y.std(axis=0, ddof=1), reps


def test_additive_weight_noise_sigma(rng):
    n, m, s = 40, 6, 0.05
    W = rng.standard_normal((m, n)).astype(np.float32) * 0.3
    x = rng.uniform(-1, 1, n).astype(np.float32)
    t = Tile(m, n, cfg(w_noise=s, w_noise_type=WN.ADDITIVE_CONSTANT), seed=4)
    t.set_weights(W)
    std, reps = _std_per_output(t, x, W)
    expect = s * np.linalg.norm(x)
    assert np.all(np.abs(std - expect) < 3 * expect / np.sqrt(2 * reps))


def test_pcm_read_weight_noise_sigma(rng):
    n, m, s = 40, 6, 0.05
    W = rng.standard_normal((m, n)).astype(np.float32) * 0.3
    x = rng.uniform(-1, 1, n).astype(np.float32)
    t = Tile(m, n, cfg(w_noise=s, w_noise_type=WN.PCM_READ), seed=5)
    t.set_weights(W)
    std, reps = _std_per_output(t, x, W)
    expect = s * np.sqrt(np.abs(W) @ (x * x))
    assert np.all(np.abs(std - expect) < 3 * expect / np.sqrt(2 * reps))


def test_output_noise_combines_with_additive_weight_noise(rng):
    n, m = 30, 4
    W = rng.standard_normal((m, n)).astype(np.float32)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    t = Tile(m, n, cfg(out_noise=0.1, w_noise=0.02, w_noise_type=WN.ADDITIVE_CONSTANT), seed=6)
    t.set_weights(W)
    std, reps = _std_per_output(t, x, W)
    expect = np.sqrt(0.1**2 + 0.02**2 * (x @ x))
    assert np.all(np.abs(std - expect) < 3 * expect / np.sqrt(2 * reps))


def test_ir_drop_one_hot_formula(rng):
    n, m, g_ratio, ir = 50, 7, 100.0, 1.0
    W = rng.uniform(-1, 1, (m, n)).astype(np.float32)
    t = Tile(m, n, cfg(ir_drop=ir, ir_drop_g_ratio=g_ratio), seed=0)
    t.set_weights(W)
    for j in (0, 17, n - 1):
        x = np.zeros(n, np.float32)
        x[j] = 1.0
        a = n / g_ratio * np.abs(W[:, j])
        c = a * (0.5 - 0.2 * a + 0.05 * a * a)
        expect = W[:, j] - ir * c * W[:, j] * (1 - (1 - j / n) ** 2)
        np.testing.assert_allclose(t.forward(x), expect, rtol=1e-5, atol=1e-6)


def test_out_nonlinearity():
    n = 4
    t = Tile(n, n, cfg(out_nonlinearity=2.0, out_bound=10.0), seed=0)
    t.set_weights(np.eye(n, dtype=np.float32) * 5)
    y = t.forward(np.ones(n, np.float32))
    np.testing.assert_allclose(y, 5 / (1 + 0.2 * 5), rtol=1e-6)


def test_zero_input_gives_zero_output_with_nm():
    t = Tile(8, 8, "default", seed=0)
    t.set_weights(np.ones((8, 8), np.float32))
    assert np.all(t.forward(np.zeros((3, 8), np.float32)) == 0)


def test_split_sizes_and_array_grid():
    assert split_sizes(1100, 512) == [367, 367, 366]
    assert split_sizes(600, 512) == [300, 300]
    assert split_sizes(512, 512) == [512]
    assert split_sizes(100, 0) == [100]
    a = TileArray(600, 1100, ideal(), seed=0)
    assert a.grid == (2, 3)
    assert [t.shape for t in a.tiles[0]] == [(300, 367), (300, 367), (300, 366)]


def test_split_array_equals_dense(rng):
    W = rng.standard_normal((600, 1100)).astype(np.float32) * 0.05
    x = rng.standard_normal((4, 1100)).astype(np.float32)
    d = rng.standard_normal((4, 600)).astype(np.float32)
    a = TileArray(600, 1100, ideal(), seed=0)
    a.program(W)
    np.testing.assert_allclose(a.forward(x), x @ W.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.backward(d), d @ W, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.read_weights(), W, rtol=1e-6, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), mo=st.integers(0, 17), mi=st.integers(0, 17),
       b=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_split_equals_one_tile_property(m, n, mo, mi, b, seed):
    r = np.random.default_rng(seed)
    W = r.standard_normal((m, n)).astype(np.float32)
    x = r.standard_normal((b, n)).astype(np.float32)
    c = TileConfig(forward=IOConfig(is_perfect=True), backward=IOConfig(is_perfect=True),
                   mapping=MappingConfig(max_in=mi, max_out=mo))
    a = TileArray(m, n, c, seed=0)
    a.set_weights(W)
    y = a.forward(x)
    assert y.shape == (b, m) and y.dtype == np.float32
    np.testing.assert_allclose(y, x @ W.T, rtol=1e-4, atol=1e-4)
    assert sum(a.out_splits) == m and sum(a.in_splits) == n
    assert max(a.out_splits) - min(a.out_splits) <= 1 and max(a.in_splits) - min(a.in_splits) <= 1


@pytest.mark.parametrize("name", ["default", "standard-hwa"])
def test_same_seed_bit_identical_on_1_and_2_threads(name, rng):
    W = rng.standard_normal((96, 80)).astype(np.float32) * 0.1
    x = rng.uniform(-1, 1, (33, 80)).astype(np.float32)
    d = rng.standard_normal((7, 96)).astype(np.float32)
    n0 = numba.get_num_threads()
    outs = []
    try:
        for nt in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(nt)
            t = Tile(96, 80, name, seed=11)
            t.set_weights(W)
            outs.append((t.forward(x), t.forward(x), t.backward(d)))
    finally:
        numba.set_num_threads(n0)
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(a, b)
    assert not np.array_equal(outs[0][0], outs[0][1])  # noise redrawn per read


def test_noise_differs_between_seeds(rng):
    W = rng.standard_normal((16, 16)).astype(np.float32)
    x = rng.uniform(-1, 1, (4, 16)).astype(np.float32)
    ys = []
    for s in (1, 2):
        t = Tile(16, 16, "default", seed=s)
        t.set_weights(W)
        ys.append(t.forward(x))
    assert not np.array_equal(*ys)


@pytest.mark.parametrize("kind, sig", [("differential", (1.0,)), ("n_pairs", (1.0, 4.0)), ("single_offset", (1.0,))])
def test_mapping_kinds_round_trip(kind, sig, rng):
    W = rng.uniform(-0.7, 0.9, (12, 10)).astype(np.float32)
    c = TileConfig(forward=IOConfig(is_perfect=True), mapping=MappingConfig(kind=kind, significance=sig))
    t = Tile(12, 10, c, seed=0)
    t.program(W)
    G = t.conductances()
    assert G.min() >= c.mapping.g_min - 1e-5 and G.max() <= c.mapping.g_max + 1e-4
    np.testing.assert_allclose(t.read_weights(), W, rtol=1e-5, atol=1e-5)


def test_n_pairs_fill_low_significance_first():
    c = TileConfig(mapping=MappingConfig(kind="n_pairs", significance=(1.0, 3.0), g_max=10.0))
    t = Tile(1, 3, c, seed=0)
    t.program(np.array([[0.1, 0.2, 1.0]], np.float32))  # max maps to S = 4 * 10 uS
    G = t.conductances()
    np.testing.assert_allclose(G[0, 0], [4.0, 8.0, 10.0], rtol=1e-5)      # low pair G+
    np.testing.assert_allclose(G[2, 0], [0.0, 0.0, 10.0], rtol=1e-5)      # high pair only once saturated


def test_column_scaling_columnwise(rng):
    W = rng.standard_normal((5, 7)).astype(np.float32)
    c = TileConfig(forward=IOConfig(is_perfect=True), mapping=MappingConfig(weight_scaling_omega=1.0))
    t = Tile(5, 7, c, seed=0)
    t.set_weights(W)
    assert np.allclose(np.abs(t._w).max(axis=1), 1.0)
    np.testing.assert_allclose(t.read_weights(), W, rtol=1e-6)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_allclose(t.forward(x), x @ W.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, err, msg", [
    (np.zeros((3, 5)), ValueError, "shape"),
    (np.full((4, 6), np.nan), ValueError, "NaN"),
    (np.full((4, 6), np.inf), ValueError, "NaN or inf"),
    (np.array([["a"] * 6] * 4), TypeError, "numeric"),
])
def test_bad_weights(bad, err, msg):
    with pytest.raises(err, match=msg):
        Tile(4, 6, seed=0).program(bad)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((2, 5), np.float32), "shape"), (np.zeros((2, 3, 6), np.float32), "shape"),
    (np.array([[np.nan] * 6]), "NaN"), (np.array([[np.inf] * 6]), "NaN"),
])
def test_bad_inputs(bad, msg):
    t = Tile(4, 6, seed=0)
    with pytest.raises(ValueError, match=msg):
        t.forward(bad)
    with pytest.raises(ValueError, match="d has shape"):
        t.backward(np.zeros((2, 6), np.float32))


@pytest.mark.parametrize("args", [(0, 3), (3, -1), (2.5, 3), (True, 3)])
def test_bad_sizes(args):
    with pytest.raises(ValueError, match="size"):
        Tile(*args)


def test_conductances_before_program_is_an_error():
    with pytest.raises(RuntimeError, match="program"):
        Tile(2, 2).conductances()


def test_subnormal_input_rows_give_zero_not_nan():
    t = Tile(4, 4, "default", seed=0)
    t.set_weights(np.ones((4, 4), np.float32))
    x = np.array([[1e-42, 0, 0, 0], [1.0, 0, 0, 0]], np.float32)
    y = t.forward(x)
    assert np.isfinite(y).all() and np.all(y[0] == 0)


@pytest.mark.parametrize("nm", ["abs_max", "max"])
def test_all_zero_input_rows_read_as_zero_with_input_noise(nm):
    """A zero row has NM scale 0: alpha*W(x/alpha + n) -> 0 as alpha -> 0, never NaN (was NaN with inp_noise > 0)."""
    from aimc.config import IOConfig, TileConfig
    cfg = TileConfig(forward=IOConfig(noise_management=nm, inp_noise=0.05, out_noise=0.0))
    t = Tile(6, 5, config=cfg, seed=3)
    t.set_weights(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32))
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    x[2] = 0.0
    y = t.forward(x)
    assert np.isfinite(y).all()
    assert (y[2] == 0).all()
    assert np.abs(y[[0, 1, 3]]).sum() > 0
