"""Named random streams, and the per-request draws that give every arm the same workload.

Each stream is a numpy Generator seeded from (run seed, crc32 of its name); crc32 is
stable across processes where `hash()` is salted. Scalars are served from blocks drawn
in bulk, because one numpy call per scalar costs more than the work it decides.

Common random numbers: a workload task's stream is read in fixed-width records, one per
request, so the k-th request's uniforms are positions [k*width, (k+1)*width) of the
stream keyed by (seed, task) -- a counter-based draw keyed by (seed, task, k). Inside a
record each block of the request has its own fixed slot (`Draws.seek`), and a block that
fails to allocate leaves its slot unread rather than shifting the next one. Draws whose
number depends on what the simulated kernel did (base pages after a THP fallback) come
from a generator keyed by (seed, name, k) (`RngStreams.keyed`). So two runs with the same
seed and different designs, profiles or tunables ask for the same requests; they differ
only where the simulated kernel makes them differ.
"""

from __future__ import annotations

import zlib
from math import log1p
from statistics import NormalDist

import cython
import numpy as np

BLOCK = 4096
_inv_cdf = NormalDist().inv_cdf


class Uniforms:
    """A source of uniforms read in order from a list (`_u` from `_i` on), and the
    distributions drawn from it: one uniform per value, so how many uniforms a value takes
    never depends on the value. An extension type where compiled (sim/rng.pxd)."""

    def __init__(self, uniforms: list[float]):
        self._u = uniforms
        self._i = 0

    def random(self) -> float:
        """The next uniform on [0, 1)."""
        i = self._i
        self._i = i + 1
        return self._u[i]

    def randoms(self, k: int) -> list[float]:
        """The next `k` uniforms, the same values `k` calls of `random()` would give."""
        i = self._i
        self._i = i + k
        return self._u[i:i + k]

    def exponential(self, mean: float) -> float:
        return -mean * log1p(-self.random())

    @cython.locals(u=cython.double, i=cython.Py_ssize_t)
    def pick(self, cdf: list[float]) -> int:
        """Index drawn from a cumulative distribution (last entry 1.0)."""
        u = self.random()
        for i in range(len(cdf)):
            if u < cdf[i]:
                return i
        return len(cdf) - 1

    def normal(self) -> float:
        """Standard normal by inversion (one uniform, kept away from 0)."""
        return _inv_cdf(max(self.random(), 1e-300))


class Stream(Uniforms):
    """Buffered uniform draws from one named generator: its list is refilled a block at
    a time."""

    def __init__(self, gen: np.random.Generator):
        self._u = []
        self._i = 0
        self.gen = gen

    def random(self) -> float:
        """Uniform on [0, 1)."""
        i = self._i
        if i >= len(self._u):
            self._u = self.gen.random(BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._u[i]

    def randoms(self, k: int) -> list[float]:
        i = self._i
        out = self._u[i:i + k]
        self._i = i + len(out)
        while len(out) < k:
            self._u = self.gen.random(BLOCK).tolist()
            take = self._u[:k - len(out)]
            self._i = len(take)
            out.extend(take)
        return out


class Draws(Uniforms):
    """One request's record of uniforms: `head` leading values (the arrival gap), then one
    slot of `width` values per block. `seek(j)` moves to block j's slot; reads run on
    from there (a bulk of blocks reads consecutive slots)."""

    def __init__(self, key: tuple, uniforms: list[float], head: int, width: int):
        self._u = uniforms
        self._i = 0
        self.key = key
        self.head = head
        self.width = width

    def seek(self, block: int) -> "Draws":
        self._i = self.head + block * self.width
        return self

    @property
    def block(self) -> int:
        """The block whose slot the next read falls in."""
        return (self._i - self.head) // self.width if self.width else 0


class RngStreams:
    """The run's streams, created on first use by name."""

    def __init__(self, seed: int):
        self._seed = seed
        self._streams: dict[str, Stream] = {}

    def __call__(self, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(np.random.default_rng(
                [self._seed, zlib.crc32(name.encode())]))
        return stream

    def keyed(self, name: str, index: int, n: int) -> list[float]:
        """`n` uniforms keyed by (seed, name, index), whatever else the run has drawn."""
        gen = np.random.default_rng([self._seed, zlib.crc32(name.encode()), index])
        return gen.random(n).tolist()
