"""LRU lists and the page bookkeeping shared by the workload, reclaim and migration.

Follows include/linux/mm_inline.h (`add_page_to_lru_list`, `del_page_from_lru_list`) with
one list per node for anon, file and unevictable pages (the lruvec), in the order pages
were added. Simplified: no active/inactive split, no referenced bit, no MGLRU
generations; reclaim takes pages from the cold end in the order they were added.
Also keeps per-kind page counts for the /proc/vmstat gauges.
"""

from __future__ import annotations

import cython

from compactsim.sim.config import PageKind
from compactsim.sim.machine import LRU_ANON, LRU_FILE, LRU_UNEVICTABLE, Machine
from compactsim.sim.page import KIND_CODE, PG_LRU, PG_MLOCKED

LRU_KINDS = {KIND_CODE[PageKind.FILE]: LRU_FILE, KIND_CODE[PageKind.ANON]: LRU_ANON,
             KIND_CODE[PageKind.THP]: LRU_ANON, KIND_CODE[PageKind.PINNED]: LRU_ANON}


def node_of(m: Machine, pfn: int) -> int:
    return pfn // m.nodes[0].nr_pages


def lru_list_for(kind_code: int, flags: int) -> int:
    """Which list an LRU page of this kind belongs on, or -1 for non-LRU kinds."""
    lru = LRU_KINDS.get(kind_code, -1)
    if lru >= 0 and flags & PG_MLOCKED:
        return LRU_UNEVICTABLE
    return lru


def add_page_to_lru(m: Machine, pfn: int, nr_pages: int, lru: int) -> None:
    node = m.nodes[pfn // m.nodes[0].nr_pages]
    m.mem.list_add(node.lists[lru], pfn)
    node.lru_size[lru] += nr_pages
    m.mem.flags[pfn] |= PG_LRU


def del_page_from_lru(m: Machine, pfn: int, nr_pages: int, lru: int) -> None:
    node = m.nodes[pfn // m.nodes[0].nr_pages]
    m.mem.list_del(pfn)
    node.lru_size[lru] -= nr_pages
    m.mem.flags[pfn] &= ~PG_LRU


@cython.locals(pfn=cython.Py_ssize_t, node_pages=cython.Py_ssize_t, f=cython.int,
               lru=cython.int, n=cython.int, p=cython.int, nxt=cython.int[:],
               prv=cython.int[:], flags=cython.uchar[:], kinds=cython.uchar[:])
def del_pages_from_lru(m: Machine, pfns: list[int]) -> None:
    """del_page_from_lru for many order-0 pages (release_pages' first half)."""
    mem = m.mem
    nxt, prv, flags, kinds = mem.nxt, mem.prv, mem.flags, mem.kind
    nodes = m.nodes
    node_pages = nodes[0].nr_pages
    for pfn in pfns:
        f = flags[pfn]
        lru = LRU_KINDS[kinds[pfn]] if not f & PG_MLOCKED else LRU_UNEVICTABLE
        n = nxt[pfn]
        p = prv[pfn]
        nxt[p] = n
        prv[n] = p
        nodes[pfn // node_pages].lru_size[lru] -= 1
        flags[pfn] = f & ~PG_LRU
