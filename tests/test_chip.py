"""Chip images (aimc.chip): round trips that keep drifting identically, and every way a load can fail."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

import aimc
from aimc import ChipImageError, Tile, TileArray, load_chip, save_chip
from aimc.chip import FORMAT_VERSION
from aimc.config import InferenceConfig, IOConfig, MappingConfig, TileConfig

CFG = TileConfig(inference=InferenceConfig(), mapping=MappingConfig(max_in=24, max_out=20))
X = np.random.default_rng(7).uniform(-1, 1, (6, 40)).astype(np.float32)


def W(out=30, inp=40, seed=0):
    return (np.random.default_rng(seed).standard_normal((out, inp)) * 0.2).astype(np.float32)


def programmed_array(seed=3, cfg=CFG, name="fc"):
    arr = TileArray(30, 40, cfg, seed=seed, name=name)
    arr.program(W())
    arr.drift(3600.0)
    return arr


def assert_same_chip(a, b):
    for ta, tb in zip(a.all_tiles(), b.all_tiles()):
        np.testing.assert_array_equal(ta.conductances(), tb.conductances())
        np.testing.assert_array_equal(ta.cells.g_prog, tb.cells.g_prog)
        np.testing.assert_array_equal(ta.cells.nu, tb.cells.nu)
        np.testing.assert_array_equal(np.asarray(ta.compensation_alpha), np.asarray(tb.compensation_alpha))
        assert ta.time == tb.time and ta.stream.state() == tb.stream.state()
    np.testing.assert_array_equal(a.read_weights(), b.read_weights())


# ----------------------------------------------------------------------------------------- round trips

def test_tile_array_saved_at_1h_drifts_to_1_day_like_one_that_stayed_in_memory(tmp_path):
    kept = programmed_array()
    path = save_chip(kept, tmp_path / "chip.h5")
    fresh = TileArray(30, 40, CFG, seed=99, name="fc")          # another seed: the image brings its own
    assert load_chip(path, fresh) is fresh
    assert_same_chip(kept, fresh)
    assert fresh.seed == 3 and fresh.time == 3600.0
    np.testing.assert_array_equal(kept.forward(X), fresh.forward(X))
    kept.drift(86400.0)
    fresh.drift(86400.0)
    assert_same_chip(kept, fresh)
    np.testing.assert_array_equal(kept.forward(X), fresh.forward(X))


@pytest.mark.parametrize("inference", [None, InferenceConfig(device="reram-wan2022", compensation="per_column"),
                                       InferenceConfig(device="hermes-1dev", verify_tol=0.3)])
def test_single_tile_round_trip(tmp_path, inference):
    g_max = 10.35 if inference is not None and inference.device == "hermes-1dev" else 25.0
    cfg = TileConfig(forward=IOConfig(), inference=inference, mapping=MappingConfig(g_max=g_max))
    t = Tile(12, 40, cfg, seed=4, tile_id="solo")
    t.program(W(12, 40))
    t.drift(86400.0)
    save_chip(t, tmp_path / "t.h5")
    u = Tile(12, 40, cfg, seed=0, tile_id="solo")
    load_chip(tmp_path / "t.h5", u)
    np.testing.assert_array_equal(t.conductances(), u.conductances())
    np.testing.assert_array_equal(t.forward(X), u.forward(X))
    if inference is None or inference.device != "reram-wan2022":
        t.drift(1e6)
        u.drift(1e6)
        np.testing.assert_array_equal(t.read_weights(), u.read_weights())


def test_unprogrammed_and_fused_off_states_round_trip(tmp_path):
    arr = TileArray(30, 40, CFG, seed=1)
    arr.set_weights(W())
    save_chip(arr, tmp_path / "w.h5")
    other = programmed_array(seed=2, name="")
    load_chip(tmp_path / "w.h5", other)
    assert not other.programmed and other.time is None
    np.testing.assert_array_equal(other.read_weights(), W())
    oracle = TileArray(30, 40, CFG, seed=1)
    for t in oracle.all_tiles():
        t._fused = False
    oracle.program(W())
    oracle.drift(10.0)
    save_chip(oracle, tmp_path / "o.h5")
    back = TileArray(30, 40, CFG, seed=1)
    load_chip(tmp_path / "o.h5", back)
    assert not any(t._device.fused for t in back.all_tiles())
    oracle.drift(1000.0)
    back.drift(1000.0)
    assert_same_chip(oracle, back)


class _Layer:
    def __init__(self, out, inp, seed, name, cfg=CFG):
        self.tiles = TileArray(out, inp, cfg, seed=seed, name=name)
        self.programmed = False


class _Model:
    """A module tree without torch: named_modules() as torch.nn.Module has it."""

    def __init__(self, cfg=CFG, second=(10, 30)):
        self.fc1 = _Layer(30, 40, 1, "fc1", cfg)
        self.fc2 = _Layer(*second, 2, "fc2", cfg)

    def named_modules(self):
        return [("", self), ("fc1", self.fc1), ("act", object()), ("fc2", self.fc2)]

    def program(self):
        for m in (self.fc1, self.fc2):
            m.tiles.program(W(*m.tiles.shape, seed=m.tiles.seed))
            m.programmed = True


def test_module_tree_round_trip_and_identity(tmp_path):
    m = _Model()
    m.program()
    m.fc1.tiles.drift(7200.0)
    m.fc2.tiles.drift(7200.0)
    save_chip(m, tmp_path / "m.h5")
    n = _Model()
    load_chip(tmp_path / "m.h5", n)
    assert n.fc1.programmed and n.fc2.programmed
    assert_same_chip(m.fc1.tiles, n.fc1.tiles)
    assert_same_chip(m.fc2.tiles, n.fc2.tiles)
    with h5py.File(tmp_path / "m.h5", "r") as f:
        meta = json.loads(f.attrs["meta"])
        assert f.attrs["format"] == "aimc-chip" and f.attrs["format_version"] == FORMAT_VERSION
    assert [d["name"] for d in meta["structure"]] == ["fc1", "fc2"]
    assert meta["structure"][0]["shape"] == [30, 40] and len(meta["structure_sha256"]) == 64


def test_torch_model_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    nn = pytest.importorskip("aimc.nn")
    cfg = TileConfig(inference=InferenceConfig())

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(nn.AnalogLinear(8, 6, config=cfg, seed=1, name="a"), torch.nn.ReLU(),
                                   nn.AnalogLinear(6, 3, config=cfg, seed=2, name="b")).eval()

    model = make()
    for mod in (model[0], model[2]):
        mod.program()
        mod.drift(3600.0)
    save_chip(model, tmp_path / "torch.h5")
    other = make()
    load_chip(tmp_path / "torch.h5", other)
    assert other[0].programmed and other[0].tiles.time == 3600.0
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


# ----------------------------------------------------------------------------------------- errors

def test_overwrite_is_refused_unless_asked(tmp_path):
    p = tmp_path / "c.h5"
    save_chip(programmed_array(), p)
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_chip(programmed_array(seed=5), p)
    assert p.read_bytes() == before
    save_chip(programmed_array(seed=5), p, overwrite=True)
    assert p.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["c.h5"]          # no temp files left


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import aimc.chip as chip

    def boom(tmp, *rest):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(chip, "_write_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        save_chip(programmed_array(), tmp_path / "c.h5")
    assert os.listdir(tmp_path) == []


def test_missing_truncated_corrupt_and_foreign_files(tmp_path):
    arr = programmed_array()
    with pytest.raises(FileNotFoundError, match="chip image not found"):
        load_chip(tmp_path / "nope.h5", arr)
    p = save_chip(arr, tmp_path / "c.h5")
    data = p.read_bytes()
    target = programmed_array(seed=8)
    w_before = target.read_weights()

    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChipImageError, match="truncated or corrupt"):
        load_chip(tmp_path / "trunc.h5", target)

    with h5py.File(p, "r") as f:
        off = f["a0/t0_0/g_prog"].id.get_offset()
    flipped = bytearray(data)
    for k in range(off + 17, off + 21):
        flipped[k] ^= 0xFF
    (tmp_path / "flip.h5").write_bytes(bytes(flipped))
    with pytest.raises(ChipImageError, match="corrupt: content checksum mismatch"):
        load_chip(tmp_path / "flip.h5", target)

    rng = np.random.default_rng(0)                       # bytes flipped anywhere: an error, never a silent load
    for _ in range(5):
        junk = bytearray(data)
        at = int(rng.integers(0, len(data) - 64))
        for k in range(at, at + 64):
            junk[k] ^= 0x5A
        (tmp_path / "junk.h5").write_bytes(bytes(junk))
        try:
            load_chip(tmp_path / "junk.h5", target)
        except ChipImageError:
            pass
        else:   # only possible if the flipped bytes were unused padding: the chip must then be intact
            assert_same_chip(arr, target)
            target = programmed_array(seed=8)

    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ChipImageError, match="not a readable HDF5"):
        load_chip(tmp_path / "text.h5", target)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ChipImageError, match="not an aimc chip image"):
        load_chip(tmp_path / "other.h5", target)
    np.testing.assert_array_equal(target.read_weights(), w_before)     # untouched by failed loads


def test_newer_format_version_is_refused(tmp_path):
    p = save_chip(programmed_array(), tmp_path / "c.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ChipImageError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_chip(p, programmed_array())


def test_mismatching_targets_are_named(tmp_path):
    p = save_chip(programmed_array(name="fc"), tmp_path / "a.h5")
    with pytest.raises(ChipImageError, match=r"shape \[30, 40\] in the image, \[30, 41\] in the model"):
        load_chip(p, TileArray(30, 41, CFG, name="fc"))
    with pytest.raises(ChipImageError, match=r"\['fc'\] are in the image but not in the model"):
        load_chip(p, TileArray(30, 40, CFG, name="other"))
    other_cfg = CFG.replace(forward=IOConfig(out_bits=8))
    with pytest.raises(ChipImageError, match="config of 'fc' differs.*out_bits"):
        load_chip(p, TileArray(30, 40, other_cfg, name="fc"))
    with pytest.raises(ChipImageError, match="holds a 'tile_array'.*'tile'"):
        load_chip(p, Tile(30, 40, CFG))
    m = _Model()
    m.program()
    pm = save_chip(m, tmp_path / "m.h5")
    with pytest.raises(ChipImageError, match=r"'fc2': shape \[10, 30\] in the image, \[11, 30\] in the model"):
        load_chip(pm, _Model(second=(11, 30)))
    with pytest.raises(TypeError, match="Tile, a TileArray or a module tree"):
        save_chip(42, tmp_path / "x.h5")
    with pytest.raises(ChipImageError, match="no analog modules"):
        class Empty:
            def named_modules(self):
                return [("", self)]
        save_chip(Empty(), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_public_exports():
    for name in ("save_chip", "load_chip", "ChipImageError", "InferenceConfig", "DriftCompensation"):
        assert name in aimc.__all__ and hasattr(aimc, name)
