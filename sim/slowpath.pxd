# C declarations of sim/slowpath.py for the compiled build.

from compactsim.sim.machine cimport Machine
from compactsim.sim.task cimport Task
from compactsim.sim.gfp cimport gfp_migratetype
from compactsim.sim.page_alloc cimport Outcome, rmqueue_pcplist_bulk, zonelist
from compactsim.sim.charge cimport alloc_cost
from compactsim.sim.zone cimport zone_watermark_ok

cdef class Allocator:
    cdef public Machine m
    cdef public object env, costs, reclaim, compaction
