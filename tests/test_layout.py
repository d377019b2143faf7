"""The package layout is the architecture: no import cycles, torch-free layers stay torch-free, old paths work."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("aimc", "device_models")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _target(name: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` in module ``name`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every aimc/device_models module that ``name`` imports, at top level or inside functions."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = _target(name, is_pkg, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    # a package importing its own children (re-exports) is not a dependency between layers
    return {m for m in found if m in modules and m != name and not (is_pkg and m.startswith(name + "."))}


def _graph():
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycle(graph) -> list[str] | None:
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                c = visit(w)
                if c:
                    return c
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            c = visit(v)
            if c:
                return c
    return None


def _unresolved() -> list[str]:
    """Imports of aimc/device_models modules that do not exist (e.g. a relative import one dot short)."""
    mods = _modules()
    bad = []
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _target(name, is_pkg, node)
            elif isinstance(node, ast.Import):
                target = None
                for a in node.names:
                    if a.name.split(".")[0] in PACKAGES and a.name not in mods and not _is_old_path(a.name):
                        bad.append(f"{name}: import {a.name}")
                continue
            else:
                continue
            if target.split(".")[0] in PACKAGES and target not in mods and not _is_old_path(target):
                bad.append(f"{name}: from {'.' * node.level}{node.module or ''} -> {target}")
    return bad


def _is_old_path(name: str) -> bool:
    from aimc._compat import MOVED
    return any(name == o or name.startswith(o + ".") for o in MOVED)


def test_every_internal_import_resolves():
    """A relative import one dot short fails only when its function runs: catch it statically."""
    assert not _unresolved()


def test_no_import_cycles():
    """Arrows point one way, lazy (function-local) imports included."""
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("low,high", [("device_models", "aimc"), ("aimc.kernels", "aimc.core"),
                                      ("aimc.core", "aimc.nn"), ("aimc.core", "aimc.deployment"),
                                      ("aimc.core", "aimc.train"), ("aimc.core", "aimc.sweep"),
                                      ("aimc.circuit", "aimc.nn"), ("aimc.nn", "aimc.deployment")])
def test_lower_layers_never_import_higher_ones(low, high):
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m == low or m.startswith(low + ".")
                 for t in ts if t == high or t.startswith(high + "."))
    assert not bad, f"{low} must not import {high}: {bad}"


def test_every_njit_lives_in_kernels():
    offenders = [str(p.relative_to(ROOT)) for m, p in _modules().items()
                 if not m.startswith("aimc.kernels") and ("@njit" in p.read_text() or "@numba.njit" in p.read_text())]
    assert not offenders, offenders


OLD_PATHS = {"aimc.tile": "aimc.core.tile", "aimc.chip": "aimc.core.chip", "aimc.config": "aimc.core.config",
             "aimc.periphery": "aimc.core.periphery", "aimc.inference": "aimc.core.inference",
             "aimc.crossbar": "aimc.circuit.crossbar", "aimc.circuits": "aimc.circuit.network",
             "aimc.datasets": "aimc.workloads.datasets", "aimc.insitu": "aimc.train.insitu"}


@pytest.mark.parametrize("old,new", sorted(OLD_PATHS.items()))
def test_old_import_paths_are_the_new_modules(old, new):
    """Users' scripts keep working: the old name gives the very same module object, with its own spec."""
    m_old, m_new = importlib.import_module(old), importlib.import_module(new)
    assert m_old is m_new
    assert m_new.__spec__.name == new
    assert sys.modules[old] is m_new


def test_old_torch_side_paths_stay_lazy():
    """``import aimc`` loads no torch; the old path of a torch-side module works once imported."""
    code = ("import sys, aimc, aimc.tile, aimc.datasets\nassert 'torch' not in sys.modules, 'torch loaded'\n"
            "from aimc.tile import Tile\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_old_torch_side_paths_work():
    pytest.importorskip("torch")
    import aimc.deploy
    import aimc.deployment.deploy
    from aimc.convert import convert_to_analog
    import aimc.deployment.convert as conv
    assert aimc.deploy is aimc.deployment.deploy and convert_to_analog is conv.convert_to_analog
