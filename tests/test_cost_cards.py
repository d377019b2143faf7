"""Technology cards (issue 10): shipped cards load, formulas, and bad cards are refused by name."""
import copy
import sys

import pytest

from aimc.cost.cards import CardError, available, load_card, parse_card

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
