"""Memory compaction: one `compact_zone` for direct, kcompactd, proactive and manual runs.

Follows mm/compaction.c (6.x, with the 4.4 differences as switches): deferral
(`defer_compaction`, `compaction_deferred`, `compaction_defer_reset`,
`compaction_restarting`), `compaction_suitable` with the fragmentation index and
`extfrag_threshold`, skip bits and their reset, the migrate scanner
(`isolate_migratepages[_block]`: upward, one pageblock at a time, 32-page batches,
async direct compaction only in blocks of the request's type with skip-on-failure per
order-aligned chunk) and the free scanner (`isolate_freepages[_block]`: downward from
the zone end, MOVABLE blocks only unless SYNC_FULL, async stride, `__isolate_free_page`'s
watermark check), the 5.1+ fast searches of the free lists (switch `fast_search`):
`fast_find_migrateblock` on every `isolate_migratepages` call that starts a pageblock
(`freelist_scan_limit`, the first half / eighth of the range, `reinit_migrate_pfn`) and
`fast_isolate_freepages` before the linear free scanner (round-robin `search_order`,
top quarter / top half, `move_freelist_head`/`_tail`, `fast_isolate_around`),
`compact_lock_irqsave` contention (4.4 aborts at once; 5.1+ marks contended, finishes
the block, then aborts), `__compact_finished` with its `compact_result` values, capture
of the freed page for a direct compactor (5.1+), the pcp drain when the migrate scanner
leaves an order-aligned block, and `try_to_compact_pages` / `should_compact_retry` for
the slow path. `compact_migrate_scanned` and `compact_free_scanned` count pfns as the
kernel does (a free, compound or isolated block counts all its pages; the free-list
entries a fast search reads count one each).

The scanners are loops over the page arrays with C types where the module is compiled
(setup.py): a page costs a few array reads, a block passed over (skip bit, unsuitable
type) one step of the block walk. The simulated time charged is the kernel's per-step
cost, with the lock held only for the critical section. Simplified: compound
pages (THP, high-order slab) are never migrated, CMA/ISOLATE/HIGHATOMIC do not exist,
the skip bit `test_and_set_skip` sets on a block's first isolation is set when the fast
search picks the block, and skip-bit resets clear the whole zone.
"""

from __future__ import annotations

import dataclasses
import enum
from functools import partial

import cython

from compactsim.sim import compaction_trace as ct
from compactsim.sim import tracepoint as tp
from compactsim.sim.buddy import del_page_from_free_list, find_suitable_fallback, free_one_page
from compactsim.sim import config, pageblock
from compactsim.sim.config import ContendedAbort, TraceEra
from compactsim.sim.fragmentation import extfrag_for_order, fragmentation_index
from compactsim.sim.gfp import ALLOC_CMA, ALLOC_WMARK_MASK, gfp_migratetype
from compactsim.sim.lru import del_pages_from_lru, lru_add_drain
from compactsim.sim.locks import SimLock
from compactsim.sim.machine import Machine
from compactsim.sim.page import MemMap
from compactsim.sim.migrate import MigrateMode, Migration
from compactsim.sim import page as pg
from compactsim.sim.config import PageKind
from compactsim.sim.pageblock import PAGE_ALLOC_COSTLY_ORDER, MigrateType
from compactsim.sim.pcp import free_pcppages_bulk
from compactsim.sim.page_alloc import free_to_buddy
from compactsim.sim.task import Task
from compactsim.sim.charge import settle
from compactsim.sim.histogram import Histogram
from compactsim.sim.gfp import gfp_io
from compactsim.sim.zone import WMARK_LOW, WMARK_MIN, Zone, zone_watermark_ok


class CompactPriority(enum.IntEnum):
    """enum compact_priority, include/linux/compaction.h (4.8+): lower is more aggressive."""

    SYNC_FULL = 0
    SYNC_LIGHT = 1
    ASYNC = 2


INIT_COMPACT_PRIORITY = CompactPriority.ASYNC
DEF_COMPACT_PRIORITY = CompactPriority.SYNC_LIGHT


class CompactResult(enum.IntEnum):
    """enum compact_result, include/linux/compaction.h (6.x order)."""

    NOT_SUITABLE_ZONE = 0
    SKIPPED = 1
    DEFERRED = 2
    NO_SUITABLE_PAGE = 3
    CONTINUE = 4
    COMPLETE = 5
    PARTIAL_SKIPPED = 6
    CONTENDED = 7
    SUCCESS = 8


class MigrateError(enum.IntEnum):
    """What migrate_pages() told compact_zone: 0, some pages not migrated, or -ENOMEM
    (compaction_alloc found no free page)."""

    NONE = 0
    FAILED = 1
    ENOMEM = -12


COMPACT_CLUSTER_MAX = 32
COMPACT_MAX_DEFER_SHIFT = 6
MAX_COMPACT_RETRIES = 16
# The orders, page states, flags and types the scanners test, as C constants where compiled.
MAX_ORDER = cython.declare(cython.int, config.MAX_ORDER)
PAGEBLOCK_ORDER = cython.declare(cython.int, pageblock.PAGEBLOCK_ORDER)
PAGEBLOCK_NR_PAGES = cython.declare(cython.Py_ssize_t, pageblock.PAGEBLOCK_NR_PAGES)
ALLOC = cython.declare(cython.int, pg.ALLOC)
TAIL = cython.declare(cython.int, pg.TAIL)
PG_DIRTY = cython.declare(cython.int, pg.PG_DIRTY)
PG_WRITEBACK = cython.declare(cython.int, pg.PG_WRITEBACK)
PG_LOCKED = cython.declare(cython.int, pg.PG_LOCKED)
PG_EXTRA_REF = cython.declare(cython.int, pg.PG_EXTRA_REF)
PG_MLOCKED = cython.declare(cython.int, pg.PG_MLOCKED)
PG_ISOLATED = cython.declare(cython.int, pg.PG_ISOLATED)
PG_LRU = cython.declare(cython.int, pg.PG_LRU)
PG_MOVABLE_OPS = cython.declare(cython.int, pg.PG_MOVABLE_OPS)
FILE = cython.declare(cython.int, pg.KIND_CODE[PageKind.FILE])
MIGRATE_MOVABLE = cython.declare(cython.int, MigrateType.MOVABLE)


class IsolateResult(enum.Enum):
    """isolate_migrate_t."""

    ABORT = 0
    NONE = 1
    SUCCESS = 2


# The modes and results by their kernel names. Module globals are one cached lookup in the
# compiled build, where an enum member costs Python 3.11's EnumType.__getattr__ hook at
# every use (tens of thousands per compact_memory).
MIGRATE_ASYNC = MigrateMode.ASYNC
MIGRATE_SYNC = MigrateMode.SYNC
MIGRATE_SYNC_LIGHT = MigrateMode.SYNC_LIGHT
COMPACT_COMPLETE = CompactResult.COMPLETE
COMPACT_CONTENDED = CompactResult.CONTENDED
COMPACT_CONTINUE = CompactResult.CONTINUE
COMPACT_DEFERRED = CompactResult.DEFERRED
COMPACT_NOT_SUITABLE_ZONE = CompactResult.NOT_SUITABLE_ZONE
COMPACT_NO_SUITABLE_PAGE = CompactResult.NO_SUITABLE_PAGE
COMPACT_PARTIAL_SKIPPED = CompactResult.PARTIAL_SKIPPED
COMPACT_SKIPPED = CompactResult.SKIPPED
COMPACT_SUCCESS = CompactResult.SUCCESS
ISOLATE_ABORT = IsolateResult.ABORT
ISOLATE_NONE = IsolateResult.NONE
ISOLATE_SUCCESS = IsolateResult.SUCCESS


class Trigger(enum.Enum):
    """Who asked for this compaction (for latency histograms and counters)."""

    DIRECT = "direct"
    KCOMPACTD = "kcompactd"
    PROACTIVE = "proactive"
    MANUAL = "manual"


@dataclasses.dataclass(slots=True)
class CaptureControl:
    """struct capture_control: a direct compactor's claim on the page it frees."""

    order: int
    migratetype: int
    pfn: int = -1

    @cython.locals(order=cython.int, block_mt=cython.int)
    def wants(self, order: int, block_mt: int) -> bool:
        if self.pfn >= 0 or order != self.order:
            return False
        # Do not let lower orders pollute a movable pageblock for a non-movable request.
        return not (order < PAGEBLOCK_ORDER and block_mt == MIGRATE_MOVABLE
                    and self.migratetype != MIGRATE_MOVABLE)


@cython.dataclasses.dataclass(kw_only=True)
@cython.cclass
class CompactControl:
    """struct compact_control: the state of one compact_zone run."""

    zone: Zone
    order: int                          # -1: compact the whole zone (proactive, manual)
    mode: MigrateMode                   # async or sync migration mode
    trigger: Trigger
    task: Task
    gfp: int = 0
    migratetype: int = MigrateType.MOVABLE
    alloc_flags: int = 0
    highest_zoneidx: int = 1
    whole_zone: bool = False            # scan from both ends of the zone
    ignore_skip_hint: bool = False      # scan blocks marked for skipping
    ignore_block_suitable: bool = False  # free scanner takes any block type (SYNC_FULL)
    direct_compaction: bool = False     # low latency: async restrictions apply
    proactive_compaction: bool = False
    migrate_pfn: int = 0                # next pfn of the migrate scanner
    free_pfn: int = 0                   # start of the free scanner's next block
    migratepages: list[int] = cython.dataclasses.field(default_factory=list)
    nr_migratepages: int = 0            # pages isolated for the batch being migrated
    freepages: list[int] = cython.dataclasses.field(default_factory=list)
    total_migrate_scanned: int = 0
    total_free_scanned: int = 0
    contended: bool = False             # a lock was contended in async mode
    finish_pageblock: bool = False      # scan the rest of the block after a failure
    fast_search_fail: int = 0
    search_order: int = MAX_ORDER       # fast_isolate_freepages: order to search first
    fast_start_pfn: int | None = None   # lowest block fast_find_migrateblock found (-1: used)
    capture: CaptureControl | None = None
    nr_migrated: int = 0
    nr_migrate_failed: int = 0
    migrated_from: dict[int, int] = cython.dataclasses.field(default_factory=dict)  # block -> pages

    @property
    def sync(self) -> bool:
        return self.mode != MIGRATE_ASYNC


# --- deferral (defer_compaction, compaction_deferred, compaction_defer_reset) ------------

def defer_compaction(z: Zone, order: int) -> None:
    z.compact_considered = 0
    z.compact_defer_shift = min(z.compact_defer_shift + 1, COMPACT_MAX_DEFER_SHIFT)
    if order < z.compact_order_failed:
        z.compact_order_failed = order


def compaction_deferred(z: Zone, order: int) -> bool:
    if order < z.compact_order_failed:
        return False
    z.compact_considered += 1
    limit = 1 << z.compact_defer_shift
    if z.compact_considered >= limit:
        z.compact_considered = limit
        return False
    return True


def compaction_defer_reset(z: Zone, order: int, alloc_success: bool) -> None:
    if alloc_success:
        z.compact_considered = 0
        z.compact_defer_shift = 0
    if order >= z.compact_order_failed:
        z.compact_order_failed = order + 1


def compaction_restarting(z: Zone, order: int) -> bool:
    if order < z.compact_order_failed:
        return False
    return (z.compact_defer_shift == COMPACT_MAX_DEFER_SHIFT
            and z.compact_considered >= 1 << z.compact_defer_shift)


# --- suitability (compaction_suitable, fragmentation_index) ----------------------------

def compact_gap(order: int) -> int:
    return 2 << order


def compaction_suitable_wmark(z: Zone, order: int, highest_zoneidx: int, wmark_target: int,
                          low_for_costly: bool = True) -> bool:
    mark = z.wmark_pages(WMARK_LOW if order > PAGE_ALLOC_COSTLY_ORDER or not low_for_costly
                         else WMARK_MIN)
    return zone_watermark_ok(z, 0, mark + compact_gap(order), highest_zoneidx, ALLOC_CMA,
                             wmark_target)


def compaction_suitable(z: Zone, order: int, highest_zoneidx: int, extfrag_threshold: int,
                        all_orders_fragindex: bool = False) -> CompactResult:
    """CONTINUE if compaction can help: enough free targets, and for costly orders (all
    orders in 4.4) a fragmentation index above `extfrag_threshold`."""
    if not compaction_suitable_wmark(z, order, highest_zoneidx, z.free_pages,
                                 not all_orders_fragindex):
        return COMPACT_SKIPPED
    if order > PAGE_ALLOC_COSTLY_ORDER or all_orders_fragindex:
        index = fragmentation_index(z.nr_free, order)
        if 0 <= index <= extfrag_threshold:
            return COMPACT_NOT_SUITABLE_ZONE
    return COMPACT_CONTINUE


@cython.locals(cc=CompactControl)
def compact_scanners_met(cc: CompactControl) -> bool:
    return cc.free_pfn >> PAGEBLOCK_ORDER <= cc.migrate_pfn >> PAGEBLOCK_ORDER


def reset_cached_positions(z: Zone) -> None:
    z.compact_cached_migrate_pfn[0] = z.compact_cached_migrate_pfn[1] = z.zone_start_pfn
    z.compact_cached_free_pfn = z.zone_end_pfn - PAGEBLOCK_NR_PAGES


def reset_isolation_suitable(m: Machine, z: Zone) -> None:
    """__reset_isolation_suitable: clear the zone's skip bits, rewind the scanners."""
    first = z.zone_start_pfn >> PAGEBLOCK_ORDER
    last = z.zone_end_pfn >> PAGEBLOCK_ORDER
    m.pageblocks.skip[first:last] = bytes(last - first)
    z.compact_blockskip_flush = False
    reset_cached_positions(z)


@cython.locals(cc=CompactControl)
def freelist_scan_limit(cc: CompactControl) -> int:
    return (COMPACT_CLUSTER_MAX >> min(63, cc.fast_search_fail)) + 1


def fragmentation_score_zone(z: Zone) -> int:
    return extfrag_for_order(z.nr_free, PAGEBLOCK_ORDER)


def fragmentation_score_wmark(proactiveness: int, low: bool) -> int:
    wmark_low = max(100 - proactiveness, 5)
    return wmark_low if low else min(wmark_low + 10, 100)


# --- the scanners' per-block checks ------------------------------------------------------

@cython.ccall
@cython.returns(cython.bint)
@cython.locals(skip=cython.int, ignore_skip_hint=cython.bint)
def isolation_suitable(skip, ignore_skip_hint):
    """A block whose skip bit (`skip`) is set is passed over unless the run ignores it."""
    return ignore_skip_hint or not skip


@cython.ccall
@cython.returns(cython.bint)
@cython.locals(head=cython.int, block_mt=cython.int, async_direct=cython.bint,
               migratetype=cython.int)
def suitable_migration_source(head, block_mt, async_direct, migratetype):
    """A block whose first page has state `head` and whose label is `block_mt` may give
    pages: not a huge page (pageblock_skip_persistent); async direct compaction only
    takes blocks of the request's type (MOVABLE for a movable request)."""
    if ALLOC + PAGEBLOCK_ORDER <= head <= ALLOC + MAX_ORDER:
        return False
    if not async_direct:
        return True
    if migratetype == MIGRATE_MOVABLE:
        return block_mt == MIGRATE_MOVABLE
    return block_mt == migratetype


@cython.ccall
@cython.returns(cython.bint)
@cython.locals(head=cython.int, block_mt=cython.int, ignore_block_suitable=cython.bint)
def suitable_migration_target(head, block_mt, ignore_block_suitable):
    """A block may take migrated pages unless it is a free pageblock (don't split it), and
    (unless SYNC_FULL ignores the type) if it is MOVABLE."""
    if head < 64 and (head & 15) >= PAGEBLOCK_ORDER:
        return False
    if ignore_block_suitable:
        return True
    return block_mt == MIGRATE_MOVABLE


# --- the migrate scanner's per-page checks ---------------------------------------------

@cython.ccall
@cython.returns(cython.bint)
@cython.locals(s=cython.int, f=cython.int, kind=cython.int, async_migrate=cython.bint,
               unevictable=cython.bint, lru=cython.bint)
def isolation_candidate(s, f, kind, async_migrate, unevictable):
    """isolate_migratepages_block's tests of one page head (pstate `s`, flags `f`): an
    order-0 page on the LRU and not isolated, not pinned beyond its mapping unless page
    cache, in async modes neither under writeback nor dirty and locked (the mapping
    needs a trylock), not mlocked unless `compact_unevictable_allowed`; or a non-LRU
    movable page (movable_ops) neither isolated nor locked."""
    if s != ALLOC:
        return False
    lru = (f & PG_LRU) != 0 and (f & PG_ISOLATED) == 0
    if f & PG_EXTRA_REF and kind != FILE:
        lru = False
    if async_migrate and (f & PG_WRITEBACK or (f & PG_DIRTY and f & PG_LOCKED)):
        lru = False
    if not unevictable and f & PG_MLOCKED:
        lru = False
    return lru or ((f & PG_MOVABLE_OPS) != 0 and (f & (PG_ISOLATED | PG_LOCKED)) == 0)


# --- the free scanner's per-page work ---------------------------------------------------

@cython.ccall
@cython.returns(cython.Py_ssize_t)
@cython.locals(pstate=cython.uchar[:], pfn=cython.Py_ssize_t, order=cython.int,
               n=cython.Py_ssize_t, p=cython.Py_ssize_t)
def split_map_pages(pstate, freepages: list[int], pfn, order):
    """split_map_pages for one isolated free block: its pages become order-0 targets on
    `freepages`; returns how many."""
    n = 1 << order
    for p in range(pfn, pfn + n):
        pstate[p] = ALLOC
        freepages.append(p)
    return n


@cython.locals(m=Machine, flags=cython.uchar[:], pfn=cython.Py_ssize_t, f=cython.int)
def isolate_pages(m: Machine, pfns: list[int]) -> None:
    """The isolation of the pages isolate_migratepages_block took: each is PG_isolated,
    and those on an LRU leave it (folio_isolate_lru -> lruvec_del_folio)."""
    flags = m.mem.flags_v
    on_lru = []
    for page in pfns:               # the list's own int objects, passed on as they are
        pfn = page
        f = flags[pfn]
        if f & PG_LRU:
            on_lru.append(page)
        flags[pfn] = f | PG_ISOLATED
    del_pages_from_lru(m, on_lru)


@cython.cclass
class Compaction:
    """compact_zone and its entry points for one machine (an extension type where
    compiled, sim/compaction.pxd)."""

    def __init__(self, m: Machine, migration: Migration, reclaim, lifetimes=None):
        self.m = m
        self.env = m.env
        self.k = m.config.kernel
        self.costs = m.config.costs
        self.tun = m.config.tunables
        self.migration = migration
        self.reclaim = reclaim
        self.lifetimes = lifetimes
        self.latency = {t.value: Histogram() for t in Trigger}
        self.results: dict[str, int] = {}       # "trigger/result" -> runs
        self.wasted_migrations = 0              # blocks migrated out of and left unfree
        # Trace formats and compact_result names as 4.4 printed them (before 4.8's
        # compaction priorities) or as 4.8+ does.
        self.era44 = m.config.kernel.trace_format is TraceEra.V4_4

    # --- tracing -------------------------------------------------------------------

    def tracing(self, event: str) -> bool:
        """Whether tracepoint `event` is enabled. The loops run per batch or block ask it
        before they gather a trace's fields (a C call where compiled)."""
        trace = self.m.trace
        return trace is not None and trace.is_enabled(event)

    def _trace(self, task: Task, event: str, fmt, *args) -> None:
        """Emit `event` with the fields `fmt(*args)` formats, if the event is enabled (the
        text is only formatted then)."""
        if self.tracing(event):
            trace = self.m.trace
            assert trace is not None            # tracing() said so
            trace.emit(self.env.now, task.cpu, task.comm, task.pid, event, fmt(*args))

    # --- locks ---------------------------------------------------------------------

    @cython.locals(cc=CompactControl, lock=SimLock)
    def compact_lock_irqsave(self, cc: CompactControl, lock):
        """Generator returning False if the run must abort now. The
        task's CPU time so far passes before it reaches the lock, not inside the hold."""
        if cc.task.debt > 0:
            yield from settle(self.env, cc.task)
        if cc.mode == MIGRATE_ASYNC and not cc.contended:
            if lock.trylock():
                return True
            cc.contended = True
            if self.k.contended_abort is ContendedAbort.IMMEDIATE:
                return False
        elif lock.trylock():
            return True
        yield lock.lock()
        return True

    def compact_trylock(self, cc: CompactControl, lock) -> bool:
        """compact_lock_irqsave's common case, asked before its generator is made: nothing
        to settle, and the lock taken at once. A failed trylock changes nothing, so the
        generator then tries again as it would have."""
        return cc.task.debt <= 0 and lock.trylock()

    # --- the migrate scanner ----------------------------------------------------------

    @cython.locals(cc=CompactControl)
    def update_cached_migrate(self, cc: CompactControl, pfn: int) -> None:
        if cc.ignore_skip_hint:
            return
        z = cc.zone
        pfn = (pfn + PAGEBLOCK_NR_PAGES - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
        if pfn > z.compact_cached_migrate_pfn[0]:
            z.compact_cached_migrate_pfn[0] = pfn
        if cc.sync and pfn > z.compact_cached_migrate_pfn[1]:
            z.compact_cached_migrate_pfn[1] = pfn

    @cython.locals(cc=CompactControl, low=cython.Py_ssize_t, fast_find_block=cython.bint,
                   nr=cython.Py_ssize_t,
                   order=cython.int, skip=cython.uchar[:], mts=cython.uchar[:],
                   pstate=cython.uchar[:], ignore_skip_hint=cython.bint,
                   async_direct=cython.bint, migratetype=cython.int,
                   free_pfn=cython.Py_ssize_t, zone_start=cython.Py_ssize_t,
                   block_end=cython.Py_ssize_t, skipped=cython.Py_ssize_t,
                   unsuitable_end=cython.Py_ssize_t)
    def next_migrate_block(self, cc: CompactControl, low: int, fast_find_block: bool
                           ) -> tuple[int, int, int]:
        """isolate_migratepages' walk over the blocks from `low`: a block starting with
        its skip bit set (isolation_suitable; not the block the fast search just picked)
        or unfit as a source (suitable_migration_source, which moves the cached position
        past it) costs one step. Returns (pfn to scan from, the end of its block, blocks
        passed over); the end lies beyond cc.free_pfn when no block is left."""
        nr = PAGEBLOCK_NR_PAGES
        order = PAGEBLOCK_ORDER
        pageblocks = self.m.pageblocks
        skip, mts, pstate = pageblocks.skip_v, pageblocks.mt_v, self.m.mem.pstate_v
        ignore_skip_hint = cc.ignore_skip_hint
        async_direct = cc.mode == MIGRATE_ASYNC and cc.direct_compaction
        migratetype = cc.migratetype
        free_pfn = cc.free_pfn
        zone_start = cc.zone.zone_start_pfn
        block_end = (low & ~(nr - 1)) + nr
        skipped = 0
        unsuitable_end = -1
        while block_end <= free_pfn:
            if ((low & (nr - 1) == 0 or low == zone_start) and not fast_find_block
                    and not isolation_suitable(skip[low >> order], ignore_skip_hint)):
                pass
            elif not suitable_migration_source(pstate[low & ~(nr - 1)], mts[low >> order],
                                               async_direct, migratetype):
                unsuitable_end = block_end
            else:
                break
            skipped += 1
            fast_find_block = False
            low = block_end
            block_end += nr
        if skipped:
            cc.migrate_pfn = low
        if unsuitable_end >= 0:
            self.update_cached_migrate(cc, unsuitable_end)
        return low, block_end, skipped

    @cython.locals(cc=CompactControl, block_start=cython.Py_ssize_t, low=cython.Py_ssize_t,
                   nr=cython.Py_ssize_t,
                   order=cython.int, skip=cython.uchar[:], mts=cython.uchar[:],
                   pstate=cython.uchar[:], ignore_skip_hint=cython.bint,
                   ignore_block_suitable=cython.bint)
    def next_free_block(self, cc: CompactControl, block_start: int, low: int) -> int:
        """isolate_freepages' walk down over the blocks from `block_start`: a block unfit
        as a target (suitable_migration_target) or with its skip bit set
        (isolation_suitable) costs one step. Returns the first block at or above `low` to
        scan, or a pfn below `low` when none is left."""
        nr = PAGEBLOCK_NR_PAGES
        order = PAGEBLOCK_ORDER
        pageblocks = self.m.pageblocks
        skip, mts, pstate = pageblocks.skip_v, pageblocks.mt_v, self.m.mem.pstate_v
        ignore_skip_hint = cc.ignore_skip_hint
        ignore_block_suitable = cc.ignore_block_suitable
        while block_start >= low:
            if suitable_migration_target(pstate[block_start], mts[block_start >> order],
                                         ignore_block_suitable) \
                    and isolation_suitable(skip[block_start >> order], ignore_skip_hint):
                break
            block_start -= nr
        return block_start

    @cython.locals(mem=MemMap, low=cython.Py_ssize_t, end=cython.Py_ssize_t, pstate=cython.uchar[:],
                   flags=cython.uchar[:], kinds=cython.uchar[:], async_migrate=cython.bint,
                   unevictable=cython.bint, skip_on_failure=cython.bint, limited=cython.bint,
                   shift=cython.int, s=cython.int, want=cython.Py_ssize_t,
                   heads=cython.Py_ssize_t, last_heads=cython.Py_ssize_t,
                   jumped=cython.Py_ssize_t, stop=cython.Py_ssize_t, chunk=cython.Py_ssize_t,
                   chunk_end=cython.Py_ssize_t, first_fail=cython.Py_ssize_t,
                   p=cython.Py_ssize_t, visited=cython.Py_ssize_t, scanned=cython.Py_ssize_t,
                   cc=CompactControl)
    def isolate_migratepages_block(self, cc: CompactControl, low: int, end: int
                                   ) -> tuple[int, int, int]:
        """Isolate up to COMPACT_CLUSTER_MAX pages from [low, end); returns (next pfn,
        pfns scanned as `compact_migrate_scanned` counts them, page heads visited). Plain:
        changes the pages, the LRU and cc; never waits.

        One pass over the pfns: tail pages are stepped over, a head is a candidate if
        `migrate_candidate` says so. Async direct compaction skips on failure
        (`skip_on_failure`): a chunk of cc.order with any failure yields nothing, and the
        scan jumps from the chunk's first failure to its end. Without the limit
        (`finish_pageblock`, a contended lock) the whole range is taken."""
        mem = self.m.mem
        pstate = mem.pstate_v
        flags = mem.flags_v
        kinds = mem.kind_v
        async_migrate = cc.mode == MIGRATE_ASYNC or (
            cc.mode == MIGRATE_SYNC_LIGHT and not self.k.sync_light_isolates_writeback)
        unevictable = self.tun.compact_unevictable_allowed
        skip_on_failure = cc.mode == MIGRATE_ASYNC and cc.direct_compaction and cc.order > 0
        shift = min(cc.order, PAGEBLOCK_ORDER) if skip_on_failure else 0
        want = COMPACT_CLUSTER_MAX - len(cc.migratepages)
        limited = not cc.finish_pageblock and not cc.contended
        taken: list[int] = []
        heads = 0           # page heads visited
        last_heads = 0      # page heads visited up to the last page taken
        jumped = 0          # pfns skip_on_failure jumped over
        stop = -1
        chunk = low
        while chunk < end and stop < 0:
            chunk_end = min(((chunk >> shift) + 1) << shift, end) if skip_on_failure else end
            first_fail = -1
            if skip_on_failure:
                for p in range(chunk, chunk_end):
                    s = pstate[p]
                    if s != TAIL and s >= 64 and not isolation_candidate(
                            s, flags[p], kinds[p], async_migrate, unevictable):
                        first_fail = p
                        break
            if first_fail >= 0:
                for p in range(chunk, chunk_end):
                    if pstate[p] != TAIL:
                        heads += 1
                jumped += chunk_end - (first_fail + 1)
            else:
                for p in range(chunk, chunk_end):
                    s = pstate[p]
                    if s == TAIL:
                        continue
                    heads += 1
                    if s >= 64 and isolation_candidate(s, flags[p], kinds[p], async_migrate,
                                                     unevictable):
                        if limited and len(taken) == want:
                            # More candidates than the batch holds: stop after its last.
                            stop = taken[len(taken) - 1] + 1
                            break
                        taken.append(p)
                        last_heads = heads
            chunk = chunk_end
        if stop < 0:
            stop = end
            visited = heads
        else:
            visited = last_heads
        # The kernel counts every pfn it steps over (a free or compound page counts all
        # its pages), except the rest of an order-aligned chunk skip_on_failure jumps.
        scanned = stop - low - jumped
        isolate_pages(self.m, taken)
        cc.migratepages.extend(taken)
        self.m.events["compact_isolated"] += len(taken)
        return stop, scanned, visited

    @cython.locals(cc=CompactControl)
    def isolate_migratepages(self, cc: CompactControl):
        """Generator: pick the next source block (asking fast_find_migrateblock first,
        5.1+) and isolate from it; returns IsolateResult. Takes the lruvec lock as
        compact_lock_irqsave does."""
        z = cc.zone
        if self.k.fast_search and self.fast_find_wanted(cc):
            low = yield from self.fast_find_migrateblock(cc)
        else:
            low = cc.migrate_pfn
        low = max(low, z.zone_start_pfn)
        # The fast search marked the block skipped: don't let that skip it.
        fast_find_block = low != cc.migrate_pfn and not cc.fast_search_fail
        low, block_end, skipped_blocks = self.next_migrate_block(cc, low, fast_find_block)
        cc.task.debt += skipped_blocks * 5e-9
        if block_end > cc.free_pfn:
            return ISOLATE_NONE
        node = self.m.nodes[z.node_id]
        ok = self.compact_trylock(cc, node.lru_lock)
        if not ok:
            ok = yield from self.compact_lock_irqsave(cc, node.lru_lock)
        if not ok:
            return ISOLATE_ABORT
        start = low
        stop, scanned, visited = self.isolate_migratepages_block(cc, low, block_end)
        cc.total_migrate_scanned += scanned
        hold = (visited * self.costs.migrate_scan_page_ns * 1e-9
                + len(cc.migratepages) * self.costs.isolate_page_ns * 1e-9)
        yield self.env.timeout(hold)        # the critical section, lock held
        node.lru_lock.unlock()
        if self.tracing("mm_compaction_isolate_migratepages"):
            self._trace(cc.task, "mm_compaction_isolate_migratepages",
                        ct.fmt_isolate, start, stop, scanned, len(cc.migratepages))
        if stop >= block_end and (not cc.migratepages or cc.finish_pageblock):
            if not cc.ignore_skip_hint:
                self.m.pageblocks.skip[start >> PAGEBLOCK_ORDER] = 1
            self.update_cached_migrate(cc, stop)
        cc.migrate_pfn = stop
        if cc.contended and self.k.contended_abort is ContendedAbort.FINISH_BLOCK \
                and stop >= block_end:
            return ISOLATE_ABORT if not cc.migratepages else ISOLATE_SUCCESS
        return ISOLATE_SUCCESS if cc.migratepages else ISOLATE_NONE

    # --- the 5.1+ fast searches of the free lists ----------------------------------------

    def _rotate(self, head: int, pfn: int, first: bool) -> None:
        """move_freelist_head (`pfn` becomes the first entry) / move_freelist_tail (`pfn`
        becomes the last): move the list head, which rotates the circular list."""
        mem = self.m.mem
        mem.list_del(head)
        if first:
            mem.list_add_tail(pfn, head)
        else:
            mem.list_add(pfn, head)

    @cython.locals(cc=CompactControl, lock=SimLock)
    def _zone_locked(self, cc: CompactControl, seconds: float):
        """spin_lock_irqsave(&zone->lock) for `seconds` (the fast searches wait for it)."""
        lock = cc.zone.lock
        if cc.task.debt > 0:
            yield from settle(self.env, cc.task)
        if not lock.trylock():
            yield lock.lock()
        yield self.env.timeout(seconds)
        lock.unlock()

    @cython.locals(pfn=cython.Py_ssize_t)
    def fast_find_wanted(self, cc: CompactControl) -> bool:
        """fast_find_migrateblock's opening tests, asked before the search is started (a
        generator each time): no search when skip hints are ignored, while finishing a
        block, away from a pageblock's start, for orders up to PAGE_ALLOC_COSTLY_ORDER,
        or for direct compaction of a non-movable request."""
        pfn = cc.migrate_pfn
        z = cc.zone
        return not (cc.ignore_skip_hint or cc.finish_pageblock
                    or (pfn != z.zone_start_pfn and pfn & (PAGEBLOCK_NR_PAGES - 1))
                    or cc.order <= PAGE_ALLOC_COSTLY_ORDER
                    or (cc.direct_compaction and cc.migratetype != MIGRATE_MOVABLE))

    @cython.locals(mem=MemMap, cc=CompactControl, pfn=cython.Py_ssize_t, nxt=cython.int[:],
                   skip=cython.uchar[:],
                   distance=cython.Py_ssize_t, high_pfn=cython.Py_ssize_t,
                   limit=cython.Py_ssize_t, nr_scanned=cython.Py_ssize_t, found=cython.bint,
                   order=cython.int, head=cython.Py_ssize_t, p=cython.Py_ssize_t)
    def fast_find_migrateblock(self, cc: CompactControl):
        """fast_find_migrateblock (5.1+), generator returning the pfn to scan from: a
        block holding a free page of order PAGE_ALLOC_COSTLY_ORDER..order-1 in the first
        half of the range (the first eighth once the scanner moved), taken from the
        MOVABLE free lists within freelist_scan_limit entries; else cc.migrate_pfn, or
        after a failure the lowest block an earlier search found (reinit_migrate_pfn).
        Asked only when `fast_find_wanted` (its opening tests) holds."""
        pfn = cc.migrate_pfn
        z = cc.zone
        mem = self.m.mem
        nxt = mem.nxt_v
        skip = self.m.pageblocks.skip_v
        distance = (cc.free_pfn - cc.migrate_pfn) >> 1
        if cc.migrate_pfn != z.zone_start_pfn:
            distance >>= 2
        high_pfn = (cc.migrate_pfn + distance) & ~(PAGEBLOCK_NR_PAGES - 1)
        limit = freelist_scan_limit(cc)
        nr_scanned = 0
        found = False
        order = cc.order - 1
        while order >= PAGE_ALLOC_COSTLY_ORDER and not found and nr_scanned < limit:
            if z.nr_free_v[order]:
                head = z.free_head_v[order, MIGRATE_MOVABLE]
                p = nxt[head]
                while p != head:
                    nr_scanned += 1
                    if nr_scanned > limit:
                        self._rotate(head, p, first=False)
                        break
                    if p < high_pfn and not skip[p >> PAGEBLOCK_ORDER]:
                        self._rotate(head, p, first=False)
                        if cc.fast_start_pfn != -1:
                            cc.fast_start_pfn = p if cc.fast_start_pfn is None \
                                else min(cc.fast_start_pfn, p)
                        pfn = max(p & ~(PAGEBLOCK_NR_PAGES - 1), z.zone_start_pfn)
                        # test_and_set_skip: other compactors leave the block alone.
                        skip[pfn >> PAGEBLOCK_ORDER] = 1
                        cc.fast_search_fail = 0
                        found = True
                        break
                    p = nxt[p]
            order -= 1
        cc.total_migrate_scanned += nr_scanned
        if nr_scanned:
            yield from self._zone_locked(cc, nr_scanned * self.costs.free_scan_page_ns * 1e-9)
        if not found:
            cc.fast_search_fail += 1
            # reinit_migrate_pfn: once, restart the linear scan where free pages were seen.
            if cc.fast_start_pfn is not None and cc.fast_start_pfn != -1:
                cc.migrate_pfn = pfn = cc.fast_start_pfn
                cc.fast_start_pfn = -1
        return pfn

    # --- the free scanner ---------------------------------------------------------------

    def isolate_free_page(self, z: Zone, pfn: int, order: int, mt: int) -> bool:
        """__isolate_free_page: take a free block if the zone stays above MIN + 2^order."""
        mark = z.wmark_pages(WMARK_MIN) + (1 << order)
        if not zone_watermark_ok(z, 0, mark, 0, ALLOC_CMA):
            return False
        del_page_from_free_list(z, pfn, order, mt)
        if order >= PAGEBLOCK_ORDER - 1:
            self.m.pageblocks.change_pageblock_range(pfn & ~(PAGEBLOCK_NR_PAGES - 1),
                                                     max(order, PAGEBLOCK_ORDER),
                                                     MigrateType.MOVABLE)
        return True

    @cython.locals(cc=CompactControl, start=cython.Py_ssize_t, end=cython.Py_ssize_t,
                   stride=cython.Py_ssize_t,
                   pstate=cython.uchar[:], p=cython.Py_ssize_t, cursor=cython.Py_ssize_t,
                   s=cython.int, order=cython.int, n=cython.Py_ssize_t,
                   isolated=cython.Py_ssize_t, scanned=cython.Py_ssize_t,
                   scanned_to=cython.Py_ssize_t, early=cython.bint, stopped=cython.bint)
    def isolate_freepages_block(self, cc: CompactControl, start: int, end: int, stride: int
                                ) -> tuple[int, int, int, bool]:
        """Take free blocks from [start, end) as order-0 targets, stepping `stride` pfns
        between free pages.

        Returns (next pfn, pfns scanned as `compact_free_scanned` counts them: one per
        step plus the rest of each isolated block, pages isolated, stopped early).
        Simplified: a compound page does not shift the stride's grid."""
        z = cc.zone
        pstate = self.m.mem.pstate_v
        cursor = start
        isolated = 0
        scanned = 0
        scanned_to = end
        early = False
        stopped = False
        p = start
        while p < end:
            s = pstate[p]
            if s >= 64:
                p += stride
                continue
            order = s & 15
            scanned += (p - cursor) // stride + 1
            if not self.isolate_free_page(z, p, order, s >> 4):
                scanned_to = p
                early = stopped = True
                break
            n = split_map_pages(pstate, cc.freepages, p, order)
            scanned += n - 1
            isolated += n
            cursor = p + n - 1 + stride
            if len(cc.freepages) >= cc.nr_migratepages:
                scanned_to = p + n
                early = scanned_to < end
                stopped = True
                break
            p = cursor
        if not stopped and cursor < end:
            scanned += (end - 1 - cursor) // stride + 1
        return scanned_to, max(scanned, 1), isolated, early

    @cython.locals(cc=CompactControl)
    def fast_isolate_around(self, cc: CompactControl, pfn: int):
        """fast_isolate_around (5.1+): sweep the block of the page the fast search took."""
        if len(cc.freepages) >= cc.nr_migratepages:
            return
        if cc.direct_compaction and cc.mode == MIGRATE_ASYNC:
            return
        z = cc.zone
        start = max(pfn & ~(PAGEBLOCK_NR_PAGES - 1), z.zone_start_pfn)
        end = min(start + PAGEBLOCK_NR_PAGES, z.zone_end_pfn)
        nxt, scanned, isolated, _ = self.isolate_freepages_block(cc, start, end, 1)
        cc.total_free_scanned += scanned
        self.m.events["compact_isolated"] += isolated
        yield from self._zone_locked(cc, max(scanned - isolated, 1)
                                     * self.costs.free_scan_page_ns * 1e-9
                                     + isolated * self.costs.isolate_page_ns * 1e-9)
        if self.tracing("mm_compaction_isolate_freepages"):
            self._trace(cc.task, "mm_compaction_isolate_freepages",
                        ct.fmt_isolate, start, nxt, scanned, isolated)
        if nxt == end and not cc.ignore_skip_hint:
            self.m.pageblocks.skip[start >> PAGEBLOCK_ORDER] = 1

    @cython.locals(cc=CompactControl)
    def next_search_order(self, cc: CompactControl, order: int) -> int:
        """Orders round-robin down from cc.search_order; -1 once the search wrapped."""
        order -= 1
        if order < 0:
            order = cc.order - 1
        if order == cc.search_order:
            cc.search_order -= 1
            if cc.search_order < 0:
                cc.search_order = cc.order - 1
            return -1
        return order

    @cython.locals(mem=MemMap, cc=CompactControl, prv=cython.int[:], limit=cython.Py_ssize_t,
                   scan_start=cython.bint,
                   distance=cython.Py_ssize_t, low_pfn=cython.Py_ssize_t,
                   min_pfn=cython.Py_ssize_t, page=cython.Py_ssize_t, highest=cython.Py_ssize_t,
                   nr_scanned=cython.Py_ssize_t, total_isolated=cython.Py_ssize_t,
                   order=cython.int, head=cython.Py_ssize_t, order_scanned=cython.Py_ssize_t,
                   high_pfn=cython.Py_ssize_t, last=cython.Py_ssize_t, p=cython.Py_ssize_t,
                   n=cython.Py_ssize_t)
    def fast_isolate_freepages(self, cc: CompactControl):
        """fast_isolate_freepages (5.1+), a generator: walk the MOVABLE free lists below
        cc.order from their tails for a page in the top quarter between the scanners (the
        highest in the top half if none), within half of freelist_scan_limit entries
        (256 when the free scanner starts); isolate it whole and sweep its block. On a
        starting scan that found nothing, move the free scanner to the highest block seen
        (direct compaction: the top half's bottom). Asked only for cc.order > 0: the
        kernel's version returns at once without an order to search below."""
        z = cc.zone
        mem = self.m.mem
        prv = mem.prv_v
        limit = max(1, freelist_scan_limit(cc) >> 1)
        scan_start = cc.free_pfn >= z.compact_init_free_pfn
        if scan_start:
            limit = PAGEBLOCK_NR_PAGES >> 1
        distance = cc.free_pfn - cc.migrate_pfn
        low_pfn = (cc.free_pfn - (distance >> 2)) & ~(PAGEBLOCK_NR_PAGES - 1)
        min_pfn = (cc.free_pfn - (distance >> 1)) & ~(PAGEBLOCK_NR_PAGES - 1)
        low_pfn = max(low_pfn, min_pfn)
        cc.search_order = min(cc.order - 1, cc.search_order)
        page = -1
        highest = -1
        nr_scanned = total_isolated = 0
        order = cc.search_order
        while page < 0 and order >= 0:
            if z.nr_free_v[order]:
                head = z.free_head_v[order, MIGRATE_MOVABLE]
                order_scanned = 0
                high_pfn = -1
                last = head
                p = prv[head]
                while p != head:
                    order_scanned += 1
                    nr_scanned += 1
                    last = p
                    if p >= highest:
                        highest = max(p & ~(PAGEBLOCK_NR_PAGES - 1), z.zone_start_pfn)
                    if p >= low_pfn:
                        cc.fast_search_fail = 0
                        cc.search_order = order
                        page = p
                        break
                    if p >= min_pfn and p > high_pfn:
                        high_pfn = p
                        limit >>= 1          # shorten the scan once there is a candidate
                    if order_scanned >= limit:
                        break
                    p = prv[p]
                if page < 0 and high_pfn >= 0:
                    page = last = high_pfn
                if last != head:
                    self._rotate(head, last, first=True)
                if page >= 0:
                    if self.isolate_free_page(z, page, order, MIGRATE_MOVABLE):
                        n = split_map_pages(mem.pstate_v, cc.freepages, page, order)
                        nr_scanned += n - 1
                        total_isolated += n
                        self.m.events["compact_isolated"] += n
                    else:
                        order = cc.search_order + 1     # abort the search
                        page = -1
                if len(cc.freepages) >= cc.nr_migratepages:
                    break
                if order_scanned >= limit:
                    limit = max(1, limit >> 1)
            order = self.next_search_order(cc, order)
        if nr_scanned:
            yield from self._zone_locked(cc, (nr_scanned - total_isolated)
                                         * self.costs.free_scan_page_ns * 1e-9
                                         + total_isolated * self.costs.isolate_page_ns * 1e-9)
        if self.tracing("mm_compaction_fast_isolate_freepages"):
            self._trace(cc.task, "mm_compaction_fast_isolate_freepages",
                        ct.fmt_isolate, min_pfn, cc.free_pfn, nr_scanned, total_isolated)
        if page < 0:
            cc.fast_search_fail += 1
            if scan_start:
                if highest >= min_pfn:
                    page = cc.free_pfn = highest
                elif cc.direct_compaction:
                    page = cc.free_pfn = min_pfn
        if highest >= 0 and highest >= z.compact_cached_free_pfn:
            z.compact_cached_free_pfn = highest - PAGEBLOCK_NR_PAGES
        cc.total_free_scanned += nr_scanned
        if page >= 0:
            yield from self.fast_isolate_around(cc, page)

    @cython.locals(cc=CompactControl)
    def isolate_freepages(self, cc: CompactControl):
        """Generator: the fast search first (5.1+), else walk blocks down from
        cc.free_pfn until there are enough targets."""
        if self.k.fast_search and cc.order > 0:
            yield from self.fast_isolate_freepages(cc)
            if cc.freepages:
                return
        z = cc.zone
        block_start = cc.free_pfn & ~(PAGEBLOCK_NR_PAGES - 1)
        isolate_start = cc.free_pfn
        low = (cc.migrate_pfn & ~(PAGEBLOCK_NR_PAGES - 1)) + PAGEBLOCK_NR_PAGES
        stride = COMPACT_CLUSTER_MAX if cc.mode == MIGRATE_ASYNC else 1
        skipped = 0
        while True:
            first = self.next_free_block(cc, block_start, low)
            if first != block_start:
                skipped += (block_start - first) >> PAGEBLOCK_ORDER
                block_start = isolate_start = first
            if block_start < low:
                break
            block_end = min(block_start + PAGEBLOCK_NR_PAGES, z.zone_end_pfn)
            cc.task.debt += skipped * 5e-9
            skipped = 0
            ok = self.compact_trylock(cc, z.lock)
            if not ok:
                ok = yield from self.compact_lock_irqsave(cc, z.lock)
            if not ok:
                cc.free_pfn = isolate_start
                return
            begin = max(isolate_start, block_start)
            nxt, scanned, isolated, early = self.isolate_freepages_block(cc, begin, block_end,
                                                                         stride)
            cc.total_free_scanned += scanned
            # Cost per pfn stepped on; an isolated block's pages cost their isolation.
            hold = (max(scanned - isolated, 1) * self.costs.free_scan_page_ns * 1e-9
                    + isolated * self.costs.isolate_page_ns * 1e-9)
            yield self.env.timeout(hold)    # the critical section, zone->lock held
            z.lock.unlock()
            self.m.events["compact_isolated"] += isolated
            if self.tracing("mm_compaction_isolate_freepages"):
                self._trace(cc.task, "mm_compaction_isolate_freepages",
                            ct.fmt_isolate, begin, nxt, scanned, isolated)
            if nxt >= block_end and not cc.ignore_skip_hint:
                self.m.pageblocks.skip[block_start >> PAGEBLOCK_ORDER] = 1
                if block_start - PAGEBLOCK_NR_PAGES < z.compact_cached_free_pfn:
                    z.compact_cached_free_pfn = max(block_start - PAGEBLOCK_NR_PAGES,
                                                    z.zone_start_pfn)
            isolate_start = nxt
            if len(cc.freepages) >= cc.nr_migratepages:
                if isolate_start >= block_end:
                    isolate_start = block_start - PAGEBLOCK_NR_PAGES
                break
            # 4.4 stops at a contended lock; 5.1+ takes it and goes on (compact_lock_irqsave).
            if early or (cc.contended
                         and self.k.contended_abort is ContendedAbort.IMMEDIATE):
                break
            stride = 1 if isolated else min(COMPACT_CLUSTER_MAX, stride << 1)
            block_start -= PAGEBLOCK_NR_PAGES
            isolate_start = block_start
        cc.free_pfn = max(isolate_start, z.zone_start_pfn)
        cc.task.debt += skipped * 5e-9

    @cython.locals(cc=CompactControl)
    def compaction_alloc(self, cc: CompactControl):
        """Generator: one order-0 target, refilling through the free scanner."""
        if not cc.freepages:
            # 4.4 gives up on targets once contended; 5.1+ finishes the block first.
            if not (cc.contended and self.k.contended_abort is ContendedAbort.IMMEDIATE):
                yield from self.isolate_freepages(cc)
            if not cc.freepages:
                return -1
        return cc.freepages.pop()

    @cython.locals(cc=CompactControl)
    def release_freepages(self, cc: CompactControl) -> int:
        """Give unused targets back; returns the highest pfn returned (or 0)."""
        z = cc.zone
        high = 0
        for pfn in cc.freepages:
            free_to_buddy(self.m, z, pfn, 0)
            high = max(high, pfn)
        cc.freepages.clear()
        return high

    # --- finishing --------------------------------------------------------------------

    @cython.locals(cc=CompactControl)
    def compact_finished(self, cc: CompactControl) -> CompactResult:
        """compact_finished: trace __compact_finished's verdict, then read
        NO_SUITABLE_PAGE as CONTINUE."""
        ret = self._compact_finished(cc)
        if self.tracing("mm_compaction_finished"):
            self._trace(cc.task, "mm_compaction_finished",
                        ct.fmt_suitable, cc.zone.node_id, cc.zone.name, cc.order, ret, self.era44)
        return COMPACT_CONTINUE if ret == COMPACT_NO_SUITABLE_PAGE else ret

    @cython.locals(cc=CompactControl)
    def _compact_finished(self, cc: CompactControl) -> CompactResult:
        """__compact_finished."""
        z = cc.zone
        if compact_scanners_met(cc):
            reset_cached_positions(z)
            if cc.direct_compaction:
                z.compact_blockskip_flush = True
            return COMPACT_COMPLETE if cc.whole_zone else COMPACT_PARTIAL_SKIPPED
        if cc.proactive_compaction:
            if self.reclaim is not None and not self.reclaim.kswapd_sleeping[z.node_id]:
                return COMPACT_PARTIAL_SKIPPED
            low = fragmentation_score_wmark(self.tun.compaction_proactiveness, True)
            ret = COMPACT_CONTINUE if fragmentation_score_zone(z) > low \
                else COMPACT_SUCCESS
        elif cc.order < 0:
            return COMPACT_CONTINUE
        elif cc.migrate_pfn & (PAGEBLOCK_NR_PAGES - 1):
            return COMPACT_CONTINUE
        else:
            if cc.capture is not None and cc.capture.pfn >= 0:
                return COMPACT_SUCCESS
            ret = COMPACT_NO_SUITABLE_PAGE
            era44 = not self.k.compact_priorities
            if not era44 or zone_watermark_ok(z, cc.order, z.wmark_pages(WMARK_LOW),
                                              cc.highest_zoneidx, cc.alloc_flags):
                for order in range(cc.order, MAX_ORDER + 1):
                    if z.nr_free_mt_v[order, cc.migratetype]:
                        ret = COMPACT_SUCCESS
                        break
                    if find_suitable_fallback(z, order, cc.migratetype, True)[0] != -1:
                        ret = COMPACT_SUCCESS
                        break
        if cc.contended:
            ret = COMPACT_CONTENDED
        return ret

    # --- compact_zone ----------------------------------------------------------------------

    @cython.locals(cc=CompactControl)
    def compact_zone(self, cc: CompactControl):
        """Generator returning a CompactResult: the one compaction driver."""
        z = cc.zone
        m = self.m
        task = cc.task
        if cc.order >= 0 and not cc.proactive_compaction:
            # "Allocation can already succeed": 4.8+ (compact_zone, 6.x
            # compaction_suit_allocation_order) at the caller's watermark,
            # cc->alloc_flags & ALLOC_WMARK_MASK (MIN for the slow path and kcompactd);
            # 4.4's __compaction_suitable at low_wmark_pages for every caller.
            mark = WMARK_LOW if not self.k.compact_priorities \
                else cc.alloc_flags & ALLOC_WMARK_MASK
            if zone_watermark_ok(z, cc.order, z.wmark_pages(mark), cc.highest_zoneidx,
                                 cc.alloc_flags):
                return COMPACT_SUCCESS
            ret = compaction_suitable(z, cc.order, cc.highest_zoneidx,
                                      self.tun.extfrag_threshold,
                                      not self.k.compact_priorities)
            self._trace(task, "mm_compaction_suitable",
                        ct.fmt_suitable, z.node_id, z.name, cc.order, ret, self.era44)
            if ret != COMPACT_CONTINUE:
                return COMPACT_SKIPPED
        if compaction_restarting(z, max(cc.order, 0)):
            reset_isolation_suitable(m, z)
        start_pfn, end_pfn = z.zone_start_pfn, z.zone_end_pfn
        if cc.whole_zone:
            cc.migrate_pfn = start_pfn
            cc.free_pfn = (end_pfn - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
        else:
            cc.migrate_pfn = z.compact_cached_migrate_pfn[1 if cc.sync else 0]
            cc.free_pfn = z.compact_cached_free_pfn
            if not start_pfn <= cc.free_pfn < end_pfn:
                cc.free_pfn = z.compact_cached_free_pfn = (end_pfn - 1) & ~(PAGEBLOCK_NR_PAGES - 1)
            if not start_pfn <= cc.migrate_pfn < end_pfn:
                cc.migrate_pfn = start_pfn
                z.compact_cached_migrate_pfn[0] = z.compact_cached_migrate_pfn[1] = start_pfn
            if cc.migrate_pfn <= z.compact_init_migrate_pfn:
                cc.whole_zone = True
        self._trace(task, "mm_compaction_begin",
                    ct.fmt_begin, start_pfn, cc.migrate_pfn, cc.free_pfn, end_pfn, cc.sync)
        # lru_add_drain(): the local CPU's add batch (here the compacting task's) reaches
        # the LRU, so the scanner can isolate those pages (4.4 migrate_prep_local).
        lru_add_drain(m, task.lru_add)
        # migrate_pages' callbacks: compaction_alloc for targets, the sources' free
        get_target = partial(self.compaction_alloc, cc)
        free_sources = self._free_sources(cc)
        last_migrated = 0
        ret = COMPACT_CONTINUE
        while True:
            ret = self.compact_finished(cc)
            if ret != COMPACT_CONTINUE:
                break
            start_of_batch = cc.migrate_pfn
            iso = yield from self.isolate_migratepages(cc)
            if iso is ISOLATE_ABORT:
                ret = COMPACT_CONTENDED
                self._putback(cc)
                break
            if iso is ISOLATE_SUCCESS:
                last_migrated = max(start_of_batch, cc.migratepages[0]) if cc.migratepages \
                    else last_migrated
                err = yield from self._migrate(cc, get_target, free_sources)
                if err is MigrateError.ENOMEM and not compact_scanners_met(cc):
                    ret = COMPACT_CONTENDED
                    break
                if err and cc.migrate_pfn & (PAGEBLOCK_NR_PAGES - 1) and not cc.ignore_skip_hint \
                        and not cc.finish_pageblock and cc.mode < MIGRATE_SYNC:
                    cc.finish_pageblock = True
                    if cc.order == PAGEBLOCK_ORDER:
                        last_migrated = 0
                if cc.capture is not None and cc.capture.pfn >= 0:
                    ret = COMPACT_SUCCESS
                    break
            elif cc.contended:
                ret = COMPACT_CONTENDED
                break
            if cc.migrate_pfn & (PAGEBLOCK_NR_PAGES - 1) == 0:
                cc.finish_pageblock = False
            # Flush freed pages so they merge once the scanner leaves an order block.
            if cc.order > 0 and last_migrated:
                current = cc.migrate_pfn & ~((1 << cc.order) - 1)
                if last_migrated < current:
                    self._drain_local(cc)
                    last_migrated = 0
                    if cc.capture is not None and cc.capture.pfn >= 0:
                        ret = COMPACT_SUCCESS
                        break
        if cc.freepages:
            high = self.release_freepages(cc)
            if high > z.compact_cached_free_pfn and not cc.ignore_skip_hint:
                z.compact_cached_free_pfn = high & ~(PAGEBLOCK_NR_PAGES - 1)
        m.events["compact_migrate_scanned"] += cc.total_migrate_scanned
        m.events["compact_free_scanned"] += cc.total_free_scanned
        self._trace(task, "mm_compaction_end",
                    ct.fmt_end, start_pfn, cc.migrate_pfn, cc.free_pfn, end_pfn, cc.sync, ret,
                    self.era44)
        return ret

    @cython.locals(cc=CompactControl)
    def _drain_local(self, cc: CompactControl) -> None:
        """lru_add_drain_cpu_zone (4.4: lru_add_drain_cpu, drain_local_pages): the local
        add batch, then the zone's pcp list of the compacting CPU."""
        z = cc.zone
        lru_add_drain(self.m, cc.task.lru_add)
        if z.pcp is None:
            return
        z.capture = cc.capture
        try:
            cpu = cc.task.cpu
            free_pcppages_bulk(z, cpu, z.pcp.counts[cpu], free_one_page, self.m.pageblocks,
                               self.m.policy)
        finally:
            z.capture = None

    @cython.locals(cc=CompactControl, events=dict, migrated_from=dict, z=Zone, m=Machine)
    def _free_sources(self, cc: CompactControl):
        """The callback migrate_pages frees moved sources through (made once per run)."""
        z = cc.zone
        m = self.m
        events = m.events
        migrated_from = cc.migrated_from
        capture = cc.capture

        @cython.locals(pfn=cython.Py_ssize_t, block=cython.Py_ssize_t, pfns=list,
                       last=cython.Py_ssize_t, run=cython.Py_ssize_t, trace_free=cython.bint)
        def free_sources(pfns: list[int]) -> None:
            # The source pages go back through the buddy allocator in this task's
            # context, where a waiting capture may claim what they merge into.
            trace_free = self.tracing("mm_page_free")
            events["pgfree"] += len(pfns)
            last = -1               # the block of the run of pages being counted
            run = 0
            z.capture = capture
            try:
                for pfn in pfns:
                    block = pfn >> PAGEBLOCK_ORDER
                    if block != last:
                        if run:
                            migrated_from[last] = migrated_from.get(last, 0) + run
                        last, run = block, 0
                    run += 1
                    # free_pages_prepare traces the source's free; the target came from
                    # the free scanner, which traces no allocation (as in the kernel).
                    if trace_free:
                        self._trace(cc.task, "mm_page_free",
                                    tp.fmt_mm_page_free, tp.pfn_to_page(pfn), pfn, 0)
                    free_to_buddy(m, z, pfn, 0)
            finally:
                z.capture = None
            if run:
                migrated_from[last] = migrated_from.get(last, 0) + run
        return free_sources

    @cython.locals(cc=CompactControl, pages=list)
    def _migrate(self, cc: CompactControl, get_target, free_sources):
        """Generator: migrate cc.migratepages with compact_zone's target and free callbacks;
        returns the MigrateError."""
        pages = cc.migratepages
        cc.migratepages = []
        cc.nr_migratepages = len(pages)
        succeeded, failed, leftover, enomem = yield from self.migration.migrate_pages(
            cc.task, pages, cc.mode, get_target, free_sources, cc.freepages)
        cc.nr_migrated += succeeded
        cc.nr_migrate_failed += failed
        if self.tracing("mm_migrate_pages"):
            self._trace(cc.task, "mm_migrate_pages",
                        ct.fmt_migrate_pages, succeeded, failed, cc.mode, self.k.migrate_batching)
        if self.tracing("mm_compaction_migratepages"):
            self._trace(cc.task, "mm_compaction_migratepages", ct.fmt_migratepages, succeeded, failed)
        if leftover:
            self._putback_pages(cc, leftover)
        if enomem:
            return MigrateError.ENOMEM
        return MigrateError.FAILED if failed else MigrateError.NONE

    @cython.locals(cc=CompactControl)
    def _putback(self, cc: CompactControl) -> None:
        pages = list(cc.migratepages)
        cc.migratepages.clear()
        self._putback_pages(cc, pages)

    @cython.locals(cc=CompactControl)
    def _putback_pages(self, cc: CompactControl, pages: list[int]) -> None:
        self._free_sources(cc)([pfn for pfn in pages if not self.migration.putback(pfn)])
        cc.task.debt += self.migration.putback_cost(pages)

    # --- entry points ----------------------------------------------------------------------

    def block_free(self, block: int) -> bool:
        """The pageblock lies in a free buddy block of pageblock order or more (its own,
        or a larger one it merged into with a neighbour)."""
        pstate = self.m.mem.pstate
        start = block << PAGEBLOCK_ORDER
        for order in range(PAGEBLOCK_ORDER, MAX_ORDER + 1):
            s = pstate[start & ~((1 << order) - 1)]
            if s < 64 and (s & 15) >= order:
                return True
        return False

    @cython.locals(cc=CompactControl)
    def count_wasted(self, cc: CompactControl) -> int:
        """Pageblocks this run migrated pages out of that are not free at pageblock order
        once it ends (its sources went straight to the buddy lists and the pcp lists of
        its CPU were drained), not counting the block whose page it captured."""
        captured = cc.capture.pfn >> PAGEBLOCK_ORDER if cc.capture is not None \
            and cc.capture.pfn >= 0 else -1
        return sum(1 for block in cc.migrated_from
                   if block != captured and not self.block_free(block))

    def kswapd_sleep_reset(self, nid: int) -> None:
        """kswapd_try_to_sleep: clear skip hints a direct compactor asked to flush."""
        for z in self.m.nodes[nid].zones:
            if z.compact_blockskip_flush:
                reset_isolation_suitable(self.m, z)

    @cython.locals(cc=CompactControl)
    def run(self, cc: CompactControl):
        """compact_zone with the run's latency and result recorded by trigger."""
        start = self.env.now + cc.task.debt
        ret = yield from self.compact_zone(cc)
        self.latency[cc.trigger.value].record(self.env.now + cc.task.debt - start)
        self.wasted_migrations += self.count_wasted(cc)
        key = f"{cc.trigger.value}/{ct.status_name(ret, self.era44)}"
        self.results[key] = self.results.get(key, 0) + 1
        return ret

    def compact_zone_order(self, task: Task, z: Zone, gfp: int, order: int, alloc_flags: int,
                           priority: CompactPriority):
        """Generator: (CompactResult, captured pfn or -1) for one zone."""
        full = priority == CompactPriority.SYNC_FULL
        capture = (CaptureControl(order, gfp_migratetype(gfp)) if self.k.compaction_capture
                   else None)
        cc = CompactControl(zone=z, order=order, gfp=gfp, migratetype=gfp_migratetype(gfp),
                            mode=MIGRATE_ASYNC if priority == CompactPriority.ASYNC
                            else MIGRATE_SYNC_LIGHT, trigger=Trigger.DIRECT, task=task,
                            alloc_flags=alloc_flags, direct_compaction=True, whole_zone=full,
                            ignore_skip_hint=full, ignore_block_suitable=full, capture=capture)
        ret = yield from self.run(cc)
        pfn = capture.pfn if capture is not None else -1
        return ret, pfn

    def try_to_compact_pages(self, task: Task, gfp: int, order: int, alloc_flags: int,
                             priority: CompactPriority):
        """Generator: (best CompactResult, captured pfn or -1) over the zonelist."""
        from compactsim.sim.page_alloc import zonelist
        if self.era44:
            mode = MIGRATE_ASYNC if priority == CompactPriority.ASYNC \
                else MIGRATE_SYNC_LIGHT
            self._trace(task, "mm_compaction_try_to_compact_pages",
                        ct.fmt_try_to_compact_pages_4_4, order, gfp, int(mode))
        else:
            self._trace(task, "mm_compaction_try_to_compact_pages",
                        ct.fmt_try_to_compact_pages, order, gfp, int(priority))
        if not gfp_io(gfp):
            return COMPACT_SKIPPED, -1
        rc = COMPACT_SKIPPED
        for z in zonelist(self.m, task.node):
            if priority > CompactPriority.SYNC_FULL and compaction_deferred(z, order):
                self._trace_defer(task, "mm_compaction_deferred", z, order)
                rc = max(rc, COMPACT_DEFERRED)
                continue
            status, pfn = yield from self.compact_zone_order(task, z, gfp, order, alloc_flags,
                                                             priority)
            rc = max(rc, status)
            if pfn >= 0:
                return COMPACT_SUCCESS, pfn
            if status == COMPACT_SUCCESS:
                compaction_defer_reset(z, order, False)
                self._trace_defer(task, "mm_compaction_defer_reset", z, order)
                break
            if priority != CompactPriority.ASYNC and status in (COMPACT_COMPLETE,
                                                                 COMPACT_PARTIAL_SKIPPED):
                defer_compaction(z, order)
                self._trace_defer(task, "mm_compaction_defer_compaction", z, order)
        return rc, -1

    def _trace_defer(self, task: Task, event: str, z: Zone, order: int) -> None:
        self._trace(task, event, ct.fmt_defer, z.node_id, z.name, order,
                    z.compact_order_failed, z.compact_considered, z.compact_defer_shift)

    def direct_compact(self, task: Task, gfp: int, order: int, alloc_flags: int,
                       priority: CompactPriority):
        """__alloc_pages_direct_compact: generator returning (pfn or -1, CompactResult)."""
        from compactsim.sim.page_alloc import get_page_from_freelist
        m = self.m
        memalloc, task.memalloc = task.memalloc, True
        try:
            result, pfn = yield from self.try_to_compact_pages(task, gfp, order, alloc_flags,
                                                               priority)
        finally:
            task.memalloc = memalloc
        if result == COMPACT_SKIPPED:
            return -1, result
        m.events["compact_stall"] += 1
        if pfn < 0:
            out = get_page_from_freelist(m, task, gfp, order, alloc_flags)
            pfn = out.pfn
        if pfn >= 0:
            z = m.zone_of(pfn)
            z.compact_blockskip_flush = False
            compaction_defer_reset(z, order, True)
            self._trace_defer(task, "mm_compaction_defer_reset", z, order)
            m.events["compact_success"] += 1
            return pfn, result
        m.events["compact_fail"] += 1
        return -1, result

    def compaction_zonelist_suitable(self, task: Task, order: int) -> bool:
        """Would reclaim make compaction worth trying (free + reclaimable / order)?"""
        from compactsim.sim.page_alloc import zonelist
        from compactsim.sim.reclaim import reclaimable_pages
        zram = self.reclaim.zram if self.reclaim is not None else None
        room = zram is not None and zram.has_room(1)
        for z in zonelist(self.m, task.node):
            available = z.free_pages + reclaimable_pages(self.m, z.node_id, room) // max(order, 1)
            if compaction_suitable_wmark(z, order, 1, available):
                return True
        return False

    def should_compact_retry(self, state, order: int, result: CompactResult, task: Task) -> bool:
        """should_compact_retry (4.7+): retry after SUCCESS a few times, else escalate the
        priority down to SYNC_LIGHT (costly) or SYNC_FULL."""
        if not order or not self.k.compact_priorities:
            return False
        if result == COMPACT_SKIPPED:
            return self.compaction_zonelist_suitable(task, order)
        if result == COMPACT_SUCCESS:
            max_retries = MAX_COMPACT_RETRIES // 4 if order > PAGE_ALLOC_COSTLY_ORDER \
                else MAX_COMPACT_RETRIES
            state.compaction_retries += 1
            if state.compaction_retries <= max_retries:
                return True
        floor = CompactPriority.SYNC_LIGHT if order > PAGE_ALLOC_COSTLY_ORDER \
            else CompactPriority.SYNC_FULL
        if state.compact_priority > floor:
            state.compact_priority = CompactPriority(state.compact_priority - 1)
            state.compaction_retries = 0
            return True
        return False
