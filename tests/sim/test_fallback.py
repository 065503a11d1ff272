"""Fallback, claim and steal rules of sim/buddy.py on hand-built pageblocks.

Each test empties a 64 MiB zone (every page allocated, order 0, unmovable), then frees
exactly the blocks it needs into pageblocks with chosen labels, and marks chosen in-use
pages movable (PG_LRU). Expected outcomes follow mm/page_alloc.c and its `fallbacks[][]`
table: `__rmqueue_fallback` (largest first, smallest for a movable request that
cannot steal) and `steal_suitable_fallback` at 4.4 (FREE_COUNT), 6.1 (IN_USE_COUNT) and
6.10 (FREELIST_HYGIENE), `boost_watermark` and the boosted-watermark wake in `rmqueue`.
"""

from __future__ import annotations

import pytest
import simpy
from buddycheck import carve, free_blocks

from compactsim.sim.buddy import (
    BuddyPolicy,
    boost_watermark,
    free_one_page,
    rmqueue,
    rmqueue_fallback,
)
from compactsim.sim.config import MAX_ORDER, ClaimRule, config_from_dict
from compactsim.sim.gfp import (
    ALLOC_KSWAPD,
    ALLOC_NO_WATERMARKS,
    ALLOC_NOFRAGMENT,
    ALLOC_WMARK_LOW,
    GFP_KERNEL,
)
from compactsim.sim.machine import build_machine
from compactsim.sim.page import ALLOC, PG_LRU, TAIL
from compactsim.sim.page_alloc import alloc_flags_nofragment, get_page_from_freelist, trace_extfrag
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, MigrateType
from compactsim.sim.task import Task
from compactsim.sim.zone import WMARK_HIGH

U, M, R = MigrateType.UNMOVABLE, MigrateType.MOVABLE, MigrateType.RECLAIMABLE
RULES = list(ClaimRule)
SUB_BLOCK_RULES = [ClaimRule.IN_USE_COUNT, ClaimRule.FREELIST_HYGIENE]
NR_ORDERS = MAX_ORDER + 1
HALF = PAGEBLOCK_NR_PAGES // 2


def make_machine(rule: ClaimRule, *, memory_mib: int = 64, dma32_mib: int = 0,
                 boost_factor: int = 15000, watermark_boost: bool = True):
    cfg = config_from_dict({
        "machine": {"memory": f"{memory_mib}MiB", "dma32": f"{dma32_mib}MiB", "cpus": 2},
        "kernel": {"claim_rule": rule.value, "pcp": False, "watermark_boost": watermark_boost},
        "tunables": {"watermark_boost_factor": boost_factor},
        "workload": [{"name": "x"}],
    })
    return build_machine(cfg, simpy.Environment())


def pb(i: int) -> int:
    return i << PAGEBLOCK_ORDER


class Layout:
    """A carved zone plus helpers to shape pageblocks and record extfrag events."""

    def __init__(self, rule: ClaimRule, **kw):
        self.m = make_machine(rule, **kw)
        self.z = self.m.zones[-1]
        carve(self.z)
        self.events = []
        self.m.policy.on_extfrag = lambda *args: self.events.append(args)

    def block(self, first_pfn: int, label: int, free: list[tuple[int, int]] = (),
              movable: range = range(0), list_mt: int | None = None) -> None:
        """Label the pageblock at `first_pfn`, free (offset, order) blocks onto `list_mt`
        (default: the label) and mark `movable` offsets as in-use LRU pages."""
        self.m.pageblocks.set_pageblock_migratetype(first_pfn, label)
        mem = self.z.mem
        for off, order in free:
            pfn = first_pfn + off
            mem.pstate[pfn + 1:pfn + (1 << order)] = bytes([TAIL]) * ((1 << order) - 1)
            free_one_page(self.z, pfn, order, label if list_mt is None else list_mt)
        for off in movable:
            if mem.pstate[first_pfn + off] == ALLOC:
                mem.flags[first_pfn + off] |= PG_LRU

    def label(self, first_pfn: int) -> int:
        return self.m.pageblocks.get_pageblock_migratetype(first_pfn)

    def free_in(self, first_pfn: int) -> dict[int, int]:
        """Free pages of one pageblock by the list type they sit on."""
        by_mt = {}
        for pfn, o, mt in free_blocks(self.z):
            if pfn >> PAGEBLOCK_ORDER == first_pfn >> PAGEBLOCK_ORDER:
                by_mt[mt] = by_mt.get(mt, 0) + (1 << o)
        return by_mt

    def alloc(self, order: int, mt: int, flags: int = ALLOC_NO_WATERMARKS) -> int:
        pfn = rmqueue(self.z, order, mt, flags, self.m.policy)
        assert pfn >= 0
        assert self.z.mem.pstate[pfn] == ALLOC + order
        return pfn


# --- search order (__rmqueue_fallback, find_suitable_fallback) -----------------------

@pytest.mark.parametrize("rule", RULES)
def test_fallback_takes_the_largest_block_first(rule):
    lay = Layout(rule)
    lay.block(pb(4), M, free=[(0, 2)])
    lay.block(pb(6), M, free=[(64, 5)])
    lay.block(pb(8), M, free=[(128, 7)])
    lay.block(pb(10), R, free=[(0, 3)])   # R is first in U's table, but a smaller block
    pfn = lay.alloc(0, U)
    assert pfn >> PAGEBLOCK_ORDER == 8
    (_z, found, order, fallback_order, start_mt, fallback_mt, _change), = lay.events
    assert (found, order, fallback_order, start_mt, fallback_mt) == (pb(8) + 128, 0, 7, U, M)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("start_mt, first, second", [(U, R, M), (M, R, U), (R, U, M)])
def test_at_equal_order_the_fallback_table_decides(rule, start_mt, first, second):
    lay = Layout(rule)
    lay.block(pb(4), second, free=[(0, 6)])
    lay.block(pb(6), first, free=[(0, 6)])
    lay.alloc(0, start_mt)
    assert [e[5] for e in lay.events] == [first]
    assert lay.events[0][1] == pb(6)


@pytest.mark.parametrize("rule", RULES)
def test_no_fallback_to_highatomic_and_none_when_empty(rule):
    lay = Layout(rule)
    lay.block(pb(4), MigrateType.HIGHATOMIC, free=[(0, 6)])
    assert rmqueue(lay.z, 0, U, ALLOC_NO_WATERMARKS, lay.m.policy) == -1
    assert lay.events == [] and lay.z.free_pages == 64


# --- claiming a block (steal_suitable_fallback, try_to_claim_block) ------------------

@pytest.mark.parametrize("rule", RULES)
def test_half_a_block_free_is_claimed_under_every_rule(rule):
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 8)], movable=range(HALF, PAGEBLOCK_NR_PAGES))
    lay.block(pb(7), M, free=[(0, 2)])            # a second, smaller candidate
    pfn = lay.alloc(0, U)
    assert pfn >> PAGEBLOCK_ORDER == 5
    assert lay.label(pb(5)) == U
    assert lay.free_in(pb(5)) == {U: HALF - 1}    # every free page moved to the new type
    assert lay.label(pb(7)) == M and lay.free_in(pb(7)) == {M: 4}
    assert lay.events[0][6] is True               # change_ownership


@pytest.mark.parametrize("rule", RULES)
def test_one_page_short_of_half_is_not_claimed(rule):
    # 255 free pages (orders 7..0), the other 257 in use and movable: no rule claims.
    free = [(0, 7), (128, 6), (192, 5), (224, 4), (240, 3), (248, 2), (252, 1), (254, 0)]
    lay = Layout(rule)
    lay.block(pb(5), M, free=free, movable=range(255, PAGEBLOCK_NR_PAGES))
    assert lay.free_in(pb(5)) == {M: HALF - 1}
    lay.alloc(0, U)
    assert lay.label(pb(5)) == M
    assert lay.events[0][6] is False


@pytest.mark.parametrize("rule, claimed", [(ClaimRule.FREE_COUNT, False),
                                           (ClaimRule.IN_USE_COUNT, True),
                                           (ClaimRule.FREELIST_HYGIENE, True)])
def test_in_use_unmovable_pages_count_toward_an_unmovable_claim(rule, claimed):
    # 64 free pages; the other 448 are in use and not movable: "alike" for UNMOVABLE.
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 6)])
    lay.alloc(0, U)
    assert lay.label(pb(5)) == (U if claimed else M)
    assert lay.events[0][6] is claimed


@pytest.mark.parametrize("nr_movable, claimed", [(HALF - 64, True), (HALF - 65, False)])
@pytest.mark.parametrize("rule", RULES)
def test_in_use_movable_pages_count_toward_a_movable_claim(rule, nr_movable, claimed):
    # An UNMOVABLE block with 64 free pages: free + movable >= 256 claims it (4.12+).
    lay = Layout(rule)
    lay.block(pb(5), U, free=[(0, 6)], movable=range(64, 64 + nr_movable))
    lay.alloc(0, M)
    expect = claimed and rule is not ClaimRule.FREE_COUNT
    assert lay.label(pb(5)) == (M if expect else U)


@pytest.mark.parametrize("rule", RULES)
def test_unmovable_into_reclaimable_block_counts_no_in_use_pages(rule):
    # U falling back to R (or back) cannot tell in-use pages apart: alike = 0.
    lay = Layout(rule)
    lay.block(pb(5), R, free=[(0, 6)])
    lay.alloc(0, U)
    assert lay.label(pb(5)) == R


# --- stealing without a claim ------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_steal_without_claim_remainder_placement(rule):
    # 20 free pages (order 4 + order 2), the rest in use and movable: no claim.
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 4), (32, 2)], movable=range(16, PAGEBLOCK_NR_PAGES))
    pfn = lay.alloc(0, U)
    assert pfn >> PAGEBLOCK_ORDER == 5
    assert lay.label(pb(5)) == M
    if rule is ClaimRule.FREELIST_HYGIENE:
        # 6.10+: only the page is taken; the split remainders stay on the block's type.
        assert pfn == pb(5)
        assert lay.free_in(pb(5)) == {M: 19}
        assert [(o, mt) for p, o, mt in free_blocks(lay.z)] == [(0, M), (1, M), (2, M), (2, M),
                                                                (3, M)]
    else:
        # 4.4-6.9: the block's free pages go to the requester's lists, label unchanged.
        assert lay.free_in(pb(5)) == {U: 19}
        assert all(mt == U for _p, _o, mt in free_blocks(lay.z))
    assert lay.events[0][6] is False


@pytest.mark.parametrize("rule", RULES)
def test_movable_request_that_cannot_steal(rule):
    # Only UNMOVABLE blocks of order < pageblock_order/2: a MOVABLE request may not steal.
    lay = Layout(rule)
    lay.block(pb(4), U, free=[(0, 3)])
    lay.block(pb(6), U, free=[(8, 1)])
    pfn = lay.alloc(0, M)
    (_z, _found, _order, fallback_order, _s, fallback_mt, change), = lay.events
    assert change is False and fallback_mt == U
    assert lay.label(pb(4)) == U and lay.label(pb(6)) == U
    if rule is ClaimRule.FREE_COUNT:
        # 4.4: the largest block, remainders on the requester's (MOVABLE) lists.
        assert fallback_order == 3 and pfn >> PAGEBLOCK_ORDER == 4
        assert lay.free_in(pb(4)) == {M: 7}
    else:
        # ~4.13+: the smallest block, so the next fallback picks another small one.
        assert fallback_order == 1 and pfn >> PAGEBLOCK_ORDER == 6
        remainder_mt = U if rule is ClaimRule.FREELIST_HYGIENE else M
        assert lay.free_in(pb(6)) == {remainder_mt: 1}
        assert lay.free_in(pb(4)) == {U: 8}


@pytest.mark.parametrize("rule", RULES)
def test_movable_request_steals_the_largest_when_it_can(rule):
    lay = Layout(rule)
    lay.block(pb(4), U, free=[(0, 5)])
    lay.block(pb(6), U, free=[(8, 1)])
    pfn = lay.alloc(0, M)
    assert lay.events[0][3] == 5 and pfn >> PAGEBLOCK_ORDER == 4


# --- whole pageblocks --------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_max_order_fallback_relabels_both_pageblocks(rule):
    lay = Layout(rule)
    lay.block(pb(8), M, free=[(0, MAX_ORDER)])
    lay.m.pageblocks.set_pageblock_migratetype(pb(9), M)
    lay.block(pb(12), M, free=[(0, 2)])
    pfn = lay.alloc(0, U)
    assert pfn >> PAGEBLOCK_ORDER in (8, 9)
    assert lay.label(pb(8)) == U and lay.label(pb(9)) == U
    assert lay.label(pb(12)) == M
    assert sorted(o for _p, o, mt in free_blocks(lay.z) if mt == U) == list(range(MAX_ORDER))
    assert lay.z.watermark_boost == 0           # no boost for whole-block fallbacks
    (_z, _f, _o, fallback_order, _s, _fm, change), = lay.events
    assert fallback_order == MAX_ORDER and change is True


@pytest.mark.parametrize("rule", RULES)
def test_pageblock_order_fallback_relabels_only_its_block(rule):
    lay = Layout(rule)
    lay.block(pb(8), M, free=[(0, PAGEBLOCK_ORDER)])
    lay.block(pb(9), M)                          # its buddy block, in use
    lay.alloc(3, R)
    assert lay.label(pb(8)) == R and lay.label(pb(9)) == M
    assert lay.free_in(pb(8)) == {R: PAGEBLOCK_NR_PAGES - 8}


@pytest.mark.parametrize("rule", RULES)
def test_high_order_request_claims_whole_block(rule):
    # An order-9 UNMOVABLE request takes a whole MOVABLE pageblock and relabels it.
    lay = Layout(rule)
    lay.block(pb(8), M, free=[(0, PAGEBLOCK_ORDER)])
    pfn = lay.alloc(PAGEBLOCK_ORDER, U)
    assert pfn == pb(8) and lay.label(pb(8)) == U and lay.z.free_pages == 0


# --- ALLOC_NOFRAGMENT (5.0+) ---------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_nofragment_only_takes_whole_pageblocks(rule):
    lay = Layout(rule)
    lay.block(pb(4), M, free=[(0, 8)])
    assert rmqueue_fallback(lay.z, 0, U, ALLOC_NOFRAGMENT, lay.m.policy) == -1
    assert lay.label(pb(4)) == M and lay.events == []
    lay.block(pb(8), M, free=[(0, PAGEBLOCK_ORDER)])
    lay.block(pb(9), M)
    assert rmqueue_fallback(lay.z, 0, U, ALLOC_NOFRAGMENT, lay.m.policy) >> PAGEBLOCK_ORDER == 8
    assert lay.label(pb(8)) == U


def test_nofragment_prefers_dma32_over_fragmenting_normal():
    m = make_machine(ClaimRule.FREELIST_HYGIENE, dma32_mib=16)
    dma32, normal = m.zones
    carve(normal)
    # Normal: only a small MOVABLE block; DMA32 still has its boot MOVABLE blocks.
    pfn = normal.zone_start_pfn + pb(4)
    normal.mem.pstate[pfn + 1:pfn + 64] = bytes([TAIL]) * 63
    free_one_page(normal, pfn, 6, M)
    normal.watermark = [0, 0, 0, 0]     # so only ALLOC_NOFRAGMENT can turn Normal down
    task = Task(comm="t", pid=1, cpu=0, node=0)
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_LOW)
    assert out.zone is dma32
    assert normal.free_pages == 64
    # Without ALLOC_NOFRAGMENT (slow path at MIN) the Normal zone's block is used first.
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS)
    assert out.zone is normal


def _pcp_machine(nodes: int = 1, dma32_mib: int = 0, profile: str = "v6.10"):
    cfg = config_from_dict({
        "machine": {"memory": f"{256 * nodes}MiB", "dma32": f"{dma32_mib}MiB", "cpus": 2 * nodes,
                    "nodes": nodes},
        "kernel": {"profile": profile},
        "workload": [{"name": "x"}],
    })
    return build_machine(cfg, simpy.Environment())


@pytest.mark.parametrize("nodes, dma32_mib, expected", [
    (1, 0, [ALLOC_NOFRAGMENT]),              # UMA: the kernel assumes DMA32 exists
    (1, 16, [0, ALLOC_NOFRAGMENT]),          # DMA32 itself is not Normal
    (2, 16, [0, ALLOC_NOFRAGMENT, 0]),       # node 1 has no populated DMA32
    (2, 0, [0, 0]),
])
def test_alloc_flags_nofragment_follows_the_kernel(nodes, dma32_mib, expected):
    """alloc_flags_nofragment (5.0+): Normal zones only; `nr_online_nodes > 1 &&
    !populated_zone(--zone)` is the only DMA32 check, so a UMA Normal zone gets the flag."""
    m = _pcp_machine(nodes, dma32_mib)
    assert [alloc_flags_nofragment(m, z) for z in m.zones] == expected
    m = _pcp_machine(nodes, dma32_mib, profile="v4.12")       # before 5.0: never
    assert not any(alloc_flags_nofragment(m, z) for z in m.zones)


def test_uma_pcp_refill_stops_before_a_fragmenting_fallback():
    """A single Normal zone (UMA), v6.10: an unmovable order-0 request whose pcp list is
    empty. The first pass runs with ALLOC_NOFRAGMENT, so rmqueue_bulk takes the 4 pages
    left on the unmovable lists and stops where `__rmqueue_fallback` would have to go
    below pageblock order (min_order = pageblock_order): no pages taken out of the movable
    block, no mm_page_alloc_extfrag event."""
    m = _pcp_machine()
    z = m.zones[0]
    assert z.pcp.batch > 4                      # a refill would go past the 4 pages
    carve(z)
    z.watermark = [0, 0, 0, 0]
    events = []
    m.policy.on_extfrag = lambda *args: events.append(args)
    base = z.zone_start_pfn
    u_pfn, m_pfn = base + pb(2), base + pb(4)
    m.pageblocks.set_pageblock_migratetype(u_pfn, U)
    z.mem.pstate[u_pfn + 1:u_pfn + 4] = bytes([TAIL]) * 3
    free_one_page(z, u_pfn, 2, U)
    z.mem.pstate[m_pfn + 1:m_pfn + 64] = bytes([TAIL]) * 63
    free_one_page(z, m_pfn, 6, M)
    for pfn in range(m_pfn + 64, m_pfn + PAGEBLOCK_NR_PAGES):
        z.mem.flags[pfn] |= PG_LRU               # the movable block cannot be claimed
    task = Task(comm="t", pid=1, cpu=0, node=0)
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_LOW)
    assert out.zone is z and u_pfn <= out.pfn < u_pfn + 4
    assert z.pcp.counts[0] == 3
    assert events == []
    assert z.free_pages == 64 and m.pageblocks.get_pageblock_migratetype(m_pfn) == M
    # The next request finds U's lists empty: the first pass fails, the retry without
    # ALLOC_NOFRAGMENT falls back into the movable block.
    for _ in range(3):
        get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_LOW)
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_LOW)
    assert m_pfn <= out.pfn < m_pfn + 64 and events


# --- mm_page_alloc_extfrag -------------------------------------------------------------

@pytest.mark.parametrize("rule", SUB_BLOCK_RULES)
def test_extfrag_hook_arguments(rule):
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 6)])   # 448 in-use unmovable pages: U claims it
    lay.alloc(0, U)
    lay.alloc(1, R)                      # R tries U first: pb 5's order-5 remainder,
    #                                      but in-use pages of a U block are not "alike"
    (z0, pfn0, *first), (z1, pfn1, *second) = lay.events
    assert z0 is lay.z and z1 is lay.z
    # (alloc order, fallback order, alloc mt, fallback mt, change_ownership)
    assert (pfn0, first) == (pb(5), [0, 6, U, M, True])
    assert pfn1 >> PAGEBLOCK_ORDER == 5 and second == [1, 5, R, U, False]
    assert lay.label(pb(5)) == U
    # fragmenting = fallback_order < pageblock_order: both were.
    assert first[1] < PAGEBLOCK_ORDER and second[1] < PAGEBLOCK_ORDER


@pytest.mark.parametrize("rule", [ClaimRule.FREE_COUNT, ClaimRule.IN_USE_COUNT])
def test_change_ownership_compares_the_label_with_the_requester(rule):
    # Before 6.10 a MOVABLE block's free pages can sit on the UNMOVABLE lists (an
    # unclaimed steal moved them). A RECLAIMABLE request then finds them on the U list
    # (fallback_mt U) in an M block it does not claim: no change of ownership.
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 4)], movable=range(16, PAGEBLOCK_NR_PAGES), list_mt=U)
    lay.alloc(0, R)
    (_z, pfn, _o, _fo, start_mt, fallback_mt, change), = lay.events
    assert (pfn, start_mt, fallback_mt) == (pb(5), R, U)
    assert lay.label(pb(5)) == M and change is False


@pytest.mark.parametrize("rule", RULES)
def test_extfrag_tracepoint_line(rule):
    lay = Layout(rule)
    lay.m.policy.on_extfrag = trace_extfrag(lay.m)
    lay.block(pb(5), M, free=[(0, 4)], movable=range(16, PAGEBLOCK_NR_PAGES))
    lay.block(pb(8), M, free=[(0, MAX_ORDER)])
    lay.m.pageblocks.set_pageblock_migratetype(pb(9), M)
    lay.alloc(PAGEBLOCK_ORDER + 1, U)
    lay.alloc(0, U)
    lines = [ln for ln in lay.m.trace.lines() if "mm_page_alloc_extfrag" in ln]
    assert len(lines) == 2
    assert "alloc_order=10 fallback_order=10 pageblock_order=9" in lines[0]
    assert "fragmenting=0 change_ownership=1" in lines[0]
    assert "alloc_order=0 fallback_order=4 pageblock_order=9" in lines[1]
    assert "alloc_migratetype=0 fallback_migratetype=1" in lines[1]
    assert "fragmenting=1 change_ownership=0" in lines[1]


# --- boost_watermark (5.0+) ------------------------------------------------------------

def _zone_with_high(high: int, **kw):
    m = make_machine(ClaimRule.IN_USE_COUNT, **kw)
    z = m.zones[-1]
    z.watermark[WMARK_HIGH] = high
    return m, z


@pytest.mark.parametrize("high, factor, steps", [
    (100, 15000, [512, 512]),                      # high*1.5 = 150 < 512: cap 512
    (1000, 15000, [512, 1024, 1500, 1500]),        # cap 1500
    (2000, 10000, [512, 1024, 1536, 2000, 2000]),
    (683, 15000, [512, 1024, 1024]),               # mult_frac(683, 15000, 10000) = 1024
    (684, 15000, [512, 1024, 1026]),
])
def test_boost_adds_a_pageblock_up_to_the_cap(high, factor, steps):
    m, z = _zone_with_high(high)
    policy = BuddyPolicy(watermark_boost_factor=factor, pageblocks=m.pageblocks)
    got = []
    for _ in steps:
        assert boost_watermark(z, policy) is True
        got.append(z.watermark_boost)
    assert got == steps


def test_boost_disabled_by_factor_zero_or_zero_high():
    _m, z = _zone_with_high(1000)
    assert boost_watermark(z, BuddyPolicy(watermark_boost_factor=0)) is False
    assert z.watermark_boost == 0
    z.watermark[WMARK_HIGH] = 0
    assert boost_watermark(z, BuddyPolicy(watermark_boost_factor=15000)) is False
    assert z.watermark_boost == 0


@pytest.mark.parametrize("dma32_mib, boosts", [(4, False), (8, True)])
def test_boost_skips_zones_under_four_pageblocks(dma32_mib, boosts):
    m = make_machine(ClaimRule.IN_USE_COUNT, dma32_mib=dma32_mib)
    dma32 = m.zones[0]
    assert dma32.managed_pages == dma32_mib * 256
    dma32.watermark[WMARK_HIGH] = 1000
    assert boost_watermark(dma32, m.policy) is boosts
    assert dma32.watermark_boost == (PAGEBLOCK_NR_PAGES if boosts else 0)


@pytest.mark.parametrize("rule, boosted", [(ClaimRule.FREE_COUNT, False),
                                           (ClaimRule.IN_USE_COUNT, True),
                                           (ClaimRule.FREELIST_HYGIENE, True)])
@pytest.mark.parametrize("kswapd", [False, True])
def test_fallback_below_pageblock_order_boosts(rule, boosted, kswapd):
    lay = Layout(rule)
    lay.block(pb(5), M, free=[(0, 4)], movable=range(16, PAGEBLOCK_NR_PAGES))
    lay.alloc(0, U, ALLOC_NO_WATERMARKS | (ALLOC_KSWAPD if kswapd else 0))
    assert lay.z.watermark_boost == (PAGEBLOCK_NR_PAGES if boosted else 0)
    assert lay.z.boosted is (boosted and kswapd)


def test_boost_off_in_config_means_no_boost():
    lay = Layout(ClaimRule.IN_USE_COUNT, watermark_boost=False)
    lay.block(pb(5), M, free=[(0, 4)])
    lay.alloc(0, U, ALLOC_NO_WATERMARKS | ALLOC_KSWAPD)
    assert lay.z.watermark_boost == 0 and not lay.z.boosted


def test_boosted_zone_wakes_kswapd_once_on_the_way_out():
    m = make_machine(ClaimRule.FREELIST_HYGIENE)
    z = m.zones[-1]
    carve(z)
    pfn = pb(5)
    z.mem.pstate[pfn + 1:pfn + 16] = bytes([TAIL]) * 15
    free_one_page(z, pfn, 4, M)
    task = Task(comm="t", pid=1, cpu=0, node=0)
    out = get_page_from_freelist(m, task, GFP_KERNEL, 3, ALLOC_NO_WATERMARKS | ALLOC_KSWAPD)
    assert out.pfn >= 0 and out.boosted_wake and not z.boosted
    assert z.watermark_boost == PAGEBLOCK_NR_PAGES
    # The claimed block serves the next UNMOVABLE request: no fallback, no new wake.
    out = get_page_from_freelist(m, task, GFP_KERNEL, 3, ALLOC_NO_WATERMARKS | ALLOC_KSWAPD)
    assert out.pfn >= 0 and not out.boosted_wake


def test_only_a_kswapd_waking_allocation_clears_the_boost_bit():
    # 6.1 rmqueue(): `if ((alloc_flags & ALLOC_KSWAPD) && test_bit(ZONE_BOOSTED_WATERMARK))`.
    m = make_machine(ClaimRule.IN_USE_COUNT)
    z = m.zones[-1]
    task = Task(comm="t", pid=1, cpu=0, node=0)
    z.boosted = True
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS)
    assert out.pfn >= 0 and not out.boosted_wake and z.boosted
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS | ALLOC_KSWAPD)
    assert out.pfn >= 0 and out.boosted_wake and not z.boosted


# --- 6.15+: __rmqueue_claim then __rmqueue_steal (profile v6.17) -------------------------

def test_v6_17_steals_one_page_from_the_smallest_block_when_it_claims_none():
    """Two movable blocks, both mostly in use by movable pages (no claim possible): the
    unmovable page comes from the order-2 fragment, not the order-7 block (6.10 took the
    largest); the remainder stays on the block's own type."""
    lay = Layout(ClaimRule.FREELIST_HYGIENE)
    assert lay.m.policy.steal_smallest is False
    lay.m.policy.steal_smallest = True
    lay.block(pb(4), M, free=[(0, 2)], movable=range(4, PAGEBLOCK_NR_PAGES))
    lay.block(pb(8), M, free=[(128, 7)], movable=range(0, 128))
    lay.block(pb(8), M, movable=range(256, PAGEBLOCK_NR_PAGES))
    pfn = lay.alloc(0, U)
    assert pfn == pb(4)
    assert lay.label(pb(4)) == M and lay.label(pb(8)) == M
    assert lay.free_in(pb(4)) == {M: 3}
    assert lay.free_in(pb(8)) == {M: 128}
    (_z, found, order, fallback_order, start_mt, fallback_mt, change), = lay.events
    assert (found, fallback_order, start_mt, fallback_mt, change) == (pb(4), 2, U, M, False)


def test_v6_17_still_claims_a_block_largest_first():
    lay = Layout(ClaimRule.FREELIST_HYGIENE)
    lay.m.policy.steal_smallest = True
    lay.block(pb(4), M, free=[(0, 2)], movable=range(4, PAGEBLOCK_NR_PAGES))
    lay.block(pb(8), M, free=[(0, 8)])                  # half the block free: claimable
    pfn = lay.alloc(0, U)
    assert pfn >> PAGEBLOCK_ORDER == 8
    assert lay.label(pb(8)) == U


def test_steal_smallest_is_the_v6_17_profile_only():
    from compactsim.sim.config import PROFILES
    assert [p for p, sw in PROFILES.items() if sw["steal_smallest"]] == ["v6.17"]
