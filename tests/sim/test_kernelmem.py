"""Implicit kernel allocations (sim/kernelmem.py): page tables from faults, slab from
file I/O, sk_buff heads from network buffers, stacks and task structs from forks, with
the kernel's orders and GFP flags, owed by a running count and freed with their cause."""

from __future__ import annotations

import pytest
import simpy

from compactsim.sim.config import PageKind, config_from_dict
from compactsim.sim.gfp import (
    __GFP_DIRECT_RECLAIM,
    __GFP_KSWAPD_RECLAIM,
    __GFP_NORETRY,
    ALLOC_NO_WATERMARKS,
    GFP_KERNEL,
    gfp_migratetype,
)
from compactsim.sim.kernelmem import ANON_PAGES_PER_PTE, FILE_SLABS, PTE, KernelMemory, slab_gfp
from compactsim.sim.lifetimes import Lifetimes
from compactsim.sim.machine import build_machine
from compactsim.sim.page import KIND_CODE
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import MigrateType
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.run import run
from compactsim.sim.slowpath import Allocator
from compactsim.sim.task import Task
from compactsim.sim.zram import Zram


def spec(*groups, profile="v6.10", duration="2s"):
    return {"seed": 5, "duration": duration, "kernel": {"profile": profile},
            "machine": {"memory": "256MiB", "cpus": 2}, "workload": list(groups)}


LONG = {"distribution": "forever"}


def test_anonymous_faults_allocate_unmovable_page_tables():
    anon = {"name": "anon", "kind": "anon", "rate": 100, "batch": 40, "lifetime": LONG}
    s = run(config_from_dict(spec(anon))).summary
    faulted = s["allocations"]["anon/order0"]["successes"]
    pte = s["kernel_memory"]["pte"]["allocated"]
    assert pte == faulted // ANON_PAGES_PER_PTE
    assert s["vmstat"]["nr_slab_unreclaimable"] == pte          # all still mapped
    assert gfp_migratetype(PTE.gfp) == MigrateType.UNMOVABLE
    off = run(config_from_dict(spec({**anon, "implicit_kernel": False}))).summary
    assert off["kernel_memory"] == {} and off["vmstat"]["nr_slab_unreclaimable"] == 0


def test_file_io_allocates_reclaimable_slab_and_frees_it_with_the_files():
    short = {"distribution": "fixed", "mean": "0.5s"}
    files = {"name": "files", "kind": "file", "rate": 100, "batch": 32, "lifetime": short}
    s = run(config_from_dict(spec(files))).summary
    km = s["kernel_memory"]
    cached = s["allocations"]["file/order0"]["successes"]
    for src in FILE_SLABS:
        assert km[src.name]["allocated"] == pytest.approx(cached / src.per, abs=2)
        assert gfp_migratetype(src.gfp) == MigrateType.RECLAIMABLE
    # the slabs of files freed half a second ago are gone: only the last ~0.5 s remain
    live = s["vmstat"]["nr_slab_reclaimable"]
    made = sum(km[src.name]["allocated"] << src.order for src in FILE_SLABS)
    assert 0 < live < made / 2


@pytest.mark.parametrize("profile,name,count,order", [("v4.8", "thread_stack", 1, 2),
                                                      ("v6.10", "thread_stack_vmap", 4, 0)])
def test_forks_allocate_stacks_of_their_era(profile, name, count, order):
    forker = {"name": "shell", "kind": "anon", "rate": 50, "forks": 1, "lifetime": LONG}
    s = run(config_from_dict(spec(forker, profile=profile))).summary
    requests = s["allocations"]["anon/order0"]["attempts"]
    km = s["kernel_memory"]
    assert km[name]["allocated"] == count * requests
    assert km["fork_pgtables"]["allocated"] == 4 * requests
    assert km["task_struct"]["allocated"] == requests // 3
    assert s["vmstat"]["nr_kernel_stack"] == count * requests * (4 << order)   # KiB


def test_fractional_forks_add_up_over_requests():
    """forks: 0.25 is one fork every fourth request (a running total, as for every
    source), not none."""
    forker = {"name": "shell", "kind": "anon", "rate": 50, "forks": 0.25, "lifetime": LONG}
    s = run(config_from_dict(spec(forker, profile="v6.10"))).summary
    requests = s["allocations"]["anon/order0"]["attempts"]
    assert requests >= 40
    assert s["kernel_memory"]["thread_stack_vmap"]["allocated"] == 4 * (requests // 4)


def test_high_order_slab_falls_back_to_order_0_without_reclaim():
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 1},
                            "kernel": {"pcp": False}, "workload": [{"name": "x"}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    task = Task(comm="cat", pid=7, cpu=0, node=0)
    pfns = []
    while (pfn := get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS).pfn) >= 0:
        pfns.append(pfn)
    for pfn in pfns[::2]:                         # free order-0 pages only, plenty of them
        free_pages(m, task, pfn, 0)
    km = KernelMemory(m, Allocator(m, Reclaim(m, Zram(m))), Lifetimes(m, 0.01))
    inode = next(s for s in FILE_SLABS if s.order == 3)
    assert not slab_gfp(inode.gfp) & (__GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM)
    assert slab_gfp(inode.gfp) & __GFP_NORETRY
    proc = env.process(km._allocate(task, inode, 0))
    env.run(until=proc)
    assert km.summary()["ext4_inode_cache"] == {"allocated": 1, "failed": 0,
                                                "fell_back_to_order0": 1}
    assert m.events["compact_stall"] == 0 and m.events["allocstall_normal"] == 0
    got = [p for p in pfns[::2] if m.mem.kind[p] == KIND_CODE[PageKind.SLAB_RECLAIMABLE]]
    assert len(got) == 1


def loaded(implicit: bool) -> dict:
    """Page cache filling 85 % of memory, anonymous churn and madvised THP faults."""
    life = {"distribution": "exponential", "mean": "1s"}
    groups = [{"name": "cache", "kind": "file", "pattern": "fill", "fill_fraction": 0.85,
               "rate": 300, "batch": 32, "lifetime": {**life, "mean": "3s"}},
              {"name": "apps", "kind": "anon", "tasks": 2, "rate": 200, "batch": 16,
               "lifetime": life},
              {"name": "thp", "kind": "thp", "rate": 20, "order_mix": {9: 1}, "madvise": True,
               "lifetime": life}]
    res = run(config_from_dict({**spec(*[{**g, "implicit_kernel": implicit} for g in groups]),
                                "seed": 4, "duration": "4s"}))
    return {"fallbacks": res.trace.count("mm_page_alloc_extfrag"),
            "thp": res.summary["allocations"]["thp/order9"]["success_ratio"],
            "stall": res.summary["vmstat"]["compact_stall"]}


def test_implicit_kernel_memory_mixes_pageblocks_a_user_only_workload_never_did():
    without, with_kernel = loaded(False), loaded(True)
    assert without["fallbacks"] == 0
    assert with_kernel["fallbacks"] > 0                 # unmovable/reclaimable into movable
    assert with_kernel["thp"] < without["thp"]
    assert with_kernel["stall"] > without["stall"]
