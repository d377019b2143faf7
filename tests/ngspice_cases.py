"""ngspice validation cases of the crossbar solvers (tests/test_ngspice.py).

``python tests/ngspice_cases.py`` (from the repository root, with ngspice installed) regenerates the frozen
results in tests/fixtures/ngspice/*.json: for each case the conductances, inputs, circuit parameters and the
currents ngspice printed. The tests compare aimc's solvers with those files (always) and, where ngspice is
installed, re-run ngspice on freshly written netlists.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "ngspice"

# name: (rows, cols, ArrayConfig fields, transposed, G range uS, |V| max, zero fraction, inputs)
CASES = {
    "linear_4x4": (4, 4, dict(wire_row_ohm=1.0, wire_col_ohm=1.0), False, (1, 25), 0.2, 0.0, 2),
    "linear_8x8_driver_sense": (8, 8, dict(wire_row_ohm=2.5, wire_col_ohm=2.5, driver_ohm=100.0, sense_ohm=50.0),
                                False, (1, 25), 0.2, 0.0, 2),
    "linear_32x32_zeros": (32, 32, dict(wire_row_ohm=1.0, wire_col_ohm=1.0), False, (0, 25), 0.2, 0.2, 2),
    "1t1r_16x16": (16, 16, dict(wire_row_ohm=1.0, wire_col_ohm=1.0, cell="1t1r", access_ohm=5e3), False,
                   (1, 25), 0.2, 0.0, 2),
    "sinh_8x8": (8, 8, dict(wire_row_ohm=10.0, wire_col_ohm=10.0, driver_ohm=200.0, cell="sinh"), False,
                 (1, 25), 0.6, 0.0, 2),
    "sinh_32x32": (32, 32, dict(wire_row_ohm=1.0, wire_col_ohm=1.0, cell="sinh"), False, (0, 25), 0.5, 0.1, 1),
    "transposed_linear_16x12": (16, 12, dict(wire_row_ohm=1.0, wire_col_ohm=5.0, driver_ohm=100.0, sense_ohm=20.0),
                                True, (1, 25), 0.2, 0.0, 2),
    "transposed_sinh_12x8": (12, 8, dict(wire_row_ohm=20.0, wire_col_ohm=3.0, sense_ohm=50.0, cell="sinh"), True,
                             (1, 25), 0.5, 0.0, 1),
}


def ngspice_path():
    return shutil.which("ngspice")


def run_ngspice(netlist: str, n_out: int) -> np.ndarray:
    """Run ``ngspice -b`` on a netlist from :func:`aimc.crossbar.spice_netlist`; the currents i(vs<k>) in uA."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.cir"
        p.write_text(netlist)
        out = subprocess.run([ngspice_path(), "-b", str(p)], capture_output=True, text=True, timeout=300).stdout
    vals = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"i\(vs(\d+)\)\s*=\s*(\S+)", out)}
    if len(vals) != n_out:
        raise RuntimeError(f"ngspice printed {len(vals)} of {n_out} currents:\n{out[-2000:]}")
    return np.array([vals[k] for k in range(n_out)]) * 1e6


def case_inputs(name):
    """(G (rows, cols) uS, V (inputs, n_drive) volts, ArrayConfig, transposed) drawn from the case's seed."""
    from aimc.config import ArrayConfig
    rows, cols, kw, transposed, (glo, ghi), vmax, zeros, n_inp = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    G = rng.uniform(glo, ghi, (rows, cols))
    G[rng.random((rows, cols)) < zeros] = 0.0
    V = rng.uniform(-vmax, vmax, (n_inp, cols if transposed else rows))
    return G, V, ArrayConfig(model="circuit", **kw), transposed


def simulate(name):
    from aimc.crossbar import spice_netlist
    G, V, acfg, transposed = case_inputs(name)
    n_out = G.shape[0] if transposed else G.shape[1]
    return np.stack([run_ngspice(spice_netlist(G, acfg, v, transposed, name), n_out) for v in V])


def main():
    if ngspice_path() is None:
        sys.exit("ngspice is not installed (apt-get install -y ngspice)")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([ngspice_path(), "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    for name in CASES:
        G, V, acfg, transposed = case_inputs(name)
        I = simulate(name)
        (FIXTURES / f"{name}.json").write_text(json.dumps({
            "name": name, "ngspice": " ".join(version[:2]), "array": acfg.to_dict(), "transposed": transposed,
            "G_uS": G.tolist(), "V": V.tolist(), "I_uA": I.tolist()}))
        print(name, I.shape)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
