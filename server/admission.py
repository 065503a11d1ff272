"""Admitting new runs and sweeps (CreateRun, CreateSweep): a retry with a request_id gets
what the first request made; the spec is validated once, through the codec, laid over the
preset; quotas and limits (`server.limits`) are checked before anything is stored, for
validate-only requests too, and a sweep counts every one of its runs; a replayed trace
must be one uploaded with UploadTrace (`server.traces`): the spec keeps its name,
`traces/{sha256}`, and only the worker gets the file's path. Each run records its
provenance: the code and library versions, the seed, the spec's hash and the executor."""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from typing import Any

from google.protobuf import json_format

from compactsim.codec.runstate import RunState
from compactsim.codec.versions import installed_version
from compactsim.proto.v1 import run_pb2, simulator_pb2, spec_pb2, sweep_pb2
from compactsim.server import convert, mapping, requests, sweeps
from compactsim.server.auth import Caller
from compactsim.server.limits import Exceeded, Limits
from compactsim.server.manager import QueueLimit
from compactsim.server.mapping import Scenarios
from compactsim.server.resources import Resources
from compactsim.server.rpc_errors import (
    already_exists,
    bad_request,
    check_quota,
    config_violations,
    conflict,
    not_found,
    quota,
    unavailable,
)
from compactsim.server.store import (
    IdTaken,
    InvalidArgument,
    NewRun,
    NotFound,
    RequestIdConflict,
    check_same_request,
)
from compactsim.server.traces import TraceError, TraceStore


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in ("simpy", "numpy"):
        if (version := installed_version(lib)) is not None:
            out[lib] = version
    return out


def _effective(raw: dict) -> spec_pb2.Spec:
    return convert.spec_to_proto(convert.config_from_proto(spec_pb2.Spec(), base=raw))


class Admission:
    def __init__(self, resources: Resources, scenarios: Scenarios, traces: TraceStore,
                 limits: Limits, executor_name: str):
        self.manager = resources.manager
        self.store = resources.store
        self.resources = resources
        self.runs = resources.runs
        self.scenarios = scenarios
        self.traces = traces
        self.limits = limits
        self.executor_name = executor_name
        self.closing = False
        self._code_version = installed_version() or "unknown"
        self._versions = _versions()

    # -- what every new run needs ----------------------------------------------------------

    def _scenario_raw(self, scenario: str, field: str) -> tuple[str, dict | None]:
        if not scenario:
            return "", None
        name = requests.scenario_name(scenario, field)
        try:
            return name, self.scenarios.load(name)
        except convert.ConfigError as exc:
            raise not_found("Scenario", scenario, str(exc)) from None

    def _provenance(self, effective: spec_pb2.Spec, request_spec: spec_pb2.Spec | None
                    ) -> dict[str, Any]:
        prov = {"code_version": self._code_version, "seed": effective.seed,
                "spec_sha256": hashlib.sha256(effective.SerializeToString(
                    deterministic=True)).hexdigest(),
                "library_versions": self._versions, "executor": self.executor_name}
        if request_spec is not None:
            prov["request_spec"] = json_format.MessageToDict(request_spec)
        return prov

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
        check_quota(self.manager.queue_exceeded(user, adding))

    def _check_open(self) -> None:
        if self.closing:
            raise unavailable("the server is shutting down; no new runs")

    # -- CreateRun -------------------------------------------------------------------------

    def create_run(self, request: simulator_pb2.CreateRunRequest, caller: Caller
                   ) -> run_pb2.Run:
        self._check_open()
        run = request.run
        violations = requests.create_run(request)
        scenario, base = self._scenario_raw(run.scenario, "run.scenario")
        cfg = None
        if run.scenario or run.HasField("spec"):
            try:
                cfg = convert.config_from_proto(run.spec, base=base)
            except convert.ConfigError as exc:
                violations += config_violations(exc, "run.spec")
        if violations:
            raise bad_request(violations)
        assert cfg is not None      # set unless a violation was raised above
        effective = convert.spec_to_proto(cfg)
        new = NewRun(spec=convert.raw_from_proto(effective), display_name=run.display_name,
                     scenario=scenario, labels=dict(run.labels), creator=caller.user,
                     request_id=request.request_id or None, run_id=request.run_id or None)
        if request.request_id:   # a retry gets its run, whatever the limits say now
            old = self.store.find_by_request_id(caller.user, request.request_id)
            if old is not None:
                try:
                    check_same_request(old, new)
                except RequestIdConflict as exc:
                    raise already_exists(f"runs/{old.id}", str(exc)) from None
                return self.runs.run(old)
        trace_violations, trace_bytes = self._replayed(effective, "run.spec")
        if trace_violations:
            raise bad_request(trace_violations)
        check_quota(self._run_exceeded(effective, "run.spec", trace_bytes))
        self._check_queue(caller.user, 1)
        given = run.spec if run.HasField("spec") else None
        prov = self._provenance(effective, given)
        if request.validate_only:
            return run_pb2.Run(
                name=f"runs/{request.run_id}" if request.run_id else "",
                display_name=run.display_name, scenario=run.scenario, spec=given,
                effective_spec=effective, state=RunState.QUEUED.proto, labels=run.labels,
                creator=caller.user, provenance=mapping.provenance(prov))
        if request.run_id:
            try:
                self.store.get_run(request.run_id)
                raise already_exists(f"runs/{request.run_id}")
            except NotFound:
                pass
        try:
            rec = self.manager.submit(
                new.spec, display_name=new.display_name, scenario=scenario,
                labels=new.labels, provenance=prov, creator=caller.user,
                request_id=new.request_id, run_id=new.run_id)
        except QueueLimit as exc:
            raise quota(exc.exceeded, str(exc)) from None
        except RequestIdConflict as exc:
            raise conflict(str(exc)) from None
        except IdTaken:   # another CreateRun with this run_id got there first
            raise already_exists(f"runs/{request.run_id}") from None
        except InvalidArgument as exc:
            raise bad_request([("run", str(exc))]) from None
        return self.runs.run(rec)

    # -- CreateSweep -----------------------------------------------------------------------

    def _sweep_of_request(self, request: simulator_pb2.CreateSweepRequest, caller: Caller
                          ) -> str | None:
        """The id of the sweep `request` is a retry of, if any: a request_id names a sweep
        by its creator and request (`sweep_id`, or an id derived from both) whose grid
        records that request_id."""
        sweep_id = request.sweep_id or requests.request_sweep_id(caller.user,
                                                                 request.request_id)
        try:
            rec = self.store.get_sweep(sweep_id)
        except NotFound:
            return None
        if rec.creator == caller.user and rec.grid.get("request_id") == request.request_id:
            return sweep_id
        return None

    def _sweep(self, sweep_id: str) -> sweep_pb2.Sweep:
        return self.resources.sweep_message(f"sweeps/{sweep_id}")

    def _base(self, request: simulator_pb2.CreateSweepRequest
              ) -> tuple[str, dict, list[tuple[str, list]], list[tuple[str, dict]]]:
        """The sweep's preset, its base spec (raw, effective), parameters and arms; every
        violation among them at once."""
        sw = request.sweep
        violations = requests.create_sweep(request)
        scenario, base = self._scenario_raw(sw.scenario, "sweep.scenario")
        base_raw = None
        try:
            cfg = convert.config_from_proto(sw.base_spec, base=base)
            base_raw = convert.raw_from_proto(convert.spec_to_proto(cfg))
        except convert.ConfigError as exc:
            violations += config_violations(exc, "sweep.base_spec")
        params, arms, axes_violations = requests.sweep_axes(request)
        if violations + axes_violations:
            raise bad_request(violations + axes_violations)
        assert base_raw is not None  # set unless a violation was raised above
        return scenario, base_raw, params, arms

    def _sweep_runs(self, points: list[sweeps.Point]
                    ) -> list[tuple[sweeps.Point, spec_pb2.Spec]]:
        """Each run of the sweep's points with its effective spec, every spec checked and
        its limits counted (each exceeded limit once) before anything is stored."""
        runs: list[tuple[sweeps.Point, spec_pb2.Spec]] = []
        exceeded: list[Exceeded] = []
        for pt in points:
            names = ", ".join(f"{p}={json.dumps(v)}" for p, v in pt.values.items())
            where = (f"sweep.arms[{pt.index}].values ({names})" if pt.arm
                     else f"sweep.parameters ({names})")
            for raw in pt.specs:
                try:
                    eff = _effective(raw)
                except convert.ConfigError as exc:
                    raise bad_request([(f"{where}: {f}", d)
                                       for f, d in config_violations(exc, "spec")]) from None
                trace_violations, trace_bytes = self._replayed(eff, "spec")
                if trace_violations:
                    raise bad_request([(f"{where}: {f}", d) for f, d in trace_violations])
                exceeded += [e for e in self._run_exceeded(eff, f"{where}: spec", trace_bytes)
                             if e not in exceeded]
                runs.append((pt, eff))
        check_quota(exceeded)
        return runs

    def create_sweep(self, request: simulator_pb2.CreateSweepRequest, caller: Caller
                     ) -> sweep_pb2.Sweep:
        self._check_open()
        if requests.request_id(request.request_id):
            raise bad_request(requests.request_id(request.request_id))
        if request.request_id and not request.validate_only:
            earlier = self._sweep_of_request(request, caller)
            if earlier is not None:
                return self._sweep(earlier)
        sw = request.sweep
        requests.sweep_counts(request)
        scenario, base_raw, params, arms = self._base(request)
        try:
            points = (sweeps.expand_arms(base_raw, arms, sw.seeds or 1, sw.baseline) if arms
                      else sweeps.expand(base_raw, params, sw.seeds or 1))
        except convert.ConfigError as exc:
            raise bad_request(config_violations(exc, "sweep")) from None
        runs = self._sweep_runs(points)
        self._check_queue(caller.user, len(runs))
        baseline = sw.baseline or (arms[0][0] if arms else "")
        if request.validate_only:
            return sweep_pb2.Sweep(display_name=sw.display_name, scenario=sw.scenario,
                                   base_spec=sw.base_spec, parameters=sw.parameters,
                                   seeds=sw.seeds or 1, metrics=sw.metrics, labels=sw.labels,
                                   arms=sw.arms, baseline=baseline,
                                   state=sweep_pb2.Sweep.RUNNING, creator=caller.user)
        grid = {"scenario": scenario, "parameters": [{"path": p, "values": v} for p, v in params],
                "seeds": sw.seeds or 1, "metrics": list(sw.metrics), "labels": dict(sw.labels),
                "base_spec": json_format.MessageToDict(sw.base_spec),
                "points": [{"index": p.index, "values": p.values, "arm": p.arm}
                           for p in points],
                "request_id": request.request_id}
        if arms:
            grid["arms"] = [{"name": n, "values": v} for n, v in arms]
            grid["baseline"] = baseline
        # the sweep and all its runs are stored in one transaction, or nothing is: its runs
        # name it, so its id is chosen here (as the store would: a fresh one)
        sweep_id = (request.sweep_id or requests.request_sweep_id(caller.user,
                                                                  request.request_id)
                    or uuid.uuid4().hex)
        new_runs = [NewRun(spec=convert.raw_from_proto(eff),
                           display_name=f"{sw.display_name or sweep_id} "
                                        f"{pt.arm or f'#{pt.index}'} seed {eff.seed}",
                           scenario=scenario,
                           labels={**sw.labels, "sweep": sweep_id, "sweep_point": str(pt.index)},
                           provenance=self._provenance(eff, None), creator=caller.user)
                    for pt, eff in runs]
        try:
            rec, _ = self.manager.submit_sweep(base_raw, grid, new_runs,
                                               display_name=sw.display_name,
                                               creator=caller.user, sweep_id=sweep_id)
        except QueueLimit as exc:
            raise quota(exc.exceeded, str(exc)) from None
        except InvalidArgument as exc:
            earlier = self._sweep_of_request(request, caller) if request.request_id else None
            if earlier is not None:   # a retry that raced the first request
                return self._sweep(earlier)
            raise conflict(str(exc)) from None
        return self._sweep(rec.id)
