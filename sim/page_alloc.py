"""The page allocator's fast path and freeing: zonelist walk, watermark checks, pcp.

Follows mm/page_alloc.c at 6.1: `get_page_from_freelist` (zonelist order, the
`ALLOC_NOFRAGMENT` pass (`alloc_flags_nofragment`), watermark check, `rmqueue` through the pcp lists for
order 0 or the buddy lists), the boosted-watermark kswapd wake on the way out of
`rmqueue`, `free_unref_page` / `__free_pages_ok`, `drain_all_pages`, and the kmem
tracepoints. Nothing here waits: callers (sim/slowpath.py, the workload) take
`zone->lock` and turn the returned work into simulated time.
"""

from __future__ import annotations


import cython

from compactsim.sim import tracepoint as tp
from compactsim.sim.buddy import free_one_page, rmqueue, rmqueue_smallest_pages
from compactsim.sim.gfp import ALLOC_KSWAPD, ALLOC_NOFRAGMENT, ALLOC_WMARK_LOW, gfp_migratetype
from compactsim.sim.machine import Machine
from compactsim.sim import page as pg
from compactsim.sim import pageblock
from compactsim.sim.pageblock import MigrateType
from compactsim.sim.pcp import (PerCpuPages, drain_zone_pages, free_pcppages_bulk, pcp_pop,
                                rmqueue_bulk)
from compactsim.sim.task import Task
from compactsim.sim.page import MemMap
from compactsim.sim.zone import WMARK_LOW, Zone, zone_watermark_for_flags, zone_watermark_ok

# The states, orders and types the per-page loops use, as C constants where compiled.
ALLOC = cython.declare(cython.int, pg.ALLOC)
PCP = cython.declare(cython.int, pg.PCP)
PAGEBLOCK_ORDER = cython.declare(cython.int, pageblock.PAGEBLOCK_ORDER)
MIGRATE_PCPTYPES = cython.declare(cython.int, pageblock.MIGRATE_PCPTYPES)
MIGRATE_MOVABLE = cython.declare(cython.int, MigrateType.MOVABLE)

# What an allocation or free did, for its cost.
WORK_PCP = 0        # per-cpu list only
WORK_REFILL = 1     # pcp refill or drain: a batch under zone->lock
WORK_BUDDY = 2      # one buddy operation under zone->lock


@cython.dataclasses.dataclass
@cython.cclass
class Outcome:
    """Result of one attempt: the page (or -1), its zone and the work done."""

    pfn: int = -1
    zone: Zone | None = None
    work: int = WORK_PCP
    batch: int = 0            # pages moved in a refill or drain
    boosted_wake: bool = False


def zonelist(m: Machine, node: int, highest_zoneidx: int = 1) -> list[Zone]:
    """Zones in fallback order: the local node's, highest first, then the other nodes'."""
    zones = m.zonelists[node]
    if highest_zoneidx >= 1:
        return zones
    return [z for z in zones if z.zone_idx <= highest_zoneidx]


def alloc_flags_nofragment(m: Machine, z: Zone) -> int:
    """alloc_flags_nofragment (5.0+): ALLOC_NOFRAGMENT when the preferred zone is Normal.
    On a NUMA machine only if the node's DMA32 zone is populated; on UMA the kernel does
    not look ("assume on UMA that if Normal is populated then so is DMA32"), so a machine
    whose only zone is Normal gets it too: its first pass falls back only to whole
    pageblocks, and `get_page_from_freelist` retries without the flag."""
    if not m.config.kernel.alloc_nofragment or z.zone_idx != 1:
        return 0
    if len(m.nodes) > 1 and len(m.nodes[z.node_id].zones) < 2:
        return 0
    return ALLOC_NOFRAGMENT


def _trace(m: Machine, task: Task, event: str, text: str) -> None:
    assert m.trace is not None          # callers check that the event is enabled
    m.trace.emit(m.env.now, task.cpu, task.comm, task.pid, event, text)


def trace_extfrag(m: Machine):
    """The buddy policy's extfrag hook: mm_page_alloc_extfrag lines."""
    def on_extfrag(z, pfn, order, fallback_order, start_mt, fallback_mt, change):
        if m.trace is not None and m.trace.is_enabled("mm_page_alloc_extfrag"):
            m.trace.emit(m.env.now, 0, "<...>", 0, "mm_page_alloc_extfrag",
                         tp.fmt_mm_page_alloc_extfrag(tp.pfn_to_page(pfn), pfn, order,
                                                      fallback_order, PAGEBLOCK_ORDER,
                                                      start_mt, fallback_mt, change))
    return on_extfrag


def rmqueue_zone(m: Machine, z: Zone, task: Task, order: int, mt: int, alloc_flags: int,
                 out: Outcome) -> int:
    """rmqueue(): order 0 through this CPU's pcp list, else the buddy lists."""
    if order == 0 and z.pcp is not None and mt < MIGRATE_PCPTYPES:
        pfn = pcp_pop(z, task.cpu, mt)
        if pfn < 0:
            out.work = WORK_REFILL
            out.batch = rmqueue_bulk(z, task.cpu, mt, alloc_flags, m.policy, rmqueue,
                                     rmqueue_smallest_pages)
            pfn = pcp_pop(z, task.cpu, mt)
        return pfn
    out.work = WORK_BUDDY
    pfn = rmqueue(z, order, mt, alloc_flags, m.policy)
    if pfn >= 0 and m.trace is not None and m.trace.is_enabled("mm_page_alloc_zone_locked"):
        _trace(m, task, "mm_page_alloc_zone_locked",
               tp.fmt_mm_page_alloc_zone_locked(tp.pfn_to_page(pfn), pfn, order, mt, False))
    return pfn


@cython.locals(m=Machine, z=Zone, flags=cython.int, mark=cython.Py_ssize_t)
def get_page_from_freelist(m: Machine, task: Task, gfp: int, order: int, alloc_flags: int,
                           highest_zoneidx: int = 1) -> Outcome:
    """Walk the zonelist for a zone that passes its watermark and has the page."""
    out = Outcome()
    mt = gfp_migratetype(gfp)
    zones = zonelist(m, task.node, highest_zoneidx)
    nofrag = alloc_flags_nofragment(m, zones[0]) if alloc_flags & ALLOC_WMARK_LOW else 0
    flags = alloc_flags | nofrag
    while True:
        for z in zones:
            if flags & ALLOC_NOFRAGMENT and z.node_id != task.node:
                break      # ALLOC_NOFRAGMENT stops at the first remote node
            mark = zone_watermark_for_flags(z, flags)
            if not zone_watermark_ok(z, order, mark, highest_zoneidx, flags):
                continue
            pfn = rmqueue_zone(m, z, task, order, mt, flags, out)
            if pfn >= 0:
                out.pfn, out.zone = pfn, z
                # rmqueue(): only a caller that may wake kswapd clears the bit and wakes it
                if z.boosted and flags & ALLOC_KSWAPD:
                    z.boosted = False
                    out.boosted_wake = True
                m.events[z.pgalloc_key] += 1 << order
                return out
        if not flags & ALLOC_NOFRAGMENT:
            return out
        flags &= ~ALLOC_NOFRAGMENT


@cython.locals(z=Zone, pcp=PerCpuPages, k=cython.Py_ssize_t, pfn=cython.Py_ssize_t,
               pstate=cython.uchar[:], mem=MemMap, lst=list, pfns=list, mt=cython.int)
def rmqueue_pcplist_bulk(m: Machine, task: Task, gfp: int, n: int) -> list[int]:
    """Up to `n` order-0 pages straight off this CPU's list of the first zone, when that
    zone passes its LOW watermark: what n fast-path calls that all hit the per-cpu list
    would do (free pages do not change, so one watermark check holds for all)."""
    z = m.zonelists[task.node][0]
    pcp = z.pcp
    mt = gfp_migratetype(gfp)
    if pcp is None or mt >= MIGRATE_PCPTYPES:
        return []
    lst = pcp.lists[task.cpu][mt]
    k = min(n, len(lst))
    if not k or not zone_watermark_ok(z, 0, z.wmark_pages(WMARK_LOW), 1, ALLOC_WMARK_LOW):
        return []
    pfns = lst[-k:]
    del lst[-k:]
    pfns.reverse()
    pcp.counts[task.cpu] -= k
    mem = m.mem
    pstate = mem.pstate_v
    for pfn in pfns:
        pstate[pfn] = ALLOC
    m.events[z.pgalloc_key] += k
    if m.trace is not None and m.trace.is_enabled("mm_page_alloc"):
        for pfn in pfns:
            trace_alloc(m, task, pfn, 0, gfp)
    return pfns


def trace_alloc(m: Machine, task: Task, pfn: int, order: int, gfp: int) -> None:
    if m.trace is not None and m.trace.is_enabled("mm_page_alloc"):
        page = tp.pfn_to_page(pfn) if pfn >= 0 else None
        _trace(m, task, "mm_page_alloc",
               tp.fmt_mm_page_alloc(page, max(pfn, 0), order, gfp_migratetype(gfp),
                                    tp.gfp_flags_to_str(gfp)))


def free_unref_page(m: Machine, task: Task, z: Zone, pfn: int) -> Outcome:
    """free_unref_page: one order-0 page onto this CPU's pcp list (draining a batch from
    the cold end once the list is over `high`), or to the buddy lists without pcp."""
    locked = free_unref_page_commit(m, task, [pfn])
    return locked[0] if locked else Outcome(zone=z)


@cython.locals(pfn=cython.Py_ssize_t, zstart=cython.Py_ssize_t, zend=cython.Py_ssize_t,
               cpu=cython.Py_ssize_t, count=cython.Py_ssize_t, high=cython.Py_ssize_t,
               mt=cython.int, pindex=cython.int, block_mt=bytearray, mem=MemMap, z=Zone,
               pcp=PerCpuPages)
def free_unref_page_commit(m: Machine, task: Task, pfns: list[int]) -> list[Outcome]:
    """free_unref_page_commit for each order-0 page of `pfns`, in order: the page goes on
    this CPU's pcp list of its pageblock's type (MOVABLE for the types without one), and
    once the list holds `high` pages `batch` go back to the buddy lists
    (free_pcppages_bulk); a zone without pcp lists takes the page at once. Returns the
    work done under zone->lock: one Outcome per drain or buddy free."""
    mem = m.mem
    block_mt = m.pageblocks.mt
    cpu = task.cpu
    locked: list[Outcome] = []
    z = pcp = None
    lists: list[list[int]] = []
    zstart = zend = count = high = 0
    for page in pfns:               # `page` the list's own int object, queued as is
        pfn = page
        if not zstart <= pfn < zend:
            if pcp is not None:
                pcp.counts[cpu] = count
            z = m.zone_of(pfn)
            zstart, zend = z.zone_start_pfn, z.zone_start_pfn + z.spanned_pages
            pcp = z.pcp
            if pcp is not None:
                lists, count, high = pcp.lists[cpu], pcp.counts[cpu], pcp.high
        mt = block_mt[pfn >> PAGEBLOCK_ORDER]
        if pcp is None:
            assert z is not None            # set with pcp above
            free_to_buddy(m, z, pfn, 0, mt)
            locked.append(Outcome(zone=z, work=WORK_BUDDY))
            continue
        mem.kind_v[pfn] = 0
        mem.flags_v[pfn] = 0
        mem.expire_v[pfn] = 0
        pindex = mt if mt < MIGRATE_PCPTYPES else MIGRATE_MOVABLE
        mem.pstate_v[pfn] = PCP + pindex
        lists[pindex].append(page)
        count += 1
        if count < high:
            continue
        pcp.counts[cpu] = count
        freed = free_pcppages_bulk(z, cpu, pcp.batch, free_one_page, m.pageblocks, m.policy,
                                   pindex=pindex)
        count = pcp.counts[cpu]
        if m.trace is not None and m.trace.is_enabled("mm_page_pcpu_drain"):
            for p, pmt in freed:
                _trace(m, task, "mm_page_pcpu_drain",
                       tp.fmt_mm_page_pcpu_drain(tp.pfn_to_page(p), p, 0, pmt))
        locked.append(Outcome(zone=z, work=WORK_REFILL, batch=len(freed)))
    if pcp is not None:
        pcp.counts[cpu] = count
    return locked


@cython.locals(z=Zone)
def free_pages(m: Machine, task: Task, pfn: int, order: int) -> Outcome:
    """__free_pages: order 0 through the pcp lists, larger orders straight to the buddy
    lists."""
    z = m.zone_of(pfn)
    m.events["pgfree"] += 1 << order
    if m.trace is not None and m.trace.is_enabled("mm_page_free"):
        _trace(m, task, "mm_page_free", tp.fmt_mm_page_free(tp.pfn_to_page(pfn), pfn, order))
    if order == 0:
        return free_unref_page(m, task, z, pfn)
    free_to_buddy(m, z, pfn, order)
    return Outcome(zone=z, work=WORK_BUDDY)


@cython.locals(m=Machine)
def free_unref_page_list(m: Machine, task: Task, pfns: list[int]) -> list[Outcome]:
    """free_unref_page_list (release_pages): order-0 pages freed as one batch, traced as
    mm_page_free_batched and mm_page_free. Returns the work done under zone->lock (drains,
    buddy frees); the caller pays `pcp_free_ns` per page for the rest."""
    m.events["pgfree"] += len(pfns)
    trace = m.trace
    traced = trace is not None and trace.is_enabled("mm_page_free")
    batched = trace is not None and trace.is_enabled("mm_page_free_batched")
    if not (traced or batched):
        return free_unref_page_commit(m, task, pfns)
    locked = []
    for pfn in pfns:                # each page's lines before those of the drain it causes
        if batched:
            _trace(m, task, "mm_page_free_batched",
                   tp.fmt_mm_page_free_batched(tp.pfn_to_page(pfn), pfn))
        if traced:
            _trace(m, task, "mm_page_free", tp.fmt_mm_page_free(tp.pfn_to_page(pfn), pfn, 0))
        locked.extend(free_unref_page_commit(m, task, [pfn]))
    return locked


def free_to_buddy(m: Machine, z: Zone, pfn: int, order: int, mt: int | None = None) -> int:
    """__free_one_page with the era's rules: under 6.10 freelist hygiene a merge with a
    buddy of another type relabels the buddy's block. `mt` defaults to the block's type."""
    if mt is None:
        mt = m.pageblocks.get_pageblock_migratetype(pfn)
    return free_one_page(z, pfn, order, mt, False,
                         m.pageblocks if m.policy.freelist_hygiene() else None)


def drain_all_pages(m: Machine, zone: Zone | None = None) -> int:
    """Every CPU's pcp pages back to the buddy lists (of one zone, or all)."""
    zones = [zone] if zone is not None else m.zones
    return sum(drain_zone_pages(z, free_one_page, m.pageblocks, m.policy) for z in zones)
