"""Real captures from Linux machines for the procfs, trace reader and replay tests, when
there are any.

Published /proc files (buddyinfo, pagetypeinfo, zoneinfo, vmstat) and two public LTTng
captures of `kmem_mm_page_alloc`/`kmem_mm_page_free` in babeltrace text (Trace Compass's
test traces: an x86_64 4.11 Ubuntu machine, and a 32-bit ARM Renesas Lager board on
3.10.31-ltsi) are not kept in this repository. Point COMPACTSIM_REAL_DATA at a directory
that holds them (the traces under `traces/`) to run the tests that read them; without it
those tests are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(os.environ.get("COMPACTSIM_REAL_DATA") or "/nonexistent")
TRACES = REAL_DATA / "traces"
X86 = TRACES / "tracecompass-uneven-streams-x86_64-4.11.0-ubuntu-cpu2-kmem-page-events.txt"
ARM = TRACES / "tracecompass-bug446190-arm32-renesas-lager-3.10.31-ltsi-kmem-page-events.txt"


def real(path: Path) -> Path:
    """`path`, or skip the test when the capture is not there."""
    if not path.exists():
        pytest.skip(f"real capture not available: {path.name} (set COMPACTSIM_REAL_DATA)")
    return path
