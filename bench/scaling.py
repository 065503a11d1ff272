"""Scaling: per-operation wall cost at 1 GiB and at 64 GiB under the same work.

The churn of `bench.workloads.fixed_spec` (absolute rates and lifetimes, live set 100 Ki
pages whatever the size) runs through `sim.run.run` on both machines, alternating sizes,
best of three each. The figure is wall seconds per allocation-or-free over the steady
window (after four mean lifetimes): the build of the machine and the final summary are
outside it and reported apart, as is the whole run's cost per operation. Goal: the
64 GiB cost within 1.2 times the 1 GiB cost.
"""

from __future__ import annotations

from bench import Row
from bench import workloads as wl
from bench.harness import instrumented_run

SMALL, LARGE = "1GiB", "64GiB"
REPEATS = 3
GOAL = 1.2


def once(size: str) -> dict:
    cfg = wl.config(wl.fixed_spec(size))
    _, probe = instrumented_run(cfg)
    steady = probe.window(wl.FIXED_WARMUP_S)
    whole = probe.steps[-1].ops
    return {"s_per_op": steady.s_per_op, "cpu_s_per_op": steady.cpu_s_per_op, "ops": steady.ops,
            "wall": steady.wall_s,
            "events_per_alloc": steady.events_per_alloc, "build_s": probe.build_s,
            "finish_s": probe.finish_s, "whole_s_per_op": (probe.t_end - probe.t_start) / whole,
            "in_use": probe.steps[-1].in_use}


def measure() -> list[Row]:
    best: dict[str, dict] = {}
    for _ in range(REPEATS):
        for size in (SMALL, LARGE):
            r = once(size)
            if size not in best or r["s_per_op"] < best[size]["s_per_op"]:
                best[size] = r
    rows = []
    for size in (SMALL, LARGE):
        r = best[size]
        rows.append(Row(f"scaling.{size}", r["s_per_op"] * 1e6, "us/op",
                        note=f"{r['ops']:,} allocs+frees in {r['wall']:.2f} wall s "
                             f"({r['cpu_s_per_op'] * 1e6:.3f} CPU us/op) "
                             f"(best of {REPEATS}); {r['events_per_alloc']:.3f} events/alloc; "
                             f"in use {r['in_use']:.2%}; build {r['build_s']:.3f} s, summary+files "
                             f"{r['finish_s']:.3f} s, whole run "
                             f"{r['whole_s_per_op'] * 1e6:.3f} us/op"))
    ratio = best[LARGE]["s_per_op"] / best[SMALL]["s_per_op"]
    whole = best[LARGE]["whole_s_per_op"] / best[SMALL]["whole_s_per_op"]
    cpu = best[LARGE]["cpu_s_per_op"] / best[SMALL]["cpu_s_per_op"]
    rows.append(Row("scaling.64GiB/1GiB", ratio, "x", ratio / GOAL, f"<= {GOAL}x", ratio <= GOAL,
                    note=f"steady window only; in CPU time {cpu:.3f}x; whole run() incl. build "
                         f"and summary: {whole:.3f}x"))
    return rows


def main(floor: float | None = None) -> list[Row]:
    return measure()
