"""Compaction: pages scanned and pages migrated per wall second.

A 2 GiB machine is filled with page cache among scattered unmovable slab, three quarters
of the page cache dies (the frag-hugepage pattern), and then `/proc/sys/vm/compact_memory`
compacts the whole zone (MIGRATE_SYNC, both scanners over every block). The time is the
compaction's own: the wall (and CPU) time of the steps of its `compact_node` process,
each resume of the generator timed, so neither the fill nor the other processes' events
in between count. The work is its counters (`compact_migrate_scanned +
compact_free_scanned`, `pgmigrate_success`) less those of the same run without the manual
compaction. Each figure is the best of REPEATS runs, as the floor is. Goal: 20 million
pages scanned per wall second; both are also reported against the floor measured in the
same run, and the note gives the same ratios in CPU time.
"""

from __future__ import annotations

import contextlib
import time

from bench import Row
from bench.floor import Floor
from compactsim.sim import run as run_module
from compactsim.sim.config import config_from_dict
from compactsim.sim.run import run

SCAN_GOAL = 20e6
AT = 6.0
REPEATS = 2


def spec(compact: bool) -> dict:
    return {
        "seed": 1, "duration": AT + 3.0,
        "machine": {"memory": "2GiB", "cpus": 4},
        "tunables": {"compaction_proactiveness": 0},
        "workload": [
            # interleaved fill: a quarter of the page cache stays, three quarters die
            {"name": "kept", "kind": "file", "tasks": 2, "pattern": "fill",
             "fill_fraction": 0.9, "rate": 1e-3, "batch": 16,
             "lifetime": {"distribution": "forever"}},
            {"name": "dropped", "kind": "file", "tasks": 2, "pattern": "fill",
             "fill_fraction": 0.9, "rate": 1e-3, "batch": 48,
             "lifetime": {"distribution": "uniform", "mean": 2.0}},
            {"name": "slab", "kind": "slab_unmovable", "tasks": 1, "rate": 400, "stop": 3.0,
             "lifetime": {"distribution": "forever"}},
        ],
        "compact_memory": [AT] if compact else [],
    }


@contextlib.contextmanager
def _timing_compact_node(spent: list[float]):
    """While active, run()'s compact_memory processes add the wall and CPU seconds of
    their own generator steps to `spent` ([wall, cpu])."""
    real = run_module.compact_node

    def timed(*args):
        steps = real(*args)
        value = None
        while True:
            t, c = time.perf_counter(), time.process_time()
            try:
                event = steps.send(value)
            except StopIteration as done:
                spent[0] += time.perf_counter() - t
                spent[1] += time.process_time() - c
                return done.value
            spent[0] += time.perf_counter() - t
            spent[1] += time.process_time() - c
            value = yield event

    run_module.compact_node = timed
    try:
        yield
    finally:
        run_module.compact_node = real


def _timed(compact: bool) -> tuple[float, float, dict]:
    """(best wall s, best CPU s of compact_memory's own steps, vmstat) of REPEATS runs."""
    walls, cpus = [], []
    vm: dict = {}
    for _ in range(REPEATS):
        spent = [0.0, 0.0]
        with _timing_compact_node(spent):
            result = run(config_from_dict(spec(compact)))
        walls.append(spent[0])
        cpus.append(spent[1])
        vm = result.summary["vmstat"]
    return min(walls), min(cpus), vm


def measure(floor: Floor) -> list[Row]:
    _, _, base = _timed(False)
    wall, cpu, vm = _timed(True)
    spent = max(wall, 1e-9)
    spent_cpu = max(cpu, 1e-9)
    scanned = (vm["compact_migrate_scanned"] + vm["compact_free_scanned"]
               - base["compact_migrate_scanned"] - base["compact_free_scanned"])
    migrated = vm["pgmigrate_success"] - base["pgmigrate_success"]
    note = (f"2 GiB, compact_memory at {AT:g} s: {scanned:,} pfns scanned, {migrated:,} pages "
            f"migrated in {spent:.3f} wall s of compact_memory's own steps (best of "
            f"{REPEATS}); {spent_cpu:.3f} CPU s")
    return [
        Row("compaction.scanned", scanned / spent, "pages/s", scanned / spent / floor.wall,
            ">= 20M pages/s", scanned / spent >= SCAN_GOAL, note),
        Row("compaction.migrated", migrated / spent, "pages/s", migrated / spent / floor.wall,
            "", None, f"ratio is to the floor's events/s; in CPU time "
                      f"{migrated / spent_cpu / floor.cpu:.3f} x floor (scanned "
                      f"{scanned / spent_cpu / floor.cpu:.3f})"),
    ]


def main(floor: Floor) -> list[Row]:
    return measure(floor)
