"""The `compactsim` commands that talk to a server (`--server ADDR` or COMPACTSIM_SERVER).

Exit codes a script can rely on: 0 ok; 2 bad arguments or spec (each field violation on
its own line of stderr, `spec.<path>: reason`); 3 not found; 4 failed precondition (e.g.
cancelling a finished run) or already exists; 5 server unavailable, queue full or deadline
exceeded; 6 not authenticated (no or unknown `--token`) or not allowed (another user's run);
1 anything else (including a run that FAILED or was CANCELLED under `--watch`).
Messages go to stderr; results (tables, JSON, CSV) to stdout.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compactsim.client.api import (
    RUN_STATE,
    TERMINAL_STATES,
    Client,
    ClientError,
    run_name,
    struct_to_dict,
)
from compactsim.client.args import connection_args, missing_extra, spec_args
from compactsim.client.channel import env_ca_cert, env_token
from compactsim.client.output import read_results
from compactsim.client.summary import summary_table
from compactsim.codec.runstate import RunState

(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_UNAVAILABLE,
 EXIT_DENIED) = range(7)

_EXIT_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_PRECONDITION,
    grpc.StatusCode.ABORTED: EXIT_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
}

ENV_SERVER = "COMPACTSIM_SERVER"


class UsageError(Exception):
    """Bad command-line arguments (exit 2)."""


def exit_code(error: ClientError) -> int:
    return _EXIT_BY_CODE.get(error.code, EXIT_FAILED)


def report_error(error: ClientError) -> int:
    """Print a server (or client-side validation) error on stderr; its exit code."""
    print(f"compactsim: {error.code.name}: {error.message}", file=sys.stderr)
    for v in error.field_violations:
        print(f"  {v.field}: {v.description}", file=sys.stderr)
    retry = error.details.get("RetryInfo", {}).get("retry_delay")
    if retry:
        print(f"  retry after {retry}", file=sys.stderr)
    for kind in ("QuotaFailure", "PreconditionFailure"):
        for v in error.details.get(kind, {}).get("violations", []):
            print(f"  {v.get('subject', '')}: {v.get('description', '')}", file=sys.stderr)
    return exit_code(error)


def server_address(args) -> str:
    addr = getattr(args, "server", None) or os.environ.get(ENV_SERVER)
    if not addr:
        raise UsageError(f"`{args.command}` needs a server: --server HOST:PORT or {ENV_SERVER}")
    return addr


def connect(args) -> Client:
    token = getattr(args, "token", None) or env_token()
    ca_cert = getattr(args, "ca_cert", None) or env_ca_cert()
    try:
        return Client(server_address(args), timeout=args.timeout, token=token,
                      ca_cert=ca_cert, server_name=getattr(args, "server_name", None))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_id(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def state_name(state: int) -> str:
    return RUN_STATE.Name(state)  # type: ignore[arg-type]


def _ts(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def _labels(args) -> dict[str, str]:
    out = {}
    for item in args.labels or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _overrides(args) -> list[str]:
    overrides = list(args.overrides or [])
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "duration", None) is not None:
        overrides.append(f"duration={args.duration}")
    return overrides


def _spec_source(args) -> tuple[str | None, dict | None]:
    if args.spec is None:
        return args.scenario, None
    from compactsim.sim.config import load_spec
    from compactsim.sim.schema import ConfigError
    try:
        return args.scenario if getattr(args, "scenario", None) else None, load_spec(args.spec)
    except OSError as exc:
        raise UsageError(f"cannot read spec: {exc}") from exc
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


_REPLAY_OVERRIDE = re.compile(r"(workload\[\d+\]\.replay\.path)=(.*)", re.DOTALL)


def upload_local_traces(client: Client, spec: dict | None, overrides: list[str]
                        ) -> tuple[dict | None, list[str]]:
    """The spec and overrides with every replay path that is a local file (in the spec
    file, or `--set workload[i].replay.path=FILE`) uploaded to the server and replaced by
    its `traces/{sha256}` name: the server replays only uploaded traces."""
    def uploaded(path: Any) -> Any:
        if not isinstance(path, str) or not Path(path).is_file():
            return path
        print(f"compactsim: uploading trace {path} "
              f"({Path(path).stat().st_size} bytes)", file=sys.stderr)
        name = client.upload_trace(path)
        print(f"compactsim: {path} is {name}", file=sys.stderr)
        return name

    if spec is not None:
        spec = copy.deepcopy(spec)
        for group in spec.get("workload") or []:
            replay = group.get("replay") if isinstance(group, dict) else None
            if isinstance(replay, dict) and "path" in replay:
                replay["path"] = uploaded(replay["path"])
    out = []
    for item in overrides:
        m = _REPLAY_OVERRIDE.fullmatch(item)
        out.append(f"{m.group(1)}={uploaded(m.group(2))}" if m else item)
    return spec, out


# ---- watching --------------------------------------------------------------------------

def watch_with_progress(client: Client, name: str, *, show: bool = True) -> Any:
    """Follow a run's WatchRun stream with a progress bar on stderr until it ends; the
    run as it ended (GetRun)."""
    console = Console(stderr=True)
    columns = (TextColumn("[bold]{task.fields[state]:10s}"), BarColumn(),
               TextColumn("{task.fields[sim]} of {task.fields[limit]} simulated"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not show) as bar:
        task = bar.add_task(run_id(name), total=1.0, state="", sim="0s", limit="?")

        def show_progress(p) -> None:
            total = p.duration_seconds or 1.0
            bar.update(task, total=total, completed=p.sim_time_seconds,
                       sim=f"{p.sim_time_seconds:.1f}s", limit=f"{p.duration_seconds:g}s")

        for msg in client.watch(name, after_sequence=None):
            kind = msg.WhichOneof("message")
            if kind == "snapshot":
                run = msg.snapshot
                bar.update(task, state=state_name(run.state))
                show_progress(run.progress)
                if run.state in TERMINAL_STATES:
                    break
            elif kind == "event":
                ev = msg.event
                which = ev.WhichOneof("kind")
                if which == "progress":
                    show_progress(ev.progress)
                elif which == "state_change":
                    bar.update(task, state=state_name(ev.state_change.state))
                    if ev.state_change.state in TERMINAL_STATES:
                        break
    return client.get_run(name)




def _finish_watched(run, wall: float, as_json: bool = False) -> int:
    """Print a watched run's outcome: the summary table, or why it did not succeed."""
    state = run.state
    if state == RUN_STATE.SUCCEEDED:
        summary = struct_to_dict(run.summary)
        if as_json:
            json.dump(summary, sys.stdout, indent=2, sort_keys=True)
            print()
        else:
            Console().print(summary_table(summary, wall))
        print(f"compactsim: {run.name} SUCCEEDED", file=sys.stderr)
        return EXIT_OK
    why = run.error.message if run.HasField("error") else ""
    print(f"compactsim: {run.name} {state_name(state)}" + (f": {why}" if why else ""),
          file=sys.stderr)
    return EXIT_FAILED


def _wall(run) -> float:
    if run.progress.wall_time_seconds:
        return run.progress.wall_time_seconds
    if run.HasField("start_time") and run.HasField("end_time"):
        return (run.end_time.ToNanoseconds() - run.start_time.ToNanoseconds()) / 1e9
    return 0.0


def _announce(name: str, args) -> None:
    """The created resource's name: first line of stdout, or stderr when stdout is JSON."""
    if args.format == "json" and args.watch:
        print(f"compactsim: created {name}", file=sys.stderr)
    else:
        print(name)
        sys.stdout.flush()


# ---- commands --------------------------------------------------------------------------

def cmd_run(args) -> int:
    scenario, spec = _spec_source(args)
    with connect(args) as c:
        spec, overrides = upload_local_traces(c, spec, _overrides(args))
        run = c.create_run(spec, scenario=scenario, overrides=overrides,
                           display_name=args.display_name or "", labels=_labels(args),
                           run_id=args.run_id or "", validate_only=args.validate_only)
        if args.validate_only:
            print("compactsim: spec is valid", file=sys.stderr)
            json.dump(MessageToDict(run.effective_spec, preserving_proto_field_name=True),
                      sys.stdout, indent=2)
            print()
            return EXIT_OK
        _announce(run.name, args)
        if not args.watch:
            return EXIT_OK
        run = watch_with_progress(c, run.name, show=not args.no_progress)
        return _finish_watched(run, _wall(run), args.format == "json")


def cmd_watch(args) -> int:
    with connect(args) as c:
        if args.events:
            after = args.after_sequence
            for msg in c.watch(args.run, after_sequence=after):
                print(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
                sys.stdout.flush()
            run = c.get_run(args.run)
        else:
            run = watch_with_progress(c, args.run, show=not args.no_progress)
        return _finish_watched(run, _wall(run), args.format == "json")


def _run_dict(run) -> dict[str, Any]:
    out = MessageToDict(run, preserving_proto_field_name=True)
    if run.HasField("summary"):
        out["summary"] = struct_to_dict(run.summary)
    return out


def cmd_list(args) -> int:
    with connect(args) as c:
        resp = c.list_runs(filter=args.filter or "", order_by=args.order_by or "",
                           page_size=args.page_size, page_token=args.page_token or "",
                           show_deleted=args.show_deleted)
    if args.format == "json":
        json.dump({"runs": [_run_dict(r) for r in resp.runs],
                   "next_page_token": resp.next_page_token, "total_size": resp.total_size},
                  sys.stdout, indent=2)
        print()
        return EXIT_OK
    table = Table(title=f"compactsim runs ({len(resp.runs)} of {resp.total_size})")
    for col in ("name", "state", "scenario", "progress", "created"):
        table.add_column(col, no_wrap=True)
    table.add_column("labels", overflow="fold")
    for r in resp.runs:
        table.add_row(r.name, state_name(r.state), r.scenario.removeprefix("scenarios/"),
                      f"{100 * r.progress.fraction:.0f} %", _ts(r.create_time),
                      ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())))
    Console(width=max(180, Console().width)).print(table)
    if resp.next_page_token:
        print(f"compactsim: more runs: --page-token {resp.next_page_token}", file=sys.stderr)
    return EXIT_OK


def cmd_get(args) -> int:
    with connect(args) as c:
        run = c.get_run(args.run)
    if args.format == "json":
        json.dump(_run_dict(run), sys.stdout, indent=2)
        print()
        return EXIT_OK
    table = Table(title=run.name, show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = [("state", state_name(run.state)), ("display name", run.display_name),
            ("scenario", run.scenario), ("sweep", run.sweep), ("creator", run.creator),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(run.labels.items()))),
            ("progress", f"{run.progress.sim_time_seconds:g}s of "
                         f"{run.progress.duration_seconds:g}s "
                         f"({100 * run.progress.fraction:.0f} %)"),
            ("created", _ts(run.create_time)), ("started", _ts(run.start_time)),
            ("ended", _ts(run.end_time)),
            ("seed", str(run.provenance.seed)), ("code version", run.provenance.code_version),
            ("spec sha256", run.provenance.spec_sha256)]
    if run.HasField("error"):
        rows.append(("error", run.error.message))
    for k, v in rows:
        if v:
            table.add_row(k, v)
    Console().print(table)
    return EXIT_OK


def cmd_cancel(args) -> int:
    with connect(args) as c:
        run = c.cancel_run(args.run)
    print(f"{run.name} {state_name(run.state)}")
    return EXIT_OK


def cmd_delete(args) -> int:
    with connect(args) as c:
        run = c.delete_run(args.run, force=args.force)
    print(f"{run.name} deleted")
    return EXIT_OK


def cmd_trace_delete(args) -> int:
    with connect(args) as c:
        c.delete_trace(args.trace)
    print(f"{args.trace} deleted")
    return EXIT_OK


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else v


def cmd_samples(args) -> int:
    with connect(args) as c:
        cols, samples = c.list_samples(args.run, max_points=args.max_points,
                                       columns=args.columns or ())
    if args.format == "json":
        json.dump({"run": run_name(args.run), "columns": ["time_s", *cols],
                   "rows": [[s.time_seconds, *map(_clean, s.values)] for s in samples]},
                  sys.stdout)
        print()
        return EXIT_OK
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["time_s", *cols])
    for s in samples:
        writer.writerow([repr(s.time_seconds), *("" if math.isnan(v) else repr(v)
                                                 for v in s.values)])
    return EXIT_OK


def write_report(client: Client, name: str, out: Path) -> list[Path]:
    """Write a run's report as `simulate --out` lays it out (summary.json, spec.json,
    series.csv, proc/*, trace.txt, thp-faults.txt) plus histograms.json; so the
    directory works with the local `compare` and `plot` too."""
    from compactsim.client.api import effective_spec_dict
    run = client.get_run(name)
    report = client.get_report(name, full=True)
    rows = client.sample_rows(name)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(rel: str, text: str) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    put("summary.json", json.dumps(struct_to_dict(report.summary), indent=2, sort_keys=True)
        + "\n")
    put("spec.json", json.dumps(effective_spec_dict(run), indent=2) + "\n")
    if rows:
        path = out / "series.csv"
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        written.append(path)
    for f in report.procfs_files:
        put(f"proc/{f.name}", f.text)
    put("histograms.json", json.dumps(
        [MessageToDict(h, preserving_proto_field_name=True) for h in report.histograms],
        indent=2) + "\n")
    if report.trace:
        put("trace.txt", report.trace)
    if report.fault_log:
        put("thp-faults.txt", report.fault_log)
    return written


def cmd_report(args) -> int:
    from compactsim.client.experiment import is_experiment_dir
    if is_experiment_dir(args.run) or args.run.startswith("sweeps/"):
        return _experiment_report(args)
    with connect(args) as c:
        if args.out is not None:
            written = write_report(c, args.run, args.out)
            print(f"compactsim: wrote {len(written)} files under {args.out}", file=sys.stderr)
            return EXIT_OK
        report = c.get_report(args.run, full=False)
    con = Console()
    for f in report.procfs_files:
        if not args.file or f.name in args.file:
            con.rule(f.name)
            print(f.text, end="" if f.text.endswith("\n") else "\n")
    if args.file:
        return EXIT_OK
    table = Table(title="allocation latency (simulated)")
    for col in ("histogram", "count", "p50 us", "p90 us", "p99 us", "max us"):
        table.add_column(col, justify="left" if col == "histogram" else "right")
    for h in report.histograms:
        table.add_row(h.name, str(h.count), *(f"{x * 1e6:.1f}" for x in
                      (h.p50_seconds, h.p90_seconds, h.p99_seconds, h.max_seconds)))
    con.print(table)
    return EXIT_OK


def _experiment_report(args) -> int:
    """The HTML page of an experiment directory (written beside it, or to --out PAGE), or
    of an experiment sweep (its runs fetched into --out DIR first)."""
    from compactsim.client.report import write_report
    if args.run.startswith("sweeps/"):
        from compactsim.client.experiment import fetch
        out = args.out or Path("out") / args.run.removeprefix("sweeps/")
        with connect(args) as c:
            sweep = c.get_sweep(args.run)
            if not sweep.arms:
                raise UsageError(f"{args.run} is a grid sweep, not an experiment")
            fetch(c, sweep, None, out)
        page = write_report(out)
    else:
        page = write_report(Path(args.run), args.out)
    print(f"compactsim: wrote {page}", file=sys.stderr)
    print(page)
    return EXIT_OK


def _is_local(arg: str) -> bool:
    """A results directory rather than a run name: it exists, or it looks like a path
    (has a separator other than the `runs/` of a run name, or starts with `.` or `~`)
    while no run name could be meant."""
    if Path(arg).exists():
        return True
    bare = arg.removeprefix("runs/")
    return "/" in bare or os.sep in bare or bare.startswith((".", "~"))


def load_runs(args, want_series: bool) -> list[tuple[str, dict, dict, list[dict]]]:
    """(label, spec, summary, series rows) of each RUN argument: a `simulate --out` /
    `report --out` directory (labelled by its name), or a run on the server (`runs/ID` or
    `ID`, labelled by its display name, else its id)."""
    out = []
    client = None
    try:
        for arg in args.runs:
            if _is_local(arg):
                try:
                    spec, summary, rows = read_results(Path(arg))
                except (OSError, ValueError) as exc:
                    raise UsageError(f"cannot read run results: {exc}") from exc
                path = Path(arg)
                label = (f"{path.parent.name} {path.name}" if path.parent.parent.name == "runs"
                         else path.name)              # runs/{arm}/seed-{n} of an experiment
                out.append((label, spec, summary, rows))
                continue
            if client is None:
                client = connect(args)
            from compactsim.client.api import effective_spec_dict
            run = client.get_run(arg)
            if run.state != RUN_STATE.SUCCEEDED:
                raise ClientError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"{run.name} is {state_name(run.state)}, not SUCCEEDED")
            rows = client.sample_rows(arg) if want_series else []
            label = run.display_name or run_id(run.name)
            if any(label == o[0] for o in out):       # two runs of one name: add the id
                label = f"{label} ({run_id(run.name)})"
            out.append((label, effective_spec_dict(run), struct_to_dict(run.summary), rows))
    finally:
        if client is not None:
            client.close()
    return out


def load_experiment_arg(args, arg: str) -> dict | None:
    """The experiment record of an experiment directory or of `sweeps/ID` (an experiment
    sweep on the server), else None."""
    from compactsim.client.experiment import is_experiment_dir, load_experiment
    if is_experiment_dir(arg):
        return load_experiment(arg)
    if not arg.startswith("sweeps/"):
        return None
    from compactsim.client.api import experiment_from_proto
    with connect(args) as c:
        sweep = c.get_sweep(arg)
    if not sweep.arms:
        raise UsageError(f"{arg} is a grid sweep, not an experiment (see `sweep get`)")
    stats = experiment_from_proto(sweep.experiment)
    stats["runs"] = {pt.arm: sum(s == RUN_STATE.SUCCEEDED for s in pt.run_states)
                     for pt in sweep.points}
    return {"question": {"baseline": sweep.baseline}, "source": sweep.name, "stats": stats}


def _print_experiment(stats: dict, args, title: str) -> int:
    from compactsim.client.compare import stats_table, write_stats
    if args.format == "table":
        Console(width=max(160, Console().width)).print(
            stats_table(stats, args.all, title))
    else:
        write_stats(stats, args.format, sys.stdout, everything=args.all or
                    args.format == "json")
    return EXIT_OK


def cmd_compare(args) -> int:
    from compactsim.client.compare import comparison, group_arms
    if len(args.runs) == 1:
        record = load_experiment_arg(args, args.runs[0])
        if record is not None:
            return _print_experiment(record["stats"], args,
                                     f"compactsim compare {record.get('source', '')}")
    runs = load_runs(args, want_series=False)
    arms = group_arms([r[1] for r in runs])
    if arms is not None:
        from compactsim.codec.stats import ArmRun, experiment
        order = list(dict.fromkeys(arms))
        baseline = args.baseline or order[0]
        if baseline not in order:
            raise UsageError(f"--baseline {baseline!r}: not an arm ({'; '.join(order)})")
        stats = experiment([ArmRun(a, int(r[1].get("seed", 0)), r[2])
                            for a, r in zip(arms, runs)], order, baseline)
        return _print_experiment(stats, args, "compactsim compare (runs grouped by arm)")
    if args.format == "csv":
        raise UsageError("--format csv needs runs of several seeds per arm (an experiment)")
    rows = comparison([r[1] for r in runs], [r[2] for r in runs], args.diff_only)
    if args.format == "json":
        json.dump([{"name": n, "values": v, "delta": d} for n, v, d in rows], sys.stdout,
                  indent=2)
        print()
        return EXIT_OK
    table = Table(title="compactsim compare")
    table.add_column("field", overflow="fold")
    for label, *_ in runs:
        table.add_column(label, justify="right", overflow="fold")
    table.add_column("last - first", justify="right")
    for name, values, d in rows:
        table.add_row(name, *("-" if v is None else str(v) for v in values), d)
    Console(width=max(160, Console().width)).print(table)
    return EXIT_OK


def cmd_plot(args) -> int:
    try:
        from compactsim.client.plot import plot_runs
    except ModuleNotFoundError as exc:
        raise UsageError(missing_extra("plot", "plot", exc)) from None
    runs = load_runs(args, want_series=True)
    out = plot_runs({r[0]: r[3] for r in runs}, args.output)
    print(f"compactsim: wrote {out}", file=sys.stderr)
    return EXIT_OK


# ---- sweeps ----------------------------------------------------------------------------

def _grid(items: list[str]) -> dict[str, list[Any]]:
    import yaml
    grid: dict[str, list[Any]] = {}
    for item in items:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path or not text.strip():
            raise UsageError(f"--grid {item!r}: expected PATH=V1,V2,...")
        values = []
        for t in text.split(","):
            v = yaml.safe_load(t.strip()) if t.strip() else None
            values.append(v)
        grid[path] = values
    return grid


def _value(v) -> str:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return f"{v.number_value:g}"
    if kind == "bool_value":
        return str(v.bool_value).lower()
    if kind == "string_value":
        return v.string_value
    return "null"


def sweep_table(sweep, group_by: str | None = None) -> Table:
    """One column per grid point (ordered by `group_by`, else grid order), headed by
    its parameter values; rows: the runs that succeeded, then each metric's mean ±
    stddev over the point's seeds."""
    paths = [p.path for p in sweep.parameters]
    metrics = list(sweep.metrics) or sorted({m for pt in sweep.points for m in pt.aggregates})
    counts = ", ".join(f"{k} {v}" for k, v in sorted(sweep.run_state_counts.items()))
    points = list(sweep.points)
    if group_by:
        if group_by not in paths:
            raise UsageError(f"--group-by {group_by!r}: not a parameter ({', '.join(paths)})")
        points.sort(key=lambda pt: (_value(pt.values[group_by]), pt.index))
    table = Table(title=f"{sweep.name} {sweep_pb2_state(sweep.state)} ({counts})")
    table.add_column("point", overflow="fold")
    for pt in points:
        head = pt.arm or "\n".join(_value(pt.values[p]) if p in pt.values else "-"
                                    for p in paths)
        table.add_column(f"#{pt.index}\n{head}", justify="right")
    for p in paths:
        table.add_row(p, *(_value(pt.values[p]) if p in pt.values else "-" for pt in points))
    table.add_row("runs ok", *(f"{sum(s == RUN_STATE.SUCCEEDED for s in pt.run_states)}"
                               f"/{len(pt.run_states)}" for pt in points), end_section=True)
    for m in metrics:
        cells = []
        for pt in points:
            a = pt.aggregates.get(m)
            cells.append("-" if a is None or not a.count else
                         f"{a.mean:.4g} ± {a.stddev:.2g}" + (f" (n={a.count})"
                                                           if a.count != sweep.seeds else ""))
        table.add_row(m, *cells)
    return table


def sweep_pb2_state(state: int) -> str:
    from compactsim.proto.v1 import sweep_pb2
    return sweep_pb2.Sweep.State.Name(state)  # type: ignore[arg-type]


def _sweep_json(sweep) -> dict:
    return MessageToDict(sweep, preserving_proto_field_name=True)


def _wait_sweep(client: Client, name: str, show: bool, poll_s: float = 0.5):
    from compactsim.proto.v1 import sweep_pb2
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]sweep"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} runs finished"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not show) as bar:
        task = bar.add_task("sweep", total=1)
        while True:
            sweep = client.get_sweep(name)
            total = sum(sweep.run_state_counts.values()) or 1
            done = sum(v for k, v in sweep.run_state_counts.items() if RunState(k).terminal)
            bar.update(task, total=total, completed=done)
            if sweep.state != sweep_pb2.Sweep.RUNNING:
                return sweep
            time.sleep(poll_s)


def _print_sweep(sweep, args) -> None:
    if args.format == "json":
        json.dump(_sweep_json(sweep), sys.stdout, indent=2)
        print()
    else:
        Console(width=max(160, Console().width)).print(
            sweep_table(sweep, getattr(args, "group_by", None)))


def cmd_sweep_create(args) -> int:
    from compactsim.proto.v1 import sweep_pb2
    scenario, spec = _spec_source(args)
    grid = _grid(args.grid)
    with connect(args) as c:
        sweep = c.create_sweep(grid, scenario=scenario, base_spec=spec,
                               overrides=_overrides(args), seeds=args.seeds,
                               metrics=args.metrics or (), labels=_labels(args),
                               display_name=args.display_name or "",
                               sweep_id=args.sweep_id or "", validate_only=args.validate_only)
        if args.validate_only:
            print("compactsim: sweep is valid", file=sys.stderr)
            return EXIT_OK
        _announce(sweep.name, args)
        if not args.watch:
            return EXIT_OK
        sweep = _wait_sweep(c, sweep.name, show=not args.no_progress)
    _print_sweep(sweep, args)
    return EXIT_OK if sweep.state == sweep_pb2.Sweep.SUCCEEDED else EXIT_FAILED


def cmd_sweep_get(args) -> int:
    with connect(args) as c:
        sweep = _wait_sweep(c, args.sweep, show=not args.no_progress) if args.watch \
            else c.get_sweep(args.sweep)
    _print_sweep(sweep, args)
    return EXIT_OK


def cmd_sweep_list(args) -> int:
    with connect(args) as c:
        sweeps = c.list_sweeps(show_deleted=args.show_deleted)
    if args.format == "json":
        json.dump([MessageToDict(s) for s in sweeps], sys.stdout, indent=2)
        print()
        return EXIT_OK
    table = Table()
    for col in ("sweep", "display name", "state", "runs", "creator", "created"):
        table.add_column(col)
    for s in sweeps:
        table.add_row(s.name, s.display_name, sweep_pb2_state(s.state),
                      ", ".join(f"{k} {v}" for k, v in sorted(s.run_state_counts.items())),
                      s.creator, _ts(s.create_time))
    Console(width=max(120, Console().width)).print(table)
    return EXIT_OK


def cmd_sweep_cancel(args) -> int:
    with connect(args) as c:
        sweep = c.cancel_sweep(args.sweep)
    print(f"{sweep.name}: {sweep_pb2_state(sweep.state)}, runs "
          + ", ".join(f"{k} {v}" for k, v in sorted(sweep.run_state_counts.items())))
    return EXIT_OK


def cmd_sweep_delete(args) -> int:
    with connect(args) as c:
        sweep = c.delete_sweep(args.sweep, force=args.force)
    print(f"{sweep.name}: deleted with its {sum(sweep.run_state_counts.values())} runs")
    return EXIT_OK


def cmd_scenario(args) -> int:
    with connect(args) as c:
        sc = c.get_scenario(args.scenario)
    data = {"name": sc.name, "title": sc.title, "description": sc.description,
            "spec": MessageToDict(sc.spec)}
    if args.format == "json":
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        import yaml
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def _print_traces(traces, fmt: str) -> None:
    if fmt == "json":
        json.dump([MessageToDict(t) for t in traces], sys.stdout, indent=2)
        print()
        return
    table = Table()
    for col in ("trace", "bytes", "uploaded"):
        table.add_column(col)
    for t in traces:
        table.add_row(t.name, str(t.size_bytes), _ts(t.create_time))
    Console(width=max(120, Console().width)).print(table)


def cmd_trace_list(args) -> int:
    with connect(args) as c:
        _print_traces(c.list_traces(), args.format)
    return EXIT_OK


def cmd_trace_get(args) -> int:
    with connect(args) as c:
        _print_traces([c.get_trace(args.trace)], args.format)
    return EXIT_OK


# ---- argument parsing -----------------------------------------------------------------

def add_parsers(sub) -> None:
    """Add the remote commands to the `compactsim` subparsers."""
    def remote(name: str, help: str, parent=sub):
        p = parent.add_parser(name, help=help)
        connection_args(p)
        return p

    r = remote("run", "create a run on the server (with --watch: follow it, then summarize); "
                      "a replay trace that is a local file (workload[i].replay.path in the "
                      "spec or --set) is uploaded first and replaced by its traces/{sha256} "
                      "name")
    r.description = ("Create a run on the server. A replay trace that is a local file "
                     "(workload[i].replay.path in the spec file or in --set) is uploaded "
                     "first and the spec sent names it traces/{sha256}: the server replays "
                     "only uploaded traces.")
    spec_args(r, "a preset on the server")
    r.add_argument("--label", dest="labels", action="append", metavar="KEY=VALUE")
    r.add_argument("--display-name")
    r.add_argument("--run-id", help="the {run} of runs/{run} (default: the server chooses)")
    r.add_argument("--validate-only", action="store_true",
                   help="only validate; print the effective spec")
    r.add_argument("--watch", action="store_true",
                   help="progress bar on stderr until the run ends, then the summary")
    r.add_argument("--format", choices=("table", "json"), default="table")
    r.add_argument("--no-progress", action="store_true")

    w = remote("watch", "follow a run until it ends, then print its summary")
    w.add_argument("run", metavar="RUN")
    w.add_argument("--events", action="store_true",
                   help="print each stream message as a JSON line instead of a progress bar")
    w.add_argument("--after-sequence", type=int, default=0,
                   help="with --events: replay stored events after this sequence")
    w.add_argument("--format", choices=("table", "json"), default="table")
    w.add_argument("--no-progress", action="store_true")

    ls = remote("list", "list runs")
    ls.add_argument("--filter", help='e.g. state = SUCCEEDED AND labels.team = "mm"')
    ls.add_argument("--order-by", help='e.g. "create_time desc"')
    ls.add_argument("--page-size", type=int, default=0)
    ls.add_argument("--page-token")
    ls.add_argument("--show-deleted", action="store_true")
    ls.add_argument("--format", choices=("table", "json"), default="table")

    g = remote("get", "show a run")
    g.add_argument("run", metavar="RUN")
    g.add_argument("--format", choices=("table", "json"), default="table")

    cn = remote("cancel", "cancel a run")
    cn.add_argument("run", metavar="RUN")
    d = remote("delete", "delete a finished run")
    d.add_argument("run", metavar="RUN")
    d.add_argument("--force", action="store_true", help="cancel it first if it has not ended")

    sm = remote("samples", "print a run's time series")
    sm.add_argument("run", metavar="RUN")
    sm.add_argument("--format", choices=("csv", "json"), default="csv")
    sm.add_argument("--max-points", type=int, default=0)
    sm.add_argument("--column", dest="columns", action="append", metavar="NAME")

    rp = remote("report", "a run's procfs files and latency histograms (--out: all files); "
                          "of an experiment (its directory or sweeps/ID): one HTML page")
    rp.add_argument("run", metavar="RUN|EXPERIMENT")
    rp.add_argument("--out", type=Path, metavar="DIR",
                    help="write summary, spec, series, procfs files, histograms and trace; "
                         "for an experiment directory: the page (default DIR/report.html); "
                         "for sweeps/ID: the directory its runs are fetched into")
    rp.add_argument("--file", action="append", metavar="NAME",
                    help="print only this procfs file (e.g. buddyinfo)")

    sw = remote("sweep", "parameter sweeps")
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    sc = remote("create", "create a sweep (one run per grid point and seed)", ssub)
    spec_args(sc, "a preset on the server")
    sc.add_argument("--grid", action="append", required=True, metavar="PATH=V1,V2,...",
                    help="an axis, e.g. kernel.movable_ops=NONE,MAPPING_OPS")
    sc.add_argument("--seeds", type=int, default=1)
    sc.add_argument("--metric", dest="metrics", action="append", metavar="PATH")
    sc.add_argument("--label", dest="labels", action="append", metavar="KEY=VALUE")
    sc.add_argument("--display-name")
    sc.add_argument("--sweep-id")
    sc.add_argument("--validate-only", action="store_true")
    sc.add_argument("--watch", action="store_true")
    sc.add_argument("--group-by", metavar="PATH")
    sc.add_argument("--format", choices=("table", "json"), default="table")
    sc.add_argument("--no-progress", action="store_true")
    sg = remote("get", "a sweep's points and aggregates", ssub)
    sg.add_argument("sweep", metavar="SWEEP")
    sg.add_argument("--watch", action="store_true", help="wait until every run has ended")
    sg.add_argument("--group-by", metavar="PATH", help="order points by this parameter")
    sg.add_argument("--format", choices=("table", "json"), default="table")
    sg.add_argument("--no-progress", action="store_true")
    sl = remote("list", "list sweeps: name, state, runs by state", ssub)
    sl.add_argument("--show-deleted", action="store_true")
    sl.add_argument("--format", choices=("table", "json"), default="table")
    scn = remote("cancel", "cancel the sweep's runs that have not ended", ssub)
    scn.add_argument("sweep", metavar="SWEEP")
    sd = remote("delete", "delete a sweep and its runs", ssub)
    sd.add_argument("sweep", metavar="SWEEP")
    sd.add_argument("--force", action="store_true",
                    help="cancel its runs first if they have not ended")

    scen = remote("scenario", "show a preset scenario of the server, with its spec")
    scen.add_argument("scenario", metavar="NAME")
    scen.add_argument("--format", choices=("yaml", "json"), default="yaml")

    tr = remote("trace", "uploaded traces")
    tsub = tr.add_subparsers(dest="trace_command", required=True)
    tl = remote("list", "list the uploaded traces", tsub)
    tl.add_argument("--format", choices=("table", "json"), default="table")
    tg = remote("get", "show an uploaded trace", tsub)
    tg.add_argument("trace", metavar="TRACE")
    tg.add_argument("--format", choices=("table", "json"), default="table")
    td = remote("delete", "delete your upload of a trace (admins: anyone's)", tsub)
    td.add_argument("trace", metavar="TRACE", help="traces/{sha256}, or the sha256")


HANDLERS = {"run": cmd_run, "watch": cmd_watch, "list": cmd_list, "get": cmd_get,
            "cancel": cmd_cancel, "delete": cmd_delete, "samples": cmd_samples,
            "report": cmd_report, "scenario": cmd_scenario}


def dispatch(args) -> int:
    """Run a remote command (or remote-capable compare/plot); errors become exit codes."""
    if args.command == "sweep":
        handler = {"create": cmd_sweep_create, "get": cmd_sweep_get, "list": cmd_sweep_list,
                   "cancel": cmd_sweep_cancel, "delete": cmd_sweep_delete}[args.sweep_command]
    elif args.command == "trace":
        handler = {"list": cmd_trace_list, "get": cmd_trace_get,
                   "delete": cmd_trace_delete}[args.trace_command]
    elif args.command == "compare":
        handler = cmd_compare
    elif args.command == "plot":
        handler = cmd_plot
    else:
        handler = HANDLERS[args.command]
    try:
        return handler(args)
    except UsageError as exc:
        print(f"compactsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("compactsim: interrupted", file=sys.stderr)
        return 130
