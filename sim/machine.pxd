# C declarations of sim/machine.py for the compiled build: the machine every mechanism
# works on as an extension type, so compiled code that declares it reads its fields in C.
# (A Cython dataclass takes its fields in the order declared here: the .py's order.)

from compactsim.sim.page cimport MemMap
from compactsim.sim.pageblock cimport Pageblocks
from compactsim.sim.buddy cimport BuddyPolicy
from compactsim.sim.tracepoint cimport TraceBuffer
from compactsim.sim.zone cimport Zone

cdef class Machine:
    cdef public object env, config
    cdef public MemMap mem
    cdef public Pageblocks pageblocks
    cdef public list nodes, zones
    cdef public BuddyPolicy policy
    cdef public Py_ssize_t min_free_kbytes, struct_page_size
    cdef public list cpu_node
    cdef public dict events
    cdef public TraceBuffer trace
    cdef public object lru_heads, lru_sizes
    cdef public list zonelists
    cdef public object migrated
    cdef public Py_ssize_t node_pages
    cdef readonly int[:] lru_heads_v
    cdef readonly long long[:] lru_sizes_v

    cpdef Zone zone_of(self, Py_ssize_t pfn)
