"""The crossbar solvers against ngspice: frozen ngspice results (tests/fixtures/ngspice, written by
tests/ngspice_cases.py) always; a fresh ngspice run where ngspice is installed."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aimc.config import ArrayConfig
from aimc.crossbar import read_physical

sys.path.insert(0, str(Path(__file__).parent))
import ngspice_cases  # noqa: E402

FILES = sorted(ngspice_cases.FIXTURES.glob("*.json"))


def load(path):
    d = json.loads(path.read_text())
    return (np.array(d["G_uS"]), np.array(d["V"]), ArrayConfig.from_dict(d["array"]), d["transposed"],
            np.array(d["I_uA"]))


def test_every_case_has_a_fixture():
    assert {p.stem for p in FILES} == set(ngspice_cases.CASES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_exact_solver_matches_ngspice(path):
    """Linear cells to 1e-6 relative (of the largest current), sinh cells to 1e-4."""
    G, V, acfg, transposed, I_spice = load(path)
    I = read_physical(G, acfg, V, transposed, solver="exact")
    tol = 1e-4 if acfg.cell.value == "sinh" else 1e-6
    assert np.abs(I - I_spice).max() <= tol * np.abs(I_spice).max()
    # the wires matter in every case (the comparison could fail)
    ideal_gap = np.abs(I - _ideal(G, V, acfg, transposed)).max()
    assert ideal_gap > 100 * tol * np.abs(I_spice).max()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fast_solver_matches_ngspice_to_its_tolerance(path):
    G, V, acfg, transposed, I_spice = load(path)
    I = read_physical(G, acfg.replace(tol=1e-6), V, transposed, solver="fast")
    assert np.abs(I - I_spice).max() <= 2e-5 * np.abs(I_spice).max()


def _ideal(G, V, acfg, transposed):
    Ge = G / (1 + G * 1e-6 * acfg.access_ohm) if acfg.cell.value == "1t1r" else G
    M = Ge.T if transposed else Ge
    if acfg.cell.value == "sinh":
        k = acfg.sinh_k
        return np.stack([(M * np.sinh(k * v[:, None]) / k).sum(0) for v in V])
    return V @ M


@pytest.mark.skipif(ngspice_cases.ngspice_path() is None, reason="ngspice is not installed "
                    "(apt-get install -y ngspice); the frozen fixtures are still compared")
@pytest.mark.parametrize("name", ["linear_8x8_driver_sense", "1t1r_16x16", "sinh_8x8", "transposed_linear_16x12",
                                  "transposed_sinh_12x8"])
def test_fresh_ngspice_run_reproduces_the_fixture(name):
    G, V, acfg, transposed, I_fix = load(ngspice_cases.FIXTURES / f"{name}.json")
    G2, V2, acfg2, transposed2 = ngspice_cases.case_inputs(name)
    same_solver = {f: getattr(acfg2, f) for f in ArrayConfig.SOLVER_FIELDS}  # the fixture records the circuit
    assert np.array_equal(G, G2) and np.array_equal(V, V2) and acfg.replace(**same_solver) == acfg2 \
        and transposed == transposed2
    I = ngspice_cases.simulate(name)
    assert np.abs(I - I_fix).max() <= 1e-9 * np.abs(I_fix).max()
