"""`pace` is bounded: 0 or 1e-3..1e9 (INVALID_ARGUMENT naming run.spec.pace), and a paced
run that would outlast the server's wall-time limit, 12 h unless told, is refused
RESOURCE_EXHAUSTED naming the field and the flag."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from serverproc import R, details, spec

from compactsim.proto.v1 import simulator_pb2

C = grpc.StatusCode


def _validate(stub, pace, duration=0.5):
    return stub.CreateRun(simulator_pb2.CreateRunRequest(
        run=R(spec=spec(pace=pace, duration=duration)), validate_only=True), timeout=30)


@pytest.mark.parametrize("pace", [1e-6, 1e-300, 5e-324, 0.000999])
def test_pace_too_slow_is_invalid_argument_naming_the_field(server, pace):
    with pytest.raises(grpc.RpcError) as err:
        _validate(server.stub, pace)
    assert err.value.code() == C.INVALID_ARGUMENT, err.value.details()
    fields = [v.field for b in details(err.value, error_details_pb2.BadRequest)
              for v in b.field_violations]
    assert fields == ["run.spec.pace"], fields


def test_paced_run_longer_than_the_default_wall_time_limit_is_refused(server):
    # 60 s at 1 simulated ms per second: 16.7 h of wall time, over the 12 h default
    with pytest.raises(grpc.RpcError) as err:
        _validate(server.stub, 1e-3, duration=60.0)
    assert err.value.code() == C.RESOURCE_EXHAUSTED, err.value.details()
    [quota] = details(err.value, error_details_pb2.QuotaFailure)
    text = " ".join(v.description for v in quota.violations)
    assert "run.spec.pace" in text and "--max-run-wall-time" in text, text
    # 40 s at that pace is 11.1 h: within the limit
    assert _validate(server.stub, 1e-3, duration=40.0).effective_spec.pace == 1e-3
    assert _validate(server.stub, 1.0).effective_spec.pace == 1.0


def test_no_wall_time_limit_accepts_slow_paced_runs(make_server):
    server = make_server("--max-run-wall-time", "0")
    assert _validate(server.stub, 1e-3, duration=3600.0).effective_spec.pace == 1e-3
