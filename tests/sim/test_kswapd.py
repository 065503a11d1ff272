"""sim/reclaim.py: kswapd's balance_pgdat / kswapd_try_to_sleep hand-over to kcompactd.

Expected behaviour from mm/vmscan.c (4.12-6.x): `balance_pgdat` returns the order it
stopped reclaiming at, 0 once `compact_gap(order)` pages were reclaimed for a high-order
wakeup; `kswapd()` then goes to `kswapd_try_to_sleep(alloc_order, reclaim_order)`, whose
`prepare_kswapd_sleep` checks balance at the reclaim order and, before napping, calls
`reset_isolation_suitable` and `wakeup_kcompactd` with the original order.
"""

from __future__ import annotations

from rig import make_rig, populate

from compactsim.sim.config import PageKind
from compactsim.sim.gfp import GFP_KERNEL
from compactsim.sim.kcompactd import Kcompactd
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES
from compactsim.sim.zone import WMARK_HIGH, WMARK_LOW

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
    r = make_rig(profile, {"compaction_proactiveness": 0})
    populate(r, lambda pfn: None if (kind := owner(pfn)) is None else (kind, 0))
    m, env, reclaim, compaction = r.m, r.env, r.reclaim, r.compaction
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
