"""Every preset's summary at a fixed seed, against tests/golden/<preset>.json.

A run is a pure function of its spec and the code, so a change that moves any counter,
percentile, index or lock figure of any preset shows here, naming the values that moved.
When the change is meant to move them (a model fix), `make golden` rewrites the files
and the diff is reviewed with the change. Runs are cut to DURATION of simulated time so
that all presets take seconds; each preset's opening is where its workload is set up
and its mechanisms first act.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.run import run
from compactsim.sim.scenarios import list_scenarios, load_scenario

GOLDEN = Path(__file__).resolve().parent
SEED = 1
DURATION = "2s"
PRESETS = sorted(list_scenarios())


def summary(name: str) -> dict[str, Any]:
    raw = apply_overrides(load_scenario(name), [f"seed={SEED}", f"duration={DURATION}"])
    return json.loads(json.dumps(run(config_from_dict(raw)).summary, default=float))


def moved(want: Any, have: Any, path: str = "") -> list[str]:
    """`path: want -> have` for every leaf that differs (NaN equals NaN)."""
    if isinstance(want, dict) and isinstance(have, dict):
        return [line for key in sorted(set(want) | set(have))
                for line in moved(want.get(key), have.get(key), f"{path}.{key}" if path
                                  else key)]
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        return [line for i, (w, h) in enumerate(zip(want, have))
                for line in moved(w, h, f"{path}[{i}]")]
    same = want == have or (isinstance(want, float) and isinstance(have, float)
                            and math.isnan(want) and math.isnan(have))
    return [] if same else [f"{path}: {want!r} -> {have!r}"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_summary_is_the_golden_one(name, update_golden):
    path = GOLDEN / f"{name}.json"
    have = summary(name)
    if update_golden:
        path.write_text(json.dumps(have, indent=1, sort_keys=True) + "\n")
        return
    assert path.exists(), f"no golden summary for {name}: run `make golden`"
    diff = moved(json.loads(path.read_text()), have)
    assert not diff, (f"{name} (seed {SEED}, {DURATION}): {len(diff)} values moved; if "
                      "meant, `make golden` and review the diff\n  " + "\n  ".join(diff[:40]))


def test_every_golden_file_is_a_preset(update_golden):
    stale = sorted({p.stem for p in GOLDEN.glob("*.json")} - set(PRESETS))
    if update_golden:
        for name in stale:
            (GOLDEN / f"{name}.json").unlink()
        return
    assert not stale, f"golden files of no preset: {stale} (`make golden` removes them)"


def test_a_moved_value_is_named():
    want = {"vmstat": {"pgfree": 10, "nr_free_pages": 5}, "p": [1.0, float("nan")]}
    have = {"vmstat": {"pgfree": 11, "nr_free_pages": 5}, "p": [1.0, float("nan")], "x": 1}
    assert moved(want, have) == ["vmstat.pgfree: 10 -> 11", "x: None -> 1"]
