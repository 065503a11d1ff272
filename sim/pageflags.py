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
"""

from __future__ import annotations

import dataclasses

from compactsim.sim.config import MovableOps, PageFlagsConfig

BITS_PER_LONG = 64
LAST__PID_SHIFT = 8
PAGE_SIZE = 4096
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
