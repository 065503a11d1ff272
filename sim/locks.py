"""Simulated spinlocks and sleeping locks with accounting.

Stands for `zone->lock`, the lruvec `lru_lock` and page locks; `BookedLock` for zsmalloc's
pool, class and zspage locks, taken inside other steps (sim/zsmalloc.py). A holder
keeps the lock across the simulated time its critical section costs; others either
`trylock()` (as async compaction's `compact_lock_irqsave` does, and the fast paths when
uncontended) or queue FIFO on `lock()`, as a qspinlock's waiters do. A holder whose
critical section never waits may `reserve()` the lock for its length instead, queued
behind earlier reserved sections, which costs no simulated event unless an ordinary
locker comes for the lock meanwhile. Each lock counts
acquisitions, contended acquisitions, and hold and wait time, with a wait histogram.
Simplified: a waiter's spinning costs simulated time but no CPU is modelled as busy.
"""

from __future__ import annotations

from collections import deque

import cython
import simpy

from compactsim.sim.histogram import Histogram


@cython.cclass
class SimLock:
    """A FIFO lock in simulated time (an extension type where compiled, sim/locks.pxd)."""

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self.held = False
        self._since = 0.0
        self._waiters: deque[tuple[simpy.Event, float]] = deque()
        self.acquisitions = 0
        self.contended = 0
        self.hold_s = 0.0
        self.wait_s = 0.0
        self.wait_hist = Histogram()
        self.busy_until = 0.0       # end of a reserved critical section (see reserve)

    def reserve(self, seconds: float) -> float | None:
        """Take the lock for a critical section of `seconds` its holder runs without
        waiting on anything: at once if it is free, or queued behind earlier reserved
        sections. Returns the wait before the section starts (the holder turns wait and
        section into its own time), or None if an ordinary holder or waiter has the lock
        (then use `lock()`). No event is scheduled unless an ordinary locker comes for
        the lock meanwhile."""
        if self.held:
            return None
        now = self.env.now
        start = max(now, self.busy_until)
        waited = start - now
        self.busy_until = start + seconds
        self.acquisitions += 1
        if waited > 0:
            self.contended += 1
            self.wait_s += waited
        self.hold_s += seconds
        self.wait_hist.record(waited)
        return waited

    def _claim_reservation(self) -> None:
        """Someone comes for a reserved lock: the reservation becomes an ordinary hold
        that ends (and hands over to the waiters) when the section does."""
        until = self.busy_until
        self.held = True
        self._since = until                     # its hold time is already counted
        self.env.timeout(until - self.env.now).callbacks.append(lambda _ev: self.unlock())

    def trylock(self) -> bool:
        """Take the lock if it is free; never waits."""
        if self.held or self.busy_until > self.env.now:
            return False
        self.held = True
        self._since = self.env.now
        self.acquisitions += 1
        return True

    def lock(self) -> simpy.Event:
        """An event that fires once the lock is ours (at once if it is free)."""
        ev = self.env.event()
        if not self.held and self.busy_until > self.env.now:
            self._claim_reservation()
        if not self.held:
            self.trylock()
            self.wait_hist.record(0.0)
            ev.succeed()
        else:
            self.contended += 1
            self._waiters.append((ev, self.env.now))
        return ev

    def unlock(self) -> None:
        now = self.env.now
        self.hold_s += now - self._since
        if self._waiters:
            ev, since = self._waiters.popleft()
            waited = now - since
            self.wait_s += waited
            self.wait_hist.record(waited)
            self._since = now
            self.acquisitions += 1
            ev.succeed()
        else:
            self.held = False

    @property
    def nr_waiters(self) -> int:
        return len(self._waiters)

    def stats(self) -> dict[str, float]:
        return {"acquisitions": self.acquisitions, "contended": self.contended,
                "hold_s": self.hold_s, "wait_s": self.wait_s,
                "wait_p99_us": self.wait_hist.percentile(0.99) * 1e6}


class LockStats:
    """The accounting of one lock, or of a family of locks (every zspage's lock)."""

    __slots__ = ("name", "acquisitions", "contended", "trylock_failed", "hold_s", "wait_s",
                 "_wait_hist")

    def __init__(self, name: str):
        self.name = name
        self.acquisitions = 0
        self.contended = 0
        self.trylock_failed = 0
        self.hold_s = 0.0
        self.wait_s = 0.0
        self._wait_hist = Histogram()          # contended waits only

    @property
    def wait_hist(self) -> Histogram:
        """Waits of every acquisition (the uncontended ones as zero)."""
        h = Histogram()
        h.merge(self._wait_hist)
        h.record(0.0, self.acquisitions - self.contended)
        return h

    def stats(self) -> dict[str, float]:
        return {"acquisitions": self.acquisitions, "contended": self.contended,
                "trylock_failed": self.trylock_failed, "hold_s": self.hold_s,
                "wait_s": self.wait_s, "wait_p99_us": self.wait_hist.percentile(0.99) * 1e6}


class BookedLock:
    """A reader-writer lock taken by code that runs inside another process's step (zram's
    maps, zsmalloc's own compaction, a driver's migrate callback): each holder books the
    simulated interval its critical section lasts, and a later taker waits until the
    bookings it conflicts with end (writers conflict with everyone, readers only with
    writers). A spinlock is one that is only ever taken for writing. A taker does not
    wait for the latest booking of its own `owner` (its steps run one after the other,
    and their time is charged as CPU).
    Simplified: a holder never waits behind a booking made after it."""

    __slots__ = ("stats", "write_until", "read_until", "writer", "reader")

    def __init__(self, stats: LockStats):
        self.stats = stats
        self.write_until = 0.0
        self.read_until = 0.0
        self.writer = None
        self.reader = None

    def free_at(self, write: bool, owner=None) -> float:
        """When `owner` would get the lock for writing (or reading)."""
        w = self.write_until if self.writer != owner or owner is None else 0.0
        if not write:
            return w
        r = self.read_until if self.reader != owner or owner is None else 0.0
        return max(w, r)

    def book(self, asked: float, start: float, end: float, write: bool, owner=None) -> None:
        """Hold the lock over [start, end), asked for at `asked` (start - asked waited)."""
        s = self.stats
        s.acquisitions += 1
        waited = start - asked
        if waited > 0:
            s.contended += 1
            s.wait_s += waited
            s._wait_hist.record(waited)
        s.hold_s += end - start
        if write:
            if end >= self.write_until:
                self.write_until = end
                self.writer = owner
        elif end >= self.read_until:
            self.read_until = end
            self.reader = owner

    def take(self, t: float, hold: float, write: bool, owner=None) -> float:
        """Take the lock at `t` for `hold` seconds; returns the wait."""
        start = max(t, self.free_at(write, owner))
        self.book(t, start, start + hold, write, owner)
        return start - t

    def trylock(self, t: float, hold: float, owner=None) -> bool:
        """write_trylock at `t`: False (and nothing booked) if anybody holds it."""
        if self.free_at(True, owner) > t:
            self.stats.trylock_failed += 1
            return False
        self.book(t, t, t + hold, True, owner)
        return True
