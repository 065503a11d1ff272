"""Pictures of runs over time (matplotlib, headless): a panel per quantity, a line per run
labelled by the run's display name. Free blocks of orders 9 and 10 (the THP and
MAX_ORDER blocks compaction works for) get panels of their own, so their few blocks are
not flattened under the thousands of low-order ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

RATES = ("compact_stall", "compact_success", "pgmigrate_success", "thp_fault_fallback")
ORDERS = (10, 9, 3)
STYLES = ("-", "--", "-.", ":")


def _column(rows: Sequence[Mapping[str, Any]], suffix: str) -> list[float]:
    """Sum over zones/nodes of the columns ending in `suffix`."""
    return [sum(v for k, v in row.items() if k.endswith(suffix)) for row in rows]


def _rate(times: list[float], counts: list[float]) -> tuple[list[float], list[float]]:
    pts = [(t1, (c1 - c0) / (t1 - t0)) for t0, t1, c0, c1 in
           zip(times, times[1:], counts, counts[1:]) if t1 > t0]
    return [p[0] for p in pts], [p[1] for p in pts]


def runs_figure(series: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """The figure of `plot`: `series` maps a run's display name to its sample rows."""
    panels = ["score", *(f"order{o}" for o in ORDERS), *RATES]
    fig, grid = plt.subplots(4, 2, figsize=(13, 13), sharex=True)
    axes = dict(zip(panels, grid.flat))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(series.items()):
        if not rows:
            continue
        style = {"color": colors[i % len(colors)], "linestyle": STYLES[i % len(STYLES)],
                 "label": label}
        t = [r["time_s"] for r in rows]
        axes["score"].plot(t, _column(rows, "_fragmentation_score"), **style)
        for order in ORDERS:
            axes[f"order{order}"].plot(t, _column(rows, f"_nr_free_order{order}"), **style)
        for name in RATES:
            if name in rows[0]:
                x, y = _rate(t, [r[name] for r in rows])
                axes[name].plot(x, y, **style)
    axes["score"].set_title("fragmentation score (extfrag_for_order 9, %)", fontsize=10)
    axes["score"].set_ylim(0, 100)
    for order in ORDERS:
        ax = axes[f"order{order}"]
        ax.set_title(f"free order-{order} blocks", fontsize=10)
        ax.set_ylim(bottom=0)
    for name in RATES:
        axes[name].set_title(f"{name} per simulated s", fontsize=10)
        axes[name].set_yscale("symlog", linthresh=10)
        axes[name].set_ylim(bottom=0)
    for ax in grid[-1]:
        ax.set_xlabel("simulated time (s)")
    for ax in axes.values():
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("compactsim: fragmentation, free blocks by order, compaction and migration "
                 "rates")
    fig.tight_layout()
    return fig


def plot_runs(series: Mapping[str, Sequence[Mapping[str, Any]]], out: Path) -> Path:
    """Write `runs_figure(series)` as a PNG."""
    fig = runs_figure(series)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
