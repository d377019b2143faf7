"""The array as a circuit (aimc/crossbar.py): config node, exact vs fast solver, tile integration."""
import json
import math

import numpy as np
import pytest

from aimc.config import ArrayConfig, ConfigError, IOConfig, TileConfig, WireModel


# ----------------------------------------------------------------------------------------------- config
def test_array_config_round_trip_and_defaults():
    cfg = TileConfig(array=ArrayConfig(model="circuit", wire_row_ohm=0.5, wire_col_ohm=2.5, driver_ohm=100,
                                       sense_ohm=50, cell="1t1r", access_ohm=2e3, v_read=0.3,
                                       pair_layout="interleaved", solver="exact"))
    back = TileConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.array.model == WireModel.CIRCUIT and back.array.access_ohm == 2e3
    assert cfg.diff()["array"]["model"] == "circuit"
    # an old config (no 'array' node, polynomial ir_drop in the periphery) loads and keeps its model
    old = json.loads(TileConfig(forward=IOConfig(ir_drop=1.0)).to_json())
    del old["array"]
    cfg_old = TileConfig.from_dict(old)
    assert cfg_old.array.model == WireModel.POLYNOMIAL and cfg_old.forward.ir_drop == 1.0


@pytest.mark.parametrize("kw, field", [
    (dict(wire_row_ohm=-1.0), "wire_row_ohm"),
    (dict(wire_col_ohm=float("nan")), "wire_col_ohm"),
    (dict(driver_ohm=float("inf")), "driver_ohm"),
    (dict(cell="1t1r"), "access_ohm"),
    (dict(access_ohm=10.0), "access_ohm"),
    (dict(model="circuit", wire_col_ohm=0.0, sense_ohm=10.0), "wire_col_ohm"),
    (dict(sinh_k=0.0), "sinh_k"),
    (dict(v_read=-0.2), "v_read"),
    (dict(cell="diode"), "cell"),
    (dict(model="spice"), "model"),
    (dict(tol=0.0), "tol"),
])
def test_array_config_rejects_bad_values_by_name(kw, field):
    with pytest.raises(ConfigError, match=field):
        ArrayConfig(**kw)


def test_array_config_conflicts_name_the_fields():
    with pytest.raises(ConfigError, match="forward.ir_drop"):
        TileConfig(array=ArrayConfig(model="circuit"), forward=IOConfig(ir_drop=1.0))
    with pytest.raises(ConfigError, match="backward.ir_drop"):
        TileConfig(array=ArrayConfig(model="none"), backward=IOConfig(ir_drop=0.5))
    with pytest.raises(ConfigError, match="max_in"):
        from aimc.config import MappingConfig
        TileConfig(array=ArrayConfig(model="circuit", geometry="physical"), mapping=MappingConfig(max_in=0))
    with pytest.raises(ConfigError, match="unknown field"):
        TileConfig.from_dict({"array": {"wire_ohm": 1.0}})
