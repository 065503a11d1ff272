"""The page-flags budget and memmap cost of each movable-ops design.

Follows include/linux/page-flags-layout.h: the low NR_PAGEFLAGS bits of `page->flags`
are flags; SECTION (none with SPARSEMEM_VMEMMAP), NODE, ZONE, LRU_GEN and KASAN tag
fields are packed from the top, then LAST_CPUPID (8 PID bits + NR_CPUS_BITS) if NUMA
balancing wants it and it still fits. When it does not, the kernel defines
LAST_CPUPID_NOT_IN_PAGE_FLAGS and adds `int _last_cpupid` to struct page (which, with
16-byte alignment, costs a whole 16 bytes); when even NODE does not fit with vmemmap the
build fails ("Vmemmap: No space for nodes field in page flags"). LRU_REFS takes only
leftover bits and is not counted. The 2015 PAGE_FLAG_CALLBACKS design spends one flag
(PG_movable) and adds three pointers; MAPPING_OPS encodes mobility in `page->mapping`
low bits; PAGE_TYPE (6.17) uses a real flag PG_movable_ops, which replaced an existing
bit (PG_isolated's alias), so the count is unchanged.

What a bigger struct page costs at run time (`memmap_costs`): the scanners stream the
memmap, so a pfn costs size/64 cache lines; the allocator, the buddy lists, isolation
and migration touch single struct pages, which span `lines_touched(size)` lines (a
96-byte page always straddles two, a 64-byte one never); and with
LAST_CPUPID_NOT_IN_PAGE_FLAGS, `folio_xchg_last_cpupid` in `folio_migrate_flags` reads
and writes `_last_cpupid` of both pages, a word past page->flags' line. Each extra line
costs `memmap_line_ns`. Simplified: NUMA hinting faults (the other caller of
`page_cpupid_xchg_last`) are not modelled, as the model has no NUMA balancing scanner.
"""

from __future__ import annotations

import dataclasses
import math

from compactsim.sim.config import MovableOps, PageFlagsConfig
from compactsim.sim.costs import Costs

BITS_PER_LONG = 64
LAST__PID_SHIFT = 8
PAGE_SIZE = 4096
CACHE_LINE = 64
EXTRA_FLAGS = {MovableOps.NONE: 0, MovableOps.PAGE_FLAG_CALLBACKS: 1,
               MovableOps.MAPPING_OPS: 0, MovableOps.PAGE_TYPE: 0}
EXTRA_BYTES = {MovableOps.NONE: 0, MovableOps.PAGE_FLAG_CALLBACKS: 24,
               MovableOps.MAPPING_OPS: 0, MovableOps.PAGE_TYPE: 0}


@dataclasses.dataclass(frozen=True)
class PageFlagsBudget:
    """What one kernel build's page->flags and struct page look like under a design."""

    design: str
    nr_pageflags: int
    fields_bits: int            # SECTION + NODE + ZONE + LRU_GEN + KASAN
    last_cpupid_bits: int
    free_bits: int              # left for LRU_REFS after everything that fits
    last_cpupid_in_flags: bool
    builds: bool                # False: "#error Not enough bits in page flags"
    struct_page_bytes: int
    memmap_percent: float


def page_flags_budget(cfg: PageFlagsConfig, design: MovableOps, base_struct_page: int = 64
                      ) -> PageFlagsBudget:
    nr_flags = cfg.nr_pageflags + EXTRA_FLAGS[design]
    section = 0 if cfg.sparsemem_vmemmap else cfg.section_width
    fields = section + cfg.nodes_shift + cfg.zones_width + cfg.lru_gen_width + cfg.kasan_tag_width
    cpupid = LAST__PID_SHIFT + cfg.nr_cpus_bits if cfg.numa_balancing else 0
    room = BITS_PER_LONG - nr_flags
    builds = fields <= room
    in_flags = builds and fields + cpupid <= room
    size = base_struct_page + EXTRA_BYTES[design]
    if cpupid and not in_flags:
        size += 4                      # int _last_cpupid
    size = (size + 15) // 16 * 16
    free = room - fields - (cpupid if in_flags else 0)
    return PageFlagsBudget(design=design.name, nr_pageflags=nr_flags, fields_bits=fields,
                           last_cpupid_bits=cpupid, free_bits=max(free, 0),
                           last_cpupid_in_flags=in_flags, builds=builds,
                           struct_page_bytes=size,
                           memmap_percent=round(100.0 * size / PAGE_SIZE, 4))


def lines_touched(size: int) -> float:
    """Mean 64-byte cache lines one struct page of `size` bytes spans, over the positions
    it takes in the memmap (pages laid end to end from a line boundary)."""
    period = CACHE_LINE // math.gcd(size, CACHE_LINE)
    return sum((k * size % CACHE_LINE + size + CACHE_LINE - 1) // CACHE_LINE
               for k in range(period)) / period


def memmap_costs(costs: Costs, budget: PageFlagsBudget) -> Costs:
    """The per-pfn step costs under this struct page (the defaults are for 64 bytes)."""
    size = budget.struct_page_bytes
    line = costs.memmap_line_ns
    stream = (size / CACHE_LINE - 1) * line           # per pfn a scanner walks
    touch = (lines_touched(size) - 1) * line           # per struct page touched
    cpupid = 0.0 if budget.last_cpupid_in_flags or not budget.last_cpupid_bits else 2 * line
    if not (stream or touch or cpupid):
        return costs
    return dataclasses.replace(
        costs,
        free_scan_page_ns=costs.free_scan_page_ns + stream,
        migrate_scan_page_ns=costs.migrate_scan_page_ns + stream,
        isolate_page_ns=costs.isolate_page_ns + touch,
        pcp_alloc_ns=costs.pcp_alloc_ns + touch,
        pcp_free_ns=costs.pcp_free_ns + touch,
        buddy_page_ns=costs.buddy_page_ns + touch,
        buddy_alloc_ns=costs.buddy_alloc_ns + touch,
        # folio_migrate_flags: both struct pages, and both `_last_cpupid` words
        migrate_overhead_us=costs.migrate_overhead_us + (2 * touch + cpupid) * 1e-3)
