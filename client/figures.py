"""The figures of an experiment report (matplotlib, headless), each a function of plain
data: the experiment's statistics and its runs as client/experiment.py loads them
(`{arm: [run, ...]}`, a run being {"summary", "series", "histograms"}). Arms are labelled
by their names, in the experiment's order, each with one colour throughout."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MIGRATETYPES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic")
_ORDER = re.compile(r"/order(\d+)$")

Runs = Mapping[str, Sequence[Mapping[str, Any]]]


def colors(arms: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {a: cycle[i % len(cycle)] for i, a in enumerate(arms)}


def styles(arms: Sequence[str]) -> dict[str, str]:
    """A line style per arm, so arms whose lines coincide stay visible."""
    cycle = ("-", "--", "-.", ":")
    return {a: cycle[i % len(cycle)] for i, a in enumerate(arms)}


def _grid(n: int, cols: int, width: float = 4.2, height: float = 3.0):
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def headline_bars(stats: Mapping[str, Any], metrics: Sequence[str]) -> Figure:
    """Per metric, a bar per arm at its mean with the 95 % interval; a star over arms
    whose paired difference to the baseline is significant."""
    rows = {r["metric"]: r for r in stats["metrics"]}
    names = [m for m in metrics if m in rows]
    fig, axes = _grid(len(names), 3)
    col = colors(stats["arms"])
    for ax, name in zip(axes, names):
        row = rows[name]
        sig = {d["arm"] for d in row["differences"] if d["significant"]}
        xs = np.arange(len(row["arms"]))
        means = [a["mean"] or 0.0 for a in row["arms"]]
        err = np.array([[m - (a["ci_low"] if a["ci_low"] is not None else m),
                         (a["ci_high"] if a["ci_high"] is not None else m) - m]
                        for m, a in zip(means, row["arms"])]).T
        ax.bar(xs, means, yerr=err, capsize=4,
               color=[col[a["arm"]] for a in row["arms"]], alpha=0.85)
        for x, a, m, hi in zip(xs, row["arms"], means, err[1]):
            if a["arm"] in sig:
                ax.annotate("*", (x, m + hi), ha="center", va="bottom", fontsize=14)
        ax.set_xticks(xs, [a["arm"] for a in row["arms"]], rotation=20, ha="right",
                       fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Headline metrics: mean over seeds with 95 % interval "
                 "(* paired difference to the baseline significant)", fontsize=10)
    fig.tight_layout()
    return fig


def _merged_cdf(runs: Sequence[Mapping[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    counts: dict[float, int] = {}
    for run in runs:
        for h in run.get("histograms", []):
            if h["name"] == name:
                for b in h.get("buckets", []):
                    ub = float(b["upper_bound_seconds"])
                    counts[ub] = counts.get(ub, 0) + int(b["count"])
    if not counts:
        return np.array([]), np.array([])
    bounds = np.array(sorted(counts))
    c = np.cumsum([counts[b] for b in bounds])
    return bounds * 1e6, c / c[-1]


def latency_names(runs: Runs) -> list[str]:
    """Histogram names of requests above order 0 that some run has, by order then name."""
    names = {h["name"] for rs in runs.values() for r in rs for h in r.get("histograms", [])}
    high = [(int(m.group(1)), n) for n in names if (m := _ORDER.search(n)) and int(m.group(1)) > 0]
    return [n for _, n in sorted(high)]


def latency_cdfs(runs: Runs, arms: Sequence[str]) -> Figure:
    """Allocation latency distribution per request order (seeds merged), a line per arm,
    drawn as the tail 1 - CDF on log axes: most requests take the fast path, and the
    designs part in the slow tail."""
    names = latency_names(runs)
    fig, axes = _grid(max(1, len(names)), 3)
    col, sty = colors(arms), styles(arms)
    for ax, name in zip(axes, names):
        for arm in arms:
            x, y = _merged_cdf(runs.get(arm, []), name)
            if len(x):
                tail = np.clip(1.0 - y, 1e-7, None)
                ax.step(np.concatenate([[x[0] / 2], x]), np.concatenate([[1.0], tail]),
                        where="post", color=col[arm], linestyle=sty[arm], label=arm)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(top=1.2)
        ax.set_xlabel("latency x (us, simulated)", fontsize=8)
        ax.set_ylabel("share slower than x\n(1 - CDF)", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
    if not names:
        axes[0].text(0.5, 0.5, "no request above order 0", ha="center", va="center")
    fig.suptitle("Allocation latency CDF by request kind and order (all seeds; as 1 - CDF)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _mean_series(runs: Sequence[Mapping[str, Any]], suffix: str) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Time axis and the mean over runs of the sum over zones of columns ending `suffix`."""
    series = [r["series"] for r in runs if r.get("series")]
    if not series:
        return np.array([]), np.array([])
    n = min(len(s) for s in series)
    t = np.array([row["time_s"] for row in series[0][:n]])
    vals = np.array([[sum(v for k, v in row.items() if k.endswith(suffix)) for row in s[:n]]
                     for s in series])
    return t, vals.mean(axis=0)


def free_blocks_heatmap(runs: Runs, arms: Sequence[str], max_order: int = 10) -> Figure:
    """Free blocks by order over time (mean over seeds), a heatmap per arm, log colour."""
    fig, axes = _grid(len(arms), 2, width=6.0, height=2.8)
    grids = {}
    for arm in arms:
        rows = []
        t = np.array([])
        for order in range(max_order + 1):
            t, v = _mean_series(runs.get(arm, []), f"_nr_free_order{order}")
            rows.append(v)
        grids[arm] = (t, np.array(rows) if len(t) else np.zeros((max_order + 1, 0)))
    top = max([g.max() for _, g in grids.values() if g.size] or [1.0])
    for ax, arm in zip(axes, arms):
        t, g = grids[arm]
        if g.size:
            mesh = ax.pcolormesh(t, np.arange(max_order + 1), np.where(g > 0, g, np.nan),
                                 norm=LogNorm(vmin=1, vmax=max(top, 2)), shading="nearest",
                                 cmap="viridis")
            fig.colorbar(mesh, ax=ax, label="free blocks")
        ax.set_yticks(range(max_order + 1))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("order")
        ax.set_xlabel("simulated time (s)")
        ax.set_title(arm, fontsize=9)
    fig.suptitle("Free blocks by order over time (mean over seeds; blank: none free)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def pageblocks_by_migratetype(runs: Runs, arms: Sequence[str]) -> Figure:
    """Pageblocks of each migratetype over time (mean over seeds): a panel per
    migratetype, a line per arm (unmovable pageblocks are where designs part)."""
    fig, axes = _grid(len(MIGRATETYPES), 2, width=6.0, height=2.8)
    col, sty = colors(arms), styles(arms)
    for mt, (ax, name) in enumerate(zip(axes, MIGRATETYPES)):
        for arm in arms:
            t, v = _mean_series(runs.get(arm, []), f"_pageblocks_mt{mt}")
            if len(t):
                ax.plot(t, v, color=col[arm], linestyle=sty[arm], label=arm)
        ax.set_title(f"MIGRATE_{name.upper()} pageblocks", fontsize=9)
        ax.set_xlabel("simulated time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Pageblocks by migratetype over time (mean over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def compaction_by_trigger(runs: Runs, arms: Sequence[str]) -> Figure:
    """Compaction runs per trigger (a panel each: direct, kcompactd, proactive, ...), a
    bar per arm stacked by result (mean over seeds); and wasted migrations per arm."""
    per_arm: dict[str, dict[tuple[str, str], float]] = {}
    for arm in arms:
        rs = runs.get(arm, [])
        acc: dict[tuple[str, str], float] = {}
        for r in rs:
            for key, n in ((r["summary"].get("compaction") or {}).get("results") or {}).items():
                trigger, _, result = key.partition("/")
                acc[(trigger, result)] = acc.get((trigger, result), 0.0) + n / max(len(rs), 1)
        per_arm[arm] = acc
    triggers = sorted({t for acc in per_arm.values() for t, _ in acc}) or ["(none)"]
    results = sorted({r for acc in per_arm.values() for _, r in acc})
    fig, axes = plt.subplots(1, len(triggers) + 1, figsize=(3.6 * (len(triggers) + 1), 3.6),
                             squeeze=False)
    axes = list(axes.flat)
    shades = plt.get_cmap("viridis")
    xs = np.arange(len(arms))
    for ax, trigger in zip(axes, triggers):
        bottom = np.zeros(len(arms))
        for j, res in enumerate(results):
            h = np.array([per_arm[a].get((trigger, res), 0.0) for a in arms])
            ax.bar(xs, h, 0.7, bottom=bottom, color=shades(j / max(len(results) - 1, 1)),
                   label=res)
            bottom += h
        ax.set_xticks(xs, arms, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{trigger} compaction runs per run", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if results:
        axes[0].legend(fontsize=7, title="result", title_fontsize=7)
    col = colors(arms)
    wasted = [np.mean([(r["summary"].get("compaction") or {}).get("wasted_migrations", 0)
                       for r in runs.get(a, [])] or [0]) for a in arms]
    wax = axes[-1]
    wax.bar(xs, wasted, 0.7, color=[col[a] for a in arms])
    wax.set_xticks(xs, arms, rotation=20, ha="right", fontsize=8)
    wax.set_title("wasted migrations per run", fontsize=9)
    wax.grid(axis="y", alpha=0.3)
    fig.suptitle("Compaction work by trigger (mean over seeds)", fontsize=10)
    fig.tight_layout()
    return fig
