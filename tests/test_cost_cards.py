"""Technology cards (issue 10): shipped cards load, formulas, and bad cards are refused by name."""
import copy
import math
import sys

import pytest

from aimc.cost.cards import CardError, available, load_card, parse_card, scale_area
from aimc.cost.report import core_area_parts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def raw(name="hermes-pcm-14nm"):
    with open(load_card(name).path, "rb") as f:
        return tomllib.load(f)


def test_shipped_cards_load_with_sources():
    assert {"hermes-pcm-14nm", "neurosim-rram-22nm"} <= set(available())
    for name in available():
        card = load_card(name)
        assert card.rows > 0 and card.cols > 0
        assert all(s.strip() for s in card.sources.values())


def test_adc_models_closed_forms():
    h = load_card("hermes-pcm-14nm")
    assert h.adc_energy(8) == pytest.approx(147e-15 * 256)        # Walden: FOM 2^bits
    assert h.adc_time(8) == pytest.approx(0.3e-9 * 256)             # 300 ps / LSB
    n = load_card("neurosim-rram-22nm")
    # NeuroSim 22 nm SAR: (0.538 * 8 + 4.3753) uW x 9 ns = 78.1 fJ (circuits_and_cost.md C.4)
    assert n.adc_energy(8) == pytest.approx((0.538 * 8 + 4.3753) * 1e-6 * 9e-9)
    assert n.adc_energy(5) * 1e15 == pytest.approx(7.0653 * 6, rel=1e-4)  # 7.07 uW x 6 ns = 42 fJ
    assert n["array.cell_area"] == pytest.approx(48 * (22e-9) ** 2)  # F2 in units of the node


def test_core_area_parts_closed_form():
    """A card with known unit areas: cells + ADCs + rows x driver + units x digital unit, with areas published at
    other nodes scaled by (node / at_node)^2; a card without digital.units has one unit."""
    r = copy.deepcopy(raw())
    r["tech"]["node"].update(value=20, unit="nm")
    r["core"]["rows"].update(value=100)
    r["core"]["cols"].update(value=64)
    r["array"]["cell_area"].update(value=50, unit="F2")
    r["adc"]["area"] = {"value": 500, "unit": "um2", "source": "test"}
    r["adc"]["columns_per_adc"].update(value=4)
    r["dac"]["area"] = {"value": 40, "unit": "um2", "at_node": 40, "source": "test"}
    r["digital"]["area"] = {"value": 900, "unit": "um2", "at_node": 60, "source": "test"}
    r["digital"]["units"] = {"value": 3, "unit": "1", "source": "test"}
    parts = core_area_parts(parse_card(r), devices_per_weight=2)
    assert parts["cells"] == pytest.approx(100 * 64 * 2 * 50 * (20e-9) ** 2)
    assert parts["adcs"] == pytest.approx(16 * 500e-12)
    assert parts["drivers"] == pytest.approx(100 * 40e-12 / 4)         # (20 / 40)^2 = 1/4
    assert parts["digital"] == pytest.approx(3 * 900e-12 / 9)          # (20 / 60)^2 = 1/9
    del r["digital"]["units"]
    assert core_area_parts(parse_card(r), 2)["digital"] == pytest.approx(900e-12 / 9)
    assert scale_area(1.0, 45e-9, 14e-9) == pytest.approx((14 / 45) ** 2)


def test_shipped_adc_areas_follow_the_survey_regression():
    """Both cards' ADC areas are the hwcomponents-adc survey regression (adc_data/model.yaml of 1.0.21) evaluated
    at the card's own node, conversion rate and conversion energy, as their sources state."""
    def regression_um2(node_nm, f_s, e_pj):
        return math.exp(1.3461916 + 0.99327947 * math.log(node_nm) + 0.18071538 * math.log(f_s)
                        + 0.29912426 * math.log(e_pj))
    for name in ("hermes-pcm-14nm", "neurosim-rram-22nm"):
        c = load_card(name)
        bits = int(raw(name)["adc"]["bits"]["value"])
        want = regression_um2(c["tech.node"] * 1e9, 1 / c.adc_time(bits), c.adc_energy(bits) * 1e12)
        assert c["adc.area"] * 1e12 == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["adc"].pop("fom"), "missing field adc.fom"),
    (lambda r: r["array"].pop("v_read"), "missing field array.v_read"),
    (lambda r: r.pop("citation"), "missing field 'citation'"),
    (lambda r: r["array"]["v_read"].update(unit="pJ"), "array.v_read has unit 'pJ'"),
    (lambda r: r["adc"]["t_lsb"].update(unit="V"), "adc.t_lsb has unit 'V'"),
    (lambda r: r["array"]["v_read"].update(value=-0.2), "array.v_read = -0.2 V is not physical"),
    (lambda r: r["array"]["v_read"].update(value=50.0), "array.v_read = 50.0 V is not physical"),
    (lambda r: r["core"]["rows"].update(value=12.5), "core.rows = 12.5 must be a whole number"),
    (lambda r: r["adc"]["fom"].update(source=""), "adc.fom has no source"),
    (lambda r: r["array"].update(encoding="fm"), "'fm' is not one of"),
    (lambda r: r["array"].update(v_read=0.2), "array.v_read must be a table"),
    (lambda r: r["static"].pop("column_power"), "missing field static.column_power"),
    (lambda r: r.pop("movement"), "missing field movement.energy_per_byte"),
    (lambda r: r["movement"]["energy_per_byte"].update(unit="pJ"), "movement.energy_per_byte has unit 'pJ'"),
    (lambda r: r["static"]["core_power"].update(value=-1.0), "static.core_power = -1.0 nW is not physical"),
    (lambda r: r["adc"].update(gain={"value": 1, "unit": "1", "source": "x"}), "unknown field(s) ['adc.gain']"),
    (lambda r: r["adc"].update(overlaps_input="yes"), "adc.overlaps_input must be true or false"),
    (lambda r: r["dac"]["pulse_energy"].update(at_node=45), "dac.pulse_energy has at_node"),
    (lambda r: r["array"]["cell_area"].update(at_node=45), "array.cell_area has at_node"),
    (lambda r: r["dac"]["area"].update(at_node=0), "dac.area has at_node = 0"),
    (lambda r: r["digital"]["area"].update(at_node="45nm"), "digital.area has at_node = '45nm'"),
    (lambda r: r["digital"].update(units={"value": 1.5, "unit": "1", "source": "x"}),
     "digital.units = 1.5 must be a whole number"),
])
def test_bad_cards_name_the_problem(edit, message):
    r = copy.deepcopy(raw())
    edit(r)
    with pytest.raises(CardError) as e:
        parse_card(r, "test.toml")
    assert message in str(e.value)


def test_choice_needs_its_quantity():
    r = copy.deepcopy(raw())
    r["array"]["encoding"] = "amplitude"  # needs t_read, which the PWM card does not have
    with pytest.raises(CardError, match="missing field array.t_read"):
        parse_card(r)


def test_unknown_card_and_missing_file(tmp_path):
    with pytest.raises(CardError, match="unknown technology card 'nope'"):
        load_card("nope")
    with pytest.raises(FileNotFoundError):
        load_card(tmp_path / "x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(CardError, match="not valid TOML"):
        load_card(bad)
