"""sim/reclaim.py: kswapd's balance_pgdat / kswapd_try_to_sleep hand-over to kcompactd.

Expected behaviour from mm/vmscan.c (4.12-6.x): `balance_pgdat` returns the order it
stopped reclaiming at, 0 once `compact_gap(order)` pages were reclaimed for a high-order
wakeup; `kswapd()` then goes to `kswapd_try_to_sleep(alloc_order, reclaim_order)`, whose
`prepare_kswapd_sleep` checks balance at the reclaim order and, before napping, calls
`reset_isolation_suitable` and `wakeup_kcompactd` with the original order.
"""

from __future__ import annotations

import simpy

from compactsim.sim.compaction import Compaction
from compactsim.sim.config import PageKind, config_from_dict
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from compactsim.sim.kcompactd import Kcompactd
from compactsim.sim.lru import add_page_to_lru, lru_list_for
from compactsim.sim.machine import build_machine
from compactsim.sim.migrate import Migration
from compactsim.sim.page import KIND_CODE
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.rng import RngStreams
from compactsim.sim.task import Task
from compactsim.sim.zone import WMARK_HIGH, WMARK_LOW
from compactsim.sim.zram import Zram

FILE = KIND_CODE[PageKind.FILE]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]


def owner(pfn: int):
    """Clean page cache everywhere but an unmovable page heading every pageblock, so no
    amount of reclaim frees an order-9 block; 16 free pages per block keep the zone
    just under its LOW watermark."""
    off = pfn & (PAGEBLOCK_NR_PAGES - 1)
    if off == 0:
        return SLAB
    return None if 16 <= off < 18 else FILE


def make(profile: str = "v6.10"):
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 2},
                            "kernel": {"profile": profile, "pcp": False},
                            "tunables": {"compaction_proactiveness": 0},
                            "workload": [{"name": "x"}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    task = Task(comm="test", pid=1, cpu=0, node=0)
    pfns = []
    while (pfn := get_page_from_freelist(m, task, GFP_HIGHUSER_MOVABLE, 0,
                                         ALLOC_NO_WATERMARKS).pfn) >= 0:
        pfns.append(pfn)
    for pfn in sorted(pfns):
        want = owner(pfn)
        if want is None:
            free_pages(m, task, pfn, 0)
        else:
            m.mem.kind[pfn] = want
            if lru_list_for(want, 0) >= 0:
                add_page_to_lru(m, pfn, 1, lru_list_for(want, 0))
    zram = Zram(m)
    reclaim = Reclaim(m, zram)
    migration = Migration(m, RngStreams(cfg.seed)("migrate.driver"), zsmalloc=zram.pool)
    compaction = Compaction(m, migration, reclaim)
    kc = Kcompactd(m, compaction, reclaim)
    reclaim.on_kswapd_sleep = compaction.kswapd_sleep_reset
    wakes = []

    def wake(nid, order, zoneidx):
        z = m.zones[0]
        wakes.append((env.now, order, z.compact_blockskip_flush, int(m.pageblocks.skip[3])))
        kc.wakeup_kcompactd(nid, order, zoneidx)
    reclaim.kcompactd_wake = wake
    return m, env, reclaim, kc, wakes


def test_high_order_kswapd_wakes_kcompactd_for_the_original_order_and_resets_skip_bits():
    m, env, reclaim, kc, wakes = make()
    z = m.zones[0]
    assert z.free_pages < z.wmark_pages(WMARK_LOW)
    env.run(until=0.01)                 # kswapd balances the node at order 0 and naps
    # A direct compactor's scanners met: the skip hints are to be flushed at kswapd sleep.
    z.compact_blockskip_flush = True
    m.pageblocks.skip[3] = 1
    reclaim.wakeup_kswapd(0, GFP_KERNEL, 9, 1)
    env.run(until=1.0)
    # Reclaim could not make an order-9 block, yet kswapd went to sleep at order 0 and
    # handed order 9 to kcompactd, with the skip bits already reset.
    assert z.free_pages >= z.wmark_pages(WMARK_HIGH)
    assert z.nr_free[9] + z.nr_free[10] == 0
    high = [w[1:] for w in wakes if w[1] == 9]
    assert high and high[0] == (9, False, 0)
    assert m.events["compact_daemon_wake"] == 1
    assert reclaim.kswapd_sleeping == [True]


def test_kswapd_pass_aims_at_the_high_watermark():
    """kswapd_shrink_node's nr_to_reclaim is the zones' high watermarks: one wakeup
    reclaims well past SWAP_CLUSTER_MAX pages."""
    m, env, reclaim, kc, wakes = make()
    z = m.zones[0]
    env.run(until=1.0)                  # kswapd finds the node below HIGH at start
    assert m.events["pageoutrun"] == 1
    assert m.events["pgsteal_kswapd"] >= z.wmark_pages(WMARK_HIGH) - z.wmark_pages(WMARK_LOW)
    assert all(order == 0 for _, order, _, _ in wakes)
