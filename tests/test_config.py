"""Config tree: validation names the field, JSON round trip, presets."""
import json

import pytest

import aimc
from aimc.config import (BoundManagement, ConfigError, IOConfig, MappingConfig, NoiseManagement, TileConfig,
                         WeightNoiseType, as_config, preset)


@pytest.mark.parametrize("name", ["ideal", "default", "standard-hwa"])
def test_json_round_trip(name, tmp_path):
    cfg = preset(name)
    again = TileConfig.from_json(cfg.to_json())
    assert again == cfg
    p = tmp_path / "c.json"
    cfg.save(p)
    assert TileConfig.load(p) == cfg
    assert as_config(str(p)) == cfg


def test_standard_hwa_preset_values():
    f = preset("standard-hwa").forward
    assert (f.inp_bits, f.out_bits, f.out_bound, f.out_noise) == (8, 8, 10.0, 0.04)
    assert f.w_noise == 0.0175 and f.w_noise_type == WeightNoiseType.PCM_READ and f.ir_drop == 1.0
    assert f.noise_management == NoiseManagement.CONSTANT and f.bound_management == BoundManagement.NONE
    assert f.inp_step == pytest.approx(2 / 254)


def test_default_steps():
    f = IOConfig()
    assert f.inp_step == pytest.approx(2 / 126)
    assert f.out_step == pytest.approx(24 / 510)


def test_diff_prints_only_non_defaults():
    cfg = TileConfig(forward=IOConfig(out_noise=0.1))
    assert cfg.diff() == {"forward": {"out_noise": 0.1}}
    assert "out_noise" in str(cfg)


@pytest.mark.parametrize("kw, field", [
    ({"inp_bits": 1}, "inp_bits"), ({"inp_bits": 30}, "inp_bits"), ({"inp_bits": 7.5}, "inp_bits"),
    ({"out_noise": -0.1}, "out_noise"), ({"out_noise": float("nan")}, "out_noise"),
    ({"noise_management": "sometimes"}, "noise_management"), ({"w_noise_type": "pink"}, "w_noise_type"),
    ({"out_bound": -1}, "out_bound"), ({"inp_bound": 2.0}, "inp_bound"), ({"w_noise": 0.1}, "w_noise"),
    ({"is_perfect": "yes"}, "is_perfect"),
])
def test_bad_io_values_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        IOConfig(**kw)


@pytest.mark.parametrize("kw, field", [
    ({"g_max": 0}, "g_max"), ({"g_min": 30.0}, "g_min"), ({"significance": (1.0, 2.0)}, "significance"),
    ({"max_in": -3}, "max_in"), ({"kind": "triple"}, "kind"),
])
def test_bad_mapping_values_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        MappingConfig(**kw)


def test_unknown_fields_and_bad_json():
    with pytest.raises(ConfigError, match="unknown field"):
        TileConfig.from_dict({"forward": {"out_nosie": 0.1}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        TileConfig.from_json("{")
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("fast")
    with pytest.raises(ConfigError, match="TileConfig"):
        as_config(3.0)
    d = json.loads(TileConfig().to_json())
    d["forward"]["out_bits"] = 1
    with pytest.raises(ConfigError, match="out_bits"):
        TileConfig.from_dict(d)


def test_presets_module_exposed():
    assert aimc.presets.standard_hwa() == preset("standard-hwa")


def test_import_aimc_does_not_load_torch():
    import subprocess
    import sys
    code = "import sys, aimc; aimc.Tile(2, 2); assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
