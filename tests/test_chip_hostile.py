"""Chip images under broken and hostile input: a corpus of bad files made here, each refused cleanly.

Every broken image must give a ChipImageError naming the file and the part, never hang (FIFOs named
inside a file are never opened: a SIGALRM watchdog turns a hang into a failure), never allocate what a
small file declares, and leave the target untouched. Also: old (format 1) images keep loading, configs are
compared after filling in defaults, saves are exclusive, durable, umask-respecting and clean up after
killed writers, and the optional HMAC signature detects tampering the checksum cannot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

import aimc
import aimc.chip as chip
from aimc import ChipImageError, Tile, TileArray, load_chip, save_chip
from aimc.config import InferenceConfig, IOConfig, MappingConfig, TileConfig

CFG = TileConfig(inference=InferenceConfig(), mapping=MappingConfig(max_in=6, max_out=5))
DATA = Path(__file__).parent / "data"


def W(out=8, inp=10, seed=0):
    return (np.random.default_rng(seed).standard_normal((out, inp)) * 0.2).astype(np.float32)


def chip_array(seed=3, cfg=CFG):
    arr = TileArray(8, 10, cfg, seed=seed, name="fc")
    arr.program(W())
    arr.drift(3600.0)
    return arr


@contextmanager
def watchdog(seconds=20):
    """Fail (instead of hanging the suite) if the body blocks, e.g. on a FIFO."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def boom(*_):
        raise TimeoutError("load_chip blocked (a FIFO named inside the file was opened?)")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(arr):
    return [(t.read_weights().copy(), t.time, t.stream.state()) for t in arr.all_tiles()]


def assert_untouched(arr, snap):
    for t, (w, time, st) in zip(arr.all_tiles(), snap):
        np.testing.assert_array_equal(t.read_weights(), w)
        assert t.time == time and t.stream.state() == st


def read_all(path):
    """(root attrs, {group path: (meta, {name: array})}) of a trusted image (test side only)."""
    tree = {}
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                tree["/" + name] = {"meta": obj.attrs["meta"],
                                    "data": {k: v[()] for k, v in obj.items() if isinstance(v, h5py.Dataset)}}
        f.visititems(visit)
    return attrs, tree


def rewrite(src, dst, edit, resign=True):
    """Copy an image, let ``edit(root_meta, tree)`` change it, recompute the checksum (as an attacker can)."""
    attrs, tree = read_all(src)
    root = json.loads(attrs["meta"])
    edit(root, tree)
    if resign:
        root["content_sha256"] = chip._digest(tree, root)
    chip._write_tree(Path(dst), tree, root)
    return dst


def set_meta(path, key, fn):
    def edit(root, tree):
        m = json.loads(tree[path]["meta"])
        fn(m)
        tree[path]["meta"] = json.dumps(m)
    return edit


def set_data(path, name, value):
    def edit(root, tree):
        if value is None:
            del tree[path]["data"][name]
        else:
            tree[path]["data"][name] = value(tree[path]["data"][name]) if callable(value) else value
    return edit


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    return save_chip(chip_array(), d / "good.h5")


# ------------------------------------------------------------------------------- tampered values (checksum redone)

def _nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    return a


def _inf(a):
    a = a.copy()
    a.flat[0] = np.inf
    return a


T = "/a0/t0_0"
TAMPERED = {
    "nan conductances": (set_data(T, "g_prog", _nan), "g_prog: contains NaN"),
    "inf conductances": (set_data(T, "G", _inf), "G: contains NaN or inf"),
    "negative conductances": (set_data(T, "G", lambda a: a - 100), "G: conductances must lie in"),
    "wrong shape": (set_data(T, "G", lambda a: np.zeros((2, 4, 6), np.float32)), "G: declares shape"),
    "wrong dtype": (set_data(T, "G", lambda a: a.astype(np.float64)), "G: has dtype float64"),
    "bool conductances": (set_data(T, "nu", lambda a: a > 0), "nu: has dtype bool"),
    "missing dataset": (set_data(T, "nu", None), "nu: missing dataset"),
    "extra dataset": (lambda r, t: t[T]["data"].__setitem__("evil", np.zeros(3, np.float32)), "evil: unexpected"),
    "zero scale": (set_data(T, "scale", lambda a: np.zeros_like(a)), "scale: must be > 0"),
    "zero compensation": (set_data(T, "comp_alpha", lambda a: np.zeros_like(a)), "comp_alpha: must be > 0"),
    "huge nu": (set_data(T, "nu", lambda a: a + 1e6), "nu: drift exponents beyond"),
    "negative clock": (set_meta(T, "time", lambda m: m.__setitem__("time", -5.0)), "clock"),
    "string clock": (set_meta(T, "time", lambda m: m.__setitem__("time", "1h")), "clock"),
    "absurd clock": (set_meta(T, "time", lambda m: m.__setitem__("time", 1e300)), "clock"),
    "negative stream call": (set_meta(T, "s", lambda m: m["stream"].__setitem__("call", -1)), "stream.call"),
    "huge seed": (set_meta(T, "s", lambda m: m["stream"].__setitem__("seed", 10**30)), "stream.seed"),
    "foreign stream id": (set_meta(T, "s", lambda m: m["stream"].__setitem__("stream_id", "x")), "stream id"),
    "bad compensation": (set_meta(T, "c", lambda m: m.__setitem__("compensation", "bogus")), "compensation"),
    "zero map scale": (set_meta(T, "m", lambda m: m["map_params"].__setitem__("scale", 0.0)), "map_params.scale"),
    "meta not an object": (lambda r, t: t[T].__setitem__("meta", "[1, 2]"), "must be a JSON object"),
    "meta not JSON": (lambda r, t: t[T].__setitem__("meta", "{nope"), "not valid JSON"),
    "meta deeply nested": (lambda r, t: t[T].__setitem__("meta", "[" * 5000 + "]" * 5000), "nested"),
    "meta huge int": (lambda r, t: t[T].__setitem__("meta", '{"x": ' + "9" * 5000 + "}"), "not valid JSON"),
    "missing tile group": (lambda r, t: t.pop("/a0/t1_1"), "missing group"),
    "extra group": (lambda r, t: t.__setitem__("/a7", {"meta": "{}", "data": {}}), "a7: unexpected group"),
    "config with a device path": (set_meta("/a0", "c", lambda m: m["config"]["inference"].__setitem__(
        "device", "../../../etc/passwd")), "config of 'fc' differs"),
    "unknown device family": (set_meta("/a0", "d", lambda m: m["device_model"].__setitem__("family", "evil")),
                              "not a known inference family"),
    "bad device parameter": (set_meta("/a0", "d", lambda m: m["device_model"]["params"].__setitem__("t0", -1.0)),
                             "device_model"),
    "unknown device parameter": (set_meta("/a0", "d", lambda m: m["device_model"]["params"].__setitem__("zz", 1)),
                                 "unknown field"),
    "array seed": (set_meta("/a0", "s", lambda m: m.__setitem__("seed", -3)), "seed"),
    "structure": (lambda r, t: r["structure"][0].__setitem__("shape", [8, 11]), "does not match"),
    "absurd scale": (set_data(T, "scale", lambda a: np.full_like(a, 3e38)), "scale: column scales beyond 1e30"),
    "unknown tile field": (set_meta(T, "x", lambda m: m.__setitem__("evil", 1)), "unexpected field(s) ['evil']"),
    "unknown array field": (set_meta("/a0", "x", lambda m: m.__setitem__("evil", 1)), "unexpected field(s) ['evil']"),
    "unknown root field": (lambda r, t: r.__setitem__("evil", 1), "root meta has unexpected field(s) ['evil']"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_images_with_a_valid_checksum_are_refused_by_name(tmp_path, good, case):
    edit, message = TAMPERED[case]
    bad = rewrite(good, tmp_path / "bad.h5", edit)
    target = chip_array(seed=8)
    snap = snapshot(target)
    with watchdog(), pytest.raises(ChipImageError) as e:
        load_chip(bad, target)
    assert str(bad) in str(e.value) and message in str(e.value), str(e.value)
    assert_untouched(target, snap)


# ------------------------------------------------------------------------------- files that name other files

def _fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return p


def _replace(path, name, make):
    with h5py.File(path, "r+") as f:
        g = f["a0/t0_0"]
        old = g[name][()]
        del g[name]
        make(g, name, old)


def hostile_cases(fifo):
    return {
        "external storage": lambda g, n, a: g.create_dataset(n, shape=a.shape, dtype=a.dtype,
                                                              external=[(str(fifo), 0, a.nbytes)]),
        "soft link": lambda g, n, a: g.__setitem__(n, h5py.SoftLink("/a0/t0_0/g_prog")),
        "external link": lambda g, n, a: g.__setitem__(n, h5py.ExternalLink(str(fifo), "/x")),
        "virtual dataset": lambda g, n, a: g.create_virtual_dataset(
            n, _vlayout(a, fifo)),
        "memory bomb (compressed)": lambda g, n, a: g.create_dataset(
            n, shape=(1_500_000_000,), dtype="f4", chunks=(1 << 18,), compression="gzip"),
        "memory bomb (declared)": lambda g, n, a: g.create_dataset(n, shape=(2, 40000, 50000), dtype="f4"),
        "compound dtype": lambda g, n, a: g.create_dataset(n, shape=a.shape, dtype=[("x", "f4"), ("y", "f4")]),
    }


def _vlayout(a, fifo):
    layout = h5py.VirtualLayout(shape=a.shape, dtype=a.dtype)
    layout[...] = h5py.VirtualSource(str(fifo), "x", shape=a.shape)
    return layout


@pytest.mark.parametrize("case", ["external storage", "soft link", "external link", "virtual dataset",
                                  "memory bomb (compressed)", "memory bomb (declared)", "compound dtype"])
def test_images_naming_other_files_or_declaring_huge_data_are_refused_without_reading(tmp_path, good, case):
    fifo = _fifo(tmp_path)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(Path(good).read_bytes())
    _replace(bad, "G", hostile_cases(fifo)[case])
    assert bad.stat().st_size < 200_000
    target = chip_array(seed=8)
    snap = snapshot(target)
    with watchdog(), pytest.raises(ChipImageError) as e:
        load_chip(bad, target)
    assert str(bad) in str(e.value) and "a0/t0_0/G" in str(e.value), str(e.value)
    assert_untouched(target, snap)


def test_a_fifo_or_folder_given_as_the_image_is_refused(tmp_path):
    fifo = _fifo(tmp_path)
    with watchdog(), pytest.raises(ChipImageError, match="not a regular file"):
        load_chip(fifo, chip_array())
    with pytest.raises(ChipImageError, match="not a regular file"):
        load_chip(tmp_path, chip_array())
    with pytest.raises(FileNotFoundError, match="chip image not found"):
        load_chip(tmp_path / "nope.h5", chip_array())
    with pytest.raises(ChipImageError, match="is a folder"):
        save_chip(chip_array(), tmp_path)


def test_wrong_root_attributes_are_named(tmp_path, good):
    for attr, value, msg in (("format_version", "two", "format_version"), ("meta", np.arange(3), "root attribute"),
                             ("meta", 7, "must be a string"), ("format_version", 99, "newer")):
        bad = tmp_path / f"bad_{attr}.h5"
        bad.write_bytes(Path(good).read_bytes())
        with h5py.File(bad, "r+") as f:
            f.attrs[attr] = value
        with pytest.raises(ChipImageError, match=msg) as e:
            load_chip(bad, chip_array())
        assert str(bad) in str(e.value)


# ------------------------------------------------------------------------------- all or nothing

def test_a_failure_while_restoring_puts_every_tile_back(good, monkeypatch):
    target = chip_array(seed=8)
    snap = snapshot(target)
    calls = []
    real = Tile._set_state

    def flaky(self, meta, arrays):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk went away")
        return real(self, meta, arrays)
    monkeypatch.setattr(Tile, "_set_state", flaky)
    with pytest.raises(ChipImageError, match="nothing was changed.*disk went away"):
        load_chip(good, target)
    assert len(calls) == 3
    assert_untouched(target, snap)
    assert target.seed == 8
    monkeypatch.setattr(Tile, "_set_state", real)
    load_chip(good, target)
    assert target.seed == 3


# ------------------------------------------------------------------------------- compatibility

@pytest.mark.parametrize("name", ["chip_v1_array", "chip_v1_tile"])
def test_images_written_by_older_releases_keep_loading(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location("fixtures", DATA / "make_chip_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    drifting, exact = mod.configs()
    ref = np.load(DATA / f"{name}.npz")
    if name.endswith("array"):
        target = TileArray(7, 9, drifting, seed=0, name="fc")
    else:
        target = Tile(7, 9, exact, seed=0, tile_id="solo")
    load_chip(DATA / f"{name}.h5", target)
    np.testing.assert_array_equal(target.read_weights(), ref["weights"])
    # the product's summation order depends on the BLAS in use (torch's pool once aimc.nn is imported,
    # aimc.threads), so the forward agrees to float32 rounding; weights and conductances agree exactly
    np.testing.assert_allclose(target.forward(ref["x"]), ref["y"], rtol=1e-5, atol=1e-6)
    if "g" in ref:
        np.testing.assert_array_equal(
            np.concatenate([t.conductances().ravel() for t in target.all_tiles()]), ref["g"])
        target.drift(86400.0)                         # and it keeps drifting
        assert target.time == 86400.0 and np.isfinite(target.read_weights()).all()


def test_configs_are_compared_with_defaults_filled_in(tmp_path, good):
    """An image written before a config field existed (the field is absent) loads while the field is at
    its default, and is refused by name when the model sets it otherwise."""
    def drop(root, tree):
        m = json.loads(tree["/a0"]["meta"])
        del m["config"]["forward"]["out_scale"]
        del m["config"]["backward_ideal"]
        tree["/a0"]["meta"] = json.dumps(m)
    old = rewrite(good, tmp_path / "old.h5", drop)
    target = chip_array(seed=8)
    load_chip(old, target)
    assert target.time == 3600.0
    other = TileArray(8, 10, CFG.replace(forward=IOConfig(out_scale=2.0)), name="fc")
    with pytest.raises(ChipImageError, match=r"forward.out_scale: 1.0 vs 2.0"):
        load_chip(old, other)


def test_reload_uses_the_stored_device_parameters_and_opens_no_card(tmp_path, good, monkeypatch):
    import device_models.cards as cards
    kept = chip_array()
    monkeypatch.setattr(cards, "CARD_DIR", tmp_path / "no-cards")   # every card read would now fail
    target = TileArray(8, 10, CFG, name="fc")                       # built before: its config read the card
    monkeypatch.setattr(cards, "read_card", lambda *a, **k: pytest.fail("a card file was read"))
    for t in target.all_tiles():
        t._model = None
    load_chip(good, target)
    kept.drift(86400.0)
    target.drift(86400.0)
    np.testing.assert_array_equal(kept.read_weights(), target.read_weights())


# ------------------------------------------------------------------------------- signatures

def test_hmac_signature_detects_what_the_checksum_cannot(tmp_path):
    key = b"0123456789abcdef-secret"
    p = save_chip(chip_array(), tmp_path / "signed.h5", key=key)
    load_chip(p, chip_array(seed=8), key=key)
    load_chip(p, chip_array(seed=8))                                 # the signature is optional to check
    with pytest.raises(ChipImageError, match="signature does not match"):
        load_chip(p, chip_array(seed=8), key=b"another key of 16+ bytes")
    unsigned = save_chip(chip_array(), tmp_path / "unsigned.h5")
    with pytest.raises(ChipImageError, match="not signed"):
        load_chip(unsigned, chip_array(), key=key)
    # an attacker edits values and recomputes the checksum, keeping the old signature
    attrs, _ = read_all(p)
    forged = rewrite(p, tmp_path / "forged.h5", set_data(T, "G", lambda a: a * 0.5))
    with h5py.File(forged, "r+") as f:
        f.attrs["signature"] = attrs["signature"]
    load_chip(forged, chip_array(seed=8))                            # the checksum alone cannot tell
    with pytest.raises(ChipImageError, match="signature does not match"):
        load_chip(forged, chip_array(seed=8), key=key)
    with pytest.raises(TypeError, match="16 bytes"):
        save_chip(chip_array(), tmp_path / "k.h5", key=b"short")


# ------------------------------------------------------------------------------- saving

def test_exclusive_create_loses_no_image_to_a_concurrent_writer(tmp_path, monkeypatch):
    """The other process creates the file after our existence check: we must fail, and its file stays."""
    p = tmp_path / "c.h5"
    real = chip._write_tree

    def racing(tmp, *rest):
        real(tmp, *rest)
        p.write_bytes(b"the other process's image")
    monkeypatch.setattr(chip, "_write_tree", racing)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_chip(chip_array(), p)
    assert p.read_bytes() == b"the other process's image"
    assert os.listdir(tmp_path) == ["c.h5"]


def test_temp_files_of_killed_saves_are_recognisable_and_removed(tmp_path):
    from aimc._io import TMP_TAG, _host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".c.h5.{_host()}.{dead}.0badf00d{TMP_TAG}"
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f".c.h5.{_host()}.{os.getppid()}.0badf00d{TMP_TAG}"
    alive.write_bytes(b"a save in progress")
    save_chip(chip_array(), tmp_path / "c.h5")
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        p = save_chip(chip_array(), tmp_path / "c.h5")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_chip_error_is_a_value_error_and_public():
    assert issubclass(chip.ChipImageNotFound, ChipImageError) and issubclass(chip.ChipImageNotFound, FileNotFoundError)
    assert issubclass(chip.ChipImageExists, ChipImageError) and issubclass(chip.ChipImageExists, FileExistsError)
    assert issubclass(ChipImageError, ValueError) and aimc.ChipImageError is ChipImageError
