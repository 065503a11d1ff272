"""zram swap backed by zsmalloc pages.

Follows drivers/block/zram/zram_drv.c (`zram_write_page`: compress, `zs_malloc`, copy)
and mm/zsmalloc.c in outline: compressed objects are packed into order-0 zspage pages,
allocated from reclaim context (PF_MEMALLOC, so without watermarks) with
`__GFP_MOVABLE` when the movable-ops design lets zsmalloc pages migrate (4.8+) and
without it (unmovable) under `NONE`, as 4.4 did. Simplified: objects have one average
size (page size / compression ratio), zspages hold whole objects and are freed once
the live objects fit in fewer pages; swapped-out pages are not faulted back in, and an
object is freed when its owner would have freed the page.
"""

from __future__ import annotations

import math

from compactsim.sim.config import MovableOps, PageKind
from compactsim.sim.gfp import (__GFP_HIGHMEM, __GFP_MOVABLE, __GFP_NOWARN, ALLOC_NO_WATERMARKS,
                     GFP_NOIO)
from compactsim.sim.lru import node_of
from compactsim.sim.machine import LIST_ZSPAGES, Machine
from compactsim.sim.page import KIND_CODE, PG_ISOLATED, PG_MOVABLE_OPS
from compactsim.sim.page_alloc import Outcome, free_pages, get_page_from_freelist, trace_alloc
from compactsim.sim.task import Task

ZSPAGE_GFP_MOVABLE = GFP_NOIO | __GFP_HIGHMEM | __GFP_MOVABLE | __GFP_NOWARN
ZSPAGE_GFP_UNMOVABLE = GFP_NOIO | __GFP_HIGHMEM | __GFP_NOWARN


class Zram:
    """One zram device per machine, its zsmalloc pool spread over the nodes."""

    def __init__(self, m: Machine):
        self.m = m
        cfg = m.config.machine
        self.capacity = cfg.zram // 4096            # disksize in pages
        self.ratio = cfg.zram_compression_ratio
        self.algorithm = cfg.zram_algorithm.value
        self.movable = m.config.kernel.movable_ops is not MovableOps.NONE
        self.gfp = ZSPAGE_GFP_MOVABLE if self.movable else ZSPAGE_GFP_UNMOVABLE
        self.stored = 0                             # objects (swapped-out pages)
        self.pages = 0                              # zspage pages held
        self.expiring: dict[int, int] = {}          # lifetime tick -> objects dying then
        self.failed_writes = 0
        self.map_s = m.config.costs.zs_map_copy_us * 1e-6
        self._ops = 0                               # maps since zspage_busy last looked
        self._busy_since = 0.0
        self._busy = 0.0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def has_room(self, nr: int) -> bool:
        return self.enabled and self.stored + nr <= self.capacity

    def _pages_needed(self, objects: int) -> int:
        return math.ceil(objects / self.ratio)

    def store(self, task: Task, nr: int, expire_tick: int) -> tuple[bool, list[Outcome]]:
        """Compress `nr` pages into the pool; False if zspages could not be allocated."""
        m = self.m
        outcomes = []
        need = self._pages_needed(self.stored + nr) - self.pages
        kind = KIND_CODE[PageKind.ZSMALLOC]
        for _ in range(need):
            out = get_page_from_freelist(m, task, self.gfp, 0, ALLOC_NO_WATERMARKS)
            trace_alloc(m, task, out.pfn, 0, self.gfp)
            if out.pfn < 0:
                self.failed_writes += 1
                return False, outcomes
            outcomes.append(out)
            m.mem.kind[out.pfn] = kind
            m.mem.flags[out.pfn] = PG_MOVABLE_OPS if self.movable else 0
            m.mem.list_add(m.nodes[node_of(m, out.pfn)].lists[LIST_ZSPAGES], out.pfn)
            self.pages += 1
        self.stored += nr
        self._ops += nr
        if expire_tick:
            self.expiring[expire_tick] = self.expiring.get(expire_tick, 0) + nr
        m.events["pswpout"] += nr
        return True, outcomes

    def expire(self, task: Task, tick: int) -> list[Outcome]:
        """Free the objects whose owners are gone by `tick`, and the zspages left empty."""
        nr = self.expiring.pop(tick, 0)
        if not nr:
            return []
        self.stored -= nr
        self._ops += nr
        return self.shrink(task)

    def shrink(self, task: Task) -> list[Outcome]:
        m = self.m
        outcomes = []
        keep = self._pages_needed(self.stored)
        mem = m.mem
        for node in m.nodes:
            head = node.lists[LIST_ZSPAGES]
            pfn = mem.prv[head]
            while self.pages > keep and pfn != head:
                prev = mem.prv[pfn]
                if not mem.flags[pfn] & PG_ISOLATED:      # compaction holds it: next one
                    mem.list_del(pfn)
                    self.pages -= 1
                    outcomes.append(free_pages(m, task, pfn, 0))
                pfn = prev
        return outcomes

    def zspage_busy(self) -> float:
        """Chance that a zspage's lock is held by a map (zram read or write) right now:
        map time per second over the pool's pages, from the activity since last asked."""
        now = self.m.env.now
        elapsed = now - self._busy_since
        ops, self._ops = self._ops, 0
        self._busy_since = now
        if elapsed <= 0 or not self.pages:
            return self._busy
        self._busy = min(1.0, ops * self.map_s / elapsed / self.pages)
        return self._busy
