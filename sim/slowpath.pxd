# C declarations of sim/slowpath.py for the compiled build.

cdef class Allocator:
    cdef public object m, env, costs, reclaim, compaction
