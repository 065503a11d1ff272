# C declarations for the compiled build of sim/charge.py.

from compactsim.sim.task cimport Task
from compactsim.sim.page_alloc cimport Outcome
from compactsim.sim.locks cimport SimLock
from compactsim.sim.zone cimport Zone

cpdef (double, double) alloc_cost(object costs, Outcome out, int order)
cpdef (double, double) free_cost(object costs, Outcome out)
