"""sim/compaction.py on small hand-built zones.

Each test builds a 64 MiB machine (one Normal zone, 32 pageblocks, the memmap in the top
half of the last one), allocates every page at order 0 and then frees or keeps each pfn
with an owner kind and page flags, the way Workload.setup_page leaves them (LRU pages on
their node's list). `compact_zone` then runs inside the machine's SimPy environment.
Expected values follow mm/compaction.c (4.4 and 6.x):
scanner geometry and `__compact_finished`, `compact_lock_irqsave` contention (4.4: abort;
5.1+: mark, finish the block, abort), deferral arithmetic, `compaction_suitable`.
"""

from __future__ import annotations

import numpy as np
import pytest
from rig import Rig, block_is_free, make_rig, populate

from compactsim.sim.buddy import move_to_free_list
from compactsim.sim.compaction import (
    COMPACT_CLUSTER_MAX,
    COMPACT_MAX_DEFER_SHIFT,
    CompactControl,
    CompactPriority,
    CompactResult,
    Trigger,
    compact_gap,
    compact_scanners_met,
    compaction_defer_reset,
    compaction_deferred,
    compaction_restarting,
    compaction_suitable,
    defer_compaction,
    fragmentation_score_zone,
)
from compactsim.sim.config import PageKind, apply_overrides, config_from_dict
from compactsim.sim.fragmentation import fragmentation_index
from compactsim.sim.gfp import (
    ALLOC_NO_WATERMARKS,
    ALLOC_WMARK_MIN,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
)
from compactsim.sim.lru import del_page_from_lru, lru_list_for
from compactsim.sim.machine import LRU_ANON, LRU_FILE, Machine
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page import ALLOC, KIND_CODE, PG_ISOLATED, PG_LRU
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, MigrateType
from compactsim.sim.run import run
from compactsim.sim.scenarios import load_scenario
from compactsim.sim.tracepoint import TraceBuffer
from compactsim.sim.zone import WMARK_LOW, WMARK_MIN

ANON = KIND_CODE[PageKind.ANON]
FILE = KIND_CODE[PageKind.FILE]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]
HOLD = 1e-3                      # seconds another task keeps a lock in the contention tests


# --- rig (tests/sim/rig.py) -------------------------------------------------------------

def release(r: Rig, pfn: int) -> None:
    """The owner frees an order-0 page (Workload.release_page)."""
    flags = r.m.mem.flags[pfn]
    if flags & PG_LRU:
        del_page_from_lru(r.m, pfn, 1, lru_list_for(r.m.mem.kind[pfn], flags))
    free_pages(r.m, r.task, pfn, 0)


def run_compaction(r: Rig, cc: CompactControl) -> CompactResult:
    proc = r.env.process(r.compaction.run(cc))
    r.env.run(until=proc)
    return proc.value


def hold_lock(env, lock, seconds: float):
    """Another task: take `lock` at once and keep it for `seconds`."""
    assert lock.trylock()
    yield env.timeout(seconds)
    lock.unlock()


def kinds(m: Machine) -> np.ndarray:
    return np.frombuffer(m.mem.kind, dtype=np.uint8)


def pages_of(m: Machine, code: int, first_block: int = 0, last_block: int | None = None) -> int:
    k = kinds(m)
    lo = first_block * PAGEBLOCK_NR_PAGES
    hi = len(k) if last_block is None else last_block * PAGEBLOCK_NR_PAGES
    return int((k[lo:hi] == code).sum())


def free_pageblocks(z) -> int:
    """Pageblocks wholly inside free buddy blocks."""
    return sum(n << (o - PAGEBLOCK_ORDER) for o, n in enumerate(z.nr_free) if o >= PAGEBLOCK_ORDER)


def assert_settled(m: Machine) -> None:
    """After a run: nothing left isolated, and the LRU lists match their sizes and flags."""
    flags = np.frombuffer(m.mem.flags, dtype=np.uint8)
    assert not (flags & PG_ISOLATED).any(), np.flatnonzero(flags & PG_ISOLATED)[:10]
    node = m.nodes[0]
    on_lists = 0
    for lru in (LRU_ANON, LRU_FILE):
        members = list(m.mem.iter_list(node.lists[lru]))
        assert len(members) == node.lru_size[lru]
        assert all(m.mem.pstate[p] == ALLOC and flags[p] & PG_LRU for p in members)
        on_lists += len(members)
    assert int((flags & PG_LRU != 0).sum()) == on_lists


def half_full(pfn: int):
    """Alternate 16-page runs: free (an order-4 buddy block), then anonymous pages."""
    return None if pfn & 16 == 0 else (ANON, 0)


# --- 1. scanner geometry ------------------------------------------------------------------

def test_whole_zone_sync_compaction_meets_and_moves_pages_to_the_top():
    r = make_rig()
    z, m = r.zone, r.m
    populate(r, half_full)
    anon = pages_of(m, ANON)
    assert anon == (z.managed_pages) // 2
    assert free_pageblocks(z) == 0
    # Stale cached positions: a whole-zone run ignores them and resets them when done.
    z.compact_cached_migrate_pfn = [8 * PAGEBLOCK_NR_PAGES, 4 * PAGEBLOCK_NR_PAGES]
    z.compact_cached_free_pfn = 16 * PAGEBLOCK_NR_PAGES
    cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC, trigger=Trigger.MANUAL,
                        task=r.task, gfp=GFP_KERNEL, whole_zone=True, ignore_skip_hint=True)
    below_before = [pages_of(m, ANON, 0, b) for b in range(33)]

    assert run_compaction(r, cc) is CompactResult.COMPLETE

    met = cc.migrate_pfn >> PAGEBLOCK_ORDER
    assert compact_scanners_met(cc)
    assert cc.free_pfn >> PAGEBLOCK_ORDER <= met
    assert z.compact_cached_migrate_pfn == [z.zone_start_pfn, z.zone_start_pfn]
    assert z.compact_cached_free_pfn == z.zone_end_pfn - PAGEBLOCK_NR_PAGES
    # Half the zone was movable: the scanners meet near the middle.
    assert 12 <= met <= 18, met
    assert pages_of(m, ANON) == anon
    # Every block below the meeting point (but the batch that found no target) is free,
    # and the pages that left it all went above it.
    assert all(block_is_free(m, b) for b in range(met - 1))
    assert free_pageblocks(z) >= met - 1
    assert pages_of(m, ANON, 0, met - 1) == 0
    assert m.events["pgmigrate_success"] == below_before[met] - pages_of(m, ANON, 0, met)
    assert_settled(m)
    assert r.compaction.results == {"manual/complete": 1}


def test_cached_start_run_ends_partial_skipped_and_leaves_the_blocks_below():
    """Not whole-zone: the migrate scanner starts at the cached pfn; meeting gives
    PARTIAL_SKIPPED and the blocks below the cached position keep their pages."""
    r = make_rig()
    z, m = r.zone, r.m
    populate(r, half_full)
    start = 8 * PAGEBLOCK_NR_PAGES
    z.compact_cached_migrate_pfn = [start, start]
    cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is CompactResult.PARTIAL_SKIPPED
    assert not cc.whole_zone
    assert pages_of(m, ANON, 0, 8) == 8 * PAGEBLOCK_NR_PAGES // 2
    assert free_pageblocks(z) >= 4
    assert z.compact_cached_migrate_pfn == [0, 0]
    assert_settled(m)


def test_scanners_met_by_direct_compaction_asks_kswapd_to_flush_skip_bits():
    r = make_rig(fast_search=False)
    z, m = r.zone, r.m
    populate(r, lambda p: (SLAB, 0) if p & 511 == 511 else half_full(p))
    cc = CompactControl(zone=z, order=9, mode=MigrateMode.SYNC_LIGHT, trigger=Trigger.DIRECT,
                        task=r.task, gfp=GFP_HIGHUSER_MOVABLE, direct_compaction=True)
    # Every block holds an unmovable page: nothing can free an order-9 block.
    assert run_compaction(r, cc) is CompactResult.COMPLETE
    assert z.compact_blockskip_flush
    assert any(m.pageblocks.skip[:32])
    r.compaction.kswapd_sleep_reset(0)
    assert not z.compact_blockskip_flush
    assert not any(m.pageblocks.skip[:32])


def test_fast_search_scans_the_block_it_found():
    """fast_find_migrateblock marks the block it picks for skipping; isolate_migratepages
    must not then skip it (the kernel's `fast_find_block`). Regression: the sim jumped
    over the found block and started in the next one."""
    r = make_rig()
    z, m = r.zone, r.m

    def owner(pfn):
        block, off = pfn >> PAGEBLOCK_ORDER, pfn & (PAGEBLOCK_NR_PAGES - 1)
        if block == 4:
            return None if off < 256 else (ANON, 0)      # a free order-8 block to find
        if block >= 20:
            return half_full(pfn)                         # targets
        return (SLAB, 0) if off == 500 else (ANON, 0)     # full, with an unmovable page

    populate(r, owner)
    m.trace = TraceBuffer(1000, ["mm_compaction_isolate_migratepages"])
    cc = CompactControl(zone=z, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    ret = run_compaction(r, cc)
    first = m.trace.render().splitlines()[0]
    assert "range=(0x800 ~" in first, first
    # Block 4's 256 pages moved out: an order-9 block, so the run succeeds.
    assert ret is CompactResult.SUCCESS
    assert block_is_free(m, 4)
    assert pages_of(m, ANON, 4, 5) == 0


def test_compaction_frees_match_the_buddy_type_under_freelist_hygiene():
    """6.10 __free_one_page: a merge at pageblock order relabels the buddy's block, so
    the merged block's list matches every block it covers."""
    for profile, label0 in (("v6.10", MigrateType.MOVABLE), ("v6.1", MigrateType.UNMOVABLE)):
        r = make_rig(profile)
        z, m = r.zone, r.m
        populate(r, lambda p: None if p < PAGEBLOCK_NR_PAGES else
                 (ANON, 0) if p < 2 * PAGEBLOCK_NR_PAGES else half_full(p))
        # Block 0 is a free unmovable pageblock; block 1 is full of movable pages.
        move_to_free_list(z, 0, PAGEBLOCK_ORDER, MigrateType.MOVABLE, MigrateType.UNMOVABLE)
        m.pageblocks.set_pageblock_migratetype(0, MigrateType.UNMOVABLE)
        cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC, trigger=Trigger.MANUAL,
                            task=r.task, gfp=GFP_KERNEL, whole_zone=True, ignore_skip_hint=True)
        assert run_compaction(r, cc) is CompactResult.COMPLETE
        assert m.mem.pstate[0] == MigrateType.MOVABLE << 4 | 10      # blocks 0+1 merged
        assert m.pageblocks.get_pageblock_migratetype(0) == label0, profile
        assert m.pageblocks.get_pageblock_migratetype(PAGEBLOCK_NR_PAGES) == MigrateType.MOVABLE


# --- 2. lock contention --------------------------------------------------------------------

def contended_layout(pfn: int):
    """Blocks 0 and 1 half full of anonymous pages; every later block also holds one
    unmovable page, so async direct compaction (skip_on_failure) takes nothing there."""
    if pfn >= 2 * PAGEBLOCK_NR_PAGES and pfn & (PAGEBLOCK_NR_PAGES - 1) == PAGEBLOCK_NR_PAGES - 1:
        return (SLAB, 0)
    return half_full(pfn)


def direct_cc(r: Rig, mode: MigrateMode, order: int = 10) -> CompactControl:
    return CompactControl(zone=r.zone, order=order, mode=mode, trigger=Trigger.DIRECT,
                          task=r.task, gfp=GFP_HIGHUSER_MOVABLE, alloc_flags=ALLOC_WMARK_MIN,
                          direct_compaction=True)


def contended_run(profile: str, mode: MigrateMode, which: str):
    r = make_rig(profile, fast_search=False)
    populate(r, contended_layout)
    lock = r.m.nodes[0].lru_lock if which == "lru" else r.zone.lock
    r.env.process(hold_lock(r.env, lock, HOLD))
    anon = pages_of(r.m, ANON)
    cc = direct_cc(r, mode)
    ret = run_compaction(r, cc)
    assert pages_of(r.m, ANON) == anon
    assert_settled(r.m)
    return r, cc, ret, lock


@pytest.mark.parametrize("which", ["lru", "zone"])
def test_async_4_4_aborts_at_once_on_a_contended_lock(which):
    r, cc, ret, lock = contended_run("v4.4", MigrateMode.ASYNC, which)
    assert ret is CompactResult.CONTENDED
    assert cc.contended
    assert r.env.now < HOLD                     # never waited for the holder
    assert lock.contended == 0 and lock.wait_s == 0.0
    assert r.m.events["pgmigrate_success"] == 0
    assert free_pageblocks(r.zone) == 0


@pytest.mark.parametrize("which", ["lru", "zone"])
def test_async_6x_marks_contention_finishes_the_block_then_aborts(which):
    r, cc, ret, lock = contended_run("v6.10", MigrateMode.ASYNC, which)
    assert ret is CompactResult.CONTENDED
    assert cc.contended
    assert lock.contended == 1                  # took the lock anyway, once
    assert lock.wait_s == pytest.approx(HOLD, rel=0.01)
    # Block 0 was finished (all its pages moved: it is free), then the run stopped
    # instead of going on to block 1.
    assert block_is_free(r.m, 0)
    assert r.m.events["pgmigrate_success"] == PAGEBLOCK_NR_PAGES // 2
    assert cc.migrate_pfn == PAGEBLOCK_NR_PAGES
    assert pages_of(r.m, ANON, 1, 2) == PAGEBLOCK_NR_PAGES // 2


@pytest.mark.parametrize("profile", ["v4.4", "v6.10"])
@pytest.mark.parametrize("which", ["lru", "zone"])
def test_sync_light_waits_for_the_lock_and_completes(profile, which):
    r, cc, ret, lock = contended_run(profile, MigrateMode.SYNC_LIGHT, which)
    assert ret is CompactResult.SUCCESS
    assert not cc.contended
    assert lock.contended >= 1
    assert lock.wait_s >= HOLD * 0.99
    assert r.env.now > HOLD
    assert r.zone.nr_free[10] >= 1              # blocks 0 and 1 merged
    assert r.m.events["pgmigrate_success"] == PAGEBLOCK_NR_PAGES


# --- 4. deferral -------------------------------------------------------------------------

@pytest.fixture
def zone():
    return make_rig().zone


def skipped_in_a_row(z, order: int) -> int:
    n = 0
    while compaction_deferred(z, order):
        n += 1
        assert n < 1000
    return n


@pytest.mark.parametrize("failures", range(1, 9))
def test_after_k_failures_up_to_2_pow_k_minus_1_requests_are_skipped(zone, failures):
    z = zone
    for _ in range(failures):
        defer_compaction(z, 9)
    shift = min(failures, COMPACT_MAX_DEFER_SHIFT)
    assert z.compact_defer_shift == shift
    assert z.compact_considered == 0
    assert skipped_in_a_row(z, 9) == (1 << shift) - 1
    # The request that ends the window goes ahead, and so does every later one.
    assert z.compact_considered == 1 << shift
    assert [compaction_deferred(z, 9) for _ in range(5)] == [False] * 5
    assert z.compact_considered == 1 << shift


def test_defer_sequence_by_hand(zone):
    z = zone
    z.compact_order_failed = 11           # nothing has failed yet
    assert not compaction_deferred(z, 9)  # below order_failed: not even counted
    assert z.compact_considered == 0
    defer_compaction(z, 9)
    assert (z.compact_considered, z.compact_defer_shift, z.compact_order_failed) == (0, 1, 9)
    assert [compaction_deferred(z, 9) for _ in range(3)] == [True, False, False]
    defer_compaction(z, 10)               # a higher order does not raise order_failed
    assert (z.compact_defer_shift, z.compact_order_failed) == (2, 9)
    assert [compaction_deferred(z, 10) for _ in range(5)] == [True, True, True, False, False]
    defer_compaction(z, 4)
    assert (z.compact_defer_shift, z.compact_order_failed) == (3, 4)
    assert not compaction_deferred(z, 3)  # smaller orders than the one that failed pass
    assert z.compact_considered == 0
    assert compaction_deferred(z, 4)
    # SUCCESS reported by compaction: order_failed rises past the order, the backoff stays.
    compaction_defer_reset(z, 6, False)
    assert (z.compact_considered, z.compact_defer_shift, z.compact_order_failed) == (1, 3, 7)
    assert not compaction_deferred(z, 6)
    assert compaction_deferred(z, 7)
    # The allocation then succeeded: the backoff is cleared.
    compaction_defer_reset(z, 7, True)
    assert (z.compact_considered, z.compact_defer_shift, z.compact_order_failed) == (0, 0, 8)
    compaction_defer_reset(z, 2, True)    # order_failed only goes up
    assert z.compact_order_failed == 8


def test_defer_shift_saturates_at_six_and_then_restarts(zone):
    z = zone
    for _ in range(10):
        defer_compaction(z, 9)
    assert z.compact_defer_shift == COMPACT_MAX_DEFER_SHIFT
    assert not compaction_restarting(z, 9)
    assert skipped_in_a_row(z, 9) == 63
    assert z.compact_considered == 64
    assert compaction_restarting(z, 9)
    assert not compaction_restarting(z, z.compact_order_failed - 1)


def test_restarting_zone_has_its_skip_bits_cleared_by_compact_zone():
    r = make_rig()
    z, m = r.zone, r.m
    populate(r, half_full)
    m.pageblocks.skip[0:32] = b"\1" * 32
    cc = CompactControl(zone=z, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is CompactResult.COMPLETE
    # Every block skipped: only the free-list entries fast_find_migrateblock read count.
    assert cc.nr_migrated == 0 and cc.total_migrate_scanned <= COMPACT_CLUSTER_MAX + 2
    m.pageblocks.skip[0:32] = b"\1" * 32
    z.compact_defer_shift, z.compact_considered = COMPACT_MAX_DEFER_SHIFT, 64
    cc = CompactControl(zone=z, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is CompactResult.SUCCESS
    assert cc.nr_migrated > 0


def test_try_to_compact_pages_defers_after_sync_failure_only():
    r = make_rig(fast_search=False)
    z = r.zone
    populate(r, lambda p: (SLAB, 0) if p & 511 == 511 else half_full(p))

    def attempt(priority):
        proc = r.env.process(r.compaction.try_to_compact_pages(
            r.task, GFP_HIGHUSER_MOVABLE, 9, ALLOC_WMARK_MIN, priority))
        r.env.run(until=proc)
        return proc.value

    z.compact_order_failed = 11
    # Async: scanners meet (COMPLETE), no deferral.
    assert attempt(CompactPriority.ASYNC) == (CompactResult.COMPLETE, -1)
    assert (z.compact_defer_shift, z.compact_order_failed) == (0, 11)
    assert attempt(CompactPriority.SYNC_LIGHT) == (CompactResult.COMPLETE, -1)
    assert (z.compact_defer_shift, z.compact_order_failed) == (1, 9)
    # Now the next request is deferred without running, unless at SYNC_FULL.
    scanned = r.m.events["compact_migrate_scanned"]
    assert attempt(CompactPriority.SYNC_LIGHT) == (CompactResult.DEFERRED, -1)
    assert r.m.events["compact_migrate_scanned"] == scanned
    assert attempt(CompactPriority.SYNC_FULL)[0] is CompactResult.COMPLETE
    assert r.m.events["compact_migrate_scanned"] > scanned


# --- 5. compaction_suitable -----------------------------------------------------------------

def take_pages(r: Rig, n: int) -> None:
    for _ in range(n):
        assert get_page_from_freelist(r.m, r.task, GFP_HIGHUSER_MOVABLE, 0,
                                      ALLOC_NO_WATERMARKS).pfn >= 0


@pytest.mark.parametrize("order,mark", [(9, WMARK_LOW), (4, WMARK_LOW), (3, WMARK_MIN),
                                        (1, WMARK_MIN)])
def test_suitable_needs_the_order0_watermark_plus_compact_gap(order, mark):
    r = make_rig()
    z = r.zone
    threshold = z.wmark_pages(mark) + compact_gap(order)
    assert compact_gap(order) == 2 << order
    take_pages(r, z.free_pages - threshold - 1)
    assert z.free_pages == threshold + 1
    # The big free blocks left make the fragmentation index -1000: suitable.
    assert compaction_suitable(z, order, 1, 500) is CompactResult.CONTINUE
    take_pages(r, 1)
    assert compaction_suitable(z, order, 1, 500) is CompactResult.SKIPPED


def test_compact_zone_skips_a_fragmented_zone_short_of_free_pages():
    r = make_rig()
    z = r.zone
    populate(r, half_full)
    order = 9
    threshold = z.wmark_pages(WMARK_LOW) + compact_gap(order)
    cc = CompactControl(zone=z, order=order, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    take_pages(r, z.free_pages - threshold)
    assert z.free_pages == threshold
    assert run_compaction(r, cc) is CompactResult.SKIPPED
    assert cc.total_migrate_scanned == cc.total_free_scanned == 0
    assert r.compaction.results == {"kcompactd/skipped": 1}
    assert_settled(r.m)
    release(r, z.zone_start_pfn + 16)                    # one page more: it runs
    cc = CompactControl(zone=z, order=order, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is not CompactResult.SKIPPED
    assert cc.total_migrate_scanned > 0


def free_chunks(r: Rig, order: int, count: int, spacing: int) -> None:
    """Leave only `count` free blocks of `order`, `spacing` pages apart (their buddies in use)."""
    keep = {i * spacing + j for i in range(count) for j in range(1 << order)}
    populate(r, lambda p: None if p in keep else (ANON, 0))


def test_costly_order_with_low_fragindex_is_not_suitable():
    r = make_rig()
    z = r.zone
    free_chunks(r, 8, 10, 1024)      # ten order-8 blocks: 2560 pages, no order-9
    assert z.nr_free[8] == 10 and z.free_pages == 2560
    # 1000 - (1000 + 2560 * 1000 / 512) / 10 = 400: a lack of memory, not fragmentation.
    assert fragmentation_index(z.nr_free, 9) == 400
    assert compaction_suitable(z, 9, 1, 500) is CompactResult.NOT_SUITABLE_ZONE
    assert compaction_suitable(z, 9, 1, 400) is CompactResult.NOT_SUITABLE_ZONE
    assert compaction_suitable(z, 9, 1, 399) is CompactResult.CONTINUE
    # A non-costly order is not judged by the index in 6.x.
    assert compaction_suitable(z, 3, 1, 1000) is CompactResult.CONTINUE


def test_non_costly_orders_use_the_fragindex_in_4_4_only():
    for profile, expect in (("v4.4", CompactResult.NOT_SUITABLE_ZONE),
                            ("v6.10", CompactResult.CONTINUE)):
        r = make_rig(profile)
        z = r.zone
        free_chunks(r, 2, 300, 8)    # 300 order-2 blocks, no order-3
        # 1000 - (1000 + 1200 * 1000 / 8) / 300 = 497
        assert fragmentation_index(z.nr_free, 3) == 497
        proc = r.env.process(r.compaction.compact_zone(CompactControl(
            zone=z, order=3, mode=MigrateMode.SYNC_LIGHT, trigger=Trigger.KCOMPACTD,
            task=r.task, gfp=GFP_KERNEL)))
        r.env.run(until=proc)
        expected = CompactResult.SKIPPED if expect is CompactResult.NOT_SUITABLE_ZONE else None
        suit = compaction_suitable(z, 3, 1, 500, all_orders_fragindex=profile == "v4.4")
        assert suit is expect, profile
        if expected is not None:
            assert proc.value is expected      # compact_zone reports it as SKIPPED
        else:
            assert proc.value is not CompactResult.SKIPPED


def test_compact_zone_succeeds_at_once_when_the_watermark_is_met():
    r = make_rig()
    z = r.zone
    cc = CompactControl(zone=z, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is CompactResult.SUCCESS
    assert cc.total_migrate_scanned == 0 and r.env.now == 0


@pytest.mark.parametrize("profile,expect", [("v4.4", CompactResult.SKIPPED),
                                            ("v4.8", CompactResult.SUCCESS),
                                            ("v6.10", CompactResult.SUCCESS)])
@pytest.mark.parametrize("trigger", [Trigger.DIRECT, Trigger.KCOMPACTD])
def test_compact_zone_checks_the_callers_watermark_since_4_8(profile, expect, trigger):
    """Free pages just under the low mark, in big blocks. 4.8+ compact_zone (6.x
    compaction_suit_allocation_order) asks whether the order-6 allocation can already
    succeed at cc->alloc_flags & ALLOC_WMARK_MASK, MIN in the slow path: it can
    (free - 63 > min), SUCCESS without scanning. 4.4's __compaction_suitable asks at
    low_wmark_pages: it cannot, and fewer than low + compact_gap(6) pages are free:
    SKIPPED. kcompactd (4.4: kswapd's compact_pgdat) leaves alloc_flags 0, ALLOC_WMARK_MIN,
    and meets the same check."""
    order = 6
    r = make_rig(profile)
    z = r.zone
    low, mn = z.wmark_pages(WMARK_LOW), z.wmark_pages(WMARK_MIN)
    take_pages(r, z.free_pages - (low - 10))
    assert z.free_pages - ((1 << order) - 1) > mn
    assert z.free_pages < low and sum(z.nr_free[order:]) > 0
    if trigger is Trigger.DIRECT:
        cc = direct_cc(r, MigrateMode.ASYNC, order=order)
    else:
        cc = CompactControl(zone=z, order=order, mode=MigrateMode.SYNC_LIGHT,
                            trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    assert run_compaction(r, cc) is expect
    assert cc.total_migrate_scanned == cc.total_free_scanned == 0


# --- scores ---------------------------------------------------------------------------------

def test_zone_score_is_percent_of_free_memory_below_a_pageblock():
    r = make_rig()
    z = r.zone
    # At boot only the half block beside the memmap is below pageblock order.
    assert fragmentation_score_zone(z) == 256 * 100 // z.free_pages == 1
    populate(r, half_full)
    assert fragmentation_score_zone(z) == 100


# --- 10. determinism -------------------------------------------------------------------------

def compaction_spec(seed: int = 1):
    raw = apply_overrides(load_scenario("fill-fragment"), [
        "duration=9s", "machine.memory=256MiB", "workload[1].stop=3s",
        "workload[2].start=4s", f"seed={seed}",
        ("sampling.trace_events=[mm_page_alloc_extfrag, mm_compaction_begin, "
         "mm_compaction_end, mm_compaction_migratepages, mm_compaction_kcompactd_wake, "
         "mm_migrate_pages]")])
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def compaction_run():
    return run(compaction_spec())


@pytest.mark.slow    # two compaction-heavy runs
def test_compaction_heavy_run_is_deterministic(compaction_run):
    a = compaction_run
    comp = a.summary["compaction"]
    assert sum(comp["results"].values()) > 0
    assert a.summary["vmstat"]["pgmigrate_success"] > 0
    assert a.summary["vmstat"]["compact_migrate_scanned"] > 0
    v = a.summary["vmstat"]
    assert v["compact_stall"] == v["compact_success"] + v["compact_fail"] > 0
    assert "mm_compaction_end" in a.trace and "mm_migrate_pages" in a.trace
    b = run(compaction_spec())
    assert b.summary == a.summary
    assert b.trace == a.trace
    assert b.series == a.series
    assert b.files == a.files


@pytest.mark.slow    # a third compaction-heavy run
def test_compaction_heavy_run_depends_on_the_seed(compaction_run):
    other = run(compaction_spec(seed=2))
    assert other.trace != compaction_run.trace
