"""First run: the serial and the parallel compilations of the kernels give the same numbers, and the warm stamp
switches a later process to the parallel ones (``aimc.kernels`` module doc, "Serial first")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DEPLOY = """
import hashlib, json, sys
import numpy as np, torch
import aimc.kernels
from aimc.deployment.deploy import evaluate_over_time, deploy_config
from aimc.workloads import datasets, zoo
assert aimc.kernels.mode() == sys.argv[1], aimc.kernels.mode()
model, _ = zoo.load_default()
data = datasets.load("mnist5k")
res = evaluate_over_time(model, data, deploy_config(), ["1s", "1d"], 2, seed=3, keep_last=True,
                         tech="hermes-pcm-14nm", progress=False)
d = res.to_dict()
d["meta"].pop("wall_s")
with torch.no_grad():
    y = res.last_model(torch.as_tensor(data.x_test[:500], dtype=torch.float32)).numpy()
print(json.dumps({"results": d, "logits": hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest(),
                  "logit_sum": float(np.abs(y).sum())}))
"""


def _run(script, *args, **env):
    p = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_deploy_gives_the_same_numbers_with_serial_and_parallel_kernels():
    """Programming, drift, reads with every noise source, calibration, ADC clipping, cost counting and the
    logits of the last chip: bit for bit the same whichever compilation the kernels bind to."""
    pytest.importorskip("torch")
    serial = _run(DEPLOY, "serial", AIMC_KERNELS="serial")
    parallel = _run(DEPLOY, "parallel", AIMC_KERNELS="parallel")
    assert serial["logit_sum"] > 0
    assert serial["logits"] == parallel["logits"]
    assert serial["results"] == parallel["results"]


STAMP = """
import json, sys
import numpy as np
import aimc.kernels
from aimc.kernels import rng
out = np.empty((64, 32), np.float32)
rng.fill_normal(out, np.uint32(1), np.uint32(2), np.uint64(3))
d = rng.fill_normal
info = {"mode": aimc.kernels.mode(), "stamp": str(aimc.kernels.stamp_path()), "sum": float(out.sum()),
        "serial_name": d.py_func.__qualname__, "misses": sum(d.stats.cache_misses.values()),
        "hits": sum(d.stats.cache_hits.values())}
if sys.argv[1] == "start":
    p = aimc.kernels.start_background()
    info["started"] = p is not None
    if p is not None:
        p.wait()
print(json.dumps(info))
"""


def test_the_first_run_binds_serial_then_the_background_compile_switches_later_runs_to_parallel(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "AIMC_KERNELS": "", "AIMC_BACKGROUND_COMPILE": "1"}
    first = _run(STAMP, "start", **env)
    assert first["mode"] == "serial" and first["serial_name"].endswith(".serial") and first["misses"] == 1
    assert first["started"] and Path(first["stamp"]).exists()
    second = _run(STAMP, "-", **env)
    assert second["mode"] == "parallel" and not second["serial_name"].endswith(".serial")
    assert second["misses"] == 0 and second["hits"] == 1        # the background compiled it into the cache
    assert second["sum"] == first["sum"]
    assert second["stamp"] == first["stamp"]


def test_a_forced_mode_starts_no_background_compile(tmp_path):
    got = _run(STAMP, "start", NUMBA_CACHE_DIR=str(tmp_path), AIMC_KERNELS="serial")
    assert got["mode"] == "serial" and not got["started"]


def test_a_bad_mode_is_refused():
    p = subprocess.run([sys.executable, "-c", "import aimc.kernels as k; k.mode()"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "AIMC_KERNELS": "fast"})
    assert p.returncode != 0 and "AIMC_KERNELS must be 'serial' or 'parallel'" in p.stderr


HELPER = """
import json, os
from numba.core import event
from aimc.cli import main
from aimc.kernels import background
p = background.helper()
p.wait()
os.environ["AIMC_BACKGROUND_COMPILE"] = "0"   # no parallel compile when this process exits
with event.install_recorder("numba:compile") as rec:
    main(["deploy", "--no-files", "--no-progress", "--repeats", "1", "--times", "1s", "--calib-samples", "200"])
compiled = sorted({e.data["dispatcher"].py_func.__qualname__ for _, e in rec.buffer
                   if e.is_start and e.data["dispatcher"].py_func.__module__.startswith("aimc.kernels")})
print(json.dumps({"helper": p.returncode, "compiled": compiled, "used": background.recorded()}))
"""


def test_the_first_run_helper_compiles_exactly_what_a_default_deploy_uses(tmp_path):
    """``background.FIRST_DEPLOY`` (compiled by the helper process of a first ``aimc deploy``) is every kernel
    signature a default deploy binds: after the helper, the deploy compiles nothing and binds nothing else."""
    pytest.importorskip("torch")
    from aimc.kernels import background
    got = _run(HELPER, NUMBA_CACHE_DIR=str(tmp_path), AIMC_KERNELS="", AIMC_BACKGROUND_COMPILE="1")
    assert got["helper"] == 0
    assert got["compiled"] == []
    key = lambda e: json.dumps([e[0], e[2]])  # noqa: E731
    assert sorted(map(key, got["used"])) == sorted(map(key, json.loads(json.dumps(background.FIRST_DEPLOY))))
