# C declarations for the compiled build of sim/migrate.py.

from compactsim.sim.lru cimport add_page_to_lru, lru_list_for
from compactsim.sim.machine cimport Machine
from compactsim.sim.page cimport MemMap
