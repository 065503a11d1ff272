"""Kernel memory a workload group's activity allocates implicitly: page tables on faults,
slab with file I/O, socket buffer heads with network traffic, stacks and task structures
on fork.

What each activity costs the buddy allocator, with the kernel's GFP flags and orders:
- anonymous faults: user page tables (`pte_alloc_one`, GFP_PGTABLE_USER =
  GFP_KERNEL_ACCOUNT | __GFP_ZERO, order 0, unmovable), one per `ANON_PAGES_PER_PTE`
  faulted pages, and one deposited per THP fault (`pgtable_trans_huge_deposit`);
- file I/O: reclaimable slab (GFP_KERNEL | __GFP_RECLAIMABLE) for dentries (order-0
  slabs), inodes (ext4_inode_cache, order-3 slabs) and page-cache xarray nodes
  (radix_tree_node, order-2 slabs);
- network buffers: sk_buff heads from skbuff_head_cache (order-1 slabs, GFP_ATOMIC);
- forks (`forks` per request): a kernel stack (THREAD_SIZE: order 2 on x86-64, or with
  CONFIG_VMAP_STACK, 4.9+, four order-0 pages from vmalloc, THREADINFO_GFP), a third of
  an order-3 task_struct slab and the child's first page tables (4 order-0 pages).
A slab of order above 0 is tried as SLUB's `allocate_slab` does: __GFP_NOWARN |
__GFP_NORETRY | __GFP_NOMEMALLOC without reclaim, falling back to the cache's minimum
order (0 for these caches) with the caller's flags.

How much: page-table pages were 1.7-4.8 % of anonymous plus mapped pages, and
reclaimable slab 4-16 % of page cache, in /proc/vmstat captures of loaded machines
(nr_page_table_pages, nr_slab_reclaimable, nr_anon_pages, nr_mapped, nr_file_pages); the
rates below take 2.5 % and 8 %. sk_buff heads: ~22 packets of 1500 bytes per 32 KiB
fragment, 256 bytes each.

Counts are owed per group by a running total (no random draws, so no group's random
stream shifts); what is owed is allocated by the task that finished the request, and
each page lives until the block that caused it is freed (its owner's deadline).
Simplified: page tables and sk_buff heads are owned as unmovable slab pages; upper-level
page tables, vmalloc's own page tables and slab object reuse are not modelled.
"""

from __future__ import annotations


import cython

from compactsim.sim.config import PageKind, WorkloadGroup
from compactsim.sim.gfp import (__GFP_ACCOUNT, __GFP_COMP, __GFP_NOMEMALLOC, __GFP_NORETRY,
                                __GFP_NOWARN, __GFP_RECLAIM, __GFP_RECLAIMABLE, __GFP_ZERO,
                                GFP_ATOMIC, GFP_KERNEL)
from compactsim.sim.machine import Machine
from compactsim.sim.page import KIND_CODE
from compactsim.sim.slowpath import MUST_WAIT
from compactsim.sim.task import Task

ANON_PAGES_PER_PTE = 40            # 2.5 % of faulted pages
FILE_SLAB_SHARE = 0.08             # reclaimable slab pages per page-cache page
GFP_PGTABLE_USER = GFP_KERNEL | __GFP_ACCOUNT | __GFP_ZERO
THREADINFO_GFP = GFP_KERNEL | __GFP_ACCOUNT | __GFP_ZERO
THREAD_SIZE_ORDER = 2
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]
SLAB_RECLAIMABLE = KIND_CODE[PageKind.SLAB_RECLAIMABLE]
STACK = KIND_CODE[PageKind.KERNEL_HIGH_ORDER]


@cython.dataclasses.dataclass(frozen=True)
@cython.cclass
class Source:
    """One kind of implicit allocation: `count` blocks of `order` per `per` units of the
    activity (pages allocated, or forks)."""

    name: str
    code: int                   # owner kind byte of the pages
    gfp: int
    order: int
    per: float
    count: int = 1
    slab: bool = False          # SLUB: high order without reclaim, then order 0


def _file_slab(name: str, order: int, pages_share: float) -> Source:
    # `pages_share` of each file page in slabs of 2^order pages
    return Source(name, SLAB_RECLAIMABLE, GFP_KERNEL | __GFP_RECLAIMABLE, order,
                  per=(1 << order) / pages_share, slab=True)


PTE = Source("pte", SLAB, GFP_PGTABLE_USER, 0, per=ANON_PAGES_PER_PTE)
THP_DEPOSIT = Source("pte_deposit", SLAB, GFP_PGTABLE_USER, 0, per=512)
FILE_SLABS = (_file_slab("dentry", 0, FILE_SLAB_SHARE * 0.25),
              _file_slab("ext4_inode_cache", 3, FILE_SLAB_SHARE * 0.5),
              _file_slab("radix_tree_node", 2, FILE_SLAB_SHARE * 0.25))
SKB_HEAD = Source("skbuff_head_cache", SLAB, GFP_ATOMIC | __GFP_NOWARN, 1,
                  per=8 * 4096 / (22 * 256), slab=True)
STACK_ORDER2 = Source("thread_stack", STACK, THREADINFO_GFP, THREAD_SIZE_ORDER, per=1)
STACK_VMAP = Source("thread_stack_vmap", STACK, THREADINFO_GFP, 0, per=1, count=4)
TASK_STRUCT = Source("task_struct", SLAB, GFP_KERNEL | __GFP_ACCOUNT, 3, per=3, slab=True)
FORK_PGTABLES = Source("fork_pgtables", SLAB, GFP_PGTABLE_USER, 0, per=1, count=4)

BY_KIND: dict[PageKind, tuple[Source, ...]] = {
    PageKind.ANON: (PTE,), PageKind.PINNED: (PTE,), PageKind.THP: (THP_DEPOSIT,),
    PageKind.FILE: FILE_SLABS, PageKind.NETBUF: (SKB_HEAD,),
}


def zeroed(gfp: int) -> bool:
    return bool(gfp & __GFP_ZERO)


def slab_gfp(gfp: int) -> int:
    """allocate_slab's first try at the cache's preferred order."""
    return ((gfp | __GFP_NOWARN | __GFP_NORETRY | __GFP_NOMEMALLOC | __GFP_COMP)
            & ~__GFP_RECLAIM)


@cython.cclass
class KernelMemory:
    """Owed implicit allocations per group, allocated by the group's tasks."""

    def __init__(self, m: Machine, allocator, lifetimes):
        self.m = m
        self.alloc = allocator
        self.lifetimes = lifetimes
        self.clear_s = m.config.costs.clear_page_us * 1e-6
        self.fork_sources = (STACK_VMAP if m.config.kernel.vmap_stack else STACK_ORDER2,
                             TASK_STRUCT, FORK_PGTABLES)
        self.credit: dict[str, dict[str, float]] = {}   # group -> source -> owed fraction
        self.owed: dict[str, list[tuple[Source, int]]] = {}
        self.deadline: dict[str, int] = {}
        self.stats: dict[str, list[int]] = {}       # source -> [allocated, failed, fell back]

    @cython.locals(credits=dict, c=cython.double, n=cython.Py_ssize_t, src=Source)
    def _owe(self, group: str, sources, units: float, deadline: int) -> None:
        credits = self.credit.get(group)
        if credits is None:
            credits = self.credit[group] = {}
        for src in sources:
            c = credits.get(src.name, 0.0) + units / src.per
            if c >= 1.0:
                n = int(c)
                c -= n
                self.owed.setdefault(group, []).extend([(src, deadline)] * (n * src.count))
            credits[src.name] = c

    @staticmethod
    def sources(group: WorkloadGroup, kind: PageKind) -> tuple[Source, ...] | None:
        """What a group's allocations of `kind` owe (`note`'s `sources`): None when the
        group allocates nothing implicitly."""
        return BY_KIND.get(kind, ()) if group.implicit_kernel else None

    def note(self, group: str, sources: tuple[Source, ...] | None, pages: int,
             deadline: int) -> None:
        """Group `group` allocated `pages` pages living until `deadline`, owing
        `sources` (`KernelMemory.sources` of the group and the pages' kind)."""
        if sources is not None:
            self.deadline[group] = deadline
            if sources:
                self._owe(group, sources, pages, deadline)

    def request_done(self, group: str, forks: float) -> list[tuple[Source, int]] | None:
        """A request of group `group` has ended, with `forks` forks that allocate
        implicitly (0 for a group that does not): they are owed too. Returns (and clears)
        everything the group owes, for `allocate` (None when nothing is)."""
        if forks:
            self._owe(group, self.fork_sources, forks, self.deadline.get(group, 0))
        return self.owed.pop(group, None)

    def allocate(self, task: Task, owed: list[tuple[Source, int]]):
        """Generator: the owed allocations, by the task that finished the request."""
        for src, deadline in owed:
            yield from self._allocate(task, src, deadline)

    def _allocate(self, task: Task, src: Source, deadline: int):
        stats = self.stats.setdefault(src.name, [0, 0, 0])
        order = src.order
        if src.slab and order:
            pfn = yield from self.alloc.alloc_pages(task, slab_gfp(src.gfp), order)
            if pfn < 0:
                stats[2] += 1
                order = 0
                pfn = yield from self.alloc.alloc_pages(task, src.gfp, 0)
        else:
            pfn = self.alloc.alloc_pages_nowait(task, src.gfp, order)
            if pfn == MUST_WAIT:
                pfn = yield from self.alloc.alloc_pages(task, src.gfp, order)
        if pfn < 0:
            stats[1] += 1
            return
        stats[0] += 1
        mem = self.m.mem
        mem.kind[pfn] = src.code
        mem.flags[pfn] = 0
        if zeroed(src.gfp):
            task.debt += self.clear_s * (1 << order)
        if deadline:
            # never a tick the reaper has passed
            now_tick = int(self.m.env.now / self.lifetimes.tick)
            self.lifetimes.schedule(pfn, max(deadline, now_tick + 1))

    def summary(self) -> dict:
        return {name: {"allocated": s[0], "failed": s[1], "fell_back_to_order0": s[2]}
                for name, s in sorted(self.stats.items())}
