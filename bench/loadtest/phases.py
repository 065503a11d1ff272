"""The test: the idle, load and control phases against one server, and their figures.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import multiprocessing
import os
import platform
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.loadtest import (
    GOAL_GETRUN_P99_S,
    GOAL_SLOWDOWN,
    RAMP_DURATION_S,
    SIM_SPEC,
    TERMINAL,
    R,
    log,
    percentile,
)
from bench.loadtest.calls import cancel_all_pending, list_all_names, run_simulations, wait_ended
from bench.loadtest.clients import ClientPlan, ClientResult, client_process, spin
from bench.loadtest.procs import ServerProcess, WorkerPinner
from compactsim.proto.v1 import simulator_pb2, simulator_pb2_grpc


@dataclasses.dataclass
class RunTimes:
    """Where a measured run's wall time went."""

    wall_s: float               # Run.progress.wall_time_seconds (the worker's own clock)
    cpu_s: float | None         # its worker process on a CPU (schedstat, sampled)
    wait_s: float | None        # runnable but waiting for the CPU (something else ran)

    @property
    def unqueued_s(self) -> float | None:
        """The wall time without the run-queue wait."""
        return None if self.wait_s is None else self.wall_s - self.wait_s


def run_times(runs: list[R], pinner: WorkerPinner) -> list[RunTimes]:
    out = []
    for run in runs:
        w = pinner.worker_of(run)
        out.append(RunTimes(run.progress.wall_time_seconds,
                            None if w is None else w.cpu_ns / 1e9,
                            None if w is None else w.wait_ns / 1e9))
    return out


def _ratio(load: list[float | None], idle: list[float | None]) -> float | None:
    if None in load or None in idle or not sum(idle):
        return None
    return sum(load) / sum(idle) - 1


@dataclasses.dataclass
class Figures:
    setup: dict[str, Any]
    idle_runs: list[RunTimes]
    load_runs: list[RunTimes]
    slowdown: float             # of the wall time (the goal's figure)
    cpu_slowdown: float | None  # of the worker's time on a CPU
    unqueued_slowdown: float | None   # of the wall time without the run-queue wait
    get_p50_s: float
    get_p99_s: float
    get_calls: int
    get_errors: dict[str, int]
    create_p50_s: float
    create_p99_s: float
    creates_ok: int
    create_errors: dict[str, int]
    created_missing: int
    watches: int
    watches_bad: list[dict[str, Any]]
    server_hwm_idle_bytes: int
    server_hwm_bytes: int
    cancelled: int
    duration_s: float
    # the control phase: the same runs with the RPC CPU kept busy by spinners, no RPCs
    control_runs: list[RunTimes] = dataclasses.field(default_factory=list)
    control_slowdown: float | None = None
    control_cpu_slowdown: float | None = None

    @property
    def nothing_lost(self) -> bool:
        return self.created_missing == 0 and not self.watches_bad

    def verdicts(self) -> dict[str, bool]:
        return {"getrun_p99": self.get_p99_s < GOAL_GETRUN_P99_S,
                "slowdown": self.slowdown < GOAL_SLOWDOWN,
                "nothing_lost": self.nothing_lost}


def _cpu_split() -> tuple[set[int], set[int]]:
    """(CPUs for the simulations, CPUs for the server and clients)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


def run_test(args: argparse.Namespace) -> Figures:
    t0 = time.monotonic()
    sim_cpus, rpc_cpus = _cpu_split()
    os.sched_setaffinity(0, rpc_cpus)
    setup = {"python": platform.python_version(), "cpus": sorted(os.sched_getaffinity(0) |
                                                                     sim_cpus),
             "simulation_cpus": sorted(sim_cpus), "rpc_cpus": sorted(rpc_cpus),
             "workers": 1, "clients": args.clients, "watches": args.watches,
             "creates": args.creates, "runs": args.runs, "sim_spec": SIM_SPEC,
             "load_average_start": os.getloadavg()[0]}
    log(t0, f"simulations on CPU {sorted(sim_cpus)}, server and clients on CPU "
            f"{sorted(rpc_cpus)}; load average {setup['load_average_start']:.2f}")
    data = Path(tempfile.mkdtemp(prefix="compactsim-load-"))
    server = ServerProcess(data, max_queue=args.creates + 4 * (args.runs + 1) + 100)
    pinner = None
    try:
        server.start()
        log(t0, f"server pid {server.pid} on {server.address}, data in {data}")
        pinner = WorkerPinner(server.pid, sim_cpus)
        pinner.start()
        channel = grpc.insecure_channel(server.address)
        stub = simulator_pb2_grpc.SimulatorStub(channel)

        # phase 1: idle
        log(t0, f"phase 1 (idle): a ramp run and {args.runs} simulations")
        ramp, names = run_simulations(stub, args.runs, "idle")
        wait_ended(stub, [ramp.name], t0, "idle ramp")
        idle = wait_ended(stub, names, t0, "idle")
        idle_runs = run_times([idle[n] for n in names], pinner)
        hwm_idle = server.vm_hwm_bytes()

        # phase 2: load
        fig = _load_phase(args, stub, server, pinner, t0, idle_runs)
        fig.server_hwm_idle_bytes = hwm_idle
        fig.server_hwm_bytes = server.vm_hwm_bytes()

        # phase 3: control
        if args.control:
            fig.control_runs = _control_phase(args, stub, pinner, t0)
            fig.control_slowdown = _ratio([r.wall_s for r in fig.control_runs],
                                          [r.wall_s for r in idle_runs])
            fig.control_cpu_slowdown = _ratio([r.cpu_s for r in fig.control_runs],
                                              [r.cpu_s for r in idle_runs])
        fig.setup = {**setup, **fig.setup, "workers_moved_to_simulation_cpu":
                     len(pinner.moved), "server_descendants_seen": len(pinner.seen),
                     "load_average_end": os.getloadavg()[0]}
        fig.duration_s = time.monotonic() - t0
        channel.close()
        return fig
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        if pinner is not None and pinner.is_alive():
            pinner.stop()
        if server.proc is not None:
            rc = server.stop()
            log(t0, f"server stopped (exit {rc})")
        shutil.rmtree(data, ignore_errors=True)


def _control_phase(args, stub, pinner: WorkerPinner, t0: float) -> list[RunTimes]:
    """The same runs while `--clients` processes merely spin on the RPC CPU: how much of
    the load phase's slowdown a busy RPC CPU causes by itself, without any server work."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=spin, args=(stop,), name=f"load-spinner-{i}", daemon=True)
             for i in range(args.clients)]
    for p in procs:
        p.start()
    try:
        log(t0, f"phase 3 (control): {args.clients} processes spinning on the RPC CPU, no "
                f"RPCs; a ramp run and {args.runs} simulations")
        ramp, names = run_simulations(stub, args.runs, "control")
        wait_ended(stub, [ramp.name], t0, "control ramp")
        done = wait_ended(stub, names, t0, "control")
        return run_times([done[n] for n in names], pinner)
    finally:
        stop.set()
        for p in procs:
            p.join(10)


def _load_phase(args, stub, server: ServerProcess, pinner: WorkerPinner, t0: float,
                idle_runs: list[RunTimes]) -> Figures:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    # per client: watch streams opened, creates OK, GetRun calls, all creates answered
    counters = ctx.Array("i", 4 * args.clients, lock=False)
    outbox = ctx.Queue()
    # Spread the creates over most of the time the simulations took when idle, so the
    # load lasts while they run.
    idle_wall = sum(r.wall_s for r in idle_runs)
    window = max(1.0, 0.8 * (RAMP_DURATION_S / SIM_SPEC["duration"] + 1) * idle_wall)
    per_client_watches = args.watches // args.clients
    sim_watches = max(1, per_client_watches * 3 // 10)
    plans, inboxes, procs = [], [], []
    for i in range(args.clients):
        creates = args.creates // args.clients + (i < args.creates % args.clients)
        plan = ClientPlan(i, server.address, sim_watches, per_client_watches - sim_watches,
                          creates, window, 4, args.get_interval, seed=i)
        inbox = ctx.Queue()
        p = ctx.Process(target=client_process, args=(plan, inbox, outbox, stop, counters),
                        name=f"load-client-{i}", daemon=True)
        p.start()
        plans.append(plan)
        inboxes.append(inbox)
        procs.append(p)
    for _ in procs:
        kind, _i = outbox.get(timeout=120)
        assert kind == "ready"
    log(t0, f"phase 2 (load): {args.clients} client processes ready; a ramp run and "
            f"{args.runs} simulations; {args.creates} creates over {window:.1f} s")
    _ramp, names = run_simulations(stub, args.runs, "load")
    for inbox in inboxes:
        inbox.put(names)

    done: dict[str, R] = {}
    last_print = 0.0
    while len(done) < len(names):
        for name in names:
            if name not in done:
                run = stub.GetRun(simulator_pb2.GetRunRequest(name=name), timeout=60)
                if run.state in TERMINAL:
                    done[name] = run
                    log(t0, f"load: {name} {R.State.Name(run.state)} in "
                            f"{run.progress.wall_time_seconds:.2f} s ({len(done)}/{len(names)})")
        if time.monotonic() - last_print > 2:
            c = list(counters)
            log(t0, f"load: {sum(c[0::4])} watch streams, {sum(c[1::4])} creates OK, "
                    f"{sum(c[2::4])} GetRun calls; "
                    f"server VmHWM {server.vm_hwm_bytes() / 2**20:.0f} MiB")
            last_print = time.monotonic()
        time.sleep(0.25)
    stop.set()
    log(t0, "simulations done; waiting for the clients' creates to finish")
    while not all(counters[3::4]) and all(p.is_alive() for p in procs):
        time.sleep(0.2)
    log(t0, "cancelling the runs still queued")
    cancelled = cancel_all_pending(stub, t0)
    results: list[ClientResult] = []
    deadline = time.monotonic() + 120
    while len(results) < len(procs):
        try:
            results.append(outbox.get(timeout=1.0)[1])
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"client processes failed: {dead or 'timeout'}") from None
    for p in procs:
        p.join(30)
    log(t0, "clients done; checking that nothing was lost")
    listed = list_all_names(stub)
    created = [n for r in results for n in r.created]
    watches = [w for r in results for w in r.watches]
    bad = [dataclasses.asdict(w) for w in watches
           if w.error or not w.terminal or w.gaps or (w.events and w.first_sequence != 1)]
    get_lat = [x for r in results for x in r.get_latency_s]
    create_lat = [x for r in results for x in r.create_latency_s]
    load_runs = run_times([done[n] for n in names], pinner)
    sum_errors = collections.Counter()
    get_errors = collections.Counter()
    for r in results:
        sum_errors.update(r.create_errors)
        get_errors.update(r.get_errors)
    return Figures(
        setup={"create_window_s": window, "get_interval_s": args.get_interval,
               "sim_states_idle": "SUCCEEDED", "sim_states_load":
               sorted({R.State.Name(done[n].state) for n in names})},
        idle_runs=idle_runs, load_runs=load_runs,
        slowdown=_ratio([r.wall_s for r in load_runs], [r.wall_s for r in idle_runs]),
        cpu_slowdown=_ratio([r.cpu_s for r in load_runs], [r.cpu_s for r in idle_runs]),
        unqueued_slowdown=_ratio([r.unqueued_s for r in load_runs],
                                 [r.unqueued_s for r in idle_runs]),
        get_p50_s=percentile(get_lat, 0.5), get_p99_s=percentile(get_lat, 0.99),
        get_calls=len(get_lat), get_errors=dict(get_errors),
        create_p50_s=percentile(create_lat, 0.5), create_p99_s=percentile(create_lat, 0.99),
        creates_ok=len(created), create_errors=dict(sum_errors),
        created_missing=len(set(created) - listed), watches=len(watches), watches_bad=bad,
        server_hwm_idle_bytes=0, server_hwm_bytes=0, cancelled=cancelled, duration_s=0.0)
