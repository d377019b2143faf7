"""Crossbar tiles: ``Tile`` (one physical array) and ``TileArray`` (a matrix split over several tiles).

A tile holds its state as contiguous float32 arrays: the normalised weights the MVM reads (``_w``, out x in),
the digital per-output scales (``_scale``), and after ``program`` the conductances (devices x out x in, uS)
with the parameters that map them back. Verbs: ``set_weights`` (an exact write, as during training),
``program`` (a physical write through the mapping), ``forward`` (y = W x through the forward periphery),
``backward`` (x' = W^T d through the backward periphery), ``read_weights``.
"""
from __future__ import annotations

import numpy as np

from . import mapping as _map
from .config import TileConfig, as_config
from .periphery import WeightView, mvm
from .rng import Stream, check_seed


def _check_size(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_matrix(W, shape: tuple[int, int], what: str = "W") -> np.ndarray:
    """W as a C-contiguous float32 (out, in) array, or a clear error (shape, dtype, NaN/inf)."""
    if hasattr(W, "detach"):  # a torch tensor
        W = W.detach().cpu().numpy()
    W = np.asarray(W)
    if W.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {W.dtype}")
    if W.shape != tuple(shape):
        raise ValueError(f"{what} has shape {W.shape}, expected {tuple(shape)} (out_size, in_size)")
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.isfinite(W).all():
        raise ValueError(f"{what} contains NaN or inf")
    return W


def check_batch(x, n: int, what: str = "x") -> tuple[np.ndarray, bool]:
    """x as a C-contiguous float32 (batch, n) array and whether it was 1-D, or a clear error."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] != n:
        raise ValueError(f"{what} has shape {x.shape}, expected ({n},) or (batch, {n})")
    vec = x.ndim == 1
    x = np.ascontiguousarray(x.reshape(1, -1) if vec else x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf")
    return x, vec


class Tile:
    """One crossbar array of ``out_size`` x ``in_size`` weights with its own periphery and random stream.

    Example::

        tile = aimc.Tile(64, 128, config=aimc.presets.default(), seed=1)
        tile.program(W)          # W: (64, 128)
        y = tile.forward(x)      # x: (batch, 128) -> (batch, 64)
    """

    def __init__(self, out_size: int, in_size: int, config: TileConfig | str | None = None, seed: int = 0,
                 tile_id: str | int = 0):
        self.out_size = _check_size("out_size", out_size)
        self.in_size = _check_size("in_size", in_size)
        self.config = as_config(config)
        self.seed = check_seed(seed)
        self.tile_id = tile_id
        self.stream = Stream(self.seed, tile_id)
        self._scale = np.ones(self.out_size, np.float32)
        self._G = None            # conductances after program(): (devices, out, in) uS
        self._map_params = None
        self._set_normalised(np.zeros((self.out_size, self.in_size), np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_size, self.in_size)

    def _set_normalised(self, w: np.ndarray) -> None:
        self._w = w
        self._fwd = WeightView(w)
        self._bwd = WeightView(w.T)

    # ------------------------------------------------------------------ writes
    def set_weights(self, W) -> None:
        """Exact write of W (no device physics): the state during hardware-aware training."""
        W = check_matrix(W, self.shape)
        self._scale = _map.column_scales(W, self.config.mapping)
        self._G = self._map_params = None
        self._set_normalised(W / self._scale[:, None] if self.config.mapping.weight_scaling_omega > 0 else W.copy())

    def program(self, W) -> None:
        """Physical write of W: digital column scales, weight -> conductance mapping, read back."""
        W = check_matrix(W, self.shape)
        self._scale = _map.column_scales(W, self.config.mapping)
        wn = W / self._scale[:, None]
        self._G, self._map_params = _map.to_conductances(wn, self.config.mapping)
        self._set_normalised(_map.from_conductances(self._G, self._map_params, self.config.mapping))

    def conductances(self) -> np.ndarray:
        """The programmed conductances (devices, out, in) in uS; an error before ``program``."""
        if self._G is None:
            raise RuntimeError("tile has no conductances: call program(W) first (set_weights is an exact, "
                               "non-physical write)")
        return self._G

    # ------------------------------------------------------------------ reads
    def forward(self, x) -> np.ndarray:
        """y = W x through the forward periphery; x (in,) or (batch, in) -> float32 (out,) or (batch, out)."""
        x, vec = check_batch(x, self.in_size, "x")
        y = self._forward(x)
        return y[0] if vec else y

    def backward(self, d) -> np.ndarray:
        """x' = W^T d (the transposed read) through the backward periphery; d (out,) or (batch, out)."""
        d, vec = check_batch(d, self.out_size, "d")
        x = self._backward(d)
        return x[0] if vec else x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        y = mvm(self._fwd, x, self.config.forward, self.stream)
        if self.config.mapping.weight_scaling_omega > 0:
            y *= self._scale
        return y

    def _backward(self, d: np.ndarray) -> np.ndarray:
        if self.config.mapping.weight_scaling_omega > 0:
            d = d * self._scale
        return mvm(self._bwd, d, self.config.backward, self.stream)

    def read_weights(self) -> np.ndarray:
        """The weights the tile currently computes with (digital scales applied), float32 (out, in)."""
        return self._w * self._scale[:, None] if self.config.mapping.weight_scaling_omega > 0 else self._w.copy()


class TileArray:
    """A weight matrix split into near-equal tiles of at most ``mapping.max_out`` x ``mapping.max_in``.

    Each tile has its own periphery (NM, BM, ADC) and random stream; partial outputs are summed
    digitally across input splits and concatenated across output splits (physics.md §2.7).
    """

    def __init__(self, out_size: int, in_size: int, config: TileConfig | str | None = None, seed: int = 0,
                 name: str = ""):
        self.out_size = _check_size("out_size", out_size)
        self.in_size = _check_size("in_size", in_size)
        self.config = as_config(config)
        self.seed = check_seed(seed)
        self.name = name
        m = self.config.mapping
        self.out_splits = _map.split_sizes(self.out_size, m.max_out)
        self.in_splits = _map.split_sizes(self.in_size, m.max_in)
        self._ro = np.concatenate([[0], np.cumsum(self.out_splits)])
        self._ci = np.concatenate([[0], np.cumsum(self.in_splits)])
        self.tiles = [[Tile(o, i, self.config, self.seed, f"{name}/tile({r},{c})")
                       for c, i in enumerate(self.in_splits)] for r, o in enumerate(self.out_splits)]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_size, self.in_size)

    @property
    def grid(self) -> tuple[int, int]:
        return (len(self.out_splits), len(self.in_splits))

    def all_tiles(self):
        for row in self.tiles:
            yield from row

    def _blocks(self):
        for r, row in enumerate(self.tiles):
            for c, tile in enumerate(row):
                yield slice(self._ro[r], self._ro[r + 1]), slice(self._ci[c], self._ci[c + 1]), tile

    def set_weights(self, W) -> None:
        """Exact write of W into the tiles (see ``Tile.set_weights``)."""
        W = check_matrix(W, self.shape)
        for rs, cs, tile in self._blocks():
            tile.set_weights(W[rs, cs])

    def program(self, W) -> None:
        """Physical write of W into the tiles (see ``Tile.program``)."""
        W = check_matrix(W, self.shape)
        for rs, cs, tile in self._blocks():
            tile.program(W[rs, cs])

    def read_weights(self) -> np.ndarray:
        W = np.empty(self.shape, np.float32)
        for rs, cs, tile in self._blocks():
            W[rs, cs] = tile.read_weights()
        return W

    def forward(self, x) -> np.ndarray:
        """y = W x; every tile reads its slice of x, partial sums added digitally."""
        x, vec = check_batch(x, self.in_size, "x")
        y = self._forward(x)
        return y[0] if vec else y

    def backward(self, d) -> np.ndarray:
        """x' = W^T d through each tile's backward periphery, partial sums added digitally."""
        d, vec = check_batch(d, self.out_size, "d")
        x = self._backward(d)
        return x[0] if vec else x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if len(self.tiles) == 1 and len(self.tiles[0]) == 1:
            return self.tiles[0][0]._forward(x)
        y = np.zeros((x.shape[0], self.out_size), np.float32)
        for rs, cs, tile in self._blocks():
            y[:, rs] += tile._forward(np.ascontiguousarray(x[:, cs]))
        return y

    def _backward(self, d: np.ndarray) -> np.ndarray:
        if len(self.tiles) == 1 and len(self.tiles[0]) == 1:
            return self.tiles[0][0]._backward(d)
        x = np.zeros((d.shape[0], self.in_size), np.float32)
        for rs, cs, tile in self._blocks():
            x[:, cs] += tile._backward(np.ascontiguousarray(d[:, rs]))
        return x
