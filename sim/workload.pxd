# C declarations of sim/workload.py for the compiled build: the workload and its wheel of
# deadlines as extension types, so their per-request and per-page methods reach their
# fields directly.

from compactsim.sim.machine cimport Machine
from compactsim.sim.page cimport MemMap
from compactsim.sim.rng cimport Draws, Stream, Uniforms
from compactsim.sim.task cimport Task
from compactsim.sim.zone cimport Zone
from compactsim.sim.histogram cimport Histogram
from compactsim.sim.kernelmem cimport KernelMemory
from compactsim.sim.lifetimes cimport Bucket, Lifetimes
from compactsim.sim.lru cimport lru_list_for
from compactsim.sim.page_alloc cimport rmqueue_pcplist_bulk, free_pages

cdef class GroupPlan:
    cdef public object group, lifetime, kernel_sources
    cdef public int code, base_flags, lru, driver_list, width
    cdef public str name
    cdef public double forks, dirty, extra_ref, mlocked, writeback, locked
    cdef public int life_kind
    cdef public double life_mean, life_sigma, life_mu

    cpdef double draw_lifetime(self, Uniforms rng) except? -1.0
    cdef public bint random_states, balloon
    cdef public list orders, cdf
    cdef public dict gfp, fault_cost, latency, stats

cdef class Workload:
    cdef public Machine m
    cdef public object env, alloc, zram, rngs, cfg, costs, deferred_split
    cdef public KernelMemory kernel
    cdef public double lru_page_hold, pcp_alloc_s
    cdef public Lifetimes lifetimes
    cdef public dict latency, requests, unmapping, plans
    cdef public dict _as_anon, _as_anon_kept, _extra_plans
    cdef public list fault_log, reapers
    cdef public object block_log
    cdef public Py_ssize_t touched

    cpdef double in_use_fraction(self)
    cpdef Py_ssize_t setup_pages(self, GroupPlan plan, object pfns, int order, Uniforms rng,
                                 list batch=*)
    cpdef int _draw_flags(self, GroupPlan plan, Py_ssize_t pfn, Uniforms rng) except? -1
    cpdef Py_ssize_t _bulk(self, GroupPlan plan, Task task, Uniforms rng, Py_ssize_t n)
    cpdef void _record(self, GroupPlan plan, int order, double latency, Py_ssize_t attempts,
                       Py_ssize_t ok)
