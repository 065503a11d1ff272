# C declarations for the compiled build of sim/reclaim.py.

from compactsim.sim.zone cimport zone_watermark_ok
