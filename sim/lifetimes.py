"""The wheel of deadlines: when each live block is due to be freed.

A block's deadline is a tick (`lifetime_tick` wide, sampling config) kept in the memmap
(`expire`, 0 for none) and in that tick's bucket of pfns, which the workload's reaper
takes when the tick comes (sim/workload.py). The kernel has no such structure -- a
process frees its memory when it exits or unmaps it -- so this stands in for the
owners' lifetimes. Buckets are int32 arrays doubled when full; the next WHEEL ticks
after the one last reaped index a ring, later ones a dict.
"""

from __future__ import annotations

import math
from array import array

import cython

from compactsim.sim.machine import Machine

WHEEL = cython.declare(cython.long, 4096)   # ticks in the ring of Lifetimes (a power of 2)


@cython.cclass
class Bucket:
    """One tick's pfns: an int32 array of `size` entries used up to `n`, doubled when
    full (compiled, an append is a C store, where array.append parses its argument every
    call)."""

    def __init__(self) -> None:
        self.pfns = array("i", bytes(4 * 16))
        self.view = self.pfns
        self.n = 0
        self.size = 16

    def append(self, pfn: int) -> None:
        if self.n == self.size:
            self.size *= 2
            bigger = array("i", bytes(4 * self.size))
            bigger[:self.n] = self.pfns
            self.pfns = self.view = bigger
        self.view[self.n] = pfn
        self.n += 1


@cython.cclass
class Lifetimes:
    """Deadlines of live blocks: a wheel of `tick`-wide buckets of pfns.

    A bucket entry is valid only while its pfn is an allocated head whose `expire` still
    equals the bucket's tick; reclaim and migration leave stale entries behind, which are
    skipped (a migrated block is scheduled again under its new pfn). The next WHEEL ticks
    after the last one reaped sit in a ring indexed by tick; later ones, and ticks already
    reaped (whose entries never come due), in a dict."""

    def __init__(self, m: Machine, tick: float):
        self.m = m
        self.mem = m.mem
        self.tick = tick
        self.near: list[Bucket | None] = [None] * WHEEL
        self.far: dict[int, Bucket] = {}
        self.reaped = 0

    def due_tick(self, seconds: float) -> int:
        return max(1, math.ceil((self.m.env.now + seconds) / self.tick))

    @cython.locals(bucket=Bucket, slot=cython.Py_ssize_t)
    def schedule(self, pfn: int, tick: int) -> None:
        self.mem.expire_v[pfn] = tick
        if self.reaped < tick <= self.reaped + WHEEL:
            slot = tick & (WHEEL - 1)
            bucket = self.near[slot]
            if bucket is None:
                bucket = self.near[slot] = Bucket()
        else:
            bucket = self.far.get(tick)
            if bucket is None:
                bucket = self.far[tick] = Bucket()
        bucket.append(pfn)

    @cython.locals(bucket=Bucket, near=Bucket, slot=cython.Py_ssize_t, i=cython.Py_ssize_t)
    def take(self, tick: int) -> Bucket | None:
        """The reaper's: every pfn scheduled for `tick`, in the order scheduled (those
        from when the tick lay beyond the ring come first), or None."""
        self.reaped = tick
        slot = tick & (WHEEL - 1)
        near = self.near[slot]
        self.near[slot] = None
        bucket = self.far.pop(tick, None)
        if bucket is None:
            return near
        if near is not None:
            for i in range(near.n):
                bucket.append(near.view[i])
        return bucket
