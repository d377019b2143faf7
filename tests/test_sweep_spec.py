"""Sweep specs (aimc.sweep.spec): grid expansion, seeds, dotted-path variants, and bad input named by field.

No torch and no dask needed: a spec is validated completely before any task starts.
"""
import pytest

from aimc.config import TileConfig
from aimc.deploy import deploy_config
from aimc.sweep import SpecError, SweepSpec, load_spec, set_path

BASE = {"data": "digits", "models": ["default"], "devices": ["pcm-joshi2020"], "times": ["1s", "1d"], "chips": 2}


def spec(**kw):
    return SweepSpec.from_dict({**BASE, **kw})


def test_grid_order_seeds_and_configs():
    s = spec(devices=["pcm-joshi2020", "reram-cmo-falcone2025"], compensation=["none", "global"], chips=3, seed=7,
             variants={"forward": {"out_bits": [6, 8]}, "mapping.max_in": [32, 512]})
    tasks = s.tasks()
    assert s.n_tasks == len(tasks) == 2 * 2 * 4 * 3
    assert [t.index for t in tasks] == list(range(len(tasks)))
    # seeds derive from the chip index only: every variant, device and compensation sees the same chips
    assert all(t.seed == 7 + t.chip for t in tasks)
    assert len({(t.model, t.device, t.compensation, t.variant, t.chip) for t in tasks}) == len(tasks)
    assert s.variants == ({"forward.out_bits": 6, "mapping.max_in": 32}, {"forward.out_bits": 6, "mapping.max_in": 512},
                          {"forward.out_bits": 8, "mapping.max_in": 32}, {"forward.out_bits": 8, "mapping.max_in": 512})
    cfg = s.config_for("reram-cmo-falcone2025", "none", 2)
    ref = deploy_config("reram-cmo-falcone2025", "none")
    assert cfg.forward.out_bits == 8 and cfg.mapping.max_in == 32
    assert cfg.replace(forward=ref.forward, mapping=ref.mapping.replace(max_in=512)) == ref  # nothing else changed
    assert s.times_s == (1.0, 86400.0) and s.variant_name(1) == "forward.out_bits=6, mapping.max_in=512"
    assert spec().variants == ({},) and spec().variant_name(0) == "base"


def test_set_path_reaches_any_field_and_free_form_dicts():
    cfg = deploy_config("pcm-joshi2020")
    assert set_path(cfg, "backward.inp_bits", 5).backward.inp_bits == 5
    c2 = set_path(cfg, "inference.device_params.prog_noise_scale", 0.5)
    assert c2.inference.device_params == {"prog_noise_scale": 0.5} and c2.inference.device == "pcm-joshi2020"
    assert set_path(TileConfig(), "inference.verify_tol", 0.1).inference.verify_tol == 0.1  # None node: defaults
    assert set_path(cfg, "mapping.significance", [1.0]).mapping.significance == (1.0,)


@pytest.mark.parametrize("bad, field", [
    ({"foo": 1}, "unknown field(s) ['foo']"),
    ({"chips": 0}, "chips = 0 is out of range"),
    ({"seed": -1}, "seed = -1 is out of range"),
    ({"devices": []}, "devices is empty"),
    ({"models": []}, "models is empty"),
    ({"times": []}, "times is empty"),
    ({"compensation": []}, "compensation is empty"),
    ({"variants": {"forward.out_bits": []}}, "variants.forward.out_bits is empty"),
    ({"variants": {"forward.out_bitz": [6]}}, "variants.forward.out_bitz: unknown field 'forward.out_bitz'"),
    ({"variants": {"forwrd.out_bits": [6]}}, "unknown field 'forwrd'"),
    ({"variants": {"forward.out_bits": [6, 1]}}, "variants.forward.out_bits = 1: IOConfig.out_bits = 1 is out of range"),
    ({"variants": {"mapping.g_min": [30.0]}}, "variants.mapping.g_min = 30.0"),
    ({"variants": {"mapping.g_max": [100.0]}}, "variant {'mapping.g_max': 100.0}: MappingConfig conductance range"),
    ({"variants": {"inference.device_params.prog_noise_scale": [-1.0]}}, "prog_noise_scale = -1.0 is out of range"),
    ({"variants": {"inference.device": ["x"]}}, "top-level 'devices' axis"),
    ({"variants": {"forward.out_bits.x": [1]}}, "'forward.out_bits' is a value"),
    ({"variants": {"forward.out_bits": [6, 6]}}, "variants.forward.out_bits lists a value twice"),
    ({"times": ["1d", "1s"]}, "1s is not later than 1d"),
    ({"times": ["1 fortnight"]}, "unknown unit"),
    ({"devices": ["nope"]}, "unknown device card 'nope'"),
    ({"devices": ["pcm-pulsed"]}, "pulsed (training) card"),
    ({"compensation": ["glob"]}, "compensation[0] = 'glob' is not one of"),
    ({"models": ["missing.pt"]}, "models[0] = 'missing.pt': no such checkpoint file"),
    ({"data": "imagenet"}, "data = 'imagenet'"),
    ({"threads": 0}, "threads = 0 is out of range"),
    ({"chip_images": "yes"}, "chip_images = 'yes' must be true or false"),
    ({"config": "nope.json"}, "config = 'nope.json': no such file"),
    ({"config": {"forward": {"out_bits": 1}}}, "config: IOConfig.out_bits = 1"),
])
def test_bad_spec_names_the_field(bad, field):
    with pytest.raises(SpecError) as e:
        spec(**bad)
    assert field in str(e.value)


def test_missing_required_field():
    d = dict(BASE)
    del d["devices"]
    with pytest.raises(SpecError, match="missing field 'devices'"):
        SweepSpec.from_dict(d)


def test_load_spec_toml(tmp_path):
    p = tmp_path / "adc.toml"
    p.write_text('data = "digits"\nmodels = ["default"]\ndevices = "pcm-joshi2020"\ntimes = "1s,1h"\nchips = 2\n'
                 '[variants]\nforward.out_bits = [6, 8]\n"mapping.max_in" = [64]\n')
    s = load_spec(p)
    assert s.name == "adc" and s.devices == ("pcm-joshi2020",) and s.times == ("1s", "1h")
    assert s.variant_axes == {"forward.out_bits": (6, 8), "mapping.max_in": (64,)}
    (tmp_path / "bad.toml").write_text("models = [\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    with pytest.raises(FileNotFoundError, match="sweep spec not found"):
        load_spec(tmp_path / "none.toml")
    (tmp_path / "typo.toml").write_text('models = ["default"]\ndevices = ["pcm-joshi2020"]\ntimes = ["1s"]\n'
                                       'chips = 1\nchip = 3\n')
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['chip'\]"):
        load_spec(tmp_path / "typo.toml")
