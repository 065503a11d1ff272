# C declarations for the compiled build of sim/lru.py.

from compactsim.sim.page cimport MemMap
from compactsim.sim.machine cimport Machine
