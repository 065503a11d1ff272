"""`RunCollector`: one running run's simulated machine as node_exporter families.

A prometheus_client custom collector: `collect()` builds new families from the latest
snapshot the run's worker sent (`RunManager.latest_snapshot`), so a scrape costs the same
on a 1 GiB and a 1 TiB machine and no state carries over between scrapes. Names, types and
labels are node_exporter's exactly (vmstat, buddyinfo and zoneinfo collectors, uname), so
node_exporter dashboards find the run; what node_exporter lacks is under `compactsim_`.
All values are simulated, which the HELP strings say.

What keeps a run's series whole over its life, so rates and quantiles hold:
- nothing before the first snapshot, which comes with the kernel profile and design:
  `node_uname_info` and `compactsim_run_info` never change their labels;
- histograms always carry the same buckets (`BUCKETS_S`, powers of two of nanoseconds:
  bounds of the model's own log-linear buckets, so every count lands where it belongs);
- one value per label: a request is `kind` and `order`, a lock `lock`, `node`, `zone`;
- `compactsim_simulated_seconds_total`, simulated time as a counter: dashboards divide a
  counter's rate by its rate to get per simulated second whatever the run's pace.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UntypedMetricFamily,
)

from compactsim.sim.pageblock import MIGRATETYPE_NAMES

PAGE_BYTES = 4096
# Histogram bucket bounds, seconds: 2^6 ns (64 ns) .. 2^36 ns (~69 s), then +Inf.
_BUCKET_LOG2_NS = range(6, 37)
BUCKETS_S = tuple(2.0 ** k * 1e-9 for k in _BUCKET_LOG2_NS)

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


def fixed_buckets(sparse: list, n: int) -> list[tuple[str, float]]:
    """Cumulative (le, count) at every bound of `BUCKETS_S` and +Inf from a histogram's
    non-empty model buckets [[upper bound s, count], ...] (`sim.histogram.Histogram.buckets`):
    each count goes to the first bound at or above its bucket's upper bound."""
    first = _BUCKET_LOG2_NS.start
    counts = [0] * (len(BUCKETS_S) + 1)   # the last: above every bound
    for upper, count in sparse:
        ns = float(upper) * 1e9
        k = math.ceil(math.log2(ns) - 1e-9) if ns > 0 else first
        counts[min(max(k - first, 0), len(BUCKETS_S))] += count
    out: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(BUCKETS_S, counts):
        cumulative += count
        out.append((repr(bound), cumulative))
    out.append(("+Inf", n))
    return out


def _request_labels(request: str) -> list[str]:
    """"thp/order9" -> ["thp", "9"]."""
    kind, _, order = request.rpartition("/order")
    return [kind, order] if kind else [request, ""]


def _lock_labels(lock: str) -> list[str]:
    """"zone_lock/0/Normal" -> ["zone_lock", "0", "Normal"]; "lru_lock/1" -> ["lru_lock",
    "1", ""]."""
    name, node, zone = (lock.split("/", 2) + ["", ""])[:3]
    return [name, node, zone]


def _mt_name(mt: int) -> str:
    return MIGRATETYPE_NAMES[mt] if mt < len(MIGRATETYPE_NAMES) else str(mt)


class RunCollector:
    """The families of run `run_id` of `manager` (anything with `latest_snapshot(run_id)`);
    `info` gives the run's display name, scenario and the like for
    `node_uname_info` and `compactsim_run_info`."""

    def __init__(self, manager: Any, run_id: str, info: dict[str, str] | None = None):
        self.manager = manager
        self.run_id = run_id
        self.info = info or {}

    def collect(self) -> Iterator[Metric]:
        snap = self.manager.latest_snapshot(self.run_id)
        if snap is None:   # not started yet: no kernel, no state
            return
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
        yield CounterMetricFamily(
            "compactsim_simulated_seconds", "Simulated time elapsed, seconds: divide a "
            "counter's rate by this one's for a rate per simulated second", value=float(
                snap["time_s"]))
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
        yield CounterMetricFamily(
            "compactsim_compaction_wasted_migrations", "Pageblocks compaction migrated pages "
            "out of that did not become free at pageblock order after the pcp drain" + SIM,
            value=snap.get("wasted_migrations", 0))
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
        """Allocation latency by page kind and order, lock wait by lock, compaction latency
        by trigger, in simulated seconds, as Prometheus histograms with `BUCKETS_S`."""
        for key, name, labels, split, help_ in (
                ("alloc_latency", "compactsim_alloc_latency_seconds", ["kind", "order"],
                 _request_labels, "Allocation latency by page kind and order, simulated "
                                  "seconds"),
                ("lock_wait", "compactsim_lock_wait_seconds", ["lock", "node", "zone"],
                 _lock_labels, "Wait to take a lock (zone->lock, lru_lock), simulated "
                               "seconds"),
                ("compaction_latency", "compactsim_compaction_latency_seconds", ["trigger"],
                 lambda what: [what], "Time of one compact_zone() by who asked for it "
                                      "(direct, kcompactd, proactive, manual), simulated "
                                      "seconds")):
            fam = HistogramMetricFamily(name, help_ + SIM, labels=labels)
            for what, h in sorted(hists.get(key, {}).items()):
                fam.add_metric(split(what), fixed_buckets(h["buckets"], h["n"]),
                               sum_value=h["sum_s"])
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
                                    "index by order, as debugfs extfrag/extfrag_index "
                                    "prints it: towards 0 a failure is for lack of memory, "
                                    "towards 1 for fragmentation, -1 an allocation would "
                                    "succeed" + SIM, labels=["node", "zone", "order"])
        unusable = GaugeMetricFamily("compactsim_unusable_index", "Unusable free space "
                                     "index by order, 0-1, as debugfs "
                                     "extfrag/unusable_index prints it" + SIM,
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
            # the kernel keeps both x1000 and prints them as ratios with 3 decimals
            for order, v in enumerate(z["extfrag_index"]):
                extfrag.add_metric([*nz, str(order)], v / 1000)
            for order, v in enumerate(z["unusable_index"]):
                unusable.add_metric([*nz, str(order)], v / 1000)
        yield buddy
        yield from zoneinfo.values()
        yield from (boost, free, blocks, extfrag, unusable)
