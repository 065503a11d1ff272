"""sim/procfs.py: real captures re-render byte for byte; built data prints as the kernel does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from captures import REAL_DATA, SERIES, SNAPSHOTS
from hypothesis import given
from hypothesis import strategies as st

from compactsim.sim.procfs import (
    Pageset,
    PagetypeBlocks,
    PagetypeFree,
    PagetypeInfo,
    ZoneFree,
    build_zoneinfo_zone,
    parse_buddyinfo,
    parse_pagetypeinfo,
    parse_vmstat,
    parse_zoneinfo,
    render_buddyinfo,
    render_extfrag_index,
    render_pagetypeinfo,
    render_show_free_areas_line,
    render_unusable_index,
    render_vmstat,
    render_zoneinfo,
)


def file_ids(paths):
    return [p.name for p in paths]


# These two were published with trailing spaces trimmed (a test fixture and an rST
# code block); the kernel prints a space after every column, so only the spaces differ.
TRIMMED = {"prometheus-procfs-fixture-buddyinfo.txt", "linux-doc-proc-rst-pagetypeinfo-example.txt"}

ROUND_TRIPS = {
    "buddyinfo": (parse_buddyinfo, render_buddyinfo),
    "zoneinfo": (parse_zoneinfo, render_zoneinfo),
    "vmstat": (parse_vmstat, render_vmstat),
    "pagetypeinfo": (parse_pagetypeinfo, render_pagetypeinfo),
}


def round_trip(path: Path) -> tuple[str, str]:
    kind = next(k for k in ROUND_TRIPS if k in path.name)
    parse, render = ROUND_TRIPS[kind]
    text = path.read_text()
    return text, render(parse(text))


def rstrip_lines(text: str) -> str:
    return "".join(line.rstrip(" ") + "\n" for line in text.splitlines())


class TestRealCaptures:
    def test_all_snapshots_found(self):
        kinds = [next(k for k in ROUND_TRIPS if k in p.name) for p in SNAPSHOTS]
        assert sorted(set(kinds)) == sorted(ROUND_TRIPS)
        assert len(SNAPSHOTS) == 16 and len(SERIES) == 7

    @pytest.mark.parametrize("path", [p for p in SNAPSHOTS if p.name not in TRIMMED],
                             ids=file_ids([p for p in SNAPSHOTS if p.name not in TRIMMED]))
    def test_snapshot_round_trips_byte_for_byte(self, path):
        text, rendered = round_trip(path)
        assert rendered == text

    @pytest.mark.parametrize("name", sorted(TRIMMED))
    def test_trimmed_snapshot_differs_only_by_trailing_spaces(self, name):
        text, rendered = round_trip(REAL_DATA / name)
        assert rendered != text
        assert rstrip_lines(rendered) == text
        # The kernel's "%6lu " leaves a space at the end of every row.
        assert all(line.endswith(" ") for line in rendered.splitlines() if line.startswith("Node"))

    @pytest.mark.parametrize("path", SERIES, ids=file_ids(SERIES))
    def test_every_time_series_block_round_trips(self, path):
        text = path.read_text()
        headers = re.findall(r"^# sample_time_utc .*$", text, flags=re.M)
        blocks = re.split(r"^# sample_time_utc .*\n", text, flags=re.M)[1:]
        assert len(blocks) == len(headers) > 0
        for block in blocks:
            body = block.rstrip("\n") + "\n"  # a blank line separates samples
            zones = parse_buddyinfo(body)
            assert zones and all(len(z.nr_free) == 11 for z in zones)
            assert render_buddyinfo(zones) == body

    def test_buddyinfo_values(self):
        zones = parse_buddyinfo((REAL_DATA /
                                 "pcp-qa-meminfo-root-001-buddyinfo.txt").read_text())
        assert [(z.node, z.zone) for z in zones] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
        assert zones[1].nr_free == (470, 524, 98, 154, 86, 30, 23, 10, 26, 12, 681)

    def test_pagetypeinfo_values(self):
        info = parse_pagetypeinfo((REAL_DATA /
                                   "linux-doc-proc-rst-pagetypeinfo-example.txt").read_text())
        assert (info.pageblock_order, info.pages_per_block) == (9, 512)
        assert info.type_names == ("Unmovable", "Reclaimable", "Movable", "Reserve", "Isolate")
        assert info.blocks[1] == PagetypeBlocks(0, "DMA32", (41, 6, 967, 2, 0))
        movable = next(f for f in info.free if (f.zone, f.type_name) == ("DMA32", "Movable"))
        assert movable.nr_free[10] == 452

    def test_vmstat_values(self):
        path = REAL_DATA / "pcp-qa-meminfo-root-007-vmstat.txt"
        counters = parse_vmstat(path.read_text())
        assert len(counters) == len(path.read_text().splitlines())
        assert list(counters)[0] == "nr_free_pages"
        assert "compact_stall" in counters and "thp_fault_alloc" in counters

    def test_zoneinfo_layouts_by_era(self):
        def zones(n):
            return parse_zoneinfo((REAL_DATA /
                                   f"pcp-qa-meminfo-root-{n}-zoneinfo.txt").read_text())
        old, mid, new = zones("001")[0], zones("004")[0], zones("007")
        # Pre-4.8: 4-space counters below protection, "all_unreclaimable:" tail.
        assert (old.layout.counter_indent, old.layout.protection_first,
                old.layout.tail_label_width) == (4, False, 19)
        assert old.node_stats is None and old.value("scanned") == 0
        # 4.8-4.11: per-node stats, 6-space counters, still below protection.
        assert (mid.layout.counter_indent, mid.layout.protection_first) == (6, False)
        assert mid.node_stats is not None and mid.value("node_scanned") == 0
        # 4.12+: unpopulated zones print up to protection only.
        movable = next(z for z in new if (z.node, z.zone) == (0, "Movable"))
        assert movable.pagesets is None and movable.counters == () and movable.tail == ()
        node1 = next(z for z in new if (z.node, z.zone) == (1, "Normal"))
        assert node1.node_stats is not None  # first populated zone of node 1
        assert node1.value("managed") == 1020184 and node1.value("start_pfn") == 1572864
        assert len(node1.pagesets) == 8 and node1.pagesets[0].stat_threshold is not None

    def test_nameless_node_stat_is_kept(self):
        zones = parse_zoneinfo((REAL_DATA /
                                "pcp-qa-meminfo-root-006-zoneinfo.txt").read_text())
        assert ("", 176096) in zones[0].node_stats


class TestBuddyinfo:
    def test_render(self):
        zone = ZoneFree(0, "DMA32", (470, 524, 98, 154, 86, 30, 23, 10, 26, 12, 1234567))
        assert render_buddyinfo([zone]) == (
            "Node 0, zone    DMA32    470    524     98    154     86     30     23     10"
            "     26     12 1234567 \n")

    @given(st.lists(st.builds(
        ZoneFree, st.integers(0, 63), st.sampled_from(["DMA", "DMA32", "Normal", "Movable"]),
        st.lists(st.integers(0, 10**9), min_size=11, max_size=11).map(tuple))))
    def test_parse_inverts_render(self, zones):
        assert parse_buddyinfo(render_buddyinfo(zones)) == tuple(zones)

    def test_bad_line_names_its_number(self):
        text = "Node 0, zone      DMA      1      2 \nNode 0, zone DMA32 x 3\n"
        with pytest.raises(ValueError, match=r"line 2: expected 'Node <nid>, zone <name>'"):
            parse_buddyinfo(text)


class TestExtfragFiles:
    ZONES = [ZoneFree(0, "DMA", (8,) + (0,) * 10), ZoneFree(1, "Normal", (1,) + (0,) * 10)]

    def test_unusable_index(self):
        assert render_unusable_index(self.ZONES) == (
            "Node 0, zone      DMA 0.000" + " 1.000" * 10 + " \n"
            "Node 1, zone   Normal 0.000" + " 1.000" * 10 + " \n")

    def test_extfrag_index_prints_negatives_like_c(self):
        # Zone 0: 8 free pages -> 1000 - (1000 + 8000/2^k)/8; zone 1: one free page ->
        # 1000 - (1000 + 1000/2^k). C's "%2d.%03d" of (x/1000, x%1000) truncates toward
        # zero, so -500 prints " 0.-500" and -62 prints " 0.-62" (the sign takes a digit).
        assert render_extfrag_index(self.ZONES) == (
            "Node 0, zone      DMA -1.000  0.375  0.625  0.750  0.813  0.844  0.860  0.868"
            "  0.872  0.874  0.875 \n"
            "Node 1, zone   Normal -1.000  0.-500  0.-250  0.-125  0.-62  0.-31  0.-15"
            "  0.-07  0.-03  0.-01  0.000 \n")


class TestShowFreeAreas:
    # Rows are migratetypes in 4.4+ order: Unmovable, Movable, Reclaimable, HighAtomic.
    BY_TYPE = [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
               [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
               [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]

    def test_numa_line(self):
        assert render_show_free_areas_line(self.BY_TYPE, node=0, zone="Normal") == (
            "Node 0 Normal: 3*4kB (UM) 1*8kB (M) 0*16kB 0*32kB 0*64kB 0*128kB 0*256kB "
            "0*512kB 0*1024kB 0*2048kB 2*4096kB (MH) = 8212kB\n")

    def test_non_numa_line_and_old_letters(self):
        # Pre-4.4 types: Unmovable, Reclaimable, Movable, Reserve.
        line = render_show_free_areas_line([[0, 1], [1, 0], [0, 0], [0, 1]], node=None,
                                           zone="DMA", type_letters="UEMR")
        assert line == "DMA: 1*4kB (E) 2*8kB (UR) = 20kB\n"

    def test_too_few_letters(self):
        with pytest.raises(ValueError, match="migratetypes"):
            render_show_free_areas_line(self.BY_TYPE, node=0, zone="Normal", type_letters="UM")


class TestPagetypeinfo:
    INFO = PagetypeInfo(
        pageblock_order=9, pages_per_block=512,
        type_names=("Unmovable", "Movable"),
        free=(PagetypeFree(0, "Normal", "Unmovable", (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
              PagetypeFree(0, "Normal", "Movable", (100000, 250000, 99999, 0, 0, 0, 0, 0, 0, 0, 7)),
              PagetypeFree(1, "Normal", "Unmovable", (1,) * 11),
              PagetypeFree(1, "Normal", "Movable", (2,) * 11)),
        blocks=(PagetypeBlocks(0, "Normal", (10, 500)), PagetypeBlocks(1, "Normal", (4, 508))))

    def test_render_caps_long_lists(self):
        text = render_pagetypeinfo(self.INFO)
        assert ("Node    0, zone   Normal, type      Movable >100000 >100000  99999 "
                "     0") in text
        assert text.startswith(
            "Page block order: 9\nPages per block:  512\n\n"
            "Free pages count per migrate type at order       0      1      2")
        assert "\n\nNumber of blocks type     Unmovable      Movable \n" \
               "Node 0, zone   Normal           10          500 \n" in text

    def test_every_node_repeats_the_sections(self):
        text = render_pagetypeinfo(self.INFO)
        assert text.count("Page block order: 9\n") == 2
        parsed = parse_pagetypeinfo(text)
        assert parsed.free[1].nr_free[:3] == (100000, 100000, 99999)  # the cap loses the rest
        assert parsed.blocks == self.INFO.blocks and parsed.free[2:] == self.INFO.free[2:]
        assert render_pagetypeinfo(parsed) == text

    def test_mixed_blocks_section(self):
        info = PagetypeInfo(9, 512, ("Unmovable", "Movable"), self.INFO.free[:2],
                            self.INFO.blocks[:1], mixed=(PagetypeBlocks(0, "Normal", (2, 3)),))
        text = render_pagetypeinfo(info)
        assert text.endswith("\nNumber of mixed blocks    Unmovable      Movable \n"
                             "Node 0, zone   Normal            2            3 \n")
        assert parse_pagetypeinfo(text).mixed == info.mixed

    def test_wrong_block_count_names_its_line(self):
        text = render_pagetypeinfo(self.INFO).replace("          500 \n", "\n", 1)
        with pytest.raises(ValueError, match="line 9: expected 2 pageblock counts"):
            parse_pagetypeinfo(text)


class TestVmstat:
    def test_render_keeps_order(self):
        assert render_vmstat({"nr_free_pages": 12, "compact_stall": 0}) == \
            "nr_free_pages 12\ncompact_stall 0\n"

    @given(st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                           st.integers(0, 2**64 - 1)))
    def test_parse_inverts_render(self, counters):
        assert parse_vmstat(render_vmstat(counters)) == counters

    def test_duplicate_counter(self):
        with pytest.raises(ValueError, match="line 2: counter 'pgfree' appears twice"):
            parse_vmstat("pgfree 1\npgfree 2\n")


def simulated_zones(pcp_high_min: int | None = None):
    pcp = [Pageset(cpu, count=3 * cpu, high=186, batch=31, stat_threshold=24,
                   high_min=pcp_high_min, high_max=None if pcp_high_min is None else 400)
           for cpu in range(2)]
    normal = build_zoneinfo_zone(
        node=0, zone="Normal", free=1000, boost=0, min=10, low=20, high=30, promo=40,
        spanned=524288, present=524288, managed=507637, cma=0, protection=(0, 0, 0, 0, 0),
        counters={"nr_zone_active_anon": 5, "numa_hit": 9}, pagesets=pcp, start_pfn=1048576,
        node_stats={"nr_inactive_anon": 7})
    movable = build_zoneinfo_zone(
        node=0, zone="Movable", free=0, min=0, low=0, high=0, spanned=0, present=0, managed=0,
        protection=(0, 0, 0, 0, 0), start_pfn=0)
    return [normal, movable]


class TestSimulatedZoneinfo:
    def test_kernel_line_order(self):
        assert render_zoneinfo(simulated_zones()).splitlines() == [
            "Node 0, zone   Normal",
            "  per-node stats",
            "      nr_inactive_anon 7",
            "  pages free     1000",
            "        boost    0",
            "        min      10",
            "        low      20",
            "        high     30",
            "        promo    40",
            "        spanned  524288",
            "        present  524288",
            "        managed  507637",
            "        cma      0",
            "        protection: (0, 0, 0, 0, 0)",
            "      nr_free_pages 1000",
            "      nr_zone_active_anon 5",
            "      numa_hit     9",
            "  pagesets",
            "    cpu: 0",
            "              count: 0",
            "              high:  186",
            "              batch: 31",
            "  vm stats threshold: 24",
            "    cpu: 1",
            "              count: 3",
            "              high:  186",
            "              batch: 31",
            "  vm stats threshold: 24",
            "  node_unreclaimable:  0",
            "  start_pfn:           1048576",
            # An unpopulated zone stops after protection.
            "Node 0, zone  Movable",
            "  pages free     0",
            "        boost    0",
            "        min      0",
            "        low      0",
            "        high     0",
            "        spanned  0",
            "        present  0",
            "        managed  0",
            "        cma      0",
            "        protection: (0, 0, 0, 0, 0)",
        ]

    def test_pcp_high_min_max_widen_the_labels(self):
        lines = render_zoneinfo(simulated_zones(pcp_high_min=100)).splitlines()
        start = lines.index("    cpu: 1")
        assert lines[start:start + 7] == [
            "    cpu: 1",
            "              count:    3",
            "              high:     186",
            "              batch:    31",
            "              high_min: 100",
            "              high_max: 400",
            "  vm stats threshold: 24",
        ]

    def test_parse_inverts_render(self):
        for high_min in (None, 100):
            zones = simulated_zones(high_min)
            assert list(parse_zoneinfo(render_zoneinfo(zones))) == zones

    def test_builder_rules(self):
        normal = simulated_zones()[0]
        assert normal.value("nr_free_pages") == normal.value("pages free") == 1000
        with pytest.raises(KeyError):
            normal.value("scanned")
        with pytest.raises(ValueError, match="per-node stats"):
            build_zoneinfo_zone(node=0, zone="Movable", free=0, min=0, low=0, high=0, spanned=0,
                                present=0, managed=0, protection=(0,), start_pfn=0,
                                node_stats={"nr_inactive_anon": 0})
        with pytest.raises(ValueError, match="high_min and high_max"):
            Pageset(0, 0, 0, 1, high_min=5)

    def test_bad_lines_name_their_number(self):
        text = render_zoneinfo(simulated_zones())
        with pytest.raises(ValueError, match=r"line 4: expected '  pages free     <n>'"):
            parse_zoneinfo(text.replace("  pages free     1000", "  pages fre 1000", 1))
        with pytest.raises(ValueError, match=r"line 19: expected a line of zone 0/Normal or 'Node"):
            parse_zoneinfo(text.replace("    cpu: 0\n", "    cpu 0\n", 1))
        with pytest.raises(ValueError, match=r"line 22: expected count:, high: and batch:"):
            parse_zoneinfo(text.replace("              high:  186\n", "", 1))
