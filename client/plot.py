"""Pictures of runs over time (matplotlib, headless): fragmentation score, free blocks by
order, and compaction and migration rates, one line per run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RATES = ("compact_stall", "compact_success", "pgmigrate_success", "thp_fault_fallback")


def _column(rows: Sequence[Mapping[str, Any]], suffix: str) -> list[float]:
    """Sum over zones/nodes of the columns ending in `suffix`."""
    return [sum(v for k, v in row.items() if k.endswith(suffix)) for row in rows]


def _rate(times: list[float], counts: list[float]) -> tuple[list[float], list[float]]:
    pts = [(t1, (c1 - c0) / (t1 - t0)) for t0, t1, c0, c1 in
           zip(times, times[1:], counts, counts[1:]) if t1 > t0]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(series: Mapping[str, Sequence[Mapping[str, Any]]], out: Path) -> Path:
    """One PNG with three panels; `series` maps a run's label to its sample rows."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    score_ax, order_ax, rate_ax = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")
    for i, (label, rows) in enumerate(series.items()):
        if not rows:
            continue
        color = colors[i % len(colors)]          # one colour per run, a style per line
        t = [r["time_s"] for r in rows]
        score_ax.plot(t, _column(rows, "_fragmentation_score"), color=color, label=label)
        for order, style in zip((9, 10, 3), styles):
            order_ax.plot(t, _column(rows, f"_nr_free_order{order}"), style, color=color,
                          label=f"{label} order {order}")
        for name, style in zip(RATES, styles):
            if name in rows[0]:
                x, y = _rate(t, [r[name] for r in rows])
                rate_ax.plot(x, y, style, color=color, label=f"{label} {name}")
    rate_ax.set_yscale("symlog", linthresh=10)
    score_ax.set_ylabel("fragmentation score\n(extfrag_for_order 9, %)")
    score_ax.set_ylim(0, 100)
    order_ax.set_ylabel("free blocks")
    rate_ax.set_ylabel("events per simulated s")
    rate_ax.set_xlabel("simulated time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("compactsim: fragmentation, free blocks by order, compaction rates")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
