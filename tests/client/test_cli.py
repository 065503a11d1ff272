"""The command line as a user runs it: exit codes, stdout JSON, files on disk."""

import json
import subprocess
import sys

from compactsim.sim.procfs import parse_buddyinfo, parse_zoneinfo

CLI = [sys.executable, "-m", "compactsim.client.cli"]


def test_scenarios_lists_presets():
    out = subprocess.run(CLI + ["scenarios"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {"churn", "fill-fragment"} <= set(names)


def test_simulate_json_and_out(tmp_path):
    out = subprocess.run(CLI + ["simulate", "--scenario", "churn", "--duration", "2s",
                                "--set", "machine.memory=256MiB", "--format", "json",
                                "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)          # the progress bar stays on stderr
    assert summary["duration_s"] == 2.0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    zones = parse_buddyinfo((tmp_path / "proc" / "buddyinfo").read_text())
    assert zones[0].zone == "Normal"
    zi = parse_zoneinfo((tmp_path / "proc" / "zoneinfo").read_text())
    assert zi[0].value("managed") == summary["memmap"]["managed_pages"]
    header = (tmp_path / "series.csv").read_text().splitlines()[0]
    assert header.startswith("time_s,")


def test_bad_spec_exits_2_naming_fields(tmp_path):
    out = subprocess.run(CLI + ["simulate", "--scenario", "churn", "--set",
                                "workload[0].rate=-1", "--set", "tunables.nope=1",
                                "--out", str(tmp_path / "never")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "workload[0].rate" in out.stderr and "tunables.nope" in out.stderr
    assert not (tmp_path / "never").exists()


def test_unknown_scenario_exits_2():
    out = subprocess.run(CLI + ["simulate", "--scenario", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "not a preset" in out.stderr
