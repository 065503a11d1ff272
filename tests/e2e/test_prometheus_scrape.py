"""The shipped Prometheus config against the real thing: `compactsim-server`, a paced run and
Debian's `prometheus` on loopback, scraping the service job and the run found through /sd;
checked through Prometheus's HTTP API. Skipped only when prometheus is not installed
(.ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from test_service import R, Server, create, spec, wait_state

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (.ci/run installs Debian's)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config(mport: int, out: Path) -> Path:
    """deploy/prometheus/prometheus.yml pointed at 127.0.0.1:mport, everything at 1 s."""
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(PROM / f) for f in cfg["rule_files"]]
    address = f"127.0.0.1:{mport}"
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            sc["targets"] = [address]
        for sd in job.get("http_sd_configs", []):
            sd["url"] = urllib.parse.urlunsplit(
                ("http", address) + urllib.parse.urlsplit(sd["url"])[2:])
            sd["refresh_interval"] = "1s"
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


test_config.__test__ = False   # a helper, not a test


def dashboard_queries(instance: str, nodename: str) -> list[str]:
    """Every panel query of the shipped dashboards, variables set to this run."""
    values = {"$__rate_interval": "5s", "$__interval": "5s", "$job": "compactsim-runs",
              "$nodename": nodename, "$node": instance, "$zone": "Normal"}
    exprs = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                for var, value in values.items():
                    expr = expr.replace(var, value)
                if expr:
                    exprs.append(expr)

    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text())["panels"])
    assert len(exprs) > 10
    return exprs


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(port: int, expr: str, deadline: float) -> list[dict]:
    while True:
        try:
            got = query(port, expr)
        except OSError:
            got = []
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def value(sample: dict) -> float:
    return float(sample["value"][1])


LINGER_S = 20   # --metrics-target-linger: the final state stays a target this long


class Lab:
    """compactsim-server and Prometheus (deploy/prometheus/prometheus.yml at 1 s) on
    loopback."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.server = Server(tmp_path, "--metrics-target-linger", f"{LINGER_S}s").start()
        self.mport = int(next(tmp_path.glob("port-*.metrics")).read_text())
        config = test_config(self.mport, tmp_path)
        self.pport = free_port()
        with open(tmp_path / "prometheus.log", "wb") as plog:   # the child keeps its fd
            self.prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.pport}", "--log.level=warn"],
                stdout=plog, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.tmp / "prometheus.log").read_text()

    def close(self) -> None:
        self.prom.terminate()
        try:
            self.prom.wait(10)
        except subprocess.TimeoutExpired:
            self.prom.kill()
            self.prom.wait()
        if self.server.proc.poll() is None:
            self.server.stop()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def check_final_state(lab: Lab, run, deadline: float) -> None:
    """Once the run has ended and Prometheus has scraped its final state (within the
    linger): its counters there are the summary's, and every dashboard query returns
    data for it."""
    port, inst = lab.pport, f'instance="{run.name}"'
    summary = json_format.MessageToDict(run.summary)
    vmstat = summary["vmstat"]
    got = wait_for(port, f"node_vmstat_pgalloc_normal{{{inst}}} == {vmstat['pgalloc_normal']}",
                   deadline)
    assert got, (query(port, f"node_vmstat_pgalloc_normal{{{inst}}}"), lab.log())
    # at least three scrapes of the final state: rates over 5 s have two samples
    assert wait_for(port, f'count_over_time(up{{job="compactsim-runs",{inst}}}[5s]) >= 3',
                    deadline)
    final = {s["metric"]["__name__"]: value(s) for s in query(
        port, f'{{__name__=~"node_vmstat_.+", {inst}}}')}
    compared = [f for f in vmstat if f"node_vmstat_{f}" in final]
    assert len(compared) > 30
    assert {f: final[f"node_vmstat_{f}"] for f in compared} == {f: vmstat[f] for f in compared}
    assert value(query(port, f"compactsim_simulated_seconds_total{{{inst}}}")[0]) == \
        summary["sim_time_s"]
    assert value(query(port, f"compactsim_compaction_wasted_migrations_total{{{inst}}}")[0]) \
        == summary["compaction"].get("wasted_migrations", 0)
    by_kind = {s["metric"]["kind"]: value(s) for s in query(
        port, f"compactsim_migrated_pages_total{{{inst}}}")}
    assert by_kind == summary["migrated_by_kind"]
    by_order = {int(s["metric"]["size"]): value(s) for s in query(
        port, f"sum by (size) (node_buddyinfo_blocks{{{inst}}})")}
    assert [by_order[o] for o in sorted(by_order)] == [
        sum(z[o] for z in summary["free_pages_by_order"]) for o in sorted(by_order)]
    nodename = query(port, f"node_uname_info{{{inst}}}")[0]["metric"]["nodename"]
    exprs = dashboard_queries(run.name, nodename)
    empty = [e for e in exprs if not query(port, e)]
    assert not empty, empty


def check_whole_life(lab: Lab, run) -> None:
    """Over the run's whole life: one series per metric and label set (nothing split by a
    label that changed), and every histogram on one bucket set at every scrape."""
    port, inst = lab.pport, f'instance="{run.name}"'
    window = "[10m]"
    series = query(port, f'last_over_time({{job="compactsim-runs", {inst}}}{window})')
    assert series
    names: dict[str, list[dict]] = {}
    for s in series:
        names.setdefault(s["metric"]["__name__"], []).append(s["metric"])
    for name in ("node_uname_info", "compactsim_run_info", "node_vmstat_pgalloc_normal",
                 "node_vmstat_compact_stall", "compactsim_simulated_seconds_total",
                 "node_memory_MemFree_bytes", "up"):
        assert len(names[name]) == 1, (name, names[name])
    for name, metrics in names.items():
        # no target label but job and instance: scenario and design are run_info's
        own = {k for m in metrics for k in m} - {"__name__", "job", "instance"}
        assert not own & {"scenario", "design", "profile"} or name == "compactsim_run_info", \
            (name, own)
        keys = [tuple(sorted(m.items())) for m in metrics]
        assert len(keys) == len(set(keys))
    # never a failed scrape: not at the start (no snapshot yet), not at the end (the run
    # stays a target, serving its final state)
    assert query(port, f'min_over_time(up{{job="compactsim-runs", {inst}}}{window})')
    assert not query(port, f'min_over_time(up{{job="compactsim-runs", {inst}}}{window}) == 0')
    # every histogram: the same le values for every label set, and every bucket at every
    # scrape (as many samples as its label set's _count)
    buckets = query(port, f'count_over_time({{__name__=~".+_bucket", {inst}}}{window})')
    assert buckets
    groups: dict[tuple, dict[str, float]] = {}
    for s in buckets:
        m = dict(s["metric"])
        le = m.pop("le")
        groups.setdefault(tuple(sorted(m.items())), {})[le] = value(s)
    le_sets = {tuple(sorted(g, key=float)) for g in groups.values()}
    assert len(le_sets) == 1, le_sets
    (les,) = le_sets
    assert les[-1] == "+Inf" and len(les) == 32
    for key, g in groups.items():
        assert len(set(g.values())) == 1, (key, g)   # each bucket in every scrape


def test_prometheus_scrapes_whole_paced_and_unpaced_runs(lab):
    start = time.monotonic()
    server, pport, mport = lab.server, lab.pport, lab.mport
    paced = create(server.stub, spec(duration=8.0, pace=1.0), display_name="paced")
    unpaced = create(server.stub, spec(duration=0.5, pace=0.0), display_name="unpaced")
    deadline = start + 60
    up = wait_for(pport, 'up{job="compactsim"} == 1', deadline)
    assert up, lab.log()
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{mport}"
    # the unpaced run ends at once; it is scraped all the same, in its final state
    unpaced = wait_state(server.stub, unpaced.name)
    assert unpaced.state == R.SUCCEEDED
    check_final_state(lab, unpaced, deadline)
    # the paced run is scraped while it runs...
    inst = f'instance="{paced.name}"'
    assert wait_for(pport, f'compactsim_run_info{{{inst}, run="{paced.name}"}}', deadline)
    assert wait_for(pport, f"node_vmstat_pgalloc_normal{{{inst}}} > 0", deadline)
    assert wait_state(server.stub, paced.name, (R.RUNNING,)).state == R.RUNNING
    # the service job's own metrics, scraped
    assert wait_for(pport, 'compactsim_runs{job="compactsim",state="RUNNING"} == 1', deadline)
    assert wait_for(pport, 'grpc_server_handled_total{job="compactsim",grpc_method="CreateRun",'
                           'grpc_service="compactsim.v1.Simulator",grpc_code="OK"} == 2',
                    deadline)
    # a recording rule over the run's series is evaluated
    assert wait_for(pport, f"instance:node_vmstat_compact_stall:rate5m{{{inst}}}", deadline)
    # ...and in its final state once it has ended
    paced = wait_state(server.stub, paced.name, timeout=30)
    assert paced.state == R.SUCCEEDED
    check_final_state(lab, paced, deadline)
    for run in (unpaced, paced):
        check_whole_life(lab, run)
    # rates per simulated second: the paced run's stall rate over its life is the
    # summary's count over its simulated duration, not over wall time
    rate = query(pport, f"increase(node_vmstat_pgalloc_normal{{{inst}}}[1m]) / "
                        f"increase(compactsim_simulated_seconds_total{{{inst}}}[1m])")
    assert rate and value(rate[0]) > 0
    assert time.monotonic() - start < 90
