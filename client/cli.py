"""The `compactsim` command line.

    compactsim scenarios
    compactsim profiles
    compactsim spec
    compactsim simulate (--scenario NAME | --spec FILE) [--set path=value ...] [--seed N]
                        [--duration 60s] [--out DIR] [--format table|json]
    compactsim compare RUN RUN ... [--diff-only] [--baseline ARM] [--format table|json|csv]
    compactsim plot RUN ... -o FILE.png
    compactsim completion bash|zsh      (eval "$(compactsim completion bash)")
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
    compactsim sweep get SWEEP [--group-by PATH] | list | cancel SWEEP | delete SWEEP
    compactsim scenario NAME [--format yaml|json]
    compactsim trace list | get TRACE

  --server, --token, --ca-cert, --server-name and --timeout go before or after the command.

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
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from compactsim.client.args import connection_args, missing_extra, spec_args
from compactsim.client.remote import add_parsers, dispatch
from compactsim.client.summary import summary_table
from compactsim.sim.config import apply_overrides, config_from_dict, load_spec
from compactsim.sim.scenarios import list_scenarios, load_scenario
from compactsim.sim.schema import ConfigError
from compactsim.sim.units import format_duration

if TYPE_CHECKING:
    from compactsim.sim.run import RunResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compactsim", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"compactsim {_version()}")
    connection_args(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("scenarios", help="list the preset scenarios")
    sub.add_parser("profiles", help="list the kernel profiles and the switches each sets")
    sub.add_parser("spec", help="print the spec reference: every field with its default, "
                                "range and meaning (Markdown, as docs/spec.md)")
    s = sub.add_parser("simulate", help="run one simulation in this process")
    spec_args(s, "a preset (see `compactsim scenarios`)")
    s.add_argument("--out", type=Path, help="write summary, series, procfs files and trace here")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    c = sub.add_parser("compare", help="compare runs: results directories or server runs")
    connection_args(c)
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
    connection_args(pl)
    pl.add_argument("runs", nargs="+", metavar="RUN")
    pl.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.png")
    add_parsers(sub)
    comp = sub.add_parser("completion", help="print a shell completion script: "
                                             "eval \"$(compactsim completion bash)\"")
    comp.add_argument("shell", choices=("bash", "zsh"))
    from compactsim.client import experiment_cmd
    experiment_cmd.add_parser(sub)
    return p


def _version() -> str:
    from compactsim.codec.versions import installed_version
    return installed_version() or "unknown"


def build_config(args: argparse.Namespace):
    raw = load_scenario(args.scenario) if args.scenario else load_spec(args.spec)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.duration is not None:
        overrides.append(f"duration={args.duration}")
    return config_from_dict(apply_overrides(raw, overrides))


def _run_with_progress(cfg, show: bool) -> tuple[RunResult, float]:
    from compactsim.sim.run import run
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





def cmd_profiles(_args) -> int:
    from compactsim.sim.config import PROFILES
    for name, switches in PROFILES.items():
        print(f"{name:7s} " + " ".join(f"{k}={v}" for k, v in switches.items()))
    return EXIT_OK


def cmd_spec(_args) -> int:
    from compactsim.codec.reference import reference
    sys.stdout.write(reference())
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
    except ModuleNotFoundError as exc:
        print(f"compactsim: {missing_extra('simulate', 'sim', exc)}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None:
        from compactsim.client.output import write_results
        written = write_results(result, args.out)
        print(f"compactsim: wrote {len(written)} files under {args.out}", file=sys.stderr)
    if args.format == "json":
        json.dump(result.summary, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        Console().print(summary_table(result.summary, wall))
    return EXIT_OK


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        from compactsim.client.completion import script
        print(script(parser, args.shell), end="")
        return EXIT_OK
    local = {"scenarios": cmd_scenarios, "profiles": cmd_profiles, "spec": cmd_spec,
             "simulate": cmd_simulate}
    if args.command in local:
        return local[args.command](args)
    if args.command == "experiment":
        from compactsim.client.experiment_cmd import cmd_experiment
        return cmd_experiment(args)
    return dispatch(args)


def main(argv: list[str] | None = None) -> int:
    """The command; output cut short by its reader (`| head`) ends it quietly, with the
    status a shell gives a process killed by SIGPIPE."""
    try:
        rc = _main(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # the reader is gone: nothing more can be written, and the interpreter's own flush
        # at exit must not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
