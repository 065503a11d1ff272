"""`do_shrink_slab`'s arithmetic (mm/vmscan.c; mm/shrinker.c from 6.7), which the zsmalloc
pool's shrinker and the THP deferred split shrinker share (sim/shrinker.py)."""

from compactsim.sim.shrinker import SHRINK_BATCH, Shrinker


def test_work_owed_below_a_batch_is_deferred_then_scanned():
    s = Shrinker()
    # 1000 freeable at DEF_PRIORITY 12: (1000 >> 12) * 4 / 2 = 0 owed
    assert s.do_shrink_slab(1000, 12) == 0 and s.nr_deferred == 0
    # at priority 4: (1000 >> 4) * 4 / 2 = 124 < SHRINK_BATCH: deferred, not scanned
    assert s.do_shrink_slab(1000, 4) == 0 and s.nr_deferred == 124
    # again: 124 + 124 = 248 >= 128: scanned, and nothing left deferred
    assert s.do_shrink_slab(1000, 4) == 248 and s.nr_deferred == 0


def test_small_caches_scan_everything_and_the_total_is_capped():
    s = Shrinker()
    # fewer freeable than a batch: the whole cache is the batch (priority 0: 10 * 2 = 20)
    assert s.do_shrink_slab(10, 0) == 20 == 2 * 10      # capped at twice the freeable
    assert SHRINK_BATCH == 128
    assert Shrinker().do_shrink_slab(0, 0) == 0
