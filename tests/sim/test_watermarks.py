"""Watermarks, lowmem reserves, pcp sizes and the memmap of sim/zone.py and sim/machine.py.

Expected values are worked out here from the kernel's formulas (mm/page_alloc.c 6.1:
`calculate_min_free_kbytes`, `__setup_per_zone_wmarks`, `setup_per_zone_lowmem_reserve`,
`zone_batchsize`, `zone_highsize`, `__zone_watermark_ok`; mm/khugepaged.c
`set_recommended_min_free_kbytes`), not by calling the code under test.
"""

from __future__ import annotations

import math

import pytest
import simpy

from compactsim.sim.buddy import del_page_from_free_list, free_one_page
from compactsim.sim.config import MAX_ORDER, MovableOps, config_from_dict
from compactsim.sim.gfp import (
    ALLOC_HARDER,
    ALLOC_HIGH,
    ALLOC_NO_WATERMARKS,
    ALLOC_WMARK_HIGH,
    ALLOC_WMARK_LOW,
    ALLOC_WMARK_MIN,
    GFP_KERNEL,
)
from compactsim.sim.machine import build_machine, struct_page_bytes
from compactsim.sim.page import ALLOC, KIND_RESERVED, TAIL
from compactsim.sim.page_alloc import free_pages, get_page_from_freelist
from compactsim.sim.pageblock import MIGRATE_TYPES, MigrateType
from compactsim.sim.task import Task
from compactsim.sim.zone import (
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    WMARK_PROMO,
    calculate_min_free_kbytes,
    recommended_min_free_kbytes,
    zone_batchsize,
    zone_highsize,
    zone_watermark_for_flags,
    zone_watermark_ok,
)

GIB = 1 << 30
PAGES_PER_GIB = GIB // 4096


def machine(memory: str = "16GiB", *, nodes: int = 1, dma32: str = "0", cpus: int = 4,
            thp: str = "never", kernel: dict | None = None, tunables: dict | None = None):
    cfg = config_from_dict({
        "machine": {"memory": memory, "nodes": nodes, "dma32": dma32, "cpus": cpus},
        "kernel": kernel or {},
        "tunables": {"thp_enabled": thp, **(tunables or {})},
        "workload": [{"name": "x"}],
    })
    return build_machine(cfg, simpy.Environment())


def memmap_pages(present: int, struct_page: int = 64) -> int:
    return math.ceil(present * struct_page / 4096)


# --- min_free_kbytes --------------------------------------------------------------------

@pytest.mark.parametrize("lowmem_kbytes, expect", [
    (16 * 1024 * 1024, 16384),          # 16 GiB: sqrt(2^24 * 16) = 2^14
    (1024 * 1024, 4096),                # 1 GiB
    (64 * 1024, 1024),                  # 64 MiB
    (16_515_072, 16255),                # 16 GiB less its memmap: int_sqrt rounds down
    (1000, 128),                        # sqrt(16000) = 126 -> floor of the clamp
    (1024, 128),
    (1025, 128),                        # sqrt(16400) = 128.06
    (1089, 132),                        # sqrt(17424) = 132 exactly
    (4 * 1024 ** 3, 262144),            # 4 TiB: exactly the cap
    (16 * 1024 ** 3, 262144),           # above it
])
def test_calculate_min_free_kbytes(lowmem_kbytes, expect):
    assert calculate_min_free_kbytes(lowmem_kbytes) == expect


def test_min_free_kbytes_of_a_16gib_machine_without_thp():
    m = machine("16GiB")
    managed = 16 * PAGES_PER_GIB - memmap_pages(16 * PAGES_PER_GIB)
    assert m.managed_pages == managed == 4_128_768
    assert m.min_free_kbytes == math.isqrt(managed * 4 * 16) == 16255


@pytest.mark.parametrize("memory, nodes, dma32, nr_zones", [
    ("16GiB", 1, "0", 1),
    ("16GiB", 1, "2GiB", 2),             # DMA32 + Normal
    ("8GiB", 2, "0", 2),                 # a Normal zone per node
])
def test_thp_recommended_min_free_kbytes(memory, nodes, dma32, nr_zones):
    # khugepaged: 2 free pageblocks per zone, plus one per (pcp type, pcp type) pair per
    # zone, capped at 5% of lowmem; kbytes = pages * 4. Far below the cap here.
    recommended_pages = 512 * nr_zones * 2 + 512 * nr_zones * 3 * 3
    m = machine(memory, nodes=nodes, dma32=dma32, thp="always")
    assert m.min_free_kbytes == recommended_pages * 4 == 22528 * nr_zones
    assert machine(memory, nodes=nodes, dma32=dma32, thp="madvise").min_free_kbytes \
        == m.min_free_kbytes
    assert machine(memory, nodes=nodes, dma32=dma32).min_free_kbytes == 16255


def test_recommended_min_free_kbytes_is_capped_at_5_percent():
    assert recommended_min_free_kbytes(1, 10_000_000) == 5632 * 4
    assert recommended_min_free_kbytes(1, 100_000) == 100_000 // 20 * 4
    assert recommended_min_free_kbytes(2, 100_000) == 100_000 // 20 * 4
    assert recommended_min_free_kbytes(2, 1_000_000) == 11264 * 4


def test_thp_cap_on_a_small_machine_uses_free_buffer_pages():
    m = machine("64MiB", thp="always")
    managed = 16384 - 256
    sqrt_min = math.isqrt(managed * 4 * 16)                    # 1015 kB
    pages_min = sqrt_min // 4                                  # 253
    gap = max(pages_min // 4, managed * 10 // 10000)           # 63
    high = pages_min + 2 * gap                                 # 379
    recommended = min(5632, (managed - high) // 20) * 4        # 787 pages -> 3148 kB
    assert m.min_free_kbytes == max(sqrt_min, recommended) == 3148


def test_user_min_free_kbytes_wins():
    m = machine("16GiB", thp="always", tunables={"min_free_kbytes": 65536})
    assert m.min_free_kbytes == 65536
    assert m.zones[0].watermark[WMARK_MIN] == 65536 // 4


# --- per-zone watermarks ---------------------------------------------------------------

def test_min_is_shared_out_by_managed_pages():
    m = machine("16GiB", dma32="2GiB", thp="always")
    dma32, normal = m.zones
    dma32_managed = 2 * PAGES_PER_GIB                          # no memmap in DMA32
    normal_managed = 14 * PAGES_PER_GIB - memmap_pages(16 * PAGES_PER_GIB)
    assert (dma32.managed_pages, normal.managed_pages) == (dma32_managed, normal_managed)
    pages_min = m.min_free_kbytes // 4                         # 45056 kB -> 11264 pages
    lowmem = dma32_managed + normal_managed
    assert dma32.watermark[WMARK_MIN] == pages_min * dma32_managed // lowmem == 1430
    assert normal.watermark[WMARK_MIN] == pages_min * normal_managed // lowmem == 9833
    for z in (dma32, normal):
        gap = max(z.watermark[WMARK_MIN] // 4, z.managed_pages * 10 // 10000)
        assert z.watermark[WMARK_LOW] == z.watermark[WMARK_MIN] + gap
        assert z.watermark[WMARK_HIGH] == z.watermark[WMARK_MIN] + 2 * gap
        assert z.watermark[WMARK_PROMO] == z.watermark[WMARK_MIN] + 3 * gap
    assert [dma32.watermark, normal.watermark] == [[1430, 1954, 2478, 3002],
                                                   [9833, 13437, 17041, 20645]]


@pytest.mark.parametrize("scale, low, high", [
    (1, 4063 + 1015, 4063 + 2 * 1015),        # min/4 = 1015 > managed/10000 = 412
    (10, 4063 + 4128, 4063 + 2 * 4128),       # managed * 10 / 10000 = 4128
    (100, 4063 + 41287, 4063 + 2 * 41287),
    (3000, 4063 + 1238630, 4063 + 2 * 1238630),
])
def test_low_and_high_follow_watermark_scale_factor(scale, low, high):
    m = machine("16GiB", tunables={"watermark_scale_factor": scale})
    z = m.zones[0]
    assert z.watermark[WMARK_MIN] == 16255 // 4 == 4063
    assert (z.watermark[WMARK_LOW], z.watermark[WMARK_HIGH]) == (low, high)


@pytest.mark.parametrize("scale", [1, 10, 300])
def test_4_4_gaps_ignore_the_scale_factor(scale):
    m = machine("16GiB", kernel={"scaled_watermarks": False},
                tunables={"watermark_scale_factor": scale})
    z = m.zones[0]
    assert z.watermark[:3] == [4063, 4063 + 4063 // 4, 4063 + 4063 // 2] == [4063, 5078, 6094]


def test_v4_4_profile_uses_the_4_4_gaps():
    m = machine("16GiB", kernel={"profile": "v4.4"})
    assert m.zones[0].watermark[:3] == [4063, 5078, 6094]


def test_boost_raises_every_mark():
    m = machine("16GiB")
    z = m.zones[0]
    z.watermark_boost = 700
    assert [z.wmark_pages(i) for i in (WMARK_MIN, WMARK_LOW, WMARK_HIGH)] == [
        4063 + 700, 8191 + 700, 12319 + 700]
    assert zone_watermark_for_flags(z, ALLOC_WMARK_LOW) == 8191 + 700
    assert zone_watermark_for_flags(z, ALLOC_WMARK_HIGH) == 12319 + 700
    assert zone_watermark_for_flags(z, ALLOC_WMARK_MIN) == 4063 + 700
    assert zone_watermark_for_flags(z, ALLOC_NO_WATERMARKS) < -z.managed_pages


# --- lowmem_reserve --------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [256, 32, 1])
def test_dma32_reserve_is_normal_managed_over_ratio(ratio):
    tunables = {} if ratio == 256 else {"lowmem_reserve_ratio": ratio}
    m = machine("16GiB", dma32="2GiB", tunables=tunables)
    dma32, normal = m.zones
    normal_managed = 14 * PAGES_PER_GIB - memmap_pages(16 * PAGES_PER_GIB)
    assert dma32.lowmem_reserve == [0, normal_managed // ratio]
    assert normal.lowmem_reserve == [0, 0]
    if ratio == 256:
        assert dma32.lowmem_reserve[1] == 14080


def test_reserve_is_per_node():
    m = machine("8GiB", nodes=2, dma32="1GiB")
    assert [z.name for z in m.zones] == ["DMA32", "Normal", "Normal"]
    node0_normal = 7 * PAGES_PER_GIB - memmap_pages(8 * PAGES_PER_GIB)
    assert m.zones[0].lowmem_reserve == [0, node0_normal // 256]
    assert m.zones[2].lowmem_reserve == [0, 0]


# --- pcp batch and high ----------------------------------------------------------------

def kernel_batch(managed: int) -> int:
    batch = min(managed >> 10, (1 << 20) // 4096) // 4
    batch = max(batch, 1)
    batch = 2 ** int(math.log2(batch + batch // 2)) - 1       # rounddown_pow_of_two - 1
    return max(1, batch)        # zone_set_pageset_high_and_batch: max(1, zone_batchsize)


@pytest.mark.parametrize("managed, expect", [
    (PAGES_PER_GIB, 63),                 # 1 GiB: min(256, 256) / 4 = 64 -> 96 -> 64 - 1
    (PAGES_PER_GIB - 16384, 63),         # a 1 GiB zone less its memmap: 252/4 = 63 -> 94
    (16 * PAGES_PER_GIB, 63),            # capped at 1 MiB
    (512 * 256, 31),                     # 512 MiB: 128 / 4 = 32 -> 48 -> 32 - 1
    (16128, 3),                          # 64 MiB less memmap: 15 / 4 = 3 -> 4 -> 3
    (8192, 1),                           # 8 / 4 = 2 -> 3 -> 2 - 1
    (4096, 1),                           # 16 MiB: the kernel's 0 is raised to 1
    (1024, 1),
])
def test_zone_batchsize(managed, expect):
    assert kernel_batch(managed) == expect
    assert zone_batchsize(managed) == expect


@pytest.mark.parametrize("cpus, high", [
    (4, 8191 // 4),        # low watermark shared by the node's CPUs
    (16, 8191 // 16),
    (64, 4 * 63),          # 127 < 4 * batch
])
def test_pcp_high_is_low_over_cpus_at_least_four_batches(cpus, high):
    m = machine("16GiB", cpus=cpus)
    z = m.zones[0]
    assert z.watermark[WMARK_LOW] == 8191
    assert (z.pcp.batch, z.pcp.high) == (63, high)
    assert len(z.pcp.counts) == cpus


def test_pcp_high_counts_only_the_node_cpus():
    m = machine("8GiB", nodes=2, cpus=8)
    for z in m.zones:
        assert z.pcp.high == max(z.watermark[WMARK_LOW] // 4, 4 * 63)


def test_pcp_high_from_percpu_pagelist_high_fraction():
    m = machine("16GiB", cpus=4, tunables={"percpu_pagelist_high_fraction": 8})
    z = m.zones[0]
    assert z.pcp.high == z.managed_pages // 8 // 4
    assert zone_highsize(z, 63, 4, 0) == 8191 // 4
    assert zone_highsize(z, 63, 1024, 0) == 252


def test_small_zone_pcp_refills_and_drains():
    # A 4 MiB DMA32 zone: the kernel's zone_batchsize() is 0, the pcp batch 1.
    m = machine("64MiB", dma32="4MiB", cpus=2, kernel={"pcp": True})
    dma32 = m.zones[0]
    high = max(dma32.watermark[WMARK_LOW] // 2, 4)
    assert (dma32.pcp.batch, dma32.pcp.high) == (1, high)
    task = Task(comm="t", pid=1, cpu=0, node=0)
    pages = []
    for _ in range(high + 10):
        out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_NO_WATERMARKS,
                                     highest_zoneidx=0)
        assert out.zone is dma32 and out.pfn >= 0
        pages.append(out.pfn)
    free_before = dma32.free_pages
    for pfn in pages:
        free_pages(m, task, pfn, 0)
        assert dma32.pcp.counts[0] < high            # over high, a batch goes back
    assert dma32.free_pages + dma32.pcp.counts[0] == free_before + len(pages)


# --- __zone_watermark_ok ---------------------------------------------------------------

@pytest.fixture
def bare_zone():
    """The 64 MiB Normal zone with every free block taken off its lists."""
    m = machine("64MiB")
    z = m.zones[0]
    for o in range(MAX_ORDER + 1):
        for mt in range(MIGRATE_TYPES):
            while z.nr_free_mt[o, mt]:
                del_page_from_free_list(z, z.mem.nxt[z.free_head[o, mt]], o, mt)
    assert z.free_pages == 0
    return z


def put_free(z, pfn: int, order: int, mt: int) -> None:
    z.mem.pstate[pfn + 1:pfn + (1 << order)] = bytes([TAIL]) * ((1 << order) - 1)
    z.mem.pstate[pfn] = ALLOC + order
    free_one_page(z, pfn, order, mt)


def test_order0_needs_free_above_the_mark(bare_zone):
    z = bare_zone
    assert zone_watermark_ok(z, 0, 1000, 1, 0, free_pages=1001)
    assert not zone_watermark_ok(z, 0, 1000, 1, 0, free_pages=1000)
    assert not zone_watermark_ok(z, 0, 0, 1, 0, free_pages=0)
    # Without free_pages the zone's NR_FREE_PAGES is used.
    put_free(z, 0x1000, 4, MigrateType.MOVABLE)
    assert zone_watermark_ok(z, 0, 15, 1, 0) and not zone_watermark_ok(z, 0, 16, 1, 0)


def test_order_n_discounts_the_request_and_needs_a_block(bare_zone):
    z = bare_zone
    put_free(z, 0x1000, 2, MigrateType.MOVABLE)
    # Plenty of (pretend) free pages, but no block of order >= 3 on a usable list.
    assert zone_watermark_ok(z, 2, 100, 1, 0, free_pages=10_000)
    assert not zone_watermark_ok(z, 3, 100, 1, 0, free_pages=10_000)
    put_free(z, 0x2000, 5, MigrateType.HIGHATOMIC)
    assert not zone_watermark_ok(z, 3, 100, 1, 0, free_pages=10_000)
    for mt in (MigrateType.UNMOVABLE, MigrateType.RECLAIMABLE, MigrateType.MOVABLE):
        put_free(z, 0x3000 + 0x100 * mt, 4, mt)
        assert zone_watermark_ok(z, 3, 100, 1, 0, free_pages=10_000)
        assert not zone_watermark_ok(z, 5, 100, 1, 0, free_pages=10_000)
        del_page_from_free_list(z, 0x3000 + 0x100 * mt, 4, mt)
    # free - (2^order - 1) must stay above the mark.
    put_free(z, 0x3800, MAX_ORDER, MigrateType.MOVABLE)
    assert zone_watermark_ok(z, 3, 100, 1, 0, free_pages=108)
    assert not zone_watermark_ok(z, 3, 100, 1, 0, free_pages=107)
    assert zone_watermark_ok(z, MAX_ORDER, 100, 1, 0, free_pages=1124)
    assert not zone_watermark_ok(z, MAX_ORDER, 100, 1, 0, free_pages=1123)


@pytest.mark.parametrize("mark, flags, effective", [
    (1000, 0, 1000),
    (1000, ALLOC_HIGH, 500),
    (1001, ALLOC_HIGH, 501),                       # min -= min / 2
    (1000, ALLOC_HARDER, 750),
    (1001, ALLOC_HARDER, 751),                     # min -= min / 4
    (1000, ALLOC_HIGH | ALLOC_HARDER, 375),        # 500 - 125
    (1001, ALLOC_HIGH | ALLOC_HARDER, 376),        # 501 - 125
])
def test_high_and_harder_lower_the_mark(bare_zone, mark, flags, effective):
    z = bare_zone
    assert zone_watermark_ok(z, 0, mark, 1, flags, free_pages=effective + 1)
    assert not zone_watermark_ok(z, 0, mark, 1, flags, free_pages=effective)


def test_lowmem_reserve_applies_for_higher_zone_requests():
    m = machine("64MiB", dma32="16MiB")
    dma32 = m.zones[0]
    reserve = dma32.lowmem_reserve[1]
    assert reserve == (12288 - 256) // 256 == 47
    assert zone_watermark_ok(dma32, 0, 100, 0, 0, free_pages=101)
    assert not zone_watermark_ok(dma32, 0, 100, 1, 0, free_pages=101)
    assert not zone_watermark_ok(dma32, 0, 100, 1, 0, free_pages=100 + reserve)
    assert zone_watermark_ok(dma32, 0, 100, 1, 0, free_pages=101 + reserve)
    # The reserve is added after ALLOC_HIGH halves the mark.
    assert zone_watermark_ok(dma32, 0, 100, 1, ALLOC_HIGH, free_pages=51 + reserve)
    assert not zone_watermark_ok(dma32, 0, 100, 1, ALLOC_HIGH, free_pages=50 + reserve)


def test_allocation_skips_a_zone_below_its_mark():
    m = machine("64MiB", dma32="16MiB", kernel={"pcp": False})
    dma32, normal = m.zones
    task = Task(comm="t", pid=1, cpu=0, node=0)
    normal_free = normal.free_pages
    normal.watermark[WMARK_MIN] = normal_free          # free <= mark: fails
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_MIN)
    assert out.zone is dma32
    normal.watermark[WMARK_MIN] = normal_free - 1
    out = get_page_from_freelist(m, task, GFP_KERNEL, 0, ALLOC_WMARK_MIN)
    assert out.zone is normal


# --- the memmap ---------------------------------------------------------------------------

@pytest.mark.parametrize("base, design, size", [
    (64, MovableOps.NONE, 64),
    (64, MovableOps.MAPPING_OPS, 64),
    (64, MovableOps.PAGE_TYPE, 64),
    (64, MovableOps.PAGE_FLAG_CALLBACKS, 96),      # 64 + 3 pointers = 88, aligned to 16
    (72, MovableOps.MAPPING_OPS, 80),
    (80, MovableOps.PAGE_FLAG_CALLBACKS, 112),     # 104 -> 112
])
def test_struct_page_bytes(base, design, size):
    assert struct_page_bytes(base, design) == size


@pytest.mark.parametrize("design, struct_page", [("MAPPING_OPS", 64),
                                                 ("PAGE_FLAG_CALLBACKS", 96)])
@pytest.mark.parametrize("memory, nodes", [("16GiB", 1), ("8GiB", 2)])
def test_managed_pages_lose_the_memmap_per_node(design, struct_page, memory, nodes):
    m = machine(memory, nodes=nodes, kernel={"movable_ops": design})
    present = int(memory[:-3]) * PAGES_PER_GIB
    assert m.struct_page_size == struct_page
    for node, z in zip(m.nodes, m.zones):
        assert z.present_pages == present
        assert node.memmap_pages == memmap_pages(present, struct_page)
        assert z.managed_pages == present - memmap_pages(present, struct_page)
        assert z.free_pages == z.managed_pages
        top = node.start_pfn + node.nr_pages
        reserved = slice(top - node.memmap_pages, top)
        assert m.mem.kind[reserved].count(KIND_RESERVED) == node.memmap_pages
        assert m.mem.pstate[reserved].count(ALLOC) == node.memmap_pages
    total_memmap = sum(n.memmap_pages for n in m.nodes)
    # 1.5625 % of RAM at 64 bytes, 2.34375 % at 96 (sizeof(struct page) / PAGE_SIZE).
    assert total_memmap * 4096 * 10**6 // (16 * GIB) == {64: 15625, 96: 23437}[struct_page]


def test_memmap_comes_out_of_the_top_zone():
    m = machine("16GiB", dma32="2GiB", kernel={"movable_ops": "PAGE_FLAG_CALLBACKS"})
    dma32, normal = m.zones
    assert dma32.managed_pages == dma32.present_pages == 2 * PAGES_PER_GIB
    assert normal.managed_pages == 14 * PAGES_PER_GIB - memmap_pages(16 * PAGES_PER_GIB, 96)
