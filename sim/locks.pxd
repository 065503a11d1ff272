# C declarations of sim/locks.py for the compiled build: the simulated spinlock as an
# extension type, taken and released with C calls by compiled callers.

from compactsim.sim.histogram cimport Histogram

cdef class SimLock:
    cdef public object env
    cdef public str name
    cdef public bint held
    cdef public double _since
    cdef public object _waiters
    cdef public Py_ssize_t acquisitions, contended
    cdef public double hold_s, wait_s
    cdef public Histogram wait_hist
    cdef public double busy_until

    cpdef object reserve(self, double seconds)
    cpdef bint trylock(self) except -1
    cpdef object lock(self)
    cpdef void unlock(self)
