"""The RPCs that change the trace store (`server.traces`): UploadTrace and DeleteTrace.

An upload's chunks are written as they come (a write of at most one message's bytes) and
the partial file is removed on every way out but success, including a client that goes
away and one that sends nothing for `limits.trace_idle_timeout_s`. The upload counts
against its user's quota."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable

from google.protobuf import empty_pb2

from compactsim.proto.v1 import trace_pb2
from compactsim.server import limits, mapping
from compactsim.server.auth import Caller
from compactsim.server.limits import Exceeded, Limits
from compactsim.server.rpc_errors import (
    bad_request,
    deadline_exceeded,
    not_found,
    quota,
    unavailable,
)
from compactsim.server.traces import (
    TraceError,
    TraceNotFound,
    TraceQuotaExceeded,
    TraceStore,
    TraceTooLarge,
)

log = logging.getLogger(__name__)


async def upload(traces: TraceStore, limits_: Limits, user: str,
                 chunks: AsyncIterable[trace_pb2.UploadTraceRequest],
                 still_allowed: Callable[[], bool]) -> trace_pb2.Trace | None:
    """Store the trace `chunks` carry for `user`; None, storing nothing, when
    `still_allowed()` says no once they are in (a token revoked meanwhile)."""
    upload = None
    idle = limits_.trace_idle_timeout_s
    try:
        upload = traces.upload(user)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(idle) as deadline:   # re-armed by each chunk
            async for request in chunks:
                upload.write(request.chunk)
                deadline.reschedule(loop.time() + idle)
        if not still_allowed():
            return None
        return mapping.trace(await asyncio.to_thread(upload.commit))
    except TimeoutError:
        raise deadline_exceeded(f"no chunk for {idle:g} s: the upload was dropped and "
                                f"nothing kept (--trace-idle-timeout)") from None
    except TraceTooLarge:
        raise quota(limits_.trace_exceeded(upload.size if upload else 0)) from None
    except TraceQuotaExceeded as exc:
        raise quota([Exceeded(limits.user_subject(exc.user), str(exc), exc.retry)]) from None
    except TraceError as exc:
        raise bad_request([("chunk", str(exc))]) from None
    except OSError as exc:
        log.exception("storing an uploaded trace")
        raise unavailable(f"cannot store the trace: {exc.strerror or exc}") from None
    finally:
        if upload is not None:
            upload.discard()


def delete(traces: TraceStore, name: str, caller: Caller) -> empty_pb2.Empty:
    try:
        traces.delete(name, caller.user, caller.admin)
    except TraceNotFound as exc:
        raise not_found("Trace", name, str(exc)) from None
    except TraceError as exc:
        raise bad_request([("name", str(exc))]) from None
    return empty_pb2.Empty()
