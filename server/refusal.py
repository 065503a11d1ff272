"""Refusing a call without raising.

`grpc.aio.ServicerContext.abort` raises an AbortError that grpc's own handler code
catches; on the way the error's traceback takes in every frame between the handler and
grpc (the handler's, the interceptors', grpc's) and one of those frames refers back to
the error: a reference cycle. Nothing but the cyclic garbage collector frees it, and that
happens late, in a full collection, while the frames keep the request message and every
local the handler made of it (a 200 KB request with 100 000 workload groups is tens of
MiB). Hundreds of refused requests then hold gigabytes. `refuse()` sets the status on the
context instead, and the handler returns: grpc sends the status (a unary handler's return
value is dropped when the code is not OK) and no exception, so no cycle, is made.
"""

from __future__ import annotations

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from compactsim.server.status_limits import bounded


def refuse(context: grpc.aio.ServicerContext, st: status_pb2.Status) -> None:
    """End the call with `st` (made small enough for trailing metadata) once the handler
    returns; the handler must return (or, streaming, stop yielding) right after."""
    status = rpc_status.to_status(bounded(st))
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)
