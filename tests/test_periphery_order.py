"""Periphery order (issue 11): output-referred weight noise is added *before* the output nonlinearity (aihwkit's
forwardVector order; README "periphery"), the output noise after it. Tested by moments: with y = 5, weight noise
sigma 2 and y <- y / (1 + 0.2 |y|), the mean output is E[f(5 + 2 xi)] (about 2.42), not f(5) = 2.5."""
from __future__ import annotations

import numpy as np
import pytest

from aimc.config import BoundManagement, IOConfig, MappingConfig, NoiseManagement, TileConfig, WeightNoiseType
from aimc.tile import Tile

BASE = dict(inp_bits=0, out_bits=0, out_noise=0.0, noise_management=NoiseManagement.NONE,
            bound_management=BoundManagement.NONE, out_bound=10.0, out_nonlinearity=2.0)


def _reads(io, n_reads=4000):
    cfg = TileConfig(forward=io, backward=io, mapping=MappingConfig(max_in=0, max_out=0))
    t = Tile(4, 4, cfg, seed=3)
    t.set_weights(np.eye(4, dtype=np.float32) * 5)
    y = t.forward(np.tile(np.eye(4, dtype=np.float32), (n_reads // 4, 1)))
    return y[np.arange(len(y)), np.arange(len(y)) % 4]          # the lit output (nominal 5) of each read


def _expect(f, sigma):
    z, w = np.polynomial.hermite_e.hermegauss(80)
    return float((f(5 + sigma * z) * w).sum() / w.sum())


def f(y):
    return y / (1 + 0.2 * np.abs(y))


@pytest.mark.parametrize("kind", [WeightNoiseType.ADDITIVE_CONSTANT, WeightNoiseType.PCM_READ])
def test_weight_noise_is_added_before_the_output_nonlinearity(kind):
    # one-hot input: additive sigma = w_noise * ||v|| = w_noise; pcm_read sigma = w_noise * sqrt(|w| v^2) = w_noise sqrt(5)
    s = 2.0 if kind == WeightNoiseType.ADDITIVE_CONSTANT else 2.0 / np.sqrt(5.0)
    y = _reads(IOConfig(**BASE, w_noise=s, w_noise_type=kind))
    se = y.std() / np.sqrt(len(y))
    before, after = _expect(f, 2.0), f(5.0)
    assert abs(y.mean() - before) < 4 * se, (y.mean(), before)
    assert abs(before - after) > 10 * se
    zs = (y - y.mean()) / y.std()                 # f bends the normal: skewed to the left
    assert (zs ** 3).mean() < -0.2


def test_output_noise_stays_after_the_nonlinearity():
    y = _reads(IOConfig(**{**BASE, "out_noise": 2.0}))
    se = y.std() / np.sqrt(len(y))
    assert abs(y.mean() - f(5.0)) < 4 * se and abs(y.std() - 2.0) < 0.1
