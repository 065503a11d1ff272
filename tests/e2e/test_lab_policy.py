"""Shared-lab policy against a real server subprocess: ownership of runs (tokens from a
token file), per-user and global queue limits, the per-user running limit, caps on a run's
simulated memory, duration and estimated server memory, request size limits, and trace
uploads with the replay path rule (nothing from a client is a path outside the data
directory)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from serverproc import LAB_TOKENS, ROOT, create, details, replay_spec, spec, wait_state, write_trace

from compactsim.client.api import Client, ClientError, struct_to_dict
from compactsim.proto.v1 import run_pb2, simulator_pb2, sweep_pb2, trace_pb2
from compactsim.server.limits import format_bytes, resident_estimate

R = run_pb2.Run
TOKENS = LAB_TOKENS
MiB = 1 << 20
GiB = 1 << 30


def long_spec(seed=1):
    """A run that stays RUNNING for half a minute unless stopped."""
    return spec(seed=seed, duration=30.0, pace=1.0)


def data_dir(tmp_path):
    """A data directory of its own (tmp_path also holds the test's files)."""
    data = tmp_path / "data"
    data.mkdir()
    return data


def total(stub):
    return stub.ListRuns(simulator_pb2.ListRunsRequest(show_deleted=True)).total_size


def refused(code, fn, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == code, e.value.details()
    return e.value


def quota_failure(err):
    [qf] = details(err, error_details_pb2.QuotaFailure)
    return [(v.subject, v.description) for v in qf.violations]


def field_violations(err):
    [br] = details(err, error_details_pb2.BadRequest)
    return {v.field: v.description for v in br.field_violations}


def struct_number(x):
    return struct_pb2.Value(number_value=x)


def struct_string(x):
    return struct_pb2.Value(string_value=x)


# ---- ownership -------------------------------------------------------------------------

def test_users_cancel_and_delete_only_their_own_runs_admins_any(lab_server):
    srv = lab_server()
    alice, bob, root = (srv.stub_for(TOKENS[u]) for u in ("alice", "bob", "root"))
    mine = create(alice, long_spec())
    assert mine.creator == "alice"
    wait_state(alice, mine.name, (R.RUNNING,))

    err = refused(grpc.StatusCode.PERMISSION_DENIED, bob.CancelRun,
                  simulator_pb2.CancelRunRequest(name=mine.name))
    [info] = details(err, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("NOT_OWNER", "compactsim.local")
    assert (info.metadata["creator"], info.metadata["caller"]) == ("alice", "bob")
    refused(grpc.StatusCode.PERMISSION_DENIED, bob.DeleteRun,
            simulator_pb2.DeleteRunRequest(name=mine.name, force=True))
    # unchanged, and everyone may read it
    seen = bob.GetRun(simulator_pb2.GetRunRequest(name=mine.name))
    assert (seen.state, seen.creator, seen.HasField("delete_time")) == (R.RUNNING, "alice",
                                                                        False)
    assert mine.name in [r.name for r in bob.ListRuns(simulator_pb2.ListRunsRequest()).runs]

    theirs = create(bob, spec())
    wait_state(bob, theirs.name)
    refused(grpc.StatusCode.PERMISSION_DENIED, alice.DeleteRun,
            simulator_pb2.DeleteRunRequest(name=theirs.name))
    assert not alice.GetRun(simulator_pb2.GetRunRequest(name=theirs.name)).HasField(
        "delete_time")

    # an admin may do both; the owner may delete her own
    assert root.CancelRun(simulator_pb2.CancelRunRequest(name=mine.name)).state in (
        R.CANCELLING, R.CANCELLED)
    assert wait_state(alice, mine.name).state == R.CANCELLED
    assert root.DeleteRun(simulator_pb2.DeleteRunRequest(name=theirs.name)).HasField(
        "delete_time")
    assert alice.DeleteRun(simulator_pb2.DeleteRunRequest(name=mine.name)).HasField(
        "delete_time")
    srv.stop()


def test_request_id_is_per_creator(lab_server):
    srv = lab_server()
    alice, bob = srv.stub_for(TOKENS["alice"]), srv.stub_for(TOKENS["bob"])
    req = simulator_pb2.CreateRunRequest(run=R(spec=spec()), request_id="shared-request-id")
    a, b, again = alice.CreateRun(req), bob.CreateRun(req), alice.CreateRun(req)
    assert a.name != b.name and again.name == a.name
    assert (a.creator, b.creator) == ("alice", "bob")
    assert total(alice) == 2
    srv.stop()


# ---- queue limits ----------------------------------------------------------------------

def test_per_user_queued_and_running_limits(lab_server):
    srv = lab_server("--max-running-per-user", "1", "--max-queued-per-user", "2")
    alice, bob = srv.stub_for(TOKENS["alice"]), srv.stub_for(TOKENS["bob"])
    a1 = create(alice, long_spec(1))
    wait_state(alice, a1.name, (R.RUNNING,))
    a2, a3 = create(alice, long_spec(2)), create(alice, long_spec(3))

    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, create, alice, long_spec(4))
    [(subject, description)] = quota_failure(err)
    assert subject == "user:alice"
    assert description == "queued runs per user: 'alice' has 2 waiting + 1 new > 2 "\
                          "(--max-queued-per-user)"
    [retry] = details(err, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds > 0
    refused(grpc.StatusCode.RESOURCE_EXHAUSTED, alice.CreateRun,
            simulator_pb2.CreateRunRequest(run=R(spec=spec()), validate_only=True))
    assert total(alice) == 3

    # alice is at her running limit with a free worker: bob's run starts, hers wait
    b1 = create(bob, long_spec(5))
    wait_state(bob, b1.name, (R.RUNNING,), timeout=10)
    time.sleep(0.5)
    assert [alice.GetRun(simulator_pb2.GetRunRequest(name=r.name)).state
            for r in (a1, a2, a3)] == [R.RUNNING, R.QUEUED, R.QUEUED]

    # when her run ends, her oldest queued run takes its place
    alice.CancelRun(simulator_pb2.CancelRunRequest(name=a1.name))
    wait_state(alice, a2.name, (R.RUNNING,), timeout=10)
    assert alice.GetRun(simulator_pb2.GetRunRequest(name=a3.name)).state == R.QUEUED
    srv.stop()


def test_global_queue_bound_counts_sweep_runs(make_server):
    srv = make_server("--workers", "1", "--max-queue", "1")
    first = create(srv.stub, long_spec(1))
    wait_state(srv.stub, first.name, (R.RUNNING,))
    create(srv.stub, long_spec(2))
    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, create, srv.stub, spec())
    [(subject, description)] = quota_failure(err)
    assert subject == "server" and "--max-queue" in description
    assert details(err, error_details_pb2.RetryInfo)
    sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
        path="workload[0].rate", values=[struct_number(100), struct_number(200)])])
    before = srv.stub.ListRuns(simulator_pb2.ListRunsRequest(show_deleted=True))
    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, srv.stub.CreateSweep,
                  simulator_pb2.CreateSweepRequest(sweep=sweep, sweep_id="refused-sweep"))
    assert "1 runs waiting + 2 new > 1" in quota_failure(err)[0][1]
    # a refused sweep leaves nothing: no sweep, no runs
    assert srv.stub.ListRuns(simulator_pb2.ListRunsRequest(show_deleted=True)) == before
    assert total(srv.stub) == 2
    refused(grpc.StatusCode.NOT_FOUND, srv.stub.GetSweep,
            simulator_pb2.GetSweepRequest(name="sweeps/refused-sweep"))
    srv.stop()


def test_sweeps_racing_runs_for_the_last_queue_places_are_whole_or_absent(make_server):
    """Sweeps and single runs created at once, for more places than the queue has: each
    sweep is either created with all its runs or refused leaving nothing, and the queue
    holds no more than its bound."""
    srv = make_server("--workers", "1", "--max-queue", "8")
    first = create(srv.stub, long_spec(1))
    wait_state(srv.stub, first.name, (R.RUNNING,))       # the worker is busy from now on
    sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
        path="workload[0].rate", values=[struct_number(r) for r in (100, 200, 300)])])
    start = threading.Barrier(12)
    outcome: dict[str, grpc.StatusCode] = {}

    def one(kind, i):
        start.wait()
        try:
            if kind == "sweep":
                srv.stub.CreateSweep(simulator_pb2.CreateSweepRequest(
                    sweep=sweep, sweep_id=f"race-sweep-{i}"))
            else:
                create(srv.stub, spec(seed=10 + i))
            outcome[f"{kind}-{i}"] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            outcome[f"{kind}-{i}"] = e.code()

    threads = [threading.Thread(target=one, args=(kind, i))
               for i in range(6) for kind in ("sweep", "run")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcome) == 12
    assert set(outcome.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    made = [i for i in range(6) if outcome[f"sweep-{i}"] == grpc.StatusCode.OK]
    for i in range(6):
        name = f"sweeps/race-sweep-{i}"
        if i in made:
            got = srv.stub.GetSweep(simulator_pb2.GetSweepRequest(name=name))
            assert sorted(len(p.runs) for p in got.points) == [1, 1, 1], name
        else:
            refused(grpc.StatusCode.NOT_FOUND, srv.stub.GetSweep,
                    simulator_pb2.GetSweepRequest(name=name))
    runs = sum(outcome[f"run-{i}"] == grpc.StatusCode.OK for i in range(6))
    assert total(srv.stub) == 1 + 3 * len(made) + runs
    assert 3 * len(made) + runs <= 8
    queued = srv.stub.ListRuns(simulator_pb2.ListRunsRequest(filter="state = QUEUED"))
    assert len(queued.runs) == 3 * len(made) + runs
    srv.stop()


def test_sweep_labels_follow_the_rule_of_run_labels_and_a_bad_one_stores_nothing(server):
    sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
        path="workload[0].rate", values=[struct_number(100), struct_number(200)])],
        labels={"": "x", "k" * 64: "v", "team": "y" * 64, "ok": "fine"})
    err = refused(grpc.StatusCode.INVALID_ARGUMENT, server.stub.CreateSweep,
                  simulator_pb2.CreateSweepRequest(sweep=sweep, sweep_id="labelled"))
    assert field_violations(err) == {
        f"sweep.labels[{k}]": "keys 1..63, values 0..63 characters"
        for k in ("", "k" * 64, "team")}
    refused(grpc.StatusCode.NOT_FOUND, server.stub.GetSweep,
            simulator_pb2.GetSweepRequest(name="sweeps/labelled"))
    assert total(server.stub) == 0
    del sweep.labels[""], sweep.labels["k" * 64]
    sweep.labels["team"] = "mm"
    made = server.stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sweep,
                                                                    sweep_id="labelled"))
    runs = [server.stub.GetRun(simulator_pb2.GetRunRequest(name=n))
            for p in made.points for n in p.runs]
    assert [dict(r.labels) for r in runs] == [
        {"team": "mm", "ok": "fine", "sweep": "labelled", "sweep_point": str(p.index)}
        for p in made.points]
    assert [r.display_name for r in runs] == [f"labelled #{p.index} seed 3"
                                              for p in made.points]
    assert total(server.stub) == 2

# ---- per-run caps ----------------------------------------------------------------------

def test_memory_duration_and_resident_caps(make_server):
    # the 64 MiB spec() keeps its default 100 000-line trace buffer: about 138 MiB
    srv = make_server("--max-run-memory", "1GiB", "--max-run-duration", "10s",
                      "--max-run-resident", "141MiB")
    stub = srv.stub

    def refused_spec(s, validate_only=False):
        err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.CreateRun,
                      simulator_pb2.CreateRunRequest(run=R(spec=s), validate_only=validate_only))
        assert not details(err, error_details_pb2.RetryInfo)   # waiting does not help
        return [d for subject, d in quota_failure(err) if subject == "server"]

    big = spec()
    big.machine.memory_bytes = 2 * GiB
    big.machine.cpus = 2
    found = refused_spec(big)
    assert found[0].startswith("run.spec.machine.memory_bytes: 1 node(s) x 2 GiB = 2 GiB of "
                               "simulated memory > 1 GiB")
    assert refused_spec(big, validate_only=True)[0] == found[0]

    two_nodes = spec()
    two_nodes.machine.nodes, two_nodes.machine.memory_bytes = 2, 768 * MiB
    two_nodes.machine.cpus = 2
    assert "2 node(s) x 768 MiB = 1.5 GiB" in refused_spec(two_nodes)[0]

    assert refused_spec(spec(duration=20.0)) == [
        "run.spec.duration_seconds: 20 s of simulated time > 10 s, the most per run "
        "(--max-run-duration)"]

    one_gib = spec()
    one_gib.machine.memory_bytes = GiB
    found = refused_spec(one_gib)
    [resident] = found
    assert (f"about {format_bytes(resident_estimate(GiB, 0, 11, 100_000))} of server memory"
            in resident)
    assert ("80 MiB + 17 B x 262144 pages + 4800 B x 11 samples + 600 B x 100000 trace "
            "lines" in resident and "> 141 MiB" in resident), resident

    # a sweep is refused when any of its runs is, naming the point
    sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
        path="duration", values=[struct_string("1s"), struct_string("30s")])])
    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.CreateSweep,
                  simulator_pb2.CreateSweepRequest(sweep=sweep))
    [(_, description)] = quota_failure(err)
    assert description.startswith('sweep.parameters (duration="30s"): spec.duration_seconds: '
                                  '30 s')
    assert total(stub) == 0
    ok = create(stub, spec())                       # 64 MiB: within every cap
    assert wait_state(stub, ok.name).state == R.SUCCEEDED
    srv.stop()


def test_request_size_limits_keep_the_server_serving(make_server):
    srv = make_server()
    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, create, srv.stub, spec(),
                  display_name="x" * (5 * MiB))
    assert "larger than max" in err.details()
    labels = {f"k{i}": "v" for i in range(65)}
    err = refused(grpc.StatusCode.RESOURCE_EXHAUSTED, create, srv.stub, spec(), labels=labels)
    assert quota_failure(err) == [("server", "run.labels: 65 labels; at most 64 per request")]
    err = refused(grpc.StatusCode.INVALID_ARGUMENT, srv.stub.CreateRun,
                  simulator_pb2.CreateRunRequest(run=R(spec=spec()), request_id="r" * 129))
    [bad] = details(err, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "request_id"
    assert total(srv.stub) == 0
    run = create(srv.stub, spec())
    assert wait_state(srv.stub, run.name).state == R.SUCCEEDED
    srv.stop()


# ---- traces ----------------------------------------------------------------------------

def test_trace_upload_round_trip_and_replay(make_server, tmp_path):
    srv = make_server(data_dir=data_dir(tmp_path))
    trace = write_trace(tmp_path / "kmem.txt")
    sha = hashlib.sha256(trace.read_bytes()).hexdigest()
    with Client(f"127.0.0.1:{srv.port}") as c:
        name = c.upload_trace(trace)
        assert name == f"traces/{sha}"
        got = c.get_trace(name)
        assert got.size_bytes == trace.stat().st_size and got.create_time.seconds > 0
        assert c.upload_trace(trace) == name             # the same bytes: the same trace
    stored = srv.data_dir / "traces"
    assert os.listdir(stored) == [sha]
    assert (stored / sha).read_bytes() == trace.read_bytes()

    run = create(srv.stub, replay_spec(name))
    done = wait_state(srv.stub, run.name)
    assert done.state == R.SUCCEEDED, done.error.message
    assert done.effective_spec.workload[0].replay.path == name   # no server path shown
    [summary] = struct_to_dict(done.summary)["replay"]
    assert summary["source"] == sha and summary["events"] == 80 and summary["allocs"] == 40
    srv.stop()


def test_cli_run_uploads_a_local_trace(make_server, tmp_path):
    srv = make_server(data_dir=data_dir(tmp_path))
    trace = write_trace(tmp_path / "kmem.txt", pairs=10)
    spec_file = tmp_path / "replay.yaml"
    spec_file.write_text(yaml.safe_dump({
        "seed": 1, "duration": "1s", "machine": {"memory": "64MiB", "cpus": 1},
        "kernel": {"pcp": False},
        "workload": [{"name": "replay", "kind": "replay", "replay": {"path": str(trace)}}]}))
    env = {k: v for k, v in os.environ.items() if k != "COMPACTSIM_SERVER"}
    out = subprocess.run([sys.executable, "-m", "compactsim.client.cli", "run", "--server",
                          f"127.0.0.1:{srv.port}", "--spec", str(spec_file), "--watch",
                          "--no-progress", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    sha = hashlib.sha256(trace.read_bytes()).hexdigest()
    assert f"{trace} is traces/{sha}" in out.stderr
    [run] = srv.stub.ListRuns(simulator_pb2.ListRunsRequest()).runs
    assert run.spec.workload[0].replay.path == f"traces/{sha}"
    srv.stop()


@pytest.mark.parametrize("path,why", [
    ("../../etc/passwd", "must name an uploaded trace"),
    ("/etc/passwd", "must name an uploaded trace"),
    ("traces/../compactsim.db", "must name an uploaded trace"),
    ("traces/" + "0" * 64, "no uploaded trace"),
    ("traces/" + "1" * 64, "not a regular file"),        # a symlink planted in the directory
])
def test_replay_paths_outside_uploaded_traces_are_refused(make_server, tmp_path, path, why):
    data = data_dir(tmp_path)
    srv = make_server(data_dir=data)
    (data / "traces" / ("1" * 64)).symlink_to("/etc/passwd")
    err = refused(grpc.StatusCode.INVALID_ARGUMENT, create, srv.stub, replay_spec(path))
    violations = field_violations(err)
    assert why in violations["run.spec.workload[0].replay.path"]
    refused(grpc.StatusCode.INVALID_ARGUMENT, srv.stub.CreateRun,
            simulator_pb2.CreateRunRequest(run=R(spec=replay_spec(path)), validate_only=True))
    ok = replay_spec("traces/" + "0" * 64)
    sweep = sweep_pb2.Sweep(base_spec=ok, parameters=[sweep_pb2.SweepParameter(
        path="workload[0].replay.path", values=[struct_string(path)])])
    err = refused(grpc.StatusCode.INVALID_ARGUMENT, srv.stub.CreateSweep,
                  simulator_pb2.CreateSweepRequest(sweep=sweep))
    assert any(f.endswith("spec.workload[0].replay.path") and why in d
               for f, d in field_violations(err).items())
    assert total(srv.stub) == 0
    srv.stop()


def test_get_trace_refuses_paths(make_server):
    srv = make_server()
    refused(grpc.StatusCode.INVALID_ARGUMENT, srv.stub.GetTrace,
            trace_pb2.GetTraceRequest(name="traces/../compactsim.db"))
    refused(grpc.StatusCode.NOT_FOUND, srv.stub.GetTrace,
            trace_pb2.GetTraceRequest(name="traces/" + "0" * 64))
    srv.stop()


def test_upload_over_the_limit_leaves_nothing(make_server, tmp_path):
    data = data_dir(tmp_path)
    srv = make_server("--max-trace-bytes", "1MiB", data_dir=data)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (3 * MiB))
    with Client(f"127.0.0.1:{srv.port}") as c:
        with pytest.raises(ClientError) as e:
            c.upload_trace(big)
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        [v] = e.value.details["QuotaFailure"]["violations"]
        assert v["subject"] == "server" and "--max-trace-bytes" in v["description"]
        assert "RetryInfo" not in e.value.details
        assert os.listdir(data / "traces") == []
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        with pytest.raises(ClientError) as e:
            c.upload_trace(empty)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert os.listdir(data / "traces") == []
        assert c.upload_trace(write_trace(tmp_path / "small.txt")).startswith("traces/")
    srv.stop()


def test_upload_cut_off_by_the_client_leaves_nothing(make_server, tmp_path):
    data = data_dir(tmp_path)
    srv = make_server(data_dir=data)
    more = threading.Event()

    def chunks():
        yield trace_pb2.UploadTraceRequest(chunk=b"x" * 1000)
        more.wait(20)
        yield trace_pb2.UploadTraceRequest(chunk=b"y")

    call = srv.stub.UploadTrace.future(chunks())
    deadline = time.monotonic() + 10
    while not os.listdir(data / "traces"):          # the partial upload
        assert time.monotonic() < deadline
        time.sleep(0.05)
    call.cancel()
    more.set()
    while os.listdir(data / "traces"):
        assert time.monotonic() < deadline, os.listdir(data / "traces")
        time.sleep(0.05)
    srv.stop()


def test_upload_needs_a_token_and_works_with_one(lab_server, tmp_path):
    srv = lab_server()
    req = [trace_pb2.UploadTraceRequest(chunk=write_trace(tmp_path / "t.txt").read_bytes())]
    refused(grpc.StatusCode.UNAUTHENTICATED, srv.stub_for(None).UploadTrace, iter(req))
    trace = srv.stub.UploadTrace(iter(req), metadata=[("authorization",
                                                       f"Bearer {TOKENS['bob']}")])
    assert trace.name.startswith("traces/") and trace.size_bytes == len(req[0].chunk)
    srv.stop()


def test_create_sweep_request_id_makes_retries_safe_per_user(lab_server):
    srv = lab_server("--max-queued-per-user", "0")
    alice, bob = srv.stub_for(TOKENS["alice"]), srv.stub_for(TOKENS["bob"])
    sw = sweep_pb2.Sweep(base_spec=spec(duration=0.2), parameters=[sweep_pb2.SweepParameter(
        path="tunables.compaction_proactiveness", values=[struct_number(0), struct_number(20)])])

    def create_sweep(stub, **kw):
        return stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sw, **kw))

    first = create_sweep(alice, request_id="7d7a0e0c-sweep")
    again = create_sweep(alice, request_id="7d7a0e0c-sweep")
    assert again.name == first.name and [p.runs for p in again.points] == \
        [p.runs for p in first.points]
    assert total(alice) == 2                          # the retry created nothing
    bobs = create_sweep(bob, request_id="7d7a0e0c-sweep")
    assert bobs.name != first.name and bobs.creator == "bob"
    named = create_sweep(alice, request_id="other-request", sweep_id="named-sweep")
    assert create_sweep(alice, request_id="other-request", sweep_id="named-sweep").name == \
        named.name == "sweeps/named-sweep"
    refused(grpc.StatusCode.ALREADY_EXISTS, create_sweep, alice, sweep_id="named-sweep")
    refused(grpc.StatusCode.ALREADY_EXISTS, create_sweep, bob, request_id="other-request",
            sweep_id="named-sweep")                   # bob's retry of nothing of his
    assert total(alice) == 6
    err = refused(grpc.StatusCode.INVALID_ARGUMENT, create_sweep, alice, request_id="x" * 129)
    assert details(err, error_details_pb2.BadRequest)[0].field_violations[0].field == \
        "request_id"
    assert total(alice) == 6
