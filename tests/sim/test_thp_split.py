"""Partly unmapped THPs wait on the deferred split queue (mm/huge_memory.c, 4.5+).

Kernel behaviour checked:
- munmap of part of a PMD-mapped THP frees nothing: the folio stays one compound page and
  is queued by `deferred_split_folio` (`thp_deferred_split_page`);
- the deferred split shrinker scans per `do_shrink_slab` (DEFAULT_SEEKS, batch 128): at
  DEF_PRIORITY a queue of one folio owes no scan, at priority 0 it is split;
- `split_folio` leaves the still-mapped subpages as order-0 anonymous pages on the LRU and
  frees the unmapped ones, which merge: the first 1 MB of a huge page becomes one free
  order-8 block (`thp_split_page`);
- thpscale (mmtests) unmaps the first 1 MB of every 2 MB of a mapping THP faults backed,
  so its holes are 1 MB blocks, not per-cpu-list-sized scraps.
"""

from __future__ import annotations

from rig import make_rig

from compactsim.sim.config import PageKind, apply_overrides, config_from_dict
from compactsim.sim.gfp import ALLOC_WMARK_LOW, GFP_TRANSHUGE
from compactsim.sim.lru import add_page_to_lru
from compactsim.sim.machine import LRU_ANON
from compactsim.sim.page import ALLOC, KIND_CODE, PG_LRU
from compactsim.sim.page_alloc import get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_ORDER
from compactsim.sim.run import run
from compactsim.sim.scenarios import load_scenario
from compactsim.sim.thp import DeferredSplit

THP = KIND_CODE[PageKind.THP]
ANON = KIND_CODE[PageKind.ANON]


def _thp(r) -> int:
    pfn = get_page_from_freelist(r.m, r.task, GFP_TRANSHUGE, PAGEBLOCK_ORDER,
                                 ALLOC_WMARK_LOW).pfn
    assert pfn >= 0
    r.m.mem.kind[pfn] = THP
    add_page_to_lru(r.m, pfn, 1 << PAGEBLOCK_ORDER, LRU_ANON)
    return pfn


def test_partial_unmap_frees_nothing_until_the_shrinker_splits():
    r = make_rig()
    m, z = r.m, r.zone
    pfn = _thp(r)
    free_before = z.free_pages
    anon_before = m.nodes[0].lru_size[LRU_ANON]
    ds = DeferredSplit(m)
    ds.partial_unmap(pfn, 256)
    assert m.events["thp_deferred_split_page"] == 1
    assert m.mem.pstate[pfn] == ALLOC + PAGEBLOCK_ORDER and z.free_pages == free_before
    # One queued folio at DEF_PRIORITY: (1 >> 12) * 4 / DEFAULT_SEEKS = 0 owed, no scan.
    assert ds.shrink(r.task, 12) == [] and len(ds.queue) == 1
    ds.shrink(r.task, 0)
    assert not ds.queue and m.events["thp_split_page"] == 1
    # The unmapped first 1 MB is one free order-8 block; the rest are base anon pages.
    assert z.free_pages == free_before + 256
    assert m.mem.pstate[pfn] < 64 and m.mem.pstate[pfn] & 15 == 8
    kept = range(pfn + 256, pfn + 512)
    assert all(m.mem.pstate[p] == ALLOC and m.mem.kind[p] == ANON
               and m.mem.flags[p] & PG_LRU for p in kept)
    assert m.nodes[0].lru_size[LRU_ANON] == anon_before - 256


def test_a_stale_entry_splits_nothing():
    """A queued folio that reclaim freed meanwhile is dropped, not split."""
    r = make_rig()
    pfn = _thp(r)
    ds = DeferredSplit(r.m)
    ds.partial_unmap(pfn, 256)
    r.m.mem.kind[pfn] = 0            # freed by its owner's reclaim: no longer a THP
    assert ds.shrink(r.task, 0) == [] and not ds.queue
    assert r.m.events["thp_split_page"] == 0


def test_thpscale_punches_one_megabyte_holes():
    """Before the THP faults start (6 s), the free memory of thpscale sits in order-8
    blocks: the unmapped halves of the first mapping's huge pages, split by the shrinker
    under the pressure of the file read."""
    cfg = config_from_dict(apply_overrides(load_scenario("thpscale"), ["duration=5.9s"]))
    r = run(cfg)
    v = r.summary["vmstat"]
    assert v["thp_split_page"] > 100
    nr_free = r.summary["free_pages_by_order"][0]
    in_order8 = nr_free[8] << 8
    assert in_order8 > 0.5 * sum(n << o for o, n in enumerate(nr_free))


def test_a_base_fault_line_times_the_whole_2mb_unit():
    """thpscale.c times the first touch and the memset of a 2 MB unit: on fallback that is
    512 base-page faults, each at least `anon_fault_us`."""
    cfg = config_from_dict({
        "duration": "0.5s", "machine": {"memory": "64MiB", "cpus": 1},
        "tunables": {"thp_enabled": "never"},
        "workload": [{"name": "thp", "kind": "thp", "pattern": "burst", "burst": 4,
                      "burst_interval": "0.1s", "order_mix": {9: 1}, "madvise": True,
                      "lifetime": {"distribution": "forever"}}]})
    lines = [line.split() for line in run(cfg).fault_log.splitlines()]
    assert lines and all(size == "base" for _, _, size, _ in lines)
    assert min(float(us) for *_, us in lines) >= 512 * cfg.costs.anon_fault_us
