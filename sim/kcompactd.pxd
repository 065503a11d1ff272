# C declarations for the compiled build of sim/kcompactd.py.

from compactsim.sim.zone cimport zone_watermark_ok
