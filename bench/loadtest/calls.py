"""The coordinator's calls: queue the measured runs, wait for them, cancel what is left, list.
"""

from __future__ import annotations

import concurrent.futures
import time

import grpc

from bench.loadtest import RAMP_DURATION_S, SIM_SPEC, TERMINAL, R, log, spec_proto
from compactsim.proto.v1 import simulator_pb2, spec_pb2


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
