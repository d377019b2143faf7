"""Inference device models: seeded moment tests against the published values (physics.md §9), faults,
levels, program-and-verify, cards and bad input.

Tolerances are 3 standard errors of the estimator plus half a unit of the published value's last digit.
Where a clamp (g >= 0) or the fold ν = |·| touches a tail, the centre and spread are estimated from the
median and the interquartile range, which the clamp does not reach.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import device_models as dm
from device_models.inference import (
    PCM,
    Hermes,
    InferenceModel,
    LookupTable,
    ProgrammedCells,
    ReRamCMO,
    ReRamWan2022,
    StateIndependent,
)

N = 200_000
YEAR = 365 * 86400.0


def rng(seed=0):
    return np.random.Generator(np.random.Philox(seed))


def robust_sigma(x):
    """σ from the IQR, with its standard error for a normal sample: 1.166·σ/sqrt(n)."""
    q25, q75 = np.quantile(x, [0.25, 0.75])
    s = (q75 - q25) / 1.3489795
    return s, 1.166 * s / math.sqrt(x.size)


def robust_centre(x):
    """Median with its standard error for a normal sample: 1.2533·σ/sqrt(n)."""
    s, _ = robust_sigma(x)
    return float(np.median(x)), 1.2533 * s / math.sqrt(x.size)


def sd_with_se(x):
    s = float(np.std(x, ddof=1))
    return s, s / math.sqrt(2 * (x.size - 1))


def close(measured, se, expected, digits_half_unit=0.0):
    assert abs(measured - expected) <= 3 * se + digits_half_unit, (measured, expected, se)


# ------------------------------------------------------------------------------------------------ PCM

PCM_SIGMA = [(0.01, 0.2830), (0.1, 0.4483), (0.25, 0.6814), (0.5, 0.9527), (1.0, 1.0554)]


def test_pcm_prog_sigma_formula_and_g_max_scaling():
    m = dm.load("pcm-joshi2020")
    gh = np.array([p[0] for p in PCM_SIGMA])
    # 1e-4: the published table rounds 0.448249 up to 0.4483
    np.testing.assert_allclose(m.programming_noise_std(gh * 25.0), [p[1] for p in PCM_SIGMA], atol=1e-4)
    m50 = PCM(g_max=50.0)
    np.testing.assert_allclose(m50.programming_noise_std(gh * 50.0), 2 * m.programming_noise_std(gh * 25.0))
    np.testing.assert_allclose(PCM(prog_noise_scale=0.5).programming_noise_std(25.0), 0.5 * 1.05538)


@pytest.mark.parametrize("gh,sigma", PCM_SIGMA)
def test_pcm_prog_sigma_sampled(gh, sigma):
    m = PCM(read_noise_scale=0.0)
    g_t = np.full(N, gh * 25.0)
    cells = m.program(g_t, rng(1))
    dev = cells.g_prog - g_t
    s, se = robust_sigma(dev)
    close(s, se, sigma, 5e-5)
    c, se_c = robust_centre(dev)
    close(c, se_c, 0.0)
    assert cells.g_prog.min() >= 0.0            # clamped at 0
    if gh == 0.01:                              # the clamp fires on Φ(-g/σ) of the devices
        frac0 = np.mean(cells.g_prog == 0.0)
        p = 0.5 * math.erfc(0.25 / sigma / math.sqrt(2))
        close(frac0, math.sqrt(p * (1 - p) / N), p)


PCM_NU = [(0.01, 0.0958, 0.045), (0.1, 0.0601, 0.0229), (0.25, 0.049, 0.0114), (0.5, 0.049, 0.008),
          (1.0, 0.049, 0.008)]


def test_pcm_nu_formula_caps_and_floors():
    m = PCM()
    mu, sd = m.drift_exponent_stats(np.array([0.01, 0.1, 0.2045, 0.25, 0.329, 1.0]) * 25)
    np.testing.assert_allclose(mu, [0.0958, 0.0601, 0.049, 0.049, 0.049, 0.049], atol=5e-5)
    np.testing.assert_allclose(sd, [0.045, 0.0229, 0.0139, 0.0114, 0.008, 0.008], atol=5e-5)
    mu, sd = m.drift_exponent_stats(np.array([0.0, 0.007]) * 25)   # cap 0.1 below ĝ ≈ 0.0076
    np.testing.assert_allclose(mu, [0.1, 0.1])
    np.testing.assert_allclose(sd, [0.045, 0.045])
    mu2, sd2 = PCM(drift_scale=2.0).drift_exponent_stats(2.5)
    np.testing.assert_allclose([mu2, sd2], [2 * 0.0601, 2 * 0.0229], atol=1e-4)


@pytest.mark.parametrize("gh,mu,sd", PCM_NU)
def test_pcm_nu_sampled(gh, mu, sd):
    cells = PCM().program(np.full(N, gh * 25.0), rng(2))
    assert cells.nu.min() >= 0.0
    c, se_c = robust_centre(cells.nu)
    close(c, se_c, mu, 5e-5)
    s, se = robust_sigma(cells.nu)
    close(s, se, sd, 5e-5)


def test_pcm_qs_and_read_noise_factor():
    m = PCM()
    np.testing.assert_allclose(m.read_noise_relative(np.array([0.1, 0.5, 1.0]) * 25), [0.0393, 0.0138, 0.0088],
                               atol=5e-5)
    assert m.read_noise_relative(0.008 * 25) == pytest.approx(0.2)        # cap below ĝ ≈ 0.0082
    assert m.read_noise_relative(0.0085 * 25) < 0.2
    for t, f in [(0, 4.184), (3600, 4.765), (86400, 5.087), (YEAR, 5.637)]:
        assert m.read_noise_factor(t) == pytest.approx(f, abs=5e-4)


@pytest.mark.parametrize("t,rel", [(0.0, 0.0368), (3600.0, 0.0419), (86400.0, 0.0448), (YEAR, 0.0496)])
def test_pcm_read_noise_sampled_at_gmax(t, rel):
    m = PCM(prog_noise_scale=0.0, drift_scale=0.0)          # g_drift = g_prog = 25 µS exactly
    cells = m.program(np.full(N, 25.0), rng(3))
    g = m.read(cells, t, rng(4))
    s, se = sd_with_se(g / 25.0)
    close(s, se, rel, 5e-5)
    c, se_c = robust_centre(g / 25.0)
    close(c, se_c, 1.0)
    np.testing.assert_allclose(m.read_noise_std(cells, t) / 25.0, rel, atol=5e-5)


def test_pcm_read_noise_uses_programmed_conductance_and_is_redrawn():
    m = PCM(drift_scale=0.0)
    cells = m.program(np.full(N, 2.5), rng(5))
    std = m.read_noise_std(cells, 0.0)
    expected = cells.g_prog * m.read_noise_relative(cells.g_prog) * m.read_noise_factor(0.0)
    np.testing.assert_allclose(std, expected, rtol=1e-12)
    r = rng(6)
    a, b = m.read(cells, 0.0, r), m.read(cells, 0.0, r)
    z = (a - b) / (np.sqrt(2) * std)                       # two independent reads
    s, se = sd_with_se(z)
    close(s, se, 1.0)


@pytest.mark.parametrize("t,factor", [(1.0, 0.998), (3600.0, 0.775), (86400.0, 0.664), (YEAR, 0.497)])
def test_pcm_mean_drift_factor_at_gmax(t, factor):
    m = PCM(prog_noise_scale=0.0, read_noise_scale=0.0)
    cells = m.program(np.full(N, 25.0), rng(7))
    f = m.drift_mean(cells, t) / 25.0
    np.testing.assert_array_equal(m.read(cells, t, rng(8)), m.drift_mean(cells, t))   # no noise: read == mean
    L = math.log((t + 20.0) / 20.0)
    spread = factor * 0.008 * L
    med, se = float(np.median(f)), 1.2533 * spread / math.sqrt(N) + 1e-12
    close(med, se, factor, 5e-4)                                      # ν median = μ_ν = 0.049
    # mean over devices: E[exp(-νL)] for ν ~ N(0.049, 0.008) (the fold is 6σ away)
    close(float(f.mean()), spread / math.sqrt(N) + 1e-12, math.exp(-0.049 * L + 0.5 * (0.008 * L) ** 2))


def test_pcm_drift_law_per_device_and_t0():
    m = PCM()
    cells = m.program(np.linspace(0, 25, 1001), rng(9))
    assert np.array_equal(m.drift_mean(cells, 0.0), cells.g_prog)
    t = 1234.5
    np.testing.assert_allclose(m.drift_mean(cells, t), cells.g_prog * ((t + 20.0) / 20.0) ** (-cells.nu.astype(float)),
                               rtol=1e-12)


# ------------------------------------------------------------------------------------------------ HERMES

@pytest.mark.parametrize("card,nd,g_max,t0,sigma", [("hermes-1dev", 1, 10.35, 200.0, 1.0076),
                                                    ("hermes-2dev", 2, 20.7, 300.0, 1.0927)])
def test_hermes_prog_sigma_at_gmax(card, nd, g_max, t0, sigma):
    m = dm.load(card)
    assert (m.num_devices, m.g_max, m.t0, m.t_read) == (nd, g_max, t0, 512e-9)
    assert Hermes(num_devices=nd).g_max == g_max and Hermes(num_devices=nd).t0 == t0
    assert m.programming_noise_std(g_max) == pytest.approx(sigma, abs=5e-5)
    cells = m.program(np.full(N, g_max), rng(10))
    s, se = sd_with_se(cells.g_prog - g_max)
    close(s, se, sigma, 5e-5)


def test_hermes_statistics_shape():
    for nd in (1, 2):
        m = Hermes(num_devices=nd)
        gh = np.array([1e-4, 0.05, 0.0944, 0.0946, 0.2, 0.5, 1.0])
        mu, sd = m.drift_exponent_stats(gh * m.g_max)
        assert np.all((mu > 0.01) & (mu <= 0.13)) and np.all((sd > 0) & (sd <= 0.04))
        assert mu[0] == pytest.approx(0.13)                                   # cap at tiny ĝ
        assert mu[-1] == pytest.approx(-0.0436 - 0.0126 + 0.0736)             # quadratic above 0.0945
        assert abs(mu[2] - mu[3]) < 2e-3                                      # break at 0.0945 nearly continuous
        q = m.read_noise_relative(gh * m.g_max)
        assert np.all((q > 0.005) & (q <= 0.04))
    assert Hermes(num_devices=1).read_noise_relative(10.35) == pytest.approx(0.0664 - 0.1352 + 0.0768 + 0.0088)
    with pytest.raises(ValueError, match="num_devices"):
        Hermes(num_devices=3)


# ------------------------------------------------------------------------------------------------ ReRAM

def test_reram_wan_sigma_and_times():
    m = dm.load("reram-wan2022")
    assert m.programming_noise_std(40.0) == pytest.approx(1.103, abs=5e-4)
    cells = m.program(np.full(N, 40.0), rng(11))
    s, se = sd_with_se(cells.g_prog - 40.0)
    close(s, se, 1.103, 5e-4)
    assert np.array_equal(m.read(cells, 1.0, rng(12)), cells.g_prog)         # programming is the 1 s state
    assert np.array_equal(m.read(cells, 0.0, rng(12)), cells.g_prog)
    g1d = m.read(cells, 86400.0, rng(13))
    s, se = sd_with_se(g1d - 40.0)
    close(s, se, 0.701 + 22.086 - 50.773 + 47.095 - 16.458, 5e-4)
    with pytest.raises(ValueError, match="86400"):
        m.read(cells, 3600.0, rng(14))
    # the g_max/40 scale (aihwkit's effective factor is 1)
    assert ReRamWan2022(g_max=20.0).programming_noise_std(20.0) == pytest.approx(1.103 / 2, abs=5e-4)


def test_reram_wan_time_interpolation():
    m = ReRamWan2022(time_interpolation=True)
    s1, s1d, s2d = (float(m.sigma_at(40.0, t)) for t in (1.0, 86400.0, 172800.0))
    s1h = float(m.sigma_at(40.0, 3600.0))
    w = math.log(3600) / math.log(86400)
    assert s1h == pytest.approx((1 - w) * s1 + w * s1d)
    assert float(m.sigma_at(40.0, 0.5)) == pytest.approx(s1)
    assert min(s1d, s2d) <= float(m.sigma_at(40.0, 1.5 * 86400)) <= max(s1d, s2d)
    with pytest.raises(ValueError, match="2 days"):
        m.sigma_at(40.0, 3 * 86400.0)


def test_reram_cmo_relaxation_at_3600s():
    m = dm.load("reram-cmo-falcone2025", read_noise_scale=0.0, prog_noise_scale=0.0)
    assert (m.g_min, m.g_max) == (9.0, 88.2)
    shift, sig = m.relaxation_stats(3600.0)
    assert shift == pytest.approx(-0.729, abs=5e-4) and sig == pytest.approx(0.756, abs=5e-4)
    cells = m.program(np.full(N, 50.0), rng(15))
    d = m.drift_mean(cells, 3600.0) - 50.0
    close(float(d.mean()), 0.756 / math.sqrt(N), -0.729, 5e-4)
    s, se = sd_with_se(d)
    close(s, se, 0.756, 5e-4)
    # the relaxation is the device's own: the same at every read, and zero at t = 0
    assert np.array_equal(m.read(cells, 3600.0, rng(1)), m.read(cells, 3600.0, rng(2)))
    assert np.array_equal(m.read(cells, 0.0, rng(1)), cells.g_prog)


def test_reram_cmo_programming_read_noise_and_clip():
    m = ReRamCMO()
    g = np.array([9.0, 50.0, 88.2])
    np.testing.assert_allclose(m.programming_noise_std(g), 0.00081107 + 0.00106879 * g)
    np.testing.assert_allclose(ReRamCMO(acceptance_range=2.0).programming_noise_std(g), 0.0112185391 + 0.01129027418 * g)
    with pytest.raises(ValueError, match="acceptance_range"):
        ReRamCMO(acceptance_range=1.0)
    cells = m.program(np.full(N, 50.0), rng(16))
    s, se = sd_with_se(cells.g_prog - 50.0)
    close(s, se, 0.00081107 + 0.00106879 * 50)
    t = 3600.0
    std = m.read_noise_std(cells, t)
    gd = m.drift_mean(cells, t)
    np.testing.assert_allclose(std, 0.0277316483 * np.log10(gd) * math.sqrt(math.log((t + 1e-6) / 2e-6)), rtol=1e-10)
    r = m.read(cells, t, rng(17))
    s, se = sd_with_se((r - gd) / std)
    close(s, se, 1.0)
    edge = ReRamCMO(acceptance_range=2.0).sample(np.r_[np.full(1000, 9.0), np.full(1000, 88.2)], YEAR, seed=3)
    assert edge.min() >= 9.0 and edge.max() <= 88.2


# ------------------------------------------------------------------------------------------------ others

def test_state_independent_deterministic_fixture_and_sigma():
    m = dm.load("state-independent", prog_noise_scale=0.0, read_noise_scale=0.0, nu_std=0.0)
    g = np.linspace(0, 25, 11)
    cells = m.program(g, rng(18))
    for t in (0.0, 60.0, 86400.0):
        np.testing.assert_allclose(m.read(cells, t, rng(19)), g * ((t + 20) / 20) ** -0.1, rtol=1e-12)
    m = StateIndependent()
    np.testing.assert_allclose(m.programming_noise_std(g), 0.2)
    cells = m.program(np.full(N, 12.5), rng(20))
    s, se = sd_with_se(cells.g_prog - 12.5)
    close(s, se, 0.2)
    c, se_c = robust_centre(cells.nu)
    close(c, se_c, 0.1)
    np.testing.assert_allclose(m.read_noise_std(cells, 0.0), np.abs(m.drift_mean(cells, 0.0)) / 25 * m.read_noise_factor(0),
                               rtol=1e-12)


def test_lookup_table_card_matches_pcm_and_interpolates():
    lut, pcm = dm.load("pcm-lut-example"), PCM()
    assert (lut.g_min, lut.g_max) == (0.0, 25.0)
    nodes = np.array(lut.g_table)
    np.testing.assert_allclose(lut.programming_noise_std(nodes), pcm.programming_noise_std(nodes), atol=1e-4)
    for a, b in zip(lut.drift_exponent_stats(nodes), pcm.drift_exponent_stats(nodes)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(lut.read_noise_relative(nodes), pcm.read_noise_relative(nodes), atol=1e-5)
    mid = 0.5 * (nodes[:-1] + nodes[1:])
    np.testing.assert_allclose(lut.programming_noise_std(mid),
                               0.5 * (np.array(lut.prog_std_table[:-1]) + np.array(lut.prog_std_table[1:])))
    # a small table: clipped at its ends, no read noise without read_qs_table
    t = LookupTable(g_table=[5.0, 20.0], prog_std_table=[0.5, 1.0], nu_mean_table=[0.05, 0.03],
                    nu_std_table=[0.01, 0.0], g_min=5.0, g_max=20.0)
    np.testing.assert_allclose(t.programming_noise_std([0.0, 5.0, 12.5, 20.0, 30.0]), [0.5, 0.5, 0.75, 1.0, 1.0])
    cells = t.program(np.full(N, 20.0), rng(21))
    np.testing.assert_allclose(cells.nu, 0.03)
    s, se = sd_with_se(cells.g_prog - 20.0)
    close(s, se, 1.0)
    assert np.array_equal(t.read(cells, 100.0, rng(22)), t.drift_mean(cells, 100.0))
    with pytest.raises(ValueError, match="ascending"):
        LookupTable(g_table=[5.0, 1.0], prog_std_table=[1, 1], nu_mean_table=[0, 0], nu_std_table=[0, 0])
    with pytest.raises(ValueError, match="nu_std_table must have 2 entries"):
        LookupTable(g_table=[1.0, 5.0], prog_std_table=[1, 1], nu_mean_table=[0, 0], nu_std_table=[0])
    with pytest.raises(ValueError, match="g_max"):
        LookupTable(g_table=[1.0, 5.0], prog_std_table=[1, 1], nu_mean_table=[0, 0], nu_std_table=[0, 0], g_max=9.0)


# ------------------------------------------------------------------------------------------------ common

@pytest.mark.parametrize("model", [PCM(), ReRamCMO()])
def test_stuck_at_faults(model):
    m = dataclasses.replace(model, stuck_on_prob=0.05, stuck_off_prob=0.03, stuck_random_prob=0.02)
    g_t = np.full(N, 0.5 * (m.g_min + m.g_max))
    cells = m.program(g_t, rng(23))
    on = cells.stuck & (cells.g_prog == m.g_max)
    off = cells.stuck & (cells.g_prog == m.g_min)
    rnd = cells.stuck & ~on & ~off
    for mask, p in [(on, 0.05), (off, 0.03), (rnd, 0.02), (cells.stuck, 0.10)]:
        close(float(mask.mean()), math.sqrt(p * (1 - p) / N), p)
    vals = cells.g_prog[rnd]
    assert vals.min() >= m.g_min and vals.max() <= m.g_max
    span = m.g_max - m.g_min
    close(float(vals.mean()), span / math.sqrt(12 * vals.size), 0.5 * (m.g_min + m.g_max))
    assert np.all(cells.nu[cells.stuck] == 0)
    for t in (0.0, 3600.0, YEAR):
        r = m.read(cells, t, rng(24))
        assert np.array_equal(r[cells.stuck], cells.g_prog[cells.stuck])      # never moved, no read noise
        assert np.array_equal(m.drift_mean(cells, t)[cells.stuck], cells.g_prog[cells.stuck])
        assert np.all(m.read_noise_std(cells, t)[cells.stuck] == 0)
    with pytest.raises(ValueError, match="stuck_on_prob \\+ stuck_off_prob"):
        PCM(stuck_on_prob=0.6, stuck_off_prob=0.5)
    with pytest.raises(ValueError, match="stuck_random_prob"):
        PCM(stuck_random_prob=1.5)


def test_faults_off_leave_the_stream_unchanged():
    g = np.linspace(0, 25, 100)
    a, b = PCM().program(g, rng(25)), PCM(stuck_on_prob=0.0).program(g, rng(25))
    assert np.array_equal(a.g_prog, b.g_prog) and not a.stuck.any()


def test_finite_levels():
    m = PCM(levels=5, prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
    g = np.linspace(0, 25, 1001)
    q = m.quantize(g)
    assert set(np.unique(q)) == {0.0, 6.25, 12.5, 18.75, 25.0}
    assert np.max(np.abs(q - g)) <= 25 / 8 + 1e-12
    cells = m.program(g, rng(26))
    assert np.array_equal(cells.g_target, q) and np.array_equal(cells.g_prog, q)
    cmo = ReRamCMO(levels=3)
    np.testing.assert_allclose(np.unique(cmo.quantize(np.linspace(9, 88.2, 50))), [9.0, 48.6, 88.2])
    with pytest.raises(ValueError, match="levels"):
        PCM(levels=1)
    with pytest.raises(ValueError, match="levels"):
        PCM(levels=2.5)


def test_program_and_verify_shrinks_the_error():
    g_t = np.full(50_000, 12.5)
    errs = []
    for n_iter in (0, 1, 3, 10):
        m = PCM(verify_tol=0.3, verify_max_iter=n_iter)
        cells = m.program(g_t, rng(27))
        errs.append((np.sqrt(np.mean((cells.g_prog - g_t) ** 2)), np.mean(np.abs(cells.g_prog - g_t) > 0.3)))
    rms, frac = zip(*errs)
    assert rms[0] == pytest.approx(0.9527, rel=0.02)                       # no verify: the raw σ
    assert all(a > b for a, b in zip(rms, rms[1:])) and all(a > b for a, b in zip(frac, frac[1:]))
    p = math.erfc(0.3 / 0.9527 / math.sqrt(2))                            # P(|e| > tol) per shot
    close(frac[2], math.sqrt(p**4 * (1 - p**4) / g_t.size), p**4)          # 1 + 3 shots, keep the best
    # the verified state also tightens later reads for ReRAM Wan (z is the device's own)
    w0, w1 = ReRamWan2022(), ReRamWan2022(verify_tol=0.2, verify_max_iter=10)
    g40 = np.full(50_000, 40.0)
    s0 = np.std(w0.read(w0.program(g40, rng(28)), 86400.0, rng(29)) - 40)
    s1 = np.std(w1.read(w1.program(g40, rng(28)), 86400.0, rng(29)) - 40)
    assert s1 < 0.5 * s0


# ------------------------------------------------------------------------------------------------ cards

def test_available_lists_and_loads_every_inference_card():
    names = dm.available("inference")
    for n in ("pcm-joshi2020", "hermes-1dev", "hermes-2dev", "reram-wan2022", "reram-cmo-falcone2025",
              "state-independent", "pcm-lut-example"):
        assert n in names and n in dm.available()
    for n in names:
        card = dm.read_card(n)
        assert card["citation"] and card["provenance"] and card["name"] == n
        m = dm.load(n)
        assert isinstance(m, InferenceModel) and m.card == n and m.family == card["family"]
        assert 0 <= m.g_min < m.g_max
        assert dm.from_params(m.family, m.params()) == m                         # params round-trip
        g = np.linspace(m.g_min, m.g_max, 64, dtype=np.float32).reshape(8, 8)
        r = m.sample(g, 1.0, seed=1)
        assert r.shape == (8, 8) and r.dtype == np.float32 and np.all(np.isfinite(r))


def test_card_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown device card 'no-such-card'"):
        dm.load("no-such-card")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['foo'\]"):
        dm.load("pcm-joshi2020", foo=1.0)
    with pytest.raises(ValueError, match=r"pcm\.g_max = -1\.0 is out of range"):
        dm.load("pcm-joshi2020", g_max=-1.0)
    with pytest.raises(ValueError, match=r"pcm\.t0"):
        dm.load("pcm-joshi2020", t0=0.0)
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['nu_std_table'\]"):
        dm.from_params("lookup-table", {"g_table": [0, 1], "prog_std_table": [0, 0], "nu_mean_table": [0, 0]})
    p = tmp_path / "bad.toml"
    p.write_text('name = "bad"\nkind = "inference"\nfamily = "pcm"\nprovenance = "x"\n[params]\n')
    with pytest.raises(ValueError, match="missing field 'citation'"):
        dm.load(p)
    p.write_text('name = "bad"\nkind = "inference"\nfamily = "nope"\ncitation = "x"\nprovenance = "x"\n[params]\n')
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        dm.load(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PCM().g_max = 3.0


# ------------------------------------------------------------------------------------------------ API

def test_seeds_dtypes_and_shapes():
    m = dm.load("pcm-joshi2020")
    g = np.linspace(0, 25, 600).reshape(20, 30)
    a, b, c = m.sample(g, 3600.0, seed=5), m.sample(g, 3600.0, seed=5), m.sample(g, 3600.0, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (20, 30) and a.dtype == np.float64
    a32 = m.sample(g.astype(np.float32), 3600.0, seed=5)
    assert a32.dtype == np.float32
    np.testing.assert_allclose(a32, a, rtol=1e-5, atol=1e-5)          # same draws, float32 rounding only
    cells = m.program(g.astype(np.float32), rng(30))
    assert isinstance(cells, ProgrammedCells) and cells.shape == (20, 30)
    assert all(x.dtype == np.float32 for x in (cells.g_target, cells.g_prog, cells.nu))
    assert m.drift_mean(cells, 10.0).dtype == np.float32 and m.read(cells, 10.0, rng(1)).dtype == np.float32
    for g0 in (12.5, np.float32(12.5), np.zeros(0), np.zeros((0, 4))):    # scalars and empty arrays
        m2 = dataclasses.replace(m, stuck_random_prob=0.5)
        assert np.shape(m2.sample(g0, 60.0, seed=1)) == np.shape(g0)
    mu, sd = m.drift_exponent_stats(np.float32(5.0) * np.ones(3, np.float32))
    assert mu.dtype == np.float32 and m.programming_noise_std(np.ones(2, np.float32)).dtype == np.float32


def test_bad_input_is_rejected():
    m = PCM()
    with pytest.raises(ValueError, match="NaN or inf"):
        m.program(np.array([1.0, np.nan]), rng())
    with pytest.raises(ValueError, match=r"g_target must lie in \[g_min, g_max\]"):
        m.program(np.array([1.0, 30.0]), rng())
    with pytest.raises(ValueError, match=r"g_target must lie"):
        ReRamCMO().program(np.array([5.0]), rng())
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        m.program(np.ones(3), np.random.RandomState(0))
    cells = m.program(np.ones(3), rng())
    with pytest.raises(ValueError, match="t = -1"):
        m.read(cells, -1.0, rng())
    with pytest.raises(ValueError, match="t = inf"):
        m.drift_mean(cells, float("inf"))
    with pytest.raises(TypeError, match="numeric"):
        m.program(np.array(["a"]), rng())
