# C declarations of sim/page.py for the compiled build: MemMap as an extension type whose
# page arrays other compiled modules index through typed views (cimport MemMap).

cdef class MemMap:
    cdef public Py_ssize_t nr_pages
    cdef public object nxt, prv, pstate, kind, flags, expire
    cdef readonly int[:] nxt_v, prv_v
    cdef readonly unsigned char[:] pstate_v, kind_v, flags_v
    cdef readonly unsigned int[:] expire_v
    cdef Py_ssize_t _next_head

    cpdef void list_add(self, Py_ssize_t head, Py_ssize_t idx)
    cpdef void list_add_tail(self, Py_ssize_t head, Py_ssize_t idx)
    cpdef void list_del(self, Py_ssize_t idx)
    cpdef bint list_empty(self, Py_ssize_t head)
