"""The read RPCs' work: presets, runs, samples, reports, sweeps and traces, one page at
a time, each page at most MAX_PAGE_BYTES so that it fits a client's default receive
limit."""

from __future__ import annotations

from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import run_pb2, simulator_pb2, trace_pb2
from compactsim.server import mapping, requests
from compactsim.server.filters import QueryError
from compactsim.server.mapping import Scenarios
from compactsim.server.resources import Resources
from compactsim.server.rpc_errors import bad_request, not_found, precondition
from compactsim.server.store import InvalidArgument, RunRecord, SweepRecord
from compactsim.server.store.paging import fitting
from compactsim.server.traces import TraceError, TraceNotFound, TraceStore

# Largest list response: a page holds fewer items than page_size rather than pass gRPC's
# default 4 MiB receive limit of clients.
MAX_PAGE_BYTES = 3 << 20


class Queries:
    def __init__(self, resources: Resources, scenarios: Scenarios, traces: TraceStore):
        self.resources = resources
        self.store = resources.store
        self.runs = resources.runs
        self.scenarios = scenarios
        self.traces = traces

    def list_scenarios(self, request: simulator_pb2.ListScenariosRequest
                       ) -> simulator_pb2.ListScenariosResponse:
        requests.page_size(request.page_size)
        names = sorted(self.scenarios.list().items())
        start = requests.offset_token(request.page_token)
        size = request.page_size or 100
        out = simulator_pb2.ListScenariosResponse(scenarios=[
            mapping.scenario(self.scenarios, name, title)
            for name, title in names[start:start + size]])
        if start + size < len(names):
            out.next_page_token = str(start + size)
        return out

    def get_scenario(self, name: str) -> simulator_pb2.Scenario:
        scenario = requests.scenario_name(name)
        titles = self.scenarios.list()
        if scenario not in titles:
            raise not_found("Scenario", name)
        return mapping.scenario(self.scenarios, scenario, titles[scenario])

    def get_run(self, name: str) -> run_pb2.Run:
        return self.runs.run(self.resources.run(name))

    def list_runs(self, request: simulator_pb2.ListRunsRequest
                  ) -> simulator_pb2.ListRunsResponse:
        requests.page_size(request.page_size)
        runs: dict[str, run_pb2.Run] = {}

        def size(rec: RunRecord) -> int:
            runs[rec.id] = self.runs.run(rec)
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

    def list_samples(self, request: simulator_pb2.ListRunSamplesRequest
                     ) -> simulator_pb2.ListRunSamplesResponse:
        rec = self.resources.run(request.parent, "parent")
        requests.page_size(request.page_size, 10000)
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

    def get_report(self, request: simulator_pb2.GetRunReportRequest) -> run_pb2.RunReport:
        name = f"runs/{requests.run_id(request.name, suffix='/report')}"
        rec = self.resources.run(name)
        if rec.state is not RunState.SUCCEEDED:
            raise precondition(name, f"{name} is {rec.state.value}; only a SUCCEEDED run "
                                     f"has a report")
        return mapping.report(request.name, rec, self.store.get_reports(rec.id),
                              request.view == run_pb2.RUN_REPORT_VIEW_FULL)

    def list_sweeps(self, request: simulator_pb2.ListSweepsRequest
                    ) -> simulator_pb2.ListSweepsResponse:
        requests.page_size(request.page_size)
        start = requests.offset_token(request.page_token)
        recs = self.store.list_sweeps(show_deleted=request.show_deleted)
        page = []

        def size(rec: SweepRecord) -> int:   # a listed sweep leaves out its aggregates
            page.append(mapping.sweep(rec, self.store.sweep_runs(rec.id)))
            for pt in page[-1].points:
                pt.ClearField("aggregates")
            return page[-1].ByteSize() + 8
        end = start + fitting(recs[start:start + (request.page_size or 50)], size,
                              MAX_PAGE_BYTES)
        out = simulator_pb2.ListSweepsResponse(sweeps=page[:end - start])
        if end < len(recs):
            out.next_page_token = str(end)
        return out

    def get_trace(self, name: str) -> trace_pb2.Trace:
        try:
            return mapping.trace(self.traces.get(name))
        except TraceNotFound:
            raise not_found("Trace", name) from None
        except TraceError as exc:
            raise bad_request([("name", str(exc))]) from None

    def list_traces(self, request: simulator_pb2.ListTracesRequest
                    ) -> simulator_pb2.ListTracesResponse:
        requests.page_size(request.page_size)
        requests.trace_token(request.page_token)
        size = request.page_size or 100
        infos = self.traces.list(after=request.page_token, limit=size + 1)
        out = simulator_pb2.ListTracesResponse(traces=[mapping.trace(i) for i in infos[:size]])
        if len(infos) > size:
            out.next_page_token = infos[size - 1].name
        return out
