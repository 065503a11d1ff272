"""sim/migrate.py: the per-page rules of each migration mode, the pass loop, writeback
under compaction, non-LRU movable pages under each movable-ops design, and the memmap
cost of the designs.

Expected values follow mm/migrate.c (4.4 to 6.x) and struct page's layout:
`__unmap_and_move` (page-lock trylock; ASYNC and PF_MEMALLOC never sleep; before 6.3
only a forced pass, the fourth, may), writeback (only MIGRATE_SYNC waits), the reference-count
check (-EAGAIN), `migrate_pages` (10 passes; 6.3+: 3 async batch passes, then every
failure one by one with 7 retries in the requested mode) and its counters.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy
from rig import Rig, block_is_free, make_rig, place, populate

from compactsim.sim.compaction import CompactControl, CompactResult, Trigger
from compactsim.sim.config import MovableOps, PageKind, config_from_dict
from compactsim.sim.gfp import (
    ALLOC_NO_WATERMARKS,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    gfp_migratetype,
)
from compactsim.sim.kcompactd import compact_node
from compactsim.sim.locks import BookedLock
from compactsim.sim.machine import LIST_BALLOON, LIST_ZSPAGES, LRU_ANON, Machine, build_machine
from compactsim.sim.migrate import (
    EAGAIN,
    EBUSY,
    EINVAL,
    MIGRATEPAGE_SUCCESS,
    RELEASED,
    MigrateMode,
    Migration,
)
from compactsim.sim.page import (
    KIND_CODE,
    KIND_NONE,
    PG_EXTRA_REF,
    PG_ISOLATED,
    PG_LOCKED,
    PG_MOVABLE_OPS,
    PG_WRITEBACK,
)
from compactsim.sim.page_alloc import get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, MigrateType
from compactsim.sim.pageflags import page_flags_budget
from compactsim.sim.run import memmap_summary
from compactsim.sim.task import Task
from compactsim.sim.workload import kind_gfp
from compactsim.sim.zram import Zram
from compactsim.sim.zsmalloc import Zspage

ANON = KIND_CODE[PageKind.ANON]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]
ZSMALLOC = KIND_CODE[PageKind.ZSMALLOC]
BALLOON = KIND_CODE[PageKind.BALLOON]
GIB = 1 << 30
MIB = 1 << 20


def one_page(r: Rig, kind: int = ANON, flags: int = 0) -> int:
    out = get_page_from_freelist(r.m, r.task, GFP_HIGHUSER_MOVABLE, 0, ALLOC_NO_WATERMARKS)
    assert out.pfn >= 0
    place(r.m, out.pfn, kind, flags)
    return out.pfn


def count_kind(m: Machine, code: int) -> int:
    return int((np.frombuffer(m.mem.kind, dtype=np.uint8) == code).sum())


class SpiedMigration(Migration):
    """A Migration that records (pfn, pass mode, rc) of every unmap_and_move_rc call: a
    subclass, since the compiled Migration has no instance dict to patch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[int, MigrateMode, int]] = []

    def unmap_and_move_rc(self, pfn, mode, force, memalloc):
        rc, wait = super().unmap_and_move_rc(pfn, mode, force, memalloc)
        self.calls.append((pfn, mode, rc))
        return rc, wait


def spy_rc(r: Rig) -> list[tuple[int, MigrateMode, int]]:
    """Swap the rig's migration for a spying one; returns its list of calls."""
    spied = SpiedMigration(r.m, r.migration.rng, zsmalloc=r.migration.zsmalloc)
    r.migration = r.compaction.migration = spied
    return spied.calls


def run_proc(r: Rig, gen):
    proc = r.env.process(gen)
    r.env.run(until=proc)
    return proc.value


# --- one page: unmap_and_move_rc ------------------------------------------------------------

A, L, S = MigrateMode.ASYNC, MigrateMode.SYNC_LIGHT, MigrateMode.SYNC
LOCK_WAIT = 1.0 * 0.5e-3          # half of page_lock_hold_ms
WB_WAIT = 0.5 * 0.5e-3            # half of writeback_page_ms

# (flags, mode, force, memalloc) -> (rc, wait) before 6.3 (no batching): `force` is the
# fourth pass and later.
PRE_6_3 = [
    (0, A, False, False, MIGRATEPAGE_SUCCESS, 0.0),
    (0, S, True, True, MIGRATEPAGE_SUCCESS, 0.0),
    (PG_LOCKED, A, True, False, EAGAIN, 0.0),          # async never sleeps
    (PG_LOCKED, L, False, False, EAGAIN, 0.0),         # not forced yet
    (PG_LOCKED, L, True, False, MIGRATEPAGE_SUCCESS, LOCK_WAIT),
    (PG_LOCKED, L, True, True, EAGAIN, 0.0),           # PF_MEMALLOC never sleeps
    (PG_LOCKED, S, True, True, EAGAIN, 0.0),
    (PG_LOCKED, S, True, False, MIGRATEPAGE_SUCCESS, LOCK_WAIT),
    (PG_WRITEBACK, A, True, False, EBUSY, 0.0),
    (PG_WRITEBACK, L, True, False, EBUSY, 0.0),        # SYNC_LIGHT never waits on writeback
    (PG_WRITEBACK, S, False, False, EAGAIN, 0.0),
    (PG_WRITEBACK, S, True, True, MIGRATEPAGE_SUCCESS, WB_WAIT),
    (PG_LOCKED | PG_WRITEBACK, S, True, False, MIGRATEPAGE_SUCCESS, LOCK_WAIT + WB_WAIT),
    (PG_EXTRA_REF, A, False, False, EAGAIN, 0.0),
    (PG_EXTRA_REF, L, True, False, EAGAIN, 0.0),
    (PG_EXTRA_REF, S, True, False, EAGAIN, 0.0),
]
# 6.3+: no force; the sync modes may sleep on a page lock from the first try, but 6.5+
# SYNC_LIGHT not on a page locked for read I/O (!uptodate), the only locked pages here.
BATCHED = [
    (PG_LOCKED, A, False, False, EAGAIN, 0.0),
    (PG_LOCKED, L, False, False, EAGAIN, 0.0),
    (PG_LOCKED, S, False, False, MIGRATEPAGE_SUCCESS, LOCK_WAIT),
    (PG_LOCKED, L, False, True, EAGAIN, 0.0),
    (PG_WRITEBACK, L, False, False, EBUSY, 0.0),
    (PG_WRITEBACK, S, False, False, MIGRATEPAGE_SUCCESS, WB_WAIT),
    (PG_EXTRA_REF, S, False, False, EAGAIN, 0.0),
]


@pytest.mark.parametrize("profile,case", [("v6.1", c) for c in PRE_6_3]
                         + [("v6.10", c) for c in BATCHED])
def test_unmap_and_move_rc_per_mode(profile, case):
    flags, mode, force, memalloc, rc, wait = case
    r = make_rig(profile)
    pfn = one_page(r, ANON, flags)
    got_rc, got_wait = r.migration.unmap_and_move_rc(pfn, mode, force, memalloc)
    assert got_rc == rc
    assert got_wait == pytest.approx(wait)


def test_sync_light_sleeps_on_an_io_locked_page_between_6_3_and_6_4_only():
    r = make_rig("v6.10", sync_light_io_nowait=False)
    pfn = one_page(r, ANON, PG_LOCKED)
    assert r.migration.unmap_and_move_rc(pfn, L, False, False) == (MIGRATEPAGE_SUCCESS,
                                                                   pytest.approx(LOCK_WAIT))


@pytest.mark.parametrize("profile,waits", [("v4.8", True), ("v6.1", True), ("v6.10", False)])
def test_kcompactd_is_not_pf_memalloc_and_waits_where_its_version_lets_it(profile, waits):
    """kcompactd() does not set PF_MEMALLOC: its SYNC_LIGHT migration sleeps on a locked
    page in a forced pass (4.6-6.2), but not on one under read I/O in 6.5+."""
    from compactsim.sim.kcompactd import Kcompactd
    r = make_rig(profile)
    kc = Kcompactd(r.m, r.compaction, None)
    task = kc.tasks[0]
    assert task.memalloc is False
    pfn = one_page(r, ANON, PG_LOCKED)
    rc, wait = r.migration.unmap_and_move_rc(pfn, L, True, task.memalloc)
    assert (rc == MIGRATEPAGE_SUCCESS) is waits
    assert (wait > 0) is waits


def test_unmap_and_move_rc_of_released_and_driver_pages():
    r = make_rig()
    pfn = one_page(r, ANON, PG_ISOLATED)
    r.m.mem.kind[pfn] = KIND_NONE              # the owner let go while it was isolated
    assert r.migration.unmap_and_move_rc(pfn, A, False, False) == (RELEASED, 0.0)
    balloon = one_page(r, BALLOON, PG_MOVABLE_OPS)
    zspage = one_page(r, ZSMALLOC, PG_MOVABLE_OPS)
    for mode in MigrateMode:
        assert r.migration.unmap_and_move_rc(balloon, mode, False, True)[0] == MIGRATEPAGE_SUCCESS
        assert r.migration.unmap_and_move_rc(zspage, mode, False, True)[0] == MIGRATEPAGE_SUCCESS
    busy = make_rig("v6.17")
    zspage = one_page(busy, ZSMALLOC, PG_MOVABLE_OPS)
    mapped_by_zram(busy, zspage)
    assert busy.migration.unmap_and_move_rc(zspage, S, True, False)[0] == EINVAL


def mapped_by_zram(r: Rig, pfn: int) -> None:
    """Make `pfn` a one-page zspage of zram's pool that zram holds mapped (the zspage
    read lock) for the whole test."""
    pool = r.zram.pool
    cls = pool.size_class[-1]
    zspage = Zspage(cls, [pfn], BookedLock(pool.lock_stats["zspage_lock"]))
    pool.by_pfn[pfn] = zspage
    zspage.lock.book(0.0, 0.0, 1e9, False, owner=100)


# --- the pass loop --------------------------------------------------------------------------

def targets(r: Rig, n: int):
    """get_target for migrate_pages: `n` free pages, then -1."""
    pool = [get_page_from_freelist(r.m, r.task, GFP_HIGHUSER_MOVABLE, 0,
                                   ALLOC_NO_WATERMARKS).pfn for _ in range(n)]

    def get_target():
        return pool.pop() if pool else -1
        yield  # a generator, as compaction_alloc is
    return get_target


@pytest.mark.parametrize("profile,mode,modes", [
    ("v6.1", A, [A] * 10),
    ("v6.1", L, [L] * 10),
    ("v6.1", S, [S] * 10),
    ("v6.10", A, [A] * 10),
    ("v6.10", L, [A] * 3 + [L] * 7),
    ("v6.10", S, [A] * 3 + [S] * 7),
])
def test_extra_reference_fails_after_ten_passes(profile, mode, modes):
    r = make_rig(profile)
    pinned = one_page(r, ANON, PG_EXTRA_REF | PG_ISOLATED)
    fine = one_page(r, ANON, PG_ISOLATED)
    calls = spy_rc(r)
    freed = []
    out = run_proc(r, r.migration.migrate_pages(r.task, [pinned, fine], mode, targets(r, 4),
                                                freed.extend))
    assert out == (1, 1, [pinned], False)
    assert [(m, rc) for p, m, rc in calls if p == pinned] == [(m, EAGAIN) for m in modes]
    assert freed == [fine]
    assert r.m.events["pgmigrate_success"] == 1
    assert r.m.events["pgmigrate_fail"] == 1
    assert r.m.mem.kind[pinned] == ANON        # still its owner's: the caller puts it back


@pytest.mark.parametrize("memalloc,moved", [(True, False), (False, True)])
def test_locked_page_under_pf_memalloc_never_sleeps(memalloc, moved):
    r = make_rig("v6.1")
    r.task.memalloc = memalloc
    pfn = one_page(r, ANON, PG_LOCKED | PG_ISOLATED)
    calls = spy_rc(r)
    succeeded, failed, leftover, _ = run_proc(
        r, r.migration.migrate_pages(r.task, [pfn], L, targets(r, 1), lambda ps: None))
    if moved:
        # Three trylock failures, then the forced fourth pass sleeps on the lock.
        assert [rc for _, _, rc in calls] == [EAGAIN] * 3 + [MIGRATEPAGE_SUCCESS]
        assert (succeeded, failed, leftover) == (1, 0, [])
        assert r.env.now >= LOCK_WAIT
    else:
        assert [rc for _, _, rc in calls] == [EAGAIN] * 10
        assert (succeeded, failed, leftover) == (0, 1, [pfn])
        assert r.env.now == 0.0                # no pass waited
        assert r.m.events["pgmigrate_fail"] == 1


def test_batched_sync_retries_what_the_async_batch_refused():
    """6.3+ migrate_pages_sync: every failure of the async batch (writeback -EBUSY too)
    is retried one by one in the requested mode. Regression: -EBUSY pages were dropped."""
    r = make_rig("v6.10")
    wb = one_page(r, ANON, PG_WRITEBACK | PG_ISOLATED)
    calls = spy_rc(r)
    out = run_proc(r, r.migration.migrate_pages(r.task, [wb], S, targets(r, 1), lambda ps: None))
    assert out[:3] == (1, 0, [])
    assert [(m, rc) for _, m, rc in calls] == [(A, EBUSY), (S, MIGRATEPAGE_SUCCESS)]
    # SYNC_LIGHT refuses again in its own pass: a permanent failure.
    r = make_rig("v6.10")
    wb = one_page(r, ANON, PG_WRITEBACK | PG_ISOLATED)
    calls = spy_rc(r)
    out = run_proc(r, r.migration.migrate_pages(r.task, [wb], L, targets(r, 1), lambda ps: None))
    assert out[:3] == (0, 1, [wb])
    assert [(m, rc) for _, m, rc in calls] == [(A, EBUSY), (L, EBUSY)]


@pytest.mark.parametrize("profile", ["v6.1", "v6.10"])
def test_enomem_counts_only_the_pages_tried(profile):
    """Out of targets: the call stops; the page that found none (and, 6.3+, pages of the
    pass already retried) count in pgmigrate_fail, the untried rest is just returned."""
    r = make_rig(profile)
    pinned = one_page(r, ANON, PG_EXTRA_REF | PG_ISOLATED)
    pages = [pinned] + [one_page(r, ANON, PG_ISOLATED) for _ in range(4)]
    succeeded, failed, leftover, enomem = run_proc(
        r, r.migration.migrate_pages(r.task, pages, A, targets(r, 1), lambda ps: None))
    assert enomem
    assert succeeded == 1
    assert failed == 4 and sorted(leftover) == sorted([pinned] + pages[2:])
    # pass 1: pinned -EAGAIN, pages[1] moved, pages[2] found no target, two untried
    assert r.m.events["pgmigrate_fail"] == 2
    assert r.m.events["pgmigrate_success"] == 1


# --- writeback under compaction ----------------------------------------------------------------

NR_WB = 8


def writeback_layout(pfn: int):
    """Blocks 0-15 full of anonymous pages, the first NR_WB under writeback; blocks 16+
    half free (an order-8 free block each) for targets."""
    block, off = pfn >> PAGEBLOCK_ORDER, pfn & (PAGEBLOCK_NR_PAGES - 1)
    if block >= 16:
        return None if off < PAGEBLOCK_NR_PAGES // 2 else (ANON, 0)
    return (ANON, PG_WRITEBACK if pfn < NR_WB else 0)


def compact_writeback(profile: str, mode: MigrateMode):
    r = make_rig(profile)
    populate(r, writeback_layout)
    anon = count_kind(r.m, ANON)
    calls = spy_rc(r)
    if mode is S:                           # echo 1 > /proc/sys/vm/compact_memory
        run_proc(r, compact_node(r.m, r.compaction, 0, r.task))
        assert r.compaction.results == {"manual/complete": 1}
    else:
        cc = CompactControl(zone=r.zone, order=-1, mode=mode, trigger=Trigger.PROACTIVE,
                            task=r.task, gfp=GFP_KERNEL, whole_zone=True,
                            ignore_skip_hint=True)
        assert run_proc(r, r.compaction.run(cc)) is CompactResult.COMPLETE
    assert count_kind(r.m, ANON) == anon
    flags = np.frombuffer(r.m.mem.flags, dtype=np.uint8)
    assert not (flags & PG_ISOLATED).any()
    assert r.m.nodes[0].lru_size[LRU_ANON] == anon
    wb_calls = [(m, rc) for p, m, rc in calls if p < NR_WB]
    stayed = all(r.m.mem.kind[p] == ANON and r.m.mem.flags[p] & PG_WRITEBACK
                 for p in range(NR_WB))
    return r, wb_calls, stayed


@pytest.mark.parametrize("profile", ["v6.1", "v6.10"])
@pytest.mark.parametrize("mode", [A, L])
def test_writeback_pages_are_not_isolated_below_sync_in_6x(profile, mode):
    r, wb_calls, stayed = compact_writeback(profile, mode)
    assert wb_calls == []                   # ISOLATE_ASYNC_MIGRATE: never isolated
    assert stayed
    assert not block_is_free(r.m, 0)
    assert block_is_free(r.m, 1)            # the rest of the low blocks did move


def test_sync_light_isolates_writeback_in_4_4_and_gets_ebusy():
    r, wb_calls, stayed = compact_writeback("v4.4", L)
    assert wb_calls == [(L, EBUSY)] * NR_WB
    assert stayed
    assert r.m.events["pgmigrate_fail"] >= NR_WB
    _, wb_calls, stayed = compact_writeback("v4.4", A)
    assert wb_calls == [] and stayed


@pytest.mark.parametrize("profile,expect", [
    ("v4.4", [(S, EAGAIN)] * 3 + [(S, MIGRATEPAGE_SUCCESS)]),
    ("v6.1", [(S, EAGAIN)] * 3 + [(S, MIGRATEPAGE_SUCCESS)]),
    ("v6.10", [(A, EBUSY), (S, MIGRATEPAGE_SUCCESS)]),
])
def test_manual_sync_compaction_waits_for_writeback_and_migrates(profile, expect):
    r, wb_calls, stayed = compact_writeback(profile, S)
    assert not stayed
    assert sorted(wb_calls) == sorted(expect * NR_WB)
    assert block_is_free(r.m, 0)
    # The data moved once writeback ended: the new pages are not under writeback.
    flags = np.frombuffer(r.m.mem.flags, dtype=np.uint8)
    assert not (flags & PG_WRITEBACK).any()
    assert r.env.now >= NR_WB * WB_WAIT


# --- 7. movable_ops designs ---------------------------------------------------------------------

def test_zspages_are_allocated_unmovable_without_movable_ops():
    for design, mt, flags in ((MovableOps.NONE, MigrateType.UNMOVABLE, 0),
                              (MovableOps.MAPPING_OPS, MigrateType.MOVABLE, PG_MOVABLE_OPS)):
        cfg_raw = {"machine": {"memory": "64MiB", "zram": "16MiB"},
                   "kernel": {"movable_ops": design.value, "pcp": False},
                   "workload": [{"name": "x"}]}
        m = build_machine(config_from_dict(cfg_raw), simpy.Environment())
        assert gfp_migratetype(kind_gfp(m.config, PageKind.ZSMALLOC, 0)) == mt
        zram = Zram(m)
        ok, outs = zram.store(Task(comm="kswapd0", pid=100, cpu=0, node=0), 30, 0)
        assert ok and outs
        for out in outs:
            assert m.pageblocks.get_pageblock_migratetype(out.pfn) == mt, design
            assert m.mem.kind[out.pfn] == ZSMALLOC and m.mem.flags[out.pfn] == flags
        listed = set(m.mem.iter_list(m.nodes[0].lists[LIST_ZSPAGES]))
        assert listed == {out.pfn for out in outs}


DRIVER_PFN = 100          # in block 0, among anonymous pages


def driver_layout(kind: int, flags: int):
    def owner(pfn):
        if pfn == DRIVER_PFN:
            return (kind, flags)
        block, off = pfn >> PAGEBLOCK_ORDER, pfn & (PAGEBLOCK_NR_PAGES - 1)
        if block >= 8:
            return None if off < PAGEBLOCK_NR_PAGES // 2 else (ANON, 0)
        return None if pfn & 16 == 0 else (ANON, 0)
    return owner


def compact_with_driver_page(design: MovableOps, kind: int, busy: bool = False,
                             profile: str = "v6.10"):
    r = make_rig(profile, movable_ops=design.value)
    movable = kind == BALLOON or design is not MovableOps.NONE
    populate(r, driver_layout(kind, PG_MOVABLE_OPS if movable else 0))
    if busy:
        mapped_by_zram(r, DRIVER_PFN)
    mt = gfp_migratetype(kind_gfp(r.m.config, PageKind.BALLOON if kind == BALLOON
                                  else PageKind.ZSMALLOC, 0))
    r.m.pageblocks.set_pageblock_migratetype(DRIVER_PFN, mt)   # where its allocation lands
    before = count_kind(r.m, kind)
    calls = spy_rc(r)
    run_proc(r, compact_node(r.m, r.compaction, 0, r.task))
    r.driver_calls = [rc for pfn, _, rc in calls if pfn == DRIVER_PFN]
    assert count_kind(r.m, kind) == before == 1
    where = int(np.flatnonzero(np.frombuffer(r.m.mem.kind, dtype=np.uint8) == kind)[0])
    head = LIST_BALLOON if kind == BALLOON else LIST_ZSPAGES
    assert list(r.m.mem.iter_list(r.m.nodes[0].lists[head])) == [where]
    assert not r.m.mem.flags[where] & PG_ISOLATED
    return r, where


def test_zspage_without_movable_ops_is_never_migrated_and_pins_its_block():
    r, where = compact_with_driver_page(MovableOps.NONE, ZSMALLOC)
    assert where == DRIVER_PFN
    assert r.driver_calls == []              # not even isolated
    assert r.m.pageblocks.get_pageblock_migratetype(DRIVER_PFN) == MigrateType.UNMOVABLE
    assert not block_is_free(r.m, 0)
    assert block_is_free(r.m, 1)
    # Every anonymous page of block 0 left; only the zspage is in use there.
    kinds = np.frombuffer(r.m.mem.kind, dtype=np.uint8)[:PAGEBLOCK_NR_PAGES]
    assert int((kinds != KIND_NONE).sum()) == 1


@pytest.mark.parametrize("design", [MovableOps.MAPPING_OPS, MovableOps.PAGE_TYPE])
def test_zspage_with_movable_ops_is_migrated_and_frees_its_block(design):
    r, where = compact_with_driver_page(design, ZSMALLOC)
    assert where != DRIVER_PFN
    assert r.driver_calls == [MIGRATEPAGE_SUCCESS]
    assert block_is_free(r.m, 0)
    assert r.m.mem.flags[where] & PG_MOVABLE_OPS
    assert r.m.events["balloon_migrate"] == 0


def test_zspage_zram_holds_mapped_fails_once_per_pass_in_6_15_and_keeps_its_block():
    """zspage_write_trylock fails: zs_page_migrate returns -EINVAL, a final failure of
    the async batch, retried once by the sync one-by-one pass (migrate_pages_sync)."""
    r, where = compact_with_driver_page(MovableOps.PAGE_TYPE, ZSMALLOC, busy=True,
                                        profile="v6.17")
    assert where == DRIVER_PFN
    assert not block_is_free(r.m, 0)
    assert r.driver_calls == [EINVAL, EINVAL]
    assert r.m.events["pgmigrate_fail"] >= 1
    assert r.zram.pool.migrate_busy == 2


@pytest.mark.parametrize("design", [MovableOps.NONE, MovableOps.MAPPING_OPS])
def test_balloon_pages_migrate_under_every_design(design):
    r, where = compact_with_driver_page(design, BALLOON)
    assert where != DRIVER_PFN
    assert block_is_free(r.m, 0)
    assert r.m.events["balloon_migrate"] == 1
    assert r.m.events["pgmigrate_success"] >= 1


# --- 8. memmap cost of the designs -------------------------------------------------------------

@pytest.mark.parametrize("design,struct_page", [
    (MovableOps.NONE, 64), (MovableOps.MAPPING_OPS, 64), (MovableOps.PAGE_TYPE, 64),
    (MovableOps.PAGE_FLAG_CALLBACKS, 96)])
def test_memmap_of_a_16gib_machine_is_the_arithmetic(design, struct_page):
    cfg = config_from_dict({"machine": {"memory": "16GiB"},
                            "kernel": {"movable_ops": design.value},
                            "workload": [{"name": "x"}]})
    m = build_machine(cfg, simpy.Environment())
    pages = 16 * GIB // 4096
    memmap_bytes = 16 * GIB * struct_page // 4096
    assert memmap_bytes == {64: 256 * MIB, 96: 384 * MIB}[struct_page]
    memmap_pages = memmap_bytes // 4096
    z = m.zones[0]
    assert m.struct_page_size == struct_page
    assert m.nodes[0].memmap_pages == memmap_pages
    assert z.present_pages == pages
    assert z.managed_pages == pages - memmap_pages
    assert z.free_pages == z.managed_pages          # everything else was freed at boot
    s = memmap_summary(m)
    assert s["memmap_bytes"] == memmap_bytes
    assert s["managed_pages"] == pages - memmap_pages
    assert s["memmap_percent_of_ram"] == pytest.approx(100 * struct_page / 4096, abs=1e-4)
    assert s["memmap_bytes_by_design"]["PAGE_FLAG_CALLBACKS"] == 384 * MIB
    assert s["memmap_bytes_by_design"]["MAPPING_OPS"] == 256 * MIB


def test_memmap_comes_out_of_the_top_zone_only():
    cfg = config_from_dict({"machine": {"memory": "16GiB", "dma32": "4GiB"},
                            "kernel": {"movable_ops": "PAGE_FLAG_CALLBACKS"},
                            "workload": [{"name": "x"}]})
    m = build_machine(cfg, simpy.Environment())
    dma32, normal = m.zones
    assert dma32.managed_pages == dma32.present_pages == 4 * GIB // 4096
    assert normal.present_pages == 12 * GIB // 4096
    assert normal.managed_pages == normal.present_pages - 384 * MIB // 4096
    assert m.managed_pages == 16 * GIB // 4096 - 384 * MIB // 4096


def test_page_flags_budget_per_design():
    from compactsim.sim.config import PageFlagsConfig
    base = PageFlagsConfig()
    callbacks = page_flags_budget(base, MovableOps.PAGE_FLAG_CALLBACKS)
    mapping = page_flags_budget(base, MovableOps.MAPPING_OPS)
    # PG_movable costs one flag bit; the three pointers 24 bytes, padded 88 -> 96.
    assert callbacks.nr_pageflags == mapping.nr_pageflags + 1
    assert (mapping.struct_page_bytes, callbacks.struct_page_bytes) == (64, 96)
    assert mapping.memmap_percent == pytest.approx(1.5625)
    assert callbacks.memmap_percent == pytest.approx(2.3438, abs=1e-4)
    # 6 node + 3 zone + 3 LRU_GEN bits and 21 LAST_CPUPID bits fit beside 24/25 flags.
    assert mapping.last_cpupid_in_flags and callbacks.last_cpupid_in_flags
    assert (mapping.free_bits, callbacks.free_bits) == (64 - 24 - 12 - 21, 64 - 25 - 12 - 21)
    # With 8 KASAN tag bits LAST_CPUPID no longer fits: `int _last_cpupid` joins struct
    # page, 68 bytes padded to 80.
    tagged = dataclasses.replace(base, kasan_tag_width=8)
    b = page_flags_budget(tagged, MovableOps.MAPPING_OPS)
    assert not b.last_cpupid_in_flags and b.builds and b.struct_page_bytes == 80
