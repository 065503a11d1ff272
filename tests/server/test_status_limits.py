"""compactsim.server.status_limits: refusals cut to fit gRPC's trailing metadata, first
problems kept."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from compactsim.server.status_limits import DETAILS_BUDGET, MAX_MESSAGE, MAX_STRING, bounded

FV = error_details_pb2.BadRequest.FieldViolation


def status(message: str, *details) -> status_pb2.Status:
    st = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    for d in details:
        st.details.add().Pack(d)
    return st


def unpack(st: status_pb2.Status, cls):
    out = cls()
    assert st.details[0].Unpack(out)
    return out


def metadata_bytes(st: status_pb2.Status) -> int:
    sent = rpc_status.to_status(st)
    return sum(len(k) + len(v) for k, v in sent.trailing_metadata) + len(sent.details) * 3


def test_small_status_is_unchanged():
    st = status("invalid spec: spec.seed", error_details_pb2.BadRequest(
        field_violations=[FV(field="spec.seed", description="must be at most 2^63-1")]),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=5)))
    assert bounded(st) == st


def test_many_violations_keep_the_first_within_budget_and_say_how_many_were_left():
    many = [FV(field=f"spec.workload[{i}].rate", description="must be at least 0, got -1")
            for i in range(5000)]
    st = status("invalid spec: " + ", ".join(v.field for v in many),
                error_details_pb2.BadRequest(field_violations=many))
    started = time.monotonic()
    out = bounded(st)
    assert time.monotonic() - started < 1
    kept = unpack(out, error_details_pb2.BadRequest).field_violations
    assert 10 < len(kept) < 5000 and list(kept) == many[:len(kept)]
    assert out.details[0].ByteSize() <= DETAILS_BUDGET
    assert out.message.endswith(f"({5000 - len(kept)} more not shown)")
    assert len(out.message) <= MAX_MESSAGE and out.code == code_pb2.INVALID_ARGUMENT
    assert metadata_bytes(out) < 8192 < metadata_bytes(st)


def test_long_strings_are_cut_everywhere():
    huge = "\u2603" * 100_000
    st = status(huge, error_details_pb2.ResourceInfo(
        resource_type="compactsim.local/Scenario", resource_name=huge, description="x"),
        error_details_pb2.ErrorInfo(reason="R", metadata={"k": huge}),
        error_details_pb2.BadRequest(field_violations=[FV(field=huge, description=huge)]))
    out = bounded(st)
    info = unpack(out, error_details_pb2.ResourceInfo)
    assert len(info.resource_name) == MAX_STRING and info.resource_name.endswith("...")
    assert info.resource_type == "compactsim.local/Scenario"
    err = error_details_pb2.ErrorInfo()
    out.details[1].Unpack(err)
    assert len(err.metadata["k"]) == MAX_STRING
    bad = error_details_pb2.BadRequest()
    out.details[2].Unpack(bad)
    assert len(bad.field_violations) == 1                  # the first is always kept
    assert len(bad.field_violations[0].field) == MAX_STRING
    assert len(out.message) == MAX_MESSAGE
    assert metadata_bytes(out) < 8192


def test_unknown_detail_types_pass_unchanged():
    other = timestamp_pb2.Timestamp(seconds=12)
    st = status("m", other)
    assert bounded(st).details[0] == st.details[0]
