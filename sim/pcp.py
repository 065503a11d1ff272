"""Per-cpu page lists (order 0).

Follows mm/page_alloc.c `rmqueue_pcplist`, `rmqueue_bulk`, `free_unref_page_commit` and
`free_pcppages_bulk`: one list per CPU and pcp migratetype, refilled with `batch` pages
under one `zone->lock` hold, and drained from the cold end once `count >= high`. Pages on
these lists are neither free in the buddy sense (not in NR_FREE_PAGES, cannot merge) nor
allocated to anyone. `batch` and `high` are sized per era when the machine is built
(sim/zone.py: `zone_batchsize` with its 512 KiB / 1 MiB cap, 4.x's 6 * batch or 5.14+'s
`zone_highsize`). Simplified: no `free_factor` scaling, no high-order pcp lists (5.13+),
no auto-tuning of `high` (6.7+).
"""

from __future__ import annotations

from compactsim.sim.config import PAGEBLOCK_ORDER, ClaimRule
from compactsim.sim.page import ALLOC, PCP
from compactsim.sim.pageblock import MIGRATE_PCPTYPES


class PerCpuPages:
    """`struct per_cpu_pages` of every CPU for one zone."""

    __slots__ = ("lists", "counts", "batch", "high")

    def __init__(self, nr_cpus: int, batch: int, high: int):
        # lists[cpu][mt]: a stack; the end of the list is the hot head.
        self.lists: list[list[list[int]]] = [[[] for _ in range(MIGRATE_PCPTYPES)]
                                             for _ in range(nr_cpus)]
        self.counts = [0] * nr_cpus
        self.batch = batch
        self.high = high

    def count(self) -> int:
        return sum(self.counts)


def rmqueue_bulk(z, cpu: int, mt: int, alloc_flags: int, policy, rmqueue,
                 rmqueue_smallest_pages) -> int:
    """Refill `cpu`'s list of `mt` with up to `batch` pages; returns how many were taken.
    The kernel calls __rmqueue once per page; pages from `mt`'s own lists are taken as
    many at a time (`rmqueue_smallest_pages`, the same pages in the same order), and
    `rmqueue` (with its fallback) is called once whenever they run out."""
    pcp = z.pcp
    lst = pcp.lists[cpu][mt]
    pstate = z.mem.pstate
    mark = PCP + mt
    taken = 0
    while taken < pcp.batch:
        pfns = rmqueue_smallest_pages(z, mt, pcp.batch - taken)
        if not pfns:
            pfn = rmqueue(z, 0, mt, alloc_flags, policy)
            if pfn < 0:
                break
            pfns = [pfn]
        for pfn in pfns:
            pstate[pfn] = mark
        lst.extend(pfns)
        taken += len(pfns)
    # Pages came off the lists in list order; the kernel queues them so the first taken is
    # handed out first.
    lst[len(lst) - taken:] = lst[len(lst) - taken:][::-1]
    pcp.counts[cpu] += taken
    return taken


def pcp_pop(z, cpu: int, mt: int) -> int:
    """The hot page of the list, or -1 if it is empty."""
    pcp = z.pcp
    lst = pcp.lists[cpu][mt]
    if not lst:
        return -1
    pfn = lst.pop()
    pcp.counts[cpu] -= 1
    z.mem.pstate[pfn] = ALLOC
    return pfn


def pcp_push(z, cpu: int, pfn: int, mt: int) -> bool:
    """Queue a freed page; True when the list went over `high` and must be drained."""
    pcp = z.pcp
    z.mem.pstate[pfn] = PCP + mt
    pcp.lists[cpu][mt].append(pfn)
    pcp.counts[cpu] += 1
    return pcp.counts[cpu] >= pcp.high


def free_pcppages_bulk(z, cpu: int, count: int, free_one_page, pageblocks, policy) -> list[tuple[int, int]]:
    """Return `count` pages to the buddy lists, round-robin over the types from the cold
    end. The pre-6.10 kernels free a page to the type it was queued under; 6.10+ to its
    pageblock's current type. Returns (pfn, mt) of the pages freed, for tracing."""
    pcp = z.pcp
    lists = pcp.lists[cpu]
    hygiene = policy.claim_rule is ClaimRule.FREELIST_HYGIENE
    block_mt = pageblocks.mt
    freed = []
    # Each list is walked from its cold end and the pages taken are cut off once at the
    # end (free_one_page never looks at the pcp lists).
    taken = [0] * MIGRATE_PCPTYPES
    left = pcp.counts[cpu]
    mt = 0
    while count > 0 and left > 0:
        lst = lists[mt]
        i = taken[mt]
        if i < len(lst):
            pfn = lst[i]
            taken[mt] = i + 1
            left -= 1
            count -= 1
            if hygiene:
                free_one_page(z, pfn, 0, block_mt[pfn >> PAGEBLOCK_ORDER],
                              pageblocks=pageblocks)
            else:
                free_one_page(z, pfn, 0, mt)
            freed.append((pfn, mt))
        mt = (mt + 1) % MIGRATE_PCPTYPES
    for lst, k in zip(lists, taken):
        if k:
            del lst[:k]
    pcp.counts[cpu] = left
    return freed


def drain_zone_pages(z, free_one_page, pageblocks, policy) -> int:
    """drain_all_pages for one zone: every CPU's lists back to the buddy lists."""
    if z.pcp is None:
        return 0
    total = 0
    for cpu in range(len(z.pcp.counts)):
        total += len(free_pcppages_bulk(z, cpu, z.pcp.counts[cpu], free_one_page,
                                        pageblocks, policy))
    return total
