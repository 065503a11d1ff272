"""Counters and trace lines that say what they count, per kernel era.

- `wasted_migrations`: pageblocks a run migrated pages out of that are not free at
  pageblock order when it ends, a block merged into a larger free neighbour being free.
- 4.4's include/trace/events/compaction.h printed `mm_compaction_try_to_compact_pages` as
  `order=%d gfp_mask=0x%x mode=%d` and had no `success` / `partial_skipped` statuses (a
  run that freed a suitable page ended `partial`); 4.8+ prints `gfp_mask=%s priority=%d`.
"""

from __future__ import annotations

import re

from test_compaction import make_rig, populate

from compactsim.sim.compaction import CompactControl, CompactPriority, Trigger
from compactsim.sim.config import PageKind
from compactsim.sim.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from compactsim.sim.tracepoint import TraceBuffer

ANON = KIND_CODE[PageKind.ANON]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]


def test_wasted_counts_blocks_left_unfree_and_not_blocks_merged_upwards():
    r = make_rig()
    # Blocks 0-1 free as one order-10 buddy; block 2 holds an unmovable page.
    populate(r, lambda pfn: (SLAB, 0) if pfn >> PAGEBLOCK_ORDER >= 2 and
             (pfn & (PAGEBLOCK_NR_PAGES - 1)) == 0 else
             (None if pfn < 2 * PAGEBLOCK_NR_PAGES else (ANON, 0)))
    assert r.zone.mem.pstate[0] & 15 == 10
    cc = CompactControl(zone=r.zone, order=9, mode=MigrateMode.SYNC_LIGHT,
                        trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)
    cc.migrated_from = {0: 100, 1: 40, 2: 300, 3: 7}
    # Blocks 0 and 1 (the upper half of the order-10 buddy) are free: 2 and 3 are wasted.
    assert r.compaction.count_wasted(cc) == 2


def direct_run(profile: str):
    r = make_rig(profile)
    populate(r, lambda pfn: None if pfn & 16 else (ANON, 0))
    r.m.trace = TraceBuffer(10_000, ["mm_compaction_try_to_compact_pages",
                                     "mm_compaction_end"])
    proc = r.env.process(r.compaction.try_to_compact_pages(
        r.task, GFP_HIGHUSER_MOVABLE, 9, 0, CompactPriority.SYNC_LIGHT))
    r.env.run(until=proc)
    return r, r.m.trace.render().splitlines()


def test_4_4_trace_and_result_names():
    r, lines = direct_run("v4.4")
    first = next(ln for ln in lines if "try_to_compact_pages" in ln)
    assert re.search(r"mm_compaction_try_to_compact_pages: order=9 gfp_mask=0x[0-9a-f]+ "
                     r"mode=1$", first), first
    end = next(ln for ln in lines if "mm_compaction_end" in ln)
    assert end.endswith("status=partial"), end
    assert r.compaction.results == {"direct/partial": 1}


def test_4_8_plus_trace_and_result_names():
    r, lines = direct_run("v6.10")
    first = next(ln for ln in lines if "try_to_compact_pages" in ln)
    assert re.search(r"order=9 gfp_mask=GFP_HIGHUSER_MOVABLE priority=1$", first), first
    end = next(ln for ln in lines if "mm_compaction_end" in ln)
    assert end.endswith("status=success"), end
    assert r.compaction.results == {"direct/success": 1}
