"""The command line against a real server: `python -m server.main` on loopback with a
fresh data directory and real worker processes, and `python -m client.cli` as a user runs
it (subprocesses, exit codes, stdout and stderr)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compactsim.client.cli"]
SMALL = ["--duration", "2s", "--set", "machine.memory=128MiB", "--set", "machine.zram=64MiB"]


@pytest.fixture(scope="module")
def server(make_module_server):
    """The server's address (no metrics listener)."""
    s = make_module_server("--metrics-listen", "")
    yield f"127.0.0.1:{s.port}"
    assert s.stop(timeout=30) == 0, "server did not exit 0 on SIGTERM"


def cli(server, *args, timeout=60, env_server=False):
    env = dict(os.environ)
    env.pop("COMPACTSIM_SERVER", None)
    argv = list(args)
    if env_server:
        env["COMPACTSIM_SERVER"] = server
    else:
        argv = ["--server", server, *argv]
    return subprocess.run(CLI + argv, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def ok(out):
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:{out.stdout}\nstderr:{out.stderr}"
    return out


@pytest.fixture(scope="module")
def two_runs(server):
    """movable_ops NONE and MAPPING_OPS on the same seed, watched to the end."""
    names = {}
    for design in ("NONE", "MAPPING_OPS"):
        out = ok(cli(server, "run", "--scenario", "zram-movable-ops", *SMALL, "--seed", "7",
                     "--set", f"kernel.movable_ops={design}", "--label", f"design={design}",
                     "--label", "suite=e2e", "--watch"))
        names[design] = out
    return names


def run_name(out) -> str:
    name = out.stdout.splitlines()[0].strip()
    assert name.startswith("runs/")
    return name


def test_run_watch_prints_summary(two_runs):
    out = two_runs["NONE"]
    # the same summary table as `simulate`: title with the design and seed, counters
    assert "movable_ops=NONE" in out.stdout and "seed 7" in out.stdout
    assert "compact_stall" in out.stdout and "pgalloc_normal" in out.stdout
    assert "SUCCEEDED" in out.stderr


def test_list_shows_runs_with_filter(server, two_runs):
    name = run_name(two_runs["MAPPING_OPS"])
    out = ok(cli(server, "list", "--filter", 'labels.design = "MAPPING_OPS"', "--format",
                 "json"))
    runs = json.loads(out.stdout)["runs"]
    assert [r["name"] for r in runs] == [name]
    table = ok(cli(server, "list", "--order-by", "create_time", env_server=True)).stdout
    assert name.removeprefix("runs/") in table and "SUCCEEDED" in table
    assert table.index(run_name(two_runs["NONE"])) < table.index(name)


def test_get_json(server, two_runs):
    name = run_name(two_runs["NONE"])
    got = json.loads(ok(cli(server, "get", name.removeprefix("runs/"), "--format",
                            "json")).stdout)
    assert got["name"] == name and got["state"] == "SUCCEEDED"
    assert got["labels"] == {"design": "NONE", "suite": "e2e"}
    assert got["summary"]["seed"] == 7 and got["summary"]["duration_s"] == 2
    assert got["effective_spec"]["kernel"]["movable_ops"] == "MOVABLE_OPS_NONE"


def test_samples_csv_and_json(server, two_runs):
    name = run_name(two_runs["NONE"])
    out = ok(cli(server, "samples", name, "--format", "csv"))
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0][0] == "time_s" and len(rows[0]) > 5
    assert len(rows) >= 3 and all(len(r) == len(rows[0]) for r in rows)
    times = [float(r[0]) for r in rows[1:]]
    assert times == sorted(times) and times[-1] <= 2.0
    few = json.loads(ok(cli(server, "samples", name, "--format", "json", "--max-points",
                            "2")).stdout)
    assert few["columns"] == rows[0] and len(few["rows"]) == 2


def test_report_out_writes_procfs(server, two_runs, tmp_path):
    name = run_name(two_runs["NONE"])
    ok(cli(server, "report", name, "--out", str(tmp_path / "rep")))
    buddy = (tmp_path / "rep" / "proc" / "buddyinfo").read_text()
    assert buddy.startswith("Node 0, zone")
    assert "vmstat" in json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert ": mm_" in (tmp_path / "rep" / "trace.txt").read_text()   # the FULL view
    histograms = json.loads((tmp_path / "rep" / "histograms.json").read_text())
    assert isinstance(histograms, list) and histograms
    for h in histograms:
        assert h["name"] and int(h["count"]) > 0 and h["buckets"]
        assert sum(int(b["count"]) for b in h["buckets"]) == int(h["count"])
        assert float(h["p50_seconds"]) <= float(h["p99_seconds"]) <= float(h["max_seconds"])
    header = (tmp_path / "rep" / "series.csv").read_text().splitlines()[0]
    assert header.startswith("time_s,")
    printed = ok(cli(server, "report", name, "--file", "buddyinfo")).stdout
    assert "Node 0, zone" in printed


def test_compare_two_runs_shows_spec_difference(server, two_runs, tmp_path):
    a, b = run_name(two_runs["NONE"]), run_name(two_runs["MAPPING_OPS"])
    out = ok(cli(server, "compare", a, b.removeprefix("runs/"), "--format", "json"))
    rows = {r["name"]: r["values"] for r in json.loads(out.stdout)}
    assert rows["spec kernel.movable_ops"] == ["NONE", "MAPPING_OPS"]
    assert "spec seed" not in rows                  # same seed: not a difference
    assert rows["struct page bytes"][0] is not None
    table = ok(cli(server, "compare", a, b, "--diff-only")).stdout
    assert "kernel.movable_ops" in table and "MAPPING_OPS" in table
    # a results directory written by `report --out` compares against a server run
    ok(cli(server, "report", a, "--out", str(tmp_path / "a")))
    mixed = json.loads(ok(cli(server, "compare", str(tmp_path / "a"), b, "--format",
                              "json")).stdout)
    mixed_rows = {r["name"]: r["values"] for r in mixed}
    assert mixed_rows["spec kernel.movable_ops"] == ["NONE", "MAPPING_OPS"]


def test_plot_writes_png(server, two_runs, tmp_path):
    import matplotlib.image
    png = tmp_path / "out.png"
    out = ok(cli(server, "plot", run_name(two_runs["NONE"]), run_name(two_runs["MAPPING_OPS"]),
                 "-o", str(png)))
    assert "wrote" in out.stderr
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 500


def test_cancel_running_then_again_is_precondition(server):
    out = ok(cli(server, "run", "--scenario", "zram-movable-ops", "--set", "pace=1",
                 "--set", "machine.memory=128MiB", "--set", "machine.zram=64MiB",
                 "--duration", "60s"))
    name = run_name(out)
    deadline = time.monotonic() + 20
    while json.loads(ok(cli(server, "get", name, "--format", "json")).stdout)["state"] \
            != "RUNNING":
        assert time.monotonic() < deadline, "run never started"
        time.sleep(0.2)
    first = ok(cli(server, "cancel", name))
    assert first.stdout.split()[1] in ("CANCELLING", "CANCELLED")
    watched = cli(server, "watch", name, "--no-progress")
    assert watched.returncode == 1 and "CANCELLED" in watched.stderr
    again = cli(server, "cancel", name)
    assert again.returncode == 4, again.stderr
    assert "FAILED_PRECONDITION" in again.stderr
    # a cancelled run can be deleted, and is then gone
    ok(cli(server, "delete", name))
    assert cli(server, "get", name).returncode == 3


def test_unknown_run_exits_3(server):
    out = cli(server, "get", "runs/no-such-run")
    assert out.returncode == 3 and "NOT_FOUND" in out.stderr
    assert cli(server, "samples", "nope-nope").returncode == 3


def test_bad_spec_exits_2_naming_each_field(server, tmp_path):
    # caught before sending: an unknown field and a bad value
    out = cli(server, "run", "--scenario", "zram-movable-ops", "--set", "workload[0].rate=-1",
              "--set", "tunables.nope=1", "--set", "machine.memory=1KiB")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert any(line.strip().startswith("spec.workload[0].rate:") for line in lines), out.stderr
    assert any(line.strip().startswith("spec.tunables.nope:") for line in lines), out.stderr
    assert any(line.strip().startswith("spec.machine.memory_bytes:") for line in lines), out.stderr
    # a spec file with no workload on a scenario-less run; an unknown scenario is 3
    spec = tmp_path / "s.yaml"
    spec.write_text("duration: -5s\nmachine: {memory: 1KiB}\n")
    out = cli(server, "run", "--spec", str(spec))
    assert out.returncode == 2 and "spec.duration_seconds" in out.stderr, out.stderr
    assert cli(server, "run", "--scenario", "no-such-scenario",
               "--seed", "1").returncode == 3
    # caught by the server (a grid is only checked there): its BadRequest, one line each
    out = cli(server, "sweep", "create", "--scenario", "churn", "--grid", "tunables.nope=1,2",
              "--grid", "workload[0].rate=-1,5")
    assert out.returncode == 2, out.stderr
    violations = [v for v in out.stderr.splitlines() if v.startswith("  ")]
    assert len(violations) == 2, out.stderr
    assert "spec.tunables.nope" in violations[0] and "spec.workload[0].rate" in violations[1]


def test_no_server_is_usage_error():
    env = {k: v for k, v in os.environ.items() if k != "COMPACTSIM_SERVER"}
    out = subprocess.run(CLI + ["list"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 2 and "COMPACTSIM_SERVER" in out.stderr


def test_unreachable_server_exits_5():
    out = subprocess.run(CLI + ["--server", "127.0.0.1:1", "--timeout", "3", "list"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 5 and "UNAVAILABLE" in out.stderr


def test_small_sweep(server):
    out = ok(cli(server, "sweep", "create", "--scenario", "zram-movable-ops", *SMALL,
                 "--grid", "kernel.movable_ops=NONE,MAPPING_OPS",
                 "--seeds", "2", "--watch", "--format", "json", timeout=120))
    sweep = json.loads(out.stdout)
    assert sweep["state"] == "SUCCEEDED"
    points = sweep["points"]
    assert [p["values"]["kernel.movable_ops"] for p in points] == ["NONE", "MAPPING_OPS"]
    assert all(len(p["runs"]) == 2 for p in points)
    assert all(a["count"] == 2 for p in points for a in p["aggregates"].values())
    name = sweep["name"]
    table = ok(cli(server, "sweep", "get", name.removeprefix("sweeps/"), "--group-by",
                   "kernel.movable_ops")).stdout
    assert table.index("MAPPING_OPS") < table.index("NONE")     # grouped: ordered by value
    assert "runs ok" in table and "2/2" in table and "vmstat.compact_stall" in table
    listed = json.loads(ok(cli(server, "list", "--filter",
                               f'labels.sweep = "{name.removeprefix("sweeps/")}"', "--format",
                               "json")).stdout)
    assert listed["total_size"] == 4
    assert {r["sweep"] for r in listed["runs"]} == {name}
    # the sweep field takes the resource name the runs show, and the bare id
    for value in (name, name.removeprefix("sweeps/")):
        by_sweep = json.loads(ok(cli(server, "list", "--filter", f'sweep = "{value}"',
                                     "--format", "json")).stdout)
        assert {r["name"] for r in by_sweep["runs"]} == {r["name"] for r in listed["runs"]}
