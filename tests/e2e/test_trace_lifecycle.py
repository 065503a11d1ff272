"""Uploaded traces on a shared server: a quota per user, a stalled upload dropped after
the idle timeout (its partial file and descriptor released), DeleteTrace (API and
command line), and a token revoked during an upload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from serverproc import LAB_TOKENS, ROOT, details

from compactsim.proto.v1 import trace_pb2

C = grpc.StatusCode
TOKENS = LAB_TOKENS
KiB = 1 << 10


def _lab(lab_server, tmp_path, *flags):
    data = tmp_path / "data"
    data.mkdir()
    return lab_server(*flags, data_dir=data), tmp_path / "tokens"


def _upload(server, user: str, data: bytes) -> trace_pb2.Trace:
    stub = server.stub_for(TOKENS[user])
    return stub.UploadTrace(iter([trace_pb2.UploadTraceRequest(chunk=data)]), timeout=30)


def _code(fn, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)
    return err.value


def _stored(server) -> list[str]:
    return sorted(os.listdir(server.data_dir / "traces"))


def test_each_user_keeps_at_most_their_quota_of_traces(lab_server, tmp_path):
    server, _ = _lab(lab_server, tmp_path, "--max-trace-bytes", "64KiB",
                     "--max-trace-bytes-per-user", "100KiB")
    a, b, c = (bytes([n]) * (40 * KiB) for n in (1, 2, 3))
    ta = _upload(server, "alice", a)
    _upload(server, "alice", b)
    assert _upload(server, "alice", a).name == ta.name      # kept once, counted once
    err = _code(_upload, server, "alice", c)
    assert err.code() == C.RESOURCE_EXHAUSTED, err.details()
    [quota] = details(err, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "user:alice"
    assert "--max-trace-bytes-per-user" in quota.violations[0].description
    assert not [n for n in _stored(server) if n.startswith(".")]   # nothing partial left
    _upload(server, "bob", c)                                 # bob has his own quota
    server.stub_for(TOKENS["alice"]).DeleteTrace(trace_pb2.DeleteTraceRequest(name=ta.name),
                                                 timeout=30)
    _upload(server, "alice", c)                               # room again


def _partial_fds(server) -> list[str]:
    """The server's open descriptors on partial uploads."""
    out = []
    for fd in os.listdir(f"/proc/{server.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{server.proc.pid}/fd/{fd}")
        except OSError:
            continue
        if "/traces/.upload-" in target:
            out.append(target)
    return out


def test_a_stalled_upload_is_dropped_after_the_idle_timeout(lab_server, tmp_path):
    server, _ = _lab(lab_server, tmp_path, "--trace-idle-timeout", "1s")
    release = threading.Event()

    def chunks():
        yield trace_pb2.UploadTraceRequest(chunk=b"x" * 1000)
        release.wait(30)

    call = server.stub.UploadTrace.future(chunks(), timeout=30)
    deadline = time.monotonic() + 10
    while not _stored(server) or not _partial_fds(server):   # the partial upload is there
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        err = call.exception(timeout=10)             # the client is still stalled
        assert err is not None and err.code() == C.DEADLINE_EXCEEDED, err
        assert "--trace-idle-timeout" in err.details()
        assert _stored(server) == []
        assert _partial_fds(server) == [], "the upload's descriptor stayed open"
    finally:
        release.set()


def test_delete_trace_takes_back_uploads_and_removes_unkept_files(lab_server, tmp_path):
    server, _ = _lab(lab_server, tmp_path)
    data = b"kmem trace bytes\n" * 100
    name = _upload(server, "alice", data).name
    _upload(server, "bob", data)
    alice, bob = server.stub_for(TOKENS["alice"]), server.stub_for(TOKENS["bob"])
    req = trace_pb2.DeleteTraceRequest(name=name)
    alice.DeleteTrace(req, timeout=30)
    assert alice.GetTrace(trace_pb2.GetTraceRequest(name=name), timeout=30).name == name
    assert _code(alice.DeleteTrace, req).code() == C.NOT_FOUND   # not hers any more
    bob.DeleteTrace(req, timeout=30)
    assert _code(alice.GetTrace, trace_pb2.GetTraceRequest(name=name)).code() == C.NOT_FOUND
    assert _stored(server) == []
    assert _code(bob.DeleteTrace, trace_pb2.DeleteTraceRequest(name="../x")).code() == \
        C.INVALID_ARGUMENT

    # an admin deletes everyone's, from the command line
    name = _upload(server, "alice", data).name
    _upload(server, "bob", data)
    env = {**os.environ, "COMPACTSIM_TOKEN": TOKENS["root"],
           "COMPACTSIM_SERVER": f"127.0.0.1:{server.port}"}
    out = subprocess.run([sys.executable, "-m", "compactsim.client.cli", "trace", "delete",
                          name], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _stored(server) == []
    out = subprocess.run([sys.executable, "-m", "compactsim.client.cli", "trace", "delete",
                          name], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr                   # not found


def test_a_token_revoked_during_an_upload_is_unauthenticated(lab_server, tmp_path):
    server, tokens = _lab(lab_server, tmp_path)
    sent, go_on = threading.Event(), threading.Event()

    def chunks():
        yield trace_pb2.UploadTraceRequest(chunk=b"a" * 1000)
        sent.set()
        go_on.wait(30)
        yield trace_pb2.UploadTraceRequest(chunk=b"b" * 1000)

    call = server.stub_for(TOKENS["bob"]).UploadTrace.future(chunks(), timeout=30)
    assert sent.wait(10)
    tokens.write_text(f"{TOKENS['alice']} alice\n")           # bob's token revoked
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "tokens loaded" not in (server.data_dir / "server.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    go_on.set()
    err = call.exception(timeout=20)
    assert err is not None and err.code() == C.UNAUTHENTICATED, err
    assert _stored(server) == []
