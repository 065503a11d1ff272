"""Compaction: pages scanned and pages migrated per wall second.

A 2 GiB machine is filled with page cache among scattered unmovable slab, three quarters
of the page cache dies (the frag-hugepage pattern), and then `/proc/sys/vm/compact_memory`
compacts the whole zone (MIGRATE_SYNC, both scanners over every block). The same run is
made without the manual compaction; the difference in wall time is the compaction's, and
its counters (`compact_migrate_scanned + compact_free_scanned`, `pgmigrate_success`) are the work.
Goal: 20 million pages scanned per wall second; both are also reported
against the floor measured in the same run.
"""

from __future__ import annotations

import time

from bench import Row
from bench.floor import Floor
from compactsim.sim.config import config_from_dict
from compactsim.sim.run import run

SCAN_GOAL = 20e6
AT = 6.0


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


def _timed(compact: bool):
    cfg = config_from_dict(spec(compact))
    t = time.perf_counter()
    result = run(cfg)
    return time.perf_counter() - t, result.summary["vmstat"]


def measure(floor: Floor) -> list[Row]:
    base_wall, base = _timed(False)
    wall, vm = _timed(True)
    spent = max(wall - base_wall, 1e-9)
    scanned = (vm["compact_migrate_scanned"] + vm["compact_free_scanned"]
               - base["compact_migrate_scanned"] - base["compact_free_scanned"])
    migrated = vm["pgmigrate_success"] - base["pgmigrate_success"]
    note = (f"2 GiB, compact_memory at {AT:g} s: {scanned:,} pfns scanned, {migrated:,} pages "
            f"migrated in {spent:.2f} wall s (run {wall:.2f} s less {base_wall:.2f} s without)")
    return [
        Row("compaction.scanned", scanned / spent, "pages/s", scanned / spent / floor.wall,
            ">= 20M pages/s", scanned / spent >= SCAN_GOAL, note),
        Row("compaction.migrated", migrated / spent, "pages/s", migrated / spent / floor.wall,
            "", None, "ratio is to the floor's events/s"),
    ]


def main(floor: Floor) -> list[Row]:
    return measure(floor)
