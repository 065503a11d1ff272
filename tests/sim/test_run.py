"""Whole runs: determinism, conservation, and the behaviour the presets exist to show."""

import pytest

from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.procfs import parse_buddyinfo, parse_pagetypeinfo, parse_vmstat
from compactsim.sim.run import run
from compactsim.sim.scenarios import list_scenarios, load_scenario


def small(name: str, *overrides: str):
    return config_from_dict(apply_overrides(load_scenario(name), list(overrides)))


@pytest.fixture(scope="module")
def churn():
    return run(small("churn", "duration=4s", "machine.memory=512MiB"))


def test_same_seed_same_result(churn):
    again = run(small("churn", "duration=4s", "machine.memory=512MiB"))
    assert again.summary == churn.summary
    assert again.series == churn.series
    assert again.files == churn.files
    assert again.trace == churn.trace


def test_other_seed_other_result(churn):
    other = run(small("churn", "duration=4s", "machine.memory=512MiB", "seed=2"))
    assert other.summary["vmstat"]["pgalloc_normal"] != churn.summary["vmstat"]["pgalloc_normal"]


def test_pages_are_conserved(churn):
    v = churn.summary["vmstat"]
    # every page allocated was either freed or is still held (pcp pages count as freed)
    held = churn.summary["machine"]["total_pages"] - v["nr_free_pages"]
    assert v["pgalloc_normal"] - v["pgfree"] <= held


def test_procfs_files_parse_back(churn):
    zones = parse_buddyinfo(churn.files["buddyinfo"])
    assert [z.zone for z in zones] == ["Normal"]
    free = sum(n << o for o, n in enumerate(zones[0].nr_free))
    assert free == parse_vmstat(churn.files["vmstat"])["nr_free_pages"]
    info = parse_pagetypeinfo(churn.files["pagetypeinfo"])
    assert sum(info.blocks[0].counts) == 512 * 1024 * 1024 // (2 << 20)


def test_series_sampled_each_interval(churn):
    times = [row["time_s"] for row in churn.series]
    assert times[:5] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.slow    # two fill-fragment runs
def test_fill_fragment_starves_thp_without_compaction_and_compaction_helps():
    off = run(small("fill-fragment", "duration=16s", "kernel.compaction=false"))
    thp = off.summary["allocations"]["thp/order9"]
    assert thp["attempts"] > 0
    assert thp["success_ratio"] < 0.5
    assert off.summary["vmstat"]["thp_fault_fallback"] > 0
    assert off.summary["vmstat"]["compact_stall"] == 0
    assert off.summary["fragmentation_score"][0] > 80
    on = run(small("fill-fragment", "duration=16s"))
    # proactive compaction (v6.10 default, proactiveness 20) defragments ahead of the faults
    assert on.summary["compaction"]["results"].get("proactive/complete", 0) >= 1
    assert on.summary["vmstat"]["pgmigrate_success"] > 0
    assert on.summary["allocations"]["thp/order9"]["success_ratio"] > thp["success_ratio"]


def test_movable_ops_design_changes_the_memmap():
    base = small("fill-fragment", "duration=1s", "kernel.movable_ops=MAPPING_OPS")
    flag = small("fill-fragment", "duration=1s", "kernel.movable_ops=PAGE_FLAG_CALLBACKS")
    a, b = run(base).summary["memmap"], run(flag).summary["memmap"]
    assert (a["struct_page_bytes"], b["struct_page_bytes"]) == (64, 96)
    assert b["memmap_bytes"] == a["memmap_bytes"] * 3 // 2
    assert b["managed_pages"] < a["managed_pages"]


def test_every_preset_is_listed_and_valid():
    for name in list_scenarios():
        config_from_dict(load_scenario(name))


@pytest.mark.slow    # tests/golden runs every preset in the fast tier
@pytest.mark.parametrize("name", sorted(list_scenarios()))
def test_every_preset_runs_and_allocates(name):
    """Each preset, shortened to 2 simulated seconds, runs and does work."""
    result = run(small(name, "duration=2s"))
    v = result.summary["vmstat"]
    assert v["pgalloc_normal"] + v.get("pgalloc_dma32", 0) > 0
    assert result.summary["sim_time_s"] == pytest.approx(2.0)
    assert result.files["buddyinfo"].startswith("Node 0, zone")
