# C declarations for the compiled build of sim/compaction.py.

from compactsim.sim.page_alloc cimport free_to_buddy
from compactsim.sim.locks cimport SimLock
from compactsim.sim.machine cimport Machine
from compactsim.sim.page cimport MemMap
from compactsim.sim.zone cimport Zone, zone_watermark_ok
from compactsim.sim.buddy cimport del_page_from_free_list
from compactsim.sim.gfp cimport gfp_migratetype
from compactsim.sim.page_alloc cimport zonelist
from compactsim.sim.task cimport Task
from compactsim.sim.migrate cimport Migration

cdef class CompactControl:
    cdef public Zone zone
    cdef public int order
    cdef public object mode, trigger
    cdef public Task task
    cdef public long gfp
    cdef public int migratetype, alloc_flags, highest_zoneidx
    cdef public bint whole_zone, ignore_skip_hint, ignore_block_suitable, direct_compaction
    cdef public bint proactive_compaction
    cdef public Py_ssize_t migrate_pfn, free_pfn
    cdef public list migratepages
    cdef public Py_ssize_t nr_migratepages
    cdef public list freepages
    cdef public Py_ssize_t total_migrate_scanned, total_free_scanned
    cdef public bint contended, finish_pageblock
    cdef public int fast_search_fail, search_order
    cdef public object fast_start_pfn, capture
    cdef public Py_ssize_t nr_migrated, nr_migrate_failed
    cdef public dict migrated_from

cdef class Compaction:
    cdef public Machine m
    cdef public object env, k, costs, tun, reclaim, lifetimes
    cdef public Migration migration
    cdef public dict latency, results
    cdef public Py_ssize_t wasted_migrations
    cdef public bint era44

    cpdef bint tracing(self, str event) except -1
    cpdef bint fast_find_wanted(self, CompactControl cc) except -1
    cpdef bint compact_trylock(self, CompactControl cc, SimLock lock) except -1
