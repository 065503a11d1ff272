"""The validation suite's machinery, without running simulations (`make validate` does).

The registry is well formed, every arm is a valid spec, the document lists every check
and finding, a figure outside its band departs, and the real captures read as the
files say.
"""

import math

import numpy as np
import pytest

from validation import captures, checks, stats
from validation.__main__ import outcomes_of
from validation.measure import buddy_figures, extfrag_figures
from validation.model import (
    DEPART,
    PASS,
    Arm,
    Band,
    Check,
    Expect,
    Source,
    evaluate,
    evaluate_expect,
)
from validation.report import render
from validation.runner import config_of


class Figures(dict):
    """A run whose every figure is `value`."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def get(self, key, default=None):
        return self.value


def fake_results(check: Check, value: float = 1.0) -> dict:
    return {name: [Figures(value) for _ in check.seeds] for name in check.arms}


def test_registry_is_well_formed():
    names = [c.name for c in checks.CHECKS]
    assert len(names) == len(set(names)) and len(names) >= 10
    for c in checks.CHECKS:
        assert c.sources and all(s.url.startswith(("http://", "https://")) for s in c.sources)
        assert all(s.title and s.author and s.date for s in c.sources)
        assert c.published and c.experiment and c.mechanism
        assert c.arms and c.expects
        assert len(c.seeds) >= 3 and len(set(c.seeds)) == len(c.seeds)
        for e in c.expects:
            band = e.resolve_band()
            assert band.lo <= band.hi and band.why, (c.name, e.what)


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.name)
def test_every_arm_is_a_valid_spec(check):
    for arm in check.arms.values():
        cfg = config_of(arm.job(check.seeds[0]))
        assert cfg.seed == check.seeds[0]


def test_the_issue_topics_are_covered():
    names = {c.name for c in checks.CHECKS}
    assert {"compaction-5.1", "boost-5.0", "proactive-5.9", "hygiene-6.10", "pageblock-mix",
            "scattered-unmovable", "field-ratios", "zsmalloc-movable", "buddyinfo-shape",
            "pagetypeinfo-mix", "extfrag-6.17"} <= names


def test_document_lists_every_check_and_finding():
    outcomes = [evaluate(c, fake_results(c)) for c in checks.CHECKS]
    text = render(outcomes)
    for o in outcomes:
        assert f"## {o.check.title}" in text
        assert f"`{o.check.name}`: **{o.verdict}**" in text
        for e in o.check.expects:
            assert e.what in text
        for s in o.check.sources:
            assert s.url in text
    assert text == render(outcomes)          # deterministic
    assert f"of {len(outcomes)} checks pass" in text


def small_check(band: Band) -> Check:
    return Check(name="t", title="T", sources=(Source("s", "a", "2024", "https://x"),),
                 published="p", experiment="e", mechanism="m",
                 arms={"a": Arm("churn"), "b": Arm("churn", ("kernel.profile=v6.1",))},
                 expects=(Expect("level", "1.5", stats.level("a", "k"), band),
                          Expect("change", "+50 %", stats.change("a", "b", "k"),
                                 Band(25.0, 100.0, "x2"), unit="%")))


def runs(a: list[float], b: list[float]) -> dict:
    return {"a": [{"k": v} for v in a], "b": [{"k": v} for v in b]}


def test_figures_outside_the_band_depart():
    check = small_check(Band(1.0, 2.0, "x2"))
    inside = evaluate(check, runs([1.4, 1.5, 1.6], [2.1, 2.25, 2.4]))
    assert [f.verdict for f in inside.findings] == [PASS, PASS] and inside.verdict == PASS
    assert inside.findings[1].values == pytest.approx((50.0, 50.0, 50.0))
    assert inside.findings[1].p_value < 0.05 and inside.findings[0].p_value is None
    outside = evaluate(check, runs([2.4, 2.5, 2.6], [2.4, 2.5, 2.6]))
    assert [f.verdict for f in outside.findings] == [DEPART, DEPART]
    assert outside.verdict == DEPART
    assert "**depart**" in render([outside])


def test_opposite_direction_departs_in_a_real_check():
    hygiene = checks.by_name(["hygiene-6.10"])[0]
    results = {"IN_USE_COUNT": [{"thp_fail_rate": 0.5, "extfrag_events": 1000.0,
                                 "compact_stall": 400.0}] * 3,
               "FREELIST_HYGIENE": [{"thp_fail_rate": 0.36, "extfrag_events": 2.0,
                                     "compact_stall": 240.0}] * 3}
    assert evaluate(hygiene, results).verdict == PASS
    results["FREELIST_HYGIENE"] = [{"thp_fail_rate": 0.6, "extfrag_events": 2.0,
                                    "compact_stall": 240.0}] * 3
    out = evaluate(hygiene, results)
    assert [f.verdict for f in out.findings] == [DEPART, PASS, PASS]


def test_a_value_that_cannot_be_measured_departs():
    f = evaluate_expect(Expect("ratio", "2x", stats.ratio("a", "b", "k"),
                               Band(1.0, 4.0, "x2"), unit="x"),
                        runs([0.0, 1.0, 1.0], [1.0, 2.0, 2.0]))
    assert f.verdict == DEPART and f.note.startswith("not measurable")
    assert math.isnan(f.mean)


def test_a_failed_run_is_an_error_of_its_check():
    check = small_check(Band(1.0, 2.0, "x2"))
    done = {job: {"k": 1.5} for job in check.jobs()}
    done[check.jobs()[0]] = "RuntimeError: boom"
    (o,) = outcomes_of([check], done)
    assert o.verdict == DEPART and "boom" in o.error
    assert "Not run" in render([o])


def test_extfrag_lines_are_counted():
    trace = "".join(
        f"  <...>-0 [000] ..... 1.0: mm_page_alloc_extfrag: page=0x1 pfn=0x{pfn:x} "
        f"alloc_order={a} fallback_order={f} pageblock_order=9 alloc_migratetype={am} "
        f"fallback_migratetype={fm} fragmenting={int(f < 9)} change_ownership={c}\n"
        for pfn, a, f, am, fm, c in [(1, 0, 10, 0, 1, 1), (2, 0, 3, 0, 1, 0),
                                     (3, 0, 0, 1, 0, 0), (4, 3, 9, 2, 1, 1)])
    got = extfrag_figures(trace, duration=2.0)
    assert got["extfrag_events"] == 4 and got["extfrag_per_s"] == 2.0
    assert got["extfrag_fragmenting"] == 2 and got["extfrag_claims"] == 2
    assert got["extfrag_unmovable_in_movable"] == 2
    assert got["extfrag_below_pageblock_share"] == 0.5


def test_buddy_shape_leaves_dma_out():
    got = buddy_figures([[0] * 10 + [3], [4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]],
                        ["0/DMA", "0/Normal"])
    assert got["free_pages_end"] == 516
    assert got["free_share_order9_up"] == pytest.approx(512 / 516)
    assert got["unusable_index_order9"] == pytest.approx(4 / 516)
    assert got["free_share_order0_3"] == pytest.approx(4 / 516)


def test_captures_read_as_the_files_say():
    shapes = captures.buddyinfo_shapes()
    # host 'shard' (20201109-b) has no free block of order 9 or 10 outside DMA
    assert shapes["pcp-qa-archive-20201109-b-buddyinfo.txt"]["free_share_order9_up"] == 0
    assert captures.pagetype_mix()["nonmovable_label_share"] == pytest.approx(47 / 1016)
    v = captures.vmstat_last()
    assert (v["compact_stall"], v["compact_success"]) == (24, 2)
    simple, load = captures.extfrag_captures().values()
    assert simple["extfrag_events"] == 1514 and load["extfrag_events"] == 269
    assert simple["compaction_success_share"] == pytest.approx(1243 / (1243 + 1715))


def test_paired_change_and_spread():
    r = runs([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert stats.change("a", "b", "k")(r) == pytest.approx([100.0, 0.0, -50.0])
    assert stats.spread(np.array([1.0, math.nan, 3.0])) == (2.0, 1.0, 3.0)


def test_a_figure_group_the_model_no_longer_offers_is_left_out(capsys):
    from validation.measure import census, guarded
    assert guarded("pageblock census", census, object()) == {}
    assert "pageblock census figures unavailable" in capsys.readouterr().err


def test_a_subset_writes_its_own_document(monkeypatch, tmp_path):
    import validation.__main__ as cli
    monkeypatch.setattr(cli, "DEFAULT_OUT", tmp_path / "docs.md")
    monkeypatch.setattr(cli, "SUBSET_OUT", tmp_path / "subset.md")
    monkeypatch.setattr(cli, "run_all",
                        lambda jobs, workers: {job: Figures(1.0) for job in jobs})
    assert cli.main(["boost-5.0", "--workers", "1"]) == 0
    assert not (tmp_path / "docs.md").exists()
    text = (tmp_path / "subset.md").read_text()
    assert "`boost-5.0`" in text and "`hygiene-6.10`" not in text
    assert cli.main([]) == 0
    assert all(f"`{c.name}`" in (tmp_path / "docs.md").read_text() for c in checks.CHECKS)
