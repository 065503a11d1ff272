"""End to end: the real `compactsim-server` process, a real channel on loopback, real
worker processes. Runs are tiny (64 MiB, under 1 s simulated); `pace` slows the ones that
must still be running when the test acts on them."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from serverproc import R, Server, create, details, spec, wait_state, watch_all, workers

from compactsim.proto.v1 import run_pb2, simulator_pb2, sweep_pb2

# ---- tests ---------------------------------------------------------------------------------

def test_create_watch_to_succeeded_with_gapless_events(server):
    run = create(server.stub, display_name="tiny", labels={"team": "mm"})
    assert run.state == R.QUEUED and run.name.startswith("runs/")
    assert run.effective_spec.machine.memory_bytes == 64 << 20
    assert len(run.provenance.spec_sha256) == 64
    msgs = watch_all(server.stub, run.name, after_sequence=0)
    assert msgs[0].WhichOneof("message") == "snapshot"
    events = [m.event for m in msgs[1:] if m.WhichOneof("message") == "event"]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state_change.state for e in events if e.WhichOneof("kind") == "state_change"]
    assert states == [R.QUEUED, R.RUNNING, R.SUCCEEDED]
    assert any(e.WhichOneof("kind") == "progress" for e in events)
    done = server.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name))
    assert done.state == R.SUCCEEDED and done.summary.fields["sim_time_s"].number_value == 0.5
    report = server.stub.GetRunReport(simulator_pb2.GetRunReportRequest(
        name=run.name + "/report", view=run_pb2.RUN_REPORT_VIEW_FULL))
    assert {"buddyinfo", "vmstat"} <= {f.name for f in report.procfs_files}
    # latency histograms with their buckets, in both views
    assert report.histograms and [h.name for h in report.histograms] == \
        sorted(h.name for h in report.histograms)
    for h in report.histograms:
        assert h.count > 0 and sum(b.count for b in h.buckets) == h.count
        assert 0 < h.p50_seconds <= h.p90_seconds <= h.p99_seconds <= h.max_seconds
        assert h.sum_seconds > 0
    basic = server.stub.GetRunReport(simulator_pb2.GetRunReportRequest(name=run.name + "/report"))
    assert list(basic.histograms) == list(report.histograms) and not basic.trace
    samples = server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(
        parent=run.name, max_points=4, page_size=3))
    assert len(samples.samples) == 3 and samples.next_page_token
    rest = server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(
        parent=run.name, max_points=4, page_size=3, page_token=samples.next_page_token))
    assert len(rest.samples) == 1 and rest.samples[0].time_seconds == pytest.approx(0.5)
    # a retry with the same request_id returns the same run
    rid = str(uuid.uuid4())
    a = server.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec()), request_id=rid))
    b = server.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec()), request_id=rid))
    assert a.name == b.name


def test_watch_resumes_after_disconnect(server):
    run = create(server.stub, spec(duration=0.5, pace=1.0))
    stream = server.stub.WatchRun(simulator_pb2.WatchRunRequest(name=run.name, after_sequence=0))
    first = [next(stream) for _ in range(3)]     # snapshot, QUEUED, RUNNING (or progress)
    stream.cancel()
    last = first[-1].sequence
    assert last >= 2
    rest = watch_all(server.stub, run.name, after_sequence=last)
    seqs = [m.sequence for m in rest if m.WhichOneof("message") == "event"]
    assert seqs[0] == last + 1 and seqs == list(range(last + 1, last + 1 + len(seqs)))
    assert rest[-1].event.state_change.state == R.SUCCEEDED
    # a finished run with no after_sequence: just the snapshot
    only = watch_all(server.stub, run.name)
    assert len(only) == 1 and only[0].snapshot.state == R.SUCCEEDED


def test_live_run_has_samples_and_an_event_count_while_running(server):
    run = create(server.stub, spec(duration=2.0, pace=2.0))      # about 1 s of wall time
    wait_state(server.stub, run.name, (R.RUNNING,))
    deadline = time.monotonic() + 10
    while True:
        now = server.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name))
        live = server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(parent=run.name))
        if now.state == R.RUNNING and live.samples and now.progress.events > 0:
            break
        assert now.state == R.RUNNING, R.State.Name(now.state)
        assert time.monotonic() < deadline, "no live samples or events while RUNNING"
        time.sleep(0.02)
    assert live.columns and live.samples[-1].time_seconds <= now.progress.sim_time_seconds
    assert 0 < now.progress.fraction < 1
    done = wait_state(server.stub, run.name)
    assert done.state == R.SUCCEEDED and done.progress.events >= now.progress.events
    final = server.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(parent=run.name))
    times = [x.time_seconds for x in final.samples]
    assert times == pytest.approx([i * 0.05 for i in range(41)])   # each once, in order


def test_cancel_delete_and_errors(server):
    run = create(server.stub, spec(duration=1.0, pace=0.1))
    wait_state(server.stub, run.name, (R.RUNNING,))
    server.stub.CancelRun(simulator_pb2.CancelRunRequest(name=run.name))
    cancelled = wait_state(server.stub, run.name)
    assert cancelled.state == R.CANCELLED
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    with pytest.raises(grpc.RpcError) as e:
        server.stub.CancelRun(simulator_pb2.CancelRunRequest(name=run.name))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = details(e.value, error_details_pb2.PreconditionFailure)[0]
    assert failure.violations[0].subject == run.name
    # delete a running run: refused without force, cancelled and deleted with it
    running = create(server.stub, spec(duration=1.0, pace=0.1))
    wait_state(server.stub, running.name, (R.RUNNING,))
    with pytest.raises(grpc.RpcError) as e:
        server.stub.DeleteRun(simulator_pb2.DeleteRunRequest(name=running.name))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    deleted = server.stub.DeleteRun(simulator_pb2.DeleteRunRequest(name=running.name, force=True))
    assert deleted.state == R.CANCELLED and deleted.HasField("delete_time")
    server.stub.DeleteRun(simulator_pb2.DeleteRunRequest(name=run.name))
    for name in (run.name, running.name, "runs/nosuchrun"):
        with pytest.raises(grpc.RpcError) as e:
            server.stub.GetRun(simulator_pb2.GetRunRequest(name=name))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(e.value, error_details_pb2.ResourceInfo)[0].resource_name == name
    listed = server.stub.ListRuns(simulator_pb2.ListRunsRequest(show_deleted=True))
    assert {run.name, running.name} <= {r.name for r in listed.runs}
    # several bad fields at once, each named
    bad = spec()
    bad.machine.memory_bytes = 5 << 20          # not a multiple of 4 MiB and below 64 MiB
    bad.duration_seconds = -1
    bad.workload[0].tasks = 0
    with pytest.raises(grpc.RpcError) as e:
        create(server.stub, bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(e.value, error_details_pb2.BadRequest)[0].field_violations}
    assert {"run.spec.machine.memory_bytes", "run.spec.duration_seconds",
            "run.spec.workload[0].tasks"} <= fields
    # validate_only creates nothing
    before = server.stub.ListRuns(simulator_pb2.ListRunsRequest()).total_size
    v = server.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec()),
                                                             validate_only=True))
    assert v.effective_spec.seed == 3
    assert server.stub.ListRuns(simulator_pb2.ListRunsRequest()).total_size == before


def test_list_filter_and_paging(server):
    names = [create(server.stub, labels={"batch": "a" if i % 2 else "b"}).name for i in range(5)]
    for n in names:
        wait_state(server.stub, n)
    seen, token = [], ""
    while True:
        page = server.stub.ListRuns(simulator_pb2.ListRunsRequest(
            filter='labels.batch = "b" AND state = SUCCEEDED', page_size=2, page_token=token,
            order_by="create_time"))
        assert page.total_size == 3 and len(page.runs) <= 2
        seen += [r.name for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [names[0], names[2], names[4]]
    with pytest.raises(grpc.RpcError) as e:
        server.stub.ListRuns(simulator_pb2.ListRunsRequest(filter="state = BOGUS"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    v = details(e.value, error_details_pb2.BadRequest)[0].field_violations[0]
    assert v.field == "filter" and "column 9" in v.description


def test_full_queue(make_server):
    s = make_server("--max-queue", "1")
    # two workers busy, one waiting: the next is refused
    for _ in range(2):
        wait_state(s.stub, create(s.stub, spec(duration=1.0, pace=0.2)).name, (R.RUNNING,))
    waiting = create(s.stub, spec(duration=1.0, pace=0.2))
    assert waiting.state == R.QUEUED
    with pytest.raises(grpc.RpcError) as e:
        create(s.stub, spec(duration=1.0, pace=0.2))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(e.value, error_details_pb2.RetryInfo)
    assert details(e.value, error_details_pb2.QuotaFailure)


def test_restart_keeps_runs_results_and_events(make_server, tmp_path):
    s = make_server()
    done = create(s.stub)
    wait_state(s.stub, done.name)
    events_before = watch_all(s.stub, done.name, after_sequence=0)
    assert s.stop() == 0
    s2 = make_server(data_dir=tmp_path)
    after = s2.stub.GetRun(simulator_pb2.GetRunRequest(name=done.name))
    assert after.state == R.SUCCEEDED and after.summary.fields["sim_time_s"].number_value == 0.5
    events_after = watch_all(s2.stub, done.name, after_sequence=0)
    assert [m.event for m in events_after[1:]] == [m.event for m in events_before[1:]]
    report = s2.stub.GetRunReport(simulator_pb2.GetRunReportRequest(name=done.name + "/report"))
    assert report.procfs_files


def test_killed_worker_fails_run_and_server_stays_healthy(server):
    run = create(server.stub, spec(duration=1.0, pace=0.1))
    wait_state(server.stub, run.name, (R.RUNNING,))
    deadline = time.monotonic() + 5
    while not (found := workers(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(found) == 1
    os.kill(found[0], signal.SIGKILL)
    failed = wait_state(server.stub, run.name)
    assert failed.state == R.FAILED and "SIGKILL" in failed.error.message
    health = health_pb2_grpc.HealthStub(server.channel)
    for svc in ("", "compactsim.v1.Simulator"):
        assert health.Check(health_pb2.HealthCheckRequest(service=svc)).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert wait_state(server.stub, create(server.stub).name).state == R.SUCCEEDED


def test_health_reflection_and_metrics(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == \
        health_pb2.HealthCheckResponse.SERVING
    db = ProtoReflectionDescriptorDatabase(server.channel)
    assert "compactsim.v1.Simulator" in db.get_services()
    desc = db.FindFileContainingSymbol("compactsim.v1.Simulator")
    assert any(s.name == "Simulator" for s in desc.service)
    import urllib.request
    mport = int(Path(str(next(server.data_dir.glob("port-*.metrics")))).read_text())
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    assert 'compactsim_runs{state="QUEUED"} 0.0' in text and "compactsim_queue_depth" in text


def test_sigterm_with_active_run_and_watch(server):
    run = create(server.stub, spec(duration=1.0, pace=0.05))
    wait_state(server.stub, run.name, (R.RUNNING,))
    stream = server.stub.WatchRun(simulator_pb2.WatchRunRequest(name=run.name), timeout=30)
    assert next(stream).WhichOneof("message") == "snapshot"
    server.proc.send_signal(signal.SIGTERM)
    got = []
    try:
        for m in stream:
            got.append(m)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert server.proc.wait(20) == 0
    # the stream ended; it saw the run stopped and marked
    ends = [m.event.state_change for m in got if m.WhichOneof("message") == "event"
            and m.event.WhichOneof("kind") == "state_change"]
    assert ends and ends[-1].state == R.FAILED
    s2 = Server(server.data_dir).start()
    try:
        after = s2.stub.GetRun(simulator_pb2.GetRunRequest(name=run.name))
        assert after.state == R.FAILED and after.error.details
        assert "shutdown" in after.error.message
    finally:
        assert s2.stop() == 0


def test_sweep_grid_2x2(server):
    base = spec(duration=0.3)
    sw = sweep_pb2.Sweep(base_spec=base, seeds=2, parameters=[sweep_pb2.SweepParameter(
        path="tunables.compaction_proactiveness",
        values=[struct_pb2.Value(number_value=0), struct_pb2.Value(number_value=60)])],
        metrics=["vmstat.nr_free_pages", "allocations.anon/order3.success_ratio"])
    created = server.stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sw))
    assert len(created.points) == 2 and all(len(p.runs) == 2 for p in created.points)
    runs = server.stub.ListRuns(simulator_pb2.ListRunsRequest(
        filter=f'labels.sweep = "{created.name.split("/")[1]}"')).runs
    assert len(runs) == 4
    assert {r.sweep for r in runs} == {created.name}
    for value in (created.name, created.name.split("/")[1]):   # resource name or bare id
        by_sweep = server.stub.ListRuns(simulator_pb2.ListRunsRequest(
            filter=f'sweep = "{value}"'))
        assert by_sweep.total_size == 4 and {r.name for r in by_sweep.runs} == \
            {r.name for r in runs}
    assert sorted(r.labels["sweep_point"] for r in runs) == ["0", "0", "1", "1"]
    assert {r.effective_spec.seed for r in runs} == {3, 4}
    assert {r.effective_spec.tunables.compaction_proactiveness for r in runs} == {0, 60}
    for r in runs:
        wait_state(server.stub, r.name)
    got = server.stub.GetSweep(simulator_pb2.GetSweepRequest(name=created.name))
    assert got.state == sweep_pb2.Sweep.SUCCEEDED and got.run_state_counts["SUCCEEDED"] == 4
    for p in got.points:
        agg = p.aggregates["vmstat.nr_free_pages"]
        assert agg.count == 2 and agg.min <= agg.mean <= agg.max
        assert p.aggregates["allocations.anon/order3.success_ratio"].count == 2
    assert got.points[1].values["tunables.compaction_proactiveness"].number_value == 60


@pytest.fixture(scope="module")
def dask_cluster():
    """A real Dask scheduler and worker process on loopback, for a server to connect to."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                                  dashboard_address=None) as cluster:
        yield cluster


def test_sweep_on_the_dask_executor(make_server, dask_cluster):
    s = make_server("--executor", "dask", "--dask-scheduler", dask_cluster.scheduler_address)
    sw = sweep_pb2.Sweep(base_spec=spec(duration=0.2), seeds=1, parameters=[
        sweep_pb2.SweepParameter(path="tunables.compaction_proactiveness", values=[
            struct_pb2.Value(number_value=0), struct_pb2.Value(number_value=60)])],
        metrics=["vmstat.nr_free_pages"])
    created = s.stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sw))
    names = [n for p in created.points for n in p.runs]
    assert len(names) == 2
    for n in names:
        done = wait_state(s.stub, n, timeout=60)
        assert done.state == R.SUCCEEDED, done.error.message
        assert done.provenance.executor == "dask" and done.progress.events > 0
    got = s.stub.GetSweep(simulator_pb2.GetSweepRequest(name=created.name))
    assert got.state == sweep_pb2.Sweep.SUCCEEDED and got.run_state_counts["SUCCEEDED"] == 2
    assert [p.values["tunables.compaction_proactiveness"].number_value for p in got.points] \
        == [0, 60]
    for p in got.points:
        agg = p.aggregates["vmstat.nr_free_pages"]
        assert agg.count == 1 and agg.min == agg.mean == agg.max > 0
    # the tasks ran on the cluster's worker, not in processes of the server
    assert not workers(s)
    samples = s.stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(parent=names[0]))
    assert samples.samples
    health = health_pb2_grpc.HealthStub(s.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="compactsim.v1.Simulator")
                        ).status == health_pb2.HealthCheckResponse.SERVING
    assert s.stop() == 0
