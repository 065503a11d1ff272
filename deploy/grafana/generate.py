"""Generates dashboards/compaction.json and dashboards/compare.json.

The JSON files are what Grafana provisions and what the tests check; this script is the
source they were written from (run it after editing, `tests/deploy/test_dashboards.py`
checks they are fresh): `python deploy/grafana/generate.py`.

Node-facing panels query only node_exporter names (`node_vmstat_*`, `node_buddyinfo_blocks`,
`node_zoneinfo_*`, `node_uname_info`), so they work on a real host running node_exporter with
the buddyinfo and zoneinfo collectors and a wider vmstat field regex (see README.md here).
Panels that need compactsim's own families say "(compactsim)" in their title.

Rates are per simulated second: a counter's rate is divided by the rate of
`compactsim_simulated_seconds_total` (simulated time, `SIM_SECONDS`), or by 1 where that
series is missing (a real host: per second). A paced run's wall second is `pace` simulated
seconds and an unpaced run's far more, so per wall second would mean nothing.

Importable as labs import Node Exporter Full: an `__inputs` datasource (DS_PROMETHEUS) is
the default of the datasource variable `ds_prometheus` that every panel and variable query
uses; variables follow Node Exporter Full's names (`job`, `nodename` (Host), `node`
(Instance)). Provisioned (deploy/grafana/provisioning), the variable takes the default
datasource.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS_INPUT = "DS_PROMETHEUS"       # the import input (Node Exporter Full's name)
DS_VAR = "ds_prometheus"         # the datasource variable (Node Exporter Full's name)
DS = {"type": "prometheus", "uid": f"${{{DS_VAR}}}"}
SEL = 'job="$job", instance="$node"'            # one machine (compaction.json)
MSEL = 'job="$job", instance=~"$node"'          # the chosen runs (compare.json)
RI = "$__rate_interval"
# order >= 9 (pageblock order with 4 KiB pages: 2 MiB and larger); MAX_ORDER is 10 on x86_64
HIGH_ORDER = 'size=~"9|1[0-9]"'
# one series per run, named by node_uname_info's nodename (the run's display name)
BY_NODENAME = ' * on (job, instance) group_left (nodename) node_uname_info{job="$job"}'


def rate(field: str, sel: str) -> str:
    return f"rate(node_vmstat_{field}{{{sel}}}[{RI}])"


def sim_seconds(sel: str) -> str:
    """Simulated seconds per wall second of each instance; 1 where the instance has no
    simulated time (a real host)."""
    return (f"(rate(compactsim_simulated_seconds_total{{{sel}}}[{RI}]) or on (job, instance) "
            f"(0 * node_uname_info{{{sel}}} + 1))")


def per_sim_s(expr: str, sel: str) -> str:
    """`expr`, a rate per wall second of one series per instance, per simulated second."""
    return f"{expr} / on (job, instance) {sim_seconds(sel)}"


def srate(field: str, sel: str) -> str:
    """A vmstat counter's rate per simulated second."""
    return per_sim_s(rate(field, sel), sel)


def target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True, "instant": False}


def timeseries(title: str, targets: list[tuple[str, str]], *, unit: str = "short",
               description: str = "", log: bool = False, min_: float | None = None,
               max_: float | None = None, stack: bool = False) -> dict:
    defaults: dict = {
        "unit": unit,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                   "showPoints": "never", "spanNulls": False,
                   "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                   "axisSoftMin": 0},
    }
    if log:
        defaults["custom"]["scaleDistribution"] = {"type": "log", "log": 2}
        del defaults["custom"]["axisSoftMin"]
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"], "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items: list[tuple[dict, int, int]]) -> list[dict]:
    """Places (panel, width, height) left to right in rows of 24 columns; a row panel starts
    a new line. Ids are assigned in order."""
    out, x, y, line_h = [], 0, 0, 0
    for i, (p, w, h) in enumerate(items, start=1):
        if p["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        if p["type"] == "row":
            y, line_h = y + h, 0
        else:
            x, line_h = x + w, max(line_h, h)
        out.append(p)
    return out


def query_var(name: str, label: str, query: str, *, multi: bool = False,
              include_all: bool = False, hide: int = 0) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,  # on time range change: runs come and go
        "sort": 1, "multi": multi, "includeAll": include_all, "hide": hide,
        "current": {}, "options": [], "regex": "",
    }


DS_VARIABLE = {
    "name": DS_VAR, "label": "Datasource", "type": "datasource", "query": "prometheus",
    "current": {"selected": False, "text": f"${{{DS_INPUT}}}", "value": f"${{{DS_INPUT}}}"},
    "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
}
JOB_VAR = query_var("job", "Job", "label_values(node_uname_info, job)")


def dashboard(uid: str, title: str, description: str, panels: list[dict],
              variables: list[dict]) -> dict:
    return {
        "__inputs": [{"name": DS_INPUT, "label": "Prometheus", "description": "Prometheus "
                      "scraping compactsim (deploy/prometheus) or node_exporter",
                      "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana",
                        "version": "10.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus",
                        "version": "1.0.0"},
                       *({"type": "panel", "id": t, "name": t.capitalize(), "version": ""}
                         for t in sorted({p["type"] for p in panels} - {"row"}))],
        "uid": uid, "title": title, "description": description,
        "tags": ["compactsim", "linux", "memory", "node_exporter"],
        "editable": True, "graphTooltip": 1, "refresh": "10s", "schemaVersion": 39,
        "version": 1, "timezone": "", "time": {"from": "now-30m", "to": "now"},
        "timepicker": {}, "annotations": {"list": []}, "links": [],
        "templating": {"list": [DS_VARIABLE, *variables]}, "panels": panels,
    }


def heatmap(title: str, expr: str, legend: str, *, description: str = "") -> dict:
    """A heatmap of one series per row (e.g. per order), colour the value."""
    return {
        "type": "heatmap", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"calculate": False, "cellGap": 1, "yAxis": {"axisPlacement": "left"},
                    "rowsFrame": {"layout": "auto"},
                    "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                              "exponent": 0.5, "steps": 64, "fill": "dark"},
                    "tooltip": {"mode": "single", "yHistogram": False},
                    "legend": {"show": True}},
        "targets": [{**target(expr, legend, "A"), "format": "time_series"}],
    }


def quantile(metric: str, by: str, sel: str, q: float = 0.99) -> str:
    return (f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}"
            f"[{RI}])))")


def compaction() -> dict:
    s = SEL
    zs = f'{s}, zone=~"$zone"'
    per_sim = (" Per simulated second: divided by the rate of compactsim's simulated time "
               "(on a real host, per second).")
    p = [
        (row("Compaction (node_exporter: vmstat)"), 24, 1),
        (timeseries("Compaction stalls, successes and failures", [
            (srate("compact_stall", s), "stall (direct compaction entered)"),
            (srate("compact_success", s), "success"),
            (srate("compact_fail", s), "fail"),
        ], unit="cps", description="Direct compaction: compact_stall counts entries, "
           "compact_success/compact_fail their outcomes." + per_sim), 12, 8),
        (timeseries("Compaction success ratio", [
            (f"{rate('compact_success', s)} / ({rate('compact_success', s)} + "
             f"{rate('compact_fail', s)})", "success / (success + fail)"),
        ], unit="percentunit", min_=0, max_=1, description="Share of direct compactions "
           "that made the allocation possible; a gap (0/0) while there are none."), 12, 8),
        (timeseries("Scanner rates: direct compaction vs kcompactd", [
            (per_sim_s(f"({rate('compact_migrate_scanned', s)} - "
                       f"{rate('compact_daemon_migrate_scanned', s)})", s),
             "direct: migrate scanner"),
            (srate("compact_daemon_migrate_scanned", s), "kcompactd: migrate scanner"),
            (per_sim_s(f"({rate('compact_free_scanned', s)} - "
                       f"{rate('compact_daemon_free_scanned', s)})", s),
             "direct: free scanner"),
            (srate("compact_daemon_free_scanned", s), "kcompactd: free scanner"),
        ], unit="cps", description="Pages scanned. compact_*_scanned counts all "
           "compaction, compact_daemon_*_scanned kcompactd's share; direct = the "
           "difference." + per_sim), 12, 8),
        (timeseries("Scan efficiency: pages migrated per page scanned", [
            (f"{rate('pgmigrate_success', s)} / {rate('compact_migrate_scanned', s)}",
             "pgmigrate_success / compact_migrate_scanned"),
        ], unit="percentunit", min_=0, description="How much of what the migrate scanner "
           "looks at it moves: low means it walks pageblocks of unmovable or pinned pages "
           "(pgmigrate_success also counts migration outside compaction)."), 12, 8),
        (timeseries("kcompactd wakes", [
            (srate("compact_daemon_wake", s), "kcompactd wakes"),
        ], unit="cps", description="compact_daemon_wake: kcompactd woken (by kswapd or "
           "proactive compaction)." + per_sim), 6, 8),
        (timeseries("Page migration", [
            (srate("pgmigrate_success", s), "migrated"),
            (srate("pgmigrate_fail", s), "failed"),
        ], unit="cps", description="pgmigrate_success / pgmigrate_fail: pages migrated "
           "(compaction and other migration)." + per_sim), 6, 8),
        (timeseries("THP fault allocations and fallbacks", [
            (srate("thp_fault_alloc", s), "thp_fault_alloc"),
            (srate("thp_fault_fallback", s), "thp_fault_fallback"),
        ], unit="cps", description="Page faults that got a huge page (thp_fault_alloc) and "
           "those that fell back to base pages (thp_fault_fallback)." + per_sim), 6, 8),
        (timeseries("THP fault fallback ratio", [
            (f"{rate('thp_fault_fallback', s)} / ({rate('thp_fault_alloc', s)} + "
             f"{rate('thp_fault_fallback', s)})", "fallback / (alloc + fallback)"),
        ], unit="percentunit", min_=0, max_=1, description="Share of THP page faults that "
           "fell back to base pages because no huge page could be allocated."), 6, 8),
        (timeseries("Direct reclaim stalls", [
            (srate("allocstall_normal", s), "allocstall_normal"),
        ], unit="cps", description="allocstall_normal: allocations that entered direct "
           "reclaim in ZONE_NORMAL." + per_sim), 24, 8),
        (row("Free memory (node_exporter: buddyinfo, zoneinfo)"), 24, 1),
        (timeseries("Free blocks by order", [
            (f"sum by (size) (node_buddyinfo_blocks{{{zs}}})", "order {{size}}"),
        ], log=True, description="/proc/buddyinfo: free blocks of each order (2^order "
           "pages) in the selected zones, all nodes."), 12, 9),
        (heatmap("Free blocks by order over time (buddyinfo heatmap)",
                 f"sum by (size) (node_buddyinfo_blocks{{{zs}}})", "{{size}}",
                 description="/proc/buddyinfo as a heatmap: one row per order, colour the "
                             "free blocks; fragmentation shows as the high rows fading."),
         12, 9),
        (timeseries("High-order availability (order >= 9)", [
            (f"sum by (node, zone) (node_buddyinfo_blocks{{{zs}, {HIGH_ORDER}}})",
             "node {{node}} {{zone}}"),
        ], description="Free blocks of order 9 and 10 (2 MiB and 4 MiB with 4 KiB pages): "
           "what a THP or pageblock-sized allocation can take without compaction."), 12, 9),
        (timeseries("Zone free pages against watermarks", [
            (f"node_zoneinfo_nr_free_pages{{{zs}}}", "node {{node}} {{zone}} free"),
            (f"node_zoneinfo_min_pages{{{zs}}}", "node {{node}} {{zone}} min"),
            (f"node_zoneinfo_low_pages{{{zs}}}", "node {{node}} {{zone}} low"),
            (f"node_zoneinfo_high_pages{{{zs}}}", "node {{node}} {{zone}} high"),
        ], description="/proc/zoneinfo: free pages and the min/low/high watermarks "
           "(boosted watermarks not included; see the compactsim boost panel)."), 12, 9),
        (row("compactsim only (no node_exporter equivalent; empty on real hosts)"), 24, 1),
        (timeseries("Extfrag index by order (compactsim)", [
            (f"compactsim_extfrag_index{{{zs}}}", "node {{node}} {{zone}} order {{order}}"),
        ], min_=-1, max_=1, description="Fragmentation index per order (debugfs "
           "extfrag_index): towards 0 a failure would be for lack of memory, towards 1 for "
           "fragmentation; -1 means an allocation of that order would succeed."), 12, 9),
        (timeseries("Unusable free space index by order (compactsim)", [
            (f"compactsim_unusable_index{{{zs}}}", "node {{node}} {{zone}} order {{order}}"),
        ], unit="percentunit", min_=0, max_=1, description="debugfs unusable_index: the "
           "share of free memory in blocks too small for an allocation of that order (0: "
           "all usable, 1: none)."), 12, 9),
        (timeseries("Fragmentation score (compactsim)", [
            (f"compactsim_fragmentation_score{{{s}}}", "node {{node}}"),
        ], min_=0, max_=100, description="Proactive compaction's per-node score (0-100); "
           "kcompactd compacts proactively above vm.compaction_proactiveness's "
           "high threshold."), 8, 9),
        (timeseries("Wasted migrations (compactsim)", [
            (per_sim_s(f"rate(compactsim_compaction_wasted_migrations_total{{{s}}}[{RI}])",
                       s), "pageblocks"),
        ], unit="cps", description="Pageblocks compaction migrated pages out of that did "
           "not become free at pageblock order after the pcp drain (a block merged into a "
           "larger free neighbour counts as free): work that freed nothing usable."
           + per_sim), 8, 9),
        (timeseries("Pages migrated by kind (compactsim)", [
            (f"sum by (job, instance, kind) (rate(compactsim_migrated_pages_total{{{s}}}"
             f"[{RI}])) / on (job, instance) group_left() {sim_seconds(s)}", "{{kind}}"),
        ], unit="cps", stack=True, description="Pages migrated, by what they were: LRU "
           "anon, LRU file, zsmalloc (zram's pool, movable only with a movable-ops design) "
           "and balloon pages." + per_sim), 8, 9),
        (timeseries("Compaction latency by trigger, p99 (compactsim)", [
            (quantile("compactsim_compaction_latency_seconds", "trigger", s), "{{trigger}}"),
        ], unit="s", description="99th percentile time of one compact_zone() by who asked: "
           "direct compaction, kcompactd, proactive, manual (simulated seconds); a gap "
           "while none ran."), 8, 9),
        (timeseries("Free blocks at order >= 9 by migratetype (compactsim)", [
            (f'sum by (migratetype) (compactsim_free_blocks{{{zs}, order=~"9|1[0-9]"}})',
             "{{migratetype}}"),
        ], description="/proc/pagetypeinfo: high-order free blocks on each migratetype's "
           "free lists."), 8, 9),
        (timeseries("Pageblocks by migratetype (compactsim)", [
            (f"sum by (migratetype) (compactsim_pageblocks{{{zs}}})", "{{migratetype}}"),
        ], stack=True, description="/proc/pagetypeinfo: pageblocks of each migratetype; "
           "unmovable/reclaimable growth means fallbacks polluting movable blocks."), 8, 9),
        (timeseries("Watermark boost (compactsim)", [
            (f"compactsim_zone_watermark_boost_pages{{{zs}}}", "node {{node}} {{zone}}"),
        ], description="Zone watermark boost pages (vm.watermark_boost_factor), raised on "
           "fragmenting fallbacks and cleared by kswapd/kcompactd."), 8, 9),
        (timeseries("Lock waits, p99 (compactsim)", [
            (quantile("compactsim_lock_wait_seconds", "lock, node, zone", s),
             "{{lock}} {{node}} {{zone}}"),
        ], unit="s", description="99th percentile wait to take zone->lock and the lru_lock "
           "(simulated seconds): contention between allocation, reclaim and the compaction "
           "scanners; a gap while nobody waited."), 12, 9),
        (timeseries("Allocation latency, p99 (compactsim)", [
            (quantile("compactsim_alloc_latency_seconds", "kind, order", s),
             "{{kind}} order {{order}}"),
        ], unit="s", description="99th percentile allocation latency by page kind and order "
           "(simulated seconds), slow path, reclaim and compaction included."), 12, 9),
    ]
    variables = [
        JOB_VAR,
        query_var("nodename", "Host", 'label_values(node_uname_info{job="$job"}, nodename)'),
        query_var("node", "Instance", 'label_values(node_uname_info{job="$job", '
                  'nodename="$nodename"}, instance)'),
        query_var("zone", "Zone", 'label_values(node_zoneinfo_nr_free_pages{job="$job", '
                  'instance="$node"}, zone)', multi=True, include_all=True),
    ]
    return dashboard(
        "compactsim-compaction", "Memory compaction & fragmentation",
        "Linux memory compaction, migration and fragmentation from node_exporter's vmstat, "
        "buddyinfo and zoneinfo collectors (compactsim runs or real hosts); panels marked "
        "(compactsim) need a simulated run. Rates are per simulated second.", layout(p),
        variables)


def compare() -> dict:
    s = MSEL
    n = BY_NODENAME
    ratio = lambda a, b: (f"({rate(a, s)} / ({rate(a, s)} + {rate(b, s)})){n}")  # noqa: E731
    per_run = lambda expr: f"({expr}){n}"  # noqa: E731
    info = {
        "type": "table", "title": "Runs (compactsim)", "datasource": DS,
        "description": "compactsim_run_info of the chosen instances: run, scenario, design "
                       "and kernel profile.",
        "targets": [{**target(f"compactsim_run_info{{{s}}}{n}", "", "A"),
                     "format": "table", "instant": True, "range": False}],
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}}}],
        "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True},
    }
    by_order = timeseries("Free blocks by order: $node", [
        ('sum by (size) (node_buddyinfo_blocks{job="$job", instance="$node"})',
         "order {{size}}"),
    ], log=True, description="One panel per chosen instance (repeated).")
    by_order.update({"repeat": "node", "repeatDirection": "h", "maxPerRow": 4})
    per_sim = "Per simulated second."
    p = [
        (info, 24, 6),
        (row("One series per run (node_exporter names)"), 24, 1),
        (timeseries("Compaction stalls", [(per_run(srate("compact_stall", s)), "{{nodename}}")],
                    unit="cps", description=per_sim), 8, 8),
        (timeseries("Compaction success ratio",
                    [(ratio("compact_success", "compact_fail"), "{{nodename}}")],
                    unit="percentunit", min_=0, max_=1), 8, 8),
        (timeseries("Compaction failures", [(per_run(srate("compact_fail", s)), "{{nodename}}")],
                    unit="cps", description=per_sim), 8, 8),
        (timeseries("Direct compaction migrate scanner", [
            (per_run(per_sim_s(f"({rate('compact_migrate_scanned', s)} - "
                               f"{rate('compact_daemon_migrate_scanned', s)})", s)),
             "{{nodename}}")], unit="cps", description=per_sim), 8, 8),
        (timeseries("kcompactd migrate scanner", [
            (per_run(srate("compact_daemon_migrate_scanned", s)), "{{nodename}}")],
                    unit="cps", description=per_sim), 8, 8),
        (timeseries("kcompactd wakes", [
            (per_run(srate("compact_daemon_wake", s)), "{{nodename}}")], unit="cps",
                    description=per_sim), 8, 8),
        (timeseries("Pages migrated", [
            (per_run(srate("pgmigrate_success", s)), "{{nodename}}")], unit="cps",
                    description=per_sim), 8, 8),
        (timeseries("Migration failures", [
            (per_run(srate("pgmigrate_fail", s)), "{{nodename}}")], unit="cps",
                    description=per_sim), 8, 8),
        (timeseries("THP fault fallback ratio",
                    [(ratio("thp_fault_fallback", "thp_fault_alloc"), "{{nodename}}")],
                    unit="percentunit", min_=0, max_=1), 8, 8),
        (timeseries("High-order free blocks (order >= 9)", [
            (f"sum by (job, instance) (node_buddyinfo_blocks{{{s}, {HIGH_ORDER}}}){n}",
             "{{nodename}}")]), 12, 8),
        (timeseries("Free pages (all zones)", [
            (f"sum by (job, instance) (node_zoneinfo_nr_free_pages{{{s}}}){n}",
             "{{nodename}}")]), 12, 8),
        (row("compactsim only"), 24, 1),
        (timeseries("Fragmentation score (compactsim)", [
            (f"max by (job, instance) (compactsim_fragmentation_score{{{s}}}){n}",
             "{{nodename}}")], min_=0, max_=100), 8, 8),
        (timeseries("Extfrag index, order 9 (compactsim)", [
            (f'max by (job, instance) (compactsim_extfrag_index{{{s}, order="9"}}){n}',
             "{{nodename}}")], min_=-1, max_=1), 8, 8),
        (timeseries("Simulated time (compactsim)", [
            (f"compactsim_simulated_seconds_total{{{s}}}{n}", "{{nodename}}")], unit="s"),
         8, 8),
        (row("Side by side: one panel per run"), 24, 1),
        (by_order, 6, 9),
    ]
    variables = [
        JOB_VAR,
        query_var("node", "Runs", 'label_values(node_uname_info{job="$job"}, instance)',
                  multi=True, include_all=True),
    ]
    return dashboard(
        "compactsim-compare", "Memory compaction: compare runs",
        "compactsim runs (or hosts) side by side: one series per instance, named by "
        "node_uname_info's nodename (the run's display name); rates per simulated second.",
        layout(p), variables)


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2) + "\n"
            for name, fn in (("compaction.json", compaction), ("compare.json", compare))}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote {HERE / 'dashboards' / name}")
