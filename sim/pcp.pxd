# C declarations of sim/pcp.py for the compiled build: struct per_cpu_pages as an
# extension type.

from compactsim.sim.page cimport MemMap

cdef class PerCpuPages:
    cdef public list lists, counts
    cdef public Py_ssize_t batch, high
    cdef public bint whole_list

    cpdef Py_ssize_t count(self)
