"""Nodal-analysis solver: dense-solve parity, Kirchhoff's current law, diode I-V, co-content minimisation."""
import numpy as np
import pytest
import scipy.optimize

from aimc.circuits import ResistiveNetwork
from aimc.kernels import nodal


def random_network(rng, n=14, extra_edges=20, n_clamped=3, g_range=(0.1, 2.0)):
    """A connected random graph: a random spanning tree plus extra random edges."""
    perm = rng.permutation(n)
    a = [perm[i] for i in range(1, n)]
    b = [perm[rng.integers(0, i)] for i in range(1, n)]
    while len(a) < n - 1 + extra_edges:
        i, j = rng.choice(n, 2, replace=False)
        a.append(i)
        b.append(j)
    net = ResistiveNetwork(n)
    net.add_resistors(a, b, rng.uniform(*g_range, len(a)))
    clamped = rng.choice(n, n_clamped, replace=False)
    return net, clamped


def dense_reference(net, clamped, vc, inj):
    """Solve L_ff V_f = I_f - L_fc V_c with numpy.linalg.solve on the full Laplacian."""
    L = net.laplacian()
    free = np.setdiff1d(np.arange(net.n_nodes), clamped)
    V = np.zeros((vc.shape[0], net.n_nodes))
    V[:, clamped] = vc
    rhs = inj[:, free] - vc @ L[np.ix_(free, clamped)].T
    V[:, free] = np.linalg.solve(L[np.ix_(free, free)], rhs.T).T
    return V


def kcl_numpy(net, V, inj=None):
    """Independent KCL residual: injected minus leaving current, from the element I-V laws (numpy only)."""
    V = np.atleast_2d(V)
    r = np.zeros_like(V) if inj is None else np.array(np.broadcast_to(inj, V.shape))
    scale = np.abs(r)
    a, b = net.resistor_nodes
    i = (V[:, a] - V[:, b]) * net.g
    for x, sgn in ((a, -1.0), (b, 1.0)):
        np.add.at(r.T, x, sgn * i.T)
        np.add.at(scale.T, x, np.abs(i.T))
    if net.n_diodes:
        da, db = net.diode_nodes
        idio = net.diode_currents(V)
        for x, sgn in ((da, -1.0), (db, 1.0)):
            np.add.at(r.T, x, sgn * idio.T)
            np.add.at(scale.T, x, np.abs(idio.T))
    return r, scale


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense_limit", [2000, 0])
def test_linear_matches_dense_solve(seed, dense_limit):
    rng = np.random.default_rng(seed)
    net, clamped = random_network(rng)
    B = 5
    vc = rng.uniform(-1, 1, (B, clamped.size))
    inj = rng.normal(0, 0.3, (B, net.n_nodes))
    V = net.solve(clamped, vc, inj, dense_limit=dense_limit)
    ref = dense_reference(net, clamped, vc, inj)
    np.testing.assert_allclose(V, ref, rtol=1e-10, atol=1e-12)
    free = np.setdiff1d(np.arange(net.n_nodes), clamped)
    r, scale = kcl_numpy(net, V, inj)
    assert np.max(np.abs(r[:, free]) / scale[:, free]) < 1e-9
    np.testing.assert_allclose(V[:, clamped], vc)


def test_voltage_divider_closed_form():
    net = ResistiveNetwork(3)
    net.add_resistors([0, 1], [1, 2], [1.0, 3.0])
    V = net.solve([0, 2], [1.0, 0.0])
    assert V.shape == (3,)
    assert V[1] == pytest.approx(0.25, abs=1e-14)
    # current injection into the middle node: extra I / (g1 + g2)
    V = net.solve([0, 2], [1.0, 0.0], currents=[0.0, 2.0, 0.0])
    assert V[1] == pytest.approx(0.25 + 2.0 / 4.0, abs=1e-14)


def test_batch_equals_single_solves():
    rng = np.random.default_rng(5)
    net, clamped = random_network(rng)
    net.add_diodes([0, 1, 2], [3, 4, 5], g_on=5.0, g_off=1e-3, v_on=0.05)
    vc = rng.uniform(-1, 1, (4, clamped.size))
    Vb = net.solve(clamped, vc)
    for s in range(4):
        np.testing.assert_allclose(net.solve(clamped, vc[s]), Vb[s], rtol=1e-12, atol=1e-13)
    assert net.n_solves == 8


@pytest.mark.parametrize("model", ["pwl", "exp"])
def test_single_diode_against_scalar_root(model):
    """Source -- R -- node -- diode -- ground: the node voltage solves (Vs - v) g = i_D(v)."""
    g = 0.01
    net = ResistiveNetwork(3)
    net.add_resistors([0], [1], [g])
    if model == "pwl":
        kw = dict(g_on=2.0, g_off=1e-6, v_on=0.3)
        iv = lambda v: 1e-6 * v + (2.0 - 1e-6) * max(0.0, v - 0.3)  # noqa: E731
    else:
        kw = dict(i_s=1e-12, n_vt=0.026, g_leak=1e-12)
        iv = lambda v: 1e-12 * np.expm1(v / 0.026) + 1e-12 * v  # noqa: E731
    net.add_diodes([1], [2], model, **kw)
    for vs in (-2.0, 0.1, 0.5, 5.0):
        V, info = net.solve([0, 2], [vs, 0.0], return_info=True)
        ref = scipy.optimize.brentq(lambda v: (vs - v) * g - iv(v), -abs(vs) - 1, abs(vs) + 1, xtol=1e-15)
        assert V[1] == pytest.approx(ref, abs=1e-10)
        assert info.converged.all()


@pytest.mark.parametrize("model", ["pwl", "exp"])
def test_diode_network_kcl(model):
    """Random network with many diodes, also between free nodes (not only to sources): KCL with each
    element's own I-V law holds at every free node."""
    rng = np.random.default_rng(11)
    net, clamped = random_network(rng, n=20, extra_edges=25, n_clamped=4)
    m = 25
    a = rng.integers(0, net.n_nodes, m)
    b = (a + rng.integers(1, net.n_nodes, m)) % net.n_nodes
    if model == "pwl":
        net.add_diodes(a, b, "pwl", g_on=rng.uniform(1, 50, m), g_off=1e-5, v_on=rng.uniform(-0.1, 0.3, m))
    else:
        net.add_diodes(a, b, "exp", i_s=1e-9, n_vt=0.05, g_leak=1e-9)
    B = 16
    vc = rng.uniform(-2, 2, (B, clamped.size))
    inj = rng.normal(0, 0.2, (B, net.n_nodes))
    V, info = net.solve(clamped, vc, inj, return_info=True)
    assert info.converged.all()
    free = np.setdiff1d(np.arange(net.n_nodes), clamped)
    r, scale = kcl_numpy(net, V, inj)
    assert np.max(np.abs(r[:, free]) / scale[:, free]) < 1e-9
    rel = net.kcl_residual(V, inj, relative=True)
    assert np.max(np.abs(rel[:, free])) < 1e-9
    # at least some diodes are on and some off, so the test exercises the nonlinearity
    u = V[:, a] - V[:, b]
    if model == "pwl":
        on = u > net._dp[2][None, :]
        assert on.any() and (~on).any()
    # a warm start from the solution stays there, and a start from zero reaches it
    V2 = net.solve(clamped, vc, inj, v0=np.zeros_like(V))
    np.testing.assert_allclose(V2, V, atol=1e-9)


def test_linear_solution_minimises_power():
    """Maxwell's minimum-power principle: with only voltage sources, the steady state minimises the
    dissipated power sum g u^2 over the free voltages."""
    rng = np.random.default_rng(3)
    net, clamped = random_network(rng, n=10, extra_edges=8)
    vc = rng.uniform(-1, 1, clamped.size)
    V = net.solve(clamped, vc)
    p0 = net.power(V)
    free = np.setdiff1d(np.arange(net.n_nodes), clamped)
    for scale in (1e-1, 1e-3):
        dV = np.zeros((200, net.n_nodes))
        dV[:, free] = rng.normal(0, scale, (200, free.size))
        assert np.all(net.power(V + dV) > p0)
    # the gradient of the power vanishes: power is quadratic, so P(V+d) - P(V) = d^T L d exactly
    d = np.zeros(net.n_nodes)
    d[free] = rng.normal(size=free.size)
    L = net.laplacian()
    assert net.power(V + d) - p0 == pytest.approx(d @ L @ d, rel=1e-9)


def test_diode_solution_minimises_cocontent():
    rng = np.random.default_rng(4)
    net, clamped = random_network(rng, n=10, extra_edges=8)
    net.add_diodes(rng.integers(0, 5, 6), rng.integers(5, 10, 6), g_on=10.0, g_off=1e-4, v_on=0.1)
    vc = rng.uniform(-1, 1, clamped.size)
    inj = rng.normal(0, 0.1, net.n_nodes)
    inj[clamped] = 0.0
    V = net.solve(clamped, vc, inj)
    e0 = net.cocontent(V, inj)
    free = np.setdiff1d(np.arange(net.n_nodes), clamped)
    for scale in (1e-1, 1e-3):
        dV = np.zeros((200, net.n_nodes))
        dV[:, free] = rng.normal(0, scale, (200, free.size))
        assert np.all(net.cocontent(V + dV, inj) > e0)
    # and the co-content's finite-difference gradient at the solution is (close to) zero
    for j in free[:4]:
        h = np.zeros(net.n_nodes)
        h[j] = 1e-6
        grad = (net.cocontent(V + h, inj) - net.cocontent(V - h, inj)) / 2e-6
        assert abs(grad) < 1e-6


def test_parallel_and_serial_kernels_agree_exactly():
    rng = np.random.default_rng(12)
    net, clamped = random_network(rng, n=16, extra_edges=20, n_clamped=3)
    anodes = rng.choice(np.setdiff1d(np.arange(16), clamped[:1]), 10)
    net.add_diodes(anodes, np.full(10, clamped[0]), g_on=20.0, g_off=1e-6)
    vc = rng.uniform(-1, 1, (40, clamped.size))
    net.parallel_min_batch = 1
    Vp = net.solve(clamped, vc)
    net.parallel_min_batch = 10**9
    Vs = net.solve(clamped, vc)
    np.testing.assert_array_equal(Vp, Vs)


def test_newton_iteration_counts_are_small():
    """Piecewise-linear diodes: the active-set Newton needs few iterations; a warm start needs ~none."""
    rng = np.random.default_rng(8)
    net, clamped = random_network(rng, n=30, extra_edges=40, n_clamped=5)
    anodes = rng.choice(np.setdiff1d(np.arange(30), clamped[:1]), 20)
    net.add_diodes(anodes, np.full(20, clamped[0]), g_on=20.0, g_off=1e-6)
    vc = rng.uniform(-1, 1, (32, clamped.size))
    V, info = net.solve(clamped, vc, return_info=True)
    assert info.iterations.max() <= 20
    _, info2 = net.solve(clamped, vc, v0=V, return_info=True)
    assert info2.iterations.max() <= 1
    assert net.n_newton_iterations == info.iterations.sum() + info2.iterations.sum()


def test_errors_name_the_problem():
    net = ResistiveNetwork(4)
    with pytest.raises(ValueError, match="itself"):
        net.add_resistors([1], [1], [1.0])
    with pytest.raises(ValueError, match="out of range"):
        net.add_resistors([0], [4], [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        net.add_resistors([0], [1], [-1.0])
    with pytest.raises(ValueError, match="unknown diode model"):
        net.add_diodes([0], [1], "zener")
    with pytest.raises(ValueError, match="g_on >= g_off"):
        net.add_diodes([0], [1], g_on=1e-3, g_off=1.0)
    net.add_resistors([0, 1], [1, 2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"free node\(s\) \[3\]"):
        net.solve([0], [1.0])
    net.add_resistors([3], [2], [0.0])  # zero conductance: still floating
    with pytest.raises(ValueError, match=r"\[2, 3\]|\[3\]"):
        net.solve([0], [1.0])
    net.g[-1] = 1.0
    with pytest.raises(ValueError, match="v_clamped"):
        net.solve([0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        net.solve([0], [np.nan])
    with pytest.raises(ValueError, match="currents"):
        net.solve([0], [1.0], currents=np.zeros(3))
    with pytest.raises(ValueError, match="distinct"):
        net.solve([0, 0], [1.0, 1.0])
    net.g[0] = -1.0
    with pytest.raises(ValueError, match="g: conductances must be >= 0"):
        net.solve([0], [1.0])


def test_negative_conductance_only_where_allowed():
    net = ResistiveNetwork(3)
    net.add_resistors([0, 1], [1, 2], [1.0, 1.0])
    k = net.add_resistors([1], [2], [0.0], allow_negative=True)
    net.g[k] = -0.5  # active element: total 0.5 between 1 and 2, still positive definite
    V = net.solve([0, 2], [1.0, 0.0])
    assert V[1] == pytest.approx(1.0 / 1.5)
    net.g[k] = -3.0
    with pytest.raises(ValueError, match="not positive definite"):
        net.solve([0, 2], [1.0, 0.0])


def test_kernel_status_codes_are_distinct():
    assert len({nodal.CONVERGED, nodal.MAX_ITER, nodal.NOT_PD, nodal.STALLED}) == 4
