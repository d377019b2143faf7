"""Write the chip-image fixtures that tests/test_chip_compat.py must keep loading.

Run once per format version with the aimc of that day (``PYTHONPATH=. python tests/data/make_chip_fixtures.py``);
never regenerate an existing file: the point is that images written by an older aimc still load.
Each image comes with ``<name>.npz`` holding what the saved chip computed, to compare after loading.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import aimc
from aimc.chip import FORMAT_VERSION
from aimc.config import InferenceConfig, IOConfig, MappingConfig, TileConfig

HERE = Path(__file__).parent
X = np.random.default_rng(7).uniform(-1, 1, (3, 9)).astype(np.float32)


def configs():
    """The configs of the fixtures (tests rebuild the targets from these)."""
    drifting = TileConfig(inference=InferenceConfig(device="pcm-joshi2020", compensation="per_column"),
                          mapping=MappingConfig(max_in=5, max_out=4))
    exact = TileConfig(forward=IOConfig(is_perfect=True), mapping=MappingConfig(weight_scaling_omega=1.0))
    return drifting, exact


def main():
    drifting, exact = configs()
    W = (np.random.default_rng(0).standard_normal((7, 9)) * 0.3).astype(np.float32)
    arr = aimc.TileArray(7, 9, drifting, seed=11, name="fc")
    arr.program(W)
    arr.drift(3600.0)
    tile = aimc.Tile(7, 9, exact, seed=5, tile_id="solo")
    tile.set_weights(W)
    for name, obj in ((f"chip_v{FORMAT_VERSION}_array", arr), (f"chip_v{FORMAT_VERSION}_tile", tile)):
        path = HERE / f"{name}.h5"
        if path.exists():
            sys.exit(f"{path} exists: fixtures are never regenerated")
        aimc.save_chip(obj, path)
        out = {"weights": obj.read_weights(), "y": obj.forward(X), "x": X}
        if isinstance(obj, aimc.TileArray):
            out["g"] = np.concatenate([t.conductances().ravel() for t in obj.all_tiles()])
        np.savez(HERE / f"{name}.npz", **out)
        print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
