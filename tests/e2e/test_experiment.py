"""Experiments through a real server: `compactsim experiment` creates one sweep whose
points are the arms, GetSweep carries the statistics, the CLI prints and stores them, and
the same experiment run in-process gives the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest
from google.rpc import error_details_pb2
from serverproc import ROOT, details

from compactsim.client.experiment import load_experiment, load_run, run_dir
from compactsim.codec.stats import ArmRun, experiment
from compactsim.proto.v1 import simulator_pb2, sweep_pb2

CLI = [sys.executable, "-m", "compactsim.client.cli"]
BASE = ["--scenario", "zram-movable-ops", "--set", "duration=3s", "--set",
        "machine.memory=128MiB", "--set", "machine.zram=64MiB"]
ARMS = ["--arm", "NONE", "kernel.movable_ops=NONE",
        "--arm", "CALLBACKS", "kernel.movable_ops=PAGE_FLAG_CALLBACKS",
        "--arm", "MAPPING", "kernel.movable_ops=MAPPING_OPS"]


def cli(*args, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "COMPACTSIM_SERVER"}
    out = subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=timeout)
    return out


def ok(out):
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:{out.stdout}\nstderr:{out.stderr}"
    return out


def _close(a, b):
    if a is None or b is None:
        return a is b
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_experiment_through_the_service_and_in_process(server, tmp_path):
    addr = f"127.0.0.1:{server.port}"
    out = ok(cli("--server", addr, "experiment", *BASE, *ARMS, "--seeds", "3", "--watch",
                 "--out", str(tmp_path / "remote"), "--format", "json", "--no-progress"))
    served = json.loads(out.stdout)
    assert served["arms"] == ["NONE", "CALLBACKS", "MAPPING"]
    assert served["baseline"] == "NONE" and served["seeds"] == [1, 2, 3]
    assert "scipy.stats.ttest_rel" in served["method"]
    rows = {r["metric"]: r for r in served["metrics"]}
    # memory cost: the PAGE_FLAG_CALLBACKS struct page is 32 bytes larger, on every seed
    mm = rows["memmap.memmap_bytes"]
    (callbacks, mapping) = mm["differences"]
    pages = 128 * 2**20 // 4096
    assert callbacks["differences"] == [32.0 * pages] * 3 and callbacks["significant"]
    assert mapping["differences"] == [0.0] * 3 and not mapping["significant"]
    # the statistics are the ones the stored runs give (recomputed here from the files)
    record = load_experiment(tmp_path / "remote")
    runs = [ArmRun(arm, seed, load_run(run_dir(tmp_path / "remote", arm, seed))["summary"])
            for arm in served["arms"] for seed in (1, 2, 3)]
    again = {r["metric"]: r for r in experiment(runs, served["arms"], "NONE")["metrics"]}
    assert again.keys() == rows.keys()
    for name, row in rows.items():
        for a, b in zip(row["arms"] + row["differences"],
                        again[name]["arms"] + again[name]["differences"]):
            assert all(_close(a[k], b[k]) for k in ("mean", "ci_low", "ci_high")), name
    assert record["source"].startswith("sweeps/")
    # in-process, the same arms and seeds: the same numbers (deterministic runs)
    local = ok(cli("experiment", *BASE, *ARMS, "--seeds", "3", "--local", "--jobs", "2",
                   "--out", str(tmp_path / "local"), "--format", "json", "--no-progress"))
    mine = {r["metric"]: r for r in json.loads(local.stdout)["metrics"]}
    assert mine.keys() == rows.keys()
    for name, row in rows.items():
        assert [a["values"] for a in row["arms"]] == [a["values"] for a in mine[name]["arms"]]
    # compare reads the sweep and the directory alike; csv for scripts
    name = record["source"]
    for source in (name, str(tmp_path / "remote")):
        csv_out = ok(cli("--server", addr, "compare", source, "--format", "csv")).stdout
        lines = csv_out.splitlines()
        assert lines[0].startswith("metric,arm,n,mean,ci_low,ci_high,diff_mean")
        assert any(line.startswith("memmap.memmap_bytes,CALLBACKS,3,") for line in lines)
    table = ok(cli("--server", addr, "compare", name)).stdout
    assert "NONE (baseline)" in table and "memmap.memmap_bytes" in table
    # runs are labelled by their display names (the sweep names them by arm and seed)
    sweep = server.stub_for().GetSweep(simulator_pb2.GetSweepRequest(name=name))
    first = [pt.runs[0] for pt in sweep.points[:2]]
    table = ok(cli("--server", addr, "compare", *first, "--diff-only")).stdout
    assert "NONE seed 1" in table and "CALLBACKS seed 1" in table
    # a client of the API alone gets the aggregate with the Sweep
    sweep = server.stub_for().GetSweep(simulator_pb2.GetSweepRequest(name=name))
    assert [a.name for a in sweep.arms] == ["NONE", "CALLBACKS", "MAPPING"]
    assert [p.arm for p in sweep.points] == ["NONE", "CALLBACKS", "MAPPING"]
    got = {m.metric: m for m in sweep.experiment.metrics}
    assert got["memmap.memmap_bytes"].differences[0].significant


@pytest.mark.parametrize("arms, field", [
    ([("A", {}), ("A", {"kernel.movable_ops": "NONE"})], "sweep.arms[1].name"),
    ([("A", {"seed": 3}), ("B", {})], "sweep.arms[0].values['seed']"),
    ([("A", {"kernel.movable_ops": "NOPE"}), ("B", {})], "sweep.arms[0].values"),
    ([("A", {})], "sweep.arms"),
])
def test_bad_experiments_name_the_field_and_store_nothing(server, arms, field):
    from google.protobuf import struct_pb2
    stub = server.stub_for()
    sweep = sweep_pb2.Sweep(scenario="scenarios/churn", seeds=2, arms=[
        sweep_pb2.SweepArm(name=n, values={k: struct_pb2.Value(
            string_value=v) if isinstance(v, str) else struct_pb2.Value(number_value=v)
            for k, v in vals.items()}) for n, vals in arms])
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sweep))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(err.value, error_details_pb2.BadRequest)[0].field_violations]
    assert any(f.startswith(field) for f in fields), fields
    assert list(stub.ListRuns(simulator_pb2.ListRunsRequest()).runs) == []


def test_arms_and_grid_together_or_a_stray_baseline_are_refused(server):
    stub = server.stub_for()
    grid = [sweep_pb2.SweepParameter(path="seed_x", values=[])]
    both = sweep_pb2.Sweep(scenario="scenarios/churn", parameters=grid,
                           arms=[sweep_pb2.SweepArm(name="A"), sweep_pb2.SweepArm(name="B")])
    stray = sweep_pb2.Sweep(scenario="scenarios/churn", baseline="A", parameters=[
        sweep_pb2.SweepParameter(path="tunables.swappiness", values=[])])
    for sweep, field in ((both, "sweep.arms"), (stray, "sweep.baseline")):
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateSweep(simulator_pb2.CreateSweepRequest(sweep=sweep))
        bad = details(err.value, error_details_pb2.BadRequest)[0]
        fields = [v.field for v in bad.field_violations]
        assert field in fields, fields
