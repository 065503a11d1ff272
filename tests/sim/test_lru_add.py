"""The per-cpu LRU add batch (sim/lru.py): pages wait there, not PageLRU, until it drains.

Expected values follow mm/swap.c and mm/compaction.c (4.4 and 6.x): `lru_cache_add` /
`folio_add_lru` put a new page in the CPU's batch and move the batch to the lists
(`__pagevec_lru_add` / `folio_batch_move_lru`) when it holds PAGEVEC_SIZE (15) entries
or takes a compound page; until then the page is not PageLRU and
`isolate_migratepages_block` passes it over. `compact_zone` calls `lru_add_drain()` for
the local CPU before scanning (4.4 `migrate_prep_local`).
"""

from __future__ import annotations

import numpy as np
import simpy
from rig import Rig, block_is_free, make_rig, populate

from compactsim.sim.compaction import CompactControl, Compaction, CompactResult, Trigger
from compactsim.sim.config import PageKind, config_from_dict
from compactsim.sim.gfp import GFP_KERNEL
from compactsim.sim.lru import PAGEVEC_SIZE, del_page_from_lru, lru_list_for
from compactsim.sim.machine import build_machine
from compactsim.sim.migrate import MigrateMode, Migration
from compactsim.sim.page import ALLOC, KIND_CODE, PG_LRU
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.rng import RngStreams
from compactsim.sim.slowpath import Allocator
from compactsim.sim.task import Task
from compactsim.sim.workload import Workload
from compactsim.sim.zram import Zram

ANON = KIND_CODE[PageKind.ANON]


def anon_pages(m) -> tuple[int, int]:
    """(allocated anonymous base pages, how many of them are PageLRU)."""
    kind = np.frombuffer(m.mem.kind, dtype=np.uint8)
    pstate = np.frombuffer(m.mem.pstate, dtype=np.uint8)
    flags = np.frombuffer(m.mem.flags, dtype=np.uint8)
    mine = (kind == ANON) & (pstate == ALLOC)
    return int(mine.sum()), int((mine & (flags & PG_LRU != 0)).sum())


def test_a_tasks_new_pages_become_pagelru_in_batches_of_pagevec_size():
    """Four pages a second: after three requests all twelve wait in the batch; the
    fourth request's third page fills it (15 entries), so 15 pages are PageLRU and one
    still waits."""
    assert PAGEVEC_SIZE == 15
    cfg = config_from_dict({
        "machine": {"memory": "64MiB", "cpus": 2},
        "kernel": {"profile": "v6.10"},
        "workload": [{"name": "a", "kind": "ANON", "pattern": "PERIODIC", "rate": 1.0,
                      "batch": 4, "implicit_kernel": False,
                      "lifetime": {"distribution": "FOREVER"}}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    zram = Zram(m)
    reclaim = Reclaim(m, zram)
    migration = Migration(m, RngStreams(cfg.seed)("migrate.driver"), zsmalloc=zram.pool)
    Workload(m, Allocator(m, reclaim, Compaction(m, migration, reclaim)), zram,
             RngStreams(cfg.seed))
    env.run(until=3.5)
    assert anon_pages(m) == (12, 0)
    assert m.nodes[0].lru_size.tolist() == [0] * len(m.nodes[0].lru_size)
    env.run(until=4.5)
    assert anon_pages(m) == (16, 15)


def pending_layout(r: Rig, owner: Task) -> list[int]:
    """Half-full zone (16-page runs free, then anonymous); the first 14 anonymous pages
    of block 0 sit in `owner`'s add batch instead of on the LRU."""
    populate(r, lambda pfn: None if pfn & 16 == 0 else (ANON, 0))
    waiting = list(range(16, 16 + PAGEVEC_SIZE - 1))
    for pfn in waiting:
        del_page_from_lru(r.m, pfn, 1, lru_list_for(ANON, int(r.m.mem.flags[pfn])))
        owner.lru_add.append(pfn)
    return waiting


def whole_zone(r: Rig, task: Task) -> CompactControl:
    return CompactControl(zone=r.zone, order=-1, mode=MigrateMode.SYNC, trigger=Trigger.MANUAL,
                          task=task, gfp=GFP_KERNEL, whole_zone=True, ignore_skip_hint=True)


def run(r: Rig, cc: CompactControl) -> CompactResult:
    proc = r.env.process(r.compaction.run(cc))
    r.env.run(until=proc)
    return proc.value


def test_compaction_on_another_cpu_passes_over_pages_in_an_add_batch():
    r = make_rig()
    owner = Task(comm="owner", pid=2, cpu=1, node=0)
    waiting = pending_layout(r, owner)
    assert run(r, whole_zone(r, r.task)) is CompactResult.COMPLETE
    mem = r.m.mem
    assert all(mem.kind[p] == ANON and mem.pstate[p] == ALLOC and not mem.flags[p] & PG_LRU
               for p in waiting)
    assert owner.lru_add == waiting
    assert not block_is_free(r.m, 0)


def test_compact_zone_drains_the_local_add_batch_first():
    r = make_rig()
    owner = Task(comm="owner", pid=2, cpu=1, node=0)
    waiting = pending_layout(r, owner)
    assert run(r, whole_zone(r, owner)) is CompactResult.COMPLETE
    assert owner.lru_add == []
    mem = r.m.mem
    assert not any(mem.kind[p] == ANON for p in waiting)    # migrated away
    assert block_is_free(r.m, 0)
