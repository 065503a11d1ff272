"""Migratetypes, the fallback table and pageblock labels.

Follows include/linux/mmzone.h (`enum migratetype`, 4.4+ numbering and
`migratetype_names`), include/linux/pageblock-flags.h and the `fallbacks[][]` table of
mm/page_alloc.c. Pageblock state (3 migratetype bits and `PB_migrate_skip`) is kept in two
byte arrays indexed by pageblock number instead of the kernel's per-section bitmaps.
Simplified: no CMA and no ISOLATE; HIGHATOMIC exists as a type and a label but no
reserve is made.
"""

from __future__ import annotations

import enum

import cython

from compactsim.sim.config import MAX_ORDER, PAGEBLOCK_ORDER

PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER
NR_ORDERS = MAX_ORDER + 1
PAGE_ALLOC_COSTLY_ORDER = 3
PB_ORDER = cython.declare(cython.int, PAGEBLOCK_ORDER)     # a C constant where compiled


class MigrateType(enum.IntEnum):
    """`enum migratetype` (4.4+): the GFP mobility bits map straight onto the first three."""

    UNMOVABLE = 0
    MOVABLE = 1
    RECLAIMABLE = 2
    HIGHATOMIC = 3


MIGRATE_PCPTYPES = 3          # types with per-cpu lists and fallbacks
MIGRATE_TYPES = 4
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic")
MIGRATETYPE_LETTERS = ("U", "M", "E", "H")   # show_migration_types()

# fallbacks[][] of mm/page_alloc.c: unchanged from 4.4 to 6.x.
FALLBACKS: tuple[tuple[int, ...], ...] = (
    (MigrateType.RECLAIMABLE, MigrateType.MOVABLE),    # UNMOVABLE
    (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE),  # MOVABLE
    (MigrateType.UNMOVABLE, MigrateType.MOVABLE),      # RECLAIMABLE
    (),                                                # HIGHATOMIC
)


def can_steal_fallback(order: int, start_mt: int) -> bool:
    """Whether a fallback at `order` may take over the whole block: `can_steal_fallback`
    of mm/page_alloc.c (4.4+), without its `page_group_by_mobility_disabled` case."""
    return (order >= PAGEBLOCK_ORDER // 2 or start_mt == MigrateType.RECLAIMABLE
            or start_mt == MigrateType.UNMOVABLE)


def pageblock_nr(pfn: int) -> int:
    return pfn >> PAGEBLOCK_ORDER


class Pageblocks:
    """The migratetype label and skip bit of every pageblock of the machine (an extension
    type where compiled, sim/pageblock.pxd, so that the per-page paths read a label in C)."""

    def __init__(self, nr_pageblocks: int):
        # At boot every block is MOVABLE (memmap_init_range).
        self.mt = bytearray([MigrateType.MOVABLE]) * nr_pageblocks
        self.skip = bytearray(nr_pageblocks)
        # Typed views of the same memory (sim/pageblock.pxd), for compiled scanners: a
        # view made from the bytearray at each call would cost an allocation per call.
        self.mt_v, self.skip_v = self.mt, self.skip

    def get_pageblock_migratetype(self, pfn: int) -> int:
        return self.mt[pfn >> PB_ORDER]

    def set_pageblock_migratetype(self, pfn: int, mt: int) -> None:
        self.mt[pfn >> PB_ORDER] = mt

    def change_pageblock_range(self, pfn: int, order: int, mt: int) -> None:
        """Relabel every pageblock covered by a free block of `order` >= pageblock_order."""
        first = pfn >> PAGEBLOCK_ORDER
        count = 1 << max(order - PAGEBLOCK_ORDER, 0)
        self.mt[first:first + count] = bytes([mt]) * count

    def counts(self, start_pfn: int, end_pfn: int) -> list[int]:
        """Pageblocks per migratetype in [start_pfn, end_pfn) (/proc/pagetypeinfo)."""
        labels = self.mt[start_pfn >> PAGEBLOCK_ORDER:end_pfn >> PAGEBLOCK_ORDER]
        return [labels.count(mt) for mt in range(MIGRATE_TYPES)]
