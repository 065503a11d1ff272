"""Named random streams: one per source, so adding one leaves the others unchanged.

Each stream is a numpy Generator seeded from (run seed, crc32 of its name); crc32 is
stable across processes where `hash()` is salted. Scalars are served from blocks drawn
in bulk, because one numpy call per scalar costs more than the work it decides.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

BLOCK = 4096


class Stream:
    """Buffered uniform draws from one named generator."""

    __slots__ = ("gen", "_buf", "_i")

    def __init__(self, gen: np.random.Generator):
        self.gen = gen
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        """Uniform on [0, 1)."""
        i = self._i
        if i >= len(self._buf):
            self._buf = self.gen.random(BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def randoms(self, k: int) -> list[float]:
        """The next `k` uniforms, the same values `k` calls of `random()` would give."""
        i = self._i
        out = self._buf[i:i + k]
        self._i = i + len(out)
        while len(out) < k:
            self._buf = self.gen.random(BLOCK).tolist()
            take = self._buf[:k - len(out)]
            self._i = len(take)
            out.extend(take)
        return out

    def exponential(self, mean: float) -> float:
        return -mean * math.log1p(-self.random())

    def pick(self, cdf: list[float]) -> int:
        """Index drawn from a cumulative distribution (last entry 1.0)."""
        u = self.random()
        for i, c in enumerate(cdf):
            if u < c:
                return i
        return len(cdf) - 1

    def normal(self) -> float:
        return float(self.gen.standard_normal())


class RngStreams:
    """The run's streams, created on first use by name."""

    def __init__(self, seed: int):
        self._seed = seed
        self._streams: dict[str, Stream] = {}

    def __call__(self, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            key = zlib.crc32(name.encode())
            stream = self._streams[name] = Stream(np.random.default_rng([self._seed, key]))
        return stream
