# C declarations for the compiled build of sim/page_alloc.py.

from compactsim.sim.page cimport MemMap
from compactsim.sim.zone cimport Zone
from compactsim.sim.pcp cimport PerCpuPages
from compactsim.sim.gfp cimport gfp_migratetype
from compactsim.sim.zone cimport zone_watermark_ok, zone_watermark_for_flags
from compactsim.sim.task cimport Task
from compactsim.sim.machine cimport Machine
from compactsim.sim.buddy cimport free_one_page

cdef class Outcome:
    cdef public Py_ssize_t pfn
    cdef public Zone zone
    cdef public int work
    cdef public Py_ssize_t batch
    cdef public bint boosted_wake

cpdef list rmqueue_pcplist_bulk(Machine m, Task task, int gfp, Py_ssize_t n)
cpdef list zonelist(Machine m, int node, int highest_zoneidx=*)
cpdef int alloc_flags_nofragment(Machine m, Zone z)
cpdef Py_ssize_t rmqueue_zone(Machine m, Zone z, Task task, int order, int mt, int alloc_flags,
                              Outcome out)
cpdef Py_ssize_t free_to_buddy(Machine m, Zone z, Py_ssize_t pfn, int order, object mt=*)
cpdef void trace_alloc(Machine m, Task task, Py_ssize_t pfn, int order, long gfp)
cpdef Outcome free_unref_page(Machine m, Task task, Zone z, Py_ssize_t pfn)
cpdef list free_unref_page_commit(Machine m, Task task, list pfns)
cpdef Outcome free_pages(Machine m, Task task, Py_ssize_t pfn, int order)
