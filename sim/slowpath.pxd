# C declarations of sim/slowpath.py for the compiled build.

from compactsim.sim.machine cimport Machine
from compactsim.sim.task cimport Task

cdef class Allocator:
    cdef public Machine m
    cdef public object env, costs, reclaim, compaction
