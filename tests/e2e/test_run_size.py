"""What a run records counts in the limits, and a large result does not stall reads.

A spec's series rows (duration / sampling interval) and kept trace lines (its trace
buffer) are in the resident estimate and have limits of their own, named in the refusal.
A finished run's series comes from the worker and goes into the store in pieces, and
reads use their own connections: GetRun of another run stays fast while 60 000 rows are
stored. Its trace is stored in parts too: other writes go on between them."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from serverproc import R, create, details, spec, wait_state

from compactsim.proto.v1 import run_pb2, simulator_pb2

C = grpc.StatusCode


def _refusal(stub, s) -> str:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=s), validate_only=True),
                       timeout=30)
    assert err.value.code() == C.RESOURCE_EXHAUSTED, err.value.details()
    return " | ".join(v.description for q in details(err.value, error_details_pb2.QuotaFailure)
                      for v in q.violations)


def test_samples_and_trace_lines_count_in_the_limits(server):
    day = spec(duration=86400.0)
    day.sampling.interval_seconds = 0.001          # 86 400 001 series rows
    text = _refusal(server.stub, day)
    assert "run.spec.sampling.interval_seconds" in text and "--max-run-samples" in text, text
    assert "samples" in text and "--max-run-resident" in text, text

    lines = spec()
    lines.sampling.trace_buffer = 10_000_000
    lines.sampling.trace_events.names[:] = ["mm_page_alloc"]
    text = _refusal(server.stub, lines)
    assert "run.spec.sampling.trace_buffer" in text and "--max-run-trace-lines" in text, text
    assert "trace lines" in text, text

    quiet = spec()                                  # no trace events: the buffer stays empty
    quiet.sampling.trace_buffer = 10_000_000
    quiet.sampling.trace_events.SetInParent()
    server.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=quiet), validate_only=True),
                          timeout=30)


def test_get_run_stays_fast_while_a_large_result_is_stored(server):
    small = create(server.stub)
    wait_state(server.stub, small.name)
    big = spec(duration=60.0, rate=20.0)
    big.sampling.interval_seconds = 0.001           # 60 001 rows of about 1 KB
    big.sampling.trace_buffer = 0
    t_create = time.monotonic()
    run = create(server.stub, big)
    latencies = []
    deadline = time.monotonic() + 120
    while True:
        t0 = time.monotonic()
        server.stub.GetRun(simulator_pb2.GetRunRequest(name=small.name), timeout=60)
        latencies.append(time.monotonic() - t0)
        state = server.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name), timeout=60).state
        if state in (R.SUCCEEDED, R.FAILED):
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state == R.SUCCEEDED
    done = server.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name), timeout=60)
    assert 0 < done.progress.wall_time_seconds < time.monotonic() - t_create
    latencies.sort()
    assert latencies[-1] < 1.0, f"GetRun took up to {latencies[-1]:.2f} s"
    samples = server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(
        parent=run.name, page_size=10, max_points=3), timeout=60)
    assert [s.time_seconds for s in samples.samples] == pytest.approx([0.0, 30.0, 60.0], abs=0.002)
    assert server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(
        parent=run.name, page_size=1), timeout=60).next_page_token


def test_other_writes_go_on_while_a_large_trace_is_stored(make_server):
    """A finished run's trace (600 000 lines, 87 MB) is stored a part at a time, each part
    in its own short transaction, so another client's CreateRun (a write) waits at most for
    one part, not for the whole trace (in one transaction: 0.36 s here, seconds on a slower
    disk; in parts: 0.05 s at most); the report then reads back whole and in order."""
    server = make_server("--workers", "1")   # the small runs below wait: only the big one runs
    big = spec(duration=65.0, rate=5000.0)
    big.sampling.interval_seconds = 0.5
    big.sampling.trace_buffer = 600_000
    big.sampling.trace_events.names[:] = ["mm_page_alloc", "mm_page_free",
                                          "mm_page_alloc_zone_locked", "mm_page_pcpu_drain"]
    run = create(server.stub, big)
    small = spec(duration=0.01)
    small.sampling.trace_buffer = 0
    latencies, running = [], False
    deadline = time.monotonic() + 400
    while True:
        t0 = time.monotonic()
        create(server.stub, small)
        if running:   # not while its worker starts: only what storing costs other writes
            latencies.append(time.monotonic() - t0)
        got = server.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name), timeout=60)
        running = got.progress.fraction > 0
        if got.state in (R.SUCCEEDED, R.FAILED):
            break
        assert time.monotonic() < deadline
        # every 0.1 s once the trace is near its storing; slower before, so that a slow
        # (loaded) machine does not fill the queue with the small runs that wait
        time.sleep(0.1 if got.progress.fraction > 0.9 else 1.0)
    assert got.state == R.SUCCEEDED
    assert max(latencies) < 0.15, f"CreateRun took up to {max(latencies):.2f} s"
    whole = simulator_pb2.GetRunReportRequest(name=f"{run.name}/report",
                                              view=run_pb2.RUN_REPORT_VIEW_FULL)
    trace = "".join(p.trace for p in server.stub.StreamRunReport(whole, timeout=120))
    lines = trace.splitlines()
    assert trace.endswith("\n") and len(lines) == 600_000   # the buffer's last 600 000 lines
    names = {x.split(": ", 2)[1] for x in lines}
    assert names <= set(big.sampling.trace_events.names), names
    times = [float(x.split(": ", 1)[0].split()[-1]) for x in lines]
    assert times == sorted(times)                             # no part lost, doubled or moved
