"""Sweeps without protobuf: a grid over a raw spec, expanded into points and seeds, and
per-point aggregates of run summaries.

A parameter is a spec path as in YAML spec files and `--set` (config names:
"tunables.compaction_proactiveness", "workload[0].rate"), and its values are YAML-like
plain values (numbers, booleans, "2GiB", "MAPPING_OPS"). Points are the cartesian product
of the axes in order, the last axis varying fastest; each point has `seeds` runs with seeds
base seed, base seed + 1, ...
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compactsim.codec.runstate import RunState
from compactsim.sim.config import apply_overrides
from compactsim.sim.schema import ConfigError, FieldError

MAX_RUNS = 1000
MAX_SEEDS = 100
MAX_ARMS = 20
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}")

# Summary figures aggregated when a sweep names none (plus every high-order allocation
# kind's success ratio found in the summaries).
DEFAULT_METRICS = ("vmstat.compact_stall", "vmstat.compact_success", "vmstat.compact_fail",
                   "vmstat.pgmigrate_success", "vmstat.pgmigrate_fail",
                   "fragmentation_score")

_ORDER = re.compile(r"/order(\d+)$")
_STEP = r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*"
_PATH = re.compile(rf"{_STEP}(?:\.{_STEP})*")   # "workload[0].rate", as --set takes


@dataclass(frozen=True)
class Point:
    index: int
    values: dict[str, Any]          # path -> value at this point
    specs: list[dict[str, Any]]     # one raw spec per seed, in seed order
    arm: str = ""                   # the arm's name, in an experiment


@dataclass(frozen=True)
class Aggregate:
    count: int
    mean: float
    stddev: float
    min: float
    max: float


def _plain(value: Any) -> Any:
    """Integral floats (protobuf Values are doubles) as ints, so int fields accept them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def expand(base: Mapping[str, Any], parameters: Sequence[tuple[str, Sequence[Any]]],
           seeds: int = 1) -> list[Point]:
    """The points of the grid over raw spec `base`. ConfigError names the bad parameter
    (`parameters[i]`, `parameters[i].values`, `seeds`) or, from apply_overrides, the path."""
    errors = []
    if not parameters:
        errors.append(FieldError("parameters", "needs at least one parameter"))
    if not 1 <= seeds <= MAX_SEEDS:
        errors.append(FieldError("seeds", f"must be 1..{MAX_SEEDS}"))
    seen = set()
    for i, (path, values) in enumerate(parameters):
        if not path:
            errors.append(FieldError(f"parameters[{i}].path", "must not be empty"))
        elif not _PATH.fullmatch(path):
            errors.append(FieldError(f"parameters[{i}].path", "not a field path (names and "
                                                              "[index] joined by dots, e.g. "
                                                              "workload[0].rate)"))
        elif path.split("[")[0].split(".")[0] == "seed":
            errors.append(FieldError(f"parameters[{i}].path", "seed is not a parameter; use seeds"))
        elif path in seen:
            errors.append(FieldError(f"parameters[{i}].path", f"{path!r} appears twice"))
        seen.add(path)
        if not values:
            errors.append(FieldError(f"parameters[{i}].values", "needs at least one value"))
    total = math.prod(len(v) for _, v in parameters) * max(seeds, 1) if parameters else 0
    if total > MAX_RUNS:
        errors.append(FieldError("parameters", f"{total} runs; at most {MAX_RUNS}"))
    if errors:
        raise ConfigError(errors)
    base_seed = int(base.get("seed", 1))
    points = []
    axes = [[_plain(v) for v in values] for _, values in parameters]
    for index, combo in enumerate(itertools.product(*axes)):
        point = {path: v for (path, _), v in zip(parameters, combo)}
        try:
            raw = apply_overrides(base, [f"{p}={json.dumps(v)}" for p, v in point.items()])
        except ConfigError as exc:   # a path the spec cannot have: name the parameter
            where = {path: f"parameters[{i}].path" for i, (path, _) in enumerate(parameters)}
            raise ConfigError([FieldError(where.get(e.path, e.path), f"{e.path}: {e.reason}")
                               for e in exc.errors]) from None
        specs = [{**raw, "seed": base_seed + s} for s in range(seeds)]
        points.append(Point(index, point, specs))
    return points


def expand_arms(base: Mapping[str, Any], arms: Sequence[tuple[str, Mapping[str, Any]]],
                seeds: int, baseline: str) -> list[Point]:
    """The points of an experiment: arm i is point i, each with `seeds` runs. ConfigError
    names the bad field (`arms[i].name`, `arms[i].values[path]`, `baseline`, `seeds`)."""
    errors = []
    if not 2 <= len(arms) <= MAX_ARMS:
        errors.append(FieldError("arms", f"needs 2..{MAX_ARMS} arms, got {len(arms)}"))
    if not 1 <= seeds <= MAX_SEEDS:
        errors.append(FieldError("seeds", f"must be 1..{MAX_SEEDS}"))
    names = [name for name, _ in arms]
    for i, (name, values) in enumerate(arms):
        if not _ARM_NAME.fullmatch(name):
            errors.append(FieldError(f"arms[{i}].name", "1..63 characters of letters, digits "
                                                        "and _.+-, starting with a letter or "
                                                        "digit"))
        elif names.index(name) != i:
            errors.append(FieldError(f"arms[{i}].name", f"{name!r} appears twice"))
        for path in values:
            if not _PATH.fullmatch(path):
                errors.append(FieldError(f"arms[{i}].values[{path!r}]", "not a field path"))
            elif path.split("[")[0].split(".")[0] == "seed":
                errors.append(FieldError(f"arms[{i}].values[{path!r}]",
                                         "seed is not an arm setting; use seeds"))
    if baseline and baseline not in names:
        errors.append(FieldError("baseline", f"{baseline!r} is not an arm"))
    if len(arms) * max(seeds, 1) > MAX_RUNS:
        errors.append(FieldError("arms", f"{len(arms) * seeds} runs; at most {MAX_RUNS}"))
    if errors:
        raise ConfigError(errors)
    base_seed = int(base.get("seed", 1))
    points = []
    for index, (name, values) in enumerate(arms):
        values = {p: _plain(v) for p, v in sorted(values.items())}
        try:
            raw = apply_overrides(base, [f"{p}={json.dumps(v)}" for p, v in values.items()])
        except ConfigError as exc:
            raise ConfigError([FieldError(f"arms[{index}].values[{e.path!r}]", e.reason)
                               for e in exc.errors]) from None
        points.append(Point(index, values, [{**raw, "seed": base_seed + s}
                                            for s in range(seeds)], arm=name))
    return points


def lookup(summary: Mapping[str, Any], path: str) -> float | None:
    """The number at dotted `path` in a summary (a list of numbers gives its mean), or None.
    Keys may hold dots' neighbours like "thp/order9": each step is matched greedily."""
    node: Any = summary
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            return None
        for j in range(len(parts), i, -1):   # longest key first ("a.b" before "a")
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            return None
    if isinstance(node, bool):
        return float(node)
    if isinstance(node, (int, float)):
        return float(node)
    if isinstance(node, list) and node and all(isinstance(x, (int, float)) for x in node):
        return float(statistics.fmean(node))
    return None


def default_metrics(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    kinds = sorted({k for s in summaries for k in (s.get("allocations") or {})
                    if (m := _ORDER.search(k)) and int(m.group(1)) > 0})
    return [*DEFAULT_METRICS, *(f"allocations.{k}.success_ratio" for k in kinds)]


def aggregate(values: Sequence[float]) -> Aggregate:
    n = len(values)
    return Aggregate(n, statistics.fmean(values), statistics.stdev(values) if n > 1 else 0.0,
                     min(values), max(values))


def aggregates(summaries: Sequence[Mapping[str, Any]],
               metrics: Sequence[str]) -> dict[str, Aggregate]:
    """metric path -> aggregate over the summaries that have it (none: left out)."""
    out = {}
    for m in metrics:
        vals = [v for s in summaries if (v := lookup(s, m)) is not None and math.isfinite(v)]
        if vals:
            out[m] = aggregate(vals)
    return out


def sweep_state(states: Sequence[RunState]) -> RunState:
    """The state of a sweep from its runs' states: RUNNING while it has none or one of
    them has not ended, then SUCCEEDED when all of them did, else FAILED."""
    if not states or not all(s.terminal for s in states):
        return RunState.RUNNING
    return (RunState.SUCCEEDED if all(s is RunState.SUCCEEDED for s in states)
            else RunState.FAILED)
