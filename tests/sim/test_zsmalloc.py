"""zsmalloc (sim/zsmalloc.py): size classes, fullness groups, zs_malloc/zs_free packing,
zs_compact with its shrinker and pages_compacted, and the locks a zspage's migration
takes in each era (mm/zsmalloc.c at 4.8, 5.17, 6.2/6.3 and 6.15)."""

from __future__ import annotations

import pytest
import simpy

from compactsim.sim.config import config_from_dict
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, GFP_HIGHUSER_MOVABLE
from compactsim.sim.machine import build_machine
from compactsim.sim.migrate import EINVAL, MIGRATEPAGE_SUCCESS, MigrateMode, Migration
from compactsim.sim.page import ALLOC, PG_ISOLATED
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.rng import RngStreams
from compactsim.sim.run import run
from compactsim.sim.sampling import migrated_by_kind
from compactsim.sim.task import Task
from compactsim.sim.zram import Zram
from compactsim.sim.zsmalloc import (
    ZS_ALMOST_EMPTY,
    ZS_ALMOST_FULL,
    ZS_EMPTY,
    ZS_FULL,
    ZS_HANDLE_SIZE,
    ZS_INUSE_RATIO_0,
    ZS_INUSE_RATIO_10,
    ZS_INUSE_RATIO_99,
    ZS_INUSE_RATIO_100,
    ZS_SIZE_CLASSES,
    fullness_4_8,
    fullness_6_3,
    get_pages_per_zspage,
    get_size_class_index,
)


def kswapd() -> Task:
    return Task(comm="kswapd0", pid=100, cpu=0, node=0)


def reaper() -> Task:
    return Task(comm="reaper", pid=90, cpu=1, node=0)

QUARTER = 1024 - ZS_HANDLE_SIZE     # a chunk of exactly 1 KiB: 4 objects per 1-page zspage


def make(profile: str = "v6.10", **costs):
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 2, "zram": "16MiB"},
                            "kernel": {"profile": profile, "pcp": False},
                            "costs": costs, "workload": [{"name": "x"}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    return m, env, Zram(m)


def malloc(zram: Zram, n: int, size: int = QUARTER) -> list[int]:
    outs: list = []
    task = kswapd()
    handles = [zram.pool.zs_malloc(task, size, outs) for _ in range(n)]
    assert min(handles) >= 0
    return handles


def free(zram: Zram, handles) -> list:
    outs: list = []
    for h in handles:
        zram.pool.zs_free(reaper(), h, outs)
    return outs


# --- geometry -------------------------------------------------------------------------------

def test_size_classes_and_chain_lengths_are_the_kernels():
    assert ZS_SIZE_CLASSES == 255                      # 4 KiB pages: 32 .. 4096 by 16
    assert get_size_class_index(32) == 0
    assert get_size_class_index(33) == 1
    assert get_size_class_index(4096) == ZS_SIZE_CLASSES - 1
    assert get_size_class_index(4104) == ZS_SIZE_CLASSES - 1
    # "for size class of 3/8 * PAGE_SIZE, we should link together 3 PAGE_SIZE sized pages
    # to form a zspage since then we can perfectly fit in 8 such objects"
    assert get_pages_per_zspage(1536, 4) == 3
    assert get_pages_per_zspage(32, 4) == 1
    # 6.3's longer chains pack big objects: 9 of 3632 bytes in 8 pages (99 % used)
    # where 4 pages could not beat one object per page (88 %).
    assert get_pages_per_zspage(3632, 4) == 1
    assert get_pages_per_zspage(3632, 8) == 8


@pytest.mark.parametrize("profile,chain", [("v6.1", 4), ("v6.10", 8)])
def test_classes_merge_by_geometry_and_huge_class_size_follows_the_chain(profile, chain):
    _, _, zram = make(profile)
    pool = zram.pool
    assert pool.chain == chain
    for cls in pool.classes:
        assert cls.pages_per_zspage == get_pages_per_zspage(cls.size, chain)
    # A merged index uses the larger class with the same pages and objects per zspage.
    for i, cls in enumerate(pool.size_class):
        assert cls.size >= min(32 + 16 * i, 4096)
        assert cls.objs_per_zspage == cls.pages_per_zspage * 4096 // cls.size
    assert len(pool.classes) < ZS_SIZE_CLASSES
    # huge_class_size: the smallest 1-page, 1-object class, less ZS_HANDLE_SIZE - 1.
    index = get_size_class_index(pool.huge_class_size + ZS_HANDLE_SIZE - 1)
    huge, below = pool.size_class[index], pool.size_class[index - 1]
    assert 32 + 16 * index == pool.huge_class_size + ZS_HANDLE_SIZE - 1
    assert (huge.pages_per_zspage, huge.objs_per_zspage) == (1, 1)
    assert below.objs_per_zspage > 1
    assert pool.huge_class_size > (3000 if chain == 4 else 3500)


def test_fullness_groups_of_each_era():
    # 4.8: almost empty up to 3/4 in use (fullness_threshold_frac 4)
    assert [fullness_4_8(n, 8) for n in (0, 1, 6, 7, 8)] == [
        ZS_EMPTY, ZS_ALMOST_EMPTY, ZS_ALMOST_EMPTY, ZS_ALMOST_FULL, ZS_FULL]
    # 6.3: 10 % steps; 1 of 127 is in _10 (not 0), 126 of 127 in _99
    assert [fullness_6_3(n, 127) for n in (0, 1, 13, 64, 126, 127)] == [
        ZS_INUSE_RATIO_0, ZS_INUSE_RATIO_10, 2, 6, ZS_INUSE_RATIO_99, ZS_INUSE_RATIO_100]


# --- zs_malloc / zs_free ----------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["v4.12", "v6.10"])
def test_zs_malloc_fills_the_fullest_partial_zspage_and_zs_free_frees_empty_ones(profile):
    m, _, zram = make(profile)
    pool = zram.pool
    free_before = m.zones[0].free_pages
    a = malloc(zram, 4)
    b = malloc(zram, 4)
    assert pool.pages_allocated == 2                   # 4 objects per 1-page zspage
    assert m.zones[0].free_pages == free_before - 2
    za, zb = pool.handle_zspage[a[0]], pool.handle_zspage[b[0]]
    assert za is not zb
    free(zram, a[:3])                                  # a: 1 of 4 in use
    free(zram, b[:1])                                  # b: 3 of 4 in use
    (h,) = malloc(zram, 1)
    assert pool.handle_zspage[h] is zb                 # the fullest partial zspage
    outs = free(zram, a[3:])                           # a is empty: its page goes back
    assert len(outs) == 1 and pool.pages_allocated == 1
    assert m.zones[0].free_pages == free_before - 1
    assert pool.objects == 4 and pool.compr_bytes == 4 * QUARTER


def test_zram_stores_incompressible_pages_whole():
    _, _, zram = make("v6.10")
    pool = zram.pool
    (h,) = malloc(zram, 1, size=pool.huge_class_size)
    assert pool.handle_zspage[h].cls.size == 4096
    assert pool.huge_objects == 1 and pool.compr_bytes == 4096


# --- zs_compact ---------------------------------------------------------------------------------

def sparse(zram: Zram, zspages: int) -> list[int]:
    """`zspages` one-page zspages holding one object each."""
    handles = malloc(zram, 4 * zspages)
    keep = handles[::4]
    free(zram, [h for h in handles if h not in keep])
    assert zram.pool.pages_allocated == zspages
    return keep


@pytest.mark.parametrize("profile", ["v4.12", "v6.1", "v6.10", "v6.17"])
def test_zs_compact_packs_objects_and_counts_pages_compacted(profile):
    m, _, zram = make(profile)
    keep = sparse(zram, 3)
    pool = zram.pool
    assert pool.freeable == 2                 # zs_can_compact: (12 - 3) // 4 zspages
    free_before = m.zones[0].free_pages
    outs = zram.compact(kswapd())
    assert len(outs) == 2 and m.zones[0].free_pages == free_before + 2
    assert pool.pages_allocated == 1 and pool.pages_compacted == 2
    assert len({id(pool.handle_zspage[h]) for h in keep}) == 1
    assert zram.mm_stat().split()[6] == "2"       # mm_stat: pages_compacted
    free(zram, keep)
    assert pool.pages_allocated == 0


def test_shrinker_defers_small_counts_and_compacts_at_higher_priority():
    """do_shrink_slab: delta = (freeable >> priority) * 4 / seeks, scanned once it
    reaches min(batch, freeable)."""
    _, _, zram = make("v6.10")
    sparse(zram, 3)
    pool = zram.pool
    assert pool.shrink(kswapd(), 12) == [] and pool.pages_compacted == 0
    assert len(pool.shrink(kswapd(), 0)) == 2 and pool.pages_compacted == 2


# --- locks against migration --------------------------------------------------------------------

def migrate_while_zram_writes(profile: str, into: float):
    """zram writes an object into a zspage (the copy holds the zspage read lock for
    1 ms); `into` seconds after the copy began, compaction migrates the zspage's page."""
    m, env, zram = make(profile, zs_map_copy_us=1000.0, zs_malloc_us=1.0)
    (h,) = malloc(zram, 1)
    pfn = zram.pool.handle_zspage[h].pfns[0]
    mig = Migration(m, RngStreams(1)("migrate.driver"), zsmalloc=zram.pool)
    env.run(until=1e-6 + into)
    return m, env, zram, mig, pfn


@pytest.mark.parametrize("profile", ["v4.12", "v6.1", "v6.10"])
def test_migration_waits_for_zram_before_6_15(profile):
    _, _, _, mig, pfn = migrate_while_zram_writes(profile, 0.4e-3)
    rc, waited = mig.unmap_and_move_rc(pfn, MigrateMode.ASYNC, False, False)
    assert rc == MIGRATEPAGE_SUCCESS
    assert waited == pytest.approx(0.6e-3)          # the rest of zram's copy


def test_migration_fails_at_once_in_6_15_when_zram_holds_the_zspage():
    _, _, zram, mig, pfn = migrate_while_zram_writes("v6.17", 0.4e-3)
    assert mig.unmap_and_move_rc(pfn, MigrateMode.SYNC, True, False) == (EINVAL, 0.0)
    assert zram.pool.migrate_busy == 1
    assert zram.pool.locks()["zspage_lock"]["trylock_failed"] == 1
    # Once zram is done the trylock succeeds.
    _, _, zram, mig, pfn = migrate_while_zram_writes("v6.17", 1.5e-3)
    assert mig.unmap_and_move_rc(pfn, MigrateMode.SYNC, True, False) == (MIGRATEPAGE_SUCCESS,
                                                                         0.0)


def test_einval_is_not_retried_within_a_pass():
    m, env, zram, mig, pfn = migrate_while_zram_writes("v6.17", 0.0)
    task = Task(comm="kcompactd0", pid=50, cpu=1, node=0)
    m.mem.flags[pfn] |= PG_ISOLATED
    target = get_page_from_freelist(m, task, GFP_HIGHUSER_MOVABLE, 0, ALLOC_NO_WATERMARKS).pfn

    def get_target():
        return target
        yield

    proc = env.process(mig.migrate_pages(task, [pfn], MigrateMode.ASYNC, get_target,
                                         lambda ps: [free_pages(m, task, p, 0) for p in ps]))
    env.run(until=proc)
    succeeded, failed, left, _ = proc.value
    assert (succeeded, failed, left) == (0, 1, [pfn])
    assert zram.pool.migrate_busy == 1               # one try in ten passes


def test_migrated_page_stays_in_its_zspage():
    m, env, zram, mig, pfn = migrate_while_zram_writes("v6.10", 2e-3)
    task = Task(comm="kcompactd0", pid=50, cpu=1, node=0)
    m.mem.flags[pfn] |= PG_ISOLATED
    target = get_page_from_freelist(m, task, GFP_HIGHUSER_MOVABLE, 0, ALLOC_NO_WATERMARKS).pfn

    def get_target():
        return target
        yield

    proc = env.process(mig.migrate_pages(task, [pfn], MigrateMode.ASYNC, get_target,
                                         lambda ps: [free_pages(m, task, p, 0) for p in ps]))
    env.run(until=proc)
    assert proc.value[0] == 1
    pool = zram.pool
    assert pfn not in pool.by_pfn and pool.by_pfn[target].pfns == [target]
    assert migrated_by_kind(m) == {"anon": 0, "file": 0, "zsmalloc": 1, "balloon": 0}
    assert pool.migrated == 1
    (h,) = list(pool.by_pfn[target].objs)
    free(zram, [h])
    assert m.mem.kind[target] == 0 and m.mem.pstate[target] != ALLOC
    assert not pool.by_pfn


def test_zs_compact_holds_the_class_lock_migration_waits_for_in_4_8():
    m, env, zram = make("v4.12", zs_map_copy_us=1000.0)
    sparse(zram, 3)
    pool = zram.pool
    zram.compact(kswapd())                     # moves 2 objects: holds the class 2 ms
    (zspage,) = {z for z in pool.by_pfn.values()}
    mig = Migration(m, RngStreams(1)("migrate.driver"), zsmalloc=pool)
    rc, waited = mig.unmap_and_move_rc(zspage.pfns[0], MigrateMode.ASYNC, False, False)
    assert rc == MIGRATEPAGE_SUCCESS and waited > 1.5e-3
    assert pool.locks()["zs_class_lock"]["contended"] >= 1


# --- a run -----------------------------------------------------------------------------------

def test_zram_compact_attribute_runs_zs_compact_in_a_run():
    spec = {"seed": 3, "duration": "6s",
            "machine": {"memory": "128MiB", "cpus": 2, "zram": "128MiB"},
            "kernel": {"profile": "v6.10"},
            "zram_compact": ["5s"],
            "workload": [{"name": "apps", "kind": "anon", "tasks": 2, "rate": 400,
                          "batch": 16, "lifetime": {"distribution": "exponential",
                                                    "mean": "4s"}}]}
    res = run(config_from_dict(spec))
    z = res.summary["zram"]
    assert z["zs_compact_runs"] >= 1 and z["pages_compacted"] > 0
    assert int(res.files["mm_stat"].split()[6]) == z["pages_compacted"]
    assert set(res.summary["migrated_by_kind"]) >= {"anon", "file", "zsmalloc", "balloon"}
    again = run(config_from_dict(spec))
    assert again.summary["zram"] == z                          # deterministic
