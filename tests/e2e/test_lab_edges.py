"""Edges of shared use against the real server: CreateRun racing itself on one run_id, a
request_id reused for another request, a token file that is not UTF-8 (at start and on
SIGHUP)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from serverproc import ROOT, R, spec

from compactsim.proto.v1 import simulator_pb2

C = grpc.StatusCode
ALICE = "alice-0123456789abcdef"


def _create(stub, **kw):
    try:
        stub.CreateRun(simulator_pb2.CreateRunRequest(**kw), timeout=30)
        return C.OK
    except grpc.RpcError as e:
        return e.code()


def test_concurrent_creates_of_one_run_id_are_already_exists(make_server):
    server = make_server("--max-queue", "5000")
    threads_per_round, rounds = 8, 25
    for i in range(rounds):
        barrier = threading.Barrier(threads_per_round)
        codes: list = []
        stubs = [server.stub_for() for _ in range(threads_per_round)]

        def race(stub, barrier=barrier, codes=codes, run_id=f"race-{i}"):
            barrier.wait()
            codes.append(_create(stub, run=R(spec=spec(duration=0.01)), run_id=run_id))
        threads = [threading.Thread(target=race, args=(s,)) for s in stubs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(c.name for c in codes) == sorted(
            ["OK"] + ["ALREADY_EXISTS"] * (threads_per_round - 1)), (i, codes)


def test_a_request_id_reused_for_another_request_is_refused(server):
    first = server.stub.CreateRun(simulator_pb2.CreateRunRequest(
        run=R(spec=spec(seed=1)), request_id="req-1"), timeout=30)
    again = server.stub.CreateRun(simulator_pb2.CreateRunRequest(
        run=R(spec=spec(seed=1)), request_id="req-1"), timeout=30)
    assert again.name == first.name                       # a retry: the same run
    with pytest.raises(grpc.RpcError) as err:
        server.stub.CreateRun(simulator_pb2.CreateRunRequest(
            run=R(spec=spec(seed=2)), request_id="req-1"), timeout=30)
    assert err.value.code() == C.ALREADY_EXISTS
    assert "req-1" in err.value.details() and first.name in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        server.stub.CreateRun(simulator_pb2.CreateRunRequest(
            run=R(spec=spec(seed=1), display_name="other"), request_id="req-1"), timeout=30)
    assert err.value.code() == C.ALREADY_EXISTS
    runs = server.stub.ListRuns(simulator_pb2.ListRunsRequest(), timeout=30)
    assert runs.total_size == 1


def test_a_token_file_that_is_not_utf8_is_refused_clearly_at_start(tmp_path, token_file):
    path = token_file(f"{ALICE} alice\n".encode() + b"caf\xe9-0123456789abcdef bob\n")
    out = subprocess.run([sys.executable, "-m", "compactsim.server.main", "--listen",
                          "127.0.0.1:0", "--metrics-listen", "", "--data-dir", str(tmp_path),
                          "--token-file", str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert f"{path}:2: not UTF-8" in out.stderr, out.stderr


def test_a_token_file_made_not_utf8_keeps_the_tokens_on_sighup(make_server, token_file):
    path = token_file(f"{ALICE} alice\n")
    server = make_server("--token-file", str(path), token=ALICE)
    path.write_bytes(b"\xff\xfe not a token file\n")
    server.proc.send_signal(signal.SIGHUP)
    log = server.data_dir / "server.log"
    deadline = time.monotonic() + 10
    while "not reloaded" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.05)
    text = log.read_text(errors="replace")
    assert "not UTF-8" in text and "Traceback" not in text, text[-2000:]
    assert server.stub.ListRuns(simulator_pb2.ListRunsRequest(), timeout=10) is not None
    assert server.proc.poll() is None
