# C declarations of sim/slowpath.py for the compiled build.

from compactsim.sim.task cimport Task

cdef class Allocator:
    cdef public object m, env, costs, reclaim, compaction
