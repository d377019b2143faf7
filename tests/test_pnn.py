"""Physical neural networks (aimc.pnn.physical / methods / costs): PAT gradients, zeroth-order estimator
moments, exact cost counts, feedback alignment on analog tiles, twin-vs-physical reporting."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aimc.pnn import costs as C  # noqa: E402
from aimc.pnn.methods import (FeedbackTiles, _Run, _step_feedback, _step_pat, feedback_deltas,  # noqa: E402
                              pat_forward, train, zo_gradient)
from aimc.pnn.physical import (MISMATCH_LEVELS, DigitalTwin, Mismatch, PhysicalSystem, as_mismatch,  # noqa: E402
                               evaluate)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def _one_thread():
    import numba
    saved = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(saved[0])
    numba.set_num_threads(saved[1])


def _grads(twin):
    return [p.grad.detach().clone() for p in twin.parameters()]


# ----------------------------------------------------------------------------------------------- physical/twin

def test_mismatch_none_and_ideal_tiles_equal_the_twin():
    twin = DigitalTwin((7, 6, 5, 3), seed=1)
    phys = PhysicalSystem(twin, "none", "ideal", seed=3)
    x = torch.rand(11, 7)
    torch.testing.assert_close(phys(x), twin(x).detach(), rtol=1e-5, atol=1e-5)
    # the hidden mismatch really is hidden and really acts when switched on
    phys_l = PhysicalSystem(twin, "large", "ideal", seed=3)
    assert (phys_l(x) - twin(x)).abs().max() > 0.05


def test_physical_system_exposes_no_gradient():
    twin = DigitalTwin((4, 3, 2), seed=0)
    phys = PhysicalSystem(twin, "small", seed=0)
    y = phys(torch.rand(5, 4, requires_grad=True))
    assert not y.requires_grad and y.grad_fn is None


@pytest.mark.parametrize("sizes,normalize", [((6, 5, 4), False), ((6, 5, 4, 3), False), ((6, 5, 4), True)])
def test_pat_gradients_equal_twin_backprop_without_mismatch_and_noise(sizes, normalize):
    twin = DigitalTwin(sizes, normalize=normalize, final_activation=normalize, seed=2)
    phys = PhysicalSystem(twin, "none", "ideal", seed=0)
    x, y = torch.rand(9, sizes[0]), torch.randint(0, sizes[-1], (9,))
    torch.nn.functional.cross_entropy(twin(x), y).backward()
    g_bp = _grads(twin)
    twin.zero_grad()
    out = pat_forward(phys, twin, x)
    torch.nn.functional.cross_entropy(out, y).backward()
    for a, b in zip(_grads(twin), g_bp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pat_uses_physical_values_and_twin_jacobian_at_measured_inputs():
    """With mismatch and noise: the forward value is the measured output; the gradient of the last layer's
    weights is the twin's, e^T h evaluated at the *measured* hidden activations."""
    twin = DigitalTwin((6, 5, 4), seed=2)
    phys = PhysicalSystem(twin, "large", seed=0)
    x, y = torch.rand(9, 6), torch.randint(0, 4, (9,))
    phys_copy = PhysicalSystem(twin, "large", seed=0)
    out = pat_forward(phys, twin, x)
    logits, meas = phys_copy.forward(x, record=True)  # same seed, same noise draws
    torch.testing.assert_close(out.detach(), logits)
    torch.nn.functional.cross_entropy(out, y).backward()
    e = torch.softmax(logits, 1)
    e[torch.arange(9), y] -= 1
    torch.testing.assert_close(twin.layers[1].weight.grad, e.t() @ meas.outputs[0] / 9, rtol=1e-4, atol=1e-6)


def test_insitu_backward_is_exact_backprop_on_ideal_tiles():
    twin = DigitalTwin((6, 5, 4), seed=4)
    phys = PhysicalSystem(twin, "none", "ideal", seed=0)
    x, y = torch.rand(8, 6), torch.randint(0, 4, (8,))
    torch.nn.functional.cross_entropy(twin(x), y).backward()
    logits = phys.forward(x, _keep=True)
    e = torch.softmax(logits, 1)
    e[torch.arange(8), y] -= 1
    grads = phys.insitu_backward(e / 8)
    bp = _grads(twin)
    for l, (gw, gb) in enumerate(grads):
        torch.testing.assert_close(gw, bp[2 * l], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gb, bp[2 * l + 1], rtol=1e-4, atol=1e-6)


def test_mismatch_levels_and_validation():
    assert as_mismatch("none").is_none and not as_mismatch("small").is_none
    assert MISMATCH_LEVELS["large"].gain_std > MISMATCH_LEVELS["small"].gain_std > 0
    with pytest.raises(ValueError, match="unknown mismatch level"):
        as_mismatch("huge")
    with pytest.raises(ValueError, match="gain_std"):
        Mismatch(gain_std=-1)
    with pytest.raises(ValueError, match="stuck_fraction"):
        Mismatch(stuck_fraction=2)
    twin = DigitalTwin((4, 3), seed=0)
    with pytest.raises(ValueError, match="expected"):
        PhysicalSystem(twin, "none")(torch.rand(2, 5))
    with pytest.raises(ValueError, match="unknown method"):
        train("backprop-magic")


# ----------------------------------------------------------------------------------------------- zeroth order

def test_spsa_estimate_is_unbiased_on_a_quadratic_with_the_predicted_variance():
    d, n = 6, 4000
    rng = np.random.default_rng(0)
    M = rng.standard_normal((d, d))
    A = torch.tensor(M @ M.T / d + np.eye(d), dtype=torch.float64)
    b = torch.tensor(rng.standard_normal(d))
    theta = torch.tensor(rng.standard_normal(d))
    grad = A @ theta + b
    f = lambda th: 0.5 * th @ A @ th + b @ th  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    est = torch.stack([zo_gradient(f, theta, "spsa", c=0.3, gen=gen)[0] for _ in range(n)])
    # on a quadratic the central difference is exact: g = D D^T grad, so E g = grad and
    # Var g_i = sum_{j != i} grad_j^2
    var = (grad ** 2).sum() - grad ** 2
    se = torch.sqrt(var / n)
    assert torch.all((est.mean(0) - grad).abs() < 4 * se), (est.mean(0), grad)
    # sample variance within 4 standard errors (Var of s^2 ~ (m4 - var^2) / n; m4 <= 3 var^2 bound)
    assert torch.all((est.var(0) - var).abs() < 4 * torch.sqrt(2 * var ** 2 / n) + 1e-9)


def test_weight_perturbation_estimate_is_unbiased_on_a_quadratic():
    d, n = 4, 6000
    A = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))
    theta = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    f = lambda th: 0.5 * th @ A @ th  # noqa: E731
    gen = torch.Generator().manual_seed(1)
    est = torch.stack([zo_gradient(f, theta, "wp", c=0.1, gen=gen)[0] for _ in range(n)])
    grad = A @ theta
    se = est.std(0) / math.sqrt(n)
    assert torch.all((est.mean(0) - grad).abs() < 4 * se)
    assert zo_gradient(f, theta, "wp", c=0.1, n_dirs=3, gen=gen)[2] == 4  # 1 + n_dirs evaluations


# ----------------------------------------------------------------------------------------------- costs

def test_cost_counters_count_exactly_on_a_hand_checked_example():
    twin = DigitalTwin((4, 3, 2), seed=0)
    phys = PhysicalSystem(twin, "none", "ideal", seed=0)
    x = torch.rand(5, 4)
    phys(x)
    c = phys.meter.train
    # one call of 5 samples through 4->3 and 3->2: 10 MVMs, 5*(4*3 + 3*2) = 90 MACs,
    # 5*4 inputs in and 5*2 logits out at 4 bytes = 120 bytes, all 12 + 6 weights written once
    assert (c.phys_passes, c.phys_calls, c.phys_mvms, c.phys_macs) == (5, 1, 10, 90)
    assert (c.round_trips, c.bytes_moved, c.device_writes) == (1, 120, 18)
    phys(x, record=True)  # nothing rewritten; every layer's output read back: 80 + 5*(3+2)*4 = 180 bytes
    assert (c.phys_mvms, c.device_writes, c.bytes_moved) == (20, 18, 300)
    with torch.no_grad():
        twin.layers[1].weight[0, 0] += 1.0
    phys(x)  # exactly one cell rewritten
    assert c.device_writes == 19
    with phys.meter.phase("eval"):
        phys(x)
    assert c.phys_calls == 3 and phys.meter.costs["eval"].phys_calls == 1

    # one PAT step at batch 5 on the 4-3-2 net (23 parameters):
    #   layer 1 (4->3, no input grad): fwd 2*5*4*3 + 5*3 = 135, +3*5*3 = 45, bwd 2*5*4*3 + 5*3 = 135, +5*3 = 15
    #   layer 2 (3->2, input grad):    fwd 2*5*3*2 + 5*2 = 70,  +3*5*2 = 30, bwd 60 + 10 + 60 = 130,    +5*2 = 10
    #   cross-entropy value + gradient: 2 * 5*5*2 = 100;  Adam: 13 * 23 = 299         total = 969 FLOPs
    run = _Run(twin, phys, 1e-2, "adam")
    f0, m0 = c.digital_flops, c.phys_mvms
    _step_pat(run, x, torch.tensor([0, 1, 0, 1, 1]))
    assert c.digital_flops - f0 == 969
    assert c.phys_mvms - m0 == 10


def test_energy_proxy_is_the_documented_weighted_sum():
    c = C.Costs(phys_macs=1000, relaxation_edges=10, device_writes=2, pulses=3, digital_flops=100,
                bytes_moved=8, round_trips=1)
    e = C.ENERGY_PJ
    expect = (1000 * e["mac"]["pJ"] + 10 * e["relax_edge"]["pJ"]
              + e["pulse"]["pJ"] * (3 + e["pulses_per_write"]["pJ"] * 2) + 100 * e["flop"]["pJ"]
              + 8 * e["byte"]["pJ"] + e["round_trip"]["pJ"])
    assert c.energy_pj() == pytest.approx(expect)
    assert c.energy_pj({"mac": 0.0}) == pytest.approx(expect - 1000 * e["mac"]["pJ"])
    assert all(v["kind"] in ("source", "assumption") and v["note"] for v in e.values())
    with pytest.raises(KeyError):
        c.energy_pj({"nope": 1})
    assert (c + c).phys_macs == 2000


# ----------------------------------------------------------------------------------------------- FA / DFA

@pytest.mark.parametrize("mode,shapes", [("dfa", [(5, 3), (4, 3)]), ("fa", [(5, 4), (4, 3)])])
def test_feedback_tiles_shapes_and_stay_fixed_during_training(mode, shapes):
    twin = DigitalTwin((6, 5, 4, 3), seed=0)
    meter = C.CostMeter()
    phys = PhysicalSystem(twin, "small", seed=0, meter=meter)
    fb = FeedbackTiles(twin, mode, None, seed=0, meter=meter)
    assert [m.shape for m in fb.matrices()] == shapes
    before = fb.matrices()
    w_before = [p.detach().clone() for p in twin.parameters()]
    run = _Run(twin, phys, 1e-2, "adam")
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    for _ in range(3):
        _step_feedback(run, x, y, fb=fb)
    assert all(np.array_equal(a, b) for a, b in zip(before, fb.matrices()))
    assert all(not torch.equal(a, b) for a, b in zip(w_before, twin.parameters()))
    logits, meas = phys.forward(x, record=True)
    e = torch.softmax(logits, 1) / 8
    deltas = feedback_deltas(fb, twin, e, meas.outputs)
    assert [tuple(d.shape) for d in deltas] == [(8, 5), (8, 4), (8, 3)]
    assert torch.all(deltas[0][meas.outputs[0] == 0] == 0)  # f'(a) = 0 where the ReLU is off


def test_dfa_with_exact_feedback_is_backprop_for_one_hidden_layer():
    """With ideal tiles and B = W_2^T, DFA's hidden delta is backprop's."""
    twin = DigitalTwin((6, 5, 4), seed=0)
    meter = C.CostMeter()
    phys = PhysicalSystem(twin, "none", "ideal", seed=0, meter=meter)
    fb = FeedbackTiles(twin, "dfa", "ideal", seed=0, meter=meter)
    fb.tiles[0].program(twin.layers[1].weight.detach().t().numpy())
    x, y = torch.rand(8, 6), torch.randint(0, 4, (8,))
    torch.nn.functional.cross_entropy(twin(x), y).backward()
    logits, meas = phys.forward(x, record=True)
    e = torch.softmax(logits, 1)
    e[torch.arange(8), y] -= 1
    d = feedback_deltas(fb, twin, e / 8, meas.outputs)
    torch.testing.assert_close(d[0].t() @ x, twin.layers[0].weight.grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("method", ["twin", "pat", "insitu-bp", "dfa", "ff", "spsa", "np", "ep"])
def test_every_method_reports_physical_and_twin_accuracy(method):
    r = train(method, "digits", hidden=(8,), epochs=1, seed=0, mismatch="small")
    assert 0 <= r.acc_physical <= 1 and 0 <= r.acc_twin <= 1
    assert r.history and {"acc_physical", "acc_twin", "phys_passes"} <= set(r.history[-1])
    assert r.costs["energy_uJ"] > 0 and r.eval_costs["phys_passes"] + r.eval_costs["relaxations"] > 0
    if method == "twin":
        assert r.costs["phys_passes"] == 0  # in silico: the hardware is only used to evaluate
    else:
        assert r.costs["phys_passes"] > 0
    d = r.to_dict()
    assert d["method"] == method and d["sizes"][0] in (64, 74)


def test_training_is_deterministic_and_budget_stops():
    a = train("spsa", "digits", hidden=(8,), epochs=3, seed=5, budget_passes=640)
    b = train("spsa", "digits", hidden=(8,), epochs=3, seed=5, budget_passes=640)
    assert a.acc_physical == b.acc_physical and a.costs == b.costs
    assert a.costs["phys_passes"] == 640  # 5 steps x 2 passes x 64 samples


def test_pat_beats_twin_only_on_the_device_at_large_mismatch():
    """The R9 ordering (in-silico < PAT on the device), digits, 64-32-10, seed 0 (about 5 s)."""
    tw = train("twin", "digits", mismatch="large", epochs=15, seed=0)
    pat = train("pat", "digits", mismatch="large", epochs=15, seed=0)
    assert tw.acc_twin > 0.93 and pat.acc_physical > 0.9
    assert pat.acc_physical > tw.acc_physical + 0.03


def test_aimc_train_cli_runs_a_pnn_method(capsys, tmp_path):
    import json

    from aimc.cli import main
    out = tmp_path / "r.json"
    rc = main(["train", "--method", "dfa", "--data", "digits", "--epochs", "1", "--opt", "hidden=8",
               "--opt", "mismatch=large", "--json", "--out", str(out)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["method"] == "dfa" and d["mismatch"] == "large" and d["sizes"] == [64, 8, 10]
    assert {"acc_physical", "acc_twin", "costs"} <= set(d)
    assert json.loads(out.read_text())["history"]
    assert main(["train", "--method", "spsa", "--data", "digits", "--opt", "nope=1"]) == 2


def test_program_deploys_and_freezes_until_unprogram():
    twin = DigitalTwin((6, 5, 4), seed=0)
    phys = PhysicalSystem(twin, "small", "ideal", seed=0)
    x = torch.rand(7, 6)
    y0 = phys(x)
    phys.program()
    torch.testing.assert_close(phys(x), y0)  # ideal conductances: the same function
    with torch.no_grad():
        twin.layers[0].weight.mul_(2)
    torch.testing.assert_close(phys(x), y0)  # deployed: parameter changes are not written
    w = phys.meter.train.device_writes
    phys.unprogram()
    assert not torch.allclose(phys(x), y0)
    assert phys.meter.train.device_writes == w + 50  # back to training: all 30 + 20 cells rewritten
    with pytest.raises(RuntimeError, match="program"):
        phys.drift(10.0)
