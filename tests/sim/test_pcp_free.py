"""free_pcppages_bulk per era: which pages of which per-cpu lists a bulk free of `count`
pages hands back to the buddy lists, and in what order.

Expected values follow mm/page_alloc.c `free_pcppages_bulk`:

- 4.4 to 5.17 (profiles v4.4 .. v5.9): `batch_free` round-robin over the pcp types. The
  type index starts at 0 and is incremented before the first list is looked at, so the
  first page comes from MIGRATE_MOVABLE's list; each visit takes `batch_free` pages,
  where `batch_free` counts the lists looked at since the last take (empty ones make the
  next non-empty list give more), and all of `count` once only one list is non-empty.
- 5.18+ (profiles v6.1 ..): "drain the requested list first" and "free pages in a single
  pass": a list is emptied before the next one (in pindex order) is started, beginning
  with the list of the page just freed (`pindex`; 0 for drain_pages_zone).

Both take each page from the tail of its list (`list_last_entry`), the coldest one.
Lists in these tests are written tail first: u0 is the coldest unmovable page.
"""

from __future__ import annotations

import pytest
import simpy

from compactsim.sim.buddy import free_one_page
from compactsim.sim.config import PAGEBLOCK_ORDER, config_from_dict
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, GFP_HIGHUSER_MOVABLE
from compactsim.sim.machine import build_machine
from compactsim.sim.page import PCP
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import MigrateType
from compactsim.sim.pcp import drain_zone_pages, free_pcppages_bulk
from compactsim.sim.task import Task

OLD = ["v4.4", "v5.9"]
NEW = ["v6.1", "v6.10", "v6.17"]
U, M, R = MigrateType.UNMOVABLE, MigrateType.MOVABLE, MigrateType.RECLAIMABLE


class Pcp:
    """A machine of `profile` with pcp lists, and order-0 pages taken from it to queue."""

    def __init__(self, profile: str):
        cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 1},
                                "kernel": {"profile": profile},
                                "workload": [{"name": "x"}]})
        self.m = build_machine(cfg, simpy.Environment())
        self.task = Task(comm="test", pid=1, cpu=0, node=0)
        self.z = self.m.zones[0]
        pfns = [get_page_from_freelist(self.m, self.task, GFP_HIGHUSER_MOVABLE, 0,
                                       ALLOC_NO_WATERMARKS).pfn for _ in range(32)]
        assert min(pfns) >= 0
        drain_zone_pages(self.z, free_one_page, self.m.pageblocks, self.m.policy)
        self.spare = pfns

    def queue(self, sizes: dict[int, int]) -> dict[int, list[int]]:
        """Put sizes[mt] allocated pages on cpu 0's list of each type, tail first."""
        pcp = self.z.pcp
        names = {}
        for mt in (U, M, R):
            lst = [self.spare.pop() for _ in range(sizes.get(mt, 0))]
            for pfn in lst:
                self.m.mem.pstate[pfn] = PCP + mt
            pcp.lists[0][mt] = list(lst)
            names[mt] = lst
        pcp.counts[0] = sum(sizes.values())
        return names

    def bulk(self, count: int, **kw) -> list[int]:
        got: list[int] = []
        free_pcppages_bulk(self.z, 0, count, _recorder(got), self.m.pageblocks, self.m.policy,
                           **kw)
        return got


def _recorder(got):
    def free_one_page(z, pfn, order, mt, to_tail=False, pageblocks=None):
        got.append(pfn)
    return free_one_page


def label(names: dict[int, list[int]], pfns: list[int]) -> list[str]:
    rev = {pfn: f"{'umr'[mt]}{i}" for mt, lst in names.items() for i, pfn in enumerate(lst)}
    return [rev[p] for p in pfns]


def lists(r: Pcp, names) -> list[list[str]]:
    return [label(names, r.z.pcp.lists[0][mt]) for mt in (U, M, R)]


@pytest.mark.parametrize("profile", OLD)
def test_batch_free_round_robin_starts_at_movable(profile):
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6, R: 2})
    assert label(names, r.bulk(7)) == ["m0", "r0", "u0", "m1", "r1", "u1", "m2"]
    assert lists(r, names) == [["u2", "u3"], ["m3", "m4", "m5"], []]
    assert r.z.pcp.counts[0] == 5


@pytest.mark.parametrize("profile", OLD)
def test_batch_free_takes_more_from_a_list_after_empty_ones(profile):
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6})
    # MOVABLE: batch_free 1. RECLAIMABLE empty, so UNMOVABLE gets batch_free 2, and so on.
    assert label(names, r.bulk(6)) == ["m0", "u0", "u1", "m1", "u2", "u3"]


@pytest.mark.parametrize("profile", OLD)
def test_batch_free_drain_of_everything(profile):
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6, R: 2})
    # The last list left is freed whole once batch_free reaches MIGRATE_PCPTYPES.
    assert label(names, r.bulk(12)) == ["m0", "r0", "u0", "m1", "r1", "u1", "m2",
                                        "u2", "u3", "m3", "m4", "m5"]
    assert r.z.pcp.counts[0] == 0


@pytest.mark.parametrize("profile", NEW)
def test_whole_list_from_the_requested_pindex(profile):
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6, R: 2})
    assert label(names, r.bulk(7, pindex=M)) == ["m0", "m1", "m2", "m3", "m4", "m5", "r0"]
    assert lists(r, names) == [["u0", "u1", "u2", "u3"], [], ["r1"]]
    assert r.z.pcp.counts[0] == 5


@pytest.mark.parametrize("profile", NEW)
def test_whole_list_drain_starts_at_pindex_0(profile):
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6, R: 2})
    assert label(names, r.bulk(12)) == ["u0", "u1", "u2", "u3", "m0", "m1", "m2", "m3",
                                        "m4", "m5", "r0", "r1"]


@pytest.mark.parametrize("profile,left", [
    ("v4.4", [["u2", "u3"], ["m3", "m4", "m5", "m6"], []]),
    ("v5.9", [["u2", "u3"], ["m3", "m4", "m5", "m6"], []]),
    ("v6.1", [["u0", "u1", "u2", "u3"], [], ["r0", "r1"]]),
    ("v6.10", [["u0", "u1", "u2", "u3"], [], ["r0", "r1"]]),
])
def test_free_over_high_drains_per_era(profile, left):
    """free_unref_page_commit: the page freed goes on MOVABLE's list (hot end, m6); the
    list is then at `high`, and `batch` pages go back to the buddy lists."""
    r = Pcp(profile)
    names = r.queue({U: 4, M: 6, R: 2})
    pcp = r.z.pcp
    pcp.batch, pcp.high = 7, 13
    freed = r.spare.pop()
    assert r.m.pageblocks.mt[freed >> PAGEBLOCK_ORDER] == M
    names[M].append(freed)
    free_pages(r.m, r.task, freed, 0)
    assert lists(r, names) == left
    assert pcp.counts[0] == 6
    gone = set(p for lst in names.values() for p in lst) - set(
        p for lst in pcp.lists[0] for p in lst)
    assert len(gone) == 7
    assert not any(PCP <= r.m.mem.pstate[p] < PCP + len(names) for p in gone)


@pytest.mark.parametrize("profile,traced", [("v6.1", M), ("v6.10", U)])
def test_drain_reports_the_type_freed_to(profile, traced):
    """mm_page_pcpu_drain prints the migratetype handed to __free_one_page: the type the
    page was queued under to 6.9 (get_pcppage_migratetype), its pageblock's current type
    from 6.10 (get_pfnblock_migratetype)."""
    r = Pcp(profile)
    names = r.queue({M: 1})
    pfn = names[M][0]
    r.m.pageblocks.mt[pfn >> PAGEBLOCK_ORDER] = U
    got: list[int] = []
    freed = free_pcppages_bulk(r.z, 0, 1, _recorder(got), r.m.pageblocks, r.m.policy)
    assert freed == [(pfn, traced)]
