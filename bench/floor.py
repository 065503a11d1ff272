"""The floor: bare SimPy events per wall second.

A few processes each `yield env.timeout(1)` in a loop; every timeout is one event
scheduled and processed. Best of three. The events per CPU second of the same runs are
kept too (`Floor.cpu`), so that speed ratios can also be read in CPU time when other work
shares the machine. The same loop on `sim.environment.CountingEnvironment` (the environment
`run()` uses, which counts events in `schedule`) is reported beside it.
"""

from __future__ import annotations

import dataclasses
import time

import simpy

from bench import Row
from compactsim.sim.environment import CountingEnvironment

PROCESSES = 4
EVENTS = 1_000_000
REPEATS = 3


@dataclasses.dataclass(frozen=True)
class Floor:
    """Events per wall second and per CPU second (each the best of the repeats)."""

    wall: float
    cpu: float


def _ticker(env):
    timeout = env.timeout
    while True:
        yield timeout(1)


def events_per_s(env_class=simpy.Environment, processes: int = PROCESSES,
                 events: int = EVENTS) -> Floor:
    """Events processed per wall and per CPU second in one run of `events` events."""
    env = env_class()
    for _ in range(processes):
        env.process(_ticker(env))
    until = events // processes
    t0, c0 = time.perf_counter(), time.process_time()
    env.run(until=until)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # Each process has handled one event at each of the times 0 .. until-1 (its start,
    # then one timeout per time unit); the ones due at `until` stay queued.
    n = processes * until
    return Floor(n / wall, n / cpu)


def best(env_class=simpy.Environment) -> Floor:
    runs = [events_per_s(env_class) for _ in range(REPEATS)]
    return Floor(max(r.wall for r in runs), max(r.cpu for r in runs))


def measure() -> tuple[Floor, list[Row]]:
    """(floor, rows)."""
    floor = best()
    counting = best(CountingEnvironment)
    rows = [Row("floor", floor.wall, "events/s", 1.0,
                note=f"bare simpy {simpy.__version__}, {PROCESSES} processes x timeout(1), "
                     f"{EVENTS:,} events, best of {REPEATS}; {floor.cpu:,.0f} events per CPU s"),
            Row("floor.counting_env", counting.wall, "events/s", counting.wall / floor.wall,
                note="same loop on sim.environment.CountingEnvironment (what run() uses)")]
    return floor, rows


def main(floor: Floor | None = None) -> list[Row]:
    return measure()[1]
