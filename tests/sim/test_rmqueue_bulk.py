"""rmqueue_smallest_pages (sim/buddy.py) against the per-page __rmqueue_smallest it batches.

pcp.rmqueue_bulk takes a refill's pages from the own lists as many at a time; the kernel
calls __rmqueue once per page. From the same fragmented zone, both must hand out the same
pages in the same order and leave the same memmap (states and list links, stale ones of
the pages taken included) and the same free counts.
"""

from __future__ import annotations

import random

import pytest
from rig import make_rig, populate

from compactsim.sim.buddy import rmqueue_smallest, rmqueue_smallest_pages
from compactsim.sim.config import PageKind
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import MigrateType

ANON = KIND_CODE[PageKind.ANON]


def fragmented(seed: int, keep: float):
    """A rig whose zone keeps each page with probability `keep` (the rest freed, merged)."""
    r = make_rig()
    rng = random.Random(seed)
    populate(r, lambda pfn: (ANON, 0) if rng.random() < keep else None)
    return r


def state(z):
    mem = z.mem
    return (bytes(mem.pstate), mem.nxt.tobytes(), mem.prv.tobytes(), list(z.nr_free),
            z.nr_free_mt.tolist(), z.free_pages)


@pytest.mark.parametrize("seed,keep", [(1, 0.0), (2, 0.3), (3, 0.7), (4, 0.95)])
@pytest.mark.parametrize("n", [1, 3, 31, 63, 512, 5000])
def test_bulk_equals_one_page_at_a_time(seed, keep, n):
    mt = MigrateType.MOVABLE
    one, bulk = fragmented(seed, keep).zone, fragmented(seed, keep).zone
    assert state(one) == state(bulk)
    want = []
    while len(want) < n:
        pfn = rmqueue_smallest(one, 0, mt)
        if pfn < 0:
            break
        want.append(pfn)
    have = []
    while len(have) < n:
        got = rmqueue_smallest_pages(bulk, mt, n - len(have))
        if not got:
            break
        have += got
    assert have == want
    assert state(bulk) == state(one)
