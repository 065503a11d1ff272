"""GFP flags, allocation flags and the migratetype a request maps to.

Follows include/linux/gfp_types.h (6.1 bit values, `___GFP_ATOMIC` included as 6.1 has
it), include/linux/gfp.h (`gfp_migratetype`) and mm/internal.h (`ALLOC_*`).
"""

from __future__ import annotations

import cython

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_ATOMIC = 0x200
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_ATOMIC = __GFP_HIGH | __GFP_ATOMIC | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_NOIO = __GFP_RECLAIM
GFP_USER = GFP_KERNEL | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC
                       | __GFP_NOWARN) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM

GFP_MOVABLE_SHIFT = 3

# Allocation flags (mm/internal.h, 6.1).
ALLOC_WMARK_MIN = 0x00
ALLOC_WMARK_LOW = 0x01
ALLOC_WMARK_HIGH = 0x02
ALLOC_NO_WATERMARKS = 0x04
ALLOC_WMARK_MASK = ALLOC_NO_WATERMARKS - 1
ALLOC_HARDER = 0x10
ALLOC_HIGH = 0x20
ALLOC_CPUSET = 0x40
ALLOC_CMA = 0x80
ALLOC_NOFRAGMENT = 0x100
ALLOC_KSWAPD = 0x800


# gfp_migratetype's mask and shift as C constants where compiled
MOBILITY_MASK = cython.declare(cython.longlong, __GFP_MOVABLE | __GFP_RECLAIMABLE)
MOBILITY_SHIFT = cython.declare(cython.int, GFP_MOVABLE_SHIFT)


def gfp_migratetype(gfp: int) -> int:
    """UNMOVABLE 0, MOVABLE 1, RECLAIMABLE 2 from the mobility bits."""
    return (gfp & MOBILITY_MASK) >> MOBILITY_SHIFT


def gfpflags_allow_blocking(gfp: int) -> bool:
    return bool(gfp & __GFP_DIRECT_RECLAIM)


def gfp_to_alloc_flags(gfp: int) -> int:
    """The slow path's flags (gfp_to_alloc_flags, 6.1): MIN watermark, HIGH/HARDER/KSWAPD."""
    flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    flags |= gfp & __GFP_HIGH and ALLOC_HIGH
    flags |= gfp & __GFP_KSWAPD_RECLAIM and ALLOC_KSWAPD
    if gfp & __GFP_ATOMIC and not gfp & __GFP_NOMEMALLOC:
        flags |= ALLOC_HARDER
    if gfp_migratetype(gfp) == 1:
        flags |= ALLOC_CMA
    return flags


# Predicates for code inside classes, where Python would mangle `__GFP_*` names.
def gfp_kswapd_reclaim(gfp: int) -> bool:
    return bool(gfp & __GFP_KSWAPD_RECLAIM)


def gfp_noretry(gfp: int) -> bool:
    return bool(gfp & __GFP_NORETRY)


def gfp_retry_mayfail(gfp: int) -> bool:
    return bool(gfp & __GFP_RETRY_MAYFAIL)


def gfp_io(gfp: int) -> bool:
    return bool(gfp & __GFP_IO)


def gfp_thp(gfp: int, order: int) -> bool:
    """A THP fault's mask (movable compound at pageblock order)."""
    return order == 9 and gfp & (__GFP_COMP | __GFP_MOVABLE) == (__GFP_COMP | __GFP_MOVABLE)
