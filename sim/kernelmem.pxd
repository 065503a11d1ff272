# C declarations of sim/kernelmem.py for the compiled build.

from compactsim.sim.machine cimport Machine

cdef class Source:
    cdef readonly str name
    cdef readonly int code
    cdef readonly long gfp
    cdef readonly int order
    cdef readonly double per
    cdef readonly int count
    cdef readonly bint slab

cdef class KernelMemory:
    cdef public Machine m
    cdef public object alloc, lifetimes, fork_sources
    cdef public double clear_s
    cdef public dict credit, owed, deadline, stats

    cpdef void _owe(self, str group, object sources, double units, long deadline)
    cpdef void note(self, str group, object sources, Py_ssize_t pages, long deadline)
    cpdef object request_done(self, str group, double forks)
