"""Sweeps (aimc.sweep): chip r == `aimc deploy`'s chip r, files, resume, and a real 2-worker Dask LocalCluster
(processes) that gives bit-identical results and survives a worker killed mid-sweep."""
import json
import os
import signal
import socket
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from aimc import datasets, zoo  # noqa: E402
from aimc.cli import main  # noqa: E402
from aimc.deploy import evaluate_over_time  # noqa: E402
from aimc.sweep import SpecError, SweepError, SweepSpec, run_sweep  # noqa: E402
from aimc.sweep import run as sweep_run  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """scikit-learn's digits as an IDX folder: workers then load data without importing scikit-learn."""
    import numpy as np
    d = datasets.load("digits")
    folder = tmp_path_factory.mktemp("digits-idx")
    for split, x, y in (("train", d.x_train, d.y_train), ("t10k", d.x_test, d.y_test)):
        img = np.round(np.asarray(x).reshape(-1, 8, 8) / np.max(x) * 255).astype(np.uint8)
        datasets.write_idx(folder / f"{split}-images-idx3-ubyte", img)
        datasets.write_idx(folder / f"{split}-labels-idx1-ubyte", np.asarray(y).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def digits(idx_dir):
    return datasets.load("mnist-idx", path=idx_dir)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, digits):
    model = zoo.mlp(64, (32,), 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        acc = zoo.train_digital(model, digits, epochs=8, lr=3e-3, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.85
    path = tmp_path_factory.mktemp("ckpt") / "digits_mlp.pt"
    zoo.save_checkpoint(model, path, {"dataset": "digits", "accuracy": acc})
    return path


@pytest.fixture(scope="module")
def spec(ckpt, idx_dir):
    # 2 compensations x 2 variants x 3 chips = 12 tasks, each drifted to 1 s and 1 d
    return SweepSpec.from_dict({"data": str(idx_dir), "models": [str(ckpt)], "devices": ["pcm-joshi2020"],
                                "compensation": ["none", "global"], "times": ["1s", "1d"], "chips": 3, "seed": 5,
                                "variants": {"forward.out_bits": [6, 8]}})


@pytest.fixture(scope="module")
def serial(spec, tmp_path_factory):
    return run_sweep(spec, tmp_path_factory.mktemp("serial") / "out", serial=True)


def _acc(rows):
    return [(r["compensation"], r["variant"], r["chip"], r["time"], r["accuracy"]) for r in rows]


def test_serial_sweep_equals_deploy_chip_by_chip(spec, serial, ckpt, digits):
    assert serial.meta["engine"] == "serial" and serial.meta["ran"] == 12 and serial.meta["skipped"] == 0
    assert len(serial.rows) == 12 * 2
    model, _ = zoo.load_checkpoint(ckpt)
    for comp in spec.compensation:
        for k in range(len(spec.variants)):
            ref = evaluate_over_time(model, digits, spec.config_for("pcm-joshi2020", comp, k), spec.times,
                                     repeats=spec.chips, seed=spec.seed)
            got = {(r["chip"], r["time"]): r for r in serial.rows if r["compensation"] == comp and r["variant"] == k}
            for i, t in enumerate(spec.times):
                for c in range(spec.chips):
                    row = got[(c, t)]
                    assert row["accuracy"] == ref.accuracy[i][c]          # bit-identical to aimc deploy's chip c
                    assert row["seed"] == spec.seed + c == ref.seeds[c]
                    assert row["digital_accuracy"] == ref.digital_accuracy
    # every coordinate in the table; variants differ in results (6-bit vs 8-bit ADC) but share the chips' seeds
    r0 = serial.rows[0]
    assert set(serial.columns) <= set(r0) and r0["forward.out_bits"] in (6, 8) and r0["model"] == str(ckpt)
    s = serial.summary()
    assert len(s) == 2 * 2 * 2 and all(x["n_chips"] == 3 for x in s)


def test_worker_cache_gives_the_same_results(spec, serial, ckpt, digits):
    """A worker caches the model's digital accuracy (keyed by model, data, batch size, threads): a task on a
    warm worker gives exactly what a cold one and evaluate_over_time's own evaluation give."""
    from aimc.deploy import digital_accuracy
    tasks = spec.tasks()
    models, bound = sweep_run._plan(spec)
    path, sha = models[spec.models[0][0]]
    ctx = {"model_path": path, "model_sha256": sha, "data": spec.data, "times_s": list(spec.times_s),
           "batch_size": spec.batch_size, "threads": spec.threads, "chip_images": False}
    task = {**tasks[4].coords, "config": tasks[4].config}
    sweep_run._digital.cache_clear()
    cold = sweep_run.run_task(task, ctx)
    hits = sweep_run._digital.cache_info().hits
    warm = sweep_run.run_task(task, ctx)
    assert sweep_run._digital.cache_info().hits == hits + 1                # the second task used the cache
    for res in (cold, warm):
        assert {k: res[k] for k in ("accuracy", "digital_accuracy", "n_test")} == \
            {k: cold[k] for k in ("accuracy", "digital_accuracy", "n_test")}
    row = next(r for r in serial.rows if r["task_id"] == sweep_run.task_id(bound, tasks[4]))
    assert cold["accuracy"][0] == row["accuracy"] and cold["digital_accuracy"] == row["digital_accuracy"]
    model, _ = zoo.load_checkpoint(ckpt)
    ref = evaluate_over_time(model, digits, tasks[4].config, spec.times, 1, seed=tasks[4].seed)   # computes its own
    assert cold["digital_accuracy"] == ref.digital_accuracy == digital_accuracy(model, digits)
    assert [a[0] for a in ref.accuracy] == cold["accuracy"]
    # another batch size is another key (the cache never answers for what it was not computed for)
    sweep_run._digital(path, sha, spec.data, 7, spec.threads)
    assert sweep_run._digital.cache_info().currsize == 2
    with pytest.raises(ValueError, match="digital_accuracy must be a fraction"):
        evaluate_over_time(model, digits, tasks[4].config, ["1s"], 1, digital_accuracy=1.5)


def test_files_json_csv_h5(serial):
    import csv

    import h5py
    out = serial.out
    d = json.loads((out / "results.json").read_text())
    assert d["rows"] == serial.rows and d["columns"] == serial.columns
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(serial.rows) and float(rows[3]["accuracy"]) == serial.rows[3]["accuracy"]
    with h5py.File(out / "results.h5") as f:
        g = f["table"]
        assert list(g["accuracy"][:]) == [r["accuracy"] for r in serial.rows]
        assert [v.decode() for v in g["compensation"][:]] == [r["compensation"] for r in serial.rows]
        assert list(g["forward.out_bits"][:]) == [r["forward.out_bits"] for r in serial.rows]
    assert len(list((out / "tasks").glob("*.json"))) == 12
    pytest.importorskip("matplotlib")
    assert (out / "plots" / "variant-00.png").stat().st_size > 1000 and (out / "plots" / "variant-01.png").exists()


def test_resume_skips_recorded_tasks_and_refuses_another_spec(spec, serial, tmp_path):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(serial.out, out)
    again = run_sweep(spec, out, serial=True)
    assert again.meta["ran"] == 0 and again.meta["skipped"] == 12 and again.rows == serial.rows
    victim = sorted((out / "tasks").glob("*.json"))[4]
    victim.unlink()
    ran = []
    again = run_sweep(spec, out, serial=True, on_result=lambda t, rec: ran.append(rec["id"]))
    assert ran == [victim.stem] and again.meta["ran"] == 1 and again.rows == serial.rows
    victim.write_text("{not json")
    with pytest.raises(SweepError, match="corrupt or not this task's"):
        run_sweep(spec, out, serial=True)
    other = SweepSpec.from_dict({"data": spec.data, "models": [spec.models[0][1]], "devices": ["pcm-joshi2020"],
                                 "compensation": ["none", "global"], "times": ["1s", "1d"], "chips": 2, "seed": 5,
                                 "variants": {"forward.out_bits": [6, 8]}})
    with pytest.raises(SweepError, match="different sweep .*chips"):
        run_sweep(other, out, serial=True)


def test_failed_tasks_are_reported_and_retried_on_rerun(spec, serial, tmp_path, monkeypatch):
    real = sweep_run.run_task

    def flaky(task, ctx):
        if task["chip"] == 1 and task["variant"] == 0:
            raise MemoryError("simulated")
        return real(task, ctx)

    monkeypatch.setattr(sweep_run, "run_task", flaky)
    with pytest.raises(SweepError, match=r"2 of 12 tasks failed .*MemoryError: simulated.* 10 finished tasks"):
        run_sweep(spec, tmp_path / "o", serial=True)
    assert len(list((tmp_path / "o" / "tasks").glob("*.json"))) == 10
    monkeypatch.setattr(sweep_run, "run_task", real)
    res = run_sweep(spec, tmp_path / "o", serial=True)
    assert res.meta["ran"] == 2 and res.meta["skipped"] == 10 and res.rows == serial.rows


def test_chip_images(ckpt, idx_dir, tmp_path):
    import aimc
    s = SweepSpec.from_dict({"data": str(idx_dir), "models": [str(ckpt)], "devices": ["pcm-joshi2020"],
                             "times": ["1s", "1h"], "chips": 1, "chip_images": True})
    res = run_sweep(s, tmp_path / "o", serial=True)
    rec = json.loads(next((tmp_path / "o" / "tasks").glob("*.json")).read_text())
    model, _ = zoo.load_checkpoint(ckpt)
    analog = aimc.convert_to_analog(model, s.config_for("pcm-joshi2020", "global", 0), seed=0)
    aimc.load_chip(tmp_path / "o" / rec["chip_image"], analog)
    assert all(m.tiles.time == 3600.0 for m in analog.modules() if hasattr(m, "tiles"))
    assert len(res.rows) == 2


def test_without_dask_runs_serially_and_refuses_a_scheduler(spec, serial, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_run, "have_dask", lambda: False)
    res = run_sweep(spec, tmp_path / "o", serial=None)
    assert res.meta["engine"] == "serial" and _acc(res.rows) == _acc(serial.rows)
    with pytest.raises(SweepError, match=r"pip install aimc\[dask\]"):
        run_sweep(spec, tmp_path / "o2", scheduler="tcp://127.0.0.1:1")


def test_cli_sweep(ckpt, idx_dir, tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(f'data = "{idx_dir}"\nmodels = ["{ckpt}"]\ndevices = ["pcm-joshi2020"]\ntimes = ["1s", "1d"]\n'
                 'chips = 2\n[variants]\n"forward.out_bits" = [6, 8]\n')
    assert main(["sweep", str(p), "--check"]) == 0
    assert "= 4 tasks" in capsys.readouterr().out
    assert main(["sweep", str(p), "--serial", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "4 task(s) run, 0 already recorded" in text and "| global | forward.out_bits=8 |" in text
    assert main(["sweep", str(p), "--serial", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "0 task(s) run, 4 already recorded" in capsys.readouterr().out
    p.write_text(p.read_text().replace("[6, 8]", "[6, 1]"))
    assert main(["sweep", str(p), "--serial", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "forward.out_bits = 1" in err and not (tmp_path / "o2").exists()


def test_bad_arguments(spec, tmp_path):
    with pytest.raises(SpecError, match="workers = 0"):
        run_sweep(spec, tmp_path / "o", workers=0)
    with pytest.raises(SpecError, match="timeout"):
        run_sweep(spec, tmp_path / "o", timeout=0)
    with pytest.raises(SpecError, match="serial=True runs in this process"):
        run_sweep(spec, tmp_path / "o", serial=True, scheduler="tcp://127.0.0.1:1")


# ------------------------------------------------------------------------------------------------- Dask

@pytest.fixture(scope="module")
def cluster_client():
    pytest.importorskip("distributed")
    from distributed import Client
    cluster = sweep_run.local_cluster(2)  # 2 worker processes x 1 thread
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.mark.dask
def test_dask_two_workers_bit_identical(spec, serial, cluster_client, tmp_path):
    res = run_sweep(spec, tmp_path / "o", client=cluster_client)
    assert res.meta["engine"] == "dask" and res.meta["workers"] == 2 and res.meta["ran"] == 12
    assert res.rows == serial.rows  # same numbers, same order, whatever worker ran which task


@pytest.mark.dask
def test_local_cluster_settings_reach_the_workers(cluster_client):
    """aimc's LocalCluster: no profiler sampling the tasks, slow housekeeping, glibc's malloc defaults."""
    def settings():
        import dask
        return (dask.config.get("distributed.worker.profile.enabled"), dask.config.get("distributed.admin.tick.interval"),
                os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    got = cluster_client.run(settings)
    assert len(got) == 2 and all(v == (False, "1s", None) for v in got.values())
    assert sweep_run.CLUSTER_CONFIG["distributed.worker.profile.enabled"] is False


@pytest.mark.dask
def test_dask_worker_killed_mid_sweep(spec, serial, cluster_client, tmp_path):
    client = cluster_client
    killed, recorded = [], []

    def kill_once(task, rec):
        recorded.append(rec["id"])
        if killed:
            return
        busy = {w: keys for w, keys in client.processing().items() if keys}
        pids = client.run(os.getpid)
        victim = next(iter(busy))
        os.kill(pids[victim], signal.SIGKILL)
        killed.append((victim, list(busy[victim])))

    res = run_sweep(spec, tmp_path / "o", client=client, on_result=kill_once)
    assert len(killed) == 1 and killed[0][1], "a worker with a task in flight was killed"
    assert killed[0][0] not in client.scheduler_info()["workers"]          # that worker is gone
    assert sorted(recorded) == sorted(set(recorded)) and len(recorded) == 12  # each task recorded exactly once
    assert len(list((tmp_path / "o" / "tasks").glob("*.json"))) == 12
    assert res.rows == serial.rows                                          # nothing lost, nothing changed


@pytest.mark.dask
def test_unreachable_scheduler_fails_within_timeout(spec, tmp_path):
    pytest.importorskip("distributed")
    with socket.socket() as s:       # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(SweepError, match=f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}' within 2 s"):
        run_sweep(spec, tmp_path / "o", scheduler=f"tcp://127.0.0.1:{port}", timeout=2)
    assert time.perf_counter() - t0 < 60  # a hang guard, not a speed test: the timeout is honoured
    assert not (tmp_path / "o").exists()   # nothing written before the engine is up
