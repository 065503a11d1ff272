"""Zones, free areas and watermarks.

Follows include/linux/mmzone.h (`struct zone`, `struct free_area`) and mm/page_alloc.c
(`__setup_per_zone_wmarks`, `calculate_min_free_kbytes`, `setup_per_zone_lowmem_reserve`,
`__zone_watermark_ok`, `zone_batchsize`, `zone_highsize`, 4.x's
`pageset_set_high_and_batch`) at 6.1, with the 4.4 watermark
gaps as a switch. Free lists are circular lists through the memmap's links (sim/page.py),
one per order and migratetype, with `nr_free` per order and per (order, type) so that
emptiness checks are O(1). The counts and the list heads are machine-word arrays
(`nr_free[order]`, `nr_free_mt[order, mt]`, `free_head[order, mt]`), which compiled
callers index through the typed views `nr_free_v`, `nr_free_mt_v` and `free_head_v`, as
the kernel indexes `zone->free_area[order]`. Simplified: no CMA or highatomic reserve
accounting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import cython

from compactsim.sim import gfp
from compactsim.sim.locks import SimLock
from compactsim.sim.pageblock import MIGRATE_PCPTYPES, MIGRATE_TYPES, NR_ORDERS, PAGEBLOCK_NR_PAGES
from compactsim.sim.page import MemMap

if TYPE_CHECKING:
    from compactsim.sim.pcp import PerCpuPages


class Capture(Protocol):
    """What the free path asks of a direct compactor's capture_control (compaction's
    CaptureControl): whether it takes a block, and the pfn it took."""

    pfn: int

    def wants(self, order: int, block_mt: int) -> bool: ...


WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_PROMO = range(4)
ZONE_NAMES = ("DMA32", "Normal")
# The allocation flags the watermark checks test, as C constants where compiled.
ALLOC_HARDER = cython.declare(cython.int, gfp.ALLOC_HARDER)
ALLOC_HIGH = cython.declare(cython.int, gfp.ALLOC_HIGH)
ALLOC_NO_WATERMARKS = cython.declare(cython.int, gfp.ALLOC_NO_WATERMARKS)
ALLOC_WMARK_MASK = cython.declare(cython.int, gfp.ALLOC_WMARK_MASK)


def words(*shape: int) -> memoryview:
    """A zeroed array of 64-bit signed words of `shape`, indexed [i] or [i, j]."""
    return memoryview(bytearray(math.prod(shape) * 8)).cast("q", shape)


@cython.cclass
class Zone:
    """One zone of one node: its span, free areas, watermarks and lock. Compiled, an
    extension type (sim/zone.pxd) whose fields compiled modules read directly."""

    def __init__(self, *, node_id: int, zone_idx: int, name: str, start_pfn: int,
                 nr_pages: int, mem: MemMap, lock: SimLock):
        self.node_id = node_id
        self.zone_idx = zone_idx            # 0 DMA32, 1 Normal (ZONE_NORMAL's index here)
        self.name = name
        self.pgalloc_key = f"pgalloc_{name.lower()}"
        self.zone_start_pfn = start_pfn
        self.spanned_pages = nr_pages
        self.present_pages = nr_pages
        self.managed_pages = nr_pages       # less the memmap once it is reserved
        self.mem = mem
        self.lock = lock                    # zone->lock
        self.free_pages = 0                 # NR_FREE_PAGES (buddy pages only, not pcp)
        self.nr_free = words(NR_ORDERS)
        self.nr_free_mt = words(NR_ORDERS, MIGRATE_TYPES)
        self.free_head = words(NR_ORDERS, MIGRATE_TYPES)
        for o in range(NR_ORDERS):
            for mt in range(MIGRATE_TYPES):
                self.free_head[o, mt] = mem.new_list()
        self.nr_free_v, self.nr_free_mt_v = self.nr_free, self.nr_free_mt
        self.free_head_v = self.free_head
        self.watermark = [0, 0, 0, 0]       # _watermark[WMARK_MIN..WMARK_PROMO]
        self.watermark_boost = 0
        self.boosted = False                # ZONE_BOOSTED_WATERMARK
        self.lowmem_reserve = [0, 0]        # per highest_zoneidx
        self.pcp: PerCpuPages | None = None            # when enabled
        self.capture: Capture | None = None            # while capturing
        # Compaction state that outlives one run (struct zone, CONFIG_COMPACTION).
        end = start_pfn + nr_pages
        self.compact_cached_free_pfn = end - 512
        self.compact_cached_migrate_pfn = [start_pfn, start_pfn]   # [async, sync]
        self.compact_init_migrate_pfn = start_pfn
        self.compact_init_free_pfn = end - 512
        self.compact_considered = 0
        self.compact_defer_shift = 0
        self.compact_order_failed = 0
        self.compact_blockskip_flush = False

    @property
    def zone_end_pfn(self) -> int:
        return self.zone_start_pfn + self.spanned_pages

    def contains(self, pfn: int) -> bool:
        return self.zone_start_pfn <= pfn < self.zone_start_pfn + self.spanned_pages

    def wmark_pages(self, i: int) -> int:
        return self.watermark[i] + self.watermark_boost

    def free_area_empty(self, order: int, mt: int) -> bool:
        return self.nr_free_mt[order, mt] == 0

    def nr_free_by_type(self) -> list[list[int]]:
        """[mt][order] free block counts (/proc/pagetypeinfo)."""
        return [[self.nr_free_mt[o, mt] for o in range(NR_ORDERS)] for mt in range(MIGRATE_TYPES)]

    def pcp_count(self) -> int:
        return self.pcp.count() if self.pcp else 0


@cython.locals(z=Zone, free=cython.Py_ssize_t, low=cython.Py_ssize_t, o=cython.int,
               mt=cython.int)
def zone_watermark_ok(z: Zone, order: int, mark: int, highest_zoneidx: int, alloc_flags: int,
                      free_pages: int | None = None) -> bool:
    """__zone_watermark_ok (4.4+): free pages above the mark plus a free block >= order."""
    free = (z.free_pages if free_pages is None else free_pages) - ((1 << order) - 1)
    low = mark
    if alloc_flags & ALLOC_HIGH:
        low -= low // 2
    if alloc_flags & ALLOC_HARDER:
        low -= low // 4
    if free <= low + z.lowmem_reserve[highest_zoneidx]:
        return False
    if order == 0:
        return True
    for o in range(order, NR_ORDERS):
        if not z.nr_free_v[o]:
            continue
        for mt in range(MIGRATE_PCPTYPES):
            if z.nr_free_mt_v[o, mt]:
                return True
    return False


def zone_watermark_for_flags(z: Zone, alloc_flags: int) -> int:
    if alloc_flags & ALLOC_NO_WATERMARKS:
        return -(1 << 62)
    return z.wmark_pages(alloc_flags & ALLOC_WMARK_MASK)


def calculate_min_free_kbytes(lowmem_kbytes: int) -> int:
    """int_sqrt(lowmem_kbytes * 16) clamped to [128, 262144] (6.x; 4.4 capped at 65536)."""
    return min(max(math.isqrt(lowmem_kbytes * 16), 128), 262144)


def recommended_min_free_kbytes(nr_zones: int, lowmem_pages: int) -> int:
    """set_recommended_min_free_kbytes (khugepaged, THP on): free blocks per zone and type."""
    recommended = PAGEBLOCK_NR_PAGES * nr_zones * 2
    recommended += PAGEBLOCK_NR_PAGES * nr_zones * MIGRATE_PCPTYPES * MIGRATE_PCPTYPES
    recommended = min(recommended, lowmem_pages // 20)
    return recommended * 4


def setup_per_zone_wmarks(zones: list[Zone], min_free_kbytes: int, watermark_scale_factor: int,
                          scaled: bool = True) -> None:
    """__setup_per_zone_wmarks: MIN shared out by managed pages, LOW/HIGH gaps by scale.

    With `scaled` off, the 4.4 gaps: LOW = MIN + MIN/4, HIGH = MIN + MIN/2.
    """
    pages_min = min_free_kbytes >> 2
    lowmem_pages = sum(z.managed_pages for z in zones)
    for z in zones:
        tmp = pages_min * z.managed_pages // lowmem_pages
        z.watermark[WMARK_MIN] = tmp
        if scaled:
            gap = max(tmp >> 2, z.managed_pages * watermark_scale_factor // 10000)
            z.watermark[WMARK_LOW] = tmp + gap
            z.watermark[WMARK_HIGH] = tmp + 2 * gap
            z.watermark[WMARK_PROMO] = tmp + 3 * gap
        else:
            z.watermark[WMARK_LOW] = tmp + (tmp >> 2)
            z.watermark[WMARK_HIGH] = tmp + (tmp >> 1)
            z.watermark[WMARK_PROMO] = z.watermark[WMARK_HIGH]
        z.watermark_boost = 0


def setup_per_zone_lowmem_reserve(node_zones: list[Zone], ratio_dma32: int) -> None:
    """setup_per_zone_lowmem_reserve: a lower zone keeps managed(higher)/ratio from them."""
    ratios = {"DMA32": ratio_dma32, "Normal": 32}
    for i, lower in enumerate(node_zones):
        lower.lowmem_reserve = [0, 0]
        managed = 0
        for upper in node_zones[i + 1:]:
            managed += upper.managed_pages
            lower.lowmem_reserve[upper.zone_idx] = managed // ratios[lower.name]


def zone_batchsize(managed_pages: int, batch_max_kb: int = 1024) -> int:
    """pcp batch: ~zone/1024 capped at `batch_max_kb` (1 MiB since 4.19, 512 KiB
    before), /4, rounded down to 2^n - 1: 63 (4.4: 31) for zones of 1 GiB and more.

    The kernel's zone_batchsize() gives 0 for zones under 32 MiB; its only user,
    zone_set_pageset_high_and_batch() (4.4: pageset_set_batch), raises that to 1, and
    so do we: a batch of 0 would never refill a pcp list nor drain one over `high`.
    """
    batch = min(managed_pages >> 10, batch_max_kb * 1024 // 4096) // 4
    batch = max(batch, 1)
    return max(1, (1 << ((batch + batch // 2).bit_length() - 1)) - 1)


def pageset_high(batch: int, high_fraction: int, managed_pages: int) -> int:
    """pcp high up to 5.13 (pageset_set_high_and_batch): 6 * batch, or
    managed/percpu_pagelist_fraction per CPU when that sysctl is set."""
    if high_fraction:
        return max(managed_pages // high_fraction, 4 * batch)
    return 6 * batch


def zone_highsize(z: Zone, batch: int, cpus_on_node: int, high_fraction: int) -> int:
    """pcp high (5.14+): LOW watermark (or managed/fraction) split over the node's CPUs,
    >= 4*batch."""
    total = z.managed_pages // high_fraction if high_fraction else z.watermark[WMARK_LOW]
    return max(total // max(cpus_on_node, 1), batch << 2)
