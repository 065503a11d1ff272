# C declarations for the compiled build of sim/compaction.py.

from compactsim.sim.page_alloc cimport free_to_buddy
from compactsim.sim.machine cimport Machine
from compactsim.sim.zone cimport Zone, zone_watermark_ok
from compactsim.sim.buddy cimport del_page_from_free_list
from compactsim.sim.gfp cimport gfp_migratetype
from compactsim.sim.page_alloc cimport zonelist
