"""Write tests/data/chip_sar_adc_group.{h5,npz}: a tile with SAR ADCs (adc_group 8) and a ramp of inputs
saved by aimc before ``columns_per_adc`` replaced ``adc_group`` (commit 1b3c33a). The npz holds the drawn
converter arrays and the config JSON; tests/test_converters.py loads the image with today's aimc.

Run once with that aimc (``PYTHONPATH=<checkout of 1b3c33a> python tests/data/make_chip_sar_adc_group.py``);
never regenerate: the point is that an image written by the older aimc still loads.
"""
from pathlib import Path

import numpy as np

import aimc
from aimc.config import IOConfig, TileConfig

HERE = Path(__file__).parent


def main():
    io = IOConfig(adc="sar", out_bits=6, out_bound=8.0, adc_cap_mismatch=0.05, adc_comparator_offset=0.01,
                  adc_group=8, adc_gain_std=0.01)
    cfg = TileConfig(forward=io, backward=IOConfig(is_perfect=True))
    W = (np.random.default_rng(0).standard_normal((20, 9)) * 0.3).astype(np.float32)
    tile = aimc.Tile(20, 9, cfg, seed=3, tile_id="sar")
    tile.set_weights(W)
    path = HERE / "chip_sar_adc_group.h5"
    if path.exists():
        raise SystemExit(f"{path} exists; fixtures are never regenerated")
    aimc.save_chip(tile, path)
    conv = tile._conv_of("forward")
    np.savez(HERE / "chip_sar_adc_group.npz", config=cfg.to_json(), W=W, **conv)


if __name__ == "__main__":
    main()
