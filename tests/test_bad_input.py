"""Generated bad input at the core's entry points (no torch): hypothesis strategies plus broken files made
here. Each input must give a clear error of the documented type, naming the problem, or a valid result:
never another exception, a hang, or a silently wrong value.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aimc
from aimc import ChipImageError, Tile, TileArray, load_chip, save_chip
from aimc.config import ConfigError, InferenceConfig, IOConfig, MappingConfig, TileConfig
from aimc.datasets import IDXFormatError, read_idx, write_idx
from aimc.times import MAX_TIME_S, parse_time

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                             max_size=3), max_leaves=8)
FIELDS = {"forward": [f for f in IOConfig.__dataclass_fields__], "mapping": list(MappingConfig.__dataclass_fields__)}


# ------------------------------------------------------------------------------------------- configs

@FAST
@given(section=st.sampled_from(sorted(FIELDS)), data=st.data(), value=json_values)
def test_any_json_value_in_any_config_field_is_accepted_or_a_config_error_naming_it(section, data, value):
    field = data.draw(st.sampled_from(FIELDS[section]))
    try:
        text = json.dumps({section: {field: value}})
    except ValueError:  # an integer beyond Python's str() digit limit: not JSON we could have been given
        return
    try:
        cfg = TileConfig.from_json(text)
    except ConfigError as e:
        assert field in str(e) or section in str(e), str(e)
    else:
        assert TileConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("text, message", [
    ('{"mapping": {"max_in": 1' + "0" * 400 + '}}', "MappingConfig.max_in"),
    ('{"forward": {"out_bits": 1e400}}', "IOConfig.out_bits"),
    ('{"forward": {"out_noise": ' + "9" * 5000 + '}}', "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "nested"),
    ('{"inference": {"device_params": ' + '{"a": ' * 40 + "1" + "}" * 41 + "}", "nested more than"),
    ('{"forward": {"inp_bits": 9007199254740993}}', "IOConfig.inp_bits"),
])
def test_pathological_json_gives_a_config_error_with_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        TileConfig.from_json(text)


def test_config_files_must_be_regular_files(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs")
    fifo = tmp_path / "cfg.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        TileConfig.load(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        TileConfig.load(tmp_path)


# ------------------------------------------------------------------------------------------- device cards

@pytest.mark.parametrize("name", ["../../etc/passwd", "../cards/pcm-joshi2020", "x/../pcm-joshi2020",
                                  ".hidden", "pcm-joshi2020\0", "/etc/passwd", "C:\\evil"])
def test_a_card_name_is_a_name(name):
    with pytest.raises(ConfigError, match="device"):
        InferenceConfig(device=name)


def test_user_card_paths_are_read_only_when_regular_files(tmp_path):
    import device_models
    from device_models.cards import CARD_DIR, names_only
    mine = tmp_path / "mine.toml"
    mine.write_text((CARD_DIR / "pcm-joshi2020.toml").read_text().replace('name = "pcm-joshi2020"', 'name = "mine"'))
    assert InferenceConfig(device=str(mine)).device_model().g_max == 25.0       # where the user writes it
    with names_only("image.h5"), pytest.raises(ValueError, match="in image.h5 is a path"):
        device_models.read_card(str(mine))                                    # never inside a saved file
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.toml")
        with pytest.raises(ConfigError, match="not a regular file"):
            InferenceConfig(device=str(tmp_path / "fifo.toml"))
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        InferenceConfig(device=str(tmp_path / "dir.toml"))
    big = tmp_path / "deep.toml"
    big.write_text(mine.read_text() + "\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError):
        InferenceConfig(device=str(big))
    huge = tmp_path / "huge.toml"
    huge.write_text(mine.read_text().replace("t0 = 20.0", "t0 = 1" + "0" * 400))
    with pytest.raises(ConfigError, match="out of range"):
        InferenceConfig(device=str(huge))


# ------------------------------------------------------------------------------------------- times

@FAST
@given(t=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**400, 10**400),
                   st.text(max_size=20), st.from_regex(r"\A[0-9.eE+-]{1,8}(s|min|h|d|w|y|x)?\Z")))
def test_any_time_is_seconds_in_range_or_a_clear_error(t):
    try:
        v = parse_time(t)
    except (ValueError, TypeError) as e:
        assert "time" in str(e) or "t " in str(e) or "t =" in str(e) or "t must" in str(e), str(e)
    else:
        assert isinstance(v, float) and 0.0 <= v <= MAX_TIME_S and math.isfinite(v)


def test_one_time_parser_everywhere():
    tile = Tile(3, 4, TileConfig(inference=InferenceConfig()), seed=1)
    tile.program(np.full((3, 4), 0.1, np.float32))
    tile.drift("10")
    assert tile.time == 10.0
    tile.drift("1h")
    assert tile.time == 3600.0
    for bad, msg in (("1e300y", "1000 years"), (1e308, "1000 years"), ("1 fortnight", "bad time"),
                     (float("nan"), "NaN"), ("-1h", "bad time")):
        with pytest.raises(ValueError, match=msg):
            tile.drift(bad)
    assert tile.time == 3600.0 and np.isfinite(tile.conductances()).all()


# ------------------------------------------------------------------------------------------- API misuse

def test_forward_before_program_reads_an_erased_array_as_documented():
    t = Tile(3, 4, aimc.presets.ideal())
    assert not t.programmed
    np.testing.assert_array_equal(t.forward(np.ones(4, np.float32)), np.zeros(3, np.float32))
    assert "erased array" in Tile.__doc__


def test_threads_are_bounded():
    from aimc.bench import check_threads
    for bad in (0, -1, 100000, 2.5, True, "2"):
        with pytest.raises(ValueError, match="--threads must be an integer in"):
            check_threads(bad)
    assert check_threads(2) == 2


@pytest.mark.parametrize("argv, name", [(["deploy", "--device", ""], "--device"), (["deploy", "--config", ""], "--config"),
                                        (["cost", "--model", ""], "--model"), (["sweep", ""], "--spec")])
def test_an_empty_name_or_path_on_the_command_line_is_refused_not_defaulted(argv, name, capsys):
    from aimc.cli import main
    assert main(argv) == 2   # refused before anything runs (an empty --device used to deploy the default card)
    assert f"empty value for {name}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- IDX files

@FAST
@given(blob=st.binary(max_size=64))
def test_random_bytes_as_idx_are_an_idx_error_or_an_array(tmp_path, blob):
    p = tmp_path / "x.idx"
    p.write_bytes(blob)
    try:
        a = read_idx(p)
    except IDXFormatError as e:
        assert str(p) in str(e)
    else:
        assert isinstance(a, np.ndarray)


def test_idx_headers_declaring_huge_data_and_gzip_bombs_are_refused(tmp_path):
    p = tmp_path / "huge.idx"
    p.write_bytes(bytes([0, 0, 8, 4]) + np.asarray([2**32 - 1] * 4, ">u4").tobytes())
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(p)
    import aimc.datasets as ds
    old = ds.MAX_IDX_BYTES
    ds.MAX_IDX_BYTES = 1000
    try:
        write_idx(tmp_path / "bomb.idx.gz", np.zeros(5000, np.uint8))
        with pytest.raises(IDXFormatError, match="decompresses to more than"):
            read_idx(tmp_path / "bomb.idx.gz")
    finally:
        ds.MAX_IDX_BYTES = old


def test_idx_labels_out_of_range_are_refused(tmp_path):
    from aimc import datasets
    rng = np.random.default_rng(0)
    labels = np.arange(40, dtype=np.uint8) % 10
    labels[7] = 255
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 4, 4), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels[:n] if split == "train" else labels[20:40] % 10)
    with pytest.raises(IDXFormatError, match=r"largest label is 255 but classes 10..254 never occur"):
        datasets.load("mnist-idx", path=tmp_path)


# ------------------------------------------------------------------------------------------- chip images

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    arr = TileArray(6, 7, TileConfig(inference=InferenceConfig(), mapping=MappingConfig(max_in=4)), seed=2, name="a")
    arr.program(np.random.default_rng(1).standard_normal((6, 7)).astype(np.float32) * 0.2)
    return arr, save_chip(arr, tmp_path_factory.mktemp("img") / "a.h5")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, 10**9), n=st.integers(1, 64), mask=st.integers(1, 255))
def test_damaged_chip_images_are_refused_or_load_intact(tmp_path, image, at, n, mask):
    arr, path = image
    data = bytearray(path.read_bytes())
    at %= len(data)
    for k in range(at, min(at + n, len(data))):
        data[k] ^= mask
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(data))
    target = TileArray(6, 7, arr.config, seed=9, name="a")
    before = target.read_weights()
    try:
        load_chip(bad, target)
    except ChipImageError as e:
        assert str(bad) in str(e)
        np.testing.assert_array_equal(target.read_weights(), before)
    else:  # only unused bytes were hit: the chip must be the saved one
        np.testing.assert_array_equal(target.read_weights(), arr.read_weights())


@FAST
@given(blob=st.binary(max_size=2048))
def test_random_bytes_as_a_chip_image_are_a_chip_image_error(tmp_path, blob):
    p = tmp_path / "junk.h5"
    p.write_bytes(blob)
    with pytest.raises(ChipImageError):
        load_chip(p, Tile(2, 2))


@pytest.mark.parametrize("cls", [aimc.Tile, aimc.TileArray])
@pytest.mark.parametrize("shape", [(10**12, 4), (1 << 16, (1 << 15) + 1), (2**62, 2**62)])
def test_huge_tile_shapes_are_refused_before_allocating(cls, shape):
    """A request of terabytes is a ValueError naming the shape, not a MemoryError from numpy."""
    with pytest.raises(ValueError, match="largest supported tile matrix"):
        cls(*shape)
