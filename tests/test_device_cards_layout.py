"""Layout and path rules of device_models: an acyclic import graph (fit -> pulsed, never back), no aimc/torch
imports, and the measured-CSV input of a pulsed-lookup-table card: taken from the card's folder, regular files
only (a FIFO is refused, never blocks), never opened from inside a saved file, and not carried by the model.
"""
from __future__ import annotations

import ast
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

def _module_names() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = ("device_models",) + p.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(device_models modules ``name`` imports, other top-level packages it imports), from every import
    statement in the file, function-local ones included."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                (inside if a.name in modules else outside).add(a.name if a.name in modules else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("device_models"):
                outside.add(mod.split(".")[0])
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in modules:
                    inside.add(sub)
                elif mod in modules:
                    inside.add(mod)
    inside.discard(name)
    return inside, outside


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None when it is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_device_models_import_graph_is_acyclic_and_numpy_only():
    mods = _module_names()
    assert {"device_models", "device_models.fit", "device_models.pulsed", "device_models.cards"} <= set(mods)
    graph, foreign = {}, {}
    for name, path in mods.items():
        graph[name], foreign[name] = _imports(name, path, set(mods))
    assert _find_cycle(graph) is None, f"import cycle in device_models: {' -> '.join(_find_cycle(graph))}"
    assert "device_models.pulsed" in graph["device_models.fit"]        # the real dependency: fit uses pulsed
    assert "device_models.fit" not in graph["device_models.pulsed"]    # and never the reverse
    assert "device_models.fit" in graph["device_models"]                # so the csv preparer is registered
    for name, pkgs in foreign.items():
        assert not pkgs & {"aimc", "torch"}, f"{name} imports {sorted(pkgs & {'aimc', 'torch'})}"


def test_importing_device_models_does_not_import_scipy():
    import subprocess
    import sys

    code = "import sys, device_models; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
    with pytest.raises(ValueError, match="n_nodes"):
        dm.from_params(LUT, {"csv": str(tmp_path / "three.csv"), "n_nodes": 2.5})


def test_specs_saved_with_the_old_csv_fields_still_load():
    """Specs written while csv/n_nodes were fields of the class carry csv = "" and n_nodes = 16."""
    tables = dict(w_nodes=[-1.0, 0.0, 1.0], up=[2.0, 1.0, 0.5], down=[0.5, 1.0, 2.0], dw_min=0.01)
    assert dm.from_params(LUT, {**tables, "csv": "", "n_nodes": 16}) == PulsedLookupTable(**tables)
