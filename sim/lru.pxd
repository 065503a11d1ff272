# C declarations for the compiled build of sim/lru.py.

from compactsim.sim.page cimport MemMap
from compactsim.sim.machine cimport Machine

cpdef void add_page_to_lru(Machine m, Py_ssize_t pfn, Py_ssize_t nr_pages, int lru)
cpdef int lru_list_for(int kind_code, int flags)
