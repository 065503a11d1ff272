"""The wheel of deadlines: a block scheduled for a tick is in that tick's bucket, in the
order scheduled, with its deadline in the memmap, however many share the tick, whether
the tick lay in the ring of near ticks or beyond it when scheduled; a tick already
reaped never comes due."""

from __future__ import annotations

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from compactsim.sim.config import config_from_dict
from compactsim.sim.lifetimes import Bucket, Lifetimes
from compactsim.sim.machine import build_machine


def small_machine():
    spec = {"machine": {"memory": "64MiB", "cpus": 1},
            "workload": [{"name": "a", "kind": "anon", "rate": 1}]}
    return build_machine(config_from_dict(spec), simpy.Environment())


WHEEL = len(Lifetimes(small_machine(), 0.01).near)     # ticks in the ring


def taken(wheel: Lifetimes, tick: int) -> list[int]:
    bucket = wheel.take(tick)
    return [] if bucket is None else list(bucket.pfns[:bucket.n])


def test_a_bucket_keeps_every_pfn_in_order_as_it_grows():
    bucket = Bucket()
    pfns = [(i * 7919) % 100_003 for i in range(1000)]      # past several doublings
    for pfn in pfns:
        bucket.append(pfn)
    assert bucket.n == 1000 <= bucket.size == len(bucket.pfns)
    assert list(bucket.pfns[:bucket.n]) == pfns


def test_schedule_files_the_block_under_its_tick_and_sets_its_deadline():
    m = small_machine()
    wheel = Lifetimes(m, 0.01)
    for pfn, tick in ((5, 3), (9, 3), (12, 4), (5, 7)):
        wheel.schedule(pfn, tick)
    assert [taken(wheel, t) for t in range(1, 9)] == [[], [], [5, 9], [12], [], [], [5], []]
    # the memmap holds the latest deadline: pfn 5's entry under tick 3 is stale now
    assert [m.mem.expire[p] for p in (5, 9, 12)] == [7, 3, 4]


def test_a_tick_scheduled_from_beyond_the_ring_and_from_within_keeps_its_order():
    wheel = Lifetimes(small_machine(), 0.01)
    far = WHEEL + 10
    wheel.schedule(1, far)                  # beyond the ring: the dict
    wheel.schedule(2, 5)
    for t in range(1, 21):
        assert taken(wheel, t) == ([2] if t == 5 else [])
    wheel.schedule(3, far)                  # now within the ring
    wheel.schedule(4, far + WHEEL)          # beyond it again
    for t in range(21, far):
        assert taken(wheel, t) == []
    assert taken(wheel, far) == [1, 3]
    assert taken(wheel, far + WHEEL) == [4]


def test_a_tick_already_reaped_never_comes_due():
    wheel = Lifetimes(small_machine(), 0.01)
    for t in range(1, 4):
        wheel.take(t)
    wheel.schedule(7, 3)                    # the reaper has passed tick 3
    wheel.schedule(8, 3 + WHEEL)            # the ring slot tick 3 used, one turn later
    assert all(taken(wheel, t) == [] for t in range(4, 3 + WHEEL))
    assert taken(wheel, 3 + WHEEL) == [8]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(-3, 3 * WHEEL), st.integers(0, 999)),
                max_size=60))
def test_the_wheel_gives_what_a_dict_of_lists_gives(steps):
    """Against the plainest wheel: advance the reaper by `advance` ticks, then schedule
    `pfn` at `offset` ticks from it (negative: a tick already reaped)."""
    wheel = Lifetimes(small_machine(), 0.01)
    ref: dict[int, list[int]] = {}
    now = 0
    for advance, offset, pfn in steps:
        for _ in range(advance):
            now += 1
            assert taken(wheel, now) == ref.pop(now, [])
        tick = max(1, now + offset)
        wheel.schedule(pfn, tick)
        ref.setdefault(tick, []).append(pfn)
    for t in range(now + 1, now + 3 * WHEEL + 2):
        assert taken(wheel, t) == ref.pop(t, [])
    assert all(t <= now for t in ref)        # only ticks already reaped are left
