"""The experiment report page against the experiment it reports: its table holds the
statistics of the runs, its figures are there as PNGs with ids and alt texts."""

from __future__ import annotations

import base64
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compactsim.client.experiment import Plan, load_experiment, parse_arm, run_local
from compactsim.client.report import FIGURES, write_report
from compactsim.codec.stats import fmt, headline, other_significant


class Page(HTMLParser):
    """Images, and the cells of each table by id: [(row attrs, [(cell attrs, text)])]."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.tables: dict[str, list] = {}
        self._table = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append((a, []))
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [a, ""]
        elif tag == "br" and self._cell is not None:
            self._cell[1] += "\n"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1][1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    plan = Plan(arms=[parse_arm(["NONE", "kernel.movable_ops=NONE"], "a"),
                      parse_arm(["CALLBACKS", "kernel.movable_ops=PAGE_FLAG_CALLBACKS"], "b")],
                seeds=3, baseline="NONE", scenario="zram-movable-ops",
                overrides=["duration=3s", "machine.memory=128MiB", "machine.zram=64MiB"])
    run_local(plan, out, jobs=2)
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_page_has_the_figures_and_the_table_of_the_runs(experiment_dir: Path):
    page = write_report(experiment_dir)
    assert page == experiment_dir / "report.html"
    parsed = Page()
    parsed.feed(page.read_text())
    stats = load_experiment(experiment_dir)["stats"]
    # figures: one PNG per kind, in order, with their ids and alt texts, embedded
    assert [(i["id"], i["alt"]) for i in parsed.images] == [(f, alt) for f, alt, _ in FIGURES]
    for img in parsed.images:
        assert img["src"].startswith("data:image/png;base64,")
        w, h = _png_size(base64.b64decode(img["src"].split(",", 1)[1]))
        assert w > 300 and h > 200
    # the table: the headline metrics, each arm's mean, the marks
    header, *rows = parsed.tables["results"]
    assert [c[1] for c in header[1]] == ["metric", "NONE (baseline)\n3 runs",
                                         "CALLBACKS\n3 runs"]
    expected = headline(stats)
    assert [r[0]["data-metric"] for r in rows] == [m["metric"] for m in expected]
    for (_, cells), row in zip(rows, expected):
        for (attrs, text), arm in zip(cells[1:], row["arms"]):
            assert attrs["data-arm"] == arm["arm"]
            assert text.split("\n")[0] == fmt(arm["mean"])
        diff = row["differences"][0]
        assert ("sig" in cells[2][0]["class"]) == diff["significant"], row["metric"]
        assert cells[2][1].rstrip().endswith("*") == diff["significant"]
    other = parsed.tables["results-other"][1:]
    assert [r[0]["data-metric"] for r in other] == [m["metric"] for m in other_significant(stats)]
    assert all("sig" in c[0]["class"] for r in other for c in r[1][2:3]
               if "*" in c[1])
    memmap = next(r for r in rows if r[0]["data-metric"] == "memmap.memmap_bytes")
    assert "sig" in memmap[1][2][0]["class"]        # 32 more bytes per page, every seed
    # the question and the memory cost, by arm name
    arms = parsed.tables["arms"]
    assert [c[1] for c in arms[0][1]] == ["arm", "kernel.movable_ops"]
    assert [[c[1] for c in r[1]] for r in arms[1:]] == [
        ["NONE (baseline)", "NONE"], ["CALLBACKS", "PAGE_FLAG_CALLBACKS"]]
    cost = {r[1][0][1]: r[1] for r in parsed.tables["memory-cost"][1:]}
    assert cost["NONE"][2][1] == "64" and cost["CALLBACKS"][2][1] == "96"
    assert cost["CALLBACKS"][4][1] == "2.3438 %"
    assert [c[1] for c in parsed.tables["workload"][1][1]][:2] == ["apps", "anon"]
