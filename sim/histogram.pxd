# C declarations of sim/histogram.py for the compiled build.

cdef class Histogram:
    cdef public list _counts
    cdef public Py_ssize_t n, _last_bucket
    cdef public double total_s, max_s, _last

    cpdef void record(self, double seconds, Py_ssize_t n=*)
