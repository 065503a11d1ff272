"""Presets: wall seconds per simulated second of every preset scenario.

Each preset of `compactsim.sim.scenarios` runs through `sim.run.run` at its default machine
size and seed 1, cut to its first `DURATION_S` simulated seconds (or its whole duration when
shorter), so that the whole table takes a few minutes rather than the tens of minutes of
every preset's full duration. The opening is where each workload is set up (its fill) and
its mechanisms first act, the costliest stretch per simulated second of most presets.
The figure is wall seconds per simulated second of `run()` end to end (build and summary
included); the note gives the SimPy events scheduled and their rate as a ratio to the floor.
"""

from __future__ import annotations

import time

from bench import Row
from bench.floor import Floor
from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.run import run
from compactsim.sim.scenarios import list_scenarios, load_scenario

DURATION_S = 10.0
SEED = 1


def measure_one(name: str, floor: Floor) -> Row:
    raw = load_scenario(name)
    cfg = config_from_dict(apply_overrides(raw, [f"seed={SEED}"]))
    sim_s = min(cfg.duration, DURATION_S)
    cfg = config_from_dict(apply_overrides(raw, [f"seed={SEED}", f"duration={sim_s}s"]))
    t = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t
    events = result.events_scheduled
    return Row(f"preset.{name}", wall / sim_s, "wall s/sim s",
               note=f"{cfg.machine.nodes * cfg.machine.memory >> 20} MiB, first {sim_s:g} of "
                    f"{cfg.duration:g} sim s in {wall:.2f} wall s; {events:,} events, "
                    f"{events / wall:,.0f}/s = {events / wall / floor.wall:.3f} x floor")


def main(floor: Floor) -> list[Row]:
    return [measure_one(name, floor) for name in sorted(list_scenarios())]
