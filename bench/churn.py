"""Churn: page allocations plus frees per wall second on a 16 GiB machine.

The order-0 anon/file churn of `bench.workloads.churn_spec`: fill to half of memory, then
allocate and free at 400,000 pages per simulated second each way, well clear of the LOW
watermark (no reclaim, no compaction). The figure is (pgalloc + pgfree) per wall second
over the steady phase (after the fill), measured through `sim.run.run`; the design's goal
is at least the floor. Also reported: SimPy events scheduled per allocation in the steady
phase, the fill phase's rate, and the whole run's (build and summary included).
"""

from __future__ import annotations

import cProfile
import io
import pstats

from bench import Row
from bench import workloads as wl
from bench.floor import Floor
from bench.harness import Probe, instrumented_run

PRESSURE_EVENTS = ("pgscan_kswapd", "pgscan_direct", "allocstall_normal", "compact_stall",
                   "kswapd_low_wmark_hit_quickly", "pageoutrun")


def measure(floor: Floor) -> list[Row]:
    cfg = wl.config(wl.churn_spec())
    result, probe = instrumented_run(cfg)
    warm = probe.step_at(wl.CHURN_WARMUP_S)
    steady = probe.window(wl.CHURN_WARMUP_S)
    fill = probe.phase(probe.start_step(), warm)
    whole_ops = probe.steps[-1].ops
    whole_wall = probe.t_end - probe.t_start
    vm = result.summary["vmstat"]
    pressure = {k: vm.get(k, 0) for k in PRESSURE_EVENTS if vm.get(k, 0)}
    window_steps = [s for s in probe.steps if s.sim_s >= warm.sim_s]
    in_use = [s.in_use for s in window_steps]
    headroom = min(s.headroom for s in window_steps)
    steady_ok = warm.in_use >= 0.45 and headroom > 0 and not pressure
    where = (f"16 GiB, 4 cpus, order 0 anon+file; steady {steady.sim_s:.2f} sim s: "
             f"{steady.allocs:,} allocs + {steady.frees:,} frees in {steady.wall_s:.2f} wall s; "
             f"in use {min(in_use):.1%}..{max(in_use):.1%}, free pages >= LOW + {headroom:,}; "
             f"pressure events: {pressure or 'none'}")
    cpu_rate = steady.ops / steady.cpu_s
    where += (f"; in CPU time {cpu_rate:,.0f}/s = {cpu_rate / floor.cpu:.3f} x the floor's "
              f"events per CPU s")
    if not steady_ok:
        where += " -- WARNING: not the intended steady state"
    return [
        Row("churn", steady.ops_per_s, "allocs+frees/s", steady.ops_per_s / floor.wall,
            ">= 1.0 x floor", steady.ops_per_s >= floor.wall, note=where),
        Row("churn.events_per_alloc", steady.events_per_alloc, "events/alloc",
            note=f"{steady.events:,} SimPy events scheduled in the steady phase; "
                 f"whole run: {result.events_scheduled:,} events / "
                 f"{probe.steps[-1].allocs:,} allocs"),
        Row("churn.fill", fill.ops_per_s, "allocs+frees/s", fill.ops_per_s / floor.wall,
            note=f"fill to {wl.CHURN_FILL:.0%}: {fill.allocs:,} allocs + {fill.frees:,} frees "
                 f"in {fill.wall_s:.2f} wall s ({fill.sim_s:.2f} sim s), "
                 f"{fill.events_per_alloc:.3f} events/alloc"),
        Row("churn.whole_run", whole_ops / whole_wall, "allocs+frees/s",
            whole_ops / whole_wall / floor.wall,
            note=f"run() end to end {whole_wall:.2f} s: build {probe.build_s:.2f} s, "
                 f"simulate {probe.run_phase().wall_s:.2f} s, summary+files "
                 f"{probe.finish_s:.2f} s"),
    ]


def profile(top: int = 15) -> str:
    """cProfile of the churn run, the fill and the steady phase apart, by tottime."""
    fill_prof, steady_prof = cProfile.Profile(), cProfile.Profile()
    state = {"switched": False}

    def on_step(probe: Probe, step) -> None:
        if not state["switched"] and step.sim_s >= wl.CHURN_WARMUP_S - 1e-12:
            fill_prof.disable()
            state["switched"] = True
            steady_prof.enable()

    cfg = wl.config(wl.churn_spec())
    fill_prof.enable()
    try:
        _, probe = instrumented_run(cfg, on_step=on_step)
    finally:
        fill_prof.disable()
        steady_prof.disable()
    steady = probe.window(wl.CHURN_WARMUP_S)
    out = io.StringIO()
    for title, prof in ((f"steady phase ({steady.allocs:,} allocs + {steady.frees:,} frees, "
                         "under cProfile)", steady_prof),
                        ("fill phase and build", fill_prof)):
        out.write(f"\n=== churn profile: {title}, top {top} by tottime ===\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(floor: Floor) -> list[Row]:
    return measure(floor)
