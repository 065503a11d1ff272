"""Checks on a zone's free lists shared by the allocator and compaction tests."""

from compactsim.sim.buddy import del_page_from_free_list
from compactsim.sim.config import PageKind
from compactsim.sim.page import ALLOC, KIND_CODE, KIND_RESERVED
from compactsim.sim.pageblock import MIGRATE_TYPES, NR_ORDERS


def free_blocks(z):
    """(pfn, order, list mt) of every block on the zone's free lists, by walking them."""
    mem = z.mem
    return [(pfn, o, mt) for o in range(NR_ORDERS) for mt in range(MIGRATE_TYPES)
            for pfn in mem.iter_list(z.free_head[o, mt])]


def assert_lists_match_counters(z) -> None:
    """nr_free per order and per (order, type), and NR_FREE_PAGES, equal what the lists
    hold; each head's state byte encodes the list it is on."""
    mem = z.mem
    pages = 0
    for o in range(NR_ORDERS):
        total = 0
        for mt in range(MIGRATE_TYPES):
            n = 0
            for pfn in mem.iter_list(z.free_head[o, mt]):
                n += 1
                assert mem.pstate[pfn] == (mt << 4) | o, (z.name, pfn, o, mt, mem.pstate[pfn])
            assert z.nr_free_mt[o, mt] == n, (z.name, o, mt)
            total += n
        assert z.nr_free[o] == total, (z.name, o)
        pages += total << o
    assert z.free_pages == pages, z.name


def carve(z) -> None:
    """No free pages left: every page of the zone (but the memmap) becomes an allocated,
    unmovable order-0 page, so that a test can free exactly the blocks it wants."""
    for pfn, o, mt in free_blocks(z):
        del_page_from_free_list(z, pfn, o, mt)
    mem = z.mem
    for pfn in range(z.zone_start_pfn, z.zone_end_pfn):
        if mem.kind[pfn] != KIND_RESERVED:
            mem.pstate[pfn] = ALLOC
            mem.kind[pfn] = KIND_CODE[PageKind.SLAB_UNMOVABLE]
            mem.flags[pfn] = 0
