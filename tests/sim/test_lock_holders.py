"""Who holds the lruvec lock and for how long.

mm/compaction.c takes `lruvec->lru_lock` for the isolation itself: the CPU time the
compactor spent before reaching the lock passes outside it. The workload's LRU adds
(`folio_batch_move_lru` for a full per-cpu batch) and its frees (`release_pages`) take
the same lock, so compaction contends with them.
"""

from __future__ import annotations

import pytest
from test_compaction import make_rig, populate

from compactsim.sim.compaction import CompactControl, Trigger
from compactsim.sim.config import PageKind, config_from_dict
from compactsim.sim.gfp import GFP_KERNEL
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page import KIND_CODE
from compactsim.sim.run import run

ANON = KIND_CODE[PageKind.ANON]


def test_lock_hold_excludes_cpu_time_spent_before_the_lock():
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: None if pfn & 16 else (ANON, 0))
    cc = CompactControl(zone=r.zone, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    cc.free_pfn = r.zone.zone_end_pfn - 512
    r.task.debt = 1e-3                      # earlier work of the compactor, not yet waited
    proc = r.env.process(r.compaction.isolate_migratepages(cc))
    r.env.run(until=proc)
    lock = r.m.nodes[0].lru_lock
    assert lock.acquisitions == 1
    assert r.env.now >= 1e-3                # the debt was paid...
    assert 0 < lock.hold_s < 1e-4           # ...outside the critical section


def test_workload_lru_adds_and_frees_take_the_lru_lock():
    cfg = config_from_dict({
        "duration": "2s", "machine": {"memory": "256MiB", "cpus": 2},
        "kernel": {"compaction": False},
        "workload": [{"name": "a", "kind": "anon", "tasks": 2, "rate": 200, "batch": 32,
                      "lifetime": {"distribution": "exponential", "mean": "0.2s"}}]})
    result = run(cfg)
    vm = result.summary["vmstat"]
    assert vm["pgscan_kswapd"] == vm["pgscan_direct"] == 0     # no reclaim took it
    lru = result.summary["locks"]["lru_lock/0"]
    # ~800 requests of 32 pages each way, one hold per request (and per reaper tick).
    assert lru["acquisitions"] >= 800
    assert lru["hold_s"] > 0


def test_reserved_sections_queue_and_exclude_ordinary_lockers():
    import simpy

    from compactsim.sim.locks import SimLock
    env = simpy.Environment()
    lock = SimLock(env, "lru_lock/0")
    assert lock.reserve(2e-6) == 0.0
    assert lock.reserve(3e-6) == pytest.approx(2e-6)   # queued behind the first
    assert not lock.trylock()
    got = []

    def locker():
        yield lock.lock()
        got.append(env.now)
        yield env.timeout(1e-6)
        lock.unlock()
    env.process(locker())
    env.run()
    assert got == [pytest.approx(5e-6)]         # after both reserved sections
    assert lock.reserve(1e-6) == 0.0            # free again
    assert lock.acquisitions == 4 and lock.contended == 2
