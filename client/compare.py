"""Comparing runs: spec differences and summary deltas in one table.

Works on plain data (a run's spec as a dict and its summary as a dict), so the same
comparison serves runs fetched from the server and runs made in-process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# The summary figures a comparison shows, as (label, path into the summary).
COMPARED = (
    ("compact_stall", ("vmstat", "compact_stall")),
    ("compact_success", ("vmstat", "compact_success")),
    ("compact_fail", ("vmstat", "compact_fail")),
    ("compact_migrate_scanned", ("vmstat", "compact_migrate_scanned")),
    ("compact_free_scanned", ("vmstat", "compact_free_scanned")),
    ("compact_daemon_wake", ("vmstat", "compact_daemon_wake")),
    ("pgmigrate_success", ("vmstat", "pgmigrate_success")),
    ("pgmigrate_fail", ("vmstat", "pgmigrate_fail")),
    ("thp_fault_alloc", ("vmstat", "thp_fault_alloc")),
    ("thp_fault_fallback", ("vmstat", "thp_fault_fallback")),
    ("allocstall_normal", ("vmstat", "allocstall_normal")),
    ("pswpout", ("vmstat", "pswpout")),
    ("oom_kill", ("vmstat", "oom_kill")),
    ("struct page bytes", ("memmap", "struct_page_bytes")),
    ("memmap MiB", ("memmap", "memmap_bytes")),
    ("managed pages", ("memmap", "managed_pages")),
    ("wasted migrations", ("compaction", "wasted_migrations")),
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "w": [{"x": 2}]}` -> `{"a.b": 1, "w[0].x": 2}`."""
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(tree, list) and tree and all(isinstance(v, Mapping) for v in tree):
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = tree
    return out


def _get(summary: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = summary
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]
    if path[-1] == "memmap_bytes" and isinstance(node, (int, float)):
        return round(node / 2**20, 1)
    return node


def spec_differences(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Spec fields whose values differ between the runs, with each run's value."""
    flat = [flatten(s) for s in specs]
    keys = sorted(set().union(*flat))
    rows = []
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def allocation_rows(summaries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Success ratio and p99 latency of every high-order request kind seen in any run."""
    keys = sorted({k for s in summaries for k in s.get("allocations", {})
                   if not k.endswith("/order0")})
    rows = []
    for key in keys:
        got = [s.get("allocations", {}).get(key) for s in summaries]
        rows.append((f"{key} success", [None if a is None else a["success_ratio"] for a in got]))
        rows.append((f"{key} p99 us", [None if a is None else a["p99_us"] for a in got]))
    return rows


def summary_rows(summaries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The compared figures, each with one value per run."""
    rows = [(label, [_get(s, path) for s in summaries]) for label, path in COMPARED]
    return rows + allocation_rows(summaries)


def delta(values: Sequence[Any]) -> str:
    """Last against first, as a signed difference and ratio where both are numbers."""
    a, b = values[0], values[-1]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        diff = b - a
        ratio = f" ({b / a:.2f}x)" if a else ""
        return f"{diff:+.6g}{ratio}"
    return ""


def comparison(specs: Sequence[Mapping[str, Any]], summaries: Sequence[Mapping[str, Any]],
               diff_only: bool = False) -> list[tuple[str, list[Any], str]]:
    """Rows (name, values per run, delta): spec differences first, then the figures."""
    rows = [(f"spec {k}", v, "") for k, v in spec_differences(specs)]
    for name, values in summary_rows(summaries):
        if diff_only and all(v == values[0] for v in values[1:]):
            continue
        rows.append((name, values, delta(values)))
    return rows


# ---- experiments: arms x seeds ---------------------------------------------------------

def group_arms(specs: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """An arm name per run when the runs carry several seeds of some spec (runs whose specs
    differ only in `seed` form one arm), else None. An arm is named by the spec fields
    that tell the arms apart ("kernel.movable_ops=NONE")."""
    keys = [json.dumps({k: v for k, v in flatten(s).items() if k != "seed"}, sort_keys=True,
                       default=str) for s in specs]
    if len(set(keys)) == len(keys):
        return None
    firsts: dict[str, dict[str, Any]] = {}
    for key, spec in zip(keys, specs):
        firsts.setdefault(key, {k: v for k, v in spec.items() if k != "seed"})
    differing = [k for k, _ in spec_differences(list(firsts.values()))]
    names = {}
    for key, spec in firsts.items():
        flat = flatten(spec)
        names[key] = ", ".join(f"{k}={flat.get(k)}" for k in differing) or "all"
    return [names[k] for k in keys]


def _cell(a: Mapping[str, Any], d: Mapping[str, Any] | None) -> str:
    from compactsim.codec.stats import fmt
    text = fmt(a["mean"])
    if a["ci_low"] is not None and a["ci_low"] != a["ci_high"]:
        text += f"\n[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]"
    if d is not None and d["mean"] is not None:
        line = f"Δ {'+' if d['mean'] > 0 else ''}{fmt(d['mean'])}"
        if d["ci_low"] is not None and d["ci_low"] != d["ci_high"]:
            line += f" [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]"
        if d["p_value"] is not None and d["ci_low"] == d["ci_high"] and d["pairs"] > 1:
            line += " on every seed"
        elif d["p_value"] is not None:
            line += f" p={d['p_value']:.2g}"
        text += "\n" + (f"[bold]{line} *[/bold]" if d["significant"] else line)
    return text


def stats_table(result: Mapping[str, Any], everything: bool = False, title: str = ""):
    """The experiment table: a row per metric, a column per arm with its mean and 95 %
    interval and, for arms but the baseline, the paired difference (bold and * when
    significant)."""
    from rich.table import Table

    from compactsim.codec.stats import headline, other_significant
    runs = result.get("runs") or {}
    more = "" if everything else (f"; {len(other_significant(result))} other metrics differ "
                                  f"significantly, --all shows all {len(result['metrics'])}")
    table = Table(title=title or "compactsim experiment", show_lines=True,
                  caption=f"{len(result['seeds'])} seeds{more}. " + result["method"],
                  caption_justify="left")
    table.add_column("metric", overflow="fold")
    for arm in result["arms"]:
        tag = " (baseline)" if arm == result["baseline"] else ""
        n = f", {runs[arm]} runs" if arm in runs else ""
        table.add_column(f"{arm}{tag}{n}", justify="right")
    for row in headline(result, everything):
        diffs = {d["arm"]: d for d in row["differences"]}
        table.add_row(row["metric"], *(_cell(a, diffs.get(a["arm"])) for a in row["arms"]))
    return table


def write_stats(result: Mapping[str, Any], fmt_name: str, stream, everything: bool = True
                ) -> None:
    """The experiment as JSON (the whole record) or CSV (a line per metric and arm)."""
    from compactsim.codec.stats import flat_rows, headline
    if fmt_name == "json":
        json.dump(result, stream, indent=2)
        stream.write("\n")
        return
    import csv
    rows = flat_rows(result, headline(result, everything))
    w = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["metric"])
    w.writeheader()
    w.writerows(rows)
