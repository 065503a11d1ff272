"""Fragmentation indices of a zone, computed from its per-order free block counts.

Follows `mm/vmstat.c` (6.x): `fill_contig_page_info`, `__fragmentation_index`,
`unusable_free_index` (debugfs `extfrag/unusable_index`) and `extfrag_for_order`
(5.9+, the zone score of proactive compaction). Every division is the kernel's
unsigned integer division (`div_u64`), so results are exact integers: thousandths for
the two indices, percent for `extfrag_for_order`.

Simplified: the kernel reads `zone->free_area[order].nr_free`; here the caller passes
those counts as a sequence indexed by order (one `/proc/buddyinfo` row). The number
of orders is the length of that sequence (`NR_PAGE_ORDERS`, 11 on x86_64 with 4 KiB
pages). An order outside it raises `ValueError` where `__fragmentation_index` would
WARN and return 0.

The `*_all_orders` helpers give the same numbers for every order at once, over one
row or a 2-D array of rows (samples x orders), with int64 arithmetic; they are exact
while `free_pages * 1000` fits in 63 bits (any real zone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

NR_PAGE_ORDERS = 11  # MAX_PAGE_ORDER + 1 on x86_64 (include/linux/mmzone.h)


class ContigPageInfo(NamedTuple):
    """`struct contig_page_info`: the free lists summarised for one requested order."""

    free_pages: int            # base pages on the free lists
    free_blocks_total: int     # free blocks of any order
    free_blocks_suitable: int  # blocks of the requested order that the free blocks hold


def _check(nr_free: Sequence[int], order: int) -> None:
    if not 0 <= order < len(nr_free):
        raise ValueError(f"order {order} is outside 0..{len(nr_free) - 1}")
    if any(n < 0 for n in nr_free):
        raise ValueError(f"nr_free has a negative count: {list(nr_free)}")


def fill_contig_page_info(nr_free: Sequence[int], order: int) -> ContigPageInfo:
    """Free pages, free blocks and blocks of at least `order` (counted in 2^order units)."""
    _check(nr_free, order)
    free_pages = free_blocks_total = free_blocks_suitable = 0
    for o, blocks in enumerate(nr_free):
        free_blocks_total += blocks
        free_pages += blocks << o
        if o >= order:
            # A free order-o block holds 2^(o-order) blocks of the requested order.
            free_blocks_suitable += blocks << (o - order)
    return ContigPageInfo(free_pages, free_blocks_total, free_blocks_suitable)


def _fragmentation_index(order: int, info: ContigPageInfo) -> int:
    """`__fragmentation_index`: -1000 if the request would succeed, else 0..1000-ish."""
    if not info.free_blocks_total:
        return 0
    # The index only explains a failure; with a suitable block there is none.
    if info.free_blocks_suitable:
        return -1000
    requested = 1 << order
    return 1000 - (1000 + info.free_pages * 1000 // requested) // info.free_blocks_total


def fragmentation_index(nr_free: Sequence[int], order: int) -> int:
    """Why an order-`order` allocation would fail, in thousandths.

    Near 0: lack of memory; near 1000: external fragmentation; -1000: it would not
    fail; 0 with no free blocks at all. The kernel formula is not clamped: a zone
    with very few free blocks can give a negative value above -1000 (one free
    order-0 page asked for order 1 gives -500), and `compaction_suitable` treats that
    as "not a lack of memory" because it only tests 0..extfrag_threshold.
    """
    return _fragmentation_index(order, fill_contig_page_info(nr_free, order))


def _unusable_free_index(order: int, info: ContigPageInfo) -> int:
    # No free memory counts as all of it unusable.
    if info.free_pages == 0:
        return 1000
    usable = info.free_blocks_suitable << order
    return (info.free_pages - usable) * 1000 // info.free_pages


def unusable_free_index(nr_free: Sequence[int], order: int) -> int:
    """Thousandths of free memory in blocks smaller than 2^order pages (0..1000)."""
    return _unusable_free_index(order, fill_contig_page_info(nr_free, order))


def extfrag_for_order(nr_free: Sequence[int], order: int) -> int:
    """Percent of free memory in blocks smaller than 2^order pages (0..100).

    Unlike the unusable index, a zone with no free memory scores 0: proactive
    compaction must not chase an empty zone.
    """
    info = fill_contig_page_info(nr_free, order)
    if info.free_pages == 0:
        return 0
    usable = info.free_blocks_suitable << order
    return (info.free_pages - usable) * 100 // info.free_pages


# Vectorised forms: the same arithmetic for every order of one or many rows.

def _as_rows(nr_free: npt.ArrayLike) -> np.ndarray:
    rows = np.asarray(nr_free, dtype=np.int64)
    if rows.ndim not in (1, 2) or rows.shape[-1] == 0:
        raise ValueError(f"expected nr_free per order, or rows of them; got shape {rows.shape}")
    if (rows < 0).any():
        raise ValueError("nr_free has a negative count")
    return rows


def contig_page_info_all_orders(
        nr_free: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(free_pages, free_blocks_total, free_blocks_suitable[..., order]) as int64 arrays."""
    rows = _as_rows(nr_free)
    n_orders = rows.shape[-1]
    orders = np.arange(n_orders, dtype=np.int64)
    free_pages = (rows << orders).sum(axis=-1)
    free_blocks_total = rows.sum(axis=-1)
    suitable = np.empty_like(rows)
    # suitable[o] = nr_free[o] + 2 * suitable[o + 1]: each larger block splits in two.
    carry = np.zeros(rows.shape[:-1], dtype=np.int64)
    for o in range(n_orders - 1, -1, -1):
        carry = rows[..., o] + 2 * carry
        suitable[..., o] = carry
    return free_pages, free_blocks_total, suitable


def fragmentation_index_all_orders(nr_free: npt.ArrayLike) -> np.ndarray:
    """`fragmentation_index` for every order; shape as `nr_free`."""
    free_pages, total, suitable = contig_page_info_all_orders(nr_free)
    requested = np.int64(1) << np.arange(suitable.shape[-1], dtype=np.int64)
    free_pages, total = free_pages[..., None], total[..., None]
    index = 1000 - (1000 + free_pages * 1000 // requested) // np.maximum(total, 1)
    index = np.where(suitable > 0, -1000, index)
    return np.where(total == 0, 0, index)


def unusable_free_index_all_orders(nr_free: npt.ArrayLike) -> np.ndarray:
    """`unusable_free_index` for every order; shape as `nr_free`."""
    free_pages, _, suitable = contig_page_info_all_orders(nr_free)
    orders = np.arange(suitable.shape[-1], dtype=np.int64)
    free_pages = free_pages[..., None]
    index = (free_pages - (suitable << orders)) * 1000 // np.maximum(free_pages, 1)
    return np.where(free_pages == 0, 1000, index)


def extfrag_for_order_all_orders(nr_free: npt.ArrayLike) -> np.ndarray:
    """`extfrag_for_order` for every order; shape as `nr_free`."""
    free_pages, _, suitable = contig_page_info_all_orders(nr_free)
    orders = np.arange(suitable.shape[-1], dtype=np.int64)
    free_pages = free_pages[..., None]
    score = (free_pages - (suitable << orders)) * 100 // np.maximum(free_pages, 1)
    return np.where(free_pages == 0, 0, score)
