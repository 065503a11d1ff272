"""Run a config through `compactsim.sim.run.run` and record where the wall time goes.

`run()` builds the machine, advances simulated time in `PROGRESS_STEPS` steps (calling
`progress` after each) and summarizes. To see counters during the run without touching
`sim/`, the bench wraps the `build_machine` that `sim.run` calls, keeping the machine it
returns; the progress callback then reads that machine's vmstat counters and the
environment's event count at every step. So the figures come from the real entry point,
and a phase (the fill, the steady state) can be measured on its own by taking the
difference of two steps.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from compactsim.sim import run as sim_run
from compactsim.sim.config import SimConfig
from compactsim.sim.zone import WMARK_LOW


@dataclasses.dataclass
class Step:
    """The state after one progress step."""

    sim_s: float
    wall: float            # perf_counter() when the step ended
    cpu: float             # process_time() then (robust to other load on the box)
    allocs: int            # pgalloc_* pages, all zones
    frees: int             # pgfree pages
    events: int            # SimPy events scheduled so far
    in_use: float          # share of managed pages neither free nor on pcp lists
    headroom: int          # min over zones of free pages above the LOW watermark

    @property
    def ops(self) -> int:
        return self.allocs + self.frees


@dataclasses.dataclass
class Phase:
    """The difference between two steps."""

    sim_s: float
    wall_s: float
    cpu_s: float
    allocs: int
    frees: int
    events: int

    @property
    def ops(self) -> int:
        return self.allocs + self.frees

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.wall_s

    @property
    def s_per_op(self) -> float:
        return self.wall_s / self.ops

    @property
    def cpu_s_per_op(self) -> float:
        return self.cpu_s / self.ops

    @property
    def events_per_alloc(self) -> float:
        return self.events / max(self.allocs, 1)


@dataclasses.dataclass
class Probe:
    """What one instrumented run recorded."""

    t_start: float = 0.0
    t_built: float = 0.0       # build_machine returned
    cpu_built: float = 0.0     # process_time() then
    t_end: float = 0.0         # run() returned (after summary, series and procfs files)
    rss_built: int = 0         # resident bytes of the process when build_machine returned
    machine: object = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    on_step: Callable[[Probe, Step], None] | None = None

    @property
    def build_s(self) -> float:
        return self.t_built - self.t_start

    @property
    def finish_s(self) -> float:
        """summarize, series and procfs rendering after the last step."""
        return self.t_end - self.steps[-1].wall

    def start_step(self) -> Step:
        """A step for the state right after the build (nothing simulated yet)."""
        return Step(0.0, self.t_built, self.cpu_built, 0, 0, 0, 0.0, 0)

    def step_at(self, sim_s: float) -> Step:
        """The first step at or after `sim_s`."""
        for s in self.steps:
            if s.sim_s >= sim_s - 1e-12:
                return s
        return self.steps[-1]

    def phase(self, a: Step, b: Step) -> Phase:
        return Phase(b.sim_s - a.sim_s, b.wall - a.wall, b.cpu - a.cpu, b.allocs - a.allocs,
                     b.frees - a.frees, b.events - a.events)

    def window(self, start_s: float) -> Phase:
        """From the step at `start_s` to the last step."""
        return self.phase(self.step_at(start_s), self.steps[-1])

    def run_phase(self) -> Phase:
        """Every simulated step, without the build and the final summary."""
        return self.phase(self.start_step(), self.steps[-1])


def rss_bytes() -> int:
    """Resident set size of this process now (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _read(m, env) -> Step:
    ev = m.events
    allocs = ev.get("pgalloc_normal", 0) + ev.get("pgalloc_dma32", 0)
    free = sum(z.free_pages + z.pcp_count() for z in m.zones)
    headroom = min(z.free_pages - z.watermark[WMARK_LOW] for z in m.zones)
    return Step(env.now, time.perf_counter(), time.process_time(), allocs, ev["pgfree"],
                getattr(env, "events_scheduled", 0), 1.0 - free / m.managed_pages, headroom)


def _machine_built(probe: Probe):
    def built(m) -> None:
        probe.machine = m
        probe.rss_built = rss_bytes()
        probe.t_built = time.perf_counter()
        probe.cpu_built = time.process_time()
    return built


def instrumented_run(cfg: SimConfig, on_step: Callable[[Probe, Step], None] | None = None
                     ) -> tuple[sim_run.RunResult, Probe]:
    """`compactsim.sim.run.run(cfg)` with a Step recorded at each progress call. The probe keeps the
    machine alive (for memory measurements after the run)."""
    probe = Probe(on_step=on_step)

    def progress(now, duration):
        m = probe.machine
        step = _read(m, m.env)
        probe.steps.append(step)
        if probe.on_step is not None:
            probe.on_step(probe, step)

    probe.t_start = time.perf_counter()
    result = sim_run.run(cfg, progress=progress, on_machine=_machine_built(probe))
    probe.t_end = time.perf_counter()
    return result, probe
