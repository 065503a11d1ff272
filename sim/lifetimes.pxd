# C declarations of sim/lifetimes.py for the compiled build: the wheel of deadlines as
# extension types, so that setting up or migrating a block schedules it with C calls.

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
    cdef public list near
    cdef public dict far
    cdef public long reaped
    cpdef void schedule(self, Py_ssize_t pfn, long tick)
    cpdef Bucket take(self, long tick)
