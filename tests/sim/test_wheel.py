"""The wheel of deadlines: the blocks filed for a tick come out when the reaper takes it,
in the order filed, with their deadline in the memmap, however many share the tick and
whether the tick lay beyond the ring of epochs, within it, or in the epoch being reaped
when filed; a tick already reaped never comes due."""

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


def test_a_tick_filed_from_every_distance_keeps_the_order_filed():
    """Epochs of 4 ticks, 2 ahead in the ring: tick 40 is filed while it lies beyond the
    ring, then within it, then in the open epoch; it gives its blocks in that order."""
    wheel = Lifetimes(small_machine(), 0.01, epoch_shift=2, epochs=2)
    wheel.schedule(1, 40)                   # epoch 10: beyond (the dict)
    wheel.schedule(2, 5)                    # epoch 1: ahead
    wheel.schedule(3, 2)                    # epoch 0: ahead until tick 1 opens it
    assert [taken(wheel, t) for t in range(1, 7)] == [[], [3], [], [], [2], []]
    for t in range(7, 33):                  # epoch 8 is open: epoch 10 is in the ring
        assert taken(wheel, t) == []
    wheel.schedule(4, 40)                   # ahead
    wheel.schedule(5, 45)                   # epoch 11: beyond again
    for t in range(33, 40):
        assert taken(wheel, t) == []
    wheel.schedule(6, 40)                   # epoch 10 is open: its own bucket
    wheel.schedule(7, 40)
    assert taken(wheel, 40) == [1, 4, 6, 7]
    assert [taken(wheel, t) for t in range(41, 47)] == [[], [], [], [], [5], []]


def test_a_tick_already_reaped_never_comes_due():
    wheel = Lifetimes(small_machine(), 0.01, epoch_shift=2, epochs=2)
    for t in range(1, 4):
        wheel.take(t)
    wheel.schedule(7, 3)                    # the reaper has passed tick 3
    wheel.schedule(8, 3 + 4 * 2)            # the ring slot of tick 3's epoch, a turn later
    assert all(taken(wheel, t) == [] for t in range(4, 11))
    assert taken(wheel, 11) == [8]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([(0, 1), (1, 2), (2, 4), (6, 1024)]),
       st.lists(st.tuples(st.integers(0, 12), st.integers(-3, 80), st.integers(0, 999)),
                max_size=80))
def test_the_wheel_gives_what_a_dict_of_lists_gives(sizes, steps):
    """Against the plainest wheel: advance the reaper by `advance` ticks, then file `pfn`
    at `offset` ticks from it (0 or less: a tick already reaped)."""
    shift, epochs = sizes
    wheel = Lifetimes(small_machine(), 0.01, epoch_shift=shift, epochs=epochs)
    ref: dict[int, list[int]] = {}
    now = 0
    for advance, offset, pfn in steps:
        for _ in range(advance):
            now += 1
            assert taken(wheel, now) == ref.pop(now, [])
        tick = max(1, now + offset)
        wheel.schedule(pfn, tick)
        ref.setdefault(tick, []).append(pfn)
    last = max(ref, default=now)
    while now < last:
        now += 1
        assert taken(wheel, now) == ref.pop(now, [])
    assert all(t <= now for t in ref)        # only ticks already reaped are left
