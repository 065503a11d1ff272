"""Real captures from Linux machines for the procfs, trace reader and replay tests.

They live in validation/data/ (its README gives each file's source and licence), shared
with `make validate`: published /proc files (buddyinfo, pagetypeinfo, zoneinfo, vmstat)
and two public LTTng captures of `kmem_mm_page_alloc`/`kmem_mm_page_free` in babeltrace
text (Trace Compass's test traces: an x86_64 4.11 Ubuntu machine, and a 32-bit ARM
Renesas Lager board on 3.10.31-ltsi).
"""

from __future__ import annotations

from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[2] / "validation" / "data"
X86 = REAL_DATA / "tracecompass-uneven-streams-x86_64-4.11.0-ubuntu-cpu2-kmem-page-events.txt"
ARM = REAL_DATA / "tracecompass-bug446190-arm32-renesas-lager-3.10.31-ltsi-kmem-page-events.txt"
# single /proc dumps, and /proc/buddyinfo sampled over time by pmlogger
SNAPSHOTS = sorted(p for pattern in ("pcp-qa-meminfo-*.txt", "prometheus-procfs-*.txt",
                                     "linux-doc-*.txt") for p in REAL_DATA.glob(pattern))
SERIES = sorted(REAL_DATA.glob("pcp-qa-archive-*-buddyinfo.txt"))


def real(path: Path) -> Path:
    """`path`, which the repository carries."""
    assert path.exists(), f"real capture missing from validation/data/: {path.name}"
    return path
