# C declarations for the compiled build of sim/charge.py.

from compactsim.sim.task cimport Task
