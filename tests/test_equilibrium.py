"""Equilibrium propagation and coupled learning on resistive networks."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aimc.pnn.equilibrium import (ClippedUpdate, DeviceUpdate, QuantisedUpdate, ResistiveClassifier,
                                  finite_difference_gradient, train)


def small_problem(nonlinearity="relu", seed=1):
    m = ResistiveClassifier(4, 5, 3, nonlinearity=nonlinearity, v_clip=0.02, seed=seed, target_high=0.05,
                            target_low=-0.02)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (4, 4))
    Y = m.targets(np.array([0, 1, 2, 1]))
    return m, X, Y


def rel_err(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("nonlinearity", ["relu", "clip"])
def test_ep_approaches_true_gradient_as_beta_shrinks(nonlinearity):
    m, X, Y = small_problem(nonlinearity)
    V = m.free(X)
    # the diodes are in use: some conduct, some do not (so the test covers the nonlinear network)
    vh = V[:, m.hidden]
    on = vh < 0 if nonlinearity == "relu" else np.abs(vh) > m.v_clip
    assert on.any() and (~on).any()
    fd = finite_difference_gradient(m, X, Y, eps=1e-5)
    betas = [1e-1, 1e-2, 1e-3, 1e-4]
    errs = [rel_err(m.ep_gradient(X, Y, b, V_free=V)[0], fd) for b in betas]
    errs_c = [rel_err(m.ep_gradient(X, Y, b, centered=True, V_free=V)[0], fd) for b in betas]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3
    # O(beta) bias for one-sided EP: 10x smaller beta gives about 10x smaller error
    assert 5 < errs[1] / errs[2] < 20
    # centered EP removes the first-order bias
    assert errs_c[1] < errs[1] / 10
    assert errs_c[2] < 1e-4


def test_ep_gradient_matches_exactly_linear_network():
    """With no diodes the loss is smooth everywhere; EP's estimate is O(beta) off and converges."""
    m, X, Y = small_problem("none")
    fd = finite_difference_gradient(m, X, Y, eps=1e-5)
    assert rel_err(m.ep_gradient(X, Y, 1e-4)[0], fd) < 1e-3
    assert rel_err(m.ep_gradient(X, Y, 1e-3, centered=True)[0], fd) < 1e-4


def test_coupled_learning_is_a_descent_direction():
    m, X, Y = small_problem()
    fd = finite_difference_gradient(m, X, Y, eps=1e-5)
    for eta in (0.5, 0.1, 0.01):
        g, _ = m.cl_gradient(X, Y, eta)
        assert g @ fd / (np.linalg.norm(g) * np.linalg.norm(fd)) > 0.5


def test_nudged_phase_satisfies_kcl_and_moves_outputs_toward_targets():
    m, X, Y = small_problem()
    V0 = m.free(X)
    beta = 0.05
    Vb = m.nudged(X, Y, beta, V0)
    d0, db = m.outputs(V0), m.outputs(Vb)
    assert np.all(np.abs(db - Y) <= np.abs(d0 - Y) + 1e-15)
    # KCL at free nodes with the nudge element (conductance beta + series source) and no nudge left behind
    inj = np.zeros_like(Vb)
    inj[:, m.out_pos], inj[:, m.out_neg] = beta * Y, -beta * Y
    m.network.g[m.nudge] = beta
    r = m.network.kcl_residual(Vb, inj, relative=True)
    m.network.g[m.nudge] = 0.0
    free = np.setdiff1d(np.arange(m.network.n_nodes), m.sources)
    assert np.abs(r[:, free]).max() < 1e-9
    assert np.all(m.network.g[m.nudge] == 0.0)
    # coupled-learning clamped phase: outputs exactly at d_F + eta (y - d_F)
    Vc = m.clamped(X, Y, 0.3, V0)
    np.testing.assert_allclose(m.outputs(Vc), d0 + 0.3 * (Y - d0), atol=1e-14)


def toy_data(n=60, seed=0):
    """Two-class problem a linear readout cannot solve on raw inputs: label = x0 > x1 XOR x2 > 0.5."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 3))
    y = ((X[:, 0] > X[:, 1]) ^ (X[:, 2] > 0.5)).astype(np.int64)
    return X, y


@pytest.mark.parametrize("method", ["ep", "cl"])
def test_training_learns_and_keeps_conductances_in_range(method):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (90, 3))
    y = np.argmax(X, axis=1)  # 3 classes: which input is largest
    m = ResistiveClassifier(3, 8, 3, seed=0, target_high=0.02, target_low=-0.02)
    Y = m.targets(y)
    l0, a0 = m.loss(X, Y), m.score(X, y)
    res = train(m, X, y, method=method, epochs=6, lr=(30.0, 3.0), beta=1e-3, eta=0.5, batch_size=5, seed=3)
    assert m.loss(X, Y) < 0.1 * l0
    assert m.score(X, y) > max(0.55, a0 + 0.2)
    g = m.conductances
    assert g.min() >= m.g_min and g.max() <= m.g_max
    assert len(res.history) == 6 and res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # costs: 2 equilibria per sample and epoch; one update step per minibatch, each writing conductances
    c = res.costs
    assert c["solves"] == 6 * 2 * len(X) + 2 * len(X)  # + the loss and score evaluated before training
    assert c["update_steps"] == 6 * len(X) // 5
    assert 0 < c["conductance_updates"] <= c["update_steps"] * m.trainable.size
    assert c["pulses"] == 0


def test_large_steps_are_clipped_to_range():
    X, y = toy_data(20)
    m = ResistiveClassifier(3, 4, 2, seed=0, g_min=0.01, g_max=0.5)
    train(m, X, y, epochs=2, lr=1e7, beta=0.01, batch_size=4)
    g = m.conductances
    assert g.min() >= 0.01 and g.max() <= 0.5
    assert np.isclose(g, 0.01).any() and np.isclose(g, 0.5).any()


def test_same_seed_same_result_and_different_seed_differs():
    X, y = toy_data(30)

    def run(seed, train_seed):
        m = ResistiveClassifier(3, 5, 2, seed=seed, target_high=0.02)
        r = train(m, X, y, epochs=2, lr=(2000.0, 100.0), beta=1e-2, batch_size=5, seed=train_seed,
                  update=QuantisedUpdate(1e-3, m.g_min, m.g_max, stochastic=True))
        return m.conductances, [h["train_loss"] for h in r.history], r.costs

    g1, h1, c1 = run(0, 0)
    g2, h2, c2 = run(0, 0)
    np.testing.assert_array_equal(g1, g2)
    assert h1 == h2
    c1.pop("newton_iterations"), c2.pop("newton_iterations")
    assert c1 == c2
    g3, _, _ = run(0, 1)  # other shuffling / rounding stream
    g4, _, _ = run(1, 0)  # other initial conductances
    assert not np.array_equal(g1, g3) and not np.array_equal(g1, g4)


def test_clipped_update():
    u = ClippedUpdate(0.1, 1.0)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(u.reset(np.array([0.0, 0.5, 2.0]), rng), [0.1, 0.5, 1.0])
    np.testing.assert_allclose(u(np.array([0.2, 0.5, 0.9]), np.array([-1.0, 0.0, 0.05]), rng), [0.1, 0.5, 0.95])
    assert u.n_writes == 2 and u.n_pulses == 0
    with pytest.raises(ValueError, match="g_min < g_max"):
        ClippedUpdate(1.0, 0.5)


def test_quantised_update_counts_pulses_and_uses_steps():
    u = QuantisedUpdate(0.1, 0.0, 1.0, max_pulses=5)
    rng = np.random.default_rng(0)
    g = np.array([0.5, 0.5, 0.5, 0.95])
    out = u(g, np.array([0.26, -0.04, 10.0, 0.2]), rng)
    np.testing.assert_allclose(out, [0.8, 0.5, 1.0, 1.0])
    assert u.n_pulses == 3 + 0 + 5 + 2 and u.n_writes == 3
    # stochastic rounding is unbiased
    us = QuantisedUpdate(0.1, 0.0, 10.0, stochastic=True)
    n = us.pulses(np.full(20000, 0.037), rng)
    assert abs(n.mean() * 0.1 - 0.037) < 3 * 0.1 * 0.5 / np.sqrt(20000)


def test_function_hook_is_used():
    X, y = toy_data(10)
    m = ResistiveClassifier(3, 3, 2, seed=0)
    calls = []

    def halve(g, dg, rng):
        calls.append(dg.copy())
        return np.clip(g + 0.5 * dg, m.g_min, m.g_max)

    train(m, X, y, epochs=1, lr=100.0, batch_size=5, update=halve)
    assert len(calls) == 2 and calls[0].shape == m.conductances.shape


def test_device_update_matches_quantised_for_an_ideal_constant_step_device():
    pulsed = pytest.importorskip("device_models.pulsed")
    dev = pulsed.ConstantStep(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max_dtod=0.0,
                              w_min_dtod=0.0, w_max=1.0, w_min=-1.0)
    du = DeviceUpdate(dev, 0.0, 2.0, stochastic=False)
    qu = QuantisedUpdate(0.01, 0.0, 2.0)
    assert du.step == pytest.approx(0.01)
    rng = np.random.default_rng(0)
    g = np.round(rng.uniform(0, 2, 50), 2)
    gd = du.reset(g, np.random.default_rng(1))
    np.testing.assert_allclose(gd, g, atol=1e-6)
    for _ in range(3):
        dg = rng.normal(0, 0.05, 50)
        gd = du(gd, dg, rng)
        g = qu(g, dg, rng)
        np.testing.assert_allclose(gd, g, atol=1e-5)
    assert du.n_pulses == qu.n_pulses > 0


def test_training_through_a_device_card():
    device_models = pytest.importorskip("device_models")
    if "reram-sb" not in device_models.available():
        pytest.skip("card reram-sb not available")
    X, y = toy_data(20)
    m = ResistiveClassifier(3, 4, 2, seed=0, g_min=0.0, g_max=1.0, g_init=(0.2, 0.8))
    u = DeviceUpdate("reram-sb", 0.0, 1.0)
    r1 = train(m, X, y, epochs=2, lr=(3000.0, 100.0), beta=1e-2, batch_size=5, update=u, seed=0)
    assert r1.costs["pulses"] == u.n_pulses > 0
    assert np.all(m.conductances >= 0) and np.all(np.isfinite(m.conductances))
    m2 = ResistiveClassifier(3, 4, 2, seed=0, g_min=0.0, g_max=1.0, g_init=(0.2, 0.8))
    train(m2, X, y, epochs=2, lr=(3000.0, 100.0), beta=1e-2, batch_size=5, update=DeviceUpdate("reram-sb", 0.0, 1.0),
          seed=0)
    np.testing.assert_array_equal(m.conductances, m2.conductances)


def test_bad_input_is_rejected():
    m = ResistiveClassifier(3, 4, 2)
    X, y = toy_data(4)
    with pytest.raises(ValueError, match="nonlinearity"):
        ResistiveClassifier(3, 4, 2, nonlinearity="tanh")
    with pytest.raises(ValueError, match="g_init"):
        ResistiveClassifier(3, 4, 2, g_init=(0.0, 2.0))
    with pytest.raises(ValueError, match="X: expected shape"):
        m.free(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="finite"):
        m.free(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="beta"):
        m.ep_gradient(X, m.targets(y), 0.0)
    with pytest.raises(ValueError, match="eta"):
        m.cl_gradient(X, m.targets(y), 1.5)
    with pytest.raises(ValueError, match="labels"):
        m.targets(np.array([0, 2]))
    with pytest.raises(ValueError, match="method"):
        train(m, X, y, method="bp")
    with pytest.raises(ValueError, match="conductances"):
        m.conductances = np.zeros(3)
    with pytest.raises(ValueError, match="lr"):
        train(m, X, y, lr=(1.0, 2.0, 3.0))


def test_pnn_package_does_not_import_torch():
    code = "import sys, aimc.pnn; assert 'torch' not in sys.modules; print(aimc.pnn.ResistiveClassifier)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
