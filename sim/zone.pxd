# C declarations of sim/zone.py for the compiled build: Zone as an extension type, so the
# buddy allocator's and the scanners' per-page paths reach its fields directly.

from compactsim.sim.page cimport MemMap
from compactsim.sim.pcp cimport PerCpuPages
from compactsim.sim.locks cimport SimLock

cdef class Zone:
    cdef public int node_id, zone_idx
    cdef public str name, pgalloc_key
    cdef public Py_ssize_t zone_start_pfn, spanned_pages, present_pages, managed_pages
    cdef public MemMap mem
    cdef public SimLock lock
    cdef public Py_ssize_t free_pages
    cdef public object nr_free, nr_free_mt, free_head
    cdef readonly Py_ssize_t[::1] nr_free_v
    cdef readonly Py_ssize_t[:, ::1] nr_free_mt_v, free_head_v
    cdef public list watermark, lowmem_reserve
    cdef public Py_ssize_t watermark_boost
    cdef public bint boosted
    cdef public PerCpuPages pcp
    cdef public object capture
    cdef public Py_ssize_t compact_cached_free_pfn
    cdef public list compact_cached_migrate_pfn
    cdef public Py_ssize_t compact_init_migrate_pfn, compact_init_free_pfn
    cdef public int compact_considered, compact_defer_shift, compact_order_failed
    cdef public bint compact_blockskip_flush

    cpdef Py_ssize_t wmark_pages(self, int i)
    cpdef Py_ssize_t pcp_count(self)


cpdef Py_ssize_t zone_watermark_for_flags(Zone z, int alloc_flags)
cpdef bint zone_watermark_ok(Zone z, int order, Py_ssize_t mark, int highest_zoneidx,
                             int alloc_flags, object free_pages=*)
