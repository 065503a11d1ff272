"""Per-page state: a compact `struct page` array for the whole machine.

Follows include/linux/mm_types.h and page-flags.h in spirit: one memmap indexed by pfn
(FLATMEM), and, as in the kernel's `page->lru` union, one pair of links that a page uses
either for a buddy free list (free block heads) or for an LRU / driver list (allocated
heads). Per page there are 15 bytes: links (2 x int32), the deadline of its owner's free
(uint32, lifetime ticks), a state byte, a kind byte and a flags byte. Tail pages of a
block carry only `TAIL`.

State byte encoding (`pstate`):
    0..63    head of a free buddy block: order in the low 4 bits, list migratetype above
    64+o     head of an allocated block of order o
    96+mt    an order-0 page on a per-cpu list of migratetype mt
    255      tail page (inside a larger free or allocated block)
"""

from __future__ import annotations

from array import array

import cython

from compactsim.sim.config import PageKind

ALLOC = 64
PCP = 96
TAIL = 255

# page flags byte (PG_* bits the model needs)
PG_DIRTY = 1
PG_WRITEBACK = 2
PG_LOCKED = 4
PG_EXTRA_REF = 8       # a reference beyond the mapping (GUP pin): migration gets -EAGAIN
PG_MLOCKED = 16        # unevictable
PG_ISOLATED = 32       # taken off its list by reclaim or compaction
PG_LRU = 64            # on an LRU list
PG_MOVABLE_OPS = 128   # non-LRU page with movable_ops (zsmalloc, balloon)

# kind byte: what owns an allocated page
KIND_NONE = 0
KIND_RESERVED = 15     # memmap and other boot reservations
KIND_CODE = {kind: i + 1 for i, kind in enumerate(PageKind)}
KIND_OF_CODE = {code: kind for kind, code in KIND_CODE.items()}


def free_state(order: int, mt: int) -> int:
    return (mt << 4) | order


@cython.cclass
class MemMap:
    """The page arrays, plus list heads (sentinels) after the last pfn.

    `nxt`/`prv` form circular doubly linked lists through sentinel indices, so adding at
    head or tail and deleting are O(1) without branches. Compiled, this is an extension
    type (sim/page.pxd): compiled modules that declare a MemMap index the arrays through
    the typed views `nxt_v` ... `expire_v` (the same memory) and call the list methods
    as C functions. A function called once per page indexes `mem.nxt_v[...]` itself:
    copying a view into a local takes and drops a reference to it with two atomic
    instructions, which cost more than the list operation.
    """

    def __init__(self, nr_pages: int, nr_heads: int):
        self.nr_pages = nr_pages
        total = nr_pages + nr_heads
        self.nxt = array("i", bytes(4 * total))
        self.prv = array("i", bytes(4 * total))
        self.pstate = bytearray([TAIL]) * nr_pages
        self.kind = bytearray(nr_pages)
        self.flags = bytearray(nr_pages)
        self.expire = array("I", bytes(4 * nr_pages))
        self.nxt_v, self.prv_v = self.nxt, self.prv
        self.pstate_v, self.kind_v, self.flags_v = self.pstate, self.kind, self.flags
        self.expire_v = self.expire
        for head in range(nr_pages, total):
            self.nxt[head] = head
            self.prv[head] = head
        self._next_head = nr_pages

    def new_list(self) -> int:
        """Reserve one list head; returns its index."""
        head = self._next_head
        if head >= len(self.nxt):
            raise RuntimeError("memmap: no list heads left")
        self._next_head += 1
        return head

    def list_add(self, head: int, idx: int) -> None:
        first = self.nxt_v[head]
        self.nxt_v[idx] = first
        self.prv_v[idx] = head
        self.prv_v[first] = idx
        self.nxt_v[head] = idx

    def list_add_tail(self, head: int, idx: int) -> None:
        last = self.prv_v[head]
        self.nxt_v[idx] = head
        self.prv_v[idx] = last
        self.nxt_v[last] = idx
        self.prv_v[head] = idx

    def list_del(self, idx: int) -> None:
        n = self.nxt_v[idx]
        p = self.prv_v[idx]
        self.nxt_v[p] = n
        self.prv_v[n] = p

    def list_empty(self, head: int) -> bool:
        return self.nxt_v[head] == head

    def iter_list(self, head: int):
        """Entries from head to tail (for tests and renderers, not hot paths)."""
        idx = self.nxt[head]
        while idx != head:
            yield idx
            idx = self.nxt[idx]

    def bytes_per_page(self) -> float:
        total = (self.nxt.itemsize * len(self.nxt) + self.prv.itemsize * len(self.prv)
                 + len(self.pstate) + len(self.kind) + len(self.flags)
                 + self.expire.itemsize * len(self.expire))
        return total / self.nr_pages
