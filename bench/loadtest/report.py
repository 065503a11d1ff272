"""The load test's table (rich) and its notes.
"""

from __future__ import annotations

from bench.loadtest import GOAL_GETRUN_P99_S, GOAL_SLOWDOWN
from bench.loadtest.phases import Figures


def render(fig: Figures) -> None:
    from rich.console import Console
    from rich.table import Table

    v = fig.verdicts()

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("[green]PASS[/]" if ok else "[red]FAIL[/]")

    s = fig.setup
    table = Table(title="compactsim-server under load (loopback)")
    for col in ("figure", "value", "goal", "result"):
        table.add_column(col, justify="right" if col == "value" else "left")
    ms = 1000
    table.add_row("GetRun p50", f"{fig.get_p50_s * ms:.1f} ms", "", verdict(None))
    table.add_row("GetRun p99", f"{fig.get_p99_s * ms:.1f} ms",
                  f"< {GOAL_GETRUN_P99_S * ms:.0f} ms", verdict(v["getrun_p99"]))
    table.add_row("CreateRun p50", f"{fig.create_p50_s * ms:.1f} ms", "", verdict(None))
    table.add_row("CreateRun p99", f"{fig.create_p99_s * ms:.1f} ms", "", verdict(None))
    table.add_row("simulation slowdown", f"{fig.slowdown:+.1%}", f"< {GOAL_SLOWDOWN:.0%}",
                  verdict(v["slowdown"]))
    for phase, runs in (("idle", fig.idle_runs), ("load", fig.load_runs),
                        ("control", fig.control_runs)):
        if not runs:
            continue
        table.add_row(f"  wall s, {phase}", " ".join(f"{r.wall_s:.2f}" for r in runs), "", "")
        table.add_row(f"  on CPU s / waiting for it s, {phase}",
                      " ".join("?" if r.cpu_s is None else f"{r.cpu_s:.2f}/{r.wait_s:.2f}"
                               for r in runs), "", "")
    rows = [("  slowdown of the time on CPU", fig.cpu_slowdown),
            ("  slowdown of wall minus run-queue wait", fig.unqueued_slowdown)]
    if fig.control_runs:
        rows += [("  control (RPC CPU busy, no RPCs): slowdown", fig.control_slowdown),
                 ("  control: slowdown of the time on CPU", fig.control_cpu_slowdown)]
    for what, x in rows:
        table.add_row(what, "?" if x is None else f"{x:+.1%}", "", verdict(None))
    table.add_row("server VmHWM after idle phase", f"{fig.server_hwm_idle_bytes / 2**20:.0f} MiB",
                  "", verdict(None))
    table.add_row("server VmHWM at end", f"{fig.server_hwm_bytes / 2**20:.0f} MiB", "",
                  verdict(None))
    table.add_row("CreateRun OK / missing from ListRuns",
                  f"{fig.creates_ok} / {fig.created_missing}", "0 missing",
                  verdict(fig.created_missing == 0))
    table.add_row("watch streams / without terminal state or gapless sequence",
                  f"{fig.watches} / {len(fig.watches_bad)}", "0", verdict(not fig.watches_bad))
    table.add_row("nothing lost", "yes" if fig.nothing_lost else "no", "yes",
                  verdict(v["nothing_lost"]))
    console = Console()
    console.print(table)
    console.print(
        f"Setup: python {s['python']}, CPUs {s['cpus']}; the server's workers (--workers 1) "
        f"on CPU {s['simulation_cpus']}, the server process and {s['clients']} client "
        f"processes on CPU {s['rpc_cpus']}; of the {s['server_descendants_seen']} processes "
        f"below the server (forkserver, workers) {s['workers_moved_to_simulation_cpu']} were "
        f"moved there when first seen, the others were forked there.\n"
        f"Load: {fig.watches} WatchRun streams, {fig.creates_ok} CreateRun OK "
        f"(errors: {fig.create_errors or 'none'}) over {s['create_window_s']:.1f} s, "
        f"{fig.get_calls} GetRun calls (errors: {fig.get_errors or 'none'}), "
        f"{fig.cancelled} queued runs cancelled at the end. "
        f"Slowdown: the sum of the {len(fig.load_runs)} runs' wall time (the workers' own "
        f"clock) under load over idle, same spec and seed. Where it went, from the workers' "
        f"/proc/PID/schedstat sampled every 50 ms: time on the CPU, and time runnable but "
        f"waiting while something else ran on the simulation CPU (nothing of this test is "
        f"pinned there but the workers: that is other work on the machine). "
        + (f"Control: the same runs while {s['clients']} processes spin on the RPC CPU and "
           f"nothing calls the server. " if fig.control_runs else "")
        + f"Load average {s['load_average_start']:.2f} at start, "
        f"{s['load_average_end']:.2f} at end. "
        f"Total {fig.duration_s:.0f} s.", highlight=False)
    for w in fig.watches_bad[:10]:
        console.print(f"  lost: {w}", highlight=False)
