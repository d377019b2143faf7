"""Layout and path rules of device_models: an acyclic import graph (fit -> pulsed, never back), no aimc/torch
imports, and the measured-CSV input of a pulsed-lookup-table card: taken from the card's folder, regular files
only (a FIFO is refused, never blocks), never opened from inside a saved file, and not carried by the model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

import device_models as dm
from device_models import fit
from device_models.cards import names_only
from device_models.pulsed import PulsedLookupTable, SoftBounds

PKG = Path(dm.__file__).parent
LUT = "pulsed-lookup-table"


# ------------------------------------------------------------------------------------------- import graph

def test_device_models_imports_point_one_way():
    """fit uses pulsed (it simulates the lookup device), never the reverse; the whole graph (aimc and
    device_models, function-local imports included) is checked acyclic by tests/test_layout.py."""
    from test_layout import _cycle, _graph  # the one import-graph parser

    graph = {m: t for m, t in _graph().items() if m.startswith("device_models")}
    assert {"device_models.fit", "device_models.pulsed", "device_models.cards"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert "device_models.pulsed" in graph["device_models.fit"]
    assert "device_models.fit" not in graph["device_models.pulsed"]
    assert not any(t.startswith("aimc") for ts in graph.values() for t in ts)


def test_the_csv_preparer_is_registered_without_scipy_or_torch():
    """Importing any device_models module registers fit's preparer (the package imports fit); scipy is only
    imported by a fit, torch never."""
    import subprocess
    import sys

    code = ("import sys, device_models.pulsed as p\nfrom device_models.cards import PREPARERS\n"
            "print(PREPARERS['pulsed-lookup-table'][1], 'scipy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["('csv',)", "False", "False"], out.stdout + out.stderr


# ------------------------------------------------------------------------------------------- csv in cards

CARD = ('name = "mine"\nkind = "pulsed"\nfamily = "pulsed-lookup-table"\ncitation = "own data"\n'
        'provenance = "measured"\n[params]\ncsv = "{csv}"\nn_nodes = 12\ndw_min_dtod = 0.0\n')


@pytest.fixture(scope="module")
def card_dir(tmp_path_factory) -> Path:
    """A user's card folder: mine.toml names data/meas.csv relative to itself."""
    d = tmp_path_factory.mktemp("cards")
    truth = SoftBounds(dw_min=0.01, up_down=0.1, w_max=1.0, w_min=-1.0, dw_min_std=0.0, write_noise_std=2.0,
                       dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    tu = truth.response_curve(300, 0, w0=-0.9, rng=1)[1:]
    td = truth.response_curve(0, 300, w0=0.9, rng=2)[1:]
    (d / "data").mkdir()
    np.savetxt(d / "data" / "meas.csv", np.column_stack([tu, td]), delimiter=",")
    (d / "mine.toml").write_text(CARD.format(csv="data/meas.csv"))
    return d


@pytest.fixture(scope="module")
def loaded(card_dir, tmp_path_factory):
    """The card loaded from another working directory that holds a decoy data/meas.csv (not a CSV at all)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "data").mkdir()
    (elsewhere / "data" / "meas.csv").write_text("not, numbers\n")
    old = os.getcwd()
    os.chdir(elsewhere)
    try:
        return dm.load(card_dir / "mine.toml"), elsewhere
    finally:
        os.chdir(old)


def test_csv_in_a_card_is_taken_from_the_card_folder(loaded, monkeypatch):
    dev, elsewhere = loaded
    assert isinstance(dev, PulsedLookupTable) and len(dev.w_nodes) == 12 and dev.card == "mine"
    assert dev.symmetry_point == pytest.approx(0.0, abs=0.15)  # the soft-bounds truth (up_down 0.1): w* ~ -0.1
    # the same relative path given in code is taken as written, i.e. from the working directory (the decoy)
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match=r"csv.*not a two-column numeric CSV"):
        dm.from_params(LUT, {"csv": "data/meas.csv"})


def test_fitted_model_carries_no_path(loaded, card_dir):
    dev, _ = loaded
    names = {f.name for f in dataclasses.fields(dev)}
    assert not names & {"csv", "n_nodes"}
    params = {f.name: getattr(dev, f.name) for f in dataclasses.fields(dev) if f.init}
    assert not any(isinstance(v, (str, os.PathLike)) for v in params.values())
    assert b"meas.csv" not in pickle.dumps(dev) and "meas.csv" not in repr(dev)
    with names_only("image.h5"):  # where a path would be refused: the fields alone rebuild the model
        assert dm.from_params(LUT, params) == dev
    assert pickle.loads(pickle.dumps(dev)) == dev


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_csv_is_refused_without_blocking(card_dir, tmp_path):
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    card = tmp_path / "fifo.toml"
    card.write_text(CARD.format(csv="fifo.csv"))
    result = {}

    def attempt(key, f):
        try:
            result[key] = f()
        except ValueError as e:
            result[key] = str(e)

    def cli():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = fit.main([str(fifo)])
        return f"rc {rc}: {err.getvalue()}"

    calls = {"card": lambda: dm.load(card),                      # the card loader's check
             "reader": lambda: fit.load_pulse_response(fifo),    # the reader's own check (fstat after open)
             "cli": cli}                                         # python -m device_models.fit fifo.csv
    for key, f in calls.items():
        t = threading.Thread(target=attempt, args=(key, f), daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive(), f"{key}: reading a FIFO blocked"
        assert "not a regular file" in str(result[key]), (key, result[key])
    assert result["cli"].startswith("rc 2:")
    assert "csv" in result["card"]


def test_csv_must_be_an_existing_regular_file_and_never_a_path_inside_a_saved_file(card_dir, tmp_path):
    (tmp_path / "adir").mkdir()
    card = tmp_path / "dir.toml"
    card.write_text(CARD.format(csv="adir"))
    with pytest.raises(ValueError, match=r"pulsed-lookup-table\.csv.*not a regular file"):
        dm.load(card)
    card.write_text(CARD.format(csv="missing.csv"))
    with pytest.raises(ValueError, match=r"pulsed-lookup-table\.csv.*not found"):
        dm.load(card)
    with pytest.raises(ValueError, match=r"csv must be a file path string"):
        dm.from_params(LUT, {"csv": 3})
    with names_only("image.h5"), pytest.raises(ValueError, match=r"csv = .* in image\.h5 is a file path"):
        dm.from_params(LUT, {"csv": str(card_dir / "data" / "meas.csv")})
    (tmp_path / "three.csv").write_text("1,2,3\n" * 20)
    with pytest.raises(ValueError, match=r"csv.*two columns"):
        dm.from_params(LUT, {"csv": str(tmp_path / "three.csv")})
    with pytest.raises(ValueError, match=r"csv.*two columns"):  # base: the folder relative paths start from
        dm.from_params(LUT, {"csv": "three.csv"}, base=tmp_path)
    with pytest.raises(ValueError, match="n_nodes"):
        dm.from_params(LUT, {"csv": str(tmp_path / "three.csv"), "n_nodes": 2.5})


def test_specs_saved_with_the_old_csv_fields_still_load():
    """Specs written while csv/n_nodes were fields of the class carry csv = "" and n_nodes = 16."""
    tables = dict(w_nodes=[-1.0, 0.0, 1.0], up=[2.0, 1.0, 0.5], down=[0.5, 1.0, 2.0], dw_min=0.01)
    assert dm.from_params(LUT, {**tables, "csv": "", "n_nodes": 16}) == PulsedLookupTable(**tables)
