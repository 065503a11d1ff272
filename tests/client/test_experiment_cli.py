"""`compactsim experiment` refuses bad plans before running anything, naming the arm and
the field; arms come from --arm or a YAML file."""

import subprocess
import sys

import pytest

from compactsim.client.experiment import PlanError, plan_from_args

CLI = [sys.executable, "-m", "compactsim.client.cli"]


@pytest.mark.parametrize("args, message", [
    (["--arm", "A", "kernel.nope=1", "--arm", "B", "tunables.swappiness=500"],
     ["arm A: kernel.nope", "arm B: tunables.swappiness"]),
    (["--arm", "A"], ["at least two arms"]),
    (["--arm", "A", "--arm", "A", "kernel.pcp=false"], ["A appears twice"]),
    (["--arm", "A", "seed=4", "--arm", "B"], ["seed is not an arm setting"]),
    (["--arm", "A", "--arm", "B", "--baseline", "C"], ["--baseline: 'C' is not an arm"]),
    (["--arm", "A", "--arm", "B", "--seeds", "0"], ["--seeds: must be 1..100"]),
])
def test_bad_plans_exit_2_naming_the_field_and_write_nothing(tmp_path, args, message):
    out = subprocess.run(CLI + ["experiment", "--local", "--scenario", "churn",
                                "--out", str(tmp_path / "x"), *args],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert all(m in out.stderr for m in message), out.stderr
    assert not (tmp_path / "x").exists()


def test_arms_from_a_yaml_file_with_the_command_line_winning(tmp_path):
    f = tmp_path / "arms.yaml"
    f.write_text("scenario: churn\nseeds: 4\nbaseline: off\nset: [duration=2s]\n"
                 "arms:\n  'off': {kernel.compaction: false}\n  'on': {}\n")
    plan = plan_from_args([["extra", "tunables.swappiness=10"]], f, 6, None, None, None,
                          ["machine.cpus=2"])
    assert [a.name for a in plan.arms] == ["off", "on", "extra"]
    assert plan.arms[0].values == {"kernel.compaction": False}
    assert plan.arms[2].values == {"tunables.swappiness": 10}
    assert (plan.seeds, plan.baseline, plan.scenario) == (6, "off", "churn")
    assert plan.overrides == ["duration=2s", "machine.cpus=2"]
    f.write_text("arms:\n  off: {}\n  b: {}\n")
    with pytest.raises(PlanError, match="arm name False is not a string"):
        plan_from_args(None, f, None, None, "churn", None, [])
    f.write_text("arms: [a, b]\n")
    with pytest.raises(PlanError, match="needs a mapping"):
        plan_from_args(None, f, None, None, "churn", None, [])


WORKER_SEES = """
import sys
from pathlib import Path

import compactsim.client.experiment as ex

real = ex.simulate


def simulate(raw):
    with open(sys.argv[1], "a") as log:
        log.write(f"{'compactsim.sim.run' in sys.modules}\\n")
    return real(raw)


ex.simulate = simulate
plan = ex.Plan(arms=[ex.Arm("a", {})], seeds=2, baseline="a", scenario="churn",
               overrides=["duration=0.05s"])
ex.run_local(plan, Path(sys.argv[2]), jobs=2)
"""


def test_pool_workers_start_with_the_simulator_loaded(tmp_path):
    """run_local loads the simulator before it starts its pool, so each forked worker
    starts with it (importing it costs 0.1 s, a third of a short run) instead of every
    worker importing it again."""
    log = tmp_path / "loaded"
    script = tmp_path / "sweep.py"
    script.write_text(WORKER_SEES)
    subprocess.run([sys.executable, str(script), str(log), str(tmp_path / "out")], check=True,
                   timeout=120)
    assert log.read_text().split() == ["True", "True"]
