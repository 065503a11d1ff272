"""The buddy allocator's free lists: split, merge, fallback, claim and steal.

Follows mm/page_alloc.c: `__rmqueue_smallest`, `expand`, `__rmqueue_fallback`,
`find_suitable_fallback`, `steal_suitable_fallback` (4.4 and 6.1 forms),
`try_to_claim_block`/`page_del_and_expand` (6.10 "freelist hygiene"), `__rmqueue_claim` /
`__rmqueue_steal` (6.15+: a page that claims no block is stolen from the smallest
suitable fallback block), `boost_watermark`,
`move_freepages_block` and `__free_one_page` with `buddy_merge_likely`. Functions here
change state and never wait: the callers turn the work into simulated time and hold
`zone->lock` around it. Simplified: no CMA, ISOLATE, HIGHATOMIC reserve or page shuffling,
so every merge at or above pageblock order is allowed.
"""

from __future__ import annotations

from collections.abc import Callable

import cython
from compactsim.sim import config
from compactsim.sim import page as pg
from compactsim.sim.config import ClaimRule
from compactsim.sim.gfp import ALLOC_KSWAPD, ALLOC_NOFRAGMENT
from compactsim.sim.page import PCP, PG_LRU, PG_MOVABLE_OPS, MemMap
from compactsim.sim.pageblock import (FALLBACKS, PAGEBLOCK_NR_PAGES, MigrateType, Pageblocks,
                           can_steal_fallback)
from compactsim.sim.zone import WMARK_HIGH, Zone

# The orders and page states the free-list loops use, as C constants where compiled.
MAX_ORDER = cython.declare(cython.int, config.MAX_ORDER)
PAGEBLOCK_ORDER = cython.declare(cython.int, config.PAGEBLOCK_ORDER)
ALLOC = cython.declare(cython.int, pg.ALLOC)
TAIL = cython.declare(cython.int, pg.TAIL)
KIND_NONE = cython.declare(cython.int, pg.KIND_NONE)
NR_ORDERS = cython.declare(cython.int, config.MAX_ORDER + 1)
# The claim rules by name: a module global is one cached lookup where compiled, where an
# enum member (EnumType.__getattr__ on Python 3.11) costs a slow attribute hook per use.
FREE_COUNT = ClaimRule.FREE_COUNT
IN_USE_COUNT = ClaimRule.IN_USE_COUNT
FREELIST_HYGIENE = ClaimRule.FREELIST_HYGIENE


@cython.dataclasses.dataclass
@cython.cclass
class BuddyPolicy:
    """The allocator's switches and tunables, as plain values."""

    claim_rule: ClaimRule = ClaimRule.FREELIST_HYGIENE
    watermark_boost_factor: int = 15000     # 0 disables boosting
    pageblocks: Pageblocks | None = None
    steal_smallest: bool = False            # 6.15+: __rmqueue_claim, then __rmqueue_steal
    # (zone, pfn, order, fallback_order, start_mt, fallback_mt, change_ownership)
    on_extfrag: Callable[[Zone, int, int, int, int, int, bool], None] | None = None

    def freelist_hygiene(self) -> bool:
        """6.10+: a freed page goes on its block's list and a merge across blocks
        relabels the buddy's block (free_one_page with `pageblocks`)."""
        return self.claim_rule is FREELIST_HYGIENE


# --- list primitives -----------------------------------------------------------------

@cython.locals(mem=MemMap, head=cython.int, first=cython.int)
def add_to_free_list(z: Zone, pfn: int, order: int, mt: int, tail: bool = False) -> None:
    mem = z.mem
    mem.pstate_v[pfn] = (mt << 4) | order
    head = z.free_head_v[order, mt]
    if tail:
        mem.list_add_tail(head, pfn)
    else:
        mem.list_add(head, pfn)
    z.nr_free_v[order] += 1
    z.nr_free_mt_v[order, mt] += 1
    z.free_pages += 1 << order


@cython.locals(mem=MemMap)
def del_page_from_free_list(z: Zone, pfn: int, order: int, mt: int) -> None:
    mem = z.mem
    mem.list_del(pfn)
    mem.pstate_v[pfn] = TAIL
    z.nr_free_v[order] -= 1
    z.nr_free_mt_v[order, mt] -= 1
    z.free_pages -= 1 << order


def move_to_free_list(z: Zone, pfn: int, order: int, old_mt: int, new_mt: int) -> None:
    del_page_from_free_list(z, pfn, order, old_mt)
    add_to_free_list(z, pfn, order, new_mt)


def expand(z: Zone, pfn: int, low: int, high: int, mt: int) -> None:
    """Split a block of order `high` down to `low`; upper halves go to the list heads."""
    while high > low:
        high -= 1
        add_to_free_list(z, pfn + (1 << high), high, mt)


def mark_allocated(z: Zone, pfn: int, order: int) -> None:
    """Head carries ALLOC+order; tails were TAIL already (free block interiors)."""
    z.mem.pstate_v[pfn] = ALLOC + order


def page_del_and_expand(z: Zone, pfn: int, low: int, high: int, list_mt: int, to_mt: int) -> None:
    del_page_from_free_list(z, pfn, high, list_mt)
    expand(z, pfn, low, high, to_mt)


# --- allocation ------------------------------------------------------------------------

@cython.locals(o=cython.int)
def rmqueue_smallest(z: Zone, order: int, mt: int) -> int:
    """__rmqueue_smallest: the smallest free block >= order on `mt`'s lists, split."""
    if z.nr_free_mt_v[order, mt]:           # the common case: no split
        pfn = z.mem.nxt_v[z.free_head_v[order, mt]]
        del_page_from_free_list(z, pfn, order, mt)
        return pfn
    for o in range(order + 1, NR_ORDERS):
        if z.nr_free_mt_v[o, mt]:
            pfn = z.mem.nxt_v[z.free_head_v[o, mt]]
            page_del_and_expand(z, pfn, order, o, mt, mt)
            return pfn
    return -1


@cython.locals(mem=MemMap, nxt=cython.int[:], prv=cython.int[:], head=cython.int,
               pfn=cython.Py_ssize_t, k=cython.Py_ssize_t, pos=cython.Py_ssize_t, h=cython.int,
               i=cython.Py_ssize_t, low=cython.int, o=cython.int, mt_heads=list,
               nr_free_mt=cython.Py_ssize_t[:, ::1], heads=cython.Py_ssize_t[:, ::1], z=Zone)
def rmqueue_smallest_pages(z: Zone, mt: int, n: int) -> list[int]:
    """Up to `n` order-0 pages as successive `rmqueue_smallest(z, 0, mt)` calls hand them
    out, stopping when the smallest block would have to be found elsewhere ([] when `mt`'s
    lists are empty). The smallest block of order o > 0 has every lower list of `mt`
    empty, so each split puts the upper halves on empty lists and the next calls take
    them back lowest first: the block's pages go in address order, and what is left of
    it is the aligned blocks that cover its tail, one on each list. The pages taken keep
    the stale links the per-page splits leave (the head of the list each passed through),
    so the memmap ends as it would. Callers mark the pages (mark_allocated or pcp)."""
    nr_free_mt = z.nr_free_mt_v
    for o in range(NR_ORDERS):
        if nr_free_mt[o, mt]:
            break
    else:
        return []
    mem = z.mem
    nxt, prv, heads = mem.nxt_v, mem.prv_v, z.free_head_v
    head = heads[o, mt]
    if o == 0:
        pfns: list[int] = []
        while len(pfns) < n and nr_free_mt[0, mt]:
            pfn = nxt[head]
            del_page_from_free_list(z, pfn, 0, mt)
            pfns.append(pfn)
        return pfns
    pfn = nxt[head]
    del_page_from_free_list(z, pfn, o, mt)
    k = min(1 << o, n)
    mt_heads = [heads[j, mt] for j in range(o)]
    for i in range(1, k):              # page pfn + i went through list ctz(i)
        low = 0
        while not (i >> low) & 1:
            low += 1
        h = mt_heads[low]
        nxt[pfn + i] = h
        prv[pfn + i] = h
    pos = k
    for j in range(o):                 # the rest: expand's halves below the last split
        if pos & (1 << j):
            add_to_free_list(z, pfn + pos, j, mt)
            pos += 1 << j
    return list(range(pfn, pfn + k))


@cython.locals(z=Zone, order=cython.int)
def find_suitable_fallback(z: Zone, order: int, start_mt: int, only_stealable: bool
                           ) -> tuple[int, bool]:
    """(fallback migratetype or -1, can_steal) at exactly `order`."""
    if not z.nr_free_v[order]:
        return -1, False
    can_steal = False
    for fmt in FALLBACKS[start_mt]:
        if not z.nr_free_mt_v[order, fmt]:
            continue
        if order >= PAGEBLOCK_ORDER or can_steal_fallback(order, start_mt):
            can_steal = True
        if not only_stealable or can_steal:
            return fmt, can_steal
    return -1, can_steal


def boost_watermark(z: Zone, policy: BuddyPolicy) -> bool:
    """boost_watermark (5.0+): +1 pageblock, capped at high * factor / 10000."""
    factor = policy.watermark_boost_factor
    if not factor or PAGEBLOCK_NR_PAGES * 4 > z.managed_pages:
        return False
    max_boost = z.watermark[WMARK_HIGH] * factor // 10000
    if not max_boost:
        return False
    max_boost = max(PAGEBLOCK_NR_PAGES, max_boost)
    z.watermark_boost = min(z.watermark_boost + PAGEBLOCK_NR_PAGES, max_boost)
    return True


def count_block(z: Zone, pfn: int) -> tuple[int, int]:
    """(free pages, in-use movable pages) in the pageblock holding `pfn` (within the zone)."""
    mem = z.mem
    pstate, flags = mem.pstate, mem.flags
    start = max(pfn & ~(PAGEBLOCK_NR_PAGES - 1), z.zone_start_pfn)
    end = min(start + PAGEBLOCK_NR_PAGES, z.zone_end_pfn)
    free = movable = 0
    p = start
    while p < end:
        s = pstate[p]
        if s < 64:                       # free buddy head
            free += 1 << (s & 15)
            p += 1 << (s & 15)
        elif ALLOC <= s < PCP:
            if flags[p] & (PG_LRU | PG_MOVABLE_OPS):
                movable += 1 << (s - ALLOC)
            p += 1 << (s - ALLOC)
        else:
            p += 1
    return free, movable


def move_freepages_block(z: Zone, pfn: int, new_mt: int) -> int:
    """Move every free block of the pageblock to `new_mt`'s lists; returns pages moved."""
    pstate = z.mem.pstate
    start = max(pfn & ~(PAGEBLOCK_NR_PAGES - 1), z.zone_start_pfn)
    end = min(start + PAGEBLOCK_NR_PAGES, z.zone_end_pfn)
    moved = 0
    p = start
    while p < end:
        s = pstate[p]
        if s < 64:
            order = s & 15
            if s >> 4 != new_mt:
                move_to_free_list(z, p, order, s >> 4, new_mt)
            moved += 1 << order
            p += 1 << order
        elif ALLOC <= s < PCP:
            p += 1 << (s - ALLOC)
        else:
            p += 1
    return moved


def _alike_pages(start_mt: int, block_mt: int, free: int, movable: int) -> int:
    if start_mt == MigrateType.MOVABLE:
        return movable
    if block_mt == MigrateType.MOVABLE:
        return PAGEBLOCK_NR_PAGES - (free + movable)
    return 0


def _boost(z: Zone, policy: BuddyPolicy, alloc_flags: int) -> None:
    if boost_watermark(z, policy) and alloc_flags & ALLOC_KSWAPD:
        z.boosted = True


def steal_suitable_fallback(z: Zone, pfn: int, fallback_order: int, order: int, start_mt: int,
                            fallback_mt: int, alloc_flags: int, whole_block: bool,
                            policy: BuddyPolicy) -> int:
    """Take the found block for `start_mt`; returns the allocated pfn.

    FREE_COUNT (4.4): move the block's free pages, relabel if they are >= half a block,
    split the found page with remainders on the requester's lists. IN_USE_COUNT (4.12 to
    6.9): boost, move the free pages, relabel if free + compatible in-use >= half, then
    allocate from the requester's lists. FREELIST_HYGIENE (6.10+): claim (move and relabel)
    only when the half-block rule holds; otherwise take just the page and leave the
    remainders on the block's own type.
    """
    pb = policy.pageblocks
    assert pb is not None               # the machine's; only boost tests go without
    rule = policy.claim_rule
    if fallback_order >= PAGEBLOCK_ORDER:
        pb.change_pageblock_range(pfn, fallback_order, start_mt)
        page_del_and_expand(z, pfn, order, fallback_order, fallback_mt, start_mt)
        return pfn
    if rule is FREE_COUNT:
        if whole_block:
            moved = move_freepages_block(z, pfn, start_mt)
            if moved >= PAGEBLOCK_NR_PAGES // 2:
                pb.set_pageblock_migratetype(pfn, start_mt)
            fallback_mt = start_mt
        page_del_and_expand(z, pfn, order, fallback_order, fallback_mt, start_mt)
        return pfn
    _boost(z, policy, alloc_flags)
    block_mt = pb.get_pageblock_migratetype(pfn)
    if rule is IN_USE_COUNT:
        if not whole_block:
            move_to_free_list(z, pfn, fallback_order, fallback_mt, start_mt)
        else:
            free, movable = count_block(z, pfn)
            move_freepages_block(z, pfn, start_mt)
            if free + _alike_pages(start_mt, block_mt, free, movable) >= PAGEBLOCK_NR_PAGES // 2:
                pb.set_pageblock_migratetype(pfn, start_mt)
        return rmqueue_smallest(z, order, start_mt)
    # FREELIST_HYGIENE
    if whole_block:
        free, movable = count_block(z, pfn)
        if free + _alike_pages(start_mt, block_mt, free, movable) >= PAGEBLOCK_NR_PAGES // 2:
            move_freepages_block(z, pfn, start_mt)
            pb.set_pageblock_migratetype(pfn, start_mt)
            return rmqueue_smallest(z, order, start_mt)
    page_del_and_expand(z, pfn, order, fallback_order, fallback_mt, fallback_mt)
    return pfn


def try_to_claim_block(z: Zone, pfn: int, current_order: int, order: int, start_mt: int,
                       fallback_mt: int, alloc_flags: int, policy: BuddyPolicy) -> int:
    """try_to_claim_block (6.10+): take a whole block (>= pageblock order), or boost and
    move + relabel the pageblock when the half-block rule holds; -1 if it does not."""
    pb = policy.pageblocks
    assert pb is not None
    if current_order >= PAGEBLOCK_ORDER:
        pb.change_pageblock_range(pfn, current_order, start_mt)
        page_del_and_expand(z, pfn, order, current_order, fallback_mt, start_mt)
        return pfn
    _boost(z, policy, alloc_flags)
    block_mt = pb.get_pageblock_migratetype(pfn)
    free, movable = count_block(z, pfn)
    if free + _alike_pages(start_mt, block_mt, free, movable) >= PAGEBLOCK_NR_PAGES // 2:
        move_freepages_block(z, pfn, start_mt)
        pb.set_pageblock_migratetype(pfn, start_mt)
        return rmqueue_smallest(z, order, start_mt)
    return -1


def rmqueue_claim_steal(z: Zone, order: int, start_mt: int, alloc_flags: int,
                        policy: BuddyPolicy) -> int:
    """6.15+: `__rmqueue_claim` (largest block first, only orders that may claim, stop at
    the first claimed block), then, unless ALLOC_NOFRAGMENT, `__rmqueue_steal`: one page
    from the smallest suitable fallback block, the remainder left on its own type."""
    min_order = PAGEBLOCK_ORDER if alloc_flags & ALLOC_NOFRAGMENT and order < PAGEBLOCK_ORDER \
        else order
    nxt = z.mem.nxt
    for current in range(MAX_ORDER, min_order - 1, -1):
        if current < PAGEBLOCK_ORDER and not can_steal_fallback(current, start_mt):
            break                                  # orders too low to claim
        found, _ = find_suitable_fallback(z, current, start_mt, False)
        if found == -1:
            continue
        pfn = nxt[z.free_head[current, found]]
        got = try_to_claim_block(z, pfn, current, order, start_mt, found, alloc_flags, policy)
        if got >= 0:
            if policy.on_extfrag is not None:
                policy.on_extfrag(z, pfn, order, current, start_mt, found, True)
            return got
    if alloc_flags & ALLOC_NOFRAGMENT:
        return -1
    for current in range(order, NR_ORDERS):
        found, _ = find_suitable_fallback(z, current, start_mt, False)
        if found == -1:
            continue
        pfn = nxt[z.free_head[current, found]]
        page_del_and_expand(z, pfn, order, current, found, found)
        if policy.on_extfrag is not None:
            policy.on_extfrag(z, pfn, order, current, start_mt, found, False)
        return pfn
    return -1


def rmqueue_fallback(z: Zone, order: int, start_mt: int, alloc_flags: int,
                     policy: BuddyPolicy) -> int:
    """__rmqueue_fallback: largest block of a fallback type, or the smallest for movable."""
    if policy.steal_smallest:
        return rmqueue_claim_steal(z, order, start_mt, alloc_flags, policy)
    min_order = PAGEBLOCK_ORDER if alloc_flags & ALLOC_NOFRAGMENT and order < PAGEBLOCK_ORDER \
        else order
    found = -1
    can_steal = False
    fallback_order = MAX_ORDER
    while fallback_order >= min_order:
        found, can_steal = find_suitable_fallback(z, fallback_order, start_mt, False)
        if found != -1:
            break
        fallback_order -= 1
    if found == -1:
        return -1
    smallest_first = policy.claim_rule is not FREE_COUNT
    if (smallest_first and not can_steal and start_mt == MigrateType.MOVABLE
            and fallback_order > order):
        for fallback_order in range(order, NR_ORDERS):
            found, can_steal = find_suitable_fallback(z, fallback_order, start_mt, False)
            if found != -1:
                break
    pfn = z.mem.nxt[z.free_head[fallback_order, found]]
    got = steal_suitable_fallback(z, pfn, fallback_order, order, start_mt, found, alloc_flags,
                                  can_steal, policy)
    if policy.on_extfrag is not None:
        assert policy.pageblocks is not None
        change = policy.pageblocks.get_pageblock_migratetype(pfn) == start_mt
        policy.on_extfrag(z, pfn, order, fallback_order, start_mt, found, change)
    return got


def rmqueue(z: Zone, order: int, mt: int, alloc_flags: int, policy: BuddyPolicy) -> int:
    """__rmqueue: own lists first, then fallback; -1 when the zone has nothing to give."""
    pfn = rmqueue_smallest(z, order, mt)
    if pfn < 0:
        pfn = rmqueue_fallback(z, order, mt, alloc_flags, policy)
    if pfn >= 0:
        mark_allocated(z, pfn, order)
    return pfn


# --- freeing ---------------------------------------------------------------------------

@cython.locals(higher=cython.Py_ssize_t, higher_buddy=cython.Py_ssize_t, s=cython.int)
def buddy_merge_likely(z: Zone, pfn: int, buddy_pfn: int, order: int) -> bool:
    """The parent's buddy one order up is free: this block may merge soon; queue at tail."""
    if order >= MAX_ORDER - 1:
        return False
    higher = buddy_pfn & pfn
    higher_buddy = higher ^ (1 << (order + 1))
    # Zone.contains, inlined: a method call per merge costs the free path more
    if not z.zone_start_pfn <= higher_buddy < z.zone_start_pfn + z.spanned_pages:
        return False
    s = z.mem.pstate_v[higher_buddy]
    return s < 64 and (s & 15) == order + 1


@cython.locals(pfn=cython.Py_ssize_t, order=cython.int, mt=cython.int, buddy=cython.Py_ssize_t,
               start=cython.Py_ssize_t, end=cython.Py_ssize_t, s=cython.int, mem=MemMap)
def free_one_page(z: Zone, pfn: int, order: int, mt: int, to_tail: bool = False,
                  pageblocks: Pageblocks | None = None) -> int:
    """__free_one_page: merge with free buddies up to MAX_ORDER; returns the final head.

    Pass `pageblocks` under freelist hygiene (6.10+): merging at pageblock order or above
    with a buddy from a block of another type relabels that block to `mt` ("match buddy
    type"), so that a later split puts every part on its own block's list. Before 6.10
    the buddy's block keeps its label.
    """
    mem = z.mem
    mem.kind_v[pfn] = KIND_NONE
    mem.flags_v[pfn] = 0
    mem.expire_v[pfn] = 0
    start, end = z.zone_start_pfn, z.zone_start_pfn + z.spanned_pages
    capc = z.capture
    buddy = pfn
    while order < MAX_ORDER:
        if capc is not None and capc.wants(order, mt):
            capc.pfn = pfn
            mem.pstate_v[pfn] = ALLOC + order
            return pfn
        buddy = pfn ^ (1 << order)
        if not start <= buddy < end:
            break
        s = mem.pstate_v[buddy]
        if s >= 64 or (s & 15) != order:
            break
        del_page_from_free_list(z, buddy, order, s >> 4)
        if (pageblocks is not None and order >= PAGEBLOCK_ORDER
                and pageblocks.get_pageblock_migratetype(buddy) != mt):
            pageblocks.change_pageblock_range(buddy, order, mt)
        mem.pstate_v[pfn] = TAIL
        pfn &= buddy
        order += 1
    if capc is not None and capc.wants(order, mt):
        capc.pfn = pfn
        mem.pstate_v[pfn] = ALLOC + order
        return pfn
    if not to_tail:
        to_tail = buddy_merge_likely(z, pfn, pfn ^ (1 << order), order)
    add_to_free_list(z, pfn, order, mt, to_tail)
    return pfn
