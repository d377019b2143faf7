"""Start-up cost: dynamo is loaded only by whoever compiles (and compiling still keeps the analog product out of
the graph, ``aimc.nn.base._exclude_from_dynamo``)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import torch
import aimc
from aimc.deployment.convert import convert_to_analog
from aimc.nn.base import AnalogModule
assert "torch._dynamo" not in sys.modules, "importing aimc.nn loaded torch._dynamo"
assert not hasattr(AnalogModule.analog_matmul, "_torchdynamo_disable")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
analog = convert_to_analog(model, aimc.presets.ideal(), seed=1).eval()
x = torch.randn(5, 8)
with torch.no_grad():
    y0 = analog(x)
    y1 = torch.compile(analog, backend="eager")(x)
assert AnalogModule.analog_matmul._torchdynamo_disable
from torch._dynamo.utils import counters
breaks = sum(n for why, n in counters["graph_break"].items() if "analog_matmul" in why)
assert breaks >= 2, dict(counters["graph_break"])
torch.testing.assert_close(y0, y1, rtol=0, atol=0)
print("ok")
"""


def test_dynamo_loads_only_when_compiling_and_still_skips_the_analog_product():
    pytest.importorskip("torch")
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
