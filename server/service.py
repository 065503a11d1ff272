"""The `compactsim.v1.Simulator` servicer on grpc.aio: thin handlers over the run manager
and the store.

Every handler's body is a plain function run in a thread (`asyncio.to_thread`): the store
and the manager block. Refusals are `RpcFailure(google.rpc.Status)`, set on the call by
`server.refusal.refuse` (never raised into grpc) so clients get the canonical code and its details
(BadRequest field violations, ResourceInfo, PreconditionFailure, QuotaFailure + RetryInfo).
Specs are validated and turned into configs by `server.convert` only; preset scenarios come
in through the injected `scenarios` object (server/main.py wires `sim.scenarios`), so this
module imports no `sim`.

Shared use: every run belongs to the caller that created it (`Run.creator`, the token's
user; `anonymous` without a token file). Anyone may read any run; CancelRun and DeleteRun
are for its creator and admins (else PERMISSION_DENIED, ErrorInfo reason NOT_OWNER).
Quotas and limits (`server.limits`) are checked before anything is stored, for
validate-only requests too, and CreateSweep counts every one of its runs. A replayed trace
must be one uploaded with UploadTrace (`server.traces`): the spec keeps its name,
`traces/{sha256}`, and only the worker gets the file's path.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import logging
import platform
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import grpc
from google.protobuf import duration_pb2, empty_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import (
    run_pb2,
    simulator_pb2,
    simulator_pb2_grpc,
    spec_pb2,
    sweep_pb2,
    trace_pb2,
)
from compactsim.server import convert, limits, sweeps
from compactsim.server.auth import Authenticator, Caller
from compactsim.server.changes import RunChanges
from compactsim.server.filters import QueryError
from compactsim.server.limits import Exceeded, Limits
from compactsim.server.manager import REPORT_HISTOGRAMS, ManagerClosed, QueueLimit, RunManager
from compactsim.server.refusal import refuse
from compactsim.server.store import (
    IdTaken,
    InvalidArgument,
    NewRun,
    NotFound,
    RequestIdConflict,
    RunRecord,
    StoreError,
    WrongState,
    check_same_request,
)
from compactsim.server.traces import (
    TraceError,
    TraceInfo,
    TraceNotFound,
    TraceQuotaExceeded,
    TraceStore,
    TraceTooLarge,
)

log = logging.getLogger(__name__)

DOMAIN = "compactsim.local"
SERVICE_NAME = "compactsim.v1.Simulator"
DEFAULT_HEARTBEAT_S = 10.0
QUEUE_RETRY_S = 5
# A watch stream with nothing to send looks at its run at least this often, woken or not.
WATCH_RECHECK_S = 5.0
# Largest list response: a page holds fewer items than page_size rather than pass gRPC's
# default 4 MiB receive limit of clients.
MAX_PAGE_BYTES = 3 << 20
# Text per StreamRunReport message.
REPORT_PIECE_BYTES = 1 << 20
_RESOURCE_ID = re.compile(r"[a-z][a-z0-9-]{3,62}")
# Run.error code and ErrorInfo reason by the store's error_reason.
_ERROR_CODES = {"invalid_spec": code_pb2.INVALID_ARGUMENT,
                "invalid_trace": code_pb2.INVALID_ARGUMENT,
                "wall_time_limit": code_pb2.DEADLINE_EXCEEDED,
                "interrupted": code_pb2.UNAVAILABLE,
                "worker_died": code_pb2.INTERNAL, "simulation_error": code_pb2.INTERNAL,
                "store_error": code_pb2.UNAVAILABLE,
                "worker_start_failed": code_pb2.UNAVAILABLE}
_REASONS = {"interrupted": "RUN_INTERRUPTED"}


class Scenarios(Protocol):
    def list(self) -> Mapping[str, str]: ...            # name -> title
    def load(self, name: str) -> dict[str, Any]: ...    # raw spec; ConfigError if unknown
    def description(self, name: str) -> str: ...


class RpcFailure(Exception):
    def __init__(self, status: status_pb2.Status):
        self.status = status
        super().__init__(status.message)


# ---- errors -------------------------------------------------------------------------------

def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    st = status_pb2.Status(code=code, message=message)
    for d in details:
        st.details.add().Pack(d)
    return st


def bad_request(violations: Iterable[tuple[str, str]], message: str = "") -> RpcFailure:
    v = [error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
         for f, d in violations]
    return RpcFailure(_status(code_pb2.INVALID_ARGUMENT,
                              message or f"invalid request: {', '.join(x.field for x in v)}",
                              error_details_pb2.BadRequest(field_violations=v)))


def not_found(kind: str, name: str, message: str = "") -> RpcFailure:
    return RpcFailure(_status(code_pb2.NOT_FOUND, message or f"{name} not found",
                              error_details_pb2.ResourceInfo(
                                  resource_type=f"{DOMAIN}/{kind}", resource_name=name,
                                  description="not found")))


def precondition(name: str, message: str, type_: str = "STATE") -> RpcFailure:
    return RpcFailure(_status(code_pb2.FAILED_PRECONDITION, message,
                              error_details_pb2.PreconditionFailure(violations=[
                                  error_details_pb2.PreconditionFailure.Violation(
                                      type=type_, subject=name, description=message)])))


def unavailable(message: str = "the server is shutting down") -> RpcFailure:
    return RpcFailure(_status(code_pb2.UNAVAILABLE, message))


def quota(exceeded: list[Exceeded], message: str = "") -> RpcFailure:
    """RESOURCE_EXHAUSTED with a QuotaFailure violation per exceeded limit, and a RetryInfo
    when waiting helps with every one of them."""
    details: list[Any] = [error_details_pb2.QuotaFailure(violations=[
        error_details_pb2.QuotaFailure.Violation(subject=e.subject, description=e.description)
        for e in exceeded])]
    if all(e.retry for e in exceeded):
        details.append(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=QUEUE_RETRY_S)))
    return RpcFailure(_status(code_pb2.RESOURCE_EXHAUSTED,
                              message or "; ".join(e.description for e in exceeded), *details))


def _already_exists(name: str, message: str = "") -> RpcFailure:
    return RpcFailure(_status(code_pb2.ALREADY_EXISTS, message or f"{name} already exists",
                              error_details_pb2.ResourceInfo(
                                  resource_type=f"{DOMAIN}/{name.split('/')[0][:-1].title()}",
                                  resource_name=name)))


def not_owner(name: str, rec: RunRecord, caller: Caller, verb: str) -> RpcFailure:
    return RpcFailure(_status(
        code_pb2.PERMISSION_DENIED,
        f"{name} belongs to {rec.creator!r}; only its creator or an admin may {verb} it "
        f"(you are {caller.user!r})",
        error_details_pb2.ErrorInfo(reason="NOT_OWNER", domain=DOMAIN,
                                    metadata={"creator": rec.creator, "caller": caller.user,
                                              "resource": name})))


def _config_violations(exc: Exception, prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}.{e.path}" if prefix else e.path, e.reason)
            for e in getattr(exc, "errors", ())]


# ---- records -> messages ----------------------------------------------------------------

def _ts(ns: int | None) -> timestamp_pb2.Timestamp | None:
    if ns is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(ns))
    return t


def _run_id(name: str, field: str = "name", suffix: str = "") -> str:
    m = re.fullmatch(r"runs/([a-z0-9][a-z0-9-]{0,62})" + re.escape(suffix), name or "")
    if m is None:
        raise bad_request([(field, f"must be runs/{{run}}{suffix}, got {name!r}")])
    return m.group(1)


def _run_error(state: RunState, error_reason: str, error_message: str, interrupted: bool
               ) -> status_pb2.Status | None:
    """Run.error (and a state change's error) of a run in `state`: None but for CANCELLED
    and FAILED."""
    if state is RunState.CANCELLED:
        return _status(code_pb2.CANCELLED, error_message or "cancelled",
                       error_details_pb2.ErrorInfo(reason=(error_reason or
                                                           "cancelled").upper(),
                                                   domain=DOMAIN))
    if state is not RunState.FAILED:
        return None
    reason = _REASONS.get(error_reason, (error_reason or "failed").upper())
    return _status(_ERROR_CODES.get(error_reason, code_pb2.UNKNOWN), error_message,
                   error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN,
                                               metadata={"interrupted": str(interrupted)
                                                         .lower()}))


def _label_violations(labels: Mapping[str, str], field: str) -> list[tuple[str, str]]:
    """The labels of a run (or of all a sweep's runs): keys 1..63, values 0..63 characters."""
    return [(f"{field}[{k}]", "keys 1..63, values 0..63 characters")
            for k, v in labels.items() if not k or len(k) > 63 or len(v) > 63]


def _request_sweep_id(user: str, request_id: str) -> str:
    """The sweep id a CreateSweep with `request_id` and no sweep_id gets ("" without one):
    the same for a retry by the same user, so the retry finds it."""
    if not request_id:
        return ""
    return "r" + hashlib.sha256(f"{user}\0{request_id}".encode()).hexdigest()[:31]


def _sweep_id(name: str, field: str = "name") -> str:
    m = re.fullmatch(r"sweeps/([a-z0-9][a-z0-9-]{0,62})", name or "")
    if m is None:
        raise bad_request([(field, f"must be sweeps/{{sweep}}, got {name!r}")])
    return m.group(1)


def _offset_token(token: str) -> int:
    m = re.fullmatch(r"[0-9]{1,9}", token)   # ASCII digits only
    if token and m is None:
        raise bad_request([("page_token", "not a token this server issued")])
    return int(token) if token else 0


def _pieces(text: str, size: int) -> Iterable[str]:
    """`text` cut into pieces of at most `size` UTF-8 bytes, never inside a character."""
    data = text.encode()
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:   # a continuation byte
            end -= 1
        yield data[start:end].decode()
        start = end


def report_pieces(report: run_pb2.RunReport, size: int = REPORT_PIECE_BYTES
                  ) -> Iterable[run_pb2.RunReport]:
    """StreamRunReport's messages: name, summary and histograms first, then each procfs
    file, the trace and the fault log in pieces of at most `size` bytes of text."""
    yield run_pb2.RunReport(name=report.name, summary=report.summary,
                            histograms=report.histograms)
    for f in report.procfs_files:
        for text in _pieces(f.text, size) if f.text else [""]:
            yield run_pb2.RunReport(procfs_files=[run_pb2.ProcfsFile(name=f.name, text=text)])
    for text in _pieces(report.trace, size):
        yield run_pb2.RunReport(trace=text)
    for text in _pieces(report.fault_log, size):
        yield run_pb2.RunReport(fault_log=text)


def _canonical_sha256(spec: spec_pb2.Spec) -> str:
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in ("simpy", "numpy"):
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _code_version() -> str:
    try:
        return importlib.metadata.version("compactsim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _value_to_py(v: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(v)


def _py_to_value(x: Any) -> struct_pb2.Value:
    return json_format.ParseDict(x, struct_pb2.Value())


class Simulator(simulator_pb2_grpc.SimulatorServicer):
    """Thin handlers; the manager and store do the work."""

    def __init__(self, manager: RunManager, scenarios: Scenarios, traces: TraceStore, *,
                 executor_name: str = "process", auth: Authenticator | None = None,
                 limits: Limits | None = None):
        self.manager = manager
        self.store = manager.store
        self.scenarios = scenarios
        self.traces = traces
        self.executor_name = executor_name
        self.auth = auth or Authenticator()
        self.limits = limits or Limits()
        self.closing = False
        self._closed = asyncio.Event()
        self._effective: dict[str, spec_pb2.Spec] = {}
        self._changes = RunChanges()
        manager.add_listener(self._changes.notify)
        self._code_version = _code_version()
        self._versions = _versions()

    # -- plumbing --------------------------------------------------------------------------

    def refuse_new_runs(self) -> None:
        """CreateRun and CreateSweep answer UNAVAILABLE from now on."""
        self.closing = True

    def end_watches(self) -> None:
        """Open watch streams send the events already stored, then end (UNAVAILABLE)."""
        self.closing = True
        self._closed.set()
        self._changes.close()

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
            refuse(context, _status(code_pb2.UNAVAILABLE, f"store error: {exc}"))
        return None

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller | None:
        """The caller, or None with UNAUTHENTICATED set when the token that the interceptor
        let through was revoked since (SIGHUP)."""
        caller = self.auth.caller_of(context.invocation_metadata())
        if caller is None:
            refuse(context, _status(code_pb2.UNAUTHENTICATED,
                                    "unknown or revoked token (revoked during the call)"))
        return caller

    async def _call_as(self, context: grpc.aio.ServicerContext, fn: Callable, *args: Any
                       ) -> Any:
        """`_call(fn, *args, caller)` for an authenticated caller."""
        caller = self._caller(context)
        return None if caller is None else await self._call(context, fn, *args, caller)

    def _get(self, name: str, field: str = "name") -> RunRecord:
        run_id = _run_id(name, field)
        try:
            rec = self.store.get_run(run_id)
        except NotFound:
            raise not_found("Run", name) from None
        if rec.deleted:
            raise not_found("Run", name, f"{name} was deleted")
        return rec

    def _effective_spec(self, rec: RunRecord) -> spec_pb2.Spec:
        spec = self._effective.get(rec.id)
        if spec is None:
            try:
                spec = convert.spec_to_proto(convert.config_from_proto(spec_pb2.Spec(),
                                                                       base=rec.spec))
            except convert.ConfigError:
                spec = spec_pb2.Spec()
            if len(self._effective) > 10000:
                self._effective.clear()
            self._effective[rec.id] = spec
        return spec

    def _progress(self, rec: RunRecord, p: Mapping[str, Any] | None = None) -> run_pb2.Progress:
        duration = self._effective_spec(rec).duration_seconds
        if p is None:
            p = {"sim_time_s": rec.progress.sim_time_s, "fraction": rec.progress.fraction,
                 "events": rec.progress.events, "wall_s": rec.progress.wall_s}
        return run_pb2.Progress(sim_time_seconds=p["sim_time_s"], duration_seconds=duration,
                                fraction=p["fraction"], events=int(p["events"]),
                                wall_time_seconds=p["wall_s"])

    def run_to_proto(self, rec: RunRecord) -> run_pb2.Run:
        prov = rec.provenance
        run = run_pb2.Run(
            name=f"runs/{rec.id}", display_name=rec.display_name,
            scenario=f"scenarios/{rec.scenario}" if rec.scenario else "",
            effective_spec=self._effective_spec(rec), state=rec.state.proto,
            progress=self._progress(rec), labels=rec.labels, creator=rec.creator,
            sweep=f"sweeps/{rec.sweep_id}" if rec.sweep_id else "",
            provenance=run_pb2.Provenance(
                code_version=prov.get("code_version", ""), seed=int(prov.get("seed", 0)),
                spec_sha256=prov.get("spec_sha256", ""),
                library_versions=prov.get("library_versions", {}),
                executor=prov.get("executor", "")),
            create_time=_ts(rec.create_time_ns), start_time=_ts(rec.start_time_ns),
            end_time=_ts(rec.end_time_ns), update_time=_ts(rec.update_time_ns),
            delete_time=_ts(rec.delete_time_ns))
        json_format.ParseDict(prov.get("request_spec", {}), run.spec)
        if "request_spec" not in prov:
            run.ClearField("spec")
        err = _run_error(rec.state, rec.error_reason, rec.error_message, rec.interrupted)
        if err is not None:
            run.error.CopyFrom(err)
        if rec.summary is not None:
            run.summary.CopyFrom(convert.summary_to_struct(rec.summary))
        return run

    # -- specs ------------------------------------------------------------------------------

    def _scenario_raw(self, scenario: str, field: str) -> tuple[str, dict | None]:
        if not scenario:
            return "", None
        m = re.fullmatch(r"scenarios/([A-Za-z0-9_.-]+)", scenario)
        if m is None:
            raise bad_request([(field, f"must be scenarios/{{scenario}}, got {scenario!r}")])
        try:
            return m.group(1), self.scenarios.load(m.group(1))
        except convert.ConfigError as exc:
            raise not_found("Scenario", scenario, str(exc)) from None

    def _provenance(self, effective: spec_pb2.Spec, request_spec: spec_pb2.Spec | None
                    ) -> dict[str, Any]:
        prov = {"code_version": self._code_version, "seed": effective.seed,
                "spec_sha256": _canonical_sha256(effective),
                "library_versions": self._versions, "executor": self.executor_name}
        if request_spec is not None:
            prov["request_spec"] = json_format.MessageToDict(request_spec)
        return prov

    # -- quotas, limits, traces -------------------------------------------------------------

    def _replayed(self, effective: spec_pb2.Spec, prefix: str
                  ) -> tuple[list[tuple[str, str]], int]:
        """Field violations of the replay paths of an effective spec (each must name an
        uploaded trace) and the bytes of the traces it replays."""
        violations, size = [], 0
        for i, group in enumerate(effective.workload):
            if not group.HasField("replay"):
                continue
            try:
                size += self.traces.get(group.replay.path).size
            except TraceError as exc:
                violations.append((f"{prefix}.workload[{i}].replay.path", str(exc)))
        return violations, size

    def _run_exceeded(self, effective: spec_pb2.Spec, prefix: str, trace_bytes: int
                      ) -> list[Exceeded]:
        m = effective.machine
        sampling = effective.sampling
        return self.limits.run_exceeded(
            prefix, m.nodes, m.memory_bytes, effective.duration_seconds, trace_bytes,
            effective.pace, sampling.interval_seconds,
            sampling.trace_buffer if sampling.trace_events.names else 0)

    def _check_queue(self, user: str, adding: int) -> None:
        """The manager's queue check ahead of the work (and for validate_only); it checks
        again under its lock as it queues."""
        exceeded = self.manager.queue_exceeded(user, adding)
        if exceeded:
            raise quota(exceeded)

    # -- RPCs -------------------------------------------------------------------------------

    async def ListScenarios(self, request, context):
        return await self._call(context, self._list_scenarios, request)

    def _list_scenarios(self, request: simulator_pb2.ListScenariosRequest):
        if not 0 <= request.page_size <= 1000:
            raise bad_request([("page_size", "must be 0..1000")])
        names = sorted(self.scenarios.list().items())
        token = re.fullmatch(r"[0-9]{1,9}", request.page_token)   # ASCII digits only
        if request.page_token and token is None:
            raise bad_request([("page_token", "not a token this server issued")])
        start = int(request.page_token) if token else 0
        size = request.page_size or 100
        out = simulator_pb2.ListScenariosResponse()
        for name, title in names[start:start + size]:
            sc = out.scenarios.add(name=f"scenarios/{name}", title=title,
                                   description=self.scenarios.description(name))
            try:
                sc.spec.CopyFrom(convert.spec_from_dict(self.scenarios.load(name)))
            except convert.ConfigError:
                log.warning("scenario %s does not validate on its own", name)
        if start + size < len(names):
            out.next_page_token = str(start + size)
        return out

    def _scenario(self, name: str) -> simulator_pb2.Scenario:
        m = re.fullmatch(r"scenarios/([A-Za-z0-9_.-]+)", name)
        if m is None:
            raise bad_request([("name", f"must be scenarios/{{scenario}}, got {name!r}")])
        titles = self.scenarios.list()
        if m.group(1) not in titles:
            raise not_found("Scenario", name)
        sc = simulator_pb2.Scenario(name=name, title=titles[m.group(1)],
                                    description=self.scenarios.description(m.group(1)))
        try:
            sc.spec.CopyFrom(convert.spec_from_dict(self.scenarios.load(m.group(1))))
        except convert.ConfigError:
            log.warning("scenario %s does not validate on its own", m.group(1))
        return sc

    async def GetScenario(self, request, context):
        return await self._call(context, self._scenario, request.name)

    async def CreateRun(self, request, context):
        return await self._call_as(context, self._create_run, request)

    def _create_run(self, request: simulator_pb2.CreateRunRequest, caller: Caller
                    ) -> run_pb2.Run:
        if self.closing:
            raise unavailable("the server is shutting down; no new runs")
        run = request.run
        exceeded = limits.repeated_exceeded([
            ("run.labels", len(run.labels), limits.MAX_LABELS, "labels")])
        if exceeded:
            raise quota(exceeded)
        violations = []
        if len(request.request_id) > 128:
            violations.append(("request_id", "at most 128 characters (a UUID is 36)"))
        if request.run_id and not _RESOURCE_ID.fullmatch(request.run_id):
            violations.append(("run_id", "4..63 characters of [a-z0-9-], starting with a "
                                         "letter"))
        if len(run.display_name) > 200:
            violations.append(("run.display_name", "at most 200 characters"))
        violations += _label_violations(run.labels, "run.labels")
        if not run.scenario and not run.HasField("spec"):
            violations.append(("run.spec", "required unless run.scenario is set"))
        scenario, base = self._scenario_raw(run.scenario, "run.scenario")
        cfg = None
        if run.scenario or run.HasField("spec"):
            try:
                cfg = convert.config_from_proto(run.spec, base=base)
            except convert.ConfigError as exc:
                violations += _config_violations(exc, "run.spec")
        if violations:
            raise bad_request(violations)
        effective = convert.spec_to_proto(cfg)
        if request.request_id:   # a retry gets its run, whatever the limits say now
            old = self.store.find_by_request_id(caller.user, request.request_id)
            if old is not None:
                try:
                    check_same_request(old, NewRun(
                        spec=convert.raw_from_proto(effective), display_name=run.display_name,
                        scenario=scenario, labels=dict(run.labels), creator=caller.user,
                        request_id=request.request_id))
                except RequestIdConflict as exc:
                    raise _already_exists(f"runs/{old.id}", str(exc)) from None
                return self.run_to_proto(old)
        trace_violations, trace_bytes = self._replayed(effective, "run.spec")
        if trace_violations:
            raise bad_request(trace_violations)
        exceeded = self._run_exceeded(effective, "run.spec", trace_bytes)
        if exceeded:
            raise quota(exceeded)
        self._check_queue(caller.user, 1)
        given = run.spec if run.HasField("spec") else None
        prov = self._provenance(effective, given)
        if request.validate_only:
            return run_pb2.Run(
                name=f"runs/{request.run_id}" if request.run_id else "",
                display_name=run.display_name, scenario=run.scenario, spec=given,
                effective_spec=effective, state=RunState.QUEUED.proto, labels=run.labels,
                creator=caller.user, provenance=run_pb2.Provenance(
                    code_version=prov["code_version"], seed=effective.seed,
                    spec_sha256=prov["spec_sha256"], library_versions=self._versions,
                    executor=self.executor_name))
        if request.run_id:
            try:
                self.store.get_run(request.run_id)
                raise _already_exists(f"runs/{request.run_id}")
            except NotFound:
                pass
        try:
            rec = self.manager.submit(
                convert.raw_from_proto(effective), display_name=run.display_name,
                scenario=scenario, labels=dict(run.labels), provenance=prov,
                creator=caller.user, request_id=request.request_id or None,
                run_id=request.run_id or None)
        except QueueLimit as exc:
            raise quota(exc.exceeded, str(exc)) from None
        except RequestIdConflict as exc:
            raise RpcFailure(_status(code_pb2.ALREADY_EXISTS, str(exc))) from None
        except IdTaken:   # another CreateRun with this run_id got there first
            raise _already_exists(f"runs/{request.run_id}") from None
        except InvalidArgument as exc:
            raise bad_request([("run", str(exc))]) from None
        return self.run_to_proto(rec)

    async def GetRun(self, request, context):
        return await self._call(context, lambda: self.run_to_proto(self._get(request.name)))

    async def ListRuns(self, request, context):
        return await self._call(context, self._list_runs, request)

    def _list_runs(self, request: simulator_pb2.ListRunsRequest):
        if not 0 <= request.page_size <= 1000:
            raise bad_request([("page_size", "must be 0..1000")])
        runs: dict[str, run_pb2.Run] = {}

        def size(rec: RunRecord) -> int:
            runs[rec.id] = self.run_to_proto(rec)
            return runs[rec.id].ByteSize() + 8   # + field tag and length
        try:
            recs, token = self.store.list_runs(request.filter, request.order_by,
                                               request.page_size, request.page_token,
                                               show_deleted=request.show_deleted,
                                               weigh=size, max_weight=MAX_PAGE_BYTES)
            total = self.store.count_runs(request.filter, show_deleted=request.show_deleted)
        except QueryError as exc:
            raise bad_request([(exc.parameter, f"column {exc.column}: {exc.message}")],
                              f"{exc.parameter}: column {exc.column}: {exc.message}") from None
        except InvalidArgument as exc:
            raise bad_request([("page_token", str(exc))]) from None
        return simulator_pb2.ListRunsResponse(runs=[runs[r.id] for r in recs],
                                              next_page_token=token, total_size=total)

    async def CancelRun(self, request, context):
        return await self._call_as(context, self._cancel_run, request)

    def _own(self, name: str, caller: Caller, verb: str) -> RunRecord:
        """The run, if `caller` may change it: its creator or an admin."""
        rec = self._get(name)
        if rec.creator != caller.user and not caller.admin:
            raise not_owner(name, rec, caller, verb)
        return rec

    def _cancel_run(self, request: simulator_pb2.CancelRunRequest, caller: Caller):
        rec = self._own(request.name, caller, "cancel")
        try:
            return self.run_to_proto(self.manager.cancel(rec.id))
        except WrongState as exc:
            raise precondition(request.name, str(exc)) from None

    async def DeleteRun(self, request, context):
        return await self._call_as(context, self._delete_run, request)

    def _delete_run(self, request: simulator_pb2.DeleteRunRequest, caller: Caller):
        rec = self._own(request.name, caller, "delete")
        try:
            return self.run_to_proto(self.manager.delete(rec.id, force=request.force))
        except WrongState:
            raise precondition(request.name, f"{request.name} is {rec.state.value}; cancel "
                                             f"it first or delete with force") from None
        except TimeoutError:
            raise unavailable(f"{request.name} is still stopping; try again") from None

    async def ListRunSamples(self, request, context):
        return await self._call(context, self._list_samples, request)

    def _list_samples(self, request: simulator_pb2.ListRunSamplesRequest):
        rec = self._get(request.parent, "parent")
        if not 0 <= request.page_size <= 10000:
            raise bad_request([("page_size", "must be 0..10000")])
        try:
            width = len(request.columns) or None   # values per sample sent
            samples, token = self.store.list_samples(
                rec.id, request.page_size, request.page_token, request.max_points,
                weigh=lambda smp: 9 * (width or len(smp.row)) + 16,   # packed doubles
                max_weight=MAX_PAGE_BYTES)
        except InvalidArgument as exc:
            field = "page_token" if "token" in str(exc) else "max_points"
            raise bad_request([(field, str(exc))]) from None
        columns = list(dict.fromkeys(k for s in samples for k in s.row if k != "time_s"))
        if request.columns:
            known = set(columns)
            unknown = [(f"columns[{i}]", f"unknown column {c!r}")
                       for i, c in enumerate(request.columns) if c not in known]
            if unknown and samples:
                raise bad_request(unknown)
            columns = list(request.columns)
        out = simulator_pb2.ListRunSamplesResponse(columns=columns, next_page_token=token)
        for s in samples:
            out.samples.add(time_seconds=s.sim_time_s,
                            values=[float(s.row.get(c, float("nan"))) for c in columns])
        if not request.page_token and not token:
            out.total_size = len(samples)
        return out

    async def GetRunReport(self, request, context):
        return await self._call(context, self._get_report, request)

    def _get_report(self, request: simulator_pb2.GetRunReportRequest):
        run_id = _run_id(request.name, suffix="/report")
        rec = self._get(f"runs/{run_id}")
        if rec.state is not RunState.SUCCEEDED:
            raise precondition(f"runs/{run_id}", f"runs/{run_id} is {rec.state.value}; only "
                                                 f"a SUCCEEDED run has a report")
        reports = self.store.get_reports(rec.id)
        full = request.view == run_pb2.RUN_REPORT_VIEW_FULL
        return run_pb2.RunReport(
            name=request.name, summary=convert.summary_to_struct(rec.summary or {}),
            procfs_files=[run_pb2.ProcfsFile(name=k[5:], text=v) for k, v in reports.items()
                          if k.startswith("proc/")],
            histograms=convert.histograms_from_message(
                json.loads(reports.get(REPORT_HISTOGRAMS, "{}"))),
            trace=reports.get("trace", "") if full else "",
            fault_log=reports.get("fault_log", "") if full else "")

    async def StreamRunReport(self, request, context):
        report = await self._call(context, self._get_report, request)
        for piece in report_pieces(report):
            yield piece

    # -- WatchRun ---------------------------------------------------------------------------

    async def WatchRun(self, request, context):
        """Backpressure: grpc.aio applies HTTP/2 flow control to a server stream. When the
        watcher does not read, the handler stays suspended at its `yield` once the stream's
        window is used up. Measured with grpc 1.85 on loopback: a stream takes about 4 MiB,
        which sits in the client's transport buffers, and the server's resident memory stays
        flat, for a held, unread call and for a stopped client process alike. So a slow
        watcher never makes the server queue events: a stalled stream holds at most the
        batch it was sending (up to 200 events)."""
        rec = await self._call(context, self._get, request.name)
        if rec is None:
            return
        heartbeat = (request.heartbeat_interval_seconds
                     if request.HasField("heartbeat_interval_seconds") else DEFAULT_HEARTBEAT_S)
        if not 1 <= heartbeat <= 300:
            refuse(context, bad_request([("heartbeat_interval_seconds",
                                          "must be 1..300")]).status)
            return
        if request.HasField("after_sequence") and request.after_sequence < 0:
            refuse(context, bad_request([("after_sequence", "must be >= 0")]).status)
            return
        snapshot = await asyncio.to_thread(self.run_to_proto, rec)
        yield simulator_pb2.WatchRunResponse(snapshot=snapshot, sequence=rec.last_sequence)
        if request.HasField("after_sequence"):
            seq = min(request.after_sequence, rec.last_sequence)
        else:
            seq = rec.last_sequence
            if rec.state.terminal:
                return
        state = await asyncio.to_thread(self._state_at, rec.id, seq)
        last_sent = time.monotonic()
        # Waiting happens on the loop (server.changes), not in a thread: an idle stream
        # holds no thread of the pool the other RPCs run in.
        self._changes.attach(asyncio.get_running_loop())
        with self._changes.watching(rec.id):
            while True:
                closed = self._closed.is_set()   # shutting down: send what is stored, end
                version = self._changes.version(rec.id)
                events, now_rec = await asyncio.to_thread(self._events_or_run, rec.id, seq)
                if closed and not events:
                    refuse(context, unavailable().status)
                    return
                for ev in events:
                    msg, state = self._event_to_proto(rec, ev, state)
                    seq = ev.sequence
                    yield simulator_pb2.WatchRunResponse(event=msg, sequence=seq)
                    last_sent = time.monotonic()
                    if ev.type == "state" and RunState(ev.payload["state"]).terminal:
                        return
                if events:
                    continue
                if now_rec.state.terminal and now_rec.last_sequence <= seq:
                    return
                if time.monotonic() - last_sent >= heartbeat:
                    yield simulator_pb2.WatchRunResponse(heartbeat=simulator_pb2.Heartbeat(),
                                                         sequence=seq)
                    last_sent = time.monotonic()
                due = heartbeat - (time.monotonic() - last_sent)
                await self._changes.wait(rec.id, version, min(due, WATCH_RECHECK_S))

    def _events_or_run(self, run_id: str, seq: int) -> tuple[list, RunRecord | None]:
        """The run's events after `seq` (at most 200), or, when there are none, the run."""
        events = self.store.events_after(run_id, seq, 200)
        return events, None if events else self.store.get_run(run_id)

    def _state_at(self, run_id: str, seq: int) -> int:
        state, after = run_pb2.Run.STATE_UNSPECIFIED, 0
        while after < seq:
            events = self.store.events_after(run_id, after, min(1000, seq - after))
            if not events:
                break
            for ev in events:
                if ev.type == "state":
                    state = RunState(ev.payload["state"]).proto
            after = events[-1].sequence
        return state

    def _event_to_proto(self, rec: RunRecord, ev: Any, previous: int
                        ) -> tuple[run_pb2.RunEvent, int]:
        msg = run_pb2.RunEvent(sequence=ev.sequence, event_time=_ts(ev.time_ns))
        if ev.type == "state":
            new = RunState(ev.payload["state"]).proto
            msg.state_change.previous_state = previous
            msg.state_change.state = new
            err = _run_error(RunState(ev.payload["state"]), ev.payload.get("error_reason", ""),
                             ev.payload.get("error_message", ""),
                             ev.payload.get("interrupted", False))
            if err is not None:
                msg.state_change.error.CopyFrom(err)
            return msg, new
        if ev.type == "progress":
            msg.progress.CopyFrom(self._progress(rec, ev.payload))
        return msg, previous

    # -- sweeps -----------------------------------------------------------------------------

    async def CreateSweep(self, request, context):
        return await self._call_as(context, self._create_sweep, request)

    def _sweep_of_request(self, request: simulator_pb2.CreateSweepRequest, caller: Caller
                          ) -> str | None:
        """The id of the sweep `request` is a retry of, if any: a request_id names a sweep
        by its creator and request (`sweep_id`, or an id derived from both) whose grid
        records that request_id."""
        sweep_id = request.sweep_id or _request_sweep_id(caller.user, request.request_id)
        try:
            rec = self.store.get_sweep(sweep_id)
        except NotFound:
            return None
        if rec.creator == caller.user and rec.grid.get("request_id") == request.request_id:
            return sweep_id
        return None

    def _create_sweep(self, request: simulator_pb2.CreateSweepRequest, caller: Caller):
        if self.closing:
            raise unavailable("the server is shutting down; no new runs")
        if len(request.request_id) > 128:
            raise bad_request([("request_id", "at most 128 characters (a UUID is 36)")])
        if request.request_id and not request.validate_only:
            earlier = self._sweep_of_request(request, caller)
            if earlier is not None:
                return self._sweep_to_proto(earlier)
        sw = request.sweep
        exceeded = limits.repeated_exceeded([
            ("sweep.labels", len(sw.labels), limits.MAX_LABELS, "labels"),
            ("sweep.parameters", len(sw.parameters), limits.MAX_SWEEP_PARAMETERS,
             "parameters"),
            ("sweep.metrics", len(sw.metrics), limits.MAX_SWEEP_METRICS, "metrics"),
            *((f"sweep.parameters[{i}].values", len(p.values), limits.MAX_SWEEP_VALUES,
               "values") for i, p in enumerate(sw.parameters)),
            ("sweep.arms", len(sw.arms), sweeps.MAX_ARMS, "arms"),
            *((f"sweep.arms[{i}].values", len(a.values), limits.MAX_SWEEP_PARAMETERS,
               "values") for i, a in enumerate(sw.arms))])
        if exceeded:
            raise quota(exceeded)
        violations = []
        if request.sweep_id and not _RESOURCE_ID.fullmatch(request.sweep_id):
            violations.append(("sweep_id", "4..63 characters of [a-z0-9-], starting with a "
                                           "letter"))
        violations += _label_violations(sw.labels, "sweep.labels")   # every run gets them
        if not sw.scenario and not sw.HasField("base_spec"):
            violations.append(("sweep.base_spec", "required unless sweep.scenario is set"))
        scenario, base = self._scenario_raw(sw.scenario, "sweep.scenario")
        base_raw = None
        try:
            cfg = convert.config_from_proto(sw.base_spec, base=base)
            base_raw = convert.raw_from_proto(convert.spec_to_proto(cfg))
        except convert.ConfigError as exc:
            violations += _config_violations(exc, "sweep.base_spec")
        params = []
        for i, p in enumerate(sw.parameters):
            values = []
            for j, v in enumerate(p.values):
                try:
                    values.append(_value_to_py(v))
                except ValueError:   # NaN or an infinity, at any depth: no JSON form
                    violations.append((f"sweep.parameters[{i}].values[{j}]",
                                       "must not hold NaN or an infinity"))
            params.append((p.path, values))
        arms = []
        for i, arm in enumerate(sw.arms):
            values = {}
            for path, v in arm.values.items():
                try:
                    values[path] = _value_to_py(v)
                except ValueError:
                    violations.append((f"sweep.arms[{i}].values[{path!r}]",
                                       "must not hold NaN or an infinity"))
            arms.append((arm.name, values))
        if arms and params:
            violations.append(("sweep.arms", "an experiment has arms or a grid "
                                             "(parameters), not both"))
        if sw.baseline and not arms:
            violations.append(("sweep.baseline", "only an experiment (arms) has a baseline"))
        if violations:
            raise bad_request(violations)
        try:
            points = (sweeps.expand_arms(base_raw, arms, sw.seeds or 1, sw.baseline) if arms
                      else sweeps.expand(base_raw, params, sw.seeds or 1))
        except convert.ConfigError as exc:
            raise bad_request(_config_violations(exc, "sweep")) from None
        runs: list[tuple[sweeps.Point, dict, spec_pb2.Spec]] = []
        exceeded = []
        for pt in points:
            names = ", ".join(f"{p}={json.dumps(v)}" for p, v in pt.values.items())
            where = (f"sweep.arms[{pt.index}].values ({names})" if pt.arm
                     else f"sweep.parameters ({names})")
            for raw in pt.specs:
                try:
                    eff = convert.spec_to_proto(convert.config_from_proto(spec_pb2.Spec(),
                                                                          base=raw))
                except convert.ConfigError as exc:
                    raise bad_request([(f"{where}: {f}", d)
                                       for f, d in _config_violations(exc, "spec")]) from None
                trace_violations, trace_bytes = self._replayed(eff, "spec")
                if trace_violations:
                    raise bad_request([(f"{where}: {f}", d)
                                       for f, d in trace_violations])
                exceeded += [e for e in self._run_exceeded(eff, f"{where}: "
                                                               f"spec", trace_bytes)
                             if e not in exceeded]
                runs.append((pt, raw, eff))
        if exceeded:
            raise quota(exceeded)
        self._check_queue(caller.user, len(runs))
        if request.validate_only:
            return sweep_pb2.Sweep(display_name=sw.display_name, scenario=sw.scenario,
                                   base_spec=sw.base_spec, parameters=sw.parameters,
                                   seeds=sw.seeds or 1, metrics=sw.metrics, labels=sw.labels,
                                   arms=sw.arms, baseline=sw.baseline or (
                                       arms[0][0] if arms else ""),
                                   state=sweep_pb2.Sweep.RUNNING, creator=caller.user)
        grid = {"scenario": scenario, "parameters": [{"path": p, "values": v} for p, v in params],
                "seeds": sw.seeds or 1, "metrics": list(sw.metrics), "labels": dict(sw.labels),
                "base_spec": json_format.MessageToDict(sw.base_spec),
                "points": [{"index": p.index, "values": p.values, "arm": p.arm}
                           for p in points],
                "request_id": request.request_id}
        if arms:
            grid["arms"] = [{"name": n, "values": v} for n, v in arms]
            grid["baseline"] = sw.baseline or arms[0][0]
        # the sweep and all its runs are stored in one transaction, or nothing is: its runs
        # name it, so its id is chosen here (as the store would: a fresh one)
        sweep_id = (request.sweep_id or _request_sweep_id(caller.user, request.request_id)
                    or uuid.uuid4().hex)
        new_runs = [NewRun(spec=convert.raw_from_proto(eff),
                           display_name=f"{sw.display_name or sweep_id} "
                                        f"{pt.arm or f'#{pt.index}'} seed {eff.seed}",
                           scenario=scenario,
                           labels={**sw.labels, "sweep": sweep_id, "sweep_point": str(pt.index)},
                           provenance=self._provenance(eff, None), creator=caller.user)
                    for pt, _, eff in runs]
        try:
            rec, _ = self.manager.submit_sweep(base_raw, grid, new_runs,
                                               display_name=sw.display_name,
                                               creator=caller.user, sweep_id=sweep_id)
        except QueueLimit as exc:
            raise quota(exc.exceeded, str(exc)) from None
        except InvalidArgument as exc:
            earlier = self._sweep_of_request(request, caller) if request.request_id else None
            if earlier is not None:   # a retry that raced the first request
                return self._sweep_to_proto(earlier)
            raise RpcFailure(_status(code_pb2.ALREADY_EXISTS, str(exc))) from None
        return self._sweep_to_proto(rec.id)

    async def GetSweep(self, request, context):
        return await self._call(context, self._get_sweep, request)

    def _get_sweep(self, request: simulator_pb2.GetSweepRequest):
        return self._sweep_to_proto(_sweep_id(request.name))

    async def ListSweeps(self, request, context):
        return await self._call(context, self._list_sweeps, request)

    def _list_sweeps(self, request: simulator_pb2.ListSweepsRequest):
        if not 0 <= request.page_size <= 1000:
            raise bad_request([("page_size", "must be 0..1000")])
        start = _offset_token(request.page_token)
        sweeps_ = self.store.list_sweeps(show_deleted=request.show_deleted)
        out = simulator_pb2.ListSweepsResponse()
        size, end = 0, start
        for rec in sweeps_[start:start + (request.page_size or 50)]:
            sw = self._sweep_to_proto(rec.id, show_deleted=True)
            for pt in sw.points:
                pt.ClearField("aggregates")
            size += sw.ByteSize() + 8
            if size > MAX_PAGE_BYTES and end > start:
                break
            out.sweeps.append(sw)
            end += 1
        if end < len(sweeps_):
            out.next_page_token = str(end)
        return out

    def _own_sweep(self, name: str, caller: Caller, verb: str):
        sweep_id = _sweep_id(name)
        try:
            rec = self.store.get_sweep(sweep_id)
        except NotFound:
            raise not_found("Sweep", name) from None
        if rec.deleted:
            raise not_found("Sweep", name, f"{name} was deleted")
        if rec.creator != caller.user and not caller.admin:
            raise not_owner(name, rec, caller, verb)
        return rec

    async def CancelSweep(self, request, context):
        return await self._call_as(context, self._cancel_sweep, request)

    def _cancel_sweep(self, request: simulator_pb2.CancelSweepRequest, caller: Caller):
        rec = self._own_sweep(request.name, caller, "cancel")
        for run in self.store.sweep_runs(rec.id):
            if not run.state.terminal:
                try:
                    self.manager.cancel(run.id)
                except WrongState:   # it ended meanwhile
                    pass
        return self._sweep_to_proto(rec.id)

    async def DeleteSweep(self, request, context):
        return await self._call_as(context, self._delete_sweep, request)

    def _delete_sweep(self, request: simulator_pb2.DeleteSweepRequest, caller: Caller):
        rec = self._own_sweep(request.name, caller, "delete")
        runs = self.store.sweep_runs(rec.id)
        running = [f"runs/{r.id}" for r in runs if not r.state.terminal]
        if running and not request.force:
            raise precondition(request.name, f"{request.name} has {len(running)} runs that "
                                             f"have not ended ({', '.join(running[:3])}...); "
                                             f"cancel it first or delete with force")
        try:
            for run in runs:
                self.manager.delete(run.id, force=request.force)
        except WrongState as exc:
            raise precondition(request.name, str(exc)) from None
        except TimeoutError:
            raise unavailable(f"{request.name} has runs still stopping; try again") from None
        self.store.soft_delete_sweep(rec.id)
        return self._sweep_to_proto(rec.id, show_deleted=True)

    def _sweep_to_proto(self, sweep_id: str, show_deleted: bool = False) -> sweep_pb2.Sweep:
        try:
            rec = self.store.get_sweep(sweep_id)
            runs = self.store.sweep_runs(sweep_id)
        except NotFound:
            raise not_found("Sweep", f"sweeps/{sweep_id}") from None
        if rec.deleted and not show_deleted:
            raise not_found("Sweep", f"sweeps/{sweep_id}")
        grid = rec.grid
        out = sweep_pb2.Sweep(
            name=f"sweeps/{rec.id}", display_name=rec.display_name,
            scenario=f"scenarios/{grid['scenario']}" if grid.get("scenario") else "",
            seeds=grid["seeds"], metrics=grid["metrics"], labels=grid["labels"],
            creator=rec.creator, create_time=_ts(rec.create_time_ns))
        json_format.ParseDict(grid.get("base_spec", {}), out.base_spec)
        for p in grid["parameters"]:
            out.parameters.add(path=p["path"], values=[_py_to_value(v) for v in p["values"]])
        for a in grid.get("arms", []):
            arm = out.arms.add(name=a["name"])
            for k, v in a["values"].items():
                arm.values[k].CopyFrom(_py_to_value(v))
        out.baseline = grid.get("baseline", "")
        by_point: dict[str, list[RunRecord]] = {}
        for r in runs:
            by_point.setdefault(r.labels.get("sweep_point", ""), []).append(r)
        succeeded = [r.summary for r in runs if r.state is RunState.SUCCEEDED and r.summary]
        metrics = grid["metrics"] or sweeps.default_metrics(succeeded)
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        out.run_state_counts.update(counts)
        for p in grid["points"]:
            prs = sorted(by_point.get(str(p["index"]), []),
                         key=lambda r: int(r.provenance.get("seed", 0)))
            pt = out.points.add(index=p["index"], runs=[f"runs/{r.id}" for r in prs],
                                run_states=[r.state.proto for r in prs],
                                arm=p.get("arm", ""))
            for k, v in p["values"].items():
                pt.values[k].CopyFrom(_py_to_value(v))
            aggs = sweeps.aggregates([r.summary for r in prs if r.state is RunState.SUCCEEDED
                                      and r.summary], metrics)
            for k, a in aggs.items():
                pt.aggregates[k].CopyFrom(sweep_pb2.Aggregate(
                    count=a.count, mean=a.mean, stddev=a.stddev, min=a.min, max=a.max))
        if grid.get("arms"):
            out.experiment.CopyFrom(self._experiment(grid, by_point))
        out.state = sweep_pb2.Sweep.State.Value(sweeps.sweep_state([r.state for r in runs]))
        if out.state != sweep_pb2.Sweep.RUNNING and runs:
            out.end_time.CopyFrom(_ts(max(r.end_time_ns or 0 for r in runs)))
        return out

    @staticmethod
    def _experiment(grid: Mapping[str, Any], by_point: Mapping[str, list[RunRecord]]
                    ) -> sweep_pb2.Experiment:
        """The statistics of an experiment's SUCCEEDED runs (codec/stats.py, the numbers
        every client shows), restricted to the sweep's metrics when it names some."""
        # numpy and scipy only here: imported with the server they would weigh on every
        # worker, which the forkserver starts from the server's main module
        from compactsim.codec.stats import ArmRun
        from compactsim.codec.stats import experiment as experiment_stats
        arm_of = {str(p["index"]): p["arm"] for p in grid["points"]}
        runs = [ArmRun(arm_of[point], int(r.provenance.get("seed", 0)), r.summary)
                for point, rs in by_point.items() if point in arm_of
                for r in rs if r.state is RunState.SUCCEEDED and r.summary]
        result = experiment_stats(runs, [a["name"] for a in grid["arms"]], grid["baseline"])
        if grid["metrics"]:
            keep = set(grid["metrics"])
            result["metrics"] = [m for m in result["metrics"] if m["metric"] in keep]
        return convert.experiment_to_proto(result)

    # -- traces -----------------------------------------------------------------------------

    @staticmethod
    def _trace_to_proto(info: TraceInfo) -> trace_pb2.Trace:
        return trace_pb2.Trace(name=info.name, size_bytes=info.size,
                               create_time=_ts(info.create_time_ns))

    async def UploadTrace(self, request_iterator, context):
        """Chunks are written as they come (a write of at most one message's bytes) and the
        partial file is removed on every way out but success, including a client that goes
        away and one that sends nothing for `limits.trace_idle_timeout_s`. The upload
        counts against its user's quota; a token revoked meanwhile stores nothing."""
        caller = self._caller(context)
        if caller is None:
            return None
        upload = None
        idle = self.limits.trace_idle_timeout_s
        try:
            upload = self.traces.upload(caller.user)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(idle) as deadline:   # re-armed by each chunk
                async for request in request_iterator:
                    upload.write(request.chunk)
                    deadline.reschedule(loop.time() + idle)
            if self._caller(context) is None:   # revoked during the upload
                return None
            return self._trace_to_proto(await asyncio.to_thread(upload.commit))
        except TimeoutError:
            refuse(context, _status(code_pb2.DEADLINE_EXCEEDED, (
                f"no chunk for {idle:g} s: the upload was dropped and nothing kept "
                f"(--trace-idle-timeout)")))
        except TraceTooLarge:
            refuse(context, quota(self.limits.trace_exceeded(upload.size)).status)
        except TraceQuotaExceeded as exc:
            refuse(context, quota([Exceeded(limits.user_subject(exc.user), str(exc),
                                            exc.retry)]).status)
        except TraceError as exc:
            refuse(context, bad_request([("chunk", str(exc))]).status)
        except OSError as exc:
            log.exception("storing an uploaded trace")
            refuse(context, _status(code_pb2.UNAVAILABLE, f"cannot store the trace: "
                                                          f"{exc.strerror or exc}"))
        finally:
            if upload is not None:
                upload.discard()
        return None

    async def DeleteTrace(self, request, context):
        return await self._call_as(context, self._delete_trace, request)

    def _delete_trace(self, request: trace_pb2.DeleteTraceRequest, caller: Caller):
        try:
            self.traces.delete(request.name, caller.user, caller.admin)
        except TraceNotFound as exc:
            raise not_found("Trace", request.name, str(exc)) from None
        except TraceError as exc:
            raise bad_request([("name", str(exc))]) from None
        return empty_pb2.Empty()

    async def GetTrace(self, request, context):
        return await self._call(context, self._get_trace, request)

    async def ListTraces(self, request, context):
        return await self._call(context, self._list_traces, request)

    def _list_traces(self, request: simulator_pb2.ListTracesRequest):
        if not 0 <= request.page_size <= 1000:
            raise bad_request([("page_size", "must be 0..1000")])
        after = request.page_token
        if after and not re.fullmatch(r"traces/[0-9a-f]{64}", after):
            raise bad_request([("page_token", "not a token this server issued")])
        size = request.page_size or 100
        infos = self.traces.list(after=after, limit=size + 1)
        out = simulator_pb2.ListTracesResponse(
            traces=[self._trace_to_proto(i) for i in infos[:size]])
        if len(infos) > size:
            out.next_page_token = infos[size - 1].name
        return out

    def _get_trace(self, request: trace_pb2.GetTraceRequest) -> trace_pb2.Trace:
        try:
            return self._trace_to_proto(self.traces.get(request.name))
        except TraceNotFound:
            raise not_found("Trace", request.name) from None
        except TraceError as exc:
            raise bad_request([("name", str(exc))]) from None
