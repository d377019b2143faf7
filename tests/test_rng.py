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


def test_rows_of_normals_drawn_together_equal_row_by_row():
    """``normals_rows`` (one generator loop over many short rows) gives ``normals_row``'s numbers per row."""
    from aimc.kernels.rng import normals_row, normals_rows

    @numba.njit
    def both(m, rows, r0, key_off, rb):
        nb = (m + 3) // 4
        qi = np.empty(rb * nb, np.uint32)
        qr = np.empty(rb * nb, np.int64)
        for q in range(rb * nb):
            qr[q] = q // nb
            qi[q] = q - (q // nb) * nb
        blk = np.empty((rb, 4 * nb), np.float32)
        normals_rows(blk, 7, 9, 123456789012, rows, r0, key_off, qi, qr, rb * nb)
        one = np.empty((rb, m), np.float32)
        for r in range(rb):
            normals_row(one[r], 7, 9, 123456789012, rows[r0 + r] + key_off)
        return blk[:, :m], one

    rows = np.array([5, 3, 900, 4, 2 ** 31 + 7, 11], np.int64)
    for m in (1, 3, 4, 16, 18):
        blk, one = both(m, rows, 1, 40, 4)
        assert (blk == one).all()
