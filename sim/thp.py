"""Partly unmapped THPs: the deferred split queue and its shrinker.

Follows mm/huge_memory.c (4.5+, the THP refcounting rework): munmap of part of a
PMD-mapped THP splits the PMD (`__split_huge_pmd`) and zaps the PTEs of the unmapped
range, but the folio stays allocated as one compound page; `folio_remove_rmap_ptes`
finds it partly mapped and queues it with `deferred_split_folio`
(`thp_deferred_split_page`). Only the shrinker (`deferred_split_count` /
`deferred_split_scan`, `do_shrink_slab` in sim/shrinker.py, run by `shrink_slab` from kswapd and direct
reclaim) splits it (`split_folio`, `thp_split_page`): the still-mapped subpages become
order-0 anonymous pages on the LRU, the unmapped ones are freed one by one through the
per-cpu lists. Simplified: one queue for the machine (the kernel keeps one per node,
and per memcg), a queued folio is split on the first scan that reaches it (no split
failures, no CPU time charged for the split), and the unmapped range is always the start
of the huge page.
"""

from __future__ import annotations

from compactsim.sim.config import PageKind
from compactsim.sim.lru import add_page_to_lru, del_page_from_lru
from compactsim.sim.machine import LRU_ANON, Machine
from compactsim.sim.page import ALLOC, KIND_CODE, PG_LRU
from compactsim.sim.page_alloc import Outcome, free_unref_page_list
from compactsim.sim.pageblock import PAGEBLOCK_ORDER
from compactsim.sim.shrinker import Shrinker
from compactsim.sim.task import Task

HPAGE_PMD_NR = 1 << PAGEBLOCK_ORDER
THP = KIND_CODE[PageKind.THP]
ANON = KIND_CODE[PageKind.ANON]


class DeferredSplit:
    """The node's deferred split queue: head pfn -> pages unmapped from its start."""

    def __init__(self, m: Machine):
        self.m = m
        self.queue: dict[int, int] = {}      # insertion order: oldest first, as the list
        self.shrinker = Shrinker()

    def partial_unmap(self, pfn: int, nr_unmapped: int) -> None:
        """munmap of the first `nr_unmapped` pages of the THP at `pfn`: the folio stays
        whole, off the owner's deadline, queued for splitting."""
        self.m.mem.expire[pfn] = 0
        if pfn not in self.queue:
            self.m.events["thp_deferred_split_page"] += 1
        self.queue[pfn] = nr_unmapped

    def forget(self, pfn: int) -> None:
        """A new THP took `pfn`: an entry left by a folio reclaim freed is stale."""
        self.queue.pop(pfn, None)

    def _queued(self, pfn: int) -> bool:
        mem = self.m.mem
        return mem.pstate[pfn] == ALLOC + PAGEBLOCK_ORDER and mem.kind[pfn] == THP

    def split(self, task: Task, pfn: int, nr_unmapped: int) -> list[Outcome]:
        """split_folio of a queued THP: the mapped tail stays as order-0 anonymous pages
        on the LRU, the unmapped head pages are freed (returns the frees' outcomes)."""
        m = self.m
        mem = m.mem
        flags = mem.flags[pfn]
        if flags & PG_LRU:
            del_page_from_lru(m, pfn, HPAGE_PMD_NR, LRU_ANON)
        kept_flags = flags & ~PG_LRU
        for p in range(pfn, pfn + HPAGE_PMD_NR):
            mem.pstate[p] = ALLOC
            mem.kind[p] = ANON
            mem.expire[p] = 0
            mem.flags[p] = kept_flags
        for p in range(pfn + nr_unmapped, pfn + HPAGE_PMD_NR):
            add_page_to_lru(m, p, 1, LRU_ANON)
        m.events["thp_split_page"] += 1
        freed = list(range(pfn, pfn + nr_unmapped))
        for p in freed:
            mem.kind[p] = 0
            mem.flags[p] = 0
        return free_unref_page_list(m, task, freed)

    def shrink(self, task: Task, priority: int) -> list[Outcome]:
        """do_shrink_slab for the deferred split shrinker: the queue length is what is
        freeable; a scan runs once the scan count owed reaches a batch (or the whole
        queue), splitting that many folios from the oldest; the rest is deferred."""
        outcomes: list[Outcome] = []
        total = self.shrinker.do_shrink_slab(len(self.queue), priority)
        if not total:
            return outcomes
        self.m.events["slabs_scanned"] += total
        for pfn in list(self.queue)[:total]:
            nr_unmapped = self.queue.pop(pfn)
            if self._queued(pfn):
                outcomes.extend(self.split(task, pfn, nr_unmapped))
        return outcomes
