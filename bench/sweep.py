"""Sweep: the speed-up of an experiment's runs on two worker processes over one.

An experiment of two arms x two seeds of the `highalloc-stress` preset (its first
`DURATION_S` simulated seconds) runs through `compactsim.client.experiment.run_local`,
the pool of worker processes `compactsim experiment` uses, once with one worker and once
with two (the order alternates over `REPEATS` rounds; best of each). The figure is the
wall time on one worker over the wall time on two; goal 1.8. On a machine whose other
load takes CPU time the figure falls with it: the note gives the load average.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import Row
from compactsim.client.experiment import Arm, Plan, run_local

PRESET = "highalloc-stress"
DURATION_S = 8.0
SEEDS = 2
REPEATS = 2
GOAL = 1.8


def plan() -> Plan:
    arms = [Arm("base", {}), Arm("no-proactive", {"tunables.compaction_proactiveness": 0})]
    return Plan(arms=arms, seeds=SEEDS, baseline="base", scenario=PRESET,
                overrides=[f"duration={DURATION_S}s"])


def timed(jobs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        run_local(plan(), Path(out), jobs=jobs)
        return time.perf_counter() - t


def measure() -> list[Row]:
    walls: dict[int, list[float]] = {1: [], 2: []}
    for r in range(REPEATS):
        for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
            walls[jobs].append(timed(jobs))
    one, two = min(walls[1]), min(walls[2])
    speedup = one / two
    runs = len(plan().arms) * SEEDS
    return [Row("sweep.speedup_2_workers", speedup, "x", speedup / GOAL, f">= {GOAL}x",
                speedup >= GOAL,
                note=f"{PRESET}, {runs} runs of {DURATION_S:g} sim s through run_local: "
                     f"1 worker {one:.2f} s, 2 workers {two:.2f} s (best of {REPEATS}); "
                     f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at end")]


def main(floor: object = None) -> list[Row]:
    return measure()
