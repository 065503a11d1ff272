# C declarations of sim/pageblock.py for the compiled build: the pageblock labels as an
# extension type whose per-page lookups are C calls for compiled callers.

cdef class Pageblocks:
    cdef public bytearray mt, skip
    cdef readonly unsigned char[:] mt_v, skip_v

    cpdef int get_pageblock_migratetype(self, Py_ssize_t pfn)
    cpdef void set_pageblock_migratetype(self, Py_ssize_t pfn, int mt)
