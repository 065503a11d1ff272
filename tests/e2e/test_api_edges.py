"""The API and command line without sharp edges, against the real server on loopback: large
results in pieces or bounded pages, end_time in filters and orderings, connection options
anywhere on the command line, --version, completion, a reader that stops early, and the
standard methods (GetScenario, ListSweeps, CancelSweep, DeleteSweep, ListTraces) with
their commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from serverproc import R, create, spec, wait_state, write_trace

from compactsim.client.api import Client
from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import run_pb2, simulator_pb2, spec_pb2, sweep_pb2
from compactsim.server.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compactsim.client.cli"]
GRPC_DEFAULT_MAX = 4 << 20
TOKEN = "0123456789abcdef0123456789abcdef"


def cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPACTSIM_")}
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout, **kw)


def big_trace_spec() -> spec_pb2.Spec:
    """A run whose FULL report (its kmem trace) is larger than 4 MiB, in a few seconds."""
    s = spec(duration=2.5, rate=8000.0)
    s.sampling.trace_events.names.extend(["mm_page_alloc", "mm_page_free",
                                          "mm_page_free_batched", "mm_page_alloc_zone_locked",
                                          "mm_page_pcpu_drain"])
    return s


def test_a_full_report_over_4_mib_arrives(server, tmp_path):
    run = create(server.stub, big_trace_spec())
    assert wait_state(server.stub, run.name, timeout=90).state == R.SUCCEEDED
    request = simulator_pb2.GetRunReportRequest(name=f"{run.name}/report",
                                                view=run_pb2.RUN_REPORT_VIEW_FULL)
    # in one message it passes gRPC's default limit of every client
    with pytest.raises(grpc.RpcError) as err:
        server.stub.GetRunReport(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    big = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
        ("grpc.max_receive_message_length", 64 << 20)])
    whole = simulator_pb2_grpc_stub(big).GetRunReport(request, timeout=30)
    big.close()
    assert whole.ByteSize() > GRPC_DEFAULT_MAX and len(whole.trace) > GRPC_DEFAULT_MAX
    # the stream: pieces within the limit that put together give the same report
    pieces = list(server.stub.StreamRunReport(request, timeout=30))
    assert len(pieces) > 4 and all(p.ByteSize() <= (1 << 20) + 1024 for p in pieces)
    with Client(f"127.0.0.1:{server.port}") as c:
        assert c.get_report(run.name, full=True) == whole
    # and the command line gets all of it
    out = tmp_path / "report"
    p = cli("report", run.name, "--out", str(out), "--server", f"127.0.0.1:{server.port}")
    assert p.returncode == 0, p.stderr
    written = {f.name: f for f in out.rglob("*") if f.is_file()}
    trace = next(f for name, f in written.items() if "trace" in name)
    assert trace.read_text() == whole.trace
    assert server.stop() == 0


def simulator_pb2_grpc_stub(channel):
    from compactsim.proto.v1 import simulator_pb2_grpc
    return simulator_pb2_grpc.SimulatorStub(channel)


@pytest.fixture(scope="module")
def thousand_runs(tmp_path_factory, make_module_server):
    """A server whose store holds 1,000 SUCCEEDED runs, each with a real summary (as a
    lab's store holds after a few sweeps)."""
    from compactsim.server import convert
    from compactsim.sim.config import config_from_dict
    from compactsim.sim.run import run

    data = tmp_path_factory.mktemp("thousand")
    raw = convert.raw_from_proto(spec(duration=0.2))
    summary = run(config_from_dict(raw)).summary
    with RunStore(data / "compactsim.db") as store:
        for i in range(1000):
            rec, _ = store.create_run(raw, display_name=f"run-{i:04d}",
                                      labels={"batch": "b", "i": str(i)})
            store.update_state(rec.id, RunState.RUNNING)
            store.update_state(rec.id, RunState.SUCCEEDED, summary=summary)
    return make_module_server(data_dir=data)


def test_list_runs_pages_are_bounded_by_bytes(thousand_runs):
    server = thousand_runs
    first = server.stub.ListRuns(simulator_pb2.ListRunsRequest(page_size=1000), timeout=60)
    assert first.total_size == 1000
    assert 0 < len(first.runs) < 1000 and first.next_page_token
    assert first.ByteSize() <= 3 << 20   # under gRPC's default 4 MiB with room to spare
    names, token = [r.name for r in first.runs], first.next_page_token
    while token:
        page = server.stub.ListRuns(simulator_pb2.ListRunsRequest(page_size=1000,
                                                                  page_token=token), timeout=60)
        assert page.ByteSize() <= 3 << 20
        names += [r.name for r in page.runs]
        token = page.next_page_token
    assert len(names) == len(set(names)) == 1000
    with Client(f"127.0.0.1:{server.port}") as c:
        assert [r.name for r in c.iter_runs(page_size=1000)] == names


def test_end_time_filters_and_orders_over_grpc(thousand_runs):
    stub = thousand_runs.stub
    resp = stub.ListRuns(simulator_pb2.ListRunsRequest(
        filter='end_time > "2000-01-01T00:00:00Z" AND state = SUCCEEDED',
        order_by="end_time desc", page_size=5), timeout=30)
    assert resp.total_size == 1000
    ends = [r.end_time.ToNanoseconds() for r in resp.runs]
    assert ends == sorted(ends, reverse=True) and len(ends) == 5
    assert stub.ListRuns(simulator_pb2.ListRunsRequest(
        filter='end_time < "2000-01-01T00:00:00Z"'), timeout=30).total_size == 0
    p = cli("list", "--server", f"127.0.0.1:{thousand_runs.port}", "--order-by", "end_time",
            "--filter", 'end_time >= "2000-01-01T00:00:00Z"', "--page-size", "3",
            "--format", "json")
    assert p.returncode == 0, p.stderr


# ---- the command line ------------------------------------------------------------------------

def test_connection_options_after_the_command(make_server, token_file):
    server = make_server("--token-file", str(token_file(f"{TOKEN} alice\n")), token=TOKEN)
    address = f"127.0.0.1:{server.port}"
    before = cli("--server", address, "--token", TOKEN, "list", "--format", "json")
    after = cli("list", "--server", address, "--token", TOKEN, "--timeout", "20",
                "--format", "json")
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    # the value after the command wins
    p = cli("--token", "wrong-token-wrong-token", "list", "--server", address,
            "--token", TOKEN)
    assert p.returncode == 0, p.stderr
    assert cli("list", "--server", address).returncode == 6   # no token: not allowed
    p = cli("sweep", "list", "--server", address, "--token", TOKEN)
    assert p.returncode == 0, p.stderr
    assert server.stop() == 0


def test_version():
    import importlib.metadata
    p = cli("--version")
    assert p.returncode == 0
    assert p.stdout.strip() == f"compactsim {importlib.metadata.version('compactsim')}"


def complete(script: str, *words: str) -> list[str]:
    """What bash completes for the command line `words` (the last one being typed)."""
    line = " ".join(f"'{w}'" for w in words)
    p = subprocess.run(["bash", "-c", f'{script}\nCOMP_WORDS=({line}); '
                                      f'COMP_CWORD={len(words) - 1}; _compactsim_complete; '
                                      f'printf "%s\\n" "${{COMPREPLY[@]}}"'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return sorted(p.stdout.split())


def test_shell_completion():
    p = cli("completion", "bash")
    assert p.returncode == 0, p.stderr
    script = p.stdout
    assert complete(script, "compactsim", "sw") == ["sweep"]
    assert set(complete(script, "compactsim", "sweep", "")) == {
        "cancel", "create", "delete", "get", "list", "--help", "--server", "--token",
        "--timeout", "--ca-cert", "--server-name"}
    assert "--token" in complete(script, "compactsim", "--server", "h:1", "list", "--to")
    assert complete(script, "compactsim", "list", "--format", "") == ["json", "table"]
    assert complete(script, "compactsim", "--ver") == ["--version"]
    zsh = cli("completion", "zsh")
    assert zsh.returncode == 0 and "bashcompinit" in zsh.stdout


def test_output_cut_short_by_its_reader_ends_quietly():
    """`compactsim profiles | head -1`: the reader goes away; no traceback, the status of a
    process that got SIGPIPE."""
    proc = subprocess.Popen(CLI + ["profiles"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    proc.stdout.close()   # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {' '.join(CLI)} --help | head -1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert "Traceback" not in p.stderr


# ---- standard methods ----------------------------------------------------------------------

def test_get_scenario(server):
    stub = server.stub
    listed = {s.name: s for s in stub.ListScenarios(simulator_pb2.ListScenariosRequest()).scenarios}
    name = sorted(listed)[0]
    assert stub.GetScenario(simulator_pb2.GetScenarioRequest(name=name)) == listed[name]
    with pytest.raises(grpc.RpcError) as err:
        stub.GetScenario(simulator_pb2.GetScenarioRequest(name="scenarios/no-such"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.GetScenario(simulator_pb2.GetScenarioRequest(name="no-such"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    p = cli("scenario", name.removeprefix("scenarios/"), "--server", f"127.0.0.1:{server.port}",
            "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["spec"] == json_format.MessageToDict(listed[name].spec)
    assert cli("scenario", "no-such", "--server", f"127.0.0.1:{server.port}").returncode == 3


def sweep_of(stub, n_values: int, pace: float, sweep_id: str) -> sweep_pb2.Sweep:
    rates = [struct_pb2.Value(number_value=1000.0 + i) for i in range(n_values)]
    sw = sweep_pb2.Sweep(base_spec=spec(duration=1.0, pace=pace), seeds=1,
                         display_name=sweep_id, parameters=[sweep_pb2.SweepParameter(
                             path="workload[0].rate", values=rates)])
    return stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sw, sweep_id=sweep_id))


def test_list_cancel_and_delete_sweeps(server):
    stub, address = server.stub, f"127.0.0.1:{server.port}"
    slow = sweep_of(stub, 3, 0.05, "slow-sweep")    # 20 s of wall time per run
    quick = sweep_of(stub, 2, 0.0, "quick-sweep")
    listed = stub.ListSweeps(simulator_pb2.ListSweepsRequest(page_size=1))
    assert [s.name for s in listed.sweeps] == [slow.name] and listed.next_page_token
    rest = stub.ListSweeps(simulator_pb2.ListSweepsRequest(page_token=listed.next_page_token))
    assert [s.name for s in rest.sweeps] == [quick.name] and not rest.next_page_token
    # deleting a sweep with runs going is refused, unless forced
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteSweep(simulator_pb2.DeleteSweepRequest(name=slow.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    p = cli("sweep", "cancel", slow.name, "--server", address)
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + 30
    while True:
        got = stub.GetSweep(simulator_pb2.GetSweepRequest(name=slow.name))
        if set(got.run_state_counts) == {"CANCELLED"}:
            break
        assert time.monotonic() < deadline, got.run_state_counts
        time.sleep(0.1)
    assert got.run_state_counts["CANCELLED"] == 3
    p = cli("sweep", "delete", slow.name, "--server", address)
    assert p.returncode == 0, p.stderr
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSweep(simulator_pb2.GetSweepRequest(name=slow.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for r in got.points:
        for run in r.runs:
            with pytest.raises(grpc.RpcError):
                stub.GetRun(simulator_pb2.GetRunRequest(name=run))
    # the CLI lists what is left; --show-deleted shows the deleted one too
    p = cli("sweep", "list", "--server", address, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert [s["name"] for s in json.loads(p.stdout)] == [quick.name]
    p = cli("sweep", "list", "--show-deleted", "--server", address, "--format", "json")
    assert [s["name"] for s in json.loads(p.stdout)] == [slow.name, quick.name]
    # force: a sweep still going is cancelled and deleted
    third = sweep_of(stub, 1, 0.05, "third-sweep")
    deleted = stub.DeleteSweep(simulator_pb2.DeleteSweepRequest(name=third.name, force=True),
                               timeout=60)
    assert deleted.name == third.name
    with pytest.raises(grpc.RpcError) as err:
        stub.CancelSweep(simulator_pb2.CancelSweepRequest(name="sweeps/nosuchsweep"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_traces(server, tmp_path):
    address = f"127.0.0.1:{server.port}"
    with Client(address) as c:
        assert c.list_traces() == []
        names = sorted(c.upload_trace(write_trace(tmp_path / f"t{i}.trace", pairs=10 + i))
                       for i in range(3))
        assert [t.name for t in c.list_traces()] == names
    page = server.stub.ListTraces(simulator_pb2.ListTracesRequest(page_size=2))
    assert [t.name for t in page.traces] == names[:2] and page.next_page_token
    page = server.stub.ListTraces(simulator_pb2.ListTracesRequest(
        page_size=2, page_token=page.next_page_token))
    assert [t.name for t in page.traces] == names[2:] and not page.next_page_token
    with pytest.raises(grpc.RpcError) as err:
        server.stub.ListTraces(simulator_pb2.ListTracesRequest(page_token="../etc"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    p = cli("trace", "list", "--server", address, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert [t["name"] for t in json.loads(p.stdout)] == names
    p = cli("trace", "get", names[0], "--server", address, "--format", "json")
    assert p.returncode == 0 and json.loads(p.stdout)[0]["name"] == names[0]
