"""Offline checks of deploy/prometheus with Debian's promtool (.ci/run installs it), and
`promtool check metrics` on what a real server serves: /metrics and a running run's /probe."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from serverproc import R, create, spec, wait_state

from compactsim.proto.v1 import simulator_pb2

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (.ci/run installs Debian's prometheus)")


def promtool(*args: str, stdin: bytes | None = None) -> str:
    p = subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, cwd=PROM, check=False,
                       timeout=60)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out
    return out


def test_check_config():
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out


def test_check_rules():
    out = promtool("check", "rules", "rules.yml")
    assert "SUCCESS" in out


def test_rule_unit_tests():
    out = promtool("test", "rules", "rules_test.yml")
    assert "SUCCESS" in out and "FAILED" not in out


def test_config_has_service_and_sd_jobs():
    import yaml
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["compactsim"]["metrics_path"] == "/metrics"
    runs = jobs["compactsim-runs"]
    assert runs["metrics_path"] == "/probe"
    assert runs["http_sd_configs"][0]["url"].endswith("/sd")
    # instance is the only target label: anything else from /sd that changes over a run's
    # life (its design arrives with the first snapshot) would split its series
    assert runs["relabel_configs"] == [
        {"source_labels": ["__param_target"], "target_label": "instance"}]


def served_methods_names() -> list[str]:
    return [m.name for m in simulator_pb2.DESCRIPTOR.services_by_name["Simulator"].methods]


def get(url: str) -> bytes:
    return urllib.request.urlopen(url, timeout=10).read()


def test_check_metrics_on_real_probe_and_service_metrics(server, tmp_path):
    mport = int(next(tmp_path.glob("port-*.metrics")).read_text())
    run = create(server.stub, spec(duration=3.0, pace=1.0))
    wait_state(server.stub, run.name, (R.RUNNING,))
    deadline = time.monotonic() + 10
    while True:   # until the worker has sent a snapshot
        probe = get(f"http://127.0.0.1:{mport}/probe?target={run.name}")
        if b"node_buddyinfo_blocks" in probe or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert b"node_vmstat_pgalloc_normal" in probe and b"node_buddyinfo_blocks" in probe
    # node_exporter's meminfo names are camelCase (node_memory_MemTotal_bytes), which
    # promtool's lint flags on node_exporter itself: those, and only those, are allowed.
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=probe, capture_output=True,
                       timeout=60)
    complaints = [line for line in (p.stdout + p.stderr).decode().splitlines()
                  if line.strip()]
    assert all(line.startswith("node_memory_") and "camelCase" in line
               for line in complaints), complaints
    assert any(line.startswith("node_memory_MemTotal_bytes") for line in complaints)
    wait_state(server.stub, run.name)
    list(server.stub.WatchRun(simulator_pb2.WatchRunRequest(name=run.name), timeout=10))
    with pytest.raises(grpc.RpcError):
        server.stub.GetRun(simulator_pb2.GetRunRequest(name="runs/nosuchrun"))
    for path in ("/compactsim.v1.Simulator/NoSuchMethod", "/evil.Service/Grow"):
        with pytest.raises(grpc.RpcError) as err:
            server.channel.unary_unary(path)(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The interceptor counts a call once its handler returns, which can be just after
    # the client has its answer: wait for the count rather than race it.
    not_found = ('grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="GetRun",'
                 'grpc_service="compactsim.v1.Simulator",grpc_type="unary"} 1.0')
    deadline = time.monotonic() + 10
    while True:
        metrics = get(f"http://127.0.0.1:{mport}/metrics")
        if not_found.encode() in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    promtool("check", "metrics", stdin=metrics)
    text = metrics.decode()
    for name in ("compactsim_runs{", "compactsim_queue_depth",
                 "compactsim_run_wall_seconds_count 1.0",
                 "compactsim_simulated_events_total",
                 'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateRun",'
                 'grpc_service="compactsim.v1.Simulator",grpc_type="unary"} 1.0',
                 'grpc_server_started_total{grpc_method="CreateRun",'
                 'grpc_service="compactsim.v1.Simulator",grpc_type="unary"} 1.0',
                 'grpc_server_handling_seconds_bucket{grpc_method="CreateRun",'
                 'grpc_service="compactsim.v1.Simulator",grpc_type="unary",le="+Inf"} 1.0',
                 'grpc_server_handled_total{grpc_code="OK",grpc_method="WatchRun",'
                 'grpc_service="compactsim.v1.Simulator",grpc_type="server_stream"} 1.0'):
        assert name in text, name
    assert not_found in text
    # calls to methods the server does not serve share one label value
    assert "NoSuchMethod" not in text and "evil" not in text
    assert ('grpc_server_handled_total{grpc_code="UNIMPLEMENTED",grpc_method="unknown",'
            'grpc_service="unknown",grpc_type="unary"} 2.0') in text
    methods = set(re.findall(r'grpc_method="(\w+)"', text))
    assert methods <= set(served_methods_names()) | {"unknown"}, methods
    events = [ln for ln in text.splitlines()
              if ln.startswith("compactsim_simulated_events_total ")]
    assert float(events[0].split()[1]) > 0
    assert "run_id" not in text and "runs/" not in text   # no run-id labels
    assert server.stop() == 0
