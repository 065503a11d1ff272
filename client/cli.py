"""The `compactsim` command line.

    compactsim scenarios
    compactsim profiles
    compactsim simulate (--scenario NAME | --spec FILE) [--set path=value ...] [--seed N]
                        [--duration 60s] [--out DIR] [--format table|json]
    compactsim compare RUN RUN ... [--diff-only] [--baseline ARM] [--format table|json|csv]
    compactsim plot RUN ... -o FILE.png
    compactsim experiment --scenario S --arm NAME PATH=VALUE ... --arm ... [--seeds N]
                          [--baseline ARM] [--local | --watch] [--out DIR]
    compactsim report EXPERIMENT_DIR|sweeps/ID [--out DIR]   (one HTML page)

  against a server (`--server HOST:PORT` or COMPACTSIM_SERVER; see client/remote.py):

    compactsim run (--scenario NAME | --spec FILE) [--set ...] [--label k=v] [--watch]
    compactsim watch RUN | get RUN [--format json] | cancel RUN | delete RUN
    compactsim list [--filter F] [--order-by O] [--page-size N]
    compactsim samples RUN --format csv|json [--max-points N]
    compactsim report RUN [--out DIR]
    compactsim sweep create --scenario S --grid PATH=V1,V2 ... --seeds N [--watch]
    compactsim sweep get SWEEP [--group-by PATH]

A RUN of compare and plot is a results directory (`simulate --out`, `report --out`) or a
run on the server (`runs/ID` or `ID`). Runs that carry several seeds of one spec are
grouped into arms (the spec fields that differ name them) and compared with intervals and
paired differences, as an experiment directory or `sweeps/ID` of `experiment` is.

`simulate` runs the model in-process with a progress bar on stderr (simulated time
against wall time), prints a summary on stdout and, with `--out`, writes the summary,
time series, procfs files and trace. Exit codes: 0 done, 2 bad spec or arguments
(every bad field is named on stderr), 1 the run failed; remote commands add 3 not found,
4 failed precondition, 5 server unavailable or queue full, 6 not authenticated or not
allowed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compactsim.sim.config import apply_overrides, config_from_dict, load_spec
from compactsim.sim.run import RunResult, run
from compactsim.sim.scenarios import list_scenarios, load_scenario
from compactsim.sim.schema import ConfigError
from compactsim.sim.units import format_duration
from compactsim.client.args import spec_args

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

SUMMARY_COUNTERS = ("pgalloc_normal", "pgfree", "allocstall_normal", "pgscan_kswapd",
                    "pgsteal_kswapd", "pgscan_direct", "pgsteal_direct", "pswpout",
                    "thp_fault_alloc", "thp_fault_fallback", "compact_stall",
                    "compact_success", "compact_fail", "compact_migrate_scanned",
                    "compact_free_scanned", "compact_isolated", "compact_daemon_wake",
                    "compact_daemon_migrate_scanned", "compact_daemon_free_scanned",
                    "pgmigrate_success", "pgmigrate_fail", "oom_kill", "nr_free_pages")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compactsim", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", metavar="HOST:PORT",
                   help="the compactsim server of the remote commands "
                        "(default: $COMPACTSIM_SERVER)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds each server call may take (not watching)")
    p.add_argument("--token", help="bearer token of a server with --token-file "
                                   "(default: $COMPACTSIM_TOKEN)")
    p.add_argument("--ca-cert", metavar="PEM",
                   help="CA certificate of a TLS server; turns TLS on "
                        "(default: $COMPACTSIM_CA_CERT)")
    p.add_argument("--server-name", metavar="NAME",
                   help="the name the server's certificate must carry, if not the host of "
                        "--server")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("scenarios", help="list the preset scenarios")
    sub.add_parser("profiles", help="list the kernel profiles and the switches each sets")
    s = sub.add_parser("simulate", help="run one simulation in this process")
    spec_args(s, "a preset (see `compactsim scenarios`)")
    s.add_argument("--out", type=Path, help="write summary, series, procfs files and trace here")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    c = sub.add_parser("compare", help="compare runs: results directories or server runs")
    c.add_argument("--server", default=argparse.SUPPRESS, metavar="HOST:PORT")
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--diff-only", action="store_true", help="only rows whose values differ")
    c.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="csv: one line per metric and arm (runs of several seeds per arm)")
    c.add_argument("--baseline", metavar="ARM",
                   help="with runs of several seeds per arm: the arm compared with "
                        "(default: the first)")
    c.add_argument("--all", action="store_true",
                   help="with arms: every metric, not only the headline and significant ones")
    pl = sub.add_parser("plot", help="plot runs (directories or server runs) to a PNG")
    pl.add_argument("--server", default=argparse.SUPPRESS, metavar="HOST:PORT")
    pl.add_argument("runs", nargs="+", metavar="RUN")
    pl.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")
    from compactsim.client.remote import add_parsers
    add_parsers(sub)
    from compactsim.client import experiment_cmd
    experiment_cmd.add_parser(sub)
    return p


def build_config(args: argparse.Namespace):
    raw = load_scenario(args.scenario) if args.scenario else load_spec(args.spec)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.duration is not None:
        overrides.append(f"duration={args.duration}")
    return config_from_dict(apply_overrides(raw, overrides))


def _run_with_progress(cfg, show: bool) -> tuple[RunResult, float]:
    start = time.perf_counter()
    if not show:
        return run(cfg), time.perf_counter() - start
    console = Console(stderr=True)
    columns = (TextColumn("[bold]simulating"), BarColumn(),
               TextColumn("{task.fields[sim]} of {task.fields[limit]} simulated"),
               TextColumn("{task.fields[speed]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("run", total=cfg.duration, sim="0s", speed="",
                            limit=format_duration(cfg.duration))

        def progress(now: float, duration: float) -> None:
            wall = time.perf_counter() - start
            bar.update(task, completed=now, sim=f"{now:.1f}s",
                       speed=f"{now / wall:.2f} sim-s/s" if wall > 0 else "")

        result = run(cfg, progress)
    return result, time.perf_counter() - start


def _summary_table(result: RunResult, wall: float) -> Table:
    return summary_table(result.summary, wall)


def summary_table(s: dict, wall: float) -> Table:
    """The summary table of `simulate` (and of `run --watch`), from a run's summary."""
    table = Table(title=f"compactsim: {s['kernel']['profile']}, "
                        f"movable_ops={s['memmap']['design']}, seed {s['seed']}, "
                        f"{format_duration(s['duration_s'])} simulated in {wall:.1f}s")
    table.add_column("counter / measure")
    table.add_column("value", justify="right")
    for key in SUMMARY_COUNTERS:
        table.add_row(key, str(s["vmstat"][key]))
    table.add_row("fragmentation score (per node)", ", ".join(map(str, s["fragmentation_score"])))
    mm = s["memmap"]
    table.add_row("struct page / memmap", f"{mm['struct_page_bytes']} B / "
                  f"{mm['memmap_bytes'] / 2**20:.1f} MiB ({mm['memmap_percent_of_ram']} % of RAM)")
    pf = mm["page_flags"]
    table.add_row("page->flags", f"{pf['nr_pageflags']} flags + {pf['fields_bits']} field bits, "
                  f"LAST_CPUPID {'in flags' if pf['last_cpupid_in_flags'] else 'in struct page'}"
                  f", {pf['free_bits']} bits spare")
    comp = s.get("compaction", {})
    if comp.get("enabled"):
        table.add_row("compaction runs", ", ".join(f"{k} {v}" for k, v in comp["results"].items())
                      or "none")
        for trigger, lat in comp["latency"].items():
            table.add_row(f"compaction latency ({trigger})",
                          f"p50 {lat['p50_us']:.1f} us, p99 {lat['p99_us']:.1f} us, "
                          f"max {lat['max_us']:.1f} us")
        table.add_row("wasted migrations", str(comp["wasted_migrations"]))
    for key, a in s["allocations"].items():
        table.add_row(f"alloc {key}", f"{a['successes']}/{a['attempts']} ok, "
                      f"p50 {a['p50_us']:.1f} us, p99 {a['p99_us']:.1f} us")
    return table


def cmd_profiles(_args) -> int:
    from compactsim.sim.config import PROFILES
    for name, switches in PROFILES.items():
        print(f"{name:7s} " + " ".join(f"{k}={v}" for k, v in switches.items()))
    return EXIT_OK


def cmd_scenarios(_args) -> int:
    for name, desc in list_scenarios().items():
        print(f"{name:20s} {desc}")
    return EXIT_OK


def cmd_simulate(args) -> int:
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        print(f"compactsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"compactsim: cannot read spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result, wall = _run_with_progress(cfg, show=not args.no_progress)
    except ConfigError as exc:
        print(f"compactsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None:
        from compactsim.client.output import write_results
        written = write_results(result, args.out)
        print(f"compactsim: wrote {len(written)} files under {args.out}", file=sys.stderr)
    if args.format == "json":
        json.dump(result.summary, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        Console().print(_summary_table(result, wall))
    return EXIT_OK


def _load_out_dir(path: Path) -> tuple[dict, dict, list[dict]]:
    """(spec, summary, series rows) of a `simulate --out` directory."""
    import csv
    spec = json.loads((path / "spec.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    rows = []
    series = path / "series.csv"
    if series.exists():
        with series.open() as fh:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return spec, summary, rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    local = {"scenarios": cmd_scenarios, "profiles": cmd_profiles, "simulate": cmd_simulate}
    if args.command in local:
        return local[args.command](args)
    if args.command == "experiment":
        from compactsim.client.experiment_cmd import cmd_experiment
        return cmd_experiment(args)
    from compactsim.client.remote import dispatch
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
