"""The wheel of deadlines: when each live block is due to be freed.

A block's deadline is a tick (`lifetime_tick` wide, sampling config) kept in the memmap
(`expire`, 0 for none) and filed in the wheel, which the workload's reaper asks for the
blocks due at each tick in turn (sim/workload.py). The kernel has no such structure -- a
process frees its memory when it exits or unmaps it -- so this stands in for the
owners' lifetimes.

A hierarchical timing wheel: ticks are grouped in epochs of 2^EPOCH_SHIFT. Blocks due in a
later epoch are appended, with their ticks, to that epoch's pair of arrays (a ring of
EPOCHS epochs ahead, a dict beyond), so filing one is a store at the end of an array that
stays in cache. When the reaper reaches an epoch its entries are sorted by tick (stable:
blocks due at the same tick keep the order they were filed in), and blocks filed for a
tick of the epoch being reaped go to that tick's own bucket. A tick's blocks come out in
the order they were filed; a block filed for a tick already reaped never comes due.
"""

from __future__ import annotations

from array import array

import cython
import numpy as np

from compactsim.sim.machine import Machine

EPOCH_SHIFT = 6         # 64 ticks per epoch
EPOCHS = 1024           # epochs ahead in the ring (a power of 2)


@cython.cclass
class Bucket:
    """pfns (or ticks): an int32 array of `size` entries used up to `n`, doubled when
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

    def values(self) -> np.ndarray:
        """The entries, as int32 (a view of the array)."""
        return np.frombuffer(self.pfns, dtype=np.int32, count=self.n)


@cython.cclass
class Lifetimes:
    """Deadlines of live blocks, filed by tick (see the module's docstring).

    An entry is valid only while its pfn is an allocated head whose `expire` still
    equals the entry's tick; reclaim and migration leave stale entries behind, which the
    reaper skips (a migrated block is filed again under its new pfn). Ticks are taken in
    order, each once (`take`)."""

    def __init__(self, m: Machine, tick: float, epoch_shift: int = EPOCH_SHIFT,
                 epochs: int = EPOCHS):
        self.m = m
        self.mem = m.mem
        self.tick = tick
        self.shift = epoch_shift
        self.epochs = epochs
        self.reaped = 0                 # the last tick taken
        self.opened = -1                # its epoch
        self.near = [Bucket() for _ in range(1 << epoch_shift)]   # the open epoch, by tick
        self.ahead: list[tuple[Bucket, Bucket] | None] = [None] * epochs
        self.beyond: dict[int, tuple[Bucket, Bucket]] = {}
        # the open epoch's entries filed before it opened, sorted by tick
        self.pfns_v = self.ticks_v = np.zeros(0, dtype=np.int32)
        self.cursor = 0
        self.due = Bucket()

    @cython.locals(bucket=Bucket, epoch=cython.long)
    def schedule(self, pfn: int, tick: int) -> None:
        """File block `pfn` as due at `tick` (its `expire`)."""
        self.mem.expire_v[pfn] = tick
        if tick <= self.reaped:
            return                      # the reaper has passed it: it never comes due
        epoch = tick >> self.shift
        if epoch == self.opened:
            bucket = self.near[tick & ((1 << self.shift) - 1)]
            bucket.append(pfn)
            return
        if epoch - self.opened <= self.epochs:
            pair = self.ahead[epoch & (self.epochs - 1)]
            if pair is None:
                pair = self.ahead[epoch & (self.epochs - 1)] = (Bucket(), Bucket())
        else:
            pair = self.beyond.get(epoch)
            if pair is None:
                pair = self.beyond[epoch] = (Bucket(), Bucket())
        bucket = pair[0]
        bucket.append(pfn)
        bucket = pair[1]
        bucket.append(tick)

    def _open(self, epoch: int) -> None:
        """Start taking `epoch`'s ticks: its entries filed so far, sorted by tick."""
        self.opened = epoch
        parts = []
        far = self.beyond.pop(epoch, None)      # filed first, while the epoch lay beyond
        if far is not None:
            parts.append(far)
        near = self.ahead[epoch & (self.epochs - 1)]
        self.ahead[epoch & (self.epochs - 1)] = None
        if near is not None:
            parts.append(near)
        pfns = np.concatenate([p.values() for p, _ in parts] or [np.zeros(0, np.int32)])
        ticks = np.concatenate([t.values() for _, t in parts] or [np.zeros(0, np.int32)])
        order = np.argsort(ticks, kind="stable")
        self.pfns_v = pfns[order]
        self.ticks_v = ticks[order]
        self.cursor = 0

    @cython.locals(due=Bucket, near=Bucket, i=cython.Py_ssize_t, n=cython.Py_ssize_t)
    def take(self, tick: int) -> Bucket | None:
        """The reaper's: every pfn filed for `tick` (the next tick), in the order filed, or
        None. The bucket is reused by the next call."""
        self.reaped = tick
        if tick >> self.shift != self.opened:
            self._open(tick >> self.shift)
        due = self.due
        due.n = 0
        n = self.ticks_v.shape[0]
        while self.cursor < n and self.ticks_v[self.cursor] == tick:
            due.append(self.pfns_v[self.cursor])
            self.cursor += 1
        near = self.near[tick & ((1 << self.shift) - 1)]
        for i in range(near.n):
            due.append(near.view[i])
        near.n = 0
        return due if due.n else None
