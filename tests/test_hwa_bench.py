"""``aimc bench hwa-step``: the contenders build and step, and a contender that fails is reported with its
error (no timing is asserted: speed lives in benchmarks)."""
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from aimc.train.hwa import bench as hwa_bench  # noqa: E402
from aimc.train.hwa import ClipType, ModifierType  # noqa: E402

SMALL = SimpleNamespace(size=16, batch=8, threads=1, repeats=1)


def test_equal_features_config():
    tc, hc = hwa_bench.equal_features()
    f = tc.forward
    assert (f.inp_bits, f.out_bits, f.out_noise, f.ir_drop, f.w_noise) == (8, 8, 0.04, 0.0, 0.0)
    assert hc.modifier.type == ModifierType.ADD_NORMAL and hc.modifier.std_dev == hwa_bench.NOISE_STD
    assert hc.clip.type == ClipType.LAYER_GAUSSIAN and hc.input_range.enable
    assert not hc.learn_out_scaling and hc.remap.type.value == "none"


@pytest.mark.parametrize("name", ["aimc", "aimc_full", "baseline", "aihwkit_lightning"])
def test_contender_steps_change_the_weights(name):
    if name == "aihwkit_lightning":
        pytest.importorskip("aihwkit_lightning", reason="aihwkit-lightning is not installed")
    spec, kw = hwa_bench.CONTENDERS[name]
    step = getattr(hwa_bench, spec.split(":")[1])(SMALL, **kw)
    cells = dict(zip(step.__code__.co_freevars, (c.cell_contents for c in step.__closure__)))
    w = [p for n, p in cells["model"].named_parameters() if n.endswith("weight")][0]
    before = w.detach().clone()
    step()
    assert cells["x"].grad is not None  # input gradients are part of the step
    assert not torch.equal(before, w.detach())


def test_failing_contender_is_reported_with_its_error(monkeypatch):
    monkeypatch.setattr(hwa_bench, "CONTENDERS", {
        "baseline": ("aimc.train.hwa.bench:make_baseline", {}),
        "aimc": ("aimc.train.hwa.bench:no_such_factory", {}),
    })
    out = hwa_bench.bench_hwa_step(SMALL)
    assert out["baseline_ms"] > 0
    assert out["aimc_ms"] is None and "no_such_factory" in out["aimc_error"]
    assert out["ratio"] is None
