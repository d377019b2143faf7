"""Random streams: every random number in aimc is a pure function of (seed, stream id, call, position).

A ``Stream`` hands kernels a Philox key and a fresh call number per use; device models get a
``numpy.random.Generator(Philox)`` derived the same way. Same seed => same result on any thread count.
"""
from __future__ import annotations

import numpy as np

from ..kernels import rng as _k

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def check_seed(seed) -> int:
    """Seeds are non-negative Python ints below 2**63; anything else is a clear error."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


class Stream:
    """A keyed counter-based random stream, e.g. one per tile: ``Stream(seed, 'layer1/tile(0,1)')``."""

    __slots__ = ("seed", "stream_id", "key", "call")

    def __init__(self, seed: int, stream_id: str | int = 0, call: int = 0):
        self.seed = check_seed(seed)
        self.stream_id = stream_id
        sid = stream_id if isinstance(stream_id, int) else int.from_bytes(
            __import__("hashlib").blake2b(str(stream_id).encode(), digest_size=8).digest(), "little")
        key = _mix(_mix(self.seed) ^ _mix(sid & _MASK64))
        self.key = (np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32))
        self.call = int(call)

    def next_call(self) -> tuple[np.uint32, np.uint32, np.uint64]:
        """(k0, k1, call) for one kernel use; advances the call counter."""
        c = np.uint64(self.call)
        self.call += 1
        return self.key[0], self.key[1], c

    def normal(self, shape) -> np.ndarray:
        """float32 standard normals of ``shape`` (rows keyed independently)."""
        out = np.empty(shape, np.float32)
        k0, k1, c = self.next_call()
        _k.fill_normal(out.reshape(-1, out.shape[-1]) if out.ndim > 1 else out.reshape(1, -1), k0, k1, c)
        return out

    def uniform(self, shape) -> np.ndarray:
        """float32 uniforms in (0, 1) of ``shape``."""
        out = np.empty(shape, np.float32)
        k0, k1, c = self.next_call()
        _k.fill_uniform(out.reshape(-1, out.shape[-1]) if out.ndim > 1 else out.reshape(1, -1), k0, k1, c)
        return out

    def numpy_generator(self) -> np.random.Generator:
        """A numpy Philox generator for this stream and call (used by device models); advances the call."""
        k0, k1, c = self.next_call()
        return np.random.Generator(np.random.Philox(key=[(int(k1) << 32) | int(k0), int(c)]))

    def state(self) -> dict:
        return {"seed": self.seed, "stream_id": self.stream_id, "call": self.call}

    @classmethod
    def from_state(cls, state: dict) -> "Stream":
        return cls(state["seed"], state["stream_id"], state["call"])
