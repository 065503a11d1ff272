"""A typed Python client of the `compactsim.v1.Simulator` service.

    from compactsim.client.api import Client, ClientError

    with Client("127.0.0.1:50051") as c:    # token=..., ca_cert=... for a lab server
        run = c.create_run(scenario="zram-movable-ops", overrides=["duration=2s"])
        for msg in c.watch(run.name):
            ...
        print(c.get_run(run.name).summary)

Methods mirror the RPCs with plain Python arguments and return the generated messages
(`compactsim.proto.v1`). Run and sweep names are accepted as `runs/ID` or a bare `ID`.
Every RPC error is raised as `ClientError(code, message, field_violations)`, with the
google.rpc.BadRequest field violations (and other details) decoded from the status.

A spec can be given as a dict (raw spec data as in a YAML spec file), a
`sim.config.SimConfig` or a `spec_pb2.Spec`. Dicts and overrides are validated here,
before anything is sent (`compactsim.sim.config` and the spec codec `compactsim.codec.spec`,
imported only when needed);
their errors are raised as INVALID_ARGUMENT `ClientError`s naming `spec.<field path>`,
the same form the server uses.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from compactsim.client.channel import open_channel
from compactsim.codec.runstate import TERMINAL_PROTO
from compactsim.proto.v1 import (
    run_pb2,
    simulator_pb2,
    simulator_pb2_grpc,
    spec_pb2,
    sweep_pb2,
    trace_pb2,
)

RUN_STATE = run_pb2.Run.State
# Bytes per UploadTrace message (the server takes up to 1 MiB).
UPLOAD_CHUNK = 256 << 10
# Seconds an upload may take per MiB, beyond the client's timeout.
UPLOAD_S_PER_MIB = 1.0
TERMINAL_STATES = TERMINAL_PROTO


@dataclass
class FieldViolation:
    """One bad field: its path (e.g. `spec.workload[0].rate`) and why."""

    field: str
    description: str


@dataclass
class ClientError(Exception):
    """A failed call: the gRPC status code, the message, and the decoded details."""

    code: grpc.StatusCode
    message: str
    field_violations: list[FieldViolation] = field(default_factory=list)
    # Other details by type name ("ErrorInfo", "PreconditionFailure", ...), as dicts.
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> ClientError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else str(err)) or ""
        violations: list[FieldViolation] = []
        details: dict[str, Any] = {}
        try:
            status = rpc_status.from_call(err)   # type: ignore[arg-type]
        except (ValueError, AttributeError):
            status = None
        if status is not None:
            message = status.message or message
            for any_detail in status.details:
                if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    any_detail.Unpack(br)
                    violations.extend(FieldViolation(v.field, v.description)
                                      for v in br.field_violations)
                    continue
                name = any_detail.TypeName().rsplit(".", 1)[-1]
                msg_cls = getattr(error_details_pb2, name, None)
                if msg_cls is not None:
                    msg = msg_cls()
                    any_detail.Unpack(msg)
                    details[name] = MessageToDict(msg, preserving_proto_field_name=True)
        return cls(code, message, violations, details)


def join_report(pieces: Iterable[run_pb2.RunReport]) -> run_pb2.RunReport:
    """StreamRunReport's pieces put together: a procfs file named as the one before
    continues it, trace and fault log pieces append."""
    out = run_pb2.RunReport()
    trace: list[str] = []
    faults: list[str] = []
    for piece in pieces:
        if piece.name:
            out.name = piece.name
        if piece.HasField("summary"):
            out.summary.CopyFrom(piece.summary)
        out.histograms.extend(piece.histograms)
        for f in piece.procfs_files:
            if out.procfs_files and out.procfs_files[-1].name == f.name:
                out.procfs_files[-1].text += f.text
            else:
                out.procfs_files.add(name=f.name, text=f.text)
        trace.append(piece.trace)
        faults.append(piece.fault_log)
    out.trace = "".join(trace)
    out.fault_log = "".join(faults)
    return out


def _invalid_spec(exc: Exception, prefix: str = "spec") -> ClientError:
    """A local ConfigError as the INVALID_ARGUMENT the server would send."""
    from compactsim.codec.spec import proto_path
    violations = []
    for e in getattr(exc, "errors", []):
        path = proto_path(e.path) if e.path else ""
        violations.append(FieldViolation(f"{prefix}.{path}" if path else prefix, e.reason))
    return ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"invalid spec: {', '.join(v.field for v in violations)}", violations)


def run_name(run: str) -> str:
    """`ID` or `runs/ID` -> `runs/ID`."""
    return run if run.startswith("runs/") else f"runs/{run}"


def sweep_name(sweep: str) -> str:
    """`ID` or `sweeps/ID` -> `sweeps/ID`."""
    return sweep if sweep.startswith("sweeps/") else f"sweeps/{sweep}"


def scenario_name(scenario: str) -> str:
    return scenario if scenario.startswith("scenarios/") else f"scenarios/{scenario}"


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct (e.g. Run.summary) as plain data; whole-number doubles become ints (a
    Struct has only doubles), so counters read as in the `simulate` JSON."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return fix(MessageToDict(struct))


def to_value(v: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if v is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        value.bool_value = v
    elif isinstance(v, (int, float)):
        value.number_value = float(v)
    else:
        value.string_value = str(v)
    return value


def spec_message(spec: Any) -> spec_pb2.Spec:
    """A Spec from a dict (raw spec data), a SimConfig or a Spec; a dict is validated
    (ClientError INVALID_ARGUMENT naming `spec.<path>`)."""
    if isinstance(spec, spec_pb2.Spec):
        return spec
    from compactsim.codec.spec import spec_from_dict, spec_to_proto
    from compactsim.sim.schema import ConfigError
    if isinstance(spec, Mapping):
        try:
            return spec_from_dict(spec)
        except ConfigError as exc:
            raise _invalid_spec(exc) from exc
    return spec_to_proto(spec)


def spec_dict(spec: spec_pb2.Spec) -> dict[str, Any]:
    """The fields `spec` sets, as raw spec data with the config's names."""
    from compactsim.codec.spec import raw_from_proto
    return raw_from_proto(spec)


def effective_spec_dict(run: run_pb2.Run) -> dict[str, Any]:
    """A run's effective spec as `simulate --out` writes spec.json (config_to_dict)."""
    from compactsim.codec.spec import config_from_proto
    from compactsim.sim.config import config_to_dict
    return config_to_dict(config_from_proto(run.effective_spec))


class Client:
    """A connection to a compactsim server. `timeout` (seconds) bounds every unary call;
    streams (`watch`) have no deadline."""

    def __init__(self, address: str, *, timeout: float = 30.0,
                 channel: grpc.Channel | None = None, token: str | None = None,
                 ca_cert: str | None = None, server_name: str | None = None):
        self.address = address
        self.timeout = timeout
        self._channel = channel or open_channel(address, token=token, ca_cert=ca_cert,
                                                server_name=server_name)
        self._stub = simulator_pb2_grpc.SimulatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ClientError.from_rpc_error(err) from None

    # ---- scenarios -------------------------------------------------------------------

    def list_scenarios(self) -> list[simulator_pb2.Scenario]:
        out: list[simulator_pb2.Scenario] = []
        token = ""
        while True:
            resp = self._call("ListScenarios",
                              simulator_pb2.ListScenariosRequest(page_token=token))
            out.extend(resp.scenarios)
            token = resp.next_page_token
            if not token:
                return out

    def get_scenario(self, name: str) -> simulator_pb2.Scenario:
        """A preset by name; NOT_FOUND ClientError if the server has no such preset."""
        return self._call("GetScenario",
                          simulator_pb2.GetScenarioRequest(name=scenario_name(name)))

    def resolve_spec(self, *, scenario: str | None = None, spec: Any = None,
                     overrides: Sequence[str] = ()) -> tuple[str, spec_pb2.Spec | None]:
        """(scenario name or "", Spec or None) for a run: `overrides` (`path=value`, as
        `--set`) apply to the scenario's spec as the server has it, or to `spec` (a dict).
        With a scenario, the Spec sent is the scenario with the overrides applied (the
        server merges it over the preset: the same result, lists included)."""
        if not overrides:
            return (scenario_name(scenario) if scenario else "",
                    None if spec is None else spec_message(spec))
        from compactsim.sim.config import apply_overrides
        from compactsim.sim.schema import ConfigError
        if scenario:
            base = spec_dict(self.get_scenario(scenario).spec)
            if spec is not None:
                from compactsim.codec.spec import merge_raw
                over = spec if isinstance(spec, Mapping) else spec_dict(spec_message(spec))
                base = merge_raw(base, over)
        elif isinstance(spec, Mapping):
            base = dict(spec)
        elif spec is not None:
            base = spec_dict(spec_message(spec))
        else:
            base = {}
        try:
            raw = apply_overrides(base, overrides)
        except ConfigError as exc:
            raise _invalid_spec(exc) from exc
        return (scenario_name(scenario) if scenario else "", spec_message(raw))

    # ---- runs ------------------------------------------------------------------------

    def create_run(self, spec: Any = None, *, scenario: str | None = None,
                   overrides: Sequence[str] = (), display_name: str = "",
                   labels: Mapping[str, str] | None = None, run_id: str = "",
                   request_id: str | None = None, validate_only: bool = False) -> run_pb2.Run:
        """Create (queue) a run of `spec` and/or `scenario` with `overrides`. A
        request_id is made up when not given, so a retry of this call is idempotent."""
        scen, msg = self.resolve_spec(scenario=scenario, spec=spec, overrides=overrides)
        run = run_pb2.Run(scenario=scen, display_name=display_name, labels=dict(labels or {}))
        if msg is not None:
            run.spec.CopyFrom(msg)
        req = simulator_pb2.CreateRunRequest(run=run, run_id=run_id,
                                             request_id=request_id or str(uuid.uuid4()),
                                             validate_only=validate_only)
        return self._call("CreateRun", req)

    def get_run(self, run: str) -> run_pb2.Run:
        return self._call("GetRun", simulator_pb2.GetRunRequest(name=run_name(run)))

    def list_runs(self, *, filter: str = "", order_by: str = "", page_size: int = 0,
                  page_token: str = "", show_deleted: bool = False
                  ) -> simulator_pb2.ListRunsResponse:
        """One page of runs (see `iter_runs` for all of them)."""
        return self._call("ListRuns", simulator_pb2.ListRunsRequest(
            filter=filter, order_by=order_by, page_size=page_size, page_token=page_token,
            show_deleted=show_deleted))

    def iter_runs(self, *, filter: str = "", order_by: str = "", page_size: int = 0,
                  show_deleted: bool = False) -> Iterator[run_pb2.Run]:
        token = ""
        while True:
            resp = self.list_runs(filter=filter, order_by=order_by, page_size=page_size,
                                  page_token=token, show_deleted=show_deleted)
            yield from resp.runs
            token = resp.next_page_token
            if not token:
                return

    def watch(self, run: str, after_sequence: int | None = 0, *,
              heartbeat_interval_s: float | None = None,
              reconnects: int = 3) -> Iterator[simulator_pb2.WatchRunResponse]:
        """The WatchRun stream of `run`: a snapshot, then events (and heartbeats) until the
        run ends. `after_sequence`: replay stored events after it (0: all; None: only new
        ones). A stream cut with UNAVAILABLE is resumed from the last sequence received,
        up to `reconnects` times in a row (a new snapshot comes first each time)."""
        name = run_name(run)
        last = after_sequence
        failures = 0
        while True:
            req = simulator_pb2.WatchRunRequest(name=name)
            if last is not None:
                req.after_sequence = last
            if heartbeat_interval_s is not None:
                req.heartbeat_interval_seconds = heartbeat_interval_s
            try:
                for msg in self._stub.WatchRun(req):
                    failures = 0
                    if msg.sequence or last is not None:
                        last = max(last or 0, msg.sequence)
                    yield msg
                return
            except grpc.RpcError as err:
                error = ClientError.from_rpc_error(err)
                if error.code != grpc.StatusCode.UNAVAILABLE or failures >= reconnects:
                    raise error from None
                failures += 1
                time.sleep(0.2 * 2 ** failures)

    def cancel_run(self, run: str) -> run_pb2.Run:
        return self._call("CancelRun", simulator_pb2.CancelRunRequest(name=run_name(run)))

    def delete_run(self, run: str, *, force: bool = False) -> run_pb2.Run:
        return self._call("DeleteRun",
                          simulator_pb2.DeleteRunRequest(name=run_name(run), force=force))

    def list_samples(self, run: str, *, max_points: int = 0, columns: Sequence[str] = (),
                     page_size: int = 0) -> tuple[list[str], list[run_pb2.Sample]]:
        """Every sample of a run (all pages): (column names, samples)."""
        cols: list[str] = []
        samples: list[run_pb2.Sample] = []
        token = ""
        while True:
            resp = self._call("ListRunSamples", simulator_pb2.ListRunSamplesRequest(
                parent=run_name(run), page_size=page_size, page_token=token,
                max_points=max_points, columns=list(columns)))
            cols = list(resp.columns) or cols
            samples.extend(resp.samples)
            token = resp.next_page_token
            if not token:
                return cols, samples

    def sample_rows(self, run: str, *, max_points: int = 0,
                    columns: Sequence[str] = ()) -> list[dict[str, float]]:
        """A run's samples as rows `{"time_s": t, column: value, ...}` (the form of
        `simulate --out` series.csv and of client.plot)."""
        cols, samples = self.list_samples(run, max_points=max_points, columns=columns)
        return [{"time_s": s.time_seconds, **dict(zip(cols, s.values))} for s in samples]

    def get_report(self, run: str, *, full: bool = False) -> run_pb2.RunReport:
        """The run's report, read as a stream of pieces (StreamRunReport) so that a FULL
        report of any size arrives, and put together."""
        view = run_pb2.RUN_REPORT_VIEW_FULL if full else run_pb2.RUN_REPORT_VIEW_BASIC
        request = simulator_pb2.GetRunReportRequest(name=f"{run_name(run)}/report", view=view)
        try:
            return join_report(self._stub.StreamRunReport(request, timeout=self.timeout))
        except grpc.RpcError as err:
            raise ClientError.from_rpc_error(err) from None

    # ---- sweeps ----------------------------------------------------------------------

    def create_sweep(self, parameters: Mapping[str, Iterable[Any]], *,
                     scenario: str | None = None, base_spec: Any = None,
                     overrides: Sequence[str] = (), seeds: int = 1,
                     metrics: Sequence[str] = (), labels: Mapping[str, str] | None = None,
                     display_name: str = "", sweep_id: str = "",
                     request_id: str | None = None, validate_only: bool = False,
                     arms: Mapping[str, Mapping[str, Any]] | None = None,
                     baseline: str = "") -> sweep_pb2.Sweep:
        """Create a sweep over the grid `parameters` (path -> values, in axis order), or
        an experiment: `arms` (name -> {path: value}, in order; no parameters) with the
        `baseline` arm (default the first)."""
        scen, msg = self.resolve_spec(scenario=scenario, spec=base_spec, overrides=overrides)
        sweep = sweep_pb2.Sweep(
            scenario=scen, seeds=seeds, metrics=list(metrics), labels=dict(labels or {}),
            display_name=display_name, baseline=baseline,
            parameters=[sweep_pb2.SweepParameter(path=p, values=[to_value(v) for v in vs])
                        for p, vs in parameters.items()],
            arms=[sweep_pb2.SweepArm(name=name, values={p: to_value(v) for p, v in vs.items()})
                  for name, vs in (arms or {}).items()])
        if msg is not None:
            sweep.base_spec.CopyFrom(msg)
        return self._call("CreateSweep", simulator_pb2.CreateSweepRequest(
            sweep=sweep, sweep_id=sweep_id, request_id=request_id or str(uuid.uuid4()),
            validate_only=validate_only))

    def get_sweep(self, sweep: str) -> sweep_pb2.Sweep:
        return self._call("GetSweep", simulator_pb2.GetSweepRequest(name=sweep_name(sweep)))

    def list_sweeps(self, *, show_deleted: bool = False) -> list[sweep_pb2.Sweep]:
        """Every sweep (all pages), oldest first, without aggregates."""
        out: list[sweep_pb2.Sweep] = []
        token = ""
        while True:
            resp = self._call("ListSweeps", simulator_pb2.ListSweepsRequest(
                page_token=token, show_deleted=show_deleted))
            out.extend(resp.sweeps)
            token = resp.next_page_token
            if not token:
                return out

    def cancel_sweep(self, sweep: str) -> sweep_pb2.Sweep:
        return self._call("CancelSweep",
                          simulator_pb2.CancelSweepRequest(name=sweep_name(sweep)))

    def delete_sweep(self, sweep: str, *, force: bool = False) -> sweep_pb2.Sweep:
        return self._call("DeleteSweep",
                          simulator_pb2.DeleteSweepRequest(name=sweep_name(sweep), force=force))

    # ---- traces ----------------------------------------------------------------------

    def get_trace(self, name: str) -> trace_pb2.Trace:
        """An uploaded trace, `traces/{sha256}` (or the bare sha256)."""
        name = name if name.startswith("traces/") else f"traces/{name}"
        return self._call("GetTrace", trace_pb2.GetTraceRequest(name=name))

    def list_traces(self) -> list[trace_pb2.Trace]:
        """Every uploaded trace (all pages), by name."""
        out: list[trace_pb2.Trace] = []
        token = ""
        while True:
            resp = self._call("ListTraces", simulator_pb2.ListTracesRequest(page_token=token))
            out.extend(resp.traces)
            token = resp.next_page_token
            if not token:
                return out
    def delete_trace(self, name: str) -> None:
        """Delete your upload of a trace, `traces/{sha256}` (or the bare sha256); an
        admin's deletes everyone's. The server removes the file once nobody keeps it."""
        name = name if name.startswith("traces/") else f"traces/{name}"
        self._call("DeleteTrace", trace_pb2.DeleteTraceRequest(name=name))

    def upload_trace(self, path: str | os.PathLike) -> str:
        """Upload the trace file at `path` for replay; its name on the server,
        `traces/{sha256}`, for `workload[i].replay.path`. A file the server already has
        (same content) is not sent again. RESOURCE_EXHAUSTED ClientError when it is larger
        than the server accepts."""
        path = Path(path)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
                digest.update(chunk)
        name = f"traces/{digest.hexdigest()}"
        try:
            return self.get_trace(name).name
        except ClientError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise

        def chunks() -> Iterator[trace_pb2.UploadTraceRequest]:
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(UPLOAD_CHUNK), b""):
                    yield trace_pb2.UploadTraceRequest(chunk=chunk)

        timeout = self.timeout + UPLOAD_S_PER_MIB * path.stat().st_size / (1 << 20)
        try:
            trace = self._stub.UploadTrace(chunks(), timeout=timeout)
        except grpc.RpcError as err:
            raise ClientError.from_rpc_error(err) from None
        return trace.name


def experiment_from_proto(msg: sweep_pb2.Experiment) -> dict[str, Any]:
    """A Sweep's Experiment message as codec/stats.py's record (NaN as None)."""
    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        "method": msg.method, "confidence": msg.confidence, "alpha": msg.alpha,
        "baseline": msg.baseline, "arms": list(msg.arms), "seeds": list(msg.seeds),
        "metrics": [{"metric": m.metric,
                     "arms": [{"arm": a.arm, "count": a.count, "mean": num(a.mean)
                               if a.count else None, "ci_low": num(a.ci_low),
                               "ci_high": num(a.ci_high), "values": list(a.values)}
                              for a in m.arms],
                     "differences": [{"arm": d.arm, "pairs": d.pairs,
                                      "mean": num(d.mean) if d.pairs else None,
                                      "ci_low": num(d.ci_low), "ci_high": num(d.ci_high),
                                      "relative": num(d.relative), "p_value": num(d.p_value),
                                      "q_value": num(d.q_value), "significant": d.significant,
                                      "differences": list(d.differences)}
                                     for d in m.differences]}
                    for m in msg.metrics]}
