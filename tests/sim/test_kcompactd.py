"""sim/kcompactd.py: wakeups, kcompactd_do_work and proactive compaction over simulated
time on a 64 MiB machine.

Expected values follow mm/compaction.c (5.9+ for the proactive mode): the proactive
thresholds (`fragmentation_score_wmark`), the 500 ms `HPAGE_FRAG_CHECK_INTERVAL_MSEC`
timeout, the back-off to `500 ms << COMPACT_MAX_DEFER_SHIFT` = 32 s when the node score
did not drop, proactiveness 0 (no timeout), and `wait_event`'s check of
`kcompactd_work_requested()` before sleeping and on timeout.
"""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import pytest
import simpy
from rig import make_rig as machine_rig
from rig import populate

from compactsim.sim.compaction import (
    Compaction,
    fragmentation_score_wmark,
    fragmentation_score_zone,
)
from compactsim.sim.config import PageKind
from compactsim.sim.kcompactd import HPAGE_FRAG_CHECK_INTERVAL, Kcompactd
from compactsim.sim.machine import Machine
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import PAGEBLOCK_NR_PAGES
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.sampling import fragmentation_score_node

ANON = KIND_CODE[PageKind.ANON]
SLAB = KIND_CODE[PageKind.SLAB_UNMOVABLE]
BACKOFF = 32.0


@dataclasses.dataclass
class Rig:
    m: Machine
    env: simpy.Environment
    reclaim: Reclaim
    compaction: Compaction
    kcompactd: Kcompactd
    checks: list            # (time, verdict) of every proactive check
    runs: list              # (start, end) of every proactive_compact_node

    @property
    def zone(self):
        return self.m.zones[0]

    def score(self) -> int:
        return fragmentation_score_node(self.m, 0)


def make_rig(owner, profile: str = "v6.10", proactiveness: int = 20) -> Rig:
    base = machine_rig(profile, {"compaction_proactiveness": proactiveness})
    populate(base, lambda pfn: None if (kind := owner(pfn)) is None else (kind, 0))
    m, env, reclaim, compaction = base.m, base.env, base.reclaim, base.compaction
    kc = Kcompactd(m, compaction, reclaim)
    r = Rig(m, env, reclaim, compaction, kc, [], [])
    check, proactive = kc.should_proactive_compact_node, kc.proactive_compact_node

    def spy_check(nid):
        verdict = check(nid)
        r.checks.append((env.now, verdict))
        return verdict

    def spy_run(nid):
        start = env.now
        yield from proactive(nid)
        r.runs.append((start, env.now))
    kc.should_proactive_compact_node = spy_check
    kc.proactive_compact_node = spy_run
    return r


def half_full(pfn: int):
    """Alternate 16-page runs, free and anonymous: every free page below order 9."""
    return None if pfn & 16 == 0 else ANON


def pinned(pfn: int):
    """As half_full, with an unmovable page at the start of every pageblock: no amount
    of compaction makes a free pageblock."""
    return SLAB if pfn & (PAGEBLOCK_NR_PAGES - 1) == 0 else half_full(pfn)


# --- thresholds -----------------------------------------------------------------------------

@pytest.mark.parametrize("proactiveness,low,high", [
    (20, 80, 90), (0, 100, 100), (50, 50, 60), (90, 10, 20), (95, 5, 15), (100, 5, 15)])
def test_fragmentation_score_wmarks(proactiveness, low, high):
    assert fragmentation_score_wmark(proactiveness, True) == low
    assert fragmentation_score_wmark(proactiveness, False) == high


def test_node_score_weights_the_zone_by_present_pages():
    r = make_rig(half_full)
    assert fragmentation_score_zone(r.zone) == 100
    # 100 * present / (present + 1), rounded down: a lone zone scores 99.
    assert r.score() == 100 * r.zone.present_pages // (r.zone.present_pages + 1) == 99


# --- proactive compaction over time ----------------------------------------------------------

def test_fragmented_node_is_compacted_on_the_first_timeout_down_to_the_low_mark():
    r = make_rig(half_full)
    r.env.run(until=3.0)
    assert r.kcompactd.proactive_runs == 1
    start, end = r.runs[0]
    assert start == HPAGE_FRAG_CHECK_INTERVAL
    assert r.checks[0] == (HPAGE_FRAG_CHECK_INTERVAL, True)
    assert r.compaction.results == {"proactive/success": 1}
    assert fragmentation_score_zone(r.zone) <= 80
    # The score dropped: checks go on every 500 ms, and find nothing to do.
    times = [t for t, _ in r.checks[1:]]
    assert times[0] == pytest.approx(end + HPAGE_FRAG_CHECK_INTERVAL)
    assert all(b - a == pytest.approx(HPAGE_FRAG_CHECK_INTERVAL) for a, b in pairwise(times))
    assert not any(v for _, v in r.checks[1:])
    assert r.m.events["compact_daemon_wake"] == 0
    assert r.m.events["compact_daemon_migrate_scanned"] > 0
    assert r.m.events["compact_daemon_migrate_scanned"] == r.m.events["compact_migrate_scanned"]


def test_higher_proactiveness_compacts_further():
    moved = {}
    for proactiveness, low in ((20, 80), (50, 50)):
        r = make_rig(half_full, proactiveness=proactiveness)
        r.env.run(until=1.0)
        assert r.kcompactd.proactive_runs == 1
        assert fragmentation_score_zone(r.zone) <= low
        moved[proactiveness] = r.m.events["pgmigrate_success"]
    assert moved[50] > moved[20] > 0


def test_no_progress_backs_off_to_32_seconds():
    r = make_rig(pinned)
    assert r.score() > 90
    r.env.run(until=BACKOFF)
    assert r.kcompactd.proactive_runs == 1
    start, end = r.runs[0]
    assert start == HPAGE_FRAG_CHECK_INTERVAL
    assert r.score() > 90                        # nothing could be done
    assert r.compaction.results == {"proactive/complete": 1}
    assert [t for t, _ in r.checks] == [HPAGE_FRAG_CHECK_INTERVAL]
    r.env.run(until=end + BACKOFF + 1.0)
    assert r.kcompactd.proactive_runs == 2
    assert r.checks[1][0] == pytest.approx(end + BACKOFF)
    assert r.runs[1][0] == pytest.approx(end + BACKOFF)


def test_proactiveness_zero_disables_the_timeout():
    r = make_rig(half_full, proactiveness=0)
    r.env.run(until=10.0)
    assert r.checks == [] and r.kcompactd.proactive_runs == 0
    assert r.m.events["pgmigrate_success"] == 0
    # Real wakeups are still served.
    r.kcompactd.wakeup_kcompactd(0, 9, 1)
    r.env.run(until=10.5)
    assert r.m.events["compact_daemon_wake"] == 1
    assert r.compaction.results == {"kcompactd/success": 1}


def kswapd_wakes_at(r: Rig, when: float):
    def kswapd():
        yield r.env.timeout(when)
        r.reclaim.kswapd_sleeping[0] = False     # balance_pgdat is running
    r.env.process(kswapd())


def test_no_proactive_compaction_while_kswapd_runs():
    r = make_rig(half_full)
    kswapd_wakes_at(r, 0.2)             # after kswapd's HZ/10 nap at start
    r.env.run(until=2.2)
    assert [t for t, _ in r.checks] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert not any(v for _, v in r.checks)
    assert r.kcompactd.proactive_runs == 0


def test_proactive_run_yields_to_kswapd():
    r = make_rig(half_full)
    kswapd_wakes_at(r, HPAGE_FRAG_CHECK_INTERVAL + 1e-4)
    r.env.run(until=1.0)
    assert r.kcompactd.proactive_runs == 1
    assert r.compaction.results == {"proactive/partial_skipped": 1}
    assert fragmentation_score_zone(r.zone) > 80


# --- wakeups and kcompactd_do_work ------------------------------------------------------------

def test_wakeup_runs_do_work_at_once():
    r = make_rig(half_full, proactiveness=0)
    kc, z = r.kcompactd, r.zone
    kc.wakeup_kcompactd(0, 0, 1)                 # order 0 is ignored
    assert kc.max_order == [0]
    r.env.run(until=0.1)
    assert r.m.events["compact_daemon_wake"] == 0
    kc.wakeup_kcompactd(0, 9, 1)
    assert kc.max_order == [9]
    r.env.run(until=0.2)
    assert r.m.events["compact_daemon_wake"] == 1
    assert kc.max_order == [0]
    assert r.compaction.results == {"kcompactd/success": 1}
    assert z.nr_free[9] + z.nr_free[10] >= 1
    assert z.compact_order_failed == 10          # compaction_defer_reset(zone, 9, false)


def test_do_work_defers_a_zone_where_compaction_fails():
    r = make_rig(pinned, proactiveness=0)
    kc, z = r.kcompactd, r.zone
    assert kc.kcompactd_node_suitable(0) is False          # max_order 0 yet
    kc.wakeup_kcompactd(0, 9, 1)
    r.env.run(until=0.1)
    assert r.compaction.results == {"kcompactd/complete": 1}
    assert (z.compact_defer_shift, z.compact_considered) == (1, 0)
    # The next wake finds the zone deferred: counted, but no compaction runs.
    kc.wakeup_kcompactd(0, 9, 1)
    r.env.run(until=0.2)
    assert r.m.events["compact_daemon_wake"] == 2
    assert r.compaction.results == {"kcompactd/complete": 1}
    assert z.compact_considered == 1
    # The one after that goes ahead (2^1 - 1 skipped) and defers further.
    kc.wakeup_kcompactd(0, 9, 1)
    r.env.run(until=0.3)
    assert r.compaction.results == {"kcompactd/complete": 2}
    assert z.compact_defer_shift == 2


def test_wakeup_of_an_unsuitable_node_waits_for_the_timeout():
    """A node that already passes the order's MIN watermark is not woken; the raised
    order is served when the 500 ms timeout checks kcompactd_work_requested()."""
    r = make_rig(lambda pfn: ANON if pfn < 8 * PAGEBLOCK_NR_PAGES else None)
    kc = r.kcompactd
    r.env.run(until=0.1)
    kc.wakeup_kcompactd(0, 9, 1)
    assert kc.max_order == [9] and kc.sleeping == [True]
    r.env.run(until=0.4)
    assert r.m.events["compact_daemon_wake"] == 0
    r.env.run(until=0.6)
    assert r.m.events["compact_daemon_wake"] == 1
    assert kc.max_order == [0]
    assert r.compaction.results == {}            # do_work found the zone fine
    assert r.checks == []                        # that wake was work, not a proactive check


def test_wakeup_during_proactive_compaction_is_served_when_it_ends():
    """kcompactd is busy compacting proactively when kswapd wakes it: the raised order is
    handled as soon as the run ends, not lost until the next wake. Regression: the sim
    went back to sleep for 32 s with the order pending."""
    r = make_rig(pinned)
    kc = r.kcompactd

    def waker():
        yield r.env.timeout(HPAGE_FRAG_CHECK_INTERVAL + 1e-5)
        assert not kc.sleeping[0]                # inside the proactive run
        kc.wakeup_kcompactd(0, 9, 1)
    r.env.process(waker())
    r.env.run(until=HPAGE_FRAG_CHECK_INTERVAL + 0.1)
    assert r.kcompactd.proactive_runs == 1
    end = r.runs[0][1]
    assert end < HPAGE_FRAG_CHECK_INTERVAL + 0.1
    assert r.m.events["compact_daemon_wake"] == 1
    assert kc.max_order == [0]
