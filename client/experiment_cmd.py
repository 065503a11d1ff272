"""`compactsim experiment`: arms x seeds, in-process (`--local`) or as one sweep on the
server; one progress bar per arm; the table of codec/stats.py; the results laid out as
client/experiment.py describes, for `compare`, `report` and `plot`."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from compactsim.client import experiment as ex
from compactsim.client.args import connection_args

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub) -> None:
    p = sub.add_parser(
        "experiment", help="arms x seeds with a baseline: intervals and paired differences",
        description="Run every arm with the same seeds (common random numbers: a seed gives "
                    "every arm the same workload) and compare each arm with the baseline, "
                    "seed by seed. Arms from --arm NAME PATH=VALUE ... or --arms FILE.yaml "
                    "(arms: {NAME: {path: value}}; optional scenario, spec, set, seeds, "
                    "baseline). Through the server as one sweep, or in-process with --local.")
    connection_args(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", help="the preset every arm starts from")
    src.add_argument("--spec", type=Path, help="a YAML or JSON spec file every arm starts from")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="PATH=VALUE", help="a spec field for every arm")
    p.add_argument("--arm", dest="arms", action="append", nargs="+",
                   metavar="NAME [PATH=VALUE]", help="an arm: its name and spec fields")
    p.add_argument("--arms", dest="arms_file", type=Path, metavar="FILE.yaml")
    p.add_argument("--seeds", type=int, help="runs per arm (default 5)")
    p.add_argument("--baseline", metavar="ARM", help="the arm compared with (default: first)")
    p.add_argument("--local", action="store_true", help="simulate in this machine's processes")
    p.add_argument("--jobs", type=int, help="with --local: worker processes (default: CPUs)")
    p.add_argument("--watch", action="store_true",
                   help="on a server: wait with a progress bar per arm, then fetch the runs "
                        "and print the table (--local always waits)")
    p.add_argument("--out", type=Path, default=Path("out/experiment"), metavar="DIR",
                   help="the experiment directory (default out/experiment)")
    p.add_argument("--display-name", default="")
    p.add_argument("--label", dest="labels", action="append", metavar="KEY=VALUE")
    p.add_argument("--all", action="store_true", help="every metric, not only the headline "
                                                      "and the significant ones")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--no-progress", action="store_true")


def arm_bars(arms: Mapping[str, int], show: bool) -> Progress:
    """One bar per arm (finished runs of its total)."""
    return Progress(TextColumn("[bold]{task.description:>20}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("runs"), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not show)


def print_result(result: Mapping[str, Any], args, title: str) -> None:
    from compactsim.client.compare import stats_table, write_stats
    if args.format == "table":
        Console(width=max(160, Console().width)).print(stats_table(result, args.all, title))
    else:
        write_stats(result, args.format, sys.stdout, everything=args.all or
                    args.format == "json")


def cmd_experiment(args) -> int:
    from compactsim.sim.schema import ConfigError
    try:
        plan = ex.plan_from_args(args.arms, args.arms_file, args.seeds, args.baseline,
                                 args.scenario, str(args.spec) if args.spec else None,
                                 args.overrides)
        if args.local:
            ex.arm_specs(plan)               # every arm's spec checked before any run
    except (ex.PlanError, ConfigError) as exc:
        print(f"compactsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"compactsim: cannot read spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.local:
        return _local(plan, args)
    from compactsim.client import remote
    try:
        return _remote(plan, args)
    except remote.UsageError as exc:
        print(f"compactsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except remote.ClientError as exc:
        return remote.report_error(exc)


def _title(plan: ex.Plan, source: str) -> str:
    base = plan.scenario or plan.spec_file
    return f"compactsim experiment: {base}, {len(plan.arms)} arms x {plan.seeds} seeds ({source})"


def _local(plan: ex.Plan, args) -> int:
    start = time.perf_counter()
    with arm_bars({a.name: plan.seeds for a in plan.arms}, not args.no_progress) as bars:
        tasks = {a.name: bars.add_task(a.name, total=plan.seeds) for a in plan.arms}
        record = ex.run_local(plan, args.out, args.jobs,
                              on_done=lambda arm: bars.advance(tasks[arm]))
    print_result(record["stats"], args, _title(plan, f"in-process, "
                                                     f"{time.perf_counter() - start:.0f} s"))
    print(f"compactsim: experiment in {args.out} (compactsim report {args.out})",
          file=sys.stderr)
    return EXIT_OK


def _remote(plan: ex.Plan, args) -> int:
    from compactsim.client import remote
    from compactsim.client.api import experiment_from_proto
    spec = None if plan.spec_file is None else _spec_dict(plan.spec_file)
    with remote.connect(args) as c:
        spec, overrides = remote.upload_local_traces(c, spec, list(plan.overrides))
        sweep = c.create_sweep({}, scenario=plan.scenario, base_spec=spec,
                               overrides=overrides, seeds=plan.seeds,
                               labels=remote._labels(args), display_name=args.display_name,
                               arms={a.name: a.values for a in plan.arms},
                               baseline=plan.baseline)
        print(f"compactsim: created {sweep.name}", file=sys.stderr)
        if not args.watch:
            print(sweep.name)
            return EXIT_OK
        sweep = wait_arms(c, sweep.name, show=not args.no_progress)
        ex.fetch(c, sweep, plan.question(), args.out)
    print_result(experiment_from_proto(sweep.experiment), args,
                 _title(plan, f"{sweep.name}, {remote.sweep_pb2_state(sweep.state)}"))
    print(f"compactsim: experiment in {args.out} (compactsim report {args.out})",
          file=sys.stderr)
    return EXIT_OK if remote.sweep_pb2_state(sweep.state) == "SUCCEEDED" else EXIT_FAILED


def _spec_dict(path: str) -> dict:
    from compactsim.client.remote import UsageError
    from compactsim.sim.config import load_spec
    from compactsim.sim.schema import ConfigError
    try:
        return load_spec(path)
    except (OSError, ConfigError) as exc:
        raise UsageError(f"cannot read spec: {exc}") from exc


def wait_arms(client, name: str, show: bool, poll_s: float = 0.5):
    """Poll a sweep until its runs have ended, with a bar per arm (point)."""
    from compactsim.client.api import TERMINAL_STATES
    sweep = client.get_sweep(name)
    with arm_bars({}, show) as bars:
        tasks = {pt.index: bars.add_task(pt.arm or f"#{pt.index}", total=len(pt.runs))
                 for pt in sweep.points}
        while True:
            for pt in sweep.points:
                bars.update(tasks[pt.index],
                            completed=sum(s in TERMINAL_STATES for s in pt.run_states))
            if sweep.state != sweep.RUNNING:
                return sweep
            time.sleep(poll_s)
            sweep = client.get_sweep(name)


