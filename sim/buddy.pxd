# C declarations of sim/buddy.py for the compiled build: the free-list primitives are C
# functions for their callers here (cpdef: still callable from Python).

from compactsim.sim.page cimport MemMap
from compactsim.sim.zone cimport Zone
from compactsim.sim.pageblock cimport Pageblocks

cdef class BuddyPolicy:
    cdef public object claim_rule
    cdef public long watermark_boost_factor
    cdef public Pageblocks pageblocks
    cdef public bint steal_smallest
    cdef public object on_extfrag

    cpdef bint freelist_hygiene(self)

cpdef void add_to_free_list(Zone z, Py_ssize_t pfn, int order, int mt, bint tail=*)
cpdef void del_page_from_free_list(Zone z, Py_ssize_t pfn, int order, int mt)
cpdef void move_to_free_list(Zone z, Py_ssize_t pfn, int order, int old_mt, int new_mt)
cpdef void expand(Zone z, Py_ssize_t pfn, int low, int high, int mt)
cpdef void page_del_and_expand(Zone z, Py_ssize_t pfn, int low, int high, int list_mt,
                               int to_mt)
cpdef void mark_allocated(Zone z, Py_ssize_t pfn, int order)
cpdef Py_ssize_t rmqueue_smallest(Zone z, int order, int mt)
cpdef Py_ssize_t rmqueue(Zone z, int order, int mt, int alloc_flags, BuddyPolicy policy)
cpdef bint buddy_merge_likely(Zone z, Py_ssize_t pfn, Py_ssize_t buddy_pfn, int order)
cpdef Py_ssize_t free_one_page(Zone z, Py_ssize_t pfn, int order, int mt, bint to_tail=*,
                               object pageblocks=*)
