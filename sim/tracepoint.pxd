# C declarations of sim/tracepoint.py for the compiled build: the trace buffer as an
# extension type, so the per-batch "is this event enabled" check is a C call.

cdef class TraceBuffer:
    cdef public Py_ssize_t capacity_lines, entries_written
    cdef object _lines
    cdef set _enabled

    cpdef bint is_enabled(self, str event_name) except -1
