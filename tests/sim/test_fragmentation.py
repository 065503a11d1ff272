"""sim/fragmentation.py against hand-computed cases and a plain re-derivation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compactsim.sim.fragmentation import (
    NR_PAGE_ORDERS,
    ContigPageInfo,
    contig_page_info_all_orders,
    extfrag_for_order,
    extfrag_for_order_all_orders,
    fill_contig_page_info,
    fragmentation_index,
    fragmentation_index_all_orders,
    unusable_free_index,
    unusable_free_index_all_orders,
)

ORDERS = range(NR_PAGE_ORDERS)


def free_row(**by_order: int) -> list[int]:
    """An 11-order nr_free row, e.g. free_row(o0=8, o10=3)."""
    row = [0] * NR_PAGE_ORDERS
    for key, count in by_order.items():
        row[int(key[1:])] = count
    return row


# A plain re-derivation: pages held per order, exact fractions, floor at the end of
# each kernel division. It shares no code with the module.

def ref_info(nr_free, order):
    pages = [n * 2**o for o, n in enumerate(nr_free)]
    free = sum(pages)
    # Blocks of at least `order` hold whole multiples of 2^order pages.
    suitable = sum(pages[order:]) // 2**order
    return free, sum(nr_free), suitable


def ref_fragmentation_index(nr_free, order):
    free, total, suitable = ref_info(nr_free, order)
    if total == 0:
        return 0
    if suitable:
        return -1000
    inner = math.floor(Fraction(free * 1000, 2**order))
    return 1000 - math.floor(Fraction(1000 + inner, total))


def ref_unusable(nr_free, order):
    free, _, suitable = ref_info(nr_free, order)
    if free == 0:
        return 1000
    return math.floor(Fraction(1000 * (free - suitable * 2**order), free))


def ref_extfrag(nr_free, order):
    free, _, suitable = ref_info(nr_free, order)
    if free == 0:
        return 0
    return math.floor(Fraction(100 * (free - suitable * 2**order), free))


rows = st.lists(st.integers(0, 10**6) | st.integers(0, 3), min_size=NR_PAGE_ORDERS,
                max_size=NR_PAGE_ORDERS)


class TestHandComputed:
    def test_no_free_memory(self):
        empty = free_row()
        for order in ORDERS:
            assert fill_contig_page_info(empty, order) == ContigPageInfo(0, 0, 0)
            assert fragmentation_index(empty, order) == 0      # no blocks at all
            assert unusable_free_index(empty, order) == 1000   # nothing free is usable
            assert extfrag_for_order(empty, order) == 0        # empty zone scores 0

    def test_only_order0_pages(self):
        row = free_row(o0=8)
        assert fill_contig_page_info(row, 1) == ContigPageInfo(8, 8, 0)
        assert fragmentation_index(row, 0) == -1000  # an order-0 request succeeds
        assert unusable_free_index(row, 0) == 0
        # 1000 - (1000 + 8*1000/2) / 8 = 1000 - 625
        assert fragmentation_index(row, 1) == 375
        # 1000 - (1000 + 8*1000/8) / 8 = 1000 - 250
        assert fragmentation_index(row, 3) == 750
        assert unusable_free_index(row, 1) == 1000
        assert extfrag_for_order(row, 9) == 100

    def test_suitable_block_present(self):
        row = free_row(o4=1)
        info = fill_contig_page_info(row, 2)
        assert info == ContigPageInfo(16, 1, 4)  # one order-4 block holds four order-2 blocks
        assert fragmentation_index(row, 2) == -1000
        assert unusable_free_index(row, 2) == 0
        assert extfrag_for_order(row, 2) == 0

    def test_real_dma_row(self):
        # pcp-qa-meminfo-root-001 buddyinfo, DMA: 3 1 2 2 2 1 0 0 1 1 3
        row = [3, 1, 2, 2, 2, 1, 0, 0, 1, 1, 3]
        # free = 3+2+8+16+32+32+256+512+3072; order-9 blocks: one of order 9, 3x2 of order 10
        assert fill_contig_page_info(row, 9) == ContigPageInfo(3933, 16, 7)
        assert unusable_free_index(row, 9) == 349000 // 3933 == 88
        assert extfrag_for_order(row, 9) == 34900 // 3933 == 8
        assert fragmentation_index(row, 9) == -1000

    def test_single_small_block_gives_negative_index(self):
        # The kernel formula is unclamped: one free page asked for order 1 gives
        # 1000 - (1000 + 500) / 1 = -500, printed as " 0.-500" in extfrag_index.
        row = free_row(o0=1)
        assert fragmentation_index(row, 1) == -500
        assert fragmentation_index(row, 10) == 1000 - (1000 + 0) // 1 == 0

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="order 11"):
            fragmentation_index(free_row(), 11)
        with pytest.raises(ValueError, match="order -1"):
            unusable_free_index(free_row(), -1)
        with pytest.raises(ValueError, match="negative"):
            extfrag_for_order(free_row(o3=-1), 0)
        with pytest.raises(ValueError, match="shape"):
            unusable_free_index_all_orders(np.zeros((2, 2, 11)))


class TestProperties:
    @given(rows)
    def test_matches_rederivation(self, row):
        for order in ORDERS:
            assert fill_contig_page_info(row, order) == ref_info(row, order)
            assert fragmentation_index(row, order) == ref_fragmentation_index(row, order)
            assert unusable_free_index(row, order) == ref_unusable(row, order)
            assert extfrag_for_order(row, order) == ref_extfrag(row, order)

    @given(rows)
    def test_unusable_bounded_and_monotone(self, row):
        values = [unusable_free_index(row, order) for order in ORDERS]
        assert all(0 <= v <= 1000 for v in values)
        assert values == sorted(values)

    @given(rows)
    def test_fragmentation_index_range(self, row):
        for order in ORDERS:
            index = fragmentation_index(row, order)
            info = fill_contig_page_info(row, order)
            assert (index == -1000) == (info.free_blocks_suitable > 0)
            if index != -1000:
                # Below 0 only with a single free block (1000/total must exceed 500).
                assert -500 <= index <= 1000
                assert index >= 0 or info.free_blocks_total == 1

    @given(rows)
    def test_extfrag_is_unusable_in_percent(self, row):
        # Same numerator: floor(100a/F) == floor(floor(1000a/F) / 10); 0 when nothing free.
        for order in ORDERS:
            unusable = unusable_free_index(row, order)
            expected = unusable // 10 if sum(row) else 0
            assert extfrag_for_order(row, order) == expected

    @given(st.lists(rows, min_size=1, max_size=4))
    def test_vectorised_equals_scalar(self, table):
        frag = fragmentation_index_all_orders(table)
        unusable = unusable_free_index_all_orders(table)
        extfrag = extfrag_for_order_all_orders(table)
        assert frag.shape == unusable.shape == extfrag.shape == (len(table), NR_PAGE_ORDERS)
        for i, row in enumerate(table):
            assert frag[i].tolist() == [fragmentation_index(row, o) for o in ORDERS]
            assert unusable[i].tolist() == [unusable_free_index(row, o) for o in ORDERS]
            assert extfrag[i].tolist() == [extfrag_for_order(row, o) for o in ORDERS]
            assert unusable_free_index_all_orders(row).tolist() == unusable[i].tolist()

    def test_vectorised_info_and_large_zone(self):
        # A 4 TB node: about 250k free order-10 blocks (pcp-free-tera).
        row = [2676, 4186, 2783, 1453, 3555, 4018, 2701, 1365, 600, 621, 249023]
        free, total, suitable = contig_page_info_all_orders(row)
        assert int(free) == sum(n << o for o, n in enumerate(row))
        assert int(total) == sum(row)
        assert suitable.tolist() == [fill_contig_page_info(row, o).free_blocks_suitable
                                     for o in ORDERS]
        assert extfrag_for_order_all_orders(row)[9] == extfrag_for_order(row, 9)
