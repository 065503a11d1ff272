"""Generates dashboards/compaction.json and dashboards/compare.json.

The JSON files are what Grafana provisions and what the tests check; this script is the
source they were written from (run it after editing, `tests/deploy/test_dashboards.py`
checks they are fresh): `python deploy/grafana/generate.py`.

Node-facing panels query only node_exporter names (`node_vmstat_*`, `node_buddyinfo_blocks`,
`node_zoneinfo_*`, `node_uname_info`), so they work on a real host running node_exporter with
the buddyinfo and zoneinfo collectors and a wider vmstat field regex (see README.md here).
Panels that need compactsim's own families say "(compactsim)" in their title.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS_UID = "compactsim-prometheus"  # provisioning/datasources/prometheus.yaml
DS = {"type": "prometheus", "uid": DS_UID}
SEL = 'job="$job", instance="$instance"'            # one machine (compaction.json)
MSEL = 'job="$job", instance=~"$instance"'          # the chosen runs (compare.json)
RI = "$__rate_interval"
# order >= 9 (pageblock order with 4 KiB pages: 2 MiB and larger); MAX_ORDER is 10 on x86_64
HIGH_ORDER = 'size=~"9|1[0-9]"'
# one series per run, named by node_uname_info's nodename (the run's display name)
BY_NODENAME = ' * on (job, instance) group_left (nodename) node_uname_info{job="$job"}'


def rate(field: str, sel: str) -> str:
    return f"rate(node_vmstat_{field}{{{sel}}}[{RI}])"


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


JOB_VAR = query_var("job", "Job", "label_values(node_uname_info, job)")


def dashboard(uid: str, title: str, description: str, panels: list[dict],
              variables: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["compactsim", "linux", "memory", "node_exporter"],
        "editable": True, "graphTooltip": 1, "refresh": "10s", "schemaVersion": 39,
        "version": 1, "timezone": "", "time": {"from": "now-30m", "to": "now"},
        "timepicker": {}, "annotations": {"list": []}, "links": [],
        "templating": {"list": variables}, "panels": panels,
    }


def compaction() -> dict:
    s = SEL
    zs = f'{s}, zone=~"$zone"'
    per_wall_s = (" Rates are per wall-clock second of the scrape; a paced run "
                  "(spec option pace) sets how many simulated seconds that is.")
    p = [
        (row("Compaction (node_exporter: vmstat)"), 24, 1),
        (timeseries("Compaction stalls, successes and failures", [
            (rate("compact_stall", s), "stall (direct compaction entered)"),
            (rate("compact_success", s), "success"),
            (rate("compact_fail", s), "fail"),
        ], unit="cps", description="Direct compaction: compact_stall counts entries, "
           "compact_success/compact_fail their outcomes." + per_wall_s), 12, 8),
        (timeseries("Compaction success ratio", [
            (f"{rate('compact_success', s)} / ({rate('compact_success', s)} + "
             f"{rate('compact_fail', s)})", "success / (success + fail)"),
        ], unit="percentunit", min_=0, max_=1, description="Share of direct compactions "
           "that made the allocation possible; a gap (0/0) while there are none."), 12, 8),
        (timeseries("Scanner rates: direct compaction vs kcompactd", [
            (f"{rate('compact_migrate_scanned', s)} - "
             f"{rate('compact_daemon_migrate_scanned', s)}", "direct: migrate scanner"),
            (rate("compact_daemon_migrate_scanned", s), "kcompactd: migrate scanner"),
            (f"{rate('compact_free_scanned', s)} - {rate('compact_daemon_free_scanned', s)}",
             "direct: free scanner"),
            (rate("compact_daemon_free_scanned", s), "kcompactd: free scanner"),
        ], unit="cps", description="Pages scanned per second. compact_*_scanned counts all "
           "compaction, compact_daemon_*_scanned kcompactd's share; direct = the difference."),
         12, 8),
        (timeseries("kcompactd wakes", [
            (rate("compact_daemon_wake", s), "kcompactd wakes"),
        ], unit="cps", description="compact_daemon_wake: kcompactd woken (by kswapd or "
           "proactive compaction)."), 6, 8),
        (timeseries("Page migration", [
            (rate("pgmigrate_success", s), "migrated"),
            (rate("pgmigrate_fail", s), "failed"),
        ], unit="cps", description="pgmigrate_success / pgmigrate_fail: pages migrated "
           "(compaction and other migration)."), 6, 8),
        (timeseries("THP fault fallback ratio", [
            (f"{rate('thp_fault_fallback', s)} / ({rate('thp_fault_alloc', s)} + "
             f"{rate('thp_fault_fallback', s)})", "fallback / (alloc + fallback)"),
        ], unit="percentunit", min_=0, max_=1, description="Share of THP page faults that "
           "fell back to base pages because no huge page could be allocated."), 12, 8),
        (timeseries("Direct reclaim stalls", [
            (rate("allocstall_normal", s), "allocstall_normal"),
        ], unit="cps", description="allocstall_normal: allocations that entered direct "
           "reclaim in ZONE_NORMAL."), 12, 8),
        (row("Free memory (node_exporter: buddyinfo, zoneinfo)"), 24, 1),
        (timeseries("Free blocks by order", [
            (f"sum by (size) (node_buddyinfo_blocks{{{zs}}})", "order {{size}}"),
        ], log=True, description="/proc/buddyinfo: free blocks of each order (2^order "
           "pages) in the selected zones, all nodes."), 12, 9),
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
           "(boosted watermarks not included; see the compactsim boost panel)."), 24, 9),
        (row("compactsim only (no node_exporter equivalent; empty on real hosts)"), 24, 1),
        (timeseries("Extfrag index by order (compactsim)", [
            (f"compactsim_extfrag_index{{{zs}}} / 1000",
             "node {{node}} {{zone}} order {{order}}"),
        ], min_=-1, max_=1, description="Fragmentation index per order (debugfs "
           "extfrag_index): towards 0 a failure would be for lack of memory, towards 1 for "
           "fragmentation; -1 means an allocation of that order would succeed."), 12, 9),
        (timeseries("Fragmentation score (compactsim)", [
            (f"compactsim_fragmentation_score{{{s}}}", "node {{node}}"),
        ], min_=0, max_=100, description="Proactive compaction's per-node score (0-100); "
           "kcompactd compacts proactively above vm.compaction_proactiveness's "
           "high threshold."), 12, 9),
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
            (f"histogram_quantile(0.99, sum by (lock, le) (rate("
             f"compactsim_lock_wait_seconds_bucket{{{s}}}[$__rate_interval])))", "{{lock}}"),
        ], unit="s", description="99th percentile wait to take zone->lock and the lru_lock "
           "(simulated seconds): contention between allocation, reclaim and the compaction "
           "scanners; a gap while nobody waited."), 12, 9),
        (timeseries("Allocation latency, p99 (compactsim)", [
            (f"histogram_quantile(0.99, sum by (request, le) (rate("
             f"compactsim_alloc_latency_seconds_bucket{{{s}}}[$__rate_interval])))",
             "{{request}}"),
        ], unit="s", description="99th percentile allocation latency by page kind and order "
           "(simulated seconds), slow path, reclaim and compaction included."), 12, 9),
    ]
    variables = [
        JOB_VAR,
        query_var("nodename", "Host", 'label_values(node_uname_info{job="$job"}, nodename)'),
        query_var("instance", "Instance", 'label_values(node_uname_info{job="$job", '
                  'nodename="$nodename"}, instance)'),
        query_var("zone", "Zone", 'label_values(node_zoneinfo_nr_free_pages{job="$job", '
                  'instance="$instance"}, zone)', multi=True, include_all=True),
    ]
    return dashboard(
        "compactsim-compaction", "Memory compaction & fragmentation",
        "Linux memory compaction, migration and fragmentation from node_exporter's vmstat, "
        "buddyinfo and zoneinfo collectors (compactsim runs or real hosts); panels marked "
        "(compactsim) need a simulated run.", layout(p), variables)


def compare() -> dict:
    s = MSEL
    n = BY_NODENAME
    ratio = lambda a, b: (f"({rate(a, s)} / ({rate(a, s)} + {rate(b, s)})){n}")  # noqa: E731
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
    by_order = timeseries("Free blocks by order: $instance", [
        ('sum by (size) (node_buddyinfo_blocks{job="$job", instance="$instance"})',
         "order {{size}}"),
    ], log=True, description="One panel per chosen instance (repeated).")
    by_order.update({"repeat": "instance", "repeatDirection": "h", "maxPerRow": 4})
    p = [
        (info, 24, 6),
        (row("One series per run (node_exporter names)"), 24, 1),
        (timeseries("Compaction stalls", [(f"{rate('compact_stall', s)}{n}", "{{nodename}}")],
                    unit="cps"), 8, 8),
        (timeseries("Compaction success ratio",
                    [(ratio("compact_success", "compact_fail"), "{{nodename}}")],
                    unit="percentunit", min_=0, max_=1), 8, 8),
        (timeseries("Compaction failures", [(f"{rate('compact_fail', s)}{n}", "{{nodename}}")],
                    unit="cps"), 8, 8),
        (timeseries("Direct compaction migrate scanner", [
            (f"({rate('compact_migrate_scanned', s)} - "
             f"{rate('compact_daemon_migrate_scanned', s)}){n}", "{{nodename}}")],
                    unit="cps"), 8, 8),
        (timeseries("kcompactd migrate scanner", [
            (f"{rate('compact_daemon_migrate_scanned', s)}{n}", "{{nodename}}")],
                    unit="cps"), 8, 8),
        (timeseries("kcompactd wakes", [
            (f"{rate('compact_daemon_wake', s)}{n}", "{{nodename}}")], unit="cps"), 8, 8),
        (timeseries("Pages migrated", [
            (f"{rate('pgmigrate_success', s)}{n}", "{{nodename}}")], unit="cps"), 8, 8),
        (timeseries("Migration failures", [
            (f"{rate('pgmigrate_fail', s)}{n}", "{{nodename}}")], unit="cps"), 8, 8),
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
            (f'max by (job, instance) (compactsim_extfrag_index{{{s}, order="9"}}) / 1000{n}',
             "{{nodename}}")], min_=-1, max_=1), 8, 8),
        (timeseries("Simulated time (compactsim)", [
            (f"compactsim_simulated_time_seconds{{{s}}}{n}", "{{nodename}}")], unit="s"),
         8, 8),
        (row("Side by side: one panel per run"), 24, 1),
        (by_order, 6, 9),
    ]
    variables = [
        JOB_VAR,
        query_var("instance", "Runs", 'label_values(node_uname_info{job="$job"}, instance)',
                  multi=True, include_all=True),
    ]
    return dashboard(
        "compactsim-compare", "Memory compaction: compare runs",
        "compactsim runs (or hosts) side by side: one series per instance, named by "
        "node_uname_info's nodename (the run's display name).", layout(p), variables)


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2) + "\n"
            for name, fn in (("compaction.json", compaction), ("compare.json", compare))}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote {HERE / 'dashboards' / name}")
