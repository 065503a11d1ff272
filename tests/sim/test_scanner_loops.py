"""sim/compaction.py and sim/migrate.py: the scanners' loops over the page arrays.

The per-page and per-block tests of mm/compaction.c as the compiled loops apply them:
`isolate_migratepages_block`'s page tests (an order-0 LRU page not isolated, not pinned
unless page cache, in async modes not under writeback nor dirty and locked, not mlocked
unless `compact_unevictable_allowed`; or an unlocked movable_ops page) and its
`skip_on_failure` chunks; the block walks of `isolate_migratepages` (`isolation_suitable`,
`suitable_migration_source`, which moves the cached migrate position past an unsuitable
block) and of `isolate_freepages` (`suitable_migration_target`, `isolation_suitable`); and
`compaction_alloc`'s order: targets already isolated are used before the free scanner runs.
"""

from __future__ import annotations

import pytest
from rig import make_rig, populate

from compactsim.sim.compaction import (
    COMPACT_CLUSTER_MAX,
    CompactControl,
    Trigger,
    isolation_candidate,
    suitable_migration_source,
    suitable_migration_target,
)
from compactsim.sim.config import PageKind
from compactsim.sim.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page import (
    ALLOC,
    KIND_CODE,
    PG_DIRTY,
    PG_EXTRA_REF,
    PG_ISOLATED,
    PG_LOCKED,
    PG_LRU,
    PG_MLOCKED,
    PG_MOVABLE_OPS,
    PG_WRITEBACK,
    free_state,
)
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, MigrateType

ANON = KIND_CODE[PageKind.ANON]
FILE = KIND_CODE[PageKind.FILE]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]
NR = PAGEBLOCK_NR_PAGES


def direct_cc(r, order: int = 3) -> CompactControl:
    """Async direct compaction for a movable request of `order`."""
    return CompactControl(zone=r.zone, order=order, mode=MigrateMode.ASYNC,
                          trigger=Trigger.DIRECT, task=r.task, gfp=GFP_HIGHUSER_MOVABLE,
                          migratetype=MigrateType.MOVABLE, direct_compaction=True)


def kcompactd_cc(r) -> CompactControl:
    return CompactControl(zone=r.zone, order=9, mode=MigrateMode.SYNC_LIGHT,
                          trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)


# --- one page ----------------------------------------------------------------------------

LRU = PG_LRU
CASES = [
    # (flags, kind, async mode, unevictable allowed) -> a candidate
    ((LRU, ANON, True, True), True),
    ((LRU | PG_ISOLATED, ANON, False, True), False),        # already isolated
    ((0, ANON, False, True), False),                        # not on an LRU (add batch)
    ((LRU | PG_EXTRA_REF, ANON, False, True), False),       # pinned anon: -EAGAIN ahead
    ((LRU | PG_EXTRA_REF, FILE, False, True), True),        # page cache: checked later
    ((LRU | PG_WRITEBACK, FILE, True, True), False),        # async skips writeback
    ((LRU | PG_WRITEBACK, FILE, False, True), True),
    ((LRU | PG_DIRTY | PG_LOCKED, FILE, True, True), False),  # mapping needs the lock
    ((LRU | PG_DIRTY, FILE, True, True), True),
    ((LRU | PG_DIRTY | PG_LOCKED, FILE, False, True), True),
    ((LRU | PG_MLOCKED, ANON, False, False), False),        # compact_unevictable_allowed=0
    ((LRU | PG_MLOCKED, ANON, False, True), True),
    ((PG_MOVABLE_OPS, KIND_CODE[PageKind.ZSMALLOC], True, True), True),
    ((PG_MOVABLE_OPS | PG_LOCKED, KIND_CODE[PageKind.ZSMALLOC], False, True), False),
    ((PG_MOVABLE_OPS | PG_ISOLATED, KIND_CODE[PageKind.BALLOON], False, True), False),
]


@pytest.mark.parametrize("case,want", CASES)
def test_isolation_candidate(case, want):
    flags, kind, async_migrate, unevictable = case
    assert isolation_candidate(ALLOC, flags, kind, async_migrate, unevictable) is want
    # Only an allocated order-0 head is ever a candidate: not a free page, a compound
    # head, a page on a pcp list or a tail page.
    for state in (free_state(0, MigrateType.MOVABLE), ALLOC + 1, 96, 255):
        assert not isolation_candidate(state, flags, kind, async_migrate, unevictable)


# --- skip_on_failure -----------------------------------------------------------------------

def test_skip_on_failure_drops_the_chunk_and_does_not_count_the_jump():
    """Async direct compaction at order 3 (8-page chunks): an unmovable page at pfn 10
    takes nothing of chunk 8-15 and the scan jumps from 11 to 16 (5 pfns not counted);
    the batch is the 32 pages 0-7 and 16-39, and the scan stops after its last page."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: (SLAB, 0) if pfn == 10 else (ANON, 0))
    cc = direct_cc(r)
    stop, scanned, visited = r.compaction.isolate_migratepages_block(cc, 0, NR)
    assert cc.migratepages == list(range(0, 8)) + list(range(16, 40))
    assert len(cc.migratepages) == COMPACT_CLUSTER_MAX
    assert (stop, scanned, visited) == (40, 40 - 5, 40)
    for pfn in cc.migratepages:
        assert r.m.mem.flags[pfn] & (PG_ISOLATED | PG_LRU) == PG_ISOLATED
    assert not r.m.mem.flags[8] & PG_ISOLATED


def test_a_pageblock_finished_takes_every_candidate():
    """finish_pageblock: no batch limit; the whole block is scanned and counted."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: None if pfn % 4 == 3 else (ANON, 0))
    cc = kcompactd_cc(r)
    cc.finish_pageblock = True
    node = r.m.nodes[0]
    on_lru = sum(node.lru_size[i] for i in range(len(node.lru_size)))
    stop, scanned, visited = r.compaction.isolate_migratepages_block(cc, 0, NR)
    assert len(cc.migratepages) == NR * 3 // 4
    assert (stop, scanned, visited) == (NR, NR, NR)
    assert r.m.events["compact_isolated"] == NR * 3 // 4
    assert sum(node.lru_size[i] for i in range(len(node.lru_size))) == on_lru - NR * 3 // 4


# --- the block walks -------------------------------------------------------------------

def test_migrate_scanner_passes_unsuitable_blocks_in_one_walk():
    """Async direct compaction for a movable request takes only MOVABLE blocks: ten
    UNMOVABLE blocks are passed over in one walk, and the cached migrate position (async
    only) moves past the last of them."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: (ANON, 0))
    z = r.zone
    for block in range(10):
        r.m.pageblocks.mt[block] = MigrateType.UNMOVABLE
    cc = direct_cc(r)
    cc.migrate_pfn = z.zone_start_pfn
    cc.free_pfn = z.zone_end_pfn - NR
    sync_cached = z.compact_cached_migrate_pfn[1]
    assert r.compaction.next_migrate_block(cc, z.zone_start_pfn, False) == (10 * NR, 11 * NR, 10)
    assert cc.migrate_pfn == 10 * NR
    assert z.compact_cached_migrate_pfn == [10 * NR, sync_cached]


def test_migrate_scanner_skip_bits_leave_the_cached_position():
    """Blocks with their skip bit set are passed over without moving the cached
    position; the block the fast search just picked is scanned despite its bit."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: (ANON, 0))
    z = r.zone
    for block in range(5):
        r.m.pageblocks.skip[block] = 1
    cc = kcompactd_cc(r)
    cc.free_pfn = z.zone_end_pfn - NR
    before = list(z.compact_cached_migrate_pfn)
    assert r.compaction.next_migrate_block(cc, 0, True) == (0, NR, 0)
    assert r.compaction.next_migrate_block(cc, 0, False) == (5 * NR, 6 * NR, 5)
    assert z.compact_cached_migrate_pfn == before
    cc.ignore_skip_hint = True
    assert r.compaction.next_migrate_block(cc, 0, False) == (0, NR, 0)


def test_migrate_scanner_walk_ends_at_the_free_scanner():
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: (ANON, 0))
    for block in range(32):
        r.m.pageblocks.skip[block] = 1
    cc = kcompactd_cc(r)
    cc.free_pfn = 8 * NR
    low, block_end, skipped = r.compaction.next_migrate_block(cc, 0, False)
    assert (low, skipped) == (8 * NR, 8) and block_end > cc.free_pfn


def test_free_scanner_walk():
    """Down from block 20: two blocks with their skip bit, an UNMOVABLE block and a free
    pageblock (never split) are passed over; block 16 takes targets. SYNC_FULL
    (ignore_block_suitable, ignore_skip_hint) takes block 20 itself."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: None if pfn >> PAGEBLOCK_ORDER == 17 else (ANON, 0))
    assert r.m.mem.pstate[17 * NR] == free_state(PAGEBLOCK_ORDER, MigrateType.MOVABLE)
    r.m.pageblocks.skip[20] = r.m.pageblocks.skip[19] = 1
    r.m.pageblocks.mt[18] = MigrateType.UNMOVABLE
    cc = kcompactd_cc(r)
    assert r.compaction.next_free_block(cc, 20 * NR, NR) == 16 * NR
    assert r.compaction.next_free_block(cc, 20 * NR, 17 * NR) == 16 * NR  # below low
    cc.ignore_block_suitable = cc.ignore_skip_hint = True
    assert r.compaction.next_free_block(cc, 20 * NR, NR) == 20 * NR
    assert r.compaction.next_free_block(cc, 17 * NR, NR) == 16 * NR


def test_block_tests():
    huge = ALLOC + PAGEBLOCK_ORDER
    assert not suitable_migration_source(huge, MigrateType.MOVABLE, False, MigrateType.MOVABLE)
    assert suitable_migration_source(ALLOC, MigrateType.UNMOVABLE, False, MigrateType.MOVABLE)
    assert not suitable_migration_source(ALLOC, MigrateType.UNMOVABLE, True,
                                         MigrateType.MOVABLE)
    assert suitable_migration_source(ALLOC, MigrateType.UNMOVABLE, True,
                                     MigrateType.UNMOVABLE)
    free_block = free_state(PAGEBLOCK_ORDER, MigrateType.MOVABLE)
    assert not suitable_migration_target(free_block, MigrateType.MOVABLE, True)
    assert suitable_migration_target(free_state(3, MigrateType.MOVABLE), MigrateType.MOVABLE,
                                     False)
    assert not suitable_migration_target(ALLOC, MigrateType.RECLAIMABLE, False)
    assert suitable_migration_target(ALLOC, MigrateType.RECLAIMABLE, True)


# --- targets ----------------------------------------------------------------------------

def test_migrate_pages_uses_isolated_targets_before_asking_for_more():
    """compaction_alloc: the free scanner runs only once cc->freepages is empty. With
    two targets isolated and three pages to move, get_target is asked once, and the two
    sources moved are freed before it is (the free scanner may find them)."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: (ANON, 0) if pfn < 3 else (0, 0) if pfn in (100, 101)
             else (SLAB, 0))
    cc = kcompactd_cc(r)
    cc.finish_pageblock = True
    r.compaction.isolate_migratepages_block(cc, 0, 3)
    assert cc.migratepages == [0, 1, 2]
    targets = [100, 101]                # isolated free pages (split_map_pages)
    asked = []

    def get_target():
        asked.append((len(targets), list(freed)))
        yield r.env.timeout(0)
        return -1

    freed = []
    proc = r.env.process(r.migration.migrate_pages(r.task, [0, 1, 2], MigrateMode.SYNC_LIGHT,
                                                   get_target, freed.extend, targets))
    r.env.run(until=proc)
    succeeded, failed, leftover, enomem = proc.value
    assert (succeeded, failed, leftover, enomem) == (2, 1, [2], True)
    assert asked == [(0, [0, 1])] and freed == [0, 1]
    assert r.m.mem.kind[101] == ANON and r.m.mem.kind[100] == ANON
