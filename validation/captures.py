"""Figures of the real captures in `validation/data/` (see its README for provenance).

Buddyinfo and pagetypeinfo are read with compactsim's own procfs parsers, so a capture
and a simulated machine are measured by the same code. The shape of a loaded machine's
buddyinfo is taken over the zones that are not DMA (DMA holds a few MB nobody
allocates from under load), at the last sample of each time series.
"""

from __future__ import annotations

import csv
import gzip
import json
from functools import cache
from pathlib import Path

from compactsim.sim.procfs import parse_buddyinfo, parse_pagetypeinfo
from validation.measure import buddy_figures, ratio

DATA = Path(__file__).parent / "data"

# Machines under load when captured (README: what each is).
LOADED_BUDDYINFO = (
    "pcp-qa-archive-20201109-b-buddyinfo.txt",      # 16 GB, ~290 MB free
    "pcp-qa-archive-20180416-buddyinfo.txt",        # laptop, after 4.5 h of desktop use
    "pcp-qa-archive-pcp-zeroconf-buddyinfo.txt",    # Fedora 42, 6.16, 16 GB
)
PAGETYPEINFO = "linux-doc-proc-rst-pagetypeinfo-example.txt"
VMSTAT_SERIES = "pcp-qa-archive-20201109-b-vmstat.csv"
EXTFRAG_CAPTURES = ("plot-fragmentation-6.17.0-rc4-extfrag-compaction-events-simple.json.gz",
                    "plot-fragmentation-6.17.0-rc4-extfrag-compaction-events-load.json.gz")


def last_buddyinfo_sample(text: str) -> str:
    """The last block of a time series (blocks start with '# sample_time_utc'), or the
    whole text of a single snapshot, as /proc/buddyinfo lines."""
    last = text.split("# sample_time_utc")[-1]
    return "".join(line.rstrip() + "\n" for line in last.splitlines()
                   if line.startswith("Node"))


@cache
def buddyinfo_shapes() -> dict[str, dict[str, float]]:
    """Per loaded capture: unusable free index at order 9 and share of free memory in
    orders 0-3, over its non-DMA zones."""
    out = {}
    for name in LOADED_BUDDYINFO:
        zones = parse_buddyinfo(last_buddyinfo_sample((DATA / name).read_text()))
        out[name] = buddy_figures([list(z.nr_free) for z in zones],
                                  [f"{z.node}/{z.zone}" for z in zones])
    return out


@cache
def pagetype_mix() -> dict[str, float]:
    """Share of the DMA32 zone's pageblocks labelled Unmovable or Reclaimable."""
    info = parse_pagetypeinfo((DATA / PAGETYPEINFO).read_text())
    names = info.type_names
    (row,) = [b for b in info.blocks if b.zone == "DMA32"]
    counts = dict(zip(names, row.counts))
    return {"nonmovable_label_share": ratio(counts["Unmovable"] + counts["Reclaimable"],
                                            sum(row.counts)),
            "blocks": float(sum(row.counts))}


@cache
def vmstat_last(name: str = VMSTAT_SERIES) -> dict[str, int]:
    """The last value of each counter of a long-form PCP vmstat series."""
    with open(DATA / name, newline="") as f:
        return {row["vmstat_counter"]: int(row["value"]) for row in csv.DictReader(f)}


@cache
def extfrag_captures() -> dict[str, dict[str, float]]:
    """Per 6.17 capture: fallbacks per second, share of fallbacks from below pageblock
    order, share of order-9 compactions that succeeded."""
    out = {}
    for name in EXTFRAG_CAPTURES:
        with gzip.open(DATA / name, "rt") as f:
            data = json.load(f)
        events = data["events"]
        fallbacks = [e for e in events if e["event_type"] == "extfrag"]
        success = sum(e["event_type"] == "compaction_success" and e["order"] == 9
                      for e in events)
        failure = sum(e["event_type"] == "compaction_failure" and e["order"] == 9
                      for e in events)
        out[name] = {
            "duration_s": float(data["metadata"]["duration"]),
            "extfrag_events": float(len(fallbacks)),
            "extfrag_per_s": len(fallbacks) / data["metadata"]["duration"],
            "extfrag_below_pageblock_share": ratio(
                sum(e["fallback_order"] < 9 for e in fallbacks), len(fallbacks)),
            "compaction_success_share": ratio(success, success + failure),
        }
    return out
