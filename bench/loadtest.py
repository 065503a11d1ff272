"""`python -m bench.loadtest`: a bounded load test of `compactsim-server` on loopback.

A real server (its own subprocess, its own temporary data directory, `--workers 1`) runs
the same simulations twice in one invocation:

1. **idle**: `--runs` simulations (same spec, same seed; a few wall seconds each) with
   nothing else going on;
2. **load**: the same simulations again while `--clients` client processes together hold
   `--watches` concurrent WatchRun streams (on the simulations and on queued runs), issue
   `--creates` CreateRun calls of tiny runs (they queue behind the simulations) and call
   GetRun in a loop. When the simulations have ended, every run still queued is cancelled
   (so the phase stays bounded, and every watch stream gets its terminal state).

3. **control**: the same simulations again while `--clients` processes merely spin on the
   RPC CPU and send nothing (skipped with `--no-control`): the slowdown a busy RPC CPU
   causes by itself, without any server work.

Each phase starts with an unmeasured "ramp" run (the same workload, shorter) that warms the
worker start-up and, in the load phase, gives the clients time to open their streams.

Setup, as a lab would size it: simulations and the RPC side do not share a core. The test
pins itself to all CPUs but the first; the server, its threads and the client processes
inherit that. The server's worker processes (one at a time, `--workers 1`) and the
forkserver they are forked from are moved to the first CPU with `sched_setaffinity` as
soon as they appear (a background thread checks the server's descendants every 0.1 s;
workers forked from the pinned forkserver start there already). On a machine with one
CPU everything shares it and the report says so.

Figures: p50/p99 latency of GetRun and CreateRun as the clients see them (phase 2); the
slowdown of the simulations (sum of the phase-2 runs' wall time, as the workers measure
it in `Run.progress.wall_time_seconds`, over the phase-1 sum, minus 1); peak resident
memory of the server process itself (VmHWM in /proc/PID/status, not its workers'); and
"nothing lost": every CreateRun that returned OK is in ListRuns and every watch stream
got the terminal state of its run with its event sequence numbers 1, 2, 3... without
gaps. To tell the server's effect from the rest of the machine's, the pinner also
samples each worker's /proc/PID/schedstat (every 50 ms): its time on the CPU and its
time runnable but waiting for it. Nothing of this test but the workers runs on the
simulation CPU, so that wait is other work on the machine; the report shows the slowdown
of the time on the CPU and of the wall time minus that wait next to the wall-time
figure. (On a shared machine, processes outside the test are not pinned: when the load
fills the RPC CPU the scheduler moves them to the simulation CPU, and the simulations
wait for them.)

Goals (issue "shared-lab hardening"): p99 GetRun under 50 ms, slowdown under 5 %,
nothing lost. The table goes to stdout (rich), the figures to `--json` (default
out/loadtest.json); exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from compactsim_proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc, spec_pb2

R = run_pb2.Run
TERMINAL = (R.SUCCEEDED, R.FAILED, R.CANCELLED)
ROOT = Path(__file__).resolve().parents[1]

GOAL_GETRUN_P99_S = 0.050
GOAL_SLOWDOWN = 0.05

# The measured simulation: order-0 and order-3 anonymous churn on a small machine,
# about 2 CPU seconds.
SIM_SPEC: dict[str, Any] = {
    "seed": 7, "duration": 5.0, "machine": {"memory": "256MiB", "cpus": 2},
    "workload": [{"name": "anon", "kind": "anon", "tasks": 2, "pattern": "poisson",
                  "rate": 6000.0, "batch": 4, "order_mix": {0: 0.8, 3: 0.2},
                  "lifetime": {"distribution": "exponential", "mean": 0.5}}]}
RAMP_DURATION_S = 2.5
# The queued runs: tiny, in case one gets a worker before it is cancelled.
TINY_SPEC: dict[str, Any] = {
    "seed": 1, "duration": 0.05, "machine": {"memory": "64MiB", "cpus": 1},
    "workload": [{"name": "anon", "kind": "anon", "tasks": 1, "rate": 100.0}]}


def log(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# ---- the server process -------------------------------------------------------------------

class ServerProcess:
    """`compactsim-server` on 127.0.0.1:0 with its own data directory."""

    def __init__(self, data_dir: Path, max_queue: int):
        self.data_dir = data_dir
        self.max_queue = max_queue
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> ServerProcess:
        exe = Path(sys.executable).with_name("compactsim-server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.main"]
        port_file = self.data_dir / "port"
        self.log_path = self.data_dir / "server.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                 "--data-dir", str(self.data_dir), "--workers", "1",
                 "--max-queue", str(self.max_queue), "--metrics-listen", "127.0.0.1:0",
                 "--log-level", "WARNING"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def vm_hwm_bytes(self) -> int:
        """Peak resident set of the server process (VmHWM), in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid` -> its parent, from the parent links in /proc/*/stat."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children[ppid].append(int(entry))
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for c in children.get(parent, ()):
            out[c] = parent
            todo.append(c)
    return out


def schedstat(pid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for one) of a process; None when gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class Worker:
    """A worker process the pinner saw: when it appeared, its latest schedstat."""

    pid: int
    first_seen_ns: int          # time.time_ns()
    cpu_ns: int = 0
    wait_ns: int = 0


class WorkerPinner(threading.Thread):
    """Keeps every descendant of the server (forkserver, workers) on `cpus`, and samples
    the CPU time and run-queue wait of the workers (children of the forkserver) every
    `interval_s` while they live."""

    def __init__(self, server_pid: int, cpus: set[int], interval_s: float = 0.05):
        super().__init__(name="pinner", daemon=True)
        self.server_pid = server_pid
        self.cpus = cpus
        self.interval_s = interval_s
        self.seen: set[int] = set()
        self.moved: set[int] = set()      # found elsewhere and moved
        self.workers: dict[int, Worker] = {}
        self._live: set[int] = set()
        self._halt = threading.Event()

    def pin_now(self) -> None:
        for pid, parent in descendants(self.server_pid).items():
            if pid in self.seen:
                continue
            try:
                if os.sched_getaffinity(pid) != self.cpus:
                    os.sched_setaffinity(pid, self.cpus)
                    self.moved.add(pid)
                self.seen.add(pid)
            except OSError:   # gone meanwhile
                continue
            if parent != self.server_pid:
                self.workers[pid] = Worker(pid, time.time_ns())
                self._live.add(pid)

    def sample(self) -> None:
        for pid in list(self._live):
            st = schedstat(pid)
            if st is None:
                self._live.discard(pid)
            else:
                self.workers[pid].cpu_ns, self.workers[pid].wait_ns = st

    def worker_of(self, run: R) -> Worker | None:
        """The worker that appeared while `run` was running (one worker at a time)."""
        start = run.start_time.ToNanoseconds()
        end = run.end_time.ToNanoseconds()
        found = [w for w in self.workers.values() if start <= w.first_seen_ns <= end]
        return found[0] if len(found) == 1 else None

    def run(self) -> None:
        n = 0
        while not self._halt.wait(self.interval_s):
            if n % 2 == 0:
                self.pin_now()
            self.sample()
            n += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ---- the coordinator's calls ----------------------------------------------------------------

def spec_proto(raw: dict[str, Any]) -> spec_pb2.Spec:
    from client.api import spec_message
    return spec_message(raw)


def create(stub, spec: spec_pb2.Spec, display_name: str) -> R:
    return stub.CreateRun(simulator_pb2.CreateRunRequest(
        run=R(spec=spec, display_name=display_name)), timeout=30)


def wait_ended(stub, names: list[str], t0: float, what: str, timeout_s: float = 300
               ) -> dict[str, R]:
    """Poll until every run has ended; print each as it ends."""
    done: dict[str, R] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(names):
        for name in names:
            if name in done:
                continue
            run = stub.GetRun(simulator_pb2.GetRunRequest(name=name), timeout=30)
            if run.state in TERMINAL:
                done[name] = run
                log(t0, f"{what}: {name} {R.State.Name(run.state)} in "
                        f"{run.progress.wall_time_seconds:.2f} s ({len(done)}/{len(names)})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: runs still going after {timeout_s:.0f} s")
        time.sleep(0.25)
    return done


def run_simulations(stub, sims: int, label: str) -> tuple[R, list[str]]:
    """Queue the ramp run and `sims` measured runs; return the ramp run and their names."""
    ramp_spec = spec_proto({**SIM_SPEC, "duration": RAMP_DURATION_S})
    sim_spec = spec_proto(SIM_SPEC)
    ramp = create(stub, ramp_spec, f"{label} ramp")
    names = [create(stub, sim_spec, f"{label} sim {i}").name for i in range(sims)]
    return ramp, names


def cancel_all_pending(stub, t0: float, timeout_s: float = 120) -> int:
    """Cancel every run that has not ended, until none is left; how many were cancelled."""
    cancelled = 0
    deadline = time.monotonic() + timeout_s
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while True:
            pending = []
            token = ""
            while True:
                resp = stub.ListRuns(simulator_pb2.ListRunsRequest(
                    filter="state != SUCCEEDED AND state != FAILED AND state != CANCELLED",
                    page_size=1000, page_token=token), timeout=60)
                pending += [r.name for r in resp.runs if r.state != R.CANCELLING]
                token = resp.next_page_token
                if not token:
                    break
            if not pending and not _any_cancelling(stub):
                return cancelled

            def cancel(name: str) -> int:
                try:
                    stub.CancelRun(simulator_pb2.CancelRunRequest(name=name), timeout=60)
                    return 1
                except grpc.RpcError as err:   # ended meanwhile
                    if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    return 0

            cancelled += sum(pool.map(cancel, pending))
            log(t0, f"cancelled {cancelled} runs")
            if time.monotonic() > deadline:
                raise TimeoutError("runs still pending after cancelling")
            time.sleep(0.2)


def _any_cancelling(stub) -> bool:
    resp = stub.ListRuns(simulator_pb2.ListRunsRequest(filter="state = CANCELLING",
                                                       page_size=1), timeout=60)
    return len(resp.runs) > 0


def list_all_names(stub) -> set[str]:
    names, token = set(), ""
    while True:
        resp = stub.ListRuns(simulator_pb2.ListRunsRequest(page_size=1000, page_token=token),
                             timeout=60)
        names.update(r.name for r in resp.runs)
        token = resp.next_page_token
        if not token:
            return names


# ---- the client processes -----------------------------------------------------------------

@dataclasses.dataclass
class ClientPlan:
    """What one client process does."""

    index: int
    address: str
    sim_watches: int          # streams on the measured simulations
    queued_watches: int       # streams on its own first created runs
    creates: int
    create_window_s: float    # spread the creates over this long
    create_concurrency: int
    get_interval_s: float     # pause between two GetRun calls of the loop
    seed: int


@dataclasses.dataclass
class WatchResult:
    name: str
    terminal: int             # the terminal Run.State seen; 0 when none
    events: int
    gaps: int                 # events whose sequence was not the previous one + 1
    first_sequence: int
    error: str = ""


@dataclasses.dataclass
class ClientResult:
    index: int
    created: list[str]
    create_errors: dict[str, int]
    create_latency_s: list[float]
    get_latency_s: list[float]
    get_errors: dict[str, int]
    watches: list[WatchResult]


async def _watch(stub, name: str) -> WatchResult:
    """Watch from the first event (after_sequence=0) to the end of the stream."""
    res = WatchResult(name, 0, 0, 0, 0)
    expected = 1
    try:
        call = stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, after_sequence=0))
        async for msg in call:
            if msg.WhichOneof("message") != "event":
                continue
            seq = msg.event.sequence
            if res.events == 0:
                res.first_sequence = seq
            if seq != expected:
                res.gaps += 1
            expected = seq + 1
            res.events += 1
            if (msg.event.WhichOneof("kind") == "state_change"
                    and msg.event.state_change.state in TERMINAL):
                res.terminal = msg.event.state_change.state
    except grpc.RpcError as err:
        res.error = f"{err.code().name}: {err.details()}"
    return res


async def _client_main(plan: ClientPlan, sims: list[str], stop, counters) -> ClientResult:
    rng = random.Random(plan.seed)
    tiny = spec_proto(TINY_SPEC)
    out = ClientResult(plan.index, [], collections.Counter(), [], [], collections.Counter(), [])
    async with grpc.aio.insecure_channel(plan.address) as channel:
        stub = simulator_pb2_grpc.SimulatorStub(channel)
        watches = [asyncio.create_task(_watch(stub, sims[(plan.index + i) % len(sims)]))
                   for i in range(plan.sim_watches)]
        counters[plan.index * 4] = len(watches)

        async def creator() -> None:
            sem = asyncio.Semaphore(plan.create_concurrency)
            start = time.monotonic()

            async def one(i: int) -> None:
                async with sem:
                    t = time.perf_counter()
                    try:
                        run = await stub.CreateRun(simulator_pb2.CreateRunRequest(
                            run=R(spec=tiny, display_name=f"load c{plan.index} #{i}",
                                  labels={"load": "queued"})), timeout=60)
                    except grpc.RpcError as err:
                        out.create_errors[err.code().name] += 1
                        return
                    out.create_latency_s.append(time.perf_counter() - t)
                    out.created.append(run.name)
                    counters[plan.index * 4 + 1] += 1
                    if len(watches) < plan.sim_watches + plan.queued_watches:
                        watches.append(asyncio.create_task(_watch(stub, run.name)))
                        counters[plan.index * 4] = len(watches)

            tasks = []
            for i in range(plan.creates):
                due = start + plan.create_window_s * i / plan.creates
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

        async def getter() -> None:
            while not stop.is_set():
                pool = sims + out.created[-50:]
                name = rng.choice(pool)
                t = time.perf_counter()
                try:
                    await stub.GetRun(simulator_pb2.GetRunRequest(name=name), timeout=60)
                    out.get_latency_s.append(time.perf_counter() - t)
                except grpc.RpcError as err:
                    out.get_errors[err.code().name] += 1
                counters[plan.index * 4 + 2] += 1
                await asyncio.sleep(plan.get_interval_s)

        get_task = asyncio.create_task(getter())
        await creator()
        await get_task
        counters[plan.index * 4 + 3] = 1   # all creates answered
        out.watches = list(await asyncio.gather(*watches))
    return out


def client_process(plan: ClientPlan, inbox, outbox, stop, counters) -> None:
    """Entry point of a client process: report ready, wait for the run names, load."""
    outbox.put(("ready", plan.index))
    sims = inbox.get()
    result = asyncio.run(_client_main(plan, sims, stop, counters))
    outbox.put(("result", result))


# ---- the test ---------------------------------------------------------------------------------

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


def _spin(stop) -> None:
    """A control-phase process: keeps its CPU busy and sends nothing."""
    while not stop.is_set():
        for _ in range(100_000):
            pass


def _control_phase(args, stub, pinner: WorkerPinner, t0: float) -> list[RunTimes]:
    """The same runs while `--clients` processes merely spin on the RPC CPU: how much of
    the load phase's slowdown a busy RPC CPU causes by itself, without any server work."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_spin, args=(stop,), name=f"load-spinner-{i}", daemon=True)
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


# ---- the report -------------------------------------------------------------------------------

def render(fig: Figures) -> None:
    from rich.console import Console
    from rich.table import Table

    v = fig.verdicts()

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("[green]PASS[/]" if ok else "[red]FAIL[/]")

    s = fig.setup
    table = Table(title="compactsim-server under load (loopback)")
    for col in ("figure", "value", "goal", "result"):
        table.add_column(col, justify="right" if col == "value" else "left")
    ms = 1000
    table.add_row("GetRun p50", f"{fig.get_p50_s * ms:.1f} ms", "", verdict(None))
    table.add_row("GetRun p99", f"{fig.get_p99_s * ms:.1f} ms",
                  f"< {GOAL_GETRUN_P99_S * ms:.0f} ms", verdict(v["getrun_p99"]))
    table.add_row("CreateRun p50", f"{fig.create_p50_s * ms:.1f} ms", "", verdict(None))
    table.add_row("CreateRun p99", f"{fig.create_p99_s * ms:.1f} ms", "", verdict(None))
    table.add_row("simulation slowdown", f"{fig.slowdown:+.1%}", f"< {GOAL_SLOWDOWN:.0%}",
                  verdict(v["slowdown"]))
    for phase, runs in (("idle", fig.idle_runs), ("load", fig.load_runs),
                        ("control", fig.control_runs)):
        if not runs:
            continue
        table.add_row(f"  wall s, {phase}", " ".join(f"{r.wall_s:.2f}" for r in runs), "", "")
        table.add_row(f"  on CPU s / waiting for it s, {phase}",
                      " ".join("?" if r.cpu_s is None else f"{r.cpu_s:.2f}/{r.wait_s:.2f}"
                               for r in runs), "", "")
    rows = [("  slowdown of the time on CPU", fig.cpu_slowdown),
            ("  slowdown of wall minus run-queue wait", fig.unqueued_slowdown)]
    if fig.control_runs:
        rows += [("  control (RPC CPU busy, no RPCs): slowdown", fig.control_slowdown),
                 ("  control: slowdown of the time on CPU", fig.control_cpu_slowdown)]
    for what, x in rows:
        table.add_row(what, "?" if x is None else f"{x:+.1%}", "", verdict(None))
    table.add_row("server VmHWM after idle phase", f"{fig.server_hwm_idle_bytes / 2**20:.0f} MiB",
                  "", verdict(None))
    table.add_row("server VmHWM at end", f"{fig.server_hwm_bytes / 2**20:.0f} MiB", "",
                  verdict(None))
    table.add_row("CreateRun OK / missing from ListRuns",
                  f"{fig.creates_ok} / {fig.created_missing}", "0 missing",
                  verdict(fig.created_missing == 0))
    table.add_row("watch streams / without terminal state or gapless sequence",
                  f"{fig.watches} / {len(fig.watches_bad)}", "0", verdict(not fig.watches_bad))
    table.add_row("nothing lost", "yes" if fig.nothing_lost else "no", "yes",
                  verdict(v["nothing_lost"]))
    console = Console()
    console.print(table)
    console.print(
        f"Setup: python {s['python']}, CPUs {s['cpus']}; the server's workers (--workers 1) "
        f"on CPU {s['simulation_cpus']}, the server process and {s['clients']} client "
        f"processes on CPU {s['rpc_cpus']}; of the {s['server_descendants_seen']} processes "
        f"below the server (forkserver, workers) {s['workers_moved_to_simulation_cpu']} were "
        f"moved there when first seen, the others were forked there.\n"
        f"Load: {fig.watches} WatchRun streams, {fig.creates_ok} CreateRun OK "
        f"(errors: {fig.create_errors or 'none'}) over {s['create_window_s']:.1f} s, "
        f"{fig.get_calls} GetRun calls (errors: {fig.get_errors or 'none'}), "
        f"{fig.cancelled} queued runs cancelled at the end. "
        f"Slowdown: the sum of the {len(fig.load_runs)} runs' wall time (the workers' own "
        f"clock) under load over idle, same spec and seed. Where it went, from the workers' "
        f"/proc/PID/schedstat sampled every 50 ms: time on the CPU, and time runnable but "
        f"waiting while something else ran on the simulation CPU (nothing of this test is "
        f"pinned there but the workers: that is other work on the machine). "
        + (f"Control: the same runs while {s['clients']} processes spin on the RPC CPU and "
           f"nothing calls the server. " if fig.control_runs else "")
        + f"Load average {s['load_average_start']:.2f} at start, "
        f"{s['load_average_end']:.2f} at end. "
        f"Total {fig.duration_s:.0f} s.", highlight=False)
    for w in fig.watches_bad[:10]:
        console.print(f"  lost: {w}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loadtest",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--watches", type=int, default=200,
                    help="concurrent WatchRun streams in all (default 200)")
    ap.add_argument("--creates", type=int, default=1000,
                    help="CreateRun calls in all (default 1000)")
    ap.add_argument("--runs", type=int, default=4,
                    help="measured simulations per phase (default 4)")
    ap.add_argument("--get-interval", type=float, default=0.01,
                    help="seconds between two GetRun calls of a client (default 0.01)")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control phase (the runs again with the RPC CPU merely "
                         "busy)")
    ap.add_argument("--json", default=str(ROOT / "out" / "loadtest.json"),
                    help="write the figures here (default out/loadtest.json)")
    args = ap.parse_args(argv)
    for name in ("clients", "watches", "creates", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.watches < args.clients:
        ap.error("--watches must be at least --clients (each client holds some)")
    if args.get_interval < 0:
        ap.error("--get-interval must be >= 0")
    fig = run_test(args)
    render(fig)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**dataclasses.asdict(fig), "verdicts": fig.verdicts(),
                               "nothing_lost": fig.nothing_lost}, indent=2))
    print(f"figures written to {out}", file=sys.stderr)
    return 0 if all(fig.verdicts().values()) else 1


if __name__ == "__main__":
    from bench import loadtest   # by its module name, so the clients' results unpickle here
    sys.exit(loadtest.main())
