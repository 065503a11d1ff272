"""Compaction: pages scanned and pages migrated per wall second.

A 2 GiB machine is filled with page cache among scattered unmovable slab, three quarters
of the page cache dies (the frag-hugepage pattern), and then `/proc/sys/vm/compact_memory`
compacts the whole zone (MIGRATE_SYNC, both scanners over every block). The same run is
made without the manual compaction; the difference in wall time is the compaction's, and
its counters (`compact_migrate_scanned + compact_free_scanned`, `pgmigrate_success`) are the work.
Each run is the best of REPEATS (wall and CPU time apart), as the floor is, so that other
work on the machine moves the difference less. Goal: 20 million pages scanned per wall
second; both are also reported against the floor measured in the same run, and the note
gives the same ratios in CPU time.
"""

from __future__ import annotations

import time

from bench import Row
from bench.floor import Floor
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


def _timed(compact: bool) -> tuple[float, float, dict]:
    """(best wall s, best CPU s, vmstat) of REPEATS runs of the same spec."""
    walls, cpus = [], []
    vm: dict = {}
    for _ in range(REPEATS):
        cfg = config_from_dict(spec(compact))
        t, c = time.perf_counter(), time.process_time()
        result = run(cfg)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        vm = result.summary["vmstat"]
    return min(walls), min(cpus), vm


def measure(floor: Floor) -> list[Row]:
    base_wall, base_cpu, base = _timed(False)
    wall, cpu, vm = _timed(True)
    spent = max(wall - base_wall, 1e-9)
    spent_cpu = max(cpu - base_cpu, 1e-9)
    scanned = (vm["compact_migrate_scanned"] + vm["compact_free_scanned"]
               - base["compact_migrate_scanned"] - base["compact_free_scanned"])
    migrated = vm["pgmigrate_success"] - base["pgmigrate_success"]
    note = (f"2 GiB, compact_memory at {AT:g} s: {scanned:,} pfns scanned, {migrated:,} pages "
            f"migrated in {spent:.2f} wall s (run {wall:.2f} s less {base_wall:.2f} s without, "
            f"best of {REPEATS}); {spent_cpu:.2f} CPU s")
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
