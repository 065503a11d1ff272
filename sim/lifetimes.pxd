# C declarations of sim/lifetimes.py for the compiled build: the wheel of deadlines as
# extension types, so that setting up or migrating a block files it with C calls.

from compactsim.sim.machine cimport Machine
from compactsim.sim.page cimport MemMap

cdef class Bucket:
    cdef public object pfns
    cdef int[:] view
    cdef public Py_ssize_t n, size
    cpdef void append(self, int pfn)

cdef class Lifetimes:
    cdef public Machine m
    cdef MemMap mem
    cdef public double tick
    cdef public long reaped, opened, shift, epochs
    cdef public list near, ahead
    cdef public dict beyond
    cdef int[:] pfns_v, ticks_v
    cdef Py_ssize_t cursor
    cdef Bucket due
    cpdef void schedule(self, Py_ssize_t pfn, long tick)
    cpdef Bucket take(self, long tick)
