"""Benchmarks: the speed and memory figures the project holds itself to (its budgets).

Not timed tests: each benchmark measures and prints, and the table says how each figure
compares with its goal. Speed is reported as a ratio to the floor (bare SimPy events per
wall second) measured in the same process run, so the figures compare across machines.

    python -m bench                 every benchmark, one table
    python -m bench churn           one benchmark (the floor is measured too: ratios need it)
    python -m bench churn --profile also cProfile the churn run (fill and steady phases)

Modules: `floor`, `churn`, `memory`, `scaling`, `compaction`, `presets`, `sweep`, one per
benchmark;
`harness` runs a config through `sim.run.run` and records wall time and counters at its
progress steps;
`workloads` holds the specs they share. `results/` keeps `--json` tables of this machine
(2 cpus) by date: the figures before and after a piece of speed work, each with the
floor of its own run.

`python -m bench.loadtest` (`make loadtest`) is separate: a load test of the gRPC server
on loopback (latency, simulation slowdown, server memory, nothing lost under load).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Row:
    """One line of the table: a figure, how it compares with its goal, and a verdict."""

    name: str
    figure: float
    unit: str
    ratio: float | None = None     # to the floor, or to the goal's bound
    goal: str = ""                 # the design goal in words ("" for an informative figure)
    passed: bool | None = None     # None: informative, no verdict
    note: str = ""

    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


def fmt_figure(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.3f}"
    return f"{x:.4g}"


def render_table(rows: list[Row]) -> str:
    """Rows as an aligned text table, notes underneath."""
    head = ("benchmark", "figure", "unit", "ratio", "goal", "result")
    cells = [head] + [(r.name, fmt_figure(r.figure), r.unit,
                       "" if r.ratio is None else f"{r.ratio:.3f}", r.goal or "(info)",
                       r.verdict()) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(s.rjust(w) if j in (1, 3) else s.ljust(w)
                               for j, (s, w) in enumerate(zip(c, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes:"] + notes
    return "\n".join(lines)
