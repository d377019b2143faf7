"""Cost report (issue 10): counts x card on closed forms, latency/area/TOPS, errors, and the torch path."""
import json
import math

import numpy as np
import pytest

from aimc import IOConfig, MappingConfig, TileArray, TileConfig, cost
from aimc.config import BoundManagement as BM
from aimc.config import NoiseManagement as NM

PCM = cost.load_card("hermes-pcm-14nm")
RRAM = cost.load_card("neurosim-rram-22nm")


def io8(**kw):
    return IOConfig(**{**dict(inp_bits=8, out_bits=8, out_bound=0.0, out_noise=0.0, noise_management=NM.NONE,
                              bound_management=BM.NONE), **kw})


def array(card, n=256, m=256, **kw):
    cfg = cost.fit_config(TileConfig(forward=io8(**kw)), card)
    ta = TileArray(m, n, cfg, seed=0, name="fc")
    ta.set_weights(np.ones((m, n), np.float32))  # every G+ at 25 uS, G- at 0: 256 x 25 uS per input line
    return ta


def test_pwm_core_closed_form():
    """One full 256 x 256 MVM on the PCM card, all inputs at full scale: every term by hand."""
    ta = array(PCM)
    ta.forward(np.ones((1, 256), np.float32))
    rep = cost.report({"fc": ta}, inputs=1, card=PCM)
    lc = rep.layers[0]
    g = 256 * 25e-6                                  # S per input line
    t_full = 127 * 1e-9                               # 8-bit signed PWM: 127 steps of 1 ns
    assert lc.energy["array"] == pytest.approx(0.2 ** 2 * g * t_full * 256, rel=1e-5)
    assert lc.energy["adc"] == pytest.approx(256 * 147e-15 * 2 ** 8)
    assert lc.energy["drivers"] == pytest.approx(256 * 0.033e-12)
    assert lc.energy["digital"] == 0.0               # no NM/BM, no scales, one tile
    assert lc.latency == pytest.approx(127e-9)       # the CCO ADC (76.8 ns) converts within the window
    assert lc.tops == pytest.approx(2 * 256 * 256 / 127e-9 / 1e12)
    drivers = 256 * 117.3e-12 * (14 / 40) ** 2    # one PWM modulator per row, 40 nm gate areas scaled
    digital = 2 * 3000e-12 * (14 / 45) ** 2        # two FP16 affine units, 45 nm areas scaled
    area = 256 * 256 * 2 * 96 * 14e-9 ** 2 + 256 * 3021e-12 + drivers + digital  # 2 devices of 96 F2 each
    assert lc.area == pytest.approx(area)
    assert lc.area_parts["adcs"] == pytest.approx(256 * 3021e-12)
    assert lc.area_parts["drivers"] == pytest.approx(drivers) and lc.area_parts["digital"] == pytest.approx(digital)
    assert lc.tops_per_mm2 == pytest.approx(lc.tops / (area * 1e6))
    assert lc.tops_per_w == pytest.approx(2 * 256 * 256 / lc.energy_total / 1e12)
    assert lc.utilisation == 1.0


def test_pwm_energy_scales_with_input_duration():
    ta = array(PCM)
    ta.forward(np.full((1, 256), 40 / 127, np.float32))   # code 40 of 127: 40 ns pulses
    a = cost.report({"fc": ta}, 1, PCM).layers[0].energy["array"]
    assert a == pytest.approx(0.04 * 256 * 25e-6 * 40e-9 * 256, rel=1e-5)


def test_bit_serial_card_counts_cycles():
    """NeuroSim-style card: K = 7 input bits, each a 10 ns read plus 8 muxed 5-bit SAR conversions."""
    ta = array(RRAM, 128, 128, out_bits=5)
    x = np.zeros((1, 128), np.float32)
    x[0, :3] = [1.0, 63 / 127, 0.0]                  # codes 127 (7 bits set), 63 (6 bits), 0
    ta.forward(x)
    with pytest.raises(ValueError, match="aimc.cost.prepare"):   # bit planes were not counted
        cost.report({"fc": ta}, 1, RRAM)
    cost.prepare({"fc": ta}, RRAM)
    ta.forward(x)
    lc = cost.report({"fc": ta}, 1, RRAM).layers[0]
    t_adc = (5 + 1) * 1e-9 * math.ceil(128 / 16)
    assert lc.latency == pytest.approx(7 * (10e-9 + t_adc))
    assert lc.energy["adc"] == pytest.approx(128 * 7 * RRAM.adc_energy(5))
    assert lc.adc_conversions == 128 * 7 and lc.counts.adc == 128
    assert lc.energy["array"] == pytest.approx(0.55 ** 2 * 10e-9 * 13 * 128 * 25e-6, rel=1e-5)
    assert lc.energy["drivers"] == pytest.approx(13 * 0.0027e-12)
    assert lc.energy["digital"] == pytest.approx(128 * 6 * 0.021e-12)  # shift-adds of 7 bit planes


def test_split_layer_partial_sums_and_utilisation(rng):
    cfg = cost.fit_config(TileConfig(forward=io8()), PCM)
    ta = TileArray(100, 300, cfg, seed=0, name="big")           # 300 inputs -> 2 tiles of 150
    ta.set_weights(rng.standard_normal((100, 300)).astype(np.float32))
    ta.forward(rng.uniform(-1, 1, (4, 300)).astype(np.float32))
    lc = cost.report({"big": ta}, inputs=4, card=PCM).layers[0]
    assert lc.tiles == 2 and lc.counts.dig_partial == 4 * 100
    assert lc.utilisation == pytest.approx(300 * 100 / (2 * 256 * 256))
    assert lc.macs == 4 * 300 * 100


def test_drifted_chip_costs_less_array_energy(rng):
    from aimc.config import InferenceConfig
    cfg = cost.fit_config(TileConfig(forward=io8(), inference=InferenceConfig()), PCM)
    ta = TileArray(64, 64, cfg, seed=0, name="fc")
    ta.program(rng.uniform(-1, 1, (64, 64)).astype(np.float32))
    x = rng.uniform(-1, 1, (20, 64)).astype(np.float32)
    e = []
    for t in (1.0, 3.15e8):
        ta.drift(t)
        cost.reset({"fc": ta})
        ta.forward(x)
        rep = cost.report({"fc": ta}, 20, PCM)
        assert rep.time == t
        e.append(rep.layers[0].energy["array"])
    assert e[1] < 0.9 * e[0]


def test_errors_name_the_problem(rng):
    ta = TileArray(8, 300, TileConfig(forward=io8(), mapping=MappingConfig(max_in=512)), name="fc")
    ta.set_weights(rng.standard_normal((8, 300)).astype(np.float32))
    with pytest.raises(ValueError, match="run a forward first"):
        cost.report({"fc": ta}, 1, PCM)
    ta.forward(np.ones((1, 300), np.float32))
    with pytest.raises(ValueError, match="larger than the 256 x 256 core.*fit_config"):
        cost.report({"fc": ta}, 1, PCM)
    with pytest.raises(ValueError, match="inputs must be a positive integer"):
        cost.report({"fc": ta}, 0, PCM)
    with pytest.raises(TypeError, match="converted model"):
        cost.report(42, 1, PCM)
    ideal = TileArray(8, 8, cost.fit_config(TileConfig(forward=IOConfig(is_perfect=True)), RRAM), name="p")
    ideal.set_weights(np.eye(8, dtype=np.float32))
    ideal.forward(np.ones((1, 8), np.float32))
    with pytest.raises(ValueError, match="bit-serial card needs the DAC codes"):
        cost.report({"p": ideal}, 1, RRAM)


def test_ideal_periphery_costed_at_card_bits_with_note():
    ta = TileArray(8, 8, cost.fit_config(TileConfig(forward=IOConfig(is_perfect=True)), PCM), name="p")
    ta.set_weights(np.eye(8, dtype=np.float32))
    ta.forward(np.ones((2, 8), np.float32))
    lc = cost.report({"p": ta}, 2, PCM).layers[0]
    assert lc.energy["adc"] == pytest.approx(2 * 8 * PCM.adc_energy(8))
    assert any("no ADC" in n for n in lc.notes)


def test_table_and_json():
    ta = array(PCM, 16, 16)
    ta.forward(np.ones((3, 16), np.float32))
    rep = cost.report({"fc": ta}, 3, PCM)
    d = json.loads(rep.to_json())
    assert d["card"] == "hermes-pcm-14nm" and d["layers"][0]["name"] == "fc"
    assert d["model"]["energy_pJ_per_inference"] == pytest.approx(rep.energy_per_inference * 1e12)
    assert d["layers"][0]["counts_per_inference"]["mvms"] == 1.0
    t = rep.table()
    assert "fc" in t and "TOPS/W" in t and "assumption:" in t


@pytest.mark.torch
def test_measure_counts_digital_layers():
    torch = pytest.importorskip("torch")
    from torch import nn

    import aimc
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    analog = aimc.convert_to_analog(model, cost.fit_config(TileConfig(forward=io8()), PCM), exclude=["2"])
    rep = cost.measure(analog, torch.rand(5, 20), PCM)
    names = {lc.name: lc for lc in rep.layers}
    assert names["0"].kind == "analog" and names["0"].macs == 5 * 20 * 16
    dig = names["2"]
    assert dig.kind == "digital" and dig.macs == 5 * 16 * 4
    assert dig.energy_total == pytest.approx(5 * 16 * 4 * 1.5e-12)
    assert any("costed as digital" in n for n in dig.notes)
    assert rep.energy_per_inference == pytest.approx(sum(lc.energy_total for lc in rep.layers) / 5)
    assert rep.latency == names["0"].latency  # digital latency not modelled (stated)


@pytest.mark.torch
def test_cli_cost_json_and_bad_card(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    from aimc.cli import main
    assert main(["cost", "--samples", "20", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["card"] == "hermes-pcm-14nm" and d["inputs"] == 20
    assert [lc["name"] for lc in d["layers"]] == ["fc1", "fc2", "fc3"]
    assert d["model"]["energy_pJ_per_inference"] > 0 and d["model"]["latency_ns"] == pytest.approx(3 * 127)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ncitation = "c"\nprovenance = "p"\n')
    assert main(["cost", "--tech", str(bad)]) == 2
    assert "missing field" in capsys.readouterr().err


@pytest.mark.torch
def test_deploy_reports_energy_per_time():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from aimc import datasets, zoo
    from aimc.deploy import evaluate_over_time
    torch.manual_seed(0)
    model = zoo.mlp(64, (32,), 10)
    res = evaluate_over_time(model, datasets.load("digits"), times=("1s", "10y"), repeats=2, tech="hermes-pcm-14nm")
    e = res.cost["energy_pJ"]
    assert len(e) == 2 and len(e[0]) == 2 and all(v > 0 for row in e for v in row)
    assert all(e[1][r] < e[0][r] for r in range(2))  # PCM drift lowers G and so the array energy
    d = res.to_dict()
    assert d["cost"]["card"] == "hermes-pcm-14nm" and len(d["cost"]["energy_pJ_mean"]) == 2
    assert "energy / inference (nJ)" in res.table()
    assert res.config["mapping"]["max_in"] == 256  # tiles take the card's core size


def test_amplitude_array_energy_reference_value():
    """circuits_and_cost.md check 10: 256 x 256 cells at 25 uS, 0.2 V for 10 ns -> 0.655 nJ."""
    import copy
    import sys
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(PCM.path, "rb") as fh:
        raw = copy.deepcopy(tomllib.load(fh))
    raw["array"]["encoding"] = "amplitude"
    raw["array"]["t_read"] = {"value": 10, "unit": "ns", "source": "test"}
    card = cost.cards.parse_card(raw, "amplitude-test")
    ta = array(card)                                  # W = 1: every G+ at 25 uS, every G- at 0
    ta.forward(np.ones((1, 256), np.float32))
    lc = cost.report({"fc": ta}, 1, card).layers[0]
    assert lc.energy["array"] == pytest.approx(0.2 ** 2 * 25e-6 * 10e-9 * 256 * 256, rel=1e-6)
    assert lc.energy["array"] * 1e9 == pytest.approx(0.655, abs=5e-4)
    assert lc.latency == pytest.approx(max(10e-9, 0.3e-9 * 256))  # CCO ADC time exceeds the 10 ns read


def test_static_power_and_data_movement_rows():
    """One 256 x 256 MVM, 8-bit in and out: 512 bytes through the buffer; every column leaks for 127 ns."""
    ta = array(PCM)
    ta.forward(np.ones((1, 256), np.float32))
    rep = cost.report({"fc": ta}, inputs=1, card=PCM)
    lc = rep.layers[0]
    assert lc.energy["movement"] == pytest.approx((256 * 8 + 256 * 8) / 8 * 1.07e-12)
    assert lc.energy["static"] == pytest.approx((256 * 25e-9 + 5e-9) * 127e-9)
    b = rep.breakdown()
    assert b["movement"] == pytest.approx(lc.energy["movement"] * 1e12) and "static" in b
    t = rep.table()
    assert "data movement:" in t and "ISAAC" in t and "static:" in t and "NeuRRAM" in t


def test_static_energy_spans_the_model_latency(rng):
    """Two layers in sequence: each layer's cores leak during the whole inference (both layers' latency)."""
    arrays = {k: array(PCM, 16, 16) for k in ("a", "b")}
    for ta in arrays.values():
        ta.forward(np.ones((2, 16), np.float32))
    rep = cost.report(arrays, inputs=2, card=PCM)
    p = 256 * 25e-9 + 5e-9
    for lc in rep.layers:
        assert lc.energy["static"] == pytest.approx(p * 2 * 127e-9 * 2)  # 1 core x 254 ns x 2 inferences


def test_sliced_bit_serial_tile_costs_every_slice_and_cycle():
    """2 weight slices x 2 input cycles: 4 reads per MVM, each with m ADC conversions and its own pass time."""
    mp = MappingConfig(kind="sliced", weight_bits=5, bits_per_cell=2, input_bits=3, input_bits_per_cycle=1)
    cfg = cost.fit_config(TileConfig(forward=io8(inp_bits=2), mapping=mp), PCM)
    ta = TileArray(32, 64, cfg, seed=0, name="fc")
    ta.set_weights(np.ones((32, 64), np.float32))
    ta.forward(np.ones((3, 64), np.float32))
    lc = cost.report({"fc": ta}, inputs=3, card=PCM).layers[0]
    assert lc.counts.mvms == 3 and lc.counts.passes == 12 and lc.counts.rereads == 0
    assert lc.adc_conversions == 3 * 4 * 32 and lc.counts.dac == 3 * 4 * 64
    assert lc.energy["adc"] == pytest.approx(3 * 4 * 32 * PCM.adc_energy(8))
    # 2-bit DAC: a 1 ns PWM window; the 8-bit CCO conversion (76.8 ns) dominates each of the 4 reads
    assert lc.latency == pytest.approx(4 * 0.3e-9 * 256)
    assert lc.macs == 3 * 64 * 32                     # ops are those of the matrix, not of its reads
    assert lc.counts.dig_shift == 3 * 4 * 32          # one shift-and-add per output per slice and cycle
    assert lc.energy["movement"] == pytest.approx(3 * (64 * 3 + 32 * 8) / 8 * 1.07e-12)  # 3-bit inputs


def test_dac_wider_than_a_cycle_is_noted():
    mp = MappingConfig(input_bits=4, input_bits_per_cycle=1)
    ta = TileArray(8, 8, cost.fit_config(TileConfig(forward=io8(), mapping=mp), PCM), name="fc")
    ta.set_weights(np.eye(8, dtype=np.float32))
    ta.forward(np.ones((1, 8), np.float32))
    lc = cost.report({"fc": ta}, 1, PCM).layers[0]
    assert lc.counts.passes == 3 and lc.latency == pytest.approx(3 * 127e-9)
    assert any("forward.inp_bits = 2" in n for n in lc.notes)


def test_columns_per_adc_from_the_config():
    """4 columns per ADC in the config (SAR, shared errors): 64 ADCs per 256-column core, conversions
    serialised 4 deep; at the config's default 1 the card's sharing holds."""
    cfg = cost.fit_config(TileConfig(forward=io8(adc="sar", out_bound=12.0, columns_per_adc=4)), PCM)
    ta = TileArray(256, 256, cfg, seed=0, name="fc")
    ta.set_weights(np.ones((256, 256), np.float32))
    ta.forward(np.ones((1, 256), np.float32))
    lc = cost.report({"fc": ta}, 1, PCM).layers[0]
    assert lc.latency == pytest.approx(4 * 0.3e-9 * 256)        # 4 conversions of 76.8 ns > the 127 ns window
    assert lc.area_parts["adcs"] == pytest.approx(64 * 3021e-12)
    assert any("4 columns per ADC from the config columns_per_adc" in n for n in lc.notes)
    assert cost.columns_per_adc(PCM, io8()) == (1, "card")
    assert cost.columns_per_adc(RRAM, io8()) == (8, "card")
    assert cost.columns_per_adc(RRAM, io8(columns_per_adc=2)) == (2, "config columns_per_adc")

