"""The `compactsim.v1.Simulator` servicer on grpc.aio: thin handlers over the run manager
and the store.

Each handler names the work and runs it in a thread (`asyncio.to_thread`): the store and
the manager block. The work lives in modules of its own: `server.requests` checks the
fields of requests, `server.admission` admits new runs and sweeps (quotas, idempotency,
provenance), `server.queries` answers the reads, `server.resources` finds runs and sweeps
by name and changes them (only their creators and admins may), `server.watch` streams a
run's events, `server.uploads` takes traces in, and `server.mapping` turns records into
messages. Refusals are `server.rpc_errors.RpcFailure(google.rpc.Status)`, set on the call
by `server.refusal.refuse` (never raised into grpc) so clients get the canonical code and
its details. Specs are validated and turned into configs by `server.convert` only; preset
scenarios come in through the injected `scenarios` object (server/main.py wires
`sim.scenarios`), so this module imports no `sim`.

Shared use: every run belongs to the caller that created it (`Run.creator`, the token's
user; `anonymous` without a token file). Anyone may read any run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from compactsim.proto.v1 import simulator_pb2_grpc
from compactsim.server import mapping, requests, uploads
from compactsim.server.admission import Admission
from compactsim.server.auth import Authenticator, Caller
from compactsim.server.changes import RunChanges
from compactsim.server.limits import Limits
from compactsim.server.manager import ManagerClosed, RunManager
from compactsim.server.mapping import Scenarios
from compactsim.server.queries import Queries
from compactsim.server.refusal import refuse
from compactsim.server.resources import Resources
from compactsim.server.rpc_errors import RpcFailure, revoked, store_failed, unavailable
from compactsim.server.store import StoreError
from compactsim.server.traces import TraceStore
from compactsim.server.watch import DEFAULT_HEARTBEAT_S, Watches

log = logging.getLogger(__name__)

SERVICE_NAME = "compactsim.v1.Simulator"


class Simulator(simulator_pb2_grpc.SimulatorServicer):
    """Thin handlers; the modules above do the work."""

    def __init__(self, manager: RunManager, scenarios: Scenarios, traces: TraceStore, *,
                 executor_name: str = "process", auth: Authenticator | None = None,
                 limits: Limits | None = None):
        self.auth = auth or Authenticator()
        self.limits = limits or Limits()
        self.traces = traces
        changes = RunChanges()
        manager.add_listener(changes.notify)
        self.resources = Resources(manager, mapping.Runs())
        self.queries = Queries(self.resources, scenarios, traces)
        self.admission = Admission(self.resources, scenarios, traces, self.limits,
                                   executor_name)
        self.watches = Watches(manager.store, self.resources.runs, changes)

    # -- plumbing --------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.admission.closing

    def refuse_new_runs(self) -> None:
        """CreateRun and CreateSweep answer UNAVAILABLE from now on."""
        self.admission.closing = True

    def end_watches(self) -> None:
        """Open watch streams send the events already stored, then end (UNAVAILABLE)."""
        self.admission.closing = True
        self.watches.close()

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable, *args: Any) -> Any:
        """`fn(*args)` in a thread; a refusal is set on `context` (server.refusal) and None
        returned, so the handler returns None."""
        try:
            return await asyncio.to_thread(fn, *args)
        except RpcFailure as exc:
            refuse(context, exc.status)
        except ManagerClosed:
            refuse(context, unavailable().status)
        except StoreError as exc:
            log.exception("store")
            refuse(context, store_failed(exc).status)
        return None

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller | None:
        """The caller, or None with UNAUTHENTICATED set when the token that the interceptor
        let through was revoked since (SIGHUP)."""
        caller = self.auth.caller_of(context.invocation_metadata())
        if caller is None:
            refuse(context, revoked())
        return caller

    async def _call_as(self, context: grpc.aio.ServicerContext, fn: Callable, *args: Any
                       ) -> Any:
        """`_call(fn, *args, caller)` for an authenticated caller."""
        caller = self._caller(context)
        return None if caller is None else await self._call(context, fn, *args, caller)

    # -- scenarios and runs ----------------------------------------------------------------

    async def ListScenarios(self, request, context):
        return await self._call(context, self.queries.list_scenarios, request)

    async def GetScenario(self, request, context):
        return await self._call(context, self.queries.get_scenario, request.name)

    async def CreateRun(self, request, context):
        return await self._call_as(context, self.admission.create_run, request)

    async def GetRun(self, request, context):
        return await self._call(context, self.queries.get_run, request.name)

    async def ListRuns(self, request, context):
        return await self._call(context, self.queries.list_runs, request)

    async def CancelRun(self, request, context):
        return await self._call_as(context, self.resources.cancel_run, request.name)

    async def DeleteRun(self, request, context):
        return await self._call_as(context, self.resources.delete_run, request.name,
                                   request.force)

    async def ListRunSamples(self, request, context):
        return await self._call(context, self.queries.list_samples, request)

    async def GetRunReport(self, request, context):
        return await self._call(context, self.queries.get_report, request)

    async def StreamRunReport(self, request, context):
        report = await self._call(context, self.queries.get_report, request)
        for piece in mapping.report_pieces(report) if report is not None else ():
            yield piece

    async def WatchRun(self, request, context):
        rec = await self._call(context, self.resources.run, request.name)
        heartbeat = None if rec is None else await self._call(
            context, requests.watch_run, request, DEFAULT_HEARTBEAT_S)
        if heartbeat is None:
            return
        try:
            async for response in self.watches.stream(rec, heartbeat, request):
                yield response
        except RpcFailure as exc:
            refuse(context, exc.status)

    # -- sweeps ----------------------------------------------------------------------------

    async def CreateSweep(self, request, context):
        return await self._call_as(context, self.admission.create_sweep, request)

    async def GetSweep(self, request, context):
        return await self._call(context, self.resources.sweep_message, request.name)

    async def ListSweeps(self, request, context):
        return await self._call(context, self.queries.list_sweeps, request)

    async def CancelSweep(self, request, context):
        return await self._call_as(context, self.resources.cancel_sweep, request.name)

    async def DeleteSweep(self, request, context):
        return await self._call_as(context, self.resources.delete_sweep, request.name,
                                   request.force)

    # -- traces ----------------------------------------------------------------------------

    async def UploadTrace(self, request_iterator, context):
        caller = self._caller(context)
        if caller is None:
            return None
        try:
            return await uploads.upload(self.traces, self.limits, caller.user,
                                        request_iterator,
                                        lambda: self._caller(context) is not None)
        except RpcFailure as exc:
            refuse(context, exc.status)
        return None

    async def DeleteTrace(self, request, context):
        return await self._call_as(context, uploads.delete, self.traces, request.name)

    async def GetTrace(self, request, context):
        return await self._call(context, self.queries.get_trace, request.name)

    async def ListTraces(self, request, context):
        return await self._call(context, self.queries.list_traces, request)
