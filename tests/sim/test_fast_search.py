"""sim/compaction.py: the 5.1+ fast searches and how the scanners count.

Expected behaviour from mm/compaction.c (5.1+): `isolate_freepages` first tries
`fast_isolate_freepages` (MOVABLE free lists below cc->order, read from their tails, for a
page in the top quarter between the scanners, traced as mm_compaction_fast_isolate_freepages);
`isolate_migratepages` asks `fast_find_migrateblock` on every call that starts a
pageblock, not only at the zone start (the first eighth of the range once the scanner
moved); and `compact_migrate_scanned` / `compact_free_scanned` count pfns: a free or
isolated block of order k counts 2^k.
"""

from __future__ import annotations

from test_compaction import make_rig, populate, run_compaction

from compactsim.sim.compaction import CompactControl, Trigger
from compactsim.sim.config import PageKind
from compactsim.sim.gfp import GFP_KERNEL
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER
from compactsim.sim.tracepoint import TraceBuffer

ANON = KIND_CODE[PageKind.ANON]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]


def kcompactd_cc(r, order: int = 9) -> CompactControl:
    return CompactControl(zone=r.zone, order=order, mode=MigrateMode.SYNC_LIGHT,
                          trigger=Trigger.KCOMPACTD, task=r.task, gfp=GFP_KERNEL)


def test_free_targets_come_from_the_free_lists_first():
    """A free order-8 page near the zone's top is taken whole by fast_isolate_freepages;
    the linear free scanner never runs."""
    r = make_rig()
    nr_blocks = r.zone.spanned_pages >> PAGEBLOCK_ORDER
    target = nr_blocks - 3

    def owner(pfn):
        block, off = pfn >> PAGEBLOCK_ORDER, pfn & (PAGEBLOCK_NR_PAGES - 1)
        if block == 0:
            return (ANON, 0) if off < 32 else None       # 32 pages to move out
        if block < 4:
            return (SLAB, 0) if off == 0 else None       # free memory for the watermarks
        if block == target and off < 256:
            return None                                  # the free order-8 page
        return (SLAB, 0) if off == 300 else (ANON, 0)
    populate(r, owner)
    r.m.trace = TraceBuffer(1000, ["mm_compaction_fast_isolate_freepages",
                                   "mm_compaction_isolate_freepages"])
    cc = kcompactd_cc(r)
    run_compaction(r, cc)
    lines = r.m.trace.render().splitlines()
    fast = [ln for ln in lines if "mm_compaction_fast_isolate_freepages" in ln]
    assert fast and "nr_taken=256" in fast[0], lines
    assert not any("mm_compaction_isolate_freepages:" in ln
                   and f"range=(0x{target << PAGEBLOCK_ORDER:x}" not in ln for ln in lines), lines
    assert r.m.events["compact_free_scanned"] >= 256


def test_fast_find_migrateblock_runs_when_the_scanner_starts_a_later_block():
    """With the migrate scanner part-way up the zone, isolate_migratepages jumps to a
    block holding a free order-5 page within the first eighth of the remaining range."""
    r = make_rig()
    z = r.zone
    jump_to = 11

    def owner(pfn):
        block, off = pfn >> PAGEBLOCK_ORDER, pfn & (PAGEBLOCK_NR_PAGES - 1)
        if block == jump_to and 64 <= off < 96:
            return None
        if block >= 28:
            return None if off & 16 else (ANON, 0)       # targets
        return (SLAB, 0) if off == 500 else (ANON, 0)
    populate(r, owner)
    cc = kcompactd_cc(r)
    cc.migrate_pfn = 10 << PAGEBLOCK_ORDER
    cc.free_pfn = z.zone_end_pfn - PAGEBLOCK_NR_PAGES
    proc = r.env.process(r.compaction.isolate_migratepages(cc))
    r.env.run(until=proc)
    assert cc.migratepages, "nothing isolated"
    assert {p >> PAGEBLOCK_ORDER for p in cc.migratepages} == {jump_to}


def test_migrate_scanner_counts_pfns_not_page_heads():
    """A block of 16-page free runs between anonymous pages, scanned whole without
    isolation limits (finish_pageblock): 512 pfns, though only 256 + 16 heads."""
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: None if pfn & 16 else (ANON, 0))
    cc = kcompactd_cc(r)
    cc.finish_pageblock = True
    stop, scanned, visited = r.compaction.isolate_migratepages_block(cc, 0, PAGEBLOCK_NR_PAGES)
    assert (stop, scanned) == (PAGEBLOCK_NR_PAGES, PAGEBLOCK_NR_PAGES)
    assert visited == 256 + 16


def test_free_scanner_counts_the_pages_of_each_isolated_block():
    r = make_rig(fast_search=False)
    populate(r, lambda pfn: None if pfn & 16 else (ANON, 0))
    cc = kcompactd_cc(r)
    cc.nr_migratepages = 1 << 20                         # take everything
    nxt, scanned, isolated, early = r.compaction.isolate_freepages_block(
        cc, 0, PAGEBLOCK_NR_PAGES, 1)
    assert (nxt, isolated, early) == (PAGEBLOCK_NR_PAGES, 256, False)
    assert scanned == PAGEBLOCK_NR_PAGES
    r.compaction.release_freepages(cc)
    # Async stride 32 from the first free run: its 16 pages count 16, then the steps
    # go on from the run's last page, 32 pfns apart, and land on no other free head.
    nxt, scanned, isolated, early = r.compaction.isolate_freepages_block(
        cc, 16, PAGEBLOCK_NR_PAGES, 32)
    assert isolated == 16
    assert scanned == 16 + (PAGEBLOCK_NR_PAGES - 1 - 63) // 32 + 1
