"""Cost counters of the tile (issue 10): exact event counts and array-energy sums on closed forms."""
import numpy as np
import pytest

from aimc import IOConfig, MappingConfig, Tile, TileArray, TileConfig
from aimc.config import BoundManagement as BM
from aimc.config import InferenceConfig
from aimc.config import NoiseManagement as NM
from aimc.cost import Counts
from aimc.kernels.cost import input_sums

QUIET = dict(out_noise=0.0, inp_bits=0, out_bits=0, out_bound=0.0, noise_management=NM.NONE,
             bound_management=BM.NONE, inp_bound=1e6)


def cfg(mapping=None, **kw):
    io = IOConfig(**{**QUIET, **kw})
    return TileConfig(forward=io, backward=io, mapping=mapping or MappingConfig(max_in=0, max_out=0))


def popcount(k):
    return np.array([bin(int(v)).count("1") for v in np.ravel(k)]).reshape(np.shape(k))


def test_kernel_matches_numpy(rng):
    v = rng.uniform(-1, 1, (7, 33)).astype(np.float32)
    v[:, ::5] = 0
    inv = rng.uniform(0.5, 2, 7).astype(np.float32)
    g = rng.uniform(0, 50, 33).astype(np.float32)
    step = 1 / 63
    out = np.empty((9, 5))  # a reused buffer may have more rows than the pass
    acc = np.zeros(5)
    input_sums(v, inv, g, step, out, acc)
    out = out[:7]
    np.testing.assert_allclose(acc, out.sum(0), rtol=1e-12)
    u = np.abs(v.astype(np.float64) * inv[:, None])
    np.testing.assert_allclose(out[:, 0], (u ** 2) @ g, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], u @ g, rtol=1e-6)
    np.testing.assert_allclose(out[:, 2], popcount(np.rint(u / step).astype(int)) @ g, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 3], (u != 0).sum(1))
    np.testing.assert_array_equal(out[:, 4], popcount(np.rint(u / step).astype(int)).sum(1))
    fine = 2.0 ** -20  # codes up to 2^21: the SWAR popcount over all bytes
    codes = rng.integers(0, 2 ** 21, (7, 33))
    input_sums(np.asarray(codes * fine, np.float32), np.zeros(0, np.float32), g, fine, out, acc)  # no scales
    np.testing.assert_array_equal(out[:, 4], popcount(codes).sum(1))


@pytest.mark.parametrize("bits", [False, True])
def test_input_stages_take_the_sums_of_the_separate_sweep(rng, bits):
    """The counting sums the input-stage kernels take while they write the applied inputs (no second sweep)
    equal ``input_sums`` of those inputs: the same per-row arithmetic (``row_sums``), totals added in row order."""
    from aimc.kernels import periphery as K
    step = 2 / 254 if bits else 0.0
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    x[0, 1] = 0.0  # zero inputs: not counted as pulses
    ci, ki, kj = np.meshgrid(np.arange(3), np.arange(3), np.arange(3), indexing="ij")
    off = (ci * 90 + ki * 10 + kj).reshape(-1).astype(np.int64)
    oh, ow, n = 7, 8, 27
    R = 2 * oh * ow
    g = rng.uniform(0, 50, n).astype(np.float32)
    v = np.empty((R, n), np.float32)
    csum, cacc = np.empty((R + 3, 5)), np.zeros(5)
    from aimc.core.periphery import patch_geometry
    geo = patch_geometry(270, oh, ow, 9, 10, (1, 1), (0, 0), 10, 1)
    koff = np.stack([off, ki.reshape(-1), kj.reshape(-1)]).astype(np.int64)
    K.patch_input_stage(x.reshape(-1), geo, koff, 0, K.NM_ABS_MAX, np.float32(0), True, 2 / 254, 1.0,
                        False, 0.0, 1, 2, 3, 4, v, np.empty(R, np.float32), np.empty(R, np.float32),
                        np.empty(R, np.int8), np.empty((0, n), np.float32), -1, -1, g, csum, cacc, step)
    out, acc = np.empty((R, 5)), np.zeros(5)
    input_sums(v, np.zeros(0, np.float32), g, step, out, acc)
    np.testing.assert_allclose(csum[:R], out, rtol=1e-6)
    np.testing.assert_allclose(cacc, acc, rtol=1e-12)
    np.testing.assert_array_equal(csum[:R, 3:], out[:, 3:])  # counts are exact
    # the mvm input stage (rows of a batch, per-row scales)
    xb = rng.standard_normal((9, n)).astype(np.float32)
    rows = np.arange(9, dtype=np.int64)
    scale = np.abs(xb).max(1).astype(np.float32)
    v = np.empty((9, n), np.float32)
    csum, cacc = np.empty((9, 5)), np.zeros(5)
    K.input_stage(xb, rows, scale, 2 / 254, 1.0, False, 0.0, 1, 2, 3, 4, v, np.empty(9, np.float32),
                  np.empty((0, n), np.float32), -1, -1, g, csum, cacc, step)
    out, acc = np.empty((9, 5)), np.zeros(5)
    input_sums(v, np.zeros(0, np.float32), g, step, out, acc)
    np.testing.assert_allclose(csum, out, rtol=1e-6)
    np.testing.assert_array_equal(csum[:, 3:], out[:, 3:])


def test_one_hot_reads_single_line_conductance():
    """A one-hot input e_j reads exactly line j: e_amp = sum_i (G+_ij + G-_ij) of known conductances."""
    W = np.array([[1.0, -0.5, 0.0], [0.25, 1.0, -1.0]], np.float32)  # amax 1 -> 25 uS full scale
    mp = MappingConfig(g_min=2.0, max_in=0, max_out=0)
    t = Tile(2, 3, cfg(mp), seed=0)
    t.program(W)  # no inference config: ideal conductances
    g_expect = 23.0 * np.abs(W).sum(0) + 2 * 2 * 2.0  # s = (25-2)/1; G+ + G- = s|w| + 2 g_min; 2 rows
    np.testing.assert_allclose(t.line_conductance(), g_expect, rtol=1e-6)
    t.forward(np.eye(3, dtype=np.float32))
    c = t.counts
    assert (c.mvms, c.passes, c.rereads, c.dac, c.adc, c.pulses) == (3, 3, 0, 9, 6, 3)
    assert (c.dig_in, c.dig_out, c.dig_comp) == (0, 0, 0)  # no NM/BM, no scales: nothing digital
    np.testing.assert_allclose(c.e_amp, g_expect.sum(), rtol=1e-6)
    np.testing.assert_allclose(c.e_pwm, g_expect.sum(), rtol=1e-6)


def test_amplitude_pwm_and_bit_serial_sums_on_dac_grid():
    """7-bit DAC (step 1/63): v = k/63 gives sum v^2 g, sum |v| g and sum popcount(k) g exactly."""
    n = 6
    W = np.ones((4, n), np.float32)
    t = Tile(4, n, cfg(inp_bits=7, inp_bound=1.0), seed=0)
    t.set_weights(W)  # unprogrammed: the conductances the mapping would write, 4 x 25 uS per line
    t.counts.bit_planes = True  # the popcount sums are on only when asked for (bit-serial cards)
    k = np.array([[0, 1, 5, 63, 32, 17]])
    t.forward((k / 63).astype(np.float32))
    g = 4 * 25.0
    c = t.counts
    np.testing.assert_allclose(c.e_amp, g * ((k / 63) ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(c.e_pwm, g * (k / 63).sum(), rtol=1e-5)
    assert c.e_bits == pytest.approx(g * popcount(k).sum())
    assert c.pulses == 5 and c.dac == n and c.adc == 4
    assert c.bit_pulses == popcount(k).sum() and c.bit_passes == c.passes == 1
    c.reset()
    c.bit_planes = False
    t.forward((k / 63).astype(np.float32))
    assert c.e_bits == 0 and c.bit_passes == 0 and c.e_pwm > 0 and c.bit_planes is False


def test_bound_management_rereads_counted():
    """W = 1, x = 1 over 8 inputs, ADC bound 3: outputs 8 -> 4 -> 2, i.e. 3 passes per vector."""
    n, m, B = 8, 2, 5
    t = Tile(m, n, cfg(noise_management=NM.ABS_MAX, bound_management=BM.ITERATIVE, out_bound=3.0,
                       inp_bound=1.0), seed=0)
    t.set_weights(np.ones((m, n), np.float32))
    y = t.forward(np.ones((B, n), np.float32))
    np.testing.assert_allclose(y, 8.0)
    c = t.counts
    assert (c.mvms, c.passes, c.rereads) == (B, 3 * B, 2 * B)
    assert (c.dac, c.adc, c.dig_in, c.dig_out) == (3 * B * n, 3 * B * m, 3 * B * n, B * m)
    np.testing.assert_allclose(c.e_amp, B * n * m * 25.0 * (1 + 1 / 4 + 1 / 16), rtol=1e-6)


def test_energy_follows_drifted_conductances(rng):
    """A programmed PCM tile: the array sum uses the conductances as read at each time (they drift down)."""
    W = rng.uniform(-1, 1, (16, 24)).astype(np.float32)
    t = Tile(16, 24, TileConfig(forward=IOConfig(**QUIET), inference=InferenceConfig()), seed=3)
    t.program(W)
    x = rng.uniform(-1, 1, (10, 24)).astype(np.float32)
    sums = []
    for time in (1.0, 3.15e7):
        t.drift(time)
        t.counts.reset()
        t.forward(x)
        g = t.conductances().sum(axis=(0, 1), dtype=np.float64)
        np.testing.assert_allclose(t.counts.e_amp, ((x.astype(np.float64) ** 2) @ g).sum(), rtol=1e-5)
        sums.append(t.counts.e_amp)
    assert sums[1] < 0.9 * sums[0]  # PCM drift (nu ~ 0.05) over 7.5 decades lowers G


def test_tile_array_partial_sums_and_totals(rng):
    W = rng.standard_normal((10, 25)).astype(np.float32)
    ta = TileArray(10, 25, cfg(MappingConfig(max_in=10, max_out=6)), seed=1)  # 2 x 3 tiles
    ta.set_weights(W)
    ta.forward(rng.standard_normal((4, 25)).astype(np.float32))
    c = ta.counts()
    assert ta.grid == (2, 3)
    assert c.mvms == 4 * 6 and c.dac == 4 * 25 * 2 and c.adc == 4 * 10 * 3
    assert c.dig_partial == 4 * 10 * 2
    ta.reset_counts()
    assert ta.counts() == Counts()


def test_perfect_read_counts_conversions_with_abs_max_inputs(rng):
    W = rng.standard_normal((3, 5)).astype(np.float32)
    t = Tile(3, 5, TileConfig(forward=IOConfig(is_perfect=True)), seed=0)
    t.set_weights(W)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    t.forward(x)
    u = np.abs(x) / np.abs(x).max(1, keepdims=True)
    c = t.counts
    assert (c.mvms, c.passes, c.dac, c.adc) == (2, 2, 10, 6)
    np.testing.assert_allclose(c.e_amp, ((u ** 2) @ t.line_conductance()).sum(), rtol=1e-5)


def test_backward_counted_separately(rng):
    t = Tile(3, 5, cfg(), seed=0)
    t.set_weights(rng.standard_normal((3, 5)).astype(np.float32))
    t.backward(np.eye(3, dtype=np.float32))
    assert t.counts == Counts()
    assert t.counts_backward.mvms == 3 and t.counts_backward.dac == 9 and t.counts_backward.adc == 15
    np.testing.assert_allclose(t.counts_backward.e_amp, t.line_conductance("backward").sum(), rtol=1e-6)


def test_counts_identical_on_1_and_2_threads(rng):
    import numba
    W = rng.standard_normal((64, 300)).astype(np.float32)
    x = rng.uniform(-1, 1, (400, 300)).astype(np.float32)  # large enough for the parallel sweep
    out = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        t = Tile(64, 300, seed=0)
        t.set_weights(W)
        t.counts.bit_planes = True
        t.forward(x)
        out.append(t.counts)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert out[0] == out[1]


@pytest.mark.parametrize("mp", [MappingConfig(g_min=1.0), MappingConfig(kind="n_pairs", significance=(1.0, 3.0)),
                                MappingConfig(kind="single_offset")])
def test_line_conductance_equals_summed_mapping(rng, mp):
    """The per-line conductance of an unprogrammed tile (one-pass kernel for the differential pair) equals the
    summed conductances the mapping writes."""
    from aimc import mapping
    W = rng.standard_normal((37, 53)).astype(np.float32)
    G = mapping.to_conductances(W, mp)[0].astype(np.float64)
    for axis in (0, 1):
        np.testing.assert_allclose(mapping.line_conductance(W, mp, axis), G.sum(axis=(0, axis + 1)), rtol=1e-5)


@pytest.mark.parametrize("encoding, slices, ref", [("balanced", 2, "column"), ("offset", 3, "digital"),
                                                   ("offset", 3, "column")])
def test_sliced_bit_serial_reads_count_each_slice_with_its_own_conductance(encoding, slices, ref):
    """S weight slices x 2 input cycles: one MVM, 2 S reads; each read's array sum uses only its slice's cells
    (G+/G- of a balanced slice, the one device of an offset slice and its reference cell), so input line j
    costs (set bits of its codes) x the sum over all devices of line j. The reference column of the offset
    encoding is one more ADC conversion per read, shift-and-added, and one subtraction per output."""
    mp = MappingConfig(kind="sliced", weight_bits=5, bits_per_cell=2, input_bits=3, input_bits_per_cycle=1,
                       slice_encoding=encoding, g_min=1.0, max_in=0, max_out=0, offset_reference=ref)
    col = int(mp.reference_column)
    t = Tile(2, 3, cfg(mp), seed=0)
    W = np.array([[15, -6, 0], [3, 9, -15]], np.float32) / 15  # integer weights on the 5-bit grid
    t.program(W)
    G = t.conductances()
    assert G.shape[0] == (4 if encoding == "balanced" else 3)
    # codes of 2 magnitude bits of each row's abs-max: 3 = 0b11 both cycles, 1 = 0b01 the first, 2 = 0b10 the second
    x = np.array([[0, 1, 0], [1, 0, -1 / 3], [2 / 3, 1, 0]], np.float32)
    y = t.forward(x)
    np.testing.assert_allclose(y, x @ W.T, atol=1e-5)
    c = t.counts
    k = 2 * slices
    assert (c.mvms, c.passes, c.slice_reads, c.rereads) == (3, 3 * k, 3 * (k - 1), 0)
    assert (c.dac, c.adc, c.pulses) == (3 * k * 3, 3 * k * (2 + col), 8 * slices)  # a set bit drives its line per slice
    assert (c.dig_shift, c.dig_in, c.dig_out) == (k * 3 * (2 + col), 3 * 3, 3 * 2)
    # digital offset removal once per cycle; the reference column's subtraction once per output
    assert c.dig_comp == ((3 * 2 if col else 2 * 3 * 2) if encoding == "offset" else 0)
    line = G.sum(axis=(0, 1))  # every device of each input line
    if col:
        assert t.reference_conductances().shape == (slices, 1, 3)
        line = line + t.reference_conductances().sum(axis=(0, 1))
    else:
        assert t.reference_conductances() is None
    np.testing.assert_allclose(c.e_amp, 3 * line[0] + 4 * line[1] + line[2], rtol=1e-6)  # set bits per line
    per_slice = t._slice_conductance("forward", slices)
    np.testing.assert_allclose(sum(per_slice), line, rtol=1e-6)


@pytest.mark.parametrize("m", [37, 64, 5])
@pytest.mark.parametrize("scaled", [False, True])
def test_write_line_sums_matches_numpy(rng, m, scaled):
    """The write kernel: w = W / c bit for bit, |w| summed per column (rows in blocks of eight and a
    remainder) and per row, max |w|; rows skipped when the row-sum buffer is empty; read-only without w."""
    from aimc.kernels.cost import write_line_sums
    W = rng.standard_normal((m, 53)).astype(np.float32)
    W[3] = 0.0
    c = rng.uniform(0.5, 2, m).astype(np.float32) if scaled else np.zeros(0, np.float32)
    w, cs, rs = np.empty_like(W), np.empty(53, np.float32), np.empty(m, np.float32)
    amax = write_line_sums(W, c, w, cs, rs)
    ref = W / c[:, None] if scaled else W
    np.testing.assert_array_equal(w, ref)
    assert amax == np.abs(ref).max()
    np.testing.assert_allclose(cs, np.abs(ref.astype(np.float64)).sum(0), rtol=1e-6)
    np.testing.assert_allclose(rs, np.abs(ref.astype(np.float64)).sum(1), rtol=1e-6)
    cs2, none = np.empty(53, np.float32), np.empty((0, 53), np.float32)
    assert write_line_sums(ref, np.zeros(0, np.float32), none, cs2, np.empty(0, np.float32)) == amax
    np.testing.assert_array_equal(cs2, cs)


@pytest.mark.parametrize("omega, columnwise", [(0.0, True), (1.0, True), (0.5, False)])
@pytest.mark.parametrize("backward_ideal", [True, False])
def test_set_weights_takes_line_conductance_in_the_write(rng, omega, columnwise, backward_ideal):
    """set_weights of a differential tile leaves the per-line conductances of the new weights ready (summed in
    the write's sweep, both directions when the adapters read the transposed array): equal to the summed
    conductances the mapping writes, and the array energy of a forward uses them."""
    from aimc import mapping
    mp = MappingConfig(g_min=1.0, weight_scaling_omega=omega, weight_scaling_columnwise=columnwise,
                       max_in=0, max_out=0)
    t = Tile(37, 53, TileConfig(forward=IOConfig(**QUIET), backward=IOConfig(**QUIET), mapping=mp,
                                backward_ideal=backward_ideal), seed=0)
    W = rng.standard_normal((37, 53)).astype(np.float32)
    t.set_weights(W)
    scale = mapping.column_scales(W, mp)
    np.testing.assert_array_equal(t._w, W / scale[:, None] if omega > 0 else W)
    assert set(t._gline) == ({"forward"} if backward_ideal else {"forward", "backward"})
    G = mapping.to_conductances(t._w, mp)[0].astype(np.float64)
    for direction, axis in (("forward", 0), ("backward", 1)):
        np.testing.assert_allclose(t.line_conductance(direction), G.sum(axis=(0, axis + 1)), rtol=1e-5)
    x = rng.uniform(-1, 1, (4, 53)).astype(np.float32)
    t.forward(x)
    np.testing.assert_allclose(t.counts.e_amp, ((x.astype(np.float64) ** 2) @ G.sum(axis=(0, 1))).sum(), rtol=1e-5)
    t.set_weights(rng.standard_normal((37, 53)).astype(np.float32))  # a rewrite: the next read is costed
    # with the new weights' conductances
    t.counts.reset()
    t.forward(x)
    G2 = mapping.to_conductances(t._w, mp)[0].astype(np.float64)
    np.testing.assert_allclose(t.counts.e_amp, ((x.astype(np.float64) ** 2) @ G2.sum(axis=(0, 1))).sum(), rtol=1e-5)
