# C declarations of sim/kernelmem.py for the compiled build.

cdef class KernelMemory:
    cdef public object m, alloc, lifetimes, fork_sources
    cdef public double clear_s
    cdef public dict credit, owed, deadline, stats
