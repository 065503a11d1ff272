"""One run: assemble the parts, advance simulated time, collect the results.

`run(config)` is a pure function of the config (and the code version): it builds the
machine, the zram device, reclaim, the allocator, the workload and the sampler, runs the
SimPy environment to `config.duration`, and returns a `RunResult`. With `pace` > 0 the
environment is SimPy's real-time one, so a watcher sees the dynamics at that speed.
`progress(sim_now, duration)` is called at fixed simulated-time steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from compactsim.sim.config import MovableOps, SimConfig, PAGE_SIZE
from compactsim.sim.charge import charge_frees, settle
from compactsim.sim.histogram import Histogram
from compactsim.sim.machine import Machine, build_machine, struct_page_bytes
from compactsim.sim.pageflags import page_flags_budget
from compactsim.sim.page_alloc import trace_extfrag
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.report import procfs_files, vmstat
from compactsim.sim.rng import RngStreams
from compactsim.sim.sampling import Sampler, fragmentation_score_node, migrated_by_kind
from compactsim.sim.slowpath import Allocator
from compactsim.sim.workload import Workload
from compactsim.sim.zram import Zram
from compactsim.sim.compaction import Compaction
from compactsim.sim.environment import CountingEnvironment, PacedEnvironment
from compactsim.sim.kcompactd import Kcompactd, compact_node
from compactsim.sim.migrate import Migration
from compactsim.sim.task import Task

PROGRESS_STEPS = 100
# The step costs a struct page's size changes (pageflags.memmap_costs).
PER_PFN_COSTS = ("free_scan_page_ns", "migrate_scan_page_ns", "isolate_page_ns", "pcp_alloc_ns",
                 "pcp_free_ns", "buddy_page_ns", "buddy_alloc_ns", "migrate_overhead_us")


@dataclasses.dataclass
class RunResult:
    """What a run produced. `summary`, `series`, `files` and `trace` are deterministic."""

    config: SimConfig
    summary: dict
    series: list[dict]
    files: dict[str, str]
    trace: str
    latency: dict[str, Histogram]
    events_scheduled: int
    fault_log: str = ""        # thpscale-style "fault <thread> huge|base <latency_us>" lines


def memmap_summary(m: Machine) -> dict:
    """The memmap cost of this run's design, with the other designs for comparison, and
    the page-flags budget of each."""
    total = m.total_pages
    mc = m.config.machine
    base = mc.struct_page_size
    designs = {d.name: struct_page_bytes(base, d, mc.page_flags) for d in MovableOps}
    budgets = {d.name: dataclasses.asdict(page_flags_budget(mc.page_flags, d, base))
               for d in MovableOps}
    return {
        "page_flags": budgets[m.config.kernel.movable_ops.name],
        "page_flags_by_design": budgets,
        "design": m.config.kernel.movable_ops.name,
        "struct_page_bytes": m.struct_page_size,
        "memmap_bytes": total * m.struct_page_size,
        "memmap_percent_of_ram": round(100.0 * m.struct_page_size / PAGE_SIZE, 4),
        "managed_pages": m.managed_pages,
        "struct_page_bytes_by_design": designs,
        "memmap_bytes_by_design": {k: v * total for k, v in designs.items()},
        "per_pfn_costs": {k: round(getattr(m.config.costs, k), 6) for k in PER_PFN_COSTS},
    }


def summarize(m: Machine, workload: Workload, reclaim: Reclaim, zram: Zram) -> dict:
    events = vmstat(m)
    allocations = {}
    for key in sorted(workload.latency):
        attempts, ok = workload.requests[key]
        allocations[key] = {"attempts": attempts, "successes": ok,
                            "success_ratio": round(ok / attempts, 6) if attempts else 0.0,
                            **{k: round(v, 3) for k, v in workload.latency[key].summary().items()}}
    locks = {lock.name: {k: round(v, 9) if isinstance(v, float) else v
                         for k, v in lock.stats().items()}
             for lock in [z.lock for z in m.zones] + [n.lru_lock for n in m.nodes]}
    locks.update({name: {k: round(v, 9) if isinstance(v, float) else v
                         for k, v in stats.items()}
                  for name, stats in zram.pool.locks().items()})
    return {
        "seed": m.config.seed,
        "duration_s": m.config.duration,
        "sim_time_s": m.env.now,
        "machine": {"nodes": len(m.nodes), "total_pages": m.total_pages,
                    "zones": [f"{z.node_id}/{z.name}" for z in m.zones],
                    "min_free_kbytes": m.min_free_kbytes},
        "kernel": {"profile": m.config.kernel.profile,
                   "claim_rule": m.config.kernel.claim_rule.name},
        "memmap": memmap_summary(m),
        "vmstat": events,
        "fragmentation_score": [fragmentation_score_node(m, n.node_id) for n in m.nodes],
        "free_pages_by_order": [list(z.nr_free) for z in m.zones],
        "allocations": allocations,
        "locks": locks,
        "zram": zram.summary(),
        "migrated_by_kind": migrated_by_kind(m),
        "kswapd_failures": list(reclaim.kswapd_failures),
        "kernel_memory": workload.kernel.summary(),
    }


def _zram_compact_at(m: Machine, zram: Zram, at: float):
    """`echo 1 > /sys/block/zram0/compact` at simulated time `at`."""
    yield m.env.timeout(at)
    task = Task(comm="sh", pid=1, cpu=0, node=0)
    outcomes = zram.compact(task)
    yield from charge_frees(m.env, task, m.config.costs, outcomes)
    yield from settle(m.env, task)


def _compact_memory_at(m: Machine, compaction: Compaction, at: float):
    """`echo 1 > /proc/sys/vm/compact_memory` at simulated time `at`."""
    yield m.env.timeout(at)
    task = Task(comm="sh", pid=1, cpu=0, node=0)
    for node in m.nodes:
        yield from compact_node(m, compaction, node.node_id, task)


def compaction_summary(compaction: Compaction | None, kcompactd: Kcompactd | None) -> dict:
    if compaction is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "results": dict(sorted(compaction.results.items())),
        "latency": {k: {n: round(v, 3) for n, v in h.summary().items()}
                    for k, h in compaction.latency.items() if h.n},
        "wasted_migrations": compaction.wasted_migrations,
        "proactive_runs": kcompactd.proactive_runs if kcompactd is not None else 0,
    }


def run(config: SimConfig, progress: Callable[[float, float], None] | None = None,
        on_step: Callable[[dict], None] | None = None,
        on_machine: Callable[[Machine], None] | None = None) -> RunResult:
    """Simulate `config`. `progress(sim_now, duration)` and `on_step({"sim_time_s",
    "events", "final", "row", "snapshot", "latency", "locks", "compaction_latency",
    "wasted_migrations"})` (the latest sampled series row, the latest full
    `sim.sampling.snapshot` (plain data), the live allocation-latency, lock-wait and
    compaction-latency-by-trigger histograms, and the wasted migrations so far) are called
    at fixed steps; `on_step` once more with ``final`` True after the last sample, taken
    at the end, so its snapshot is the state the summary reports. `on_machine(m)` is
    called once the machine is built, before anything runs on it (the benchmarks and the
    validation suite keep it to measure or read it after the run)."""
    env = (PacedEnvironment(factor=1.0 / config.pace, strict=False) if config.pace > 0
           else CountingEnvironment())
    rngs = RngStreams(config.seed)
    m = build_machine(config, env)
    if on_machine is not None:
        on_machine(m)
    m.policy.on_extfrag = trace_extfrag(m)
    zram = Zram(m, rngs("zram.comp_len"))
    reclaim = Reclaim(m, zram)
    if zram.enabled:
        reclaim.shrinkers.append(zram.pool)
        for at in config.zram_compact:
            env.process(_zram_compact_at(m, zram, at))
    allocator = Allocator(m, reclaim)
    workload = Workload(m, allocator, zram, rngs)
    reclaim.shrinkers.append(workload.deferred_split)
    compaction = kcompactd = None
    if config.kernel.compaction:
        migration = Migration(m, rngs("migrate.driver"), lifetimes=workload.lifetimes,
                              zsmalloc=zram.pool)
        compaction = Compaction(m, migration, reclaim)
        kcompactd = Kcompactd(m, compaction, reclaim)
        allocator.compaction = compaction
        reclaim.on_kswapd_sleep = compaction.kswapd_sleep_reset
        if config.kernel.kcompactd:
            reclaim.kcompactd_wake = kcompactd.wakeup_kcompactd
        else:
            reclaim.kswapd_compact = kcompactd.kswapd_compact
        for at in config.compact_memory:
            env.process(_compact_memory_at(m, compaction, at))
    replays = []
    if any(g.replay is not None for g in config.workload):
        from compactsim.sim.replay import Replay
        replays = [Replay(m, allocator, workload, g) for g in config.workload
                   if g.replay is not None]
    sampler = Sampler(m, config.sampling.interval)

    def step_info(final: bool) -> dict:
        return {"sim_time_s": env.now, "events": env.events_scheduled, "final": final,
                "row": sampler.rows[-1] if sampler.rows else None,
                "snapshot": sampler.latest, "latency": workload.latency,
                "locks": {lk.name: lk.wait_hist for lk in
                          [z.lock for z in m.zones] + [n.lru_lock for n in m.nodes]},
                "compaction_latency": compaction.latency if compaction is not None else {},
                "wasted_migrations": (compaction.wasted_migrations
                                      if compaction is not None else 0)}

    step = config.duration / PROGRESS_STEPS
    for i in range(1, PROGRESS_STEPS + 1):
        env.run(until=min(i * step, config.duration))
        if progress is not None:
            progress(env.now, config.duration)
        if on_step is not None:
            on_step(step_info(final=False))
    sampler.take()
    if on_step is not None:   # the state at the end, as the summary has it
        on_step(step_info(final=True))
    summary = summarize(m, workload, reclaim, zram)
    summary["replay"] = [r.summary() for r in replays]
    summary["compaction"] = compaction_summary(compaction, kcompactd)
    return RunResult(config=config, summary=summary, series=sampler.rows,
                     files={**procfs_files(m, summary["vmstat"]),
                            **({"mm_stat": zram.mm_stat()} if zram.enabled
                               else {})},
                     trace=m.trace.render() if m.trace is not None else "",
                     latency=workload.latency, events_scheduled=env.events_scheduled,
                     fault_log="".join(line + "\n" for line in workload.fault_log))
