"""Checks of the fields of requests: resource names, ids, page sizes and tokens, labels,
and the parts of CreateRun and CreateSweep that need nothing but the request. Each check
raises (or returns the violations for) `rpc_errors.bad_request`, naming the field and
why."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from compactsim.proto.v1 import simulator_pb2
from compactsim.server import limits, sweeps
from compactsim.server.rpc_errors import bad_request, check_quota

_RESOURCE_ID = re.compile(r"[a-z][a-z0-9-]{3,62}")
_RESOURCE_ID_RULE = "4..63 characters of [a-z0-9-], starting with a letter"
_REQUEST_ID_RULE = "at most 128 characters (a UUID is 36)"
NO_TOKEN = "not a token this server issued"


def _name(name: str, collection: str, id_pattern: str, field: str, suffix: str = "") -> str:
    m = re.fullmatch(rf"{collection}/({id_pattern}){re.escape(suffix)}", name or "")
    if m is None:
        singular = collection[:-1]
        raise bad_request([(field, f"must be {collection}/{{{singular}}}{suffix}, got {name!r}")])
    return m.group(1)


def run_id(name: str, field: str = "name", suffix: str = "") -> str:
    """The id of `runs/{run}` (followed by `suffix`)."""
    return _name(name, "runs", "[a-z0-9][a-z0-9-]{0,62}", field, suffix)


def sweep_id(name: str, field: str = "name") -> str:
    return _name(name, "sweeps", "[a-z0-9][a-z0-9-]{0,62}", field)


def scenario_name(name: str, field: str = "name") -> str:
    return _name(name, "scenarios", "[A-Za-z0-9_.-]+", field)


def page_size(size: int, maximum: int = 1000) -> None:
    if not 0 <= size <= maximum:
        raise bad_request([("page_size", f"must be 0..{maximum}")])


def offset_token(token: str) -> int:
    """The position a page token of an offset-paged list holds (0 without one)."""
    m = re.fullmatch(r"[0-9]{1,9}", token)   # ASCII digits only
    if token and m is None:
        raise bad_request([("page_token", NO_TOKEN)])
    return int(token) if token else 0


def trace_token(token: str) -> None:
    if token and not re.fullmatch(r"traces/[0-9a-f]{64}", token):
        raise bad_request([("page_token", NO_TOKEN)])


def request_id(value: str) -> list[tuple[str, str]]:
    return [("request_id", _REQUEST_ID_RULE)] if len(value) > 128 else []


def resource_id(field: str, value: str) -> list[tuple[str, str]]:
    """A run or sweep id chosen by the caller ("" for one the server chooses)."""
    return [(field, _RESOURCE_ID_RULE)] if value and not _RESOURCE_ID.fullmatch(value) else []


def labels(values: Mapping[str, str], field: str) -> list[tuple[str, str]]:
    """The labels of a run (or of all a sweep's runs): keys 1..63, values 0..63 characters."""
    return [(f"{field}[{k}]", "keys 1..63, values 0..63 characters")
            for k, v in values.items() if not k or len(k) > 63 or len(v) > 63]


def request_sweep_id(user: str, request_id: str) -> str:
    """The sweep id a CreateSweep with `request_id` and no sweep_id gets ("" without one):
    the same for a retry by the same user, so the retry finds it."""
    if not request_id:
        return ""
    return "r" + hashlib.sha256(f"{user}\0{request_id}".encode()).hexdigest()[:31]


def create_run(request: simulator_pb2.CreateRunRequest) -> list[tuple[str, str]]:
    """QUOTA for too many labels; the violations of the request's own fields."""
    run = request.run
    check_quota(limits.repeated_exceeded([
        ("run.labels", len(run.labels), limits.MAX_LABELS, "labels")]))
    violations = request_id(request.request_id) + resource_id("run_id", request.run_id)
    if len(run.display_name) > 200:
        violations.append(("run.display_name", "at most 200 characters"))
    violations += labels(run.labels, "run.labels")
    if not run.scenario and not run.HasField("spec"):
        violations.append(("run.spec", "required unless run.scenario is set"))
    return violations


def sweep_counts(request: simulator_pb2.CreateSweepRequest) -> None:
    """QUOTA for a sweep of too many labels, parameters, metrics, values or arms."""
    sw = request.sweep
    check_quota(limits.repeated_exceeded([
        ("sweep.labels", len(sw.labels), limits.MAX_LABELS, "labels"),
        ("sweep.parameters", len(sw.parameters), limits.MAX_SWEEP_PARAMETERS,
         "parameters"),
        ("sweep.metrics", len(sw.metrics), limits.MAX_SWEEP_METRICS, "metrics"),
        *((f"sweep.parameters[{i}].values", len(p.values), limits.MAX_SWEEP_VALUES,
           "values") for i, p in enumerate(sw.parameters)),
        ("sweep.arms", len(sw.arms), sweeps.MAX_ARMS, "arms"),
        *((f"sweep.arms[{i}].values", len(a.values), limits.MAX_SWEEP_PARAMETERS,
           "values") for i, a in enumerate(sw.arms))]))


def _value(v: struct_pb2.Value, field: str, violations: list[tuple[str, str]]) -> Any:
    try:
        return json_format.MessageToDict(v)
    except ValueError:   # NaN or an infinity, at any depth: no JSON form
        violations.append((field, "must not hold NaN or an infinity"))
        return None


def create_sweep(request: simulator_pb2.CreateSweepRequest) -> list[tuple[str, str]]:
    """The violations of the sweep's id, labels and spec source."""
    sw = request.sweep
    violations = resource_id("sweep_id", request.sweep_id)
    violations += labels(sw.labels, "sweep.labels")   # every run gets them
    if not sw.scenario and not sw.HasField("base_spec"):
        violations.append(("sweep.base_spec", "required unless sweep.scenario is set"))
    return violations


def sweep_axes(request: simulator_pb2.CreateSweepRequest
               ) -> tuple[list[tuple[str, list]], list[tuple[str, dict]], list[tuple[str, str]]]:
    """The sweep's parameters as (path, values) and arms as (name, {path: value}), and the
    violations of their values and of their combination."""
    sw = request.sweep
    violations: list[tuple[str, str]] = []
    params = [(p.path, [_value(v, f"sweep.parameters[{i}].values[{j}]", violations)
                        for j, v in enumerate(p.values)])
              for i, p in enumerate(sw.parameters)]
    arms = [(arm.name, {path: _value(v, f"sweep.arms[{i}].values[{path!r}]", violations)
                        for path, v in arm.values.items()})
            for i, arm in enumerate(sw.arms)]
    if arms and params:
        violations.append(("sweep.arms", "an experiment has arms or a grid "
                                         "(parameters), not both"))
    if sw.baseline and not arms:
        violations.append(("sweep.baseline", "only an experiment (arms) has a baseline"))
    return params, arms, violations


def watch_run(request: simulator_pb2.WatchRunRequest, default_heartbeat_s: float) -> float:
    """The heartbeat interval a WatchRun asks for (or the default)."""
    heartbeat = (request.heartbeat_interval_seconds
                 if request.HasField("heartbeat_interval_seconds") else default_heartbeat_s)
    if not 1 <= heartbeat <= 300:
        raise bad_request([("heartbeat_interval_seconds", "must be 1..300")])
    if request.HasField("after_sequence") and request.after_sequence < 0:
        raise bad_request([("after_sequence", "must be >= 0")])
    return heartbeat

