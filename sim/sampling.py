"""Periodic snapshots of the machine, the way a monitoring agent reads procfs.

At each `sampling.interval` of simulated time: per zone the buddyinfo row, free blocks per
type and order, pageblocks per type, free pages against the watermarks and the boost,
the unusable and extfrag indices at every order (mm/vmstat.c), and per node the
proactive-compaction fragmentation score (`fragmentation_score_node`, mm/compaction.c:
the zones' `extfrag_for_order(zone, HPAGE_PMD_ORDER)` weighted by present pages over
node present + 1); plus the /proc/vmstat event counters and the pages migration moved
by kind. A snapshot is plain data.
"""

from __future__ import annotations

from compactsim.sim.fragmentation import (extfrag_for_order, fragmentation_index_all_orders,
                               unusable_free_index_all_orders)
from compactsim.sim.machine import Machine
from compactsim.sim.migrate import MIGRATED_KINDS, MIGRATED_LABEL
from compactsim.sim.pageblock import PAGEBLOCK_ORDER
from compactsim.sim.zone import WMARK_HIGH, WMARK_LOW, WMARK_MIN


def fragmentation_score_node(m: Machine, nid: int) -> int:
    node = m.nodes[nid]
    present = sum(z.present_pages for z in node.zones)
    score = 0
    for z in node.zones:
        score += extfrag_for_order(z.nr_free, PAGEBLOCK_ORDER) * z.present_pages // (present + 1)
    return score


def zone_snapshot(m: Machine, z) -> dict:
    return {
        "node": z.node_id, "zone": z.name,
        "nr_free": list(z.nr_free),
        "free_by_type": z.nr_free_by_type(),
        "blocks_by_type": m.pageblocks.counts(z.zone_start_pfn, z.zone_end_pfn),
        "free_pages": z.free_pages, "pcp_pages": z.pcp_count(),
        "managed": z.managed_pages, "present": z.present_pages,
        "min": z.watermark[WMARK_MIN], "low": z.watermark[WMARK_LOW],
        "high": z.watermark[WMARK_HIGH], "boost": z.watermark_boost,
        "unusable_index": [int(v) for v in unusable_free_index_all_orders(z.nr_free)],
        "extfrag_index": [int(v) for v in fragmentation_index_all_orders(z.nr_free)],
    }


def snapshot(m: Machine) -> dict:
    return {
        "time_s": m.env.now,
        "zones": [zone_snapshot(m, z) for z in m.zones],
        "fragmentation_score": [fragmentation_score_node(m, n.node_id) for n in m.nodes],
        "vmstat": dict(m.events),
        "migrated_by_kind": migrated_by_kind(m),
    }


def migrated_by_kind(m: Machine) -> dict[str, int]:
    """Pages migration moved, by what they were (LRU anon, LRU file, zsmalloc, balloon);
    every kind, moved or not, so a series exists from the first sample."""
    moved = dict.fromkeys(MIGRATED_KINDS, 0)
    for code, n in enumerate(m.migrated):
        if n:
            label = MIGRATED_LABEL[code]
            moved[label] = moved.get(label, 0) + n
    return moved


def series_row(snap: dict) -> dict:
    """One flat CSV row of a snapshot."""
    row = {"time_s": round(snap["time_s"], 9)}
    for zs in snap["zones"]:
        p = f"node{zs['node']}_{zs['zone']}"
        row[f"{p}_free_pages"] = zs["free_pages"]
        row[f"{p}_pcp_pages"] = zs["pcp_pages"]
        row[f"{p}_boost"] = zs["boost"]
        for o, n in enumerate(zs["nr_free"]):
            row[f"{p}_nr_free_order{o}"] = n
        for mt, n in enumerate(zs["blocks_by_type"]):
            row[f"{p}_pageblocks_mt{mt}"] = n
        row[f"{p}_unusable_index_order9"] = zs["unusable_index"][PAGEBLOCK_ORDER]
        row[f"{p}_extfrag_index_order9"] = zs["extfrag_index"][PAGEBLOCK_ORDER]
    for nid, score in enumerate(snap["fragmentation_score"]):
        row[f"node{nid}_fragmentation_score"] = score
    for key in ("pgalloc_normal", "pgfree", "allocstall_normal", "pgscan_kswapd",
                "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "pswpout",
                "thp_fault_alloc", "thp_fault_fallback", "compact_stall", "compact_success",
                "compact_fail", "pgmigrate_success", "pgmigrate_fail"):
        row[key] = snap["vmstat"][key]
    return row


class Sampler:
    """Takes a snapshot every interval; keeps flat rows and the latest snapshot."""

    def __init__(self, m: Machine, interval: float):
        self.m = m
        self.interval = interval
        self.rows: list[dict] = []
        self.latest: dict | None = None
        m.env.process(self._run())

    def take(self) -> dict:
        self.latest = snapshot(self.m)
        self.rows.append(series_row(self.latest))
        return self.latest

    def _run(self):
        while True:
            self.take()
            yield self.m.env.timeout(self.interval)
