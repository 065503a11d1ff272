"""The experiment report: one self-contained HTML page (figures embedded as PNG data URIs)
that can be attached to a mail. It states the question (the arms and what differs
between them), the workload, the statistics table with intervals and the significant
differences marked, the memory cost of each arm beside its benefit, and the figures of
client/figures.py."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compactsim.client import figures
from compactsim.client.experiment import load_experiment, load_run, run_dir, seeds_of
from compactsim.codec.stats import HEADLINE, fmt, headline, other_significant

REPORT_FILE = "report.html"

# (id, alt text, maker) of the figures, in page order.
FIGURES = (
    ("fig-headline", "Per-arm means of the headline metrics with 95 % intervals",
     lambda stats, runs, arms: figures.headline_bars(stats, HEADLINE)),
    ("fig-latency-cdf", "Allocation latency CDFs (as 1 - CDF) per request order, a line per "
                        "arm",
     lambda stats, runs, arms: figures.latency_cdfs(runs, arms)),
    ("fig-free-blocks", "Free blocks by order over time, a heatmap per arm",
     lambda stats, runs, arms: figures.free_blocks_heatmap(runs, arms)),
    ("fig-pageblocks", "Pageblocks by migratetype over time, a panel per migratetype, a line "
                       "per arm",
     lambda stats, runs, arms: figures.pageblocks_by_migratetype(runs, arms)),
    ("fig-compaction", "Compaction runs by trigger and result, and wasted migrations, per arm",
     lambda stats, runs, arms: figures.compaction_by_trigger(runs, arms)),
)

_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
td.sig { background: #fff3c4; font-weight: bold; }
.ci, .p { color: #666; font-size: 11px; }
figure { margin: 1em 0; } figcaption { font-size: 13px; color: #444; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _e(x: Any) -> str:
    return html.escape(str(x))


def load_arm_runs(out: Path, arms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    return {a: [load_run(run_dir(out, a, s)) for s in seeds_of(out, a)] for a in arms}


def _question(record: Mapping[str, Any]) -> str:
    q = record["question"]
    arms = q["arms"]
    paths = sorted({p for a in arms for p in a["values"]})
    head = "".join(f"<th>{_e(p)}</th>" for p in paths)
    rows = []
    for a in arms:
        tag = " (baseline)" if a["name"] == q["baseline"] else ""
        cells = "".join(f"<td>{_e(a['values'].get(p, '(base)'))}</td>" for p in paths)
        rows.append(f"<tr><td><b>{_e(a['name'])}</b>{tag}</td>{cells}</tr>")
    base = q.get("scenario") or q.get("spec_file") or "the base spec"
    over = ", ".join(q.get("overrides") or []) or "none"
    stats = record["stats"]
    return (f"<p>What changes when only the fields below differ, on <code>{_e(base)}</code> "
            f"(overrides for every arm: <code>{_e(over)}</code>)? Every arm ran the seeds "
            f"{_e(', '.join(map(str, stats['seeds'])))}; a seed gives every arm the same "
            f"workload (common random numbers), so arms are compared seed by seed with "
            f"<b>{_e(q['baseline'])}</b>.</p>"
            f"<table id='arms'><tr><th>arm</th>{head}</tr>{''.join(rows)}</table>")


def _size(x: Any) -> str:
    from compactsim.sim.units import format_size, parse_size
    try:
        return format_size(parse_size(x))
    except (ValueError, TypeError):
        return str(x)


def _seconds(x: Any) -> str:
    from compactsim.sim.units import format_duration, parse_duration
    try:
        return format_duration(parse_duration(x))
    except (ValueError, TypeError):
        return str(x)


def _group_cells(g: Mapping[str, Any]) -> list[str]:
    life = g.get("lifetime") or {}
    mix = g.get("order_mix") or {}
    orders = ", ".join(f"{o}: {w:g}" for o, w in mix.items()) if isinstance(mix, Mapping) \
        else str(mix)
    lifetime = (f"{str(life.get('distribution', '')).lower()}, mean "
                f"{_seconds(life.get('mean', ''))}" if isinstance(life, Mapping) else str(life))
    return [g.get("name", ""), str(g.get("kind", "")).lower(), g.get("tasks", ""),
            str(g.get("pattern", "")).lower(), f"{g.get('rate', '')}/s", g.get("batch", ""),
            orders, lifetime]


def _workload(spec: Mapping[str, Any]) -> str:
    m = spec.get("machine") or {}
    k = spec.get("kernel") or {}
    zram = f", zram {_size(m['zram'])}" if m.get("zram") else ""
    lines = [f"<p>Machine: {_e(_size(m.get('memory', '?')))} memory, "
             f"{_e(m.get('cpus', '?'))} CPUs{_e(zram)}; kernel profile "
             f"{_e(k.get('profile', '?'))}; {_e(_seconds(spec.get('duration', '?')))} "
             f"simulated per run.</p>"]
    cols = ("name", "kind", "tasks", "pattern", "rate", "batch", "order: share", "lifetime")
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in _group_cells(g)) + "</tr>"
                   for g in spec.get("workload") or [])
    lines.append(f"<table id='workload'><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>"
                 f"{rows}</table>")
    return "".join(lines)


def _stats_table(stats: Mapping[str, Any]) -> str:
    other = other_significant(stats)
    return (_table("results", stats, headline(stats))
            + f"<p class='p'>Each cell: mean over seeds [95 % interval]; Δ: mean paired "
              f"difference to the baseline [95 % interval], p of the paired test; "
              f"<span style='background:#fff3c4'>*</span> significant at "
              f"p &lt; {stats['alpha']}. Method: {_e(stats['method'])}. All "
              f"{len(stats['metrics'])} metrics are in experiment.json.</p>"
            + f"<details><summary>{len(other)} other metrics with a significant difference"
              f"</summary>{_table('results-other', stats, other)}</details>")


def _table(table_id: str, stats: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
           ) -> str:
    runs = stats.get("runs") or {}
    head = "".join(f"<th>{_e(a)}{' (baseline)' if a == stats['baseline'] else ''}"
                   f"{f'<br>{runs[a]} runs' if a in runs else ''}</th>" for a in stats["arms"])
    body = []
    for row in rows:
        diffs = {d["arm"]: d for d in row["differences"]}
        cells = []
        for a in row["arms"]:
            d = diffs.get(a["arm"])
            text = fmt(a["mean"])
            if a["ci_low"] is not None and a["ci_low"] != a["ci_high"]:
                text += f"<br><span class='ci'>[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]</span>"
            cls = "num"
            if d is not None and d["mean"] is not None:
                sign = "+" if d["mean"] > 0 else ""
                text += f"<br>Δ {sign}{fmt(d['mean'])}"
                if d["ci_low"] is not None and d["ci_low"] != d["ci_high"]:
                    text += f" <span class='ci'>[{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]</span>"
                if d["p_value"] is not None and d["ci_low"] == d["ci_high"] and d["pairs"] > 1:
                    text += " <span class='p'>on every seed</span>"
                elif d["p_value"] is not None:
                    text += f" <span class='p'>p={d['p_value']:.2g}</span>"
                if d["significant"]:
                    cls += " sig"
                    text += " *"
            cells.append(f"<td class='{cls}' data-arm='{_e(a['arm'])}'>{text}</td>")
        body.append(f"<tr data-metric='{_e(row['metric'])}'><td>{_e(row['metric'])}</td>"
                    f"{''.join(cells)}</tr>")
    return f"<table id='{table_id}'><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _memory_cost(runs: Mapping[str, Sequence[Mapping[str, Any]]], arms: Sequence[str]) -> str:
    rows = []
    for arm in arms:
        if not runs.get(arm):
            continue
        mm = runs[arm][0]["summary"].get("memmap") or {}
        pf = mm.get("page_flags") or {}
        rows.append(
            f"<tr><td>{_e(arm)}</td><td>{_e(mm.get('design', ''))}</td>"
            f"<td class='num'>{_e(mm.get('struct_page_bytes', ''))}</td>"
            f"<td class='num'>{fmt((mm.get('memmap_bytes') or 0) / 2**20)} MiB</td>"
            f"<td class='num'>{_e(mm.get('memmap_percent_of_ram', ''))} %</td>"
            f"<td class='num'>{_e(pf.get('nr_pageflags', ''))}</td>"
            f"<td class='num'>{_e(pf.get('free_bits', ''))}</td>"
            f"<td>{'in page->flags' if pf.get('last_cpupid_in_flags') else 'in struct page'}"
            f"</td></tr>")
    return ("<table id='memory-cost'><tr><th>arm</th><th>movable_ops</th>"
            "<th>struct page bytes</th><th>memmap</th><th>share of RAM</th>"
            "<th>page flags</th><th>spare flag bits</th><th>LAST_CPUPID</th></tr>"
            + "".join(rows) + "</table>")


def write_report(out: Path, page: Path | None = None) -> Path:
    """Write the report of the experiment directory `out` (default `out/report.html`)."""
    out = Path(out)
    record = load_experiment(out)
    stats = record["stats"]
    arms = stats["arms"]
    runs = load_arm_runs(out, arms)
    spec = next((r["spec"] for rs in runs.values() for r in rs), record.get("base_spec", {}))
    figs = []
    for fid, alt, make in FIGURES:
        data = _png(make(stats, runs, arms))
        figs.append(f"<figure><img id='{fid}' alt='{_e(alt)}' "
                    f"src='data:image/png;base64,{data}'><figcaption>{_e(alt)}"
                    f"</figcaption></figure>")
    title = f"compactsim experiment: {' vs '.join(arms)}"
    body = (f"<h1>{_e(title)}</h1>"
            f"<h2>The question</h2>{_question(record)}"
            f"<h2>The workload</h2>{_workload(spec)}"
            f"<h2>Results</h2>{_stats_table(stats)}"
            f"<h2>Memory cost</h2>{_memory_cost(runs, arms)}"
            f"<h2>Figures</h2>{''.join(figs)}"
            f"<p class='p'>Source: {_e(record.get('source', 'local'))}; runs under "
            f"<code>runs/ARM/seed-N/</code> beside this page.</p>")
    page = Path(page) if page is not None else out / REPORT_FILE
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}"
                    f"</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")
    return page
