"""Refused requests leave no memory behind: hundreds of large requests of each kind a
hostile user can send, each refused, and the resident memory of the server process
(VmRSS, read from /proc) stays within a fixed margin of what it was after a warm-up.

Each request is about 200 KB, well under the message limit, and expands to tens of MiB
once converted (100 000 empty workload groups, 100 000 order weights, 100 000 labels), so
a refusal that keeps even a small part of it shows at once."""

from __future__ import annotations

import os

import grpc
import pytest
from serverproc import R, rss_mib, spec

from compactsim.proto.v1 import simulator_pb2, spec_pb2, sweep_pb2

C = grpc.StatusCode
TOKEN = "tenant-token-0123456789"
N = 200             # refusals of each kind after the warm-up
WARM_UP = 20
MARGIN_MIB = 48     # one kept request of the first kind is about 40 MiB


def _groups(n: int) -> spec_pb2.Spec:
    s = spec()
    for _ in range(n):
        s.workload.add()
    return s


def _weights(n: int) -> spec_pb2.Spec:
    s = spec()
    s.workload[0].order_mix.update({i: 1.0 for i in range(n)})
    return s


def _kinds(server):
    """(name, call(), expected code) for each kind of refused request."""
    stub, bad = server.stub, server.stub_for("not-a-token-0123456789")
    groups = _groups(100_000)
    run_groups = simulator_pb2.CreateRunRequest(run=R(spec=groups))
    run_groups_vo = simulator_pb2.CreateRunRequest(run=R(spec=groups), validate_only=True)
    run_weights = simulator_pb2.CreateRunRequest(run=R(spec=_weights(100_000)))
    sweep_groups = simulator_pb2.CreateSweepRequest(sweep=sweep_pb2.Sweep(base_spec=groups))
    sweep_labels = simulator_pb2.CreateSweepRequest(sweep=sweep_pb2.Sweep(
        base_spec=spec(), labels={f"k{i}": "v" for i in range(20_000)}))
    run_labels = simulator_pb2.CreateRunRequest(run=R(
        spec=spec(), labels={f"k{i}": "v" for i in range(20_000)}))
    raw = server.channel.unary_unary("/compactsim.v1.Simulator/CreateRun",
                                     request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
    garbage = b"\x32\xff\xff\x0f" + os.urandom(200_000)   # run = a truncated message
    return [
        ("CreateRun, 100 000 workload groups", lambda: stub.CreateRun(run_groups, timeout=30),
         C.INVALID_ARGUMENT),
        ("CreateRun validate_only, 100 000 groups",
         lambda: stub.CreateRun(run_groups_vo, timeout=30), C.INVALID_ARGUMENT),
        ("CreateRun, 100 000 order weights", lambda: stub.CreateRun(run_weights, timeout=30),
         C.INVALID_ARGUMENT),
        ("CreateRun, 20 000 labels", lambda: stub.CreateRun(run_labels, timeout=30),
         C.RESOURCE_EXHAUSTED),
        ("CreateSweep, 100 000 groups", lambda: stub.CreateSweep(sweep_groups, timeout=30),
         C.INVALID_ARGUMENT),
        ("CreateSweep, 20 000 labels", lambda: stub.CreateSweep(sweep_labels, timeout=30),
         C.RESOURCE_EXHAUSTED),
        ("CreateRun, bytes that do not decode", lambda: raw(garbage, timeout=30),
         C.INVALID_ARGUMENT),
        ("CreateRun, unknown token", lambda: bad.CreateRun(run_groups, timeout=30),
         C.UNAUTHENTICATED),
    ]


def _refused(call, code) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()


def test_refused_requests_leave_the_server_rss_bounded(make_server, token_file):
    tokens = token_file(f"{TOKEN} tenant\n")
    server = make_server("--token-file", str(tokens), token=TOKEN)
    kinds = _kinds(server)
    for _, call, code in kinds:
        for _ in range(WARM_UP):
            _refused(call, code)
    base = rss_mib(server.proc.pid)
    for name, call, code in kinds:
        for i in range(N):
            _refused(call, code)
            grown = rss_mib(server.proc.pid) - base
            assert grown < MARGIN_MIB, (f"{name}: server RSS grew {grown:.0f} MiB over "
                                        f"{i + 1} refusals (from {base:.0f} MiB)")
    assert server.proc.poll() is None
    assert server.stop() == 0
