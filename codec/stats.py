"""Experiment statistics: arms x seeds, per-arm intervals and paired differences.

Pure functions on plain data (run summaries as dicts), used by `compactsim experiment`,
`compactsim compare`, `compactsim report` and the server's Sweep resource alike, so every
client sees the same numbers.

An experiment runs every arm with the same seeds; with common random numbers (the
workload's request streams are keyed by seed, task and request index) the runs of one
seed share their workload, so arms are compared seed by seed:

- per arm and metric: the mean over seeds and its 95 % Student t interval
  (`scipy.stats.t.interval` with the standard error of the mean);
- per non-baseline arm and metric: the differences arm - baseline of the seeds both
  have, their mean, 95 % t interval and the two-sided paired t-test
  (`scipy.stats.ttest_rel`); significant when p < 0.05. Differences that are the same
  for every seed (memmap bytes of a design) have no spread: p is 0 when they are not
  zero, 1 when they are. No correction for testing many metrics is applied; the
  Benjamini-Hochberg q-value over an arm's metrics (`scipy.stats.false_discovery_control`)
  is given beside p for the reader who wants one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
METHOD = ("mean over seeds with a 95 % Student t interval (scipy.stats.t.interval); "
          "arm - baseline paired by seed (common random numbers): mean difference, 95 % t "
          "interval, two-sided paired t-test (scipy.stats.ttest_rel), significant at "
          "p < 0.05; q = Benjamini-Hochberg over each arm's metrics "
          "(scipy.stats.false_discovery_control)")

# Summary parts that describe the run rather than measure it.
_SKIP = ("seed", "duration_s", "sim_time_s", "machine", "kernel", "replay", "kswapd_failures",
         "free_pages_by_order", "memmap.design", "memmap.page_flags.design",
         "memmap.page_flags_by_design", "memmap.struct_page_bytes_by_design",
         "memmap.memmap_bytes_by_design", "compaction.enabled")

# Ratios of vmstat counters a reader asks for first: (name, numerator(s), denominator(s)).
RATIOS = (
    ("ratio.thp_fault_alloc_share", ("thp_fault_alloc",), ("thp_fault_alloc",
                                                           "thp_fault_fallback")),
    ("ratio.compact_success_per_stall", ("compact_success",), ("compact_stall",)),
    ("ratio.pgmigrate_success_share", ("pgmigrate_success",), ("pgmigrate_success",
                                                               "pgmigrate_fail")),
    ("ratio.pgsteal_per_pgscan", ("pgsteal_kswapd", "pgsteal_direct"),
     ("pgscan_kswapd", "pgscan_direct")),
    ("ratio.compact_free_per_migrate_scanned", ("compact_free_scanned",),
     ("compact_migrate_scanned",)),
)

# The figures of a first look: the table shows these (and whatever differs significantly),
# the report draws them as bars.
HEADLINE = (
    "vmstat.pgmigrate_success", "vmstat.compact_stall", "vmstat.compact_success",
    "vmstat.compact_migrate_scanned", "vmstat.compact_free_scanned",
    "vmstat.allocstall_normal", "vmstat.thp_fault_alloc", "ratio.thp_fault_alloc_share",
    "allocations.thp/order9.success_ratio", "allocations.thp/order9.p99_us",
    "allocations.kernel_high_order/order3.p99_us", "compaction.wasted_migrations",
    "memmap.memmap_bytes", "memmap.memmap_percent_of_ram", "memmap.page_flags.free_bits",
)


def _flatten(node: Any, prefix: str, out: dict[str, float]) -> None:
    if prefix in _SKIP:
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(node, bool):
        return
    elif isinstance(node, (int, float)):
        if math.isfinite(node):
            out[prefix] = float(node)
    elif isinstance(node, list) and node and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
        out[prefix] = float(np.mean(node))     # per-node figures: their mean


def metrics_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """Every number a run summary measures, by dotted path ("vmstat.compact_stall",
    "allocations.thp/order9.p99_us"), plus the RATIOS (absent where the denominator is 0)."""
    out: dict[str, float] = {}
    _flatten(summary, "", out)
    vm = summary.get("vmstat") or {}
    for name, num, den in RATIOS:
        d = sum(vm.get(k, 0) for k in den)
        if d:
            out[name] = sum(vm.get(k, 0) for k in num) / d
    return out


@dataclass(frozen=True)
class ArmRun:
    """One finished run of an experiment."""

    arm: str
    seed: int
    summary: Mapping[str, Any]


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    n = len(values)
    if n < 2:
        return None, None
    mean = float(values.mean())
    # the standard error of the mean, as scipy.stats.sem computes it (its argument
    # checks cost more than the arithmetic, once per metric and arm)
    sem = float(values.std(ddof=1) / np.sqrt(n))
    if sem == 0.0:
        return mean, mean
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _estimate(arm: str, values: np.ndarray) -> dict[str, Any]:
    low, high = _interval(values)
    return {"arm": arm, "count": int(len(values)),
            "mean": float(values.mean()) if len(values) else None,
            "ci_low": low, "ci_high": high, "values": values.tolist()}


def _paired(arm: str, diffs: np.ndarray, base_mean: float | None) -> dict[str, Any]:
    n = len(diffs)
    mean = float(diffs.mean()) if n else None
    low, high = _interval(diffs)
    if n < 2:
        p = None
    elif float(np.ptp(diffs)) == 0.0:
        p = 0.0 if mean else 1.0
    else:
        # ttest_rel(arm, baseline) is the one-sample test of the differences against 0
        p = float(stats.ttest_rel(diffs, np.zeros(n)).pvalue)
    return {"arm": arm, "pairs": n, "mean": mean, "ci_low": low, "ci_high": high,
            "relative": (mean / base_mean) if mean is not None and base_mean else None,
            "p_value": p, "q_value": None,
            "significant": p is not None and p < ALPHA, "differences": diffs.tolist()}


def experiment(runs: Iterable[ArmRun], arms: Sequence[str], baseline: str) -> dict[str, Any]:
    """The aggregate of an experiment: for every metric any run has, an estimate per arm
    (in `arms` order) and, per arm but the baseline, the paired difference to it."""
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not one of the arms ({', '.join(arms)})")
    by_arm: dict[str, dict[int, dict[str, float]]] = {a: {} for a in arms}
    for r in runs:
        if r.arm in by_arm:
            by_arm[r.arm][r.seed] = metrics_of(r.summary)
    names = sorted({m for per_seed in by_arm.values() for ms in per_seed.values() for m in ms})
    seeds = sorted({s for per_seed in by_arm.values() for s in per_seed})
    base = by_arm[baseline]
    table = []
    for name in names:
        arms_out, diffs_out = [], []
        for arm in arms:
            vals = np.array([ms[name] for _, ms in sorted(by_arm[arm].items()) if name in ms])
            arms_out.append(_estimate(arm, vals))
        base_mean = arms_out[arms.index(baseline)]["mean"]
        for arm in arms:
            if arm == baseline:
                continue
            pairs = [(ms[name], base[s][name]) for s, ms in sorted(by_arm[arm].items())
                     if name in ms and s in base and name in base[s]]
            diffs = np.array([a - b for a, b in pairs])
            diffs_out.append(_paired(arm, diffs, base_mean))
        table.append({"metric": name, "arms": arms_out, "differences": diffs_out})
    _q_values(table)
    return {"method": METHOD, "confidence": CONFIDENCE, "alpha": ALPHA, "baseline": baseline,
            "arms": list(arms), "seeds": seeds,
            "runs": {a: len(by_arm[a]) for a in arms}, "metrics": table}


def _q_values(table: list[dict[str, Any]]) -> None:
    """Benjamini-Hochberg q per arm over the metrics that have a p-value."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        for d in row["differences"]:
            if d["p_value"] is not None:
                cells.setdefault(d["arm"], []).append(d)
    for ds in cells.values():
        qs = stats.false_discovery_control([d["p_value"] for d in ds])
        for d, q in zip(ds, np.atleast_1d(qs)):
            d["q_value"] = float(q)


def headline(result: Mapping[str, Any], everything: bool = False) -> list[Mapping[str, Any]]:
    """The rows a table shows first: the HEADLINE metrics (every metric with
    `everything`)."""
    rows = result["metrics"]
    if everything:
        return list(rows)
    by_name = {r["metric"]: r for r in rows}
    return [by_name[m] for m in HEADLINE if m in by_name]


def other_significant(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The metrics outside HEADLINE with a significant difference that varies over seeds."""
    return [r for r in result["metrics"] if r["metric"] not in HEADLINE
            and any(d["significant"] for d in r["differences"])
            and any(a["ci_low"] != a["ci_high"] for a in r["arms"])]


def fmt(value: float | None) -> str:
    """A number as a table shows it: 4 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def flat_rows(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
    """One record per metric and arm (CSV): estimate, and the paired difference to the
    baseline where the arm is not the baseline."""
    out = []
    for row in rows if rows is not None else result["metrics"]:
        diffs = {d["arm"]: d for d in row["differences"]}
        for a in row["arms"]:
            d = diffs.get(a["arm"], {})
            out.append({"metric": row["metric"], "arm": a["arm"], "n": a["count"],
                        "mean": a["mean"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
                        "diff_mean": d.get("mean"), "diff_ci_low": d.get("ci_low"),
                        "diff_ci_high": d.get("ci_high"), "p_value": d.get("p_value"),
                        "q_value": d.get("q_value"), "significant": d.get("significant")})
    return out
