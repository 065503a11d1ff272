"""Allocation entry point and slow path, in simulated time.

Follows mm/page_alloc.c `__alloc_pages` and `__alloc_pages_slowpath` at 6.1: the fast
path at the LOW watermark; then wake kswapd, retry at MIN, early async compaction for
costly and non-movable high-order requests (with the `__GFP_NORETRY` THP exit), the retry
loop of direct reclaim, pcp drain, direct compaction, the NORETRY/costly exits,
`should_reclaim_retry` (16 no-progress loops) and `should_compact_retry`. Direct
compaction plugs in through the `compaction` object (`DirectCompaction`); with none, the
slow path behaves as a kernel built without CONFIG_COMPACTION
(`__alloc_pages_direct_compact` gives COMPACT_SKIPPED). Simplified: no OOM killer (an
allocation that would invoke it fails and `oom_kill` is counted), no highatomic
unreserve, no cpuset races, no memory policies.
"""

from __future__ import annotations

from typing import Protocol

import cython

from compactsim.sim.charge import alloc_cost, charge, settle
from compactsim.sim.compaction import (DEF_COMPACT_PRIORITY, INIT_COMPACT_PRIORITY,
                                        CompactPriority, CompactResult)
from compactsim.sim.gfp import (ALLOC_NO_WATERMARKS, ALLOC_WMARK_LOW, gfp_kswapd_reclaim,
                     gfp_migratetype, gfp_noretry, gfp_retry_mayfail, gfp_to_alloc_flags,
                     gfpflags_allow_blocking, gfp_thp)
from compactsim.sim.machine import Machine
from compactsim.sim.page_alloc import (Outcome, drain_all_pages, get_page_from_freelist,
                                      rmqueue_pcplist_bulk, trace_alloc, zonelist)
from compactsim.sim.pageblock import PAGE_ALLOC_COSTLY_ORDER, MigrateType
from compactsim.sim.reclaim import MAX_RECLAIM_RETRIES, Reclaim, reclaimable_pages
from compactsim.sim.task import Task
from compactsim.sim.zone import WMARK_MIN, zone_watermark_ok


class DirectCompaction(Protocol):
    """What the slow path needs from compaction (sim/compaction.py provides it)."""

    def direct_compact(self, task: Task, gfp: int, order: int, alloc_flags: int,
                       priority: CompactPriority):
        """Generator: returns (pfn or -1, CompactResult)."""

    def should_compact_retry(self, state: "SlowpathState", order: int,
                             result: CompactResult, task: Task) -> bool:
        """Whether to loop again, possibly lowering `state.compact_priority`."""


class SlowpathState:
    """Retry bookkeeping of one slow-path call."""

    __slots__ = ("compact_priority", "compaction_retries", "no_progress_loops")

    def __init__(self) -> None:
        self.compact_priority = DEF_COMPACT_PRIORITY
        self.compaction_retries = 0
        self.no_progress_loops = 0


MUST_WAIT = -2          # alloc_pages_nowait: the allocation has to run as a generator


@cython.cclass
class Allocator:
    """`alloc_pages` for tasks: fast path, then the slow path, in simulated time."""

    def __init__(self, m: Machine, reclaim: Reclaim, compaction: DirectCompaction | None = None):
        self.m = m
        self.env = m.env
        self.costs = m.config.costs
        self.reclaim = reclaim
        self.compaction = compaction

    @cython.locals(out=Outcome, cpu_s=cython.double, locked_s=cython.double)
    def _try(self, task: Task, gfp: int, order: int, alloc_flags: int):
        """get_page_from_freelist, charged: generator returning the Outcome."""
        out: Outcome = get_page_from_freelist(self.m, task, gfp, order, alloc_flags)
        if out.zone is not None or out.work:
            cpu_s, locked_s = alloc_cost(self.costs, out, order)
            yield from charge(self.env, task, cpu_s, out, locked_s)
        if out.boosted_wake and out.zone is not None:
            self.reclaim.wakeup_kswapd(out.zone.node_id, gfp, 0, 1)
        return out

    @cython.locals(task=Task)
    def alloc_pages_nowait(self, task: Task, gfp: int, order: int) -> int:
        """alloc_pages when it would not wait: an order-0 page off this CPU's per-cpu list
        of the first zone (rmqueue_pcplist_bulk's checks are get_page_from_freelist's for
        that case), charged as `_try` charges a pcp hit. Returns the pfn, or
        MUST_WAIT with nothing done: alloc_pages must run (a refill under zone->lock, a
        buddy allocation or the slow path)."""
        if order:
            return MUST_WAIT
        pfns = rmqueue_pcplist_bulk(self.m, task, gfp, 1)
        if not pfns:
            return MUST_WAIT
        task.debt += self.costs.pcp_alloc_ns * 1e-9
        return pfns[0]

    def alloc_pages(self, task: Task, gfp: int, order: int):
        """Generator returning the allocated pfn, or -1 on failure."""
        out = yield from self._try(task, gfp, order, ALLOC_WMARK_LOW)
        if out.pfn < 0:
            pfn = yield from self.alloc_pages_slowpath(task, gfp, order)
        else:
            pfn = out.pfn
        trace_alloc(self.m, task, pfn, order, gfp)
        return pfn

    def _wake_all_kswapds(self, task: Task, gfp: int, order: int) -> None:
        seen = set()
        for z in zonelist(self.m, task.node):
            if z.node_id not in seen:
                seen.add(z.node_id)
                self.reclaim.wakeup_kswapd(z.node_id, gfp, order, 1)

    def _direct_compact(self, task: Task, gfp: int, order: int, alloc_flags: int,
                        priority: CompactPriority):
        if self.compaction is None or order == 0:
            return -1, CompactResult.SKIPPED
        return (yield from self.compaction.direct_compact(task, gfp, order, alloc_flags,
                                                          priority))

    def alloc_pages_slowpath(self, task: Task, gfp: int, order: int):
        """__alloc_pages_slowpath: generator returning the allocated pfn, or -1."""
        m = self.m
        costly = order > PAGE_ALLOC_COSTLY_ORDER
        can_direct_reclaim = gfpflags_allow_blocking(gfp) and not task.memalloc
        alloc_flags = gfp_to_alloc_flags(gfp)
        state = SlowpathState()
        if gfp_kswapd_reclaim(gfp):
            self._wake_all_kswapds(task, gfp, order)
        out = yield from self._try(task, gfp, order, alloc_flags)
        if out.pfn >= 0:
            return out.pfn
        if can_direct_reclaim and (costly or (order > 0 and
                                              gfp_migratetype(gfp) != MigrateType.MOVABLE)):
            pfn, result = yield from self._direct_compact(task, gfp, order, alloc_flags,
                                                          INIT_COMPACT_PRIORITY)
            if pfn >= 0:
                return pfn
            if costly and gfp_noretry(gfp):
                if result in (CompactResult.SKIPPED, CompactResult.DEFERRED):
                    return -1
                state.compact_priority = INIT_COMPACT_PRIORITY
        if not self.m.config.kernel.compact_priorities and gfp_thp(gfp, order):
            state.compact_priority = INIT_COMPACT_PRIORITY   # 4.4: THP faults stay async
        drained = False
        while True:
            if gfp_kswapd_reclaim(gfp):
                self._wake_all_kswapds(task, gfp, order)
            if task.memalloc:
                alloc_flags |= ALLOC_NO_WATERMARKS
            out = yield from self._try(task, gfp, order, alloc_flags)
            if out.pfn >= 0:
                return out.pfn
            if not can_direct_reclaim:
                return -1
            yield from settle(self.env, task)
            zone = zonelist(m, task.node)[0]
            progress = yield from self.reclaim.direct_reclaim(task, order, zone.name)
            out = yield from self._try(task, gfp, order, alloc_flags)
            if out.pfn < 0 and not drained:
                drained = True
                drain_all_pages(m)
                out = yield from self._try(task, gfp, order, alloc_flags)
            if out.pfn >= 0:
                return out.pfn
            pfn, result = yield from self._direct_compact(task, gfp, order, alloc_flags,
                                                          state.compact_priority)
            if pfn >= 0:
                return pfn
            if gfp_noretry(gfp):
                return -1
            if costly and not gfp_retry_mayfail(gfp):
                return -1
            if self._should_reclaim_retry(task, order, alloc_flags, progress, state):
                continue
            if (progress and self.compaction is not None
                    and self.compaction.should_compact_retry(state, order, result, task)):
                continue
            if order <= PAGE_ALLOC_COSTLY_ORDER:
                m.events["oom_kill"] += 1
            return -1

    def _should_reclaim_retry(self, task: Task, order: int, alloc_flags: int, progress: int,
                              state: SlowpathState) -> bool:
        """should_reclaim_retry: some zone would pass MIN counting reclaimable pages."""
        if progress and order <= PAGE_ALLOC_COSTLY_ORDER:
            state.no_progress_loops = 0
        else:
            state.no_progress_loops += 1
        if state.no_progress_loops > MAX_RECLAIM_RETRIES:
            return False
        zram = self.reclaim.zram
        room = zram is not None and zram.has_room(1)
        for z in zonelist(self.m, task.node):
            available = z.free_pages + reclaimable_pages(self.m, z.node_id, room) * \
                z.managed_pages // max(self.m.nodes[z.node_id].nr_pages, 1)
            available -= -(-state.no_progress_loops * available // MAX_RECLAIM_RETRIES)
            if zone_watermark_ok(z, order, z.wmark_pages(WMARK_MIN), 1, alloc_flags, available):
                return True
        return False
