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

Modules: `procs` (the server process; the pinner that keeps its workers on the
simulation CPU and samples their schedstat), `clients` (what a client process does),
`calls` (the coordinator's RPCs), `phases` (the three phases and their figures), `report`
(the table); `python -m bench.loadtest` runs `__main__`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from compactsim.codec.runstate import TERMINAL_PROTO
from compactsim.proto.v1 import run_pb2, spec_pb2

R = run_pb2.Run
TERMINAL = TERMINAL_PROTO      # the ended states, as the API numbers them
ROOT = Path(__file__).resolve().parents[2]

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


def spec_proto(raw: dict[str, Any]) -> spec_pb2.Spec:
    from compactsim.client.api import spec_message
    return spec_message(raw)
