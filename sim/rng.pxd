# C declarations of sim/rng.py for the compiled build: the uniform sources as extension
# types, so a draw is a C call and a list read for compiled callers.

cdef class Uniforms:
    cdef list _u
    cdef Py_ssize_t _i

    cpdef double random(self) except? -1.0
    cpdef list randoms(self, Py_ssize_t k)
    cpdef double exponential(self, double mean) except? -1.0
    cpdef Py_ssize_t pick(self, list cdf) except -1
    cpdef double normal(self) except? -1.0

cdef class Stream(Uniforms):
    cdef public object gen

cdef class Draws(Uniforms):
    cdef public tuple key
    cdef public Py_ssize_t head, width

    cpdef Draws seek(self, Py_ssize_t block)
