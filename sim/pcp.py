"""Per-cpu page lists (order 0).

Follows mm/page_alloc.c `rmqueue_pcplist`, `rmqueue_bulk`, `free_unref_page_commit` and
`free_pcppages_bulk`: one list per CPU and pcp migratetype, refilled with `batch` pages
under one `zone->lock` hold, and drained from the cold end once `count >= high`, in
the order of each era's `free_pcppages_bulk` (round-robin with `batch_free` to 5.17, a
whole list at a time from the freed page's list 5.18+). Pages on
these lists are neither free in the buddy sense (not in NR_FREE_PAGES, cannot merge) nor
allocated to anyone. `batch` and `high` are sized per era when the machine is built
(sim/zone.py: `zone_batchsize` with its 512 KiB / 1 MiB cap, 4.x's 6 * batch or 5.14+'s
`zone_highsize`). Simplified: no `free_factor` scaling, no high-order pcp lists (5.13+),
no auto-tuning of `high` (6.7+).
"""

from __future__ import annotations

import cython

from compactsim.sim.config import PAGEBLOCK_ORDER
from compactsim.sim import page as pg
from compactsim.sim.page import MemMap
from compactsim.sim.pageblock import MIGRATE_PCPTYPES


# The page states the list operations set, as C constants where compiled.
ALLOC = cython.declare(cython.int, pg.ALLOC)
PCP = cython.declare(cython.int, pg.PCP)


@cython.cclass
class PerCpuPages:
    """`struct per_cpu_pages` of every CPU for one zone (compiled: an extension type,
    sim/pcp.pxd)."""

    def __init__(self, nr_cpus: int, batch: int, high: int, whole_list: bool = True):
        # lists[cpu][mt]: a stack; the end of the list is the hot head.
        self.lists: list[list[list[int]]] = [[[] for _ in range(MIGRATE_PCPTYPES)]
                                             for _ in range(nr_cpus)]
        self.counts = [0] * nr_cpus
        self.batch = batch
        self.high = high
        self.whole_list = whole_list    # free_pcppages_bulk's order: 5.18+ or BATCH_FREE

    @cython.locals(total=cython.Py_ssize_t, c=cython.Py_ssize_t)
    def count(self) -> int:
        total = 0
        for c in self.counts:
            total += c
        return total


@cython.locals(pcp=PerCpuPages, taken=cython.Py_ssize_t, mark=cython.int,
               pstate=cython.uchar[:], pfn=cython.Py_ssize_t, mem=MemMap)
def rmqueue_bulk(z, cpu: int, mt: int, alloc_flags: int, policy, rmqueue,
                 rmqueue_smallest_pages) -> int:
    """Refill `cpu`'s list of `mt` with up to `batch` pages; returns how many were taken.
    The kernel calls __rmqueue once per page; pages from `mt`'s own lists are taken as
    many at a time (`rmqueue_smallest_pages`, the same pages in the same order), and
    `rmqueue` (with its fallback) is called once whenever they run out."""
    pcp = z.pcp
    lst = pcp.lists[cpu][mt]
    mem = z.mem
    pstate = mem.pstate_v
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


@cython.locals(pcp=PerCpuPages, lst=list, pfn=cython.Py_ssize_t)
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


@cython.locals(pcp=PerCpuPages)
def free_pcppages_bulk(z, cpu: int, count: int, free_one_page, pageblocks, policy,
                       pindex: int = 0) -> list[tuple[int, int]]:
    """Return `count` pages (at most all queued) to the buddy lists, each from the cold end
    (tail, `list_last_entry`) of its list, in the order of the profile's `pcp_free`
    (mm/page_alloc.c `free_pcppages_bulk`):

    - BATCH_FREE (4.4 to 5.17): round-robin over the types, starting with the one after
      UNMOVABLE (MOVABLE: the index is incremented before the first list is looked at).
      Each visit takes `batch_free` pages, the number of lists looked at since the last
      take, so lists after empty ones give more; once only one list is left, all of it.
    - WHOLE_LIST (5.18+, "drain the requested list first" / "free pages in a single
      pass"): each list is emptied before the next in pindex order is started, beginning
      with `pindex`, the list of the page just freed (0 for drain_pages_zone).

    The pre-6.10 kernels free a page to the type it was queued under; 6.10+ to its
    pageblock's current type. Returns (pfn, mt) of the pages freed with the type they
    were freed to, which mm_page_pcpu_drain prints."""
    pcp = z.pcp
    lists = pcp.lists[cpu]
    count = min(count, pcp.counts[cpu])
    # (list, pages) taken in turn; each list's pages are cut off its cold end once at the
    # end (free_one_page never looks at the pcp lists).
    runs = []
    taken = [0] * MIGRATE_PCPTYPES
    left = count
    if pcp.whole_list:
        mt = pindex - 1
        while left > 0:
            mt = (mt + 1) % MIGRATE_PCPTYPES
            n = min(len(lists[mt]), left)
            if n:
                runs.append((mt, n))
                taken[mt] = n
                left -= n
    else:
        mt = 0
        batch_free = 0
        while left > 0:
            while True:
                batch_free += 1
                mt = (mt + 1) % MIGRATE_PCPTYPES
                if taken[mt] < len(lists[mt]):
                    break
            if batch_free == MIGRATE_PCPTYPES:      # the only non-empty list: all of it
                batch_free = left
            n = min(batch_free, left, len(lists[mt]) - taken[mt])
            runs.append((mt, n))
            taken[mt] += n
            left -= n
            batch_free -= n
    hygiene = policy.freelist_hygiene()
    block_mt = pageblocks.mt
    freed = []
    pos = [0] * MIGRATE_PCPTYPES
    for mt, n in runs:
        lst = lists[mt]
        i = pos[mt]
        for pfn in lst[i:i + n]:
            if hygiene:
                bmt = block_mt[pfn >> PAGEBLOCK_ORDER]
                free_one_page(z, pfn, 0, bmt, False, pageblocks)
                freed.append((pfn, bmt))
            else:
                free_one_page(z, pfn, 0, mt)
                freed.append((pfn, mt))
        pos[mt] = i + n
    for lst, k in zip(lists, taken):
        if k:
            del lst[:k]
    pcp.counts[cpu] -= count
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
