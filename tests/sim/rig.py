"""A small machine to drive the allocator, migration and compaction by hand, shared by the
compaction and migration tests.

`make_rig()` builds a 64 MiB machine (one Normal zone of 32 pageblocks, the memmap in the
top half of the last one, 2 CPUs, per-cpu lists off) with its reclaim, zram, migration
and compaction, outside any run: the test drives SimPy itself. `populate()` allocates
every free page at order 0 and then frees or keeps each pfn with an owner kind and page
flags, placed on its owner's list the way Workload.setup_page leaves them.
"""

from __future__ import annotations

import dataclasses

import simpy

from compactsim.sim.compaction import Compaction
from compactsim.sim.config import PageKind, config_from_dict
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, GFP_HIGHUSER_MOVABLE
from compactsim.sim.lru import add_page_to_lru, lru_list_for
from compactsim.sim.machine import LIST_BALLOON, LIST_ZSPAGES, Machine, build_machine
from compactsim.sim.migrate import Migration
from compactsim.sim.page import KIND_CODE
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.rng import RngStreams
from compactsim.sim.task import Task
from compactsim.sim.zram import Zram

ZSMALLOC = KIND_CODE[PageKind.ZSMALLOC]
BALLOON = KIND_CODE[PageKind.BALLOON]


@dataclasses.dataclass
class Rig:
    m: Machine
    env: simpy.Environment
    reclaim: Reclaim
    migration: Migration
    compaction: Compaction
    zram: Zram
    task: Task

    @property
    def zone(self):
        return self.m.zones[0]


def make_rig(profile: str = "v6.10", tunables: dict | None = None, **kernel) -> Rig:
    """The machine of kernel `profile` with `kernel` switches and `tunables` set, and a
    16 MiB zram device whose zsmalloc pool migration consults."""
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 2, "zram": "16MiB"},
                            "kernel": {"profile": profile, "pcp": False, **kernel},
                            "tunables": tunables or {},
                            "workload": [{"name": "x"}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    zram = Zram(m)
    reclaim = Reclaim(m, zram)
    migration = Migration(m, RngStreams(cfg.seed)("migrate.driver"), zsmalloc=zram.pool)
    return Rig(m, env, reclaim, migration, Compaction(m, migration, reclaim), zram,
               Task(comm="test", pid=1, cpu=0, node=0))


def place(m: Machine, pfn: int, kind: int, flags: int) -> None:
    """Give an allocated order-0 page an owner, on its owner's list (Workload.setup_page)."""
    m.mem.kind[pfn] = kind
    m.mem.flags[pfn] = flags
    lru = lru_list_for(kind, flags)
    node = m.nodes[0]
    if lru >= 0:
        add_page_to_lru(m, pfn, 1, lru)
    elif kind == ZSMALLOC:
        m.mem.list_add(node.lists[LIST_ZSPAGES], pfn)
    elif kind == BALLOON:
        m.mem.list_add(node.lists[LIST_BALLOON], pfn)


def populate(r: Rig, owner) -> None:
    """Allocate every free page at order 0 (movable), then for each pfn in order either
    free it (`owner(pfn)` is None) or place it with `owner(pfn)` = (kind code, flags)."""
    pfns = []
    while True:
        out = get_page_from_freelist(r.m, r.task, GFP_HIGHUSER_MOVABLE, 0, ALLOC_NO_WATERMARKS)
        if out.pfn < 0:
            break
        pfns.append(out.pfn)
    for pfn in sorted(pfns):
        want = owner(pfn)
        if want is None:
            free_pages(r.m, r.task, pfn, 0)
        else:
            place(r.m, pfn, *want)


def block_is_free(m: Machine, block: int) -> bool:
    """The pageblock lies inside one free buddy block."""
    pfn = block * PAGEBLOCK_NR_PAGES
    for o in range(PAGEBLOCK_ORDER, len(m.zones[0].nr_free)):
        s = m.mem.pstate[pfn & ~((1 << o) - 1)]
        if s < 64 and s & 15 == o:
            return True
    return False
