"""The service's refusals: `RpcFailure(google.rpc.Status)` and one constructor per kind,
each with the canonical code and the standard details a client reads (BadRequest field
violations, ResourceInfo, PreconditionFailure, QuotaFailure + RetryInfo, ErrorInfo), and
the Status of a run that failed or was cancelled (Run.error).

Handlers raise these from the thread their body runs in; the servicer sets the status on
the call (`server.refusal.refuse`) rather than raising into grpc.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from compactsim.codec.runstate import RunState
from compactsim.server.limits import Exceeded

DOMAIN = "compactsim.local"
QUEUE_RETRY_S = 5
# Run.error code and ErrorInfo reason by the store's error_reason.
_ERROR_CODES = {"invalid_spec": code_pb2.INVALID_ARGUMENT,
                "invalid_trace": code_pb2.INVALID_ARGUMENT,
                "wall_time_limit": code_pb2.DEADLINE_EXCEEDED,
                "interrupted": code_pb2.UNAVAILABLE,
                "worker_died": code_pb2.INTERNAL, "simulation_error": code_pb2.INTERNAL,
                "store_error": code_pb2.UNAVAILABLE,
                "worker_start_failed": code_pb2.UNAVAILABLE}
_REASONS = {"interrupted": "RUN_INTERRUPTED"}


class RpcFailure(Exception):
    def __init__(self, status: status_pb2.Status):
        self.status = status
        super().__init__(status.message)


def status(code: int, message: str, *details: Any) -> status_pb2.Status:
    st = status_pb2.Status(code=code, message=message)
    for d in details:
        st.details.add().Pack(d)
    return st


def failure(code: int, message: str, *details: Any) -> RpcFailure:
    return RpcFailure(status(code, message, *details))


def bad_request(violations: Iterable[tuple[str, str]], message: str = "") -> RpcFailure:
    """INVALID_ARGUMENT with a field violation per (field, description)."""
    v = [error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
         for f, d in violations]
    return failure(code_pb2.INVALID_ARGUMENT,
                   message or f"invalid request: {', '.join(x.field for x in v)}",
                   error_details_pb2.BadRequest(field_violations=v))


def config_violations(exc: Exception, prefix: str) -> list[tuple[str, str]]:
    """The (field, description) pairs of a ConfigError, fields under `prefix`."""
    return [(f"{prefix}.{e.path}" if prefix else e.path, e.reason)
            for e in getattr(exc, "errors", ())]


def _resource(kind: str, name: str, description: str = "") -> error_details_pb2.ResourceInfo:
    return error_details_pb2.ResourceInfo(resource_type=f"{DOMAIN}/{kind}",
                                          resource_name=name, description=description)


def not_found(kind: str, name: str, message: str = "") -> RpcFailure:
    return failure(code_pb2.NOT_FOUND, message or f"{name} not found",
                   _resource(kind, name, "not found"))


def already_exists(name: str, message: str = "") -> RpcFailure:
    """ALREADY_EXISTS for the resource `name` ("runs/ID" -> a Run)."""
    return failure(code_pb2.ALREADY_EXISTS, message or f"{name} already exists",
                   _resource(name.split("/")[0][:-1].title(), name))


def conflict(message: str) -> RpcFailure:
    """ALREADY_EXISTS for a request that clashes with an earlier one (a request_id reused
    for something else, a sweep id taken)."""
    return failure(code_pb2.ALREADY_EXISTS, message)


def deadline_exceeded(message: str) -> RpcFailure:
    return failure(code_pb2.DEADLINE_EXCEEDED, message)


def precondition(name: str, message: str, type_: str = "STATE") -> RpcFailure:
    return failure(code_pb2.FAILED_PRECONDITION, message,
                   error_details_pb2.PreconditionFailure(violations=[
                       error_details_pb2.PreconditionFailure.Violation(
                           type=type_, subject=name, description=message)]))


def unavailable(message: str = "the server is shutting down") -> RpcFailure:
    return failure(code_pb2.UNAVAILABLE, message)


def quota(exceeded: list[Exceeded], message: str = "") -> RpcFailure:
    """RESOURCE_EXHAUSTED with a QuotaFailure violation per exceeded limit, and a RetryInfo
    when waiting helps with every one of them."""
    details: list[Any] = [error_details_pb2.QuotaFailure(violations=[
        error_details_pb2.QuotaFailure.Violation(subject=e.subject, description=e.description)
        for e in exceeded])]
    if all(e.retry for e in exceeded):
        details.append(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=QUEUE_RETRY_S)))
    return failure(code_pb2.RESOURCE_EXHAUSTED,
                   message or "; ".join(e.description for e in exceeded), *details)


def check_quota(exceeded: list[Exceeded]) -> None:
    """Raise `quota(exceeded)` when a limit is exceeded."""
    if exceeded:
        raise quota(exceeded)


def not_owner(name: str, creator: str, user: str, verb: str) -> RpcFailure:
    return failure(
        code_pb2.PERMISSION_DENIED,
        f"{name} belongs to {creator!r}; only its creator or an admin may {verb} it "
        f"(you are {user!r})",
        error_details_pb2.ErrorInfo(reason="NOT_OWNER", domain=DOMAIN,
                                    metadata={"creator": creator, "caller": user,
                                              "resource": name}))


def store_failed(exc: Exception) -> RpcFailure:
    """UNAVAILABLE for a store that could not answer (a full disk, an I/O error...)."""
    return failure(code_pb2.UNAVAILABLE, f"store error: {exc}")


def revoked() -> status_pb2.Status:
    return status(code_pb2.UNAUTHENTICATED, "unknown or revoked token (revoked during the call)")


def run_error(state: RunState, error_reason: str, error_message: str, interrupted: bool
              ) -> status_pb2.Status | None:
    """Run.error (and a state change's error) of a run in `state`: None but for CANCELLED
    and FAILED."""
    if state is RunState.CANCELLED:
        return status(code_pb2.CANCELLED, error_message or "cancelled",
                      error_details_pb2.ErrorInfo(reason=(error_reason or "cancelled").upper(),
                                                  domain=DOMAIN))
    if state is not RunState.FAILED:
        return None
    reason = _REASONS.get(error_reason, (error_reason or "failed").upper())
    return status(_ERROR_CODES.get(error_reason, code_pb2.UNKNOWN), error_message,
                  error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN,
                                              metadata={"interrupted": str(interrupted).lower()}))
