# C declarations of sim/task.py for the compiled build: the task context every allocation
# and free reads (its CPU, its debt) as an extension type.

cdef class Task:
    cdef public str comm
    cdef public int pid, cpu, node
    cdef public bint memalloc
    cdef public double debt
    cdef public Py_ssize_t lru_pending
    cdef public list lru_add
