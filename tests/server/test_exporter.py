"""RunCollector on a hand-made snapshot, the listener's routes on a fake manager, and end to
end: a paced run of the real server is a Prometheus target while it runs, and only then."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from compactsim.proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc, spec_pb2
from compactsim.server.collector import RunCollector
from compactsim.server.exporter import make_app
from compactsim.server.manager import LiveRun

ROOT = Path(__file__).resolve().parents[2]
R = run_pb2.Run
# The probe's histogram bounds: powers of two of nanoseconds, 64 ns .. ~69 s (bounds of
# the model's own log-linear buckets, sim/histogram.py).
BUCKETS_S = tuple(2.0 ** k * 1e-9 for k in range(6, 37))

SNAP = {
    "time_s": 1.5,
    "zones": [{
        "node": 0, "zone": "Normal", "nr_free": [5, 4, 0, 1], "free_by_type":
        [[1, 0, 0, 0], [4, 4, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
        "blocks_by_type": [2, 10, 1, 0], "free_pages": 25, "pcp_pages": 3,
        "managed": 4000, "present": 4096, "min": 10, "low": 12, "high": 14, "boost": 7,
        "unusable_index": [0, 200, 680, 680], "extfrag_index": [-1000, -1000, 120, -1000]}],
    "fragmentation_score": [42],
    "vmstat": {"pgalloc_normal": 123, "compact_stall": 4},
}
INFO = {"display_name": "probe-me", "scenario": "fragmented", "design": "PAGE_TYPE",
        "profile": "v6.17"}


class FakeManager:
    def __init__(self, live: dict[str, dict | None]):
        self.live = live
        self.store = None   # _run_info falls back to the kernel info alone

    def targets(self):
        return {r: LiveRun(r, s, {"design": "PAGE_TYPE", "profile": "v6.17"} if s else None)
                for r, s in self.live.items()}

    def latest_snapshot(self, run_id):
        return self.live.get(run_id)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(manager, run_id="r1", info=INFO) -> tuple[CollectorRegistry, str]:
    reg = CollectorRegistry()
    reg.register(RunCollector(manager, run_id, info))
    return reg, generate_latest(reg).decode()


def test_collector_names_types_and_labels():
    reg, text = scrape(FakeManager({"r1": SNAP}))
    fams = families(text)
    assert fams["node_vmstat_pgalloc_normal"].type == "unknown"   # untyped in the text format
    assert "# TYPE node_vmstat_pgalloc_normal untyped" in text
    assert [s.labels for s in fams["node_vmstat_pgalloc_normal"].samples] == [{}]
    assert reg.get_sample_value("node_vmstat_compact_stall") == 4
    assert fams["node_buddyinfo_blocks"].type == "gauge"
    assert reg.get_sample_value("node_buddyinfo_blocks",
                                {"node": "0", "zone": "Normal", "size": "3"}) == 1
    for name, v in [("node_zoneinfo_nr_free_pages", 25), ("node_zoneinfo_min_pages", 10),
                    ("node_zoneinfo_low_pages", 12), ("node_zoneinfo_high_pages", 14),
                    ("node_zoneinfo_managed_pages", 4000),
                    ("node_zoneinfo_present_pages", 4096),
                    ("compactsim_zone_watermark_boost_pages", 7)]:
        assert fams[name].type == "gauge"
        assert reg.get_sample_value(name, {"node": "0", "zone": "Normal"}) == v, name
    assert reg.get_sample_value("node_uname_info", {
        "sysname": "Linux", "release": "compactsim-v6.17", "version": "PAGE_TYPE",
        "machine": "x86_64", "nodename": "probe-me", "domainname": "(none)"}) == 1
    assert reg.get_sample_value("compactsim_run_info", {
        "run": "runs/r1", "scenario": "fragmented", "design": "PAGE_TYPE",
        "profile": "v6.17"}) == 1
    assert reg.get_sample_value("compactsim_free_blocks", {
        "node": "0", "zone": "Normal", "migratetype": "Movable", "order": "1"}) == 4
    assert reg.get_sample_value("compactsim_pageblocks", {
        "node": "0", "zone": "Normal", "migratetype": "Reclaimable"}) == 1
    # the kernel's ratios (debugfs prints index/1000 with 3 decimals), not x1000
    assert reg.get_sample_value("compactsim_extfrag_index",
                                {"node": "0", "zone": "Normal", "order": "2"}) == 0.12
    assert reg.get_sample_value("compactsim_extfrag_index",
                                {"node": "0", "zone": "Normal", "order": "0"}) == -1
    assert reg.get_sample_value("compactsim_unusable_index",
                                {"node": "0", "zone": "Normal", "order": "1"}) == 0.2
    assert reg.get_sample_value("compactsim_fragmentation_score", {"node": "0"}) == 42
    # simulated time as a counter, for rates per simulated second
    assert fams["compactsim_simulated_seconds"].type == "counter"
    assert reg.get_sample_value("compactsim_simulated_seconds_total") == 1.5
    assert "simulated" in fams["node_buddyinfo_blocks"].documentation
    assert all(n.startswith(("node_", "compactsim_")) for n in fams)


def test_collector_counts_migrated_pages_by_kind():
    snap = {**SNAP, "migrated_by_kind": {"anon": 7, "file": 2, "zsmalloc": 5, "balloon": 0}}
    reg, text = scrape(FakeManager({"r1": snap}))
    assert families(text)["compactsim_migrated_pages"].type == "counter"
    for kind, n in snap["migrated_by_kind"].items():
        assert reg.get_sample_value("compactsim_migrated_pages_total", {"kind": kind}) == n


def test_collector_before_the_first_snapshot_has_nothing():
    """The kernel profile and design come with the first snapshot: info series served
    before it would carry empty labels and split when they arrive."""
    _, text = scrape(FakeManager({"r1": None}), info={})
    assert families(text) == {}
    _, text = scrape(FakeManager({"r1": SNAP}), info={})
    assert 'nodename="r1"' in text   # no display name: the run id


def call(app, path, query=""):
    out = {}

    def start(status, headers):
        out["status"], out["headers"] = status, dict(headers)
    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query, "HTTP_HOST": "h:9",
                         "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}, start))
    return int(out["status"].split()[0]), body.decode()


def test_routes_on_a_fake_manager():
    app = make_app(FakeManager({"r1": SNAP}), CollectorRegistry())
    code, body = call(app, "/sd")
    assert code == 200
    assert json.loads(body) == [{"targets": ["h:9"], "labels": {
        "__param_target": "runs/r1", "__meta_compactsim_run": "runs/r1",
        "__meta_compactsim_display_name": "", "__meta_compactsim_scenario": ""}}]
    assert call(app, "/probe")[0] == 400
    assert call(app, "/probe", "target=runs/nope")[0] == 404
    assert call(app, "/probe", "target=bogus")[0] == 404
    code, body = call(app, "/probe", "target=runs/r1")
    assert code == 200 and "node_buddyinfo_blocks" in body
    assert call(app, "/metrics")[0] == 200


class FirstProgressDuringProbe(FakeManager):
    """The run's first progress message (snapshot and kernel together) lands between the
    probe's look at the targets and its read of the snapshot."""

    def targets(self):
        before = {r: LiveRun(r, None, None) for r in self.live}
        return before

    def latest_snapshot(self, run_id):
        return self.live.get(run_id)


def test_a_probe_shows_one_progress_message_not_parts_of_two():
    # Before: the probe took the kernel labels from the targets it had looked up and the
    # snapshot from a later read, so a first snapshot could come out with design="" and
    # profile="" (the e2e probe test failed that way now and then).
    app = make_app(FirstProgressDuringProbe({"r1": SNAP}), CollectorRegistry())
    code, body = call(app, "/probe", "target=runs/r1")
    assert code == 200
    assert "node_buddyinfo_blocks" not in body      # what it looked up: not started yet
    assert 'profile=""' not in body


# -- end to end ---------------------------------------------------------------------------------

def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, int, int]:
    """The real `compactsim-server` on loopback (as tests/e2e/test_service.py starts it):
    (process, gRPC port, metrics port)."""
    port_file = data_dir / "port"
    with open(data_dir / "server.log", "ab") as log:   # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "compactsim.server.main", "--listen", "127.0.0.1:0",
             "--port-file", str(port_file), "--data-dir", str(data_dir), "--workers", "2",
             "--metrics-listen", "127.0.0.1:0", *extra], cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        assert proc.poll() is None, (data_dir / "server.log").read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return proc, int(port_file.read_text()), int(Path(f"{port_file}.metrics").read_text())


def paced_spec() -> spec_pb2.Spec:
    """64 MiB, 5 simulated seconds at one per wall second."""
    s = spec_pb2.Spec(seed=3, duration_seconds=5.0, pace=1.0)
    s.machine.memory_bytes = 64 << 20
    s.machine.cpus = 1
    s.sampling.interval_seconds = 0.05
    g = s.workload.add(name="anon", kind=spec_pb2.PAGE_KIND_ANON, tasks=2, rate=2000.0)
    g.order_mix.update({0: 0.8, 3: 0.2})
    return s


@pytest.mark.slow    # a real server and a paced run
def test_e2e_a_paced_run_is_a_target_while_it_runs_and_a_while_after(tmp_path):
    proc, port, mport = start_server(tmp_path, "--metrics-target-linger", "2s")
    base = f"http://127.0.0.1:{mport}"
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = simulator_pb2_grpc.SimulatorStub(channel)
    try:
        run = stub.CreateRun(simulator_pb2.CreateRunRequest(
            run=run_pb2.Run(spec=paced_spec(), display_name="probe-me")))
        rid = run.name.removeprefix("runs/")
        deadline = time.monotonic() + 20
        while True:   # until the first snapshot has arrived
            code, text = get(f"{base}/probe?target=runs/{rid}")
            if code == 200 and "node_vmstat_pgalloc_normal" in text:
                break
            assert time.monotonic() < deadline, (code, text)
            time.sleep(0.1)
        fams = families(text)
        assert fams["node_vmstat_pgalloc_normal"].type == "unknown"   # untyped
        assert fams["node_buddyinfo_blocks"].samples
        assert fams["compactsim_fragmentation_score"].samples
        assert 'nodename="probe-me"' in text
        code, body = get(f"{base}/sd")
        assert code == 200
        groups = json.loads(body)
        assert [g["labels"]["__param_target"] for g in groups] == [f"runs/{rid}"]
        labels = groups[0]["labels"]
        assert groups[0]["targets"] == [f"127.0.0.1:{mport}"]
        assert labels["__meta_compactsim_run"] == f"runs/{rid}"
        assert labels["__meta_compactsim_display_name"] == "probe-me"
        assert "__meta_compactsim_scenario" in labels
        assert 'design="' in text and 'profile="v' in text   # in compactsim_run_info
        assert get(f"{base}/probe")[0] == 400
        assert get(f"{base}/metrics")[0] == 200
        deadline = time.monotonic() + 30
        while stub.GetRun(simulator_pb2.GetRunRequest(name=run.name)).state in (
                R.QUEUED, R.RUNNING):
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.1)
        done = stub.GetRun(simulator_pb2.GetRunRequest(name=run.name))
        assert done.state == R.SUCCEEDED
        summary = json_format.MessageToDict(done.summary)
        # it stays a target, serving its final state: the summary's counters
        code, body = get(f"{base}/sd")
        assert code == 200 and [g["labels"] for g in json.loads(body)] == [labels]
        code, text = get(f"{base}/probe?target=runs/{rid}")
        assert code == 200
        reg_values = {s.name: s.value for f in families(text).values() for s in f.samples}
        for field in ("pgalloc_normal", "compact_stall", "pgfree", "thp_fault_alloc"):
            assert reg_values[f"node_vmstat_{field}"] == summary["vmstat"][field], field
        assert reg_values["compactsim_simulated_seconds_total"] == 5.0
        assert reg_values["compactsim_compaction_wasted_migrations_total"] == \
            summary["compaction"].get("wasted_migrations", 0)
        # ...until --metrics-target-linger (2 s here) has passed
        time.sleep(2.2)
        code, body = get(f"{base}/sd")
        assert code == 200 and json.loads(body) == []
        assert get(f"{base}/probe?target=runs/{rid}")[0] == 404
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def hist(buckets, n=None):
    n = sum(c for _, c in buckets) if n is None else n
    return {"n": n, "sum_s": 0.006, "mean_s": 0.002, "max_s": 0.003, "buckets": buckets}


def test_collector_meminfo_and_histograms():
    snap = dict(SNAP, histograms={
        "alloc_latency": {"thp/order9": hist([[2 ** (80 / 8) * 1e-9, 1], [0.004, 2]])},
        "lock_wait": {"zone_lock/0/Normal": hist([[1e-6, 2]]), "lru_lock/0": hist([])},
        "compaction_latency": {"direct": hist([[3e-5, 1]])}})
    _, text = scrape(FakeManager({"r1": snap}))
    fams = families(text)
    assert fams["node_memory_MemTotal_bytes"].samples[0].value == 4000 * 4096
    assert fams["node_memory_MemFree_bytes"].samples[0].value == 25 * 4096
    alloc = fams["compactsim_alloc_latency_seconds"]
    assert alloc.type == "histogram"
    buckets = {float(s.labels["le"]): s.value for s in alloc.samples
               if s.name.endswith("_bucket")}
    assert buckets[BUCKETS_S[4]] == 1 == buckets[2 ** 10 * 1e-9]   # 1024 ns: its own bound
    assert buckets[2 ** 21 * 1e-9] == 1 and buckets[2 ** 22 * 1e-9] == 3   # 4 ms <= 4.19 ms
    assert buckets[float("inf")] == 3
    # one label per value: a request is a page kind and an order
    assert {(s.labels["kind"], s.labels["order"]) for s in alloc.samples} == {("thp", "9")}
    assert "request" not in alloc.samples[0].labels
    count = [s.value for s in alloc.samples if s.name.endswith("_count")]
    assert count == [3]
    lock = fams["compactsim_lock_wait_seconds"]
    assert {(s.labels["lock"], s.labels["node"], s.labels["zone"]) for s in lock.samples} == {
        ("zone_lock", "0", "Normal"), ("lru_lock", "0", "")}
    comp = fams["compactsim_compaction_latency_seconds"]
    assert {s.labels["trigger"] for s in comp.samples} == {"direct"}


def test_histogram_buckets_are_the_same_at_every_scrape():
    """histogram_quantile(rate(...)) needs one bucket set over a series' life: the same
    `le` values whichever model buckets are filled (only the non-empty ones were served)."""
    def les(buckets):
        snap = dict(SNAP, histograms={"alloc_latency": {"anon/order0": hist(buckets)},
                                      "lock_wait": {}, "compaction_latency": {}})
        _, text = scrape(FakeManager({"r1": snap}))
        return [s.labels["le"] for s in families(text)["compactsim_alloc_latency_seconds"]
                .samples if s.name.endswith("_bucket")]
    early, late, empty = les([[1e-6, 2]]), les([[1e-6, 2], [0.5, 1], [3e-8, 4]]), les([])
    assert early == late == empty
    assert len(early) == len(BUCKETS_S) + 1 and early[-1] == "+Inf"
    assert [float(x) for x in early[:-1]] == sorted(BUCKETS_S)
