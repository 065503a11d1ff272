"""Presets exercise the mechanism they are named for at their defaults (shortened runs).

- frag-hugepage: once frag frees 3/4 of its pages, the node's fragmentation score passes
  proactive compaction's high mark at the default proactiveness 20 (mm/compaction.c
  `fragmentation_score_wmark`: 90), so kcompactd compacts proactively before khugehog;
  with proactiveness 0 it never does.
- highalloc-stress: order-9 requests that fail wake kswapd, which hands the order to
  kcompactd on going to sleep (`kswapd_try_to_sleep` -> `wakeup_kcompactd`).
"""

from __future__ import annotations

from compactsim.sim.compaction import fragmentation_score_wmark
from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.run import run
from compactsim.sim.scenarios import load_scenario


def preset(name: str, *overrides: str):
    return run(config_from_dict(apply_overrides(load_scenario(name), list(overrides))))


def test_frag_hugepage_fragments_past_the_proactive_high_mark():
    on = preset("frag-hugepage", "duration=4.5s")
    off = preset("frag-hugepage", "duration=4.5s", "tunables.compaction_proactiveness=0")
    scores = [row["node0_fragmentation_score"] for row in off.series]
    assert max(scores) > fragmentation_score_wmark(20, False)
    assert on.summary["compaction"]["proactive_runs"] >= 1
    assert off.summary["compaction"]["proactive_runs"] == 0
    # Proactive compaction made free pageblocks before khugehog asks for them.
    assert on.summary["fragmentation_score"][0] <= fragmentation_score_wmark(20, True)
    assert off.summary["fragmentation_score"][0] > fragmentation_score_wmark(20, False)


def test_highalloc_stress_wakes_kcompactd():
    r = preset("highalloc-stress", "duration=25s")
    assert r.summary["vmstat"]["compact_daemon_wake"] >= 20
