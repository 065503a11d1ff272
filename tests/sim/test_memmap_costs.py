"""What a struct page's size costs at run time (sim/pageflags.py `memmap_costs`): the
scanners stream size/64 memmap lines per pfn, single-page touches span whole lines, and
LAST_CPUPID_NOT_IN_PAGE_FLAGS adds `_last_cpupid` to every migrated page's flags copy."""

from __future__ import annotations

import pytest
import simpy

from compactsim.sim.compaction import Compaction
from compactsim.sim.config import MovableOps, PageFlagsConfig, PageKind, config_from_dict
from compactsim.sim.costs import Costs
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, GFP_KERNEL
from compactsim.sim.kcompactd import compact_node
from compactsim.sim.machine import build_machine
from compactsim.sim.migrate import Migration
from compactsim.sim.page import KIND_CODE
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageflags import lines_touched, memmap_costs, page_flags_budget
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.rng import RngStreams
from compactsim.sim.task import Task
from compactsim.sim.zram import Zram


def test_lines_a_struct_page_spans():
    assert lines_touched(64) == 1.0          # one line, always aligned
    assert lines_touched(96) == 2.0          # 0-95, 96-191 = 32..127 of a line pair: always two
    assert lines_touched(128) == 2.0


def machine_costs(design: MovableOps, **flags) -> Costs:
    cfg = config_from_dict({"machine": {"memory": "64MiB", "page_flags": flags},
                            "kernel": {"movable_ops": design.value},
                            "workload": [{"name": "x"}]})
    return build_machine(cfg, simpy.Environment()).config.costs


def test_page_flag_callbacks_struct_page_costs_every_pfn():
    base, pfc = Costs(), machine_costs(MovableOps.PAGE_FLAG_CALLBACKS)
    line = base.memmap_line_ns
    assert machine_costs(MovableOps.MAPPING_OPS) == base       # 64 bytes: the cost model's
    assert machine_costs(MovableOps.PAGE_TYPE) == base
    assert pfc.free_scan_page_ns == base.free_scan_page_ns + 0.5 * line     # 96/64 lines
    assert pfc.migrate_scan_page_ns == base.migrate_scan_page_ns + 0.5 * line
    for name in ("pcp_alloc_ns", "pcp_free_ns", "buddy_page_ns", "buddy_alloc_ns",
                 "isolate_page_ns"):
        assert getattr(pfc, name) == getattr(base, name) + line, name
    assert pfc.migrate_overhead_us == pytest.approx(base.migrate_overhead_us + 2 * line * 1e-3)


def test_last_cpupid_outside_page_flags_costs_migration():
    """NODES_SHIFT 5 + ZONES 3 + LRU_GEN 3 + KASAN 8 + LAST_CPUPID 21 = 40 bits fill
    64 - 24 flags exactly; PG_movable's extra flag pushes LAST_CPUPID out."""
    flags = dict(nodes_shift=5, kasan_tag_width=8)
    cfg = PageFlagsConfig(**flags)
    assert page_flags_budget(cfg, MovableOps.MAPPING_OPS).last_cpupid_in_flags
    out = page_flags_budget(cfg, MovableOps.PAGE_FLAG_CALLBACKS)
    assert not out.last_cpupid_in_flags and out.struct_page_bytes == 96
    inside = memmap_costs(Costs(), page_flags_budget(PageFlagsConfig(),
                                                     MovableOps.PAGE_FLAG_CALLBACKS))
    outside = machine_costs(MovableOps.PAGE_FLAG_CALLBACKS, **flags)
    # same 96-byte struct page, plus both pages' _last_cpupid in folio_migrate_flags
    assert outside.free_scan_page_ns == inside.free_scan_page_ns
    assert outside.migrate_overhead_us == pytest.approx(
        inside.migrate_overhead_us + 2 * Costs().memmap_line_ns * 1e-3)


def scan_time_per_pfn(design: MovableOps) -> float:
    """Manual compaction of a zone whose every other page is unmovable slab: the migrate
    scanner walks every pfn and isolates nothing, so its time is the per-pfn cost."""
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 1},
                            "kernel": {"movable_ops": design.value, "pcp": False},
                            "workload": [{"name": "x"}]})
    env = simpy.Environment()
    m = build_machine(cfg, env)
    task = Task(comm="sh", pid=1, cpu=0, node=0)
    pfns = []
    while (pfn := get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS).pfn) >= 0:
        pfns.append(pfn)
    for pfn in pfns:
        if pfn % 2:
            free_pages(m, task, pfn, 0)
        else:
            m.mem.kind[pfn] = KIND_CODE[PageKind.SLAB_UNMOVABLE]
    zram = Zram(m)
    compaction = Compaction(m, Migration(m, RngStreams(1)("migrate.driver")),
                            Reclaim(m, zram))
    proc = env.process(compact_node(m, compaction, 0, task))
    env.run(until=proc)
    scanned = m.events["compact_migrate_scanned"]
    assert scanned >= len(pfns) // 2 and m.events["pgmigrate_success"] == 0
    return env.now / scanned


def test_compaction_scans_slower_with_a_96_byte_struct_page():
    base = Costs()
    ratio = (base.migrate_scan_page_ns + 0.5 * base.memmap_line_ns) / base.migrate_scan_page_ns
    assert scan_time_per_pfn(MovableOps.PAGE_FLAG_CALLBACKS) == pytest.approx(
        ratio * scan_time_per_pfn(MovableOps.MAPPING_OPS), rel=0.02)
