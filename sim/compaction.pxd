# C declarations for the compiled build of sim/compaction.py.

from compactsim.sim.page_alloc cimport free_to_buddy
from compactsim.sim.machine cimport Machine
from compactsim.sim.zone cimport Zone
