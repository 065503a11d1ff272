"""Experiments: named arms (spec overrides) times seeds, one arm the baseline.

An experiment is the question "what does changing these spec fields do on this workload":
every arm runs with the same seeds (base seed, base seed + 1, ...), and with common random
numbers each seed gives every arm the same workload, so the arms are compared seed by seed
(codec/stats.py). This module holds the plan (from `--arm NAME path=value ...` or a YAML
file), runs it in-process (a pool of worker processes) and lays the results out in a
directory that `compare`, `report` and `plot` read:

    DIR/experiment.json                 the question (base spec, arms, seeds, baseline) and
                                        the statistics
    DIR/runs/{arm}/seed-{seed}/         summary.json, spec.json, series.csv, histograms.json

An experiment run through the service (one sweep whose points are the arms) is fetched
into the same layout.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPERIMENT_FILE = "experiment.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}")


class PlanError(ValueError):
    """A bad experiment plan; the message names the field."""


@dataclass(frozen=True)
class Arm:
    name: str
    values: dict[str, Any]            # spec path -> value, as `--set` and YAML specs take

    def overrides(self) -> list[str]:
        return [f"{p}={json.dumps(v)}" for p, v in self.values.items()]

    def describe(self) -> str:
        return ", ".join(f"{p}={v}" for p, v in self.values.items()) or "(base spec)"


@dataclass(frozen=True)
class Plan:
    arms: list[Arm]
    seeds: int
    baseline: str
    scenario: str | None = None
    spec_file: str | None = None
    overrides: list[str] = field(default_factory=list)   # over the base spec, for all arms

    def question(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "spec_file": self.spec_file,
                "overrides": self.overrides, "seeds": self.seeds, "baseline": self.baseline,
                "arms": [{"name": a.name, "values": a.values} for a in self.arms]}


def _value(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else None


def parse_arm(words: Sequence[str], where: str) -> Arm:
    """`NAME path=value ...` (an arm with no settings runs the base spec)."""
    if not words:
        raise PlanError(f"{where}: needs a NAME")
    name, settings = words[0], words[1:]
    if not _NAME.fullmatch(name):
        raise PlanError(f"{where}: name {name!r} must be 1..63 characters of letters, digits "
                        f"and _.+- starting with a letter or digit")
    values: dict[str, Any] = {}
    for s in settings:
        path, sep, text = s.partition("=")
        if not sep or not path.strip():
            raise PlanError(f"{where} ({name}): {s!r} is not PATH=VALUE")
        if path.strip() == "seed":
            raise PlanError(f"{where} ({name}): seed is not an arm setting; use --seeds")
        values[path.strip()] = _value(text)
    return Arm(name, values)


def plan_from_args(arms: Sequence[Sequence[str]] | None, arms_file: Path | None, seeds: int | None,
                   baseline: str | None, scenario: str | None, spec_file: str | None,
                   overrides: Sequence[str]) -> Plan:
    """The plan of `compactsim experiment`: arms from `--arm` or `--arms FILE` (a YAML file
    with `arms: {NAME: {path: value}}` and optionally scenario, spec, set, seeds,
    baseline; the command line wins)."""
    parsed: list[Arm] = []
    if arms_file is not None:
        try:
            doc = yaml.safe_load(Path(arms_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PlanError(f"--arms {arms_file}: {exc}") from None
        if not isinstance(doc, Mapping) or not isinstance(doc.get("arms"), Mapping):
            raise PlanError(f"--arms {arms_file}: needs a mapping `arms: {{NAME: {{path: "
                            f"value}}}}`")
        for name, values in doc["arms"].items():
            if not isinstance(name, str):
                raise PlanError(f"--arms {arms_file}: arm name {name!r} is not a string "
                                f"(YAML reads on/off/yes/no unquoted as booleans: quote it)")
            if values is not None and not isinstance(values, Mapping):
                raise PlanError(f"--arms {arms_file}: arms.{name} must map paths to values")
            parsed.append(parse_arm([str(name), *(f"{p}={json.dumps(v)}"
                                                  for p, v in (values or {}).items())],
                                    f"arms.{name}"))
        scenario = scenario or doc.get("scenario")
        spec_file = spec_file or doc.get("spec")
        overrides = [*(doc.get("set") or []), *overrides]
        seeds = seeds if seeds is not None else doc.get("seeds")
        baseline = baseline or doc.get("baseline")
    for i, words in enumerate(arms or []):
        parsed.append(parse_arm(words, f"--arm #{i + 1}"))
    if len(parsed) < 2:
        raise PlanError("an experiment needs at least two arms (--arm NAME path=value ...)")
    names = [a.name for a in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanError(f"arm names must differ: {', '.join(dup)} appears twice")
    seeds = 5 if seeds is None else int(seeds)
    if not 1 <= seeds <= 100:
        raise PlanError("--seeds: must be 1..100")
    baseline = baseline or names[0]
    if baseline not in names:
        raise PlanError(f"--baseline: {baseline!r} is not an arm ({', '.join(names)})")
    if not scenario and not spec_file:
        raise PlanError("--scenario or --spec: the base spec every arm starts from")
    return Plan(parsed, seeds, baseline, scenario, spec_file, list(overrides))


def base_raw(plan: Plan) -> dict[str, Any]:
    from compactsim.sim.config import apply_overrides, load_spec
    from compactsim.sim.scenarios import load_scenario
    if plan.scenario:
        raw = load_scenario(plan.scenario)
    else:
        assert plan.spec_file is not None   # the plan has a scenario or a spec file
        raw = load_spec(plan.spec_file)
    return apply_overrides(raw, list(plan.overrides))


def arm_specs(plan: Plan) -> list[tuple[Arm, int, dict[str, Any]]]:
    """(arm, seed, raw spec) of every run, arms in order, seeds in order. ConfigError
    names the path an arm cannot set."""
    from compactsim.sim.config import apply_overrides, config_from_dict
    from compactsim.sim.schema import ConfigError, FieldError
    base = base_raw(plan)
    first = int(base.get("seed", 1))
    out: list[tuple[Arm, int, dict[str, Any]]] = []
    errors: list[FieldError] = []
    for arm in plan.arms:
        try:
            raw = apply_overrides(base, arm.overrides())
            config_from_dict(raw)                   # every field checked before any run
        except ConfigError as exc:
            errors += [FieldError(f"arm {arm.name}: {e.path}", e.reason) for e in exc.errors]
            continue
        out.extend((arm, first + s, {**raw, "seed": first + s}) for s in range(plan.seeds))
    if errors:
        raise ConfigError(errors)
    return out


# ---- running in-process ---------------------------------------------------------------

def simulate(raw: dict[str, Any]) -> dict[str, Any]:
    """One run (in a worker process): its effective spec, summary, series and histograms."""
    from compactsim.sim.config import config_from_dict, config_to_dict
    from compactsim.sim.run import run
    result = run(config_from_dict(raw))
    return {"spec": config_to_dict(result.config), "summary": result.summary,
            "series": result.series, "histograms": histograms_json(result.latency)}


def histograms_json(latency: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Latency histograms in the form `report --out` writes (LatencyHistogram as JSON)."""
    return [{"name": name, "count": h.n,
             "buckets": [{"upper_bound_seconds": b, "count": c} for b, c in h.buckets()]}
            for name, h in sorted(latency.items()) if h.n]


def run_local(plan: Plan, out: Path, jobs: int | None = None,
              on_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every arm x seed in a pool of `jobs` processes (default: the CPUs), write the
    experiment directory `out`, and return the experiment record. `on_done(arm)` is called
    as each run finishes."""
    runs = arm_specs(plan)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(runs)))
    # Load the simulator here, once: the pool's workers fork from this process and start
    # with it, instead of each importing it (0.1 s, a third of a short run).
    import compactsim.sim.run  # noqa: F401
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(simulate, raw): (arm, seed) for arm, seed, raw in runs}
        for fut in as_completed(futures):
            arm, seed = futures[fut]
            r = fut.result()
            write_run(run_dir(out, arm.name, seed), r["spec"], r["summary"], r["series"],
                      r["histograms"])
            if on_done is not None:
                on_done(arm.name)
    return finish(plan, base_raw(plan), out)


# ---- the experiment directory ---------------------------------------------------------

def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / "runs" / arm / f"seed-{seed}"


def write_run(path: Path, spec: Mapping[str, Any], summary: Mapping[str, Any],
              series: Sequence[Mapping[str, Any]], histograms: Sequence[Mapping[str, Any]]
              ) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (path / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    (path / "histograms.json").write_text(json.dumps(list(histograms), indent=2) + "\n")
    if series:
        with (path / "series.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(series[0]))
            w.writeheader()
            w.writerows(series)


def load_run(path: Path) -> dict[str, Any]:
    """What write_run wrote (series as float rows)."""
    out: dict[str, Any] = {"summary": json.loads((path / "summary.json").read_text()),
                           "spec": json.loads((path / "spec.json").read_text()),
                           "series": [], "histograms": []}
    if (path / "series.csv").exists():
        with (path / "series.csv").open() as fh:
            out["series"] = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                             for row in csv.DictReader(fh)]
    if (path / "histograms.json").exists():
        out["histograms"] = json.loads((path / "histograms.json").read_text())
    return out


def finish(plan: Plan | Mapping[str, Any], base: Mapping[str, Any], out: Path,
           source: str = "local") -> dict[str, Any]:
    """Compute the statistics over the runs under `out` and write experiment.json."""
    from compactsim.codec.stats import ArmRun, experiment  # scipy: only when computing
    question = plan.question() if isinstance(plan, Plan) else dict(plan)
    arms = [a["name"] for a in question["arms"]]
    runs = [ArmRun(arm, seed, load_run(run_dir(out, arm, seed))["summary"])
            for arm in arms for seed in seeds_of(out, arm)]
    record = {"question": question, "base_spec": base, "source": source,
              "stats": experiment(runs, arms, question["baseline"])}
    (Path(out) / EXPERIMENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def seeds_of(out: Path, arm: str) -> list[int]:
    d = Path(out) / "runs" / arm
    if not d.is_dir():
        return []
    return sorted(int(p.name.removeprefix("seed-")) for p in d.iterdir()
                  if p.name.startswith("seed-") and (p / "summary.json").exists())


def is_experiment_dir(path: str | Path) -> bool:
    return (Path(path) / EXPERIMENT_FILE).is_file()


def load_experiment(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / EXPERIMENT_FILE).read_text())


def fetch(client, sweep, question: Mapping[str, Any] | None, out: Path) -> dict[str, Any]:
    """Download an experiment sweep's SUCCEEDED runs into the directory layout and write
    experiment.json (its statistics are the ones the server gave)."""
    from google.protobuf.json_format import MessageToDict

    from compactsim.client.api import (
        RUN_STATE,
        effective_spec_dict,
        experiment_from_proto,
        struct_to_dict,
    )
    for pt in sweep.points:
        for name, state in zip(pt.runs, pt.run_states):
            if state != RUN_STATE.SUCCEEDED:
                continue
            run = client.get_run(name)
            spec = effective_spec_dict(run)
            report = client.get_report(name, full=False)
            write_run(run_dir(out, pt.arm, int(spec["seed"])), spec,
                         struct_to_dict(run.summary), client.sample_rows(name),
                         [MessageToDict(h, preserving_proto_field_name=True)
                          for h in report.histograms])
    if question is None:
        question = {"scenario": sweep.scenario.removeprefix("scenarios/") or None,
                    "spec_file": None, "overrides": [], "seeds": sweep.seeds,
                    "baseline": sweep.baseline,
                    "arms": [{"name": a.name, "values": {k: MessageToDict(v)
                                                         for k, v in sorted(a.values.items())}}
                             for a in sweep.arms]}
    stats = experiment_from_proto(sweep.experiment)
    stats["runs"] = {a["name"]: len(seeds_of(out, a["name"])) for a in question["arms"]}
    record = {"question": dict(question), "base_spec": MessageToDict(sweep.base_spec),
              "source": sweep.name, "stats": stats}
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPERIMENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
