"""The wheel of deadlines: a block scheduled for a tick is in that tick's bucket, in the
order scheduled, with its deadline in the memmap, however many share the tick."""

from __future__ import annotations

import simpy

from compactsim.sim.config import config_from_dict
from compactsim.sim.machine import build_machine
from compactsim.sim.workload import Bucket, Lifetimes


def test_a_bucket_keeps_every_pfn_in_order_as_it_grows():
    bucket = Bucket()
    pfns = [(i * 7919) % 100_003 for i in range(1000)]      # past several doublings
    for pfn in pfns:
        bucket.append(pfn)
    assert bucket.n == 1000 <= bucket.size == len(bucket.pfns)
    assert list(bucket.pfns[:bucket.n]) == pfns


def test_schedule_files_the_block_under_its_tick_and_sets_its_deadline():
    spec = {"machine": {"memory": "64MiB", "cpus": 1},
            "workload": [{"name": "a", "kind": "anon", "rate": 1}]}
    m = build_machine(config_from_dict(spec), simpy.Environment())
    wheel = Lifetimes(m, 0.01)
    for pfn, tick in ((5, 3), (9, 3), (12, 4), (5, 7)):
        wheel.schedule(pfn, tick)
    assert {t: list(b.pfns[:b.n]) for t, b in wheel.buckets.items()} == {
        3: [5, 9], 4: [12], 7: [5]}
    # the memmap holds the latest deadline: pfn 5's entry under tick 3 is stale now
    assert [m.mem.expire[p] for p in (5, 9, 12)] == [7, 3, 4]
