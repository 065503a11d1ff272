"""ServiceMetrics on a real store: simulated events and run wall times counted once each, and
a scrape reads only the runs added since the last one and those not ended then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from compactsim.server.metrics import ServiceMetrics
from compactsim.server.store import Progress, RunStore

T0 = 1_714_564_800_000_000_000   # 2024-05-01T12:00:00Z in ns
S = 1_000_000_000


class Clock:
    now = T0

    def __call__(self):
        return self.now


class Reading:
    """A real store whose runs_changed() answers are recorded: which runs each scan read."""

    def __init__(self, store: RunStore):
        self.store = store
        self.read: list[set[str]] = []

    def runs_changed(self, after, ids=()):
        runs, cursor = self.store.runs_changed(after, ids)
        self.read.append({r.id for r in runs})
        return runs, cursor


@pytest.fixture
def lab(tmp_path):
    clock = Clock()
    store = RunStore(tmp_path / "runs.db", clock=clock)
    yield store, clock
    store.close()


def finish(store, clock, rid, events, wall_s, end="SUCCEEDED"):
    """Take a QUEUED run through RUNNING to `end`, `wall_s` seconds later."""
    store.update_state(rid, "RUNNING")
    store.update_progress(rid, Progress(events=events))
    clock.now += int(wall_s * S)
    store.update_state(rid, end)


def scrape(registry, metrics):
    """One scrape: (events counted, (runs in the wall-time histogram, their sum), the runs it
    read). Values come from the scrape's text: get_sample_value() would scan again."""
    reads = len(metrics.manager.store.read)
    values = {s.name: s.value for f in text_string_to_metric_families(
        generate_latest(registry).decode()) for s in f.samples}
    assert len(metrics.manager.store.read) == reads + 1     # one store read per scrape
    return (values["compactsim_simulated_events_total"],
            (values["compactsim_run_wall_seconds_count"],
             values["compactsim_run_wall_seconds_sum"]),
            metrics.manager.store.read[-1])


def test_scans_count_each_run_once_and_never_reread_finished_runs(lab):
    store, clock = lab
    with store.transaction():
        for i in range(50):
            finish(store, clock, store.create_run({"i": i})[0].id, 100, 1)
    a = store.create_run({"run": "a"})[0].id
    store.update_state(a, "RUNNING")
    store.update_progress(a, Progress(events=10))
    b = store.create_run({"run": "b"})[0].id

    reading = Reading(store)
    metrics = ServiceMetrics(SimpleNamespace(store=reading))
    assert len(reading.read[0]) == 52                       # the baseline reads everything
    registry = CollectorRegistry()
    metrics.register(registry)
    assert scrape(registry, metrics) == (0, (0, 0), {a, b})   # the baseline is not counted

    clock.now += 2 * S
    store.update_progress(a, Progress(events=40))
    store.update_state(a, "SUCCEEDED")                      # 2 s after it started
    c = store.create_run({"run": "c"})[0].id                # made and ended between scrapes
    finish(store, clock, c, 7, 3)
    d = store.create_run({"run": "d"})[0].id
    assert scrape(registry, metrics) == (30 + 7, (2, 5.0), {a, b, c, d})
    assert scrape(registry, metrics) == (37, (2, 5.0), {b, d})   # a and c ended: not read

    store.update_state(b, "RUNNING")
    store.update_progress(b, Progress(events=5))
    store.soft_delete(b)                                    # deleted before it ended: counts
    clock.now += 4 * S
    store.update_state(b, "CANCELLED")
    store.update_state(d, "CANCELLED")                      # never started: no wall time
    assert scrape(registry, metrics) == (42, (3, 9.0), {b, d})
    assert scrape(registry, metrics) == (42, (3, 9.0), set())   # nothing in flight
    assert len(reading.read) == 6


def test_a_restart_takes_a_new_baseline(lab, tmp_path):
    store, clock = lab
    rid = store.create_run({})[0].id
    finish(store, clock, rid, 100, 1)
    running = store.create_run({})[0].id
    store.update_state(running, "RUNNING")
    store.update_progress(running, Progress(events=20))
    metrics = ServiceMetrics(SimpleNamespace(store=Reading(store)))
    registry = CollectorRegistry()
    metrics.register(registry)
    store.update_progress(running, Progress(events=26))
    assert scrape(registry, metrics)[:2] == (6, (0, 0))     # only what came after the start
