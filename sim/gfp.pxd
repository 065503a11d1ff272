# C declarations of sim/gfp.py for the compiled build: the helpers compiled callers use
# on every allocation are C functions for them.

cpdef int gfp_migratetype(long long gfp)
