# C declarations for the compiled build of sim/migrate.py: Migration as an extension type,
# so migrate_pages calls the per-page rules and the move in C.

from compactsim.sim.lifetimes cimport Lifetimes
from compactsim.sim.lru cimport add_page_to_lru, lru_list_for
from compactsim.sim.machine cimport Machine
from compactsim.sim.page cimport MemMap
from compactsim.sim.task cimport Task

cdef class Migration:
    cdef public Machine m
    cdef public object env, costs, rng, zsmalloc
    cdef public Lifetimes lifetimes
    cdef public bint batching, sync_light_io_nowait, multi_cpu
    cdef public double cost_lru, cost_ops, shootdown_us
    cdef readonly long long[::1] migrated_v

    cpdef (int, double) unmap_and_move_rc(self, Py_ssize_t pfn, int mode, bint force,
                                          bint memalloc)
    cpdef void move(self, Py_ssize_t old, Py_ssize_t new)
