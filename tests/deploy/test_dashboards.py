"""The shipped Grafana dashboards (deploy/grafana): structure, datasource, queries.

Offline checks: valid JSON, unique panel ids, every panel, query and variable on the
datasource variable, an import as Grafana does it (`__inputs` substituted, every reference
resolved), no overlapping panels, Node Exporter Full's variable scheme, rates per simulated
second, every query parses as PromQL (`promtool check rules`, skipped without
/usr/bin/promtool), and every query names only metrics the probe exports
(server/collector.py) or node_exporter's names.
Whether each query returns data against a live run is the end-to-end test's job.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from compactsim.sim.vmstat import GAUGES, VM_EVENTS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "compactsim.yaml"
COLLECTOR = ROOT / "server" / "collector.py"
PROMTOOL = Path("/usr/bin/promtool")

# Sample values for template variables when a query is checked as PromQL.
SAMPLES = {"job": "compactsim-runs", "node": "runs/abc123", "nodename": "churn-1",
           "zone": "Normal|DMA32", "__rate_interval": "1m", "__interval": "15s",
           "__range": "1h"}
# /proc/vmstat fields the dashboards may use: what the simulator exports (sim/vmstat.py,
# the real kernel names) and the ones node_exporter users query for compaction.
DOCUMENTED_VMSTAT = {
    "compact_stall", "compact_success", "compact_fail", "compact_migrate_scanned",
    "compact_free_scanned", "compact_daemon_wake", "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned", "pgmigrate_success", "pgmigrate_fail", "thp_fault_alloc",
    "thp_fault_fallback", "allocstall_normal",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and",
                   "or", "unless", "bool", "offset", "inf", "nan"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(dash: dict) -> list[dict]:
    """Top-level panels and those nested in (collapsed) rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) of every panel target."""
    return [(f"panel {p['id']} {p.get('title')!r} {t.get('refId')}", t["expr"])
            for p in all_panels(dash) for t in p.get("targets", []) if t.get("expr")]


def variable_selectors(dash: dict) -> list[tuple[str, str]]:
    """The PromQL inside each `label_values(<selector>, label)` variable query."""
    out = []
    for v in dash["templating"]["list"]:
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def substitute(expr: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in SAMPLES, f"no sample value for ${name} in {expr}"
        return SAMPLES[name]
    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)
    assert "$" not in out, out
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers left after dropping strings, label
    matchers, ranges, grouping label lists, function names, keywords and numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # exponent or unit of a number literal, e.g. 1e3
        names.add(m.group(0))
    return names


def exported_names() -> set[str]:
    """Metric names the probe exports: literals of server/collector.py, node_vmstat_<field>
    for the simulator's vmstat fields, and node_exporter's vmstat names used for compaction."""
    source = COLLECTOR.read_text()
    names = set(re.findall(r'"((?:node|compactsim)_[a-z0-9_]+)"', source))
    # counter families (CounterMetricFamily("name", ...)) are served as name_total
    names |= {c + "_total" for c in re.findall(
        r'CounterMetricFamily\(\s*"(compactsim_[a-z0-9_]+)"', source)}
    assert 'f"node_vmstat_{field}"' in source
    # histogram families (built in RunCollector._histograms) expose _bucket/_count/_sum
    histograms = re.findall(r'"(compactsim_[a-z0-9_]+)"',
                            source[source.index("def _histograms"):])
    assert histograms
    names |= {h + suffix for h in histograms for suffix in ("_bucket", "_count", "_sum")}
    names |= {f"node_vmstat_{f}" for f in (*VM_EVENTS, *GAUGES, *DOCUMENTED_VMSTAT)}
    return names


def provisioned_uid() -> str:
    (ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return ds["uid"]


# --------------------------------------------------------------------------- provisioning

def test_provisioning_files():
    ds = yaml.safe_load(DATASOURCES.read_text())
    assert ds["apiVersion"] == 1
    (src,) = ds["datasources"]
    assert src["type"] == "prometheus" and src["uid"] == "compactsim-prometheus"
    assert src["url"] == "http://prometheus:9090"
    prov = yaml.safe_load(PROVIDERS.read_text())
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_shipped_and_fresh():
    assert {p.name for p in DASHBOARDS} == {"compaction.json", "compare.json"}
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, text in gen.render().items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"{name} is stale: run python deploy/grafana/generate.py")


# --------------------------------------------------------------------------- structure

@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dash(request) -> dict:
    return load(request.param)  # valid JSON or the fixture fails


def test_uids_and_titles_unique():
    dashes = [load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashes}) == len(dashes)
    assert len({d["title"] for d in dashes}) == len(dashes)
    assert any(d["title"] == "Memory compaction & fragmentation" for d in dashes)


def test_panel_ids_unique(dash):
    ids = [p["id"] for p in all_panels(dash)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), ids


def test_every_panel_uses_the_datasource_variable(dash):
    uid = "${ds_prometheus}"
    for p in all_panels(dash):
        if p["type"] == "row":
            assert "targets" not in p
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == uid, p["title"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"]["uid"] == uid, v["name"]


def test_no_overlapping_panels(dash):
    rects = []
    for p in all_panels(dash):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        rects.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for a, b in itertools.combinations(rects, 2):
        overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
        assert not overlap, f"{a[0]!r} overlaps {b[0]!r}"


def test_compaction_variables_follow_node_exporter_scheme():
    """Node Exporter Full's names: ds_prometheus, job, nodename (Host), node (Instance)."""
    d = load(GRAFANA / "dashboards" / "compaction.json")
    v = {x["name"]: x for x in d["templating"]["list"]}
    names = [x["name"] for x in d["templating"]["list"]]
    assert names[:4] == ["ds_prometheus", "job", "nodename", "node"]
    assert v["nodename"]["label"] == "Host" and v["node"]["label"] == "Instance"
    assert v["nodename"]["query"]["query"] == \
        'label_values(node_uname_info{job="$job"}, nodename)'
    assert v["node"]["query"]["query"] == \
        'label_values(node_uname_info{job="$job", nodename="$nodename"}, instance)'
    for where, expr in queries(d):
        assert 'instance="$node"' in expr and 'job="$job"' in expr, where


# --------------------------------------------------------------------------- import

def references(obj, path=""):
    """(path, value) of every "datasource" object and every string under `obj`."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from references(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from references(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def grafana_import(text: str, inputs: dict[str, str]) -> dict:
    """What Grafana's dashboard import does with the JSON: each `${INPUT}` of `__inputs`
    replaced by the value picked for it."""
    dash = json.loads(text)
    for inp in dash.get("__inputs", []):
        text = text.replace("${" + inp["name"] + "}", inputs[inp["name"]])
    return json.loads(text)


def test_dashboard_json_imports(dash):
    """Importable as labs import Node Exporter Full: an `__inputs` datasource used, a
    datasource variable that every panel, query and variable query refers to, and every
    `$variable` defined."""
    inputs = dash["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    assert {"type": "datasource", "id": "prometheus", "name": "Prometheus",
            "version": "1.0.0"} in dash["__requires"]
    panel_types = {p["type"] for p in all_panels(dash)} - {"row"}
    assert panel_types <= {r["id"] for r in dash["__requires"] if r["type"] == "panel"}
    text = json.dumps(dash)
    assert "${DS_PROMETHEUS}" in text   # the input is used, or the import ignores it
    imported = grafana_import(text, {"DS_PROMETHEUS": "lab-prometheus-uid"})
    assert "${DS_" not in json.dumps(imported)
    variables = {v["name"]: v for v in imported["templating"]["list"]}
    ds_vars = {n for n, v in variables.items() if v["type"] == "datasource"}
    assert ds_vars == {"ds_prometheus"}
    assert variables["ds_prometheus"]["query"] == "prometheus"
    assert variables["ds_prometheus"]["current"]["value"] == "lab-prometheus-uid"
    # every datasource reference names the datasource variable; no fixed uid left
    refs = [(p, v) for p, v in references(imported) if re.search(r"\.datasource\.uid$", p)]
    assert refs and all(v == "${ds_prometheus}" for _, v in refs), refs
    assert provisioned_uid() not in json.dumps(imported)
    # every $variable of a query or variable definition is a variable of the dashboard
    builtin = {"__rate_interval", "__interval", "__range"}
    for where, expr in queries(imported) + [(f"variable {n}", v.get("definition", ""))
                                             for n, v in variables.items()]:
        used = {a or b for a, b in re.findall(r"\$\{(\w+)|\$(\w+)", expr)}
        assert used <= set(variables) | builtin, (where, used - set(variables))
    for p in all_panels(imported):
        if "repeat" in p:
            assert p["repeat"] in variables, p["title"]


def test_import_check_catches_a_fixed_uid(dash):
    broken = json.loads(json.dumps(dash))
    next(p for p in broken["panels"] if p["type"] != "row")["datasource"]["uid"] = \
        provisioned_uid()
    with pytest.raises(AssertionError):
        test_dashboard_json_imports(broken)


RATE = re.compile(r"\brate\((node_vmstat_\w+|compactsim_\w+_total)\{")
# one instance's simulated time divides each of its series (group_left: several per instance)
PER_SIM = re.compile(r"/ on \(job, instance\) (group_left\(\) )?"
                     r"\(rate\(compactsim_simulated_seconds_total\{")


def test_rates_are_per_simulated_second(dash):
    """A panel of counter rates (unit cps) divides each by simulated time's rate, with 1
    for instances without it (real hosts)."""
    checked = 0
    for p in all_panels(dash):
        if p.get("fieldConfig", {}).get("defaults", {}).get("unit") != "cps":
            continue
        for t in p["targets"]:
            assert RATE.search(t["expr"]), (p["title"], t["expr"])
            assert PER_SIM.search(t["expr"]), (p["title"], t["expr"])
            assert "or on (job, instance) (0 * node_uname_info{" in t["expr"]
            checked += 1
    assert checked >= 5


def test_mission_panels():
    """Wasted migrations, pages migrated by kind, the unusable index, a buddyinfo heatmap,
    compaction latency by trigger, THP fault alloc and fallback rates and scan efficiency
    are charted."""
    d = load(GRAFANA / "dashboards" / "compaction.json")
    text = " ".join(e for _, e in queries(d))
    for needle in ("compactsim_compaction_wasted_migrations_total",
                   "sum by (job, instance, kind) (rate(compactsim_migrated_pages_total{",
                   "compactsim_unusable_index",
                   "compactsim_compaction_latency_seconds_bucket",
                   "sum by (trigger, le)",
                   "rate(node_vmstat_thp_fault_alloc{",
                   "rate(node_vmstat_pgmigrate_success{job=\"$job\", instance=\"$node\"}"
                   "[$__rate_interval]) / rate(node_vmstat_compact_migrate_scanned{"):
        assert needle in text, needle
    heat = [p for p in all_panels(d) if p["type"] == "heatmap"]
    assert heat and "node_buddyinfo_blocks" in heat[0]["targets"][0]["expr"]


def test_compare_variables_multi_instance():
    d = load(GRAFANA / "dashboards" / "compare.json")
    v = {x["name"]: x for x in d["templating"]["list"]}
    assert {"ds_prometheus", "job", "node"} <= set(v)
    assert v["node"]["multi"] and v["node"]["includeAll"]
    for where, expr in queries(d):
        assert re.search(r'instance=~?"\$node"', expr), where
    # one series per run, or a panel repeated per run
    for p in all_panels(d):
        if p["type"] == "timeseries":
            assert (p.get("repeat") == "node"
                    or all("{{nodename}}" in t["legendFormat"] for t in p["targets"])), \
                p["title"]
    assert any(p.get("repeat") == "node" for p in all_panels(d))


def test_compaction_dashboard_covers_the_brief():
    d = load(GRAFANA / "dashboards" / "compaction.json")
    text = " ".join(e for _, e in queries(d))
    for needle in ("compact_stall", "compact_success", "compact_fail",
                   "compact_daemon_migrate_scanned", "compact_daemon_free_scanned",
                   "compact_daemon_wake", "pgmigrate_success", "pgmigrate_fail",
                   "node_buddyinfo_blocks", "compactsim_extfrag_index",
                   "node_zoneinfo_min_pages", "node_zoneinfo_low_pages",
                   "node_zoneinfo_high_pages", "thp_fault_fallback"):
        assert needle in text, needle


# --------------------------------------------------------------------------- queries

def test_queries_use_exported_metric_names(dash):
    known = exported_names()
    checked = queries(dash) + variable_selectors(dash)
    assert checked
    for where, expr in checked:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - known
        assert not unknown, f"{where}: unknown metrics {sorted(unknown)} in {expr}"


def test_node_facing_panels_use_node_exporter_names_only(dash):
    """Panels that must work on a real host query node_* only; the others say so. The time
    base of rates, compactsim_simulated_seconds_total, falls back to 1 on a real host."""
    for p in all_panels(dash):
        for t in p.get("targets", []):
            sim_only = {n for n in metric_names(t["expr"]) if not n.startswith("node_")
                        and n != "compactsim_simulated_seconds_total"}
            if sim_only:
                assert "compactsim" in p["title"], \
                    f"{p['title']!r} uses {sorted(sim_only)} but is not labelled compactsim"


@pytest.mark.skipif(not PROMTOOL.exists(),
                    reason="/usr/bin/promtool not installed (Debian package prometheus; "
                           ".ci/run installs it)")
def test_queries_parse_as_promql(dash, tmp_path):
    checked = queries(dash) + variable_selectors(dash)
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)}
             for i, (_, expr) in enumerate(checked)]
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": dash["uid"], "rules": rules}]}))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)],
                         capture_output=True, text=True, timeout=60)
    listing = "\n".join(f"query_{i}: {w}: {e}" for i, (w, e) in enumerate(checked))
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{listing}"
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout, out.stdout


def test_metric_name_extraction():
    assert metric_names('rate(node_vmstat_compact_stall{job="x"}[1m]) / (rate(a{b="c"}[5m]) '
                        '> 0) * on (job, instance) group_left (nodename) node_uname_info') \
        == {"node_vmstat_compact_stall", "a", "node_uname_info"}
    assert metric_names('sum by (size) (node_buddyinfo_blocks{size=~"9|1[0-9]"}) / 1e3') \
        == {"node_buddyinfo_blocks"}


def test_promtool_is_sensitive(tmp_path):
    """The parse check would catch a broken query."""
    if not PROMTOOL.exists():
        pytest.skip("/usr/bin/promtool not installed (Debian package prometheus)")
    path = tmp_path / "bad.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": substitute('rate(node_vmstat_compact_stall{job="$job"}'
                                             '[$__rate_interval]) /')}]}]}))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
