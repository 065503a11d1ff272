"""Records to messages: the store's runs, events, sweeps and reports, the trace store's
traces and the presets, as the API's messages. Nothing here reads the store or refuses a
request; the spec itself is mapped by `compactsim.codec.spec` (through `server.convert`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import run_pb2, simulator_pb2, spec_pb2, sweep_pb2, trace_pb2
from compactsim.server import convert, sweeps
from compactsim.server.manager import REPORT_HISTOGRAMS
from compactsim.server.rpc_errors import run_error
from compactsim.server.store import RunEvent, RunRecord, SweepRecord
from compactsim.server.traces import TraceInfo

log = logging.getLogger(__name__)

# Text per StreamRunReport message.
REPORT_PIECE_BYTES = 1 << 20
# Effective specs kept decoded, by run id, before the cache starts again.
_EFFECTIVE_CACHE = 10000


def ts(ns: int | None) -> timestamp_pb2.Timestamp | None:
    if ns is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(ns))
    return t


def py_to_value(x: Any) -> struct_pb2.Value:
    return json_format.ParseDict(x, struct_pb2.Value())


def provenance(prov: Mapping[str, Any]) -> run_pb2.Provenance:
    return run_pb2.Provenance(
        code_version=prov.get("code_version", ""), seed=int(prov.get("seed", 0)),
        spec_sha256=prov.get("spec_sha256", ""),
        library_versions=prov.get("library_versions", {}), executor=prov.get("executor", ""))


class Runs:
    """Runs and their events as messages; keeps the effective specs it decoded."""

    def __init__(self) -> None:
        self._effective: dict[str, spec_pb2.Spec] = {}

    def effective_spec(self, rec: RunRecord) -> spec_pb2.Spec:
        spec = self._effective.get(rec.id)
        if spec is None:
            try:
                spec = convert.spec_to_proto(convert.config_from_proto(spec_pb2.Spec(),
                                                                       base=rec.spec))
            except convert.ConfigError:
                spec = spec_pb2.Spec()
            if len(self._effective) > _EFFECTIVE_CACHE:
                self._effective.clear()
            self._effective[rec.id] = spec
        return spec

    def progress(self, rec: RunRecord, p: Mapping[str, Any] | None = None) -> run_pb2.Progress:
        duration = self.effective_spec(rec).duration_seconds
        if p is None:
            p = {"sim_time_s": rec.progress.sim_time_s, "fraction": rec.progress.fraction,
                 "events": rec.progress.events, "wall_s": rec.progress.wall_s}
        return run_pb2.Progress(sim_time_seconds=p["sim_time_s"], duration_seconds=duration,
                                fraction=p["fraction"], events=int(p["events"]),
                                wall_time_seconds=p["wall_s"])

    def run(self, rec: RunRecord) -> run_pb2.Run:
        prov = rec.provenance
        run = run_pb2.Run(
            name=f"runs/{rec.id}", display_name=rec.display_name,
            scenario=f"scenarios/{rec.scenario}" if rec.scenario else "",
            effective_spec=self.effective_spec(rec), state=rec.state.proto,
            progress=self.progress(rec), labels=rec.labels, creator=rec.creator,
            sweep=f"sweeps/{rec.sweep_id}" if rec.sweep_id else "",
            provenance=provenance(prov),
            create_time=ts(rec.create_time_ns), start_time=ts(rec.start_time_ns),
            end_time=ts(rec.end_time_ns), update_time=ts(rec.update_time_ns),
            delete_time=ts(rec.delete_time_ns))
        json_format.ParseDict(prov.get("request_spec", {}), run.spec)
        if "request_spec" not in prov:
            run.ClearField("spec")
        err = run_error(rec.state, rec.error_reason, rec.error_message, rec.interrupted)
        if err is not None:
            run.error.CopyFrom(err)
        if rec.summary is not None:
            run.summary.CopyFrom(convert.summary_to_struct(rec.summary))
        return run

    def event(self, rec: RunRecord, ev: RunEvent, previous: run_pb2.Run.State.ValueType
              ) -> tuple[run_pb2.RunEvent, run_pb2.Run.State.ValueType]:
        """The event of run `rec` as a message, and the run's state after it (`previous`,
        the state before, for all but state changes)."""
        msg = run_pb2.RunEvent(sequence=ev.sequence, event_time=ts(ev.time_ns))
        if ev.type == "state":
            state = RunState(ev.payload["state"])
            msg.state_change.previous_state = previous
            msg.state_change.state = state.proto
            err = run_error(state, ev.payload.get("error_reason", ""),
                            ev.payload.get("error_message", ""),
                            ev.payload.get("interrupted", False))
            if err is not None:
                msg.state_change.error.CopyFrom(err)
            return msg, state.proto
        if ev.type == "progress":
            msg.progress.CopyFrom(self.progress(rec, ev.payload))
        return msg, previous


def _succeeded(runs: Iterable[RunRecord]) -> list[tuple[RunRecord, dict]]:
    """The SUCCEEDED runs that have a summary, each with it (decoded once)."""
    return [(r, summary) for r in runs
            if r.state is RunState.SUCCEEDED and (summary := r.summary)]


def sweep(rec: SweepRecord, runs: list[RunRecord]) -> sweep_pb2.Sweep:
    """The sweep with its points, their runs and aggregates, and an experiment's
    statistics."""
    grid = rec.grid
    out = sweep_pb2.Sweep(
        name=f"sweeps/{rec.id}", display_name=rec.display_name,
        scenario=f"scenarios/{grid['scenario']}" if grid.get("scenario") else "",
        seeds=grid["seeds"], metrics=grid["metrics"], labels=grid["labels"],
        creator=rec.creator, create_time=ts(rec.create_time_ns))
    json_format.ParseDict(grid.get("base_spec", {}), out.base_spec)
    for p in grid["parameters"]:
        out.parameters.add(path=p["path"], values=[py_to_value(v) for v in p["values"]])
    for a in grid.get("arms", []):
        arm = out.arms.add(name=a["name"])
        for k, v in a["values"].items():
            arm.values[k].CopyFrom(py_to_value(v))
    out.baseline = grid.get("baseline", "")
    by_point: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_point.setdefault(r.labels.get("sweep_point", ""), []).append(r)
    metrics = grid["metrics"] or sweeps.default_metrics([s for _, s in _succeeded(runs)])
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    out.run_state_counts.update(counts)
    for p in grid["points"]:
        prs = sorted(by_point.get(str(p["index"]), []),
                     key=lambda r: int(r.provenance.get("seed", 0)))
        pt = out.points.add(index=p["index"], runs=[f"runs/{r.id}" for r in prs],
                            run_states=[r.state.proto for r in prs], arm=p.get("arm", ""))
        for k, v in p["values"].items():
            pt.values[k].CopyFrom(py_to_value(v))
        aggs = sweeps.aggregates([s for _, s in _succeeded(prs)], metrics)
        for k, a in aggs.items():
            pt.aggregates[k].CopyFrom(sweep_pb2.Aggregate(
                count=a.count, mean=a.mean, stddev=a.stddev, min=a.min, max=a.max))
    if grid.get("arms"):
        out.experiment.CopyFrom(_experiment(grid, by_point))
    out.state = sweep_pb2.Sweep.State.Value(sweeps.sweep_state([r.state for r in runs]))
    if out.state != sweep_pb2.Sweep.RUNNING and runs:
        out.end_time.FromNanoseconds(int(max(r.end_time_ns or 0 for r in runs)))
    return out


def _experiment(grid: Mapping[str, Any], by_point: Mapping[str, list[RunRecord]]
                ) -> sweep_pb2.Experiment:
    """The statistics of an experiment's SUCCEEDED runs (codec/stats.py, the numbers
    every client shows), restricted to the sweep's metrics when it names some."""
    # numpy and scipy only here: imported with the server they would weigh on every
    # worker, which the forkserver starts from the server's main module
    from compactsim.codec.stats import ArmRun
    from compactsim.codec.stats import experiment as experiment_stats
    arm_of = {str(p["index"]): p["arm"] for p in grid["points"]}
    runs = [ArmRun(arm_of[point], int(r.provenance.get("seed", 0)), summary)
            for point, rs in by_point.items() if point in arm_of
            for r, summary in _succeeded(rs)]
    result = experiment_stats(runs, [a["name"] for a in grid["arms"]], grid["baseline"])
    if grid["metrics"]:
        keep = set(grid["metrics"])
        result["metrics"] = [m for m in result["metrics"] if m["metric"] in keep]
    return convert.experiment_to_proto(result)


def trace(info: TraceInfo) -> trace_pb2.Trace:
    return trace_pb2.Trace(name=info.name, size_bytes=info.size,
                           create_time=ts(info.create_time_ns))


class Scenarios(Protocol):
    """The presets, injected (server/main.py wires `sim.scenarios`): the service imports
    no `sim`."""

    def list(self) -> Mapping[str, str]: ...            # name -> title
    def load(self, name: str) -> dict[str, Any]: ...    # raw spec; ConfigError if unknown
    def description(self, name: str) -> str: ...


def scenario(scenarios: Scenarios, name: str, title: str) -> simulator_pb2.Scenario:
    """A preset, with its spec when it validates on its own."""
    sc = simulator_pb2.Scenario(name=f"scenarios/{name}", title=title,
                                description=scenarios.description(name))
    try:
        sc.spec.CopyFrom(convert.spec_from_dict(scenarios.load(name)))
    except convert.ConfigError:
        log.warning("scenario %s does not validate on its own", name)
    return sc


def report(name: str, rec: RunRecord, reports: Mapping[str, str], full: bool
           ) -> run_pb2.RunReport:
    """The report of a SUCCEEDED run from its stored reports (the trace and the fault log
    only in the full view)."""
    return run_pb2.RunReport(
        name=name, summary=convert.summary_to_struct(rec.summary or {}),
        procfs_files=[run_pb2.ProcfsFile(name=k[5:], text=v) for k, v in reports.items()
                      if k.startswith("proc/")],
        histograms=convert.histograms_from_message(
            json.loads(reports.get(REPORT_HISTOGRAMS, "{}"))),
        trace=reports.get("trace", "") if full else "",
        fault_log=reports.get("fault_log", "") if full else "")


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
