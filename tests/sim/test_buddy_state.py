"""sim/buddy.py, sim/pcp.py and sim/page_alloc.py under random alloc/free/drain programs.

A Hypothesis `RuleBasedStateMachine` drives the real allocator of a small machine
(64 MiB, sometimes with a DMA32 zone, pcp on or off, each claim rule) and keeps a model
of the blocks it handed out. After every step the memmap, the free lists, the counters
and the model must agree (mm/internal.h: buddy `B2 = B1 ^ (1 << O)`, parent
`P = B & ~(1 << O)`).
"""

from __future__ import annotations

import pytest
import simpy
from buddycheck import assert_lists_match_counters, carve, free_blocks
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from compactsim.sim.buddy import free_one_page
from compactsim.sim.config import MAX_ORDER, ClaimRule, PageKind, config_from_dict
from compactsim.sim.gfp import (
    __GFP_RECLAIMABLE,
    ALLOC_KSWAPD,
    ALLOC_NO_WATERMARKS,
    ALLOC_WMARK_LOW,
    ALLOC_WMARK_MIN,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    gfp_migratetype,
)
from compactsim.sim.machine import build_machine
from compactsim.sim.page import ALLOC, KIND_CODE, KIND_NONE, KIND_RESERVED, PCP, PG_LRU, TAIL
from compactsim.sim.page_alloc import drain_all_pages, free_pages, get_page_from_freelist, zonelist
from compactsim.sim.pageblock import MIGRATE_PCPTYPES, PAGEBLOCK_ORDER, MigrateType
from compactsim.sim.task import Task
from compactsim.sim.zone import zone_watermark_for_flags, zone_watermark_ok

NR_ORDERS = MAX_ORDER + 1
NR_CPUS = 2
MT = [MigrateType.UNMOVABLE, MigrateType.MOVABLE, MigrateType.RECLAIMABLE]
GFP_OF_MT = {
    MigrateType.UNMOVABLE: GFP_KERNEL,
    MigrateType.MOVABLE: GFP_HIGHUSER_MOVABLE,
    MigrateType.RECLAIMABLE: GFP_KERNEL | __GFP_RECLAIMABLE,
}
KIND_OF_MT = {
    MigrateType.UNMOVABLE: KIND_CODE[PageKind.SLAB_UNMOVABLE],
    MigrateType.MOVABLE: KIND_CODE[PageKind.ANON],
    MigrateType.RECLAIMABLE: KIND_CODE[PageKind.SLAB_RECLAIMABLE],
}


def make_machine(claim_rule: ClaimRule, pcp: bool, dma32_mib: int):
    cfg = config_from_dict({
        "machine": {"memory": "64MiB", "dma32": f"{dma32_mib}MiB", "cpus": NR_CPUS},
        "kernel": {"claim_rule": claim_rule.value, "pcp": pcp},
        "workload": [{"name": "x"}],
    })
    return build_machine(cfg, simpy.Environment())


def labels_covered(m, pfn: int, order: int) -> set[int]:
    first = pfn >> PAGEBLOCK_ORDER
    return set(m.pageblocks.mt[first:first + (1 << max(order - PAGEBLOCK_ORDER, 0))])


class BuddyMachine(RuleBasedStateMachine):
    """Allocate, free and drain against one machine; `allocated` is the model."""

    @initialize(claim_rule=st.sampled_from(list(ClaimRule)), pcp=st.booleans(),
                dma32_mib=st.sampled_from([0, 4, 8, 16]))
    def build(self, claim_rule, pcp, dma32_mib):
        self.m = make_machine(claim_rule, pcp, dma32_mib)
        self.claim_rule = claim_rule
        self.tasks = [Task(comm="t", pid=100 + c, cpu=c, node=0) for c in range(NR_CPUS)]
        self.allocated: dict[int, tuple[int, int]] = {}     # head pfn -> (order, mt)

    # --- helpers --------------------------------------------------------------------

    def _highest(self, dma32_only: bool) -> int:
        """highest_zoneidx: 0 for a GFP_DMA32-style request when there is a DMA32 zone."""
        return 0 if dma32_only and len(self.m.zones) > 1 else 1

    def _record(self, out, order: int, mt: int, zones) -> None:
        mem, pfn = self.m.mem, out.pfn
        assert out.zone in zones
        assert pfn % (1 << order) == 0
        assert out.zone.contains(pfn) and out.zone.contains(pfn + (1 << order) - 1)
        assert mem.pstate[pfn] == ALLOC + order and pfn not in self.allocated
        mem.kind[pfn] = KIND_OF_MT[mt]
        if mt == MigrateType.MOVABLE:
            mem.flags[pfn] |= PG_LRU        # what count_block's in-use counting looks for
        self.allocated[pfn] = (order, mt)

    @staticmethod
    def _assert_exhausted(zones, order: int, mt: int, cpu: int) -> None:
        """A failed ALLOC_NO_WATERMARKS request: no buddy block of the order or larger in
        any allowed zone and, for order 0 with pcp, nothing on this CPU's list either."""
        for z in zones:
            assert not any(z.nr_free[o] for o in range(order, NR_ORDERS)), z.name
            if order == 0 and z.pcp is not None:
                assert not z.pcp.lists[cpu][mt], z.name

    def _free(self, pfn: int, cpu: int) -> None:
        order, _mt = self.allocated.pop(pfn)
        out = free_pages(self.m, self.tasks[cpu], pfn, order)
        assert out.zone is self.m.zone_of(pfn)
        assert self.m.mem.kind[pfn] == KIND_NONE and self.m.mem.flags[pfn] == 0

    # --- rules ----------------------------------------------------------------------

    @rule(order=st.integers(0, MAX_ORDER), mt=st.sampled_from(MT),
          wmark=st.sampled_from([ALLOC_WMARK_MIN, ALLOC_WMARK_LOW, ALLOC_NO_WATERMARKS]),
          kswapd=st.booleans(), dma32_only=st.booleans(), cpu=st.integers(0, NR_CPUS - 1))
    def allocate(self, order, mt, wmark, kswapd, dma32_only, cpu):
        m = self.m
        gfp = GFP_OF_MT[mt]
        assert gfp_migratetype(gfp) == mt
        flags = wmark | (ALLOC_KSWAPD if kswapd else 0)
        highest = self._highest(dma32_only)
        zones = zonelist(m, 0, highest)
        passed = {z.name: zone_watermark_ok(z, order, zone_watermark_for_flags(z, flags),
                                            highest, flags) for z in zones}
        out = get_page_from_freelist(m, self.tasks[cpu], gfp, order, flags, highest)
        if out.pfn < 0:
            if wmark == ALLOC_NO_WATERMARKS:
                self._assert_exhausted(zones, order, mt, cpu)
            return
        assert passed[out.zone.name], "allocated from a zone below its watermark"
        self._record(out, order, mt, zones)

    @rule(n=st.integers(1, 700), order=st.integers(0, 3), mt=st.sampled_from(MT),
          dma32_only=st.booleans(), cpu=st.integers(0, NR_CPUS - 1))
    def allocate_many(self, n, order, mt, dma32_only, cpu):
        """A burst of small allocations: fills pageblocks and forces fallbacks."""
        highest = self._highest(dma32_only)
        zones = zonelist(self.m, 0, highest)
        for _ in range(n):
            out = get_page_from_freelist(self.m, self.tasks[cpu], GFP_OF_MT[mt], order,
                                         ALLOC_NO_WATERMARKS | ALLOC_KSWAPD, highest)
            if out.pfn < 0:
                self._assert_exhausted(zones, order, mt, cpu)
                break
            self._record(out, order, mt, zones)

    @rule(order=st.integers(4, MAX_ORDER), mt=st.sampled_from(MT),
          cpu=st.integers(0, NR_CPUS - 1))
    def fill(self, order, mt, cpu):
        """Allocate until the zones run dry, so later requests fall back into mixed blocks.
        (Orders >= 4 keep this cheap; small orders come from allocate_many.)"""
        zones = zonelist(self.m, 0)
        for _ in range(self.m.total_pages >> order):
            out = get_page_from_freelist(self.m, self.tasks[cpu], GFP_OF_MT[mt], order,
                                         ALLOC_NO_WATERMARKS)
            if out.pfn < 0:
                self._assert_exhausted(zones, order, mt, cpu)
                break
            self._record(out, order, mt, zones)

    @precondition(lambda self: self.allocated)
    @rule(data=st.data(), cpu=st.integers(0, NR_CPUS - 1))
    def free(self, data, cpu):
        self._free(data.draw(st.sampled_from(sorted(self.allocated)), label="pfn"), cpu)

    @precondition(lambda self: self.allocated)
    @rule(stride=st.integers(1, 5), offset=st.integers(0, 4),
          only_mt=st.sampled_from([None, *MT]), cpu=st.integers(0, NR_CPUS - 1))
    def free_many(self, stride, offset, only_mt, cpu):
        """Free every stride-th block (of one type, or any): leaves holes or whole blocks."""
        heads = [pfn for pfn in sorted(self.allocated)
                 if only_mt is None or self.allocated[pfn][1] == only_mt]
        for pfn in heads[offset % stride::stride]:
            self._free(pfn, cpu)

    @rule()
    def drain(self):
        queued = sum(z.pcp_count() for z in self.m.zones)
        free_before = sum(z.free_pages for z in self.m.zones)
        assert drain_all_pages(self.m) == queued
        assert all(z.pcp_count() == 0 for z in self.m.zones)
        assert sum(z.free_pages for z in self.m.zones) == free_before + queued

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def lists_match_counters(self):
        for z in self.m.zones:
            assert_lists_match_counters(z)

    @invariant()
    def pages_partition_memory(self):
        """Free blocks, pcp pages, allocated blocks and the memmap tile every pfn once,
        and free + pcp + allocated + reserved == total pages."""
        m = self.m
        mem = m.mem
        cover = bytearray(m.total_pages)

        def take(pfn: int, n: int) -> None:
            assert cover[pfn:pfn + n].count(0) == n, f"{pfn:#x}+{n} overlaps another block"
            cover[pfn:pfn + n] = b"\1" * n

        total = 0
        for z in m.zones:
            for pfn, o, _mt in free_blocks(z):
                n = 1 << o
                assert pfn % n == 0, (pfn, o)
                assert z.zone_start_pfn <= pfn and pfn + n <= z.zone_end_pfn, (z.name, pfn, o)
                assert mem.pstate[pfn + 1:pfn + n].count(TAIL) == n - 1, (pfn, o)
                take(pfn, n)
            if z.pcp is not None:
                for cpu, lists in enumerate(z.pcp.lists):
                    assert z.pcp.counts[cpu] == sum(len(lst) for lst in lists)
                    for mt, lst in enumerate(lists):
                        for pfn in lst:
                            assert z.contains(pfn) and mem.pstate[pfn] == PCP + mt
                            take(pfn, 1)
            total += z.free_pages + z.pcp_count()
        for pfn, (o, _mt) in self.allocated.items():
            n = 1 << o
            assert mem.pstate[pfn] == ALLOC + o
            assert mem.pstate[pfn + 1:pfn + n].count(TAIL) == n - 1
            take(pfn, n)
            total += n
        for node in m.nodes:
            end = node.start_pfn + node.nr_pages
            first = end - node.memmap_pages
            assert mem.kind[first:end].count(KIND_RESERVED) == node.memmap_pages
            take(first, node.memmap_pages)
            total += node.memmap_pages
        assert total == m.total_pages
        assert cover.count(0) == 0, f"{cover.count(0)} pages are in no state"

    @invariant()
    def free_buddies_are_merged(self):
        mem = self.m.mem
        for z in self.m.zones:
            for pfn, o, _mt in free_blocks(z):
                if o == MAX_ORDER:
                    continue
                buddy = pfn ^ (1 << o)
                if not z.contains(buddy):
                    continue        # buddies in different zones never merge
                s = mem.pstate[buddy]
                assert not (s < 64 and s & 15 == o), f"free buddies {pfn:#x}/{buddy:#x} order {o}"

    @invariant()
    def pcp_lists_stay_bounded(self):
        # A free at count >= high returns `batch` pages; a refill adds at most `batch`
        # to an empty list of each type.
        for z in self.m.zones:
            if z.pcp is not None:
                assert z.pcp.batch >= 1
                for count in z.pcp.counts:
                    assert count < z.pcp.high + MIGRATE_PCPTYPES * z.pcp.batch, z.name

    @invariant()
    def pageblock_labels_and_freelist_hygiene(self):
        labels = self.m.pageblocks.mt
        assert set(labels) <= set(MT)
        if self.claim_rule is not ClaimRule.FREELIST_HYGIENE:
            return  # 4.4-6.9 put remainders on the requester's lists: no block/list match
        # 6.10+: a buddy page is always on the list of the pageblock(s) it lies in. (pcp
        # pages are not buddy pages; they take their block's type when drained.)
        for z in self.m.zones:
            for pfn, o, mt in free_blocks(z):
                assert labels_covered(self.m, pfn, o) == {mt}, (hex(pfn), o, mt)


BuddyMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                          deadline=None)
TestBuddyState = BuddyMachine.TestCase

pytestmark = pytest.mark.slow      # generated programs over the allocator: the full suite only


# --- merging (__free_one_page, buddy_merge_likely) ---------------------------------------

def free_block(z, pfn: int, order: int, mt: int, to_tail: bool = False, pageblocks=None) -> int:
    """Free [pfn, pfn + 2^order) as one block that was allocated as one."""
    z.mem.pstate[pfn + 1:pfn + (1 << order)] = bytes([TAIL]) * ((1 << order) - 1)
    z.mem.pstate[pfn] = ALLOC + order
    return free_one_page(z, pfn, order, mt, to_tail, pageblocks=pageblocks)


def test_merge_queues_at_tail_when_the_parent_buddy_is_free():
    m = make_machine(ClaimRule.IN_USE_COUNT, pcp=False, dma32_mib=0)
    z = m.zones[0]
    carve(z)
    mt = MigrateType.MOVABLE

    def heads():
        return list(z.mem.iter_list(z.free_head[2, mt]))

    base = 0x400
    free_block(z, base + 0x8, 3, mt)
    free_block(z, base + 0x24, 2, mt)            # parent 0x20/3's buddy 0x28/3 in use: head
    assert heads() == [base + 0x24]
    # 0x4/2 cannot merge (0x0 is in use), but its parent 0x0/3 has a free buddy 0x8/3:
    # it may merge soon, so it is queued at the tail.
    assert free_block(z, base + 0x4, 2, mt) == base + 0x4
    assert heads() == [base + 0x24, base + 0x4]
    free_block(z, base + 0x44, 2, mt)            # head again
    assert heads() == [base + 0x44, base + 0x24, base + 0x4]
    free_block(z, base + 0x64, 2, mt, to_tail=True)   # FPI_TO_TAIL
    assert heads() == [base + 0x44, base + 0x24, base + 0x4, base + 0x64]


def test_no_tail_hint_at_pageblock_order_and_above():
    # buddy_merge_likely() gives up at order >= MAX_ORDER - 1: the parent would be the
    # largest order already.
    m = make_machine(ClaimRule.IN_USE_COUNT, pcp=False, dma32_mib=0)
    z = m.zones[0]
    carve(z)
    mt = MigrateType.MOVABLE
    free_block(z, 0x1400, MAX_ORDER, mt)
    free_block(z, 0x2200, PAGEBLOCK_ORDER, mt)
    free_block(z, 0x1200, PAGEBLOCK_ORDER, mt)   # parent 0x1000/10's buddy 0x1400 is free,
    #                                              but the hint stops below order 9: head
    assert list(z.mem.iter_list(z.free_head[PAGEBLOCK_ORDER, mt])) == [0x1200, 0x2200]


def test_merge_combines_up_to_max_order_and_clears_the_owner():
    m = make_machine(ClaimRule.IN_USE_COUNT, pcp=False, dma32_mib=0)
    z = m.zones[0]
    carve(z)
    mem = z.mem
    base = 0x800
    for pfn in range(base, base + 1024):
        free_one_page(z, pfn, 0, MigrateType.MOVABLE)
    assert z.nr_free[MAX_ORDER] == 1 and z.free_pages == 1024
    assert list(mem.iter_list(z.free_head[MAX_ORDER, MigrateType.MOVABLE])) == [base]
    assert mem.kind[base:base + 1024].count(KIND_NONE) == 1024
    assert mem.pstate[base] == MigrateType.MOVABLE << 4 | MAX_ORDER
    assert mem.pstate[base + 1:base + 1024].count(TAIL) == 1023
    # Order 10 is the largest block: its free buddy 0xc00/10 stays separate.
    free_block(z, base + 1024, MAX_ORDER, MigrateType.MOVABLE)
    assert z.nr_free[MAX_ORDER] == 2


def test_free_area_counts_read_from_python_are_the_ones_the_lists_keep():
    """`zone->free_area[order].nr_free` and its per-type counts are word arrays whose
    typed views the compiled free-list paths update: Python reads the same counts, by
    [order] and [order, mt], and they match the lists page for page."""
    m = make_machine(ClaimRule.IN_USE_COUNT, pcp=False, dma32_mib=0)
    z = m.zones[0]
    carve(z)
    mt = MigrateType.MOVABLE
    before, before_mt = list(z.nr_free), z.nr_free_mt[3, mt]
    free_one_page(z, 0x808, 3, mt)       # its buddy 0x800/3 is in use: no merge
    assert list(z.nr_free) == [n + (o == 3) for o, n in enumerate(before)]
    assert z.nr_free_mt[3, mt] == before_mt + 1
    assert z.nr_free_by_type()[mt][3] == before_mt + 1
    assert list(z.mem.iter_list(z.free_head[3, mt]))[0] == 0x808
    assert_lists_match_counters(z)


def test_merge_across_pageblocks_relabels_the_buddy_block_only_with_hygiene():
    # 6.10 __free_one_page "match buddy type"; 6.1 leaves the buddy's label alone.
    for pageblocks_arg, expect in ((None, MigrateType.UNMOVABLE), (True, MigrateType.MOVABLE)):
        m = make_machine(ClaimRule.FREELIST_HYGIENE, pcp=False, dma32_mib=0)
        z = m.zones[0]
        carve(z)
        pb = m.pageblocks
        pb.set_pageblock_migratetype(0x1200, MigrateType.UNMOVABLE)
        free_block(z, 0x1200, PAGEBLOCK_ORDER, MigrateType.UNMOVABLE)
        free_block(z, 0x1000, PAGEBLOCK_ORDER, MigrateType.MOVABLE,
                   pageblocks=pb if pageblocks_arg else None)
        assert list(z.mem.iter_list(z.free_head[MAX_ORDER, MigrateType.MOVABLE])) == [0x1000]
        assert pb.get_pageblock_migratetype(0x1000) == MigrateType.MOVABLE
        assert pb.get_pageblock_migratetype(0x1200) == expect


def test_hygiene_free_paths_keep_lists_and_labels_in_step():
    """free_pages and the pcp drain pass the pageblocks under FREELIST_HYGIENE."""
    for pcp in (False, True):
        m = make_machine(ClaimRule.FREELIST_HYGIENE, pcp=pcp, dma32_mib=0)
        z = m.zones[0]
        carve(z)
        pb = m.pageblocks
        pb.set_pageblock_migratetype(0x1200, MigrateType.UNMOVABLE)
        free_block(z, 0x1200, PAGEBLOCK_ORDER, MigrateType.UNMOVABLE)
        free_block(z, 0x1000, PAGEBLOCK_ORDER - 1, MigrateType.MOVABLE)
        for pfn in range(0x1100, 0x1200):          # the last 256 pages, one by one
            free_pages(m, Task(comm="t", pid=1, cpu=0, node=0), pfn, 0)
        drain_all_pages(m)
        assert z.nr_free[MAX_ORDER] == 1
        assert pb.get_pageblock_migratetype(0x1200) == MigrateType.MOVABLE, pcp
