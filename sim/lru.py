"""LRU lists and the page bookkeeping shared by the workload, reclaim and migration.

Follows include/linux/mm_inline.h (`add_page_to_lru_list`, `del_page_from_lru_list`) with
one list per node for anon, file and unevictable pages (the lruvec), in the order pages
were added. Simplified: no active/inactive split, no referenced bit, no MGLRU
generations; reclaim takes pages from the cold end in the order they were added.
Also keeps per-kind page counts for the /proc/vmstat gauges.

New pages reach the lists through a per-cpu add batch (mm/swap.c: 4.4 `lru_cache_add` /
`__pagevec_lru_add`, 6.x `folio_add_lru` / `folio_batch_move_lru`): a page in the batch is
not PageLRU, so compaction's `isolate_migratepages_block` passes it over, until the batch
fills (PAGEVEC_SIZE, 15 entries), a compound page is added (it flushes the batch at
once), or `lru_add_drain` empties it. The batch is kept per task (`Task.lru_add`), not
per CPU. Simplified: an owner may free a page still in its batch (the kernel's batch
holds a reference); the drain then passes over it.
"""

from __future__ import annotations

import cython

from compactsim.sim import config, machine
from compactsim.sim import page as pg
from compactsim.sim.config import PageKind
from compactsim.sim.machine import LRU_ANON, LRU_FILE, Machine
from compactsim.sim.page import KIND_CODE, MemMap

PAGEVEC_SIZE = 15       # entries of a per-cpu LRU batch (pagevec / folio_batch)

# The states, flags and list numbers the per-page loops test, as C constants where compiled.
MAX_ORDER = cython.declare(cython.int, config.MAX_ORDER)
ALLOC = cython.declare(cython.int, pg.ALLOC)
PG_ISOLATED = cython.declare(cython.int, pg.PG_ISOLATED)
PG_LRU = cython.declare(cython.int, pg.PG_LRU)
PG_MLOCKED = cython.declare(cython.int, pg.PG_MLOCKED)
LRU_UNEVICTABLE = cython.declare(cython.int, machine.LRU_UNEVICTABLE)
NR_NODE_LISTS = cython.declare(cython.Py_ssize_t, machine.NR_NODE_LISTS)

LRU_KINDS = {KIND_CODE[PageKind.FILE]: LRU_FILE, KIND_CODE[PageKind.ANON]: LRU_ANON,
             KIND_CODE[PageKind.THP]: LRU_ANON, KIND_CODE[PageKind.PINNED]: LRU_ANON}
NOT_LRU = cython.declare(cython.int, 255)
# LRU_KINDS as a table by kind byte, NOT_LRU for the kinds that live off the LRU (a
# bytearray only because typed views need a writable buffer; never written)
LRU_OF_KIND = bytearray(LRU_KINDS.get(code, NOT_LRU) for code in range(256))
# ... and its typed view, made once (a view made from the bytearray costs an allocation).
LRU_OF_KIND_V = cython.declare(cython.uchar[:], LRU_OF_KIND)


@cython.locals(m=Machine)
def node_of(m: Machine, pfn: int) -> int:
    return pfn // m.node_pages


def lru_list_for(kind_code: int, flags: int) -> int:
    """Which list an LRU page of this kind belongs on, or -1 for non-LRU kinds."""
    lru = LRU_OF_KIND_V[kind_code]
    if lru == NOT_LRU:
        return -1
    return LRU_UNEVICTABLE if flags & PG_MLOCKED else lru


@cython.locals(m=Machine, slot=cython.Py_ssize_t, mem=MemMap)
def add_page_to_lru(m: Machine, pfn: int, nr_pages: int, lru: int) -> None:
    mem = m.mem
    slot = pfn // m.node_pages * NR_NODE_LISTS + lru
    mem.list_add(m.lru_heads_v[slot], pfn)
    m.lru_sizes_v[slot] += nr_pages
    mem.flags_v[pfn] |= PG_LRU


@cython.locals(m=Machine, mem=MemMap)
def del_page_from_lru(m: Machine, pfn: int, nr_pages: int, lru: int) -> None:
    mem = m.mem
    mem.list_del(pfn)
    m.lru_sizes_v[pfn // m.node_pages * NR_NODE_LISTS + lru] -= nr_pages
    mem.flags_v[pfn] &= ~PG_LRU


@cython.locals(m=Machine, pfn=cython.Py_ssize_t, node_pages=cython.Py_ssize_t, f=cython.int,
               lru=cython.int, n=cython.int, p=cython.int, nxt=cython.int[:],
               prv=cython.int[:], flags=cython.uchar[:], kinds=cython.uchar[:],
               sizes=cython.longlong[:], lru_of=cython.uchar[:], mem=MemMap)
def del_pages_from_lru(m: Machine, pfns: list[int]) -> None:
    """del_page_from_lru for many order-0 pages (release_pages' first half)."""
    mem = m.mem
    nxt, prv, flags, kinds = mem.nxt_v, mem.prv_v, mem.flags_v, mem.kind_v
    sizes = m.lru_sizes_v
    lru_of = LRU_OF_KIND_V
    node_pages = m.node_pages
    for pfn in pfns:
        f = flags[pfn]
        lru = lru_of[kinds[pfn]] if not f & PG_MLOCKED else LRU_UNEVICTABLE
        n = nxt[pfn]                       # MemMap.list_del, inlined: a call per page
        p = prv[pfn]                       # costs this loop 10-15 % of churn
        nxt[p] = n
        prv[n] = p
        sizes[pfn // node_pages * NR_NODE_LISTS + lru] -= 1
        flags[pfn] = f & ~PG_LRU


@cython.locals(m=Machine, held=cython.Py_ssize_t, pfn=cython.Py_ssize_t, pstate=cython.uchar[:],
               mem=MemMap)
def lru_add_batch_kept(m: Machine, batch: list[int]) -> int:
    """How many of the newest entries an add batch filled in this order still holds: it
    drains when it reaches PAGEVEC_SIZE entries or takes a compound page (4.4
    `lru_cache_add`: `!pagevec_add(...) || PageCompound(page)`; 6.x `folio_add_lru`:
    `!folio_batch_add(...) || folio_test_large(folio)`)."""
    mem = m.mem
    pstate = mem.pstate_v
    held = 0
    for pfn in batch:
        held += 1
        if held == PAGEVEC_SIZE or pstate[pfn] > ALLOC:
            held = 0
    return held


@cython.locals(m=Machine, pfn=cython.Py_ssize_t, node_pages=cython.Py_ssize_t, s=cython.int,
               f=cython.int, lru=cython.int, slot=cython.Py_ssize_t, head=cython.int,
               first=cython.int, cut=cython.Py_ssize_t, i=cython.Py_ssize_t,
               moved=cython.Py_ssize_t, nxt=cython.int[:], prv=cython.int[:],
               pstate=cython.uchar[:], flags=cython.uchar[:], kinds=cython.uchar[:],
               heads=cython.int[:], sizes=cython.longlong[:],
               lru_of=cython.uchar[:], mem=MemMap)
def lru_add_drain(m: Machine, batch: list[int], keep: int = 0) -> int:
    """folio_batch_move_lru (4.4 `__pagevec_lru_add`): every block of `batch` but the
    newest `keep` becomes PageLRU at the head of its list (`add_page_to_lru`); returns
    how many moved. A block its owner has freed meanwhile (no longer an allocated LRU
    head) is passed over."""
    mem = m.mem
    nxt, prv, pstate, flags, kinds = mem.nxt_v, mem.prv_v, mem.pstate_v, mem.flags_v, mem.kind_v
    heads, sizes = m.lru_heads_v, m.lru_sizes_v
    lru_of = LRU_OF_KIND_V
    node_pages = m.node_pages
    cut = len(batch) - keep
    moved = 0
    for i in range(cut):
        pfn = batch[i]
        s = pstate[pfn]
        f = flags[pfn]
        if not ALLOC <= s <= ALLOC + MAX_ORDER or f & (PG_LRU | PG_ISOLATED):
            continue
        lru = lru_of[kinds[pfn]]
        if lru == NOT_LRU:
            continue
        if f & PG_MLOCKED:
            lru = LRU_UNEVICTABLE
        slot = pfn // node_pages * NR_NODE_LISTS + lru
        head = heads[slot]
        first = nxt[head]                  # MemMap.list_add, inlined (as list_del above)
        nxt[pfn] = first
        prv[pfn] = head
        prv[first] = pfn
        nxt[head] = pfn
        sizes[slot] += 1 << (s - ALLOC)
        flags[pfn] = f | PG_LRU
        moved += 1
    del batch[:cut]
    return moved
