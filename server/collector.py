"""`RunCollector`: one running run's simulated machine as node_exporter families.

A prometheus_client custom collector: `collect()` builds new families from the latest
snapshot the run's worker sent (`RunManager.latest_snapshot`), so a scrape costs the same
on a 1 GiB and a 1 TiB machine and no state carries over between scrapes. Names, types and
labels are node_exporter's exactly (vmstat, buddyinfo and zoneinfo collectors, uname), so
node_exporter dashboards find the run; what node_exporter lacks is under `compactsim_`.
All values are simulated, which the HELP strings say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric, UntypedMetricFamily)

from compactsim.sim.pageblock import MIGRATETYPE_NAMES

PAGE_BYTES = 4096

SIM = " (simulated by compactsim)"
# snapshot zone key -> node_exporter zoneinfo name (collector/zoneinfo_linux.go) and HELP
ZONEINFO = (
    ("free_pages", "node_zoneinfo_nr_free_pages", "Total number of free pages in the zone"),
    ("min", "node_zoneinfo_min_pages", "Zone watermark pages_min"),
    ("low", "node_zoneinfo_low_pages", "Zone watermark pages_low"),
    ("high", "node_zoneinfo_high_pages", "Zone watermark pages_high"),
    ("managed", "node_zoneinfo_managed_pages", "Present pages managed by the buddy system"),
    ("present", "node_zoneinfo_present_pages", "Physical pages existing within the zone"),
)
RELEASE = "compactsim"


def _mt_name(mt: int) -> str:
    return MIGRATETYPE_NAMES[mt] if mt < len(MIGRATETYPE_NAMES) else str(mt)


class RunCollector:
    """The families of run `run_id` of `manager` (anything with `latest_snapshot(run_id)`
    and `active_runs()`); `info` gives the run's display name, scenario and the like for
    `node_uname_info` and `compactsim_run_info`."""

    def __init__(self, manager: Any, run_id: str, info: dict[str, str] | None = None):
        self.manager = manager
        self.run_id = run_id
        self.info = info or {}

    def collect(self) -> Iterator[Metric]:
        snap = self.manager.latest_snapshot(self.run_id)
        info = self.info
        kernel = info.get("profile", "")
        uname = GaugeMetricFamily(
            "node_uname_info", "Labeled system information as provided by the uname system "
            "call" + SIM, labels=["sysname", "release", "version", "machine", "nodename",
                                  "domainname"])
        uname.add_metric(["Linux", f"{RELEASE}-{kernel}" if kernel else RELEASE,
                          info.get("design", ""), "x86_64",
                          info.get("display_name") or self.run_id, "(none)"], 1)
        yield uname
        run_info = GaugeMetricFamily(
            "compactsim_run_info", "The simulated run behind this target (always 1)",
            labels=["run", "scenario", "design", "profile"])
        run_info.add_metric([f"runs/{self.run_id}", info.get("scenario", ""),
                             info.get("design", ""), kernel], 1)
        yield run_info
        if snap is None:
            return
        yield GaugeMetricFamily("compactsim_simulated_time_seconds",
                                "Simulated time of the latest snapshot, seconds",
                                value=float(snap["time_s"]))
        yield from self._vmstat(snap.get("vmstat", {}))
        migrated = CounterMetricFamily(
            "compactsim_migrated_pages", "Pages migration moved, by kind (LRU anon, LRU "
            "file, zsmalloc, balloon)" + SIM, labels=["kind"])
        for kind, n in sorted(snap.get("migrated_by_kind", {}).items()):
            migrated.add_metric([kind], n)
        yield migrated
        yield from self._zones(snap.get("zones", []))
        yield from self._meminfo(snap.get("zones", []))
        yield from self._histograms(snap.get("histograms", {}))
        score = GaugeMetricFamily(
            "compactsim_fragmentation_score", "Proactive-compaction fragmentation score of "
            "the node, 0-100 (mm/compaction.c fragmentation_score_node)" + SIM,
            labels=["node"])
        for nid, v in enumerate(snap.get("fragmentation_score", [])):
            score.add_metric([str(nid)], v)
        yield score

    def _vmstat(self, vmstat: dict[str, int]) -> Iterator[Metric]:
        for field in sorted(vmstat):
            # node_exporter: untyped, no labels, HELP "/proc/vmstat information field <f>."
            yield UntypedMetricFamily(f"node_vmstat_{field}",
                                      f"/proc/vmstat information field {field}." + SIM,
                                      value=vmstat[field])

    def _meminfo(self, zones: list[dict]) -> Iterator[Metric]:
        """node_exporter's meminfo names for what the zones know: total and free."""
        total = sum(z.get("managed", 0) for z in zones) * PAGE_BYTES
        free = sum(z["free_pages"] for z in zones) * PAGE_BYTES
        yield GaugeMetricFamily("node_memory_MemTotal_bytes",
                                "Memory information field MemTotal_bytes." + SIM, value=total)
        yield GaugeMetricFamily("node_memory_MemFree_bytes",
                                "Memory information field MemFree_bytes." + SIM, value=free)

    def _histograms(self, hists: dict) -> Iterator[Metric]:
        """Allocation latency by request (kind/order) and lock wait by lock, in simulated
        seconds, as Prometheus histograms with the model's log-linear bucket bounds."""
        for key, name, label, help_ in (
                ("alloc_latency", "compactsim_alloc_latency_seconds", "request",
                 "Allocation latency by page kind and order, simulated seconds"),
                ("lock_wait", "compactsim_lock_wait_seconds", "lock",
                 "Wait to take a lock (zone->lock, lru_lock), simulated seconds")):
            fam = HistogramMetricFamily(name, help_ + SIM, labels=[label])
            for what, h in sorted(hists.get(key, {}).items()):
                cumulative, buckets = 0, []
                for upper, count in h["buckets"]:
                    cumulative += count
                    buckets.append((repr(float(upper)), cumulative))
                buckets.append(("+Inf", h["n"]))
                fam.add_metric([what], buckets, sum_value=h["sum_s"])
            yield fam

    def _zones(self, zones: list[dict]) -> Iterator[Metric]:
        buddy = GaugeMetricFamily("node_buddyinfo_blocks", "Count of free blocks according "
                                  "to size." + SIM, labels=["node", "zone", "size"])
        zoneinfo = {name: GaugeMetricFamily(name, help_ + SIM, labels=["node", "zone"])
                    for _, name, help_ in ZONEINFO}
        boost = GaugeMetricFamily("compactsim_zone_watermark_boost_pages",
                                  "Zone watermark boost, pages" + SIM, labels=["node", "zone"])
        free = GaugeMetricFamily("compactsim_free_blocks", "Free blocks by migratetype and "
                                 "order (/proc/pagetypeinfo)" + SIM,
                                 labels=["node", "zone", "migratetype", "order"])
        blocks = GaugeMetricFamily("compactsim_pageblocks", "Pageblocks by migratetype "
                                   "(/proc/pagetypeinfo)" + SIM,
                                   labels=["node", "zone", "migratetype"])
        extfrag = GaugeMetricFamily("compactsim_extfrag_index", "External fragmentation "
                                    "index by order, x1000 (-1000: an allocation would "
                                    "succeed)" + SIM, labels=["node", "zone", "order"])
        unusable = GaugeMetricFamily("compactsim_unusable_index", "Unusable free space "
                                     "index by order, x1000" + SIM,
                                     labels=["node", "zone", "order"])
        for z in zones:
            nz = [str(z["node"]), z["zone"]]
            for order, n in enumerate(z["nr_free"]):
                buddy.add_metric([*nz, str(order)], n)
            for key, name, _ in ZONEINFO:
                if key in z:
                    zoneinfo[name].add_metric(nz, z[key])
            boost.add_metric(nz, z["boost"])
            for mt, per_order in enumerate(z["free_by_type"]):
                for order, n in enumerate(per_order):
                    free.add_metric([*nz, _mt_name(mt), str(order)], n)
            for mt, n in enumerate(z["blocks_by_type"]):
                blocks.add_metric([*nz, _mt_name(mt)], n)
            for order, v in enumerate(z["extfrag_index"]):
                extfrag.add_metric([*nz, str(order)], v)
            for order, v in enumerate(z["unusable_index"]):
                unusable.add_metric([*nz, str(order)], v)
        yield buddy
        yield from zoneinfo.values()
        yield from (boost, free, blocks, extfrag, unusable)
