"""Counter-based RNG: distribution moments, determinism, thread-count independence."""
import numba
import numpy as np
import pytest
from scipy import stats

from aimc.rng import Stream, check_seed


def test_normal_moments():
    z = Stream(7, "moments").normal((1000, 1000)).ravel().astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 3 / np.sqrt(n)
    assert abs(z.var() - 1) < 3 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 3 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 3 * np.sqrt(24 / n)
    # tails: P(|z| > 3) = 0.0027
    p3 = np.mean(np.abs(z) > 3)
    assert abs(p3 - 0.0026998) < 3 * np.sqrt(0.0027 / n)
    assert stats.kstest(z[:200_000], "norm").pvalue > 1e-3


def test_uniform_moments():
    u = Stream(3, "u").uniform((500, 1000)).ravel().astype(np.float64)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 3 * np.sqrt(1 / 12 / u.size)
    assert stats.kstest(u[:200_000], "uniform").pvalue > 1e-3


def test_same_seed_same_numbers_and_streams_differ():
    a = Stream(1, "tile").normal((64, 33))
    b = Stream(1, "tile").normal((64, 33))
    c = Stream(1, "other").normal((64, 33))
    d = Stream(2, "tile").normal((64, 33))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    s = Stream(1, "tile")
    assert not np.array_equal(s.normal((4, 8)), s.normal((4, 8)))  # calls advance


def test_thread_count_independent():
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = Stream(5, "t").normal((257, 131))
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = Stream(5, "t").normal((257, 131))
    finally:
        numba.set_num_threads(n0)
    assert np.array_equal(a, b)


def test_state_round_trip():
    s = Stream(9, "x")
    s.normal((3, 3))
    t = Stream.from_state(s.state())
    assert np.array_equal(s.normal((5, 5)), t.normal((5, 5)))


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3", None, True])
def test_bad_seed(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        check_seed(bad)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [1, 3, 16, 18, 63, 64, 100])
def test_output_stage_noise_is_normals_row_of_each_row(m, threads):
    """The output stage's noise of a row is ``normals_row`` of its counter row, whether the row is long (drawn
    alone) or short (drawn with other rows in one generator loop, ``rng.normals_rows``), for any row order,
    key offset, block border and thread count."""
    from aimc.kernels import periphery as kp
    from aimc.kernels.rng import fill_normal
    rng = np.random.default_rng(0)
    B, key_off, k0, k1, call = 700, 37, 11, 22, 2 ** 33 + 5
    rows = rng.permutation(B)[:500].astype(np.int64)            # > 1 block of short rows, not in order
    ref = np.empty((B + key_off, m), np.float32)
    fill_normal(ref, k0, k1, call)                              # row r: normals_row(key r)
    y = np.full((B, m), np.nan, np.float32)
    e1, e2 = np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kp.output_stage(np.zeros((len(rows), m), np.float32), rows, np.ones(len(rows), np.float32), e2,
                        np.float32(0), np.float32(0), np.float32(0), e2, m, np.float32(0), np.zeros(1, np.float32),
                        np.zeros(1, np.float32), False, False, k0, k1, call, 1, np.empty(len(rows), np.int8), y, e1,
                        3, np.empty(len(rows), np.int32), key_off)
    finally:
        numba.set_num_threads(old)
    assert (y[rows] == ref[rows + key_off]).all()
