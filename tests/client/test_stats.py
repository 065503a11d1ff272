"""Experiment statistics against textbook values."""

import math

import pytest

from compactsim.codec.stats import ArmRun, experiment, headline, metrics_of


def _summary(migrated, stall=0, ok=0, thp_ok=0, thp_fb=0):
    return {"seed": 1, "vmstat": {"pgmigrate_success": migrated, "compact_stall": stall,
                                  "compact_success": ok, "thp_fault_alloc": thp_ok,
                                  "thp_fault_fallback": thp_fb},
            "memmap": {"memmap_bytes": 64, "design": "NONE"},
            "allocations": {"thp/order9": {"success_ratio": 0.5, "p99_us": 10.0}},
            "fragmentation_score": [10, 30]}


def test_metrics_cover_counters_ratios_allocations_and_skip_descriptions():
    m = metrics_of(_summary(5, stall=4, ok=1, thp_ok=3, thp_fb=1))
    assert m["vmstat.pgmigrate_success"] == 5
    assert m["ratio.compact_success_per_stall"] == 0.25
    assert m["ratio.thp_fault_alloc_share"] == 0.75
    assert m["allocations.thp/order9.p99_us"] == 10.0
    assert m["fragmentation_score"] == 20.0
    assert "seed" not in m and "memmap.design" not in m
    assert "ratio.pgmigrate_success_share" in m        # success / (success + fail)
    assert "ratio.pgsteal_per_pgscan" not in m         # no scans: no ratio


def test_paired_difference_is_the_t_test_of_the_per_seed_differences():
    # baseline 10, 20, 30; arm adds 1, 2, 3: differences mean 2, sd 1, n 3
    runs = [ArmRun("base", s, _summary(v)) for s, v in ((1, 10), (2, 20), (3, 30))]
    runs += [ArmRun("new", s, _summary(v)) for s, v in ((1, 11), (2, 22), (3, 33))]
    result = experiment(runs, ["base", "new"], "base")
    row = next(r for r in result["metrics"] if r["metric"] == "vmstat.pgmigrate_success")
    base, new = row["arms"]
    assert (base["count"], base["mean"]) == (3, 20.0)
    # t(0.975, 2) = 4.3027; sem = 10 / sqrt(3)
    assert base["ci_low"] == pytest.approx(20 - 4.3027 * 10 / math.sqrt(3), rel=1e-4)
    (d,) = row["differences"]
    assert (d["pairs"], d["mean"]) == (3, 2.0)
    half = 4.3027 * 1 / math.sqrt(3)
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(2 - half, rel=1e-4),
                                           pytest.approx(2 + half, rel=1e-4))
    # t = 2 / (1 / sqrt 3) = 3.464 with 2 df: p = 1 - t / sqrt(2 + t^2) = 0.0742
    assert d["p_value"] == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-9)
    assert d["significant"] is False
    assert d["relative"] == pytest.approx(0.1)
    # the unpaired spread of the arms is far wider than the paired one
    assert new["ci_high"] - new["ci_low"] > 10 * (d["ci_high"] - d["ci_low"])


def test_only_seeds_both_arms_have_are_paired_and_constants_are_exact():
    runs = [ArmRun("a", s, _summary(s)) for s in (1, 2, 3, 4)]
    runs += [ArmRun("b", s, {**_summary(s + 7), "memmap": {"memmap_bytes": 96}})
             for s in (1, 2, 4)]
    result = experiment(runs, ["a", "b"], "a")
    rows = {r["metric"]: r for r in result["metrics"]}
    (d,) = rows["vmstat.pgmigrate_success"]["differences"]
    assert d["pairs"] == 3 and d["differences"] == [7.0, 7.0, 7.0]
    assert d["p_value"] == 0.0 and d["significant"]
    (same,) = rows["allocations.thp/order9.success_ratio"]["differences"]
    assert same["p_value"] == 1.0 and not same["significant"]
    (mm,) = rows["memmap.memmap_bytes"]["differences"]
    assert mm["mean"] == 32.0 and mm["significant"]
    assert [r["metric"] for r in headline(result)][:2] == ["vmstat.pgmigrate_success",
                                                          "vmstat.compact_stall"]


def test_one_seed_has_no_interval_and_baseline_must_be_an_arm():
    result = experiment([ArmRun("a", 1, _summary(1)), ArmRun("b", 1, _summary(2))],
                        ["a", "b"], "a")
    row = result["metrics"][0]
    assert row["arms"][0]["ci_low"] is None and row["differences"][0]["p_value"] is None
    with pytest.raises(ValueError, match="baseline 'c'"):
        experiment([], ["a", "b"], "c")


@pytest.mark.parametrize("values", [[1.0, 2.0], [3.5, 3.5, 7.25], [0.1, 1e6, -4.0, 2.5, 9.0],
                                    list(range(40))])
def test_intervals_are_scipys_t_intervals_to_the_bit(values):
    """The standard error is computed with numpy (scipy.stats.sem's formula, without its
    per-call argument checks): the interval must not move by one ulp."""
    import numpy as np
    from scipy import stats

    from compactsim.codec.stats import CONFIDENCE, _interval

    a = np.array(values, dtype=float)
    want = stats.t.interval(CONFIDENCE, len(a) - 1, loc=float(a.mean()),
                            scale=float(stats.sem(a)))
    assert _interval(a) == (float(want[0]), float(want[1]))
