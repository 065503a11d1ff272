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
              "$nodename": nodename, "$instance": instance, "$zone": "Normal"}
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


def test_prometheus_scrapes_service_and_run(tmp_path):
    start = time.monotonic()
    server = Server(tmp_path).start()
    prom = None
    try:
        mport = int(next(tmp_path.glob("port-*.metrics")).read_text())
        config = test_config(mport, tmp_path)
        pport = free_port()
        with open(tmp_path / "prometheus.log", "wb") as plog:   # the child keeps its fd
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                stdout=plog, stderr=subprocess.STDOUT)
        run = create(server.stub, spec(duration=20.0, pace=1.0))   # about 20 s of wall time
        wait_state(server.stub, run.name, (R.RUNNING,))
        deadline = start + 50
        inst = f'instance="{run.name}"'

        up = wait_for(pport, 'up{job="compactsim"} == 1', deadline)
        assert up, (tmp_path / "prometheus.log").read_text()
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{mport}"
        pgalloc = wait_for(pport, f"node_vmstat_pgalloc_normal{{{inst}}}", deadline)
        assert pgalloc, (tmp_path / "prometheus.log").read_text()
        assert pgalloc[0]["metric"]["job"] == "compactsim-runs"
        buddy = wait_for(pport, f"node_buddyinfo_blocks{{{inst}}}", deadline)
        assert buddy and {"node", "zone", "size"} <= set(buddy[0]["metric"])
        assert wait_for(pport, f'up{{job="compactsim-runs",{inst}}} == 1', deadline)
        # the service job's own metrics, scraped
        assert wait_for(pport, 'compactsim_runs{job="compactsim",state="RUNNING"} == 1',
                        deadline)
        assert wait_for(pport, 'compactsim_grpc_requests_total{job="compactsim",'
                               'method="/compactsim.v1.Simulator/CreateRun",code="OK"}',
                        deadline)
        # a recording rule over the run's series is evaluated
        assert wait_for(pport, f"instance:node_vmstat_compact_stall:rate5m{{{inst}}}",
                        deadline)
        # every query of every shipped dashboard panel returns data for the run
        nodename = query(pport, f"node_uname_info{{{inst}}}")[0]["metric"]["nodename"]
        exprs = dashboard_queries(run.name, nodename)
        empty = [e for e in exprs if not wait_for(pport, e, time.monotonic() + 3)]
        assert not empty, empty
        # once the run ends it leaves service discovery
        wait_state(server.stub, run.name)
        sd = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{mport}/sd", timeout=5).read())
        assert all(g["labels"].get("__param_target") != run.name for g in sd), sd
        assert time.monotonic() - start < 90
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        if server.proc.poll() is None:
            server.stop()
