"""The figures one run gives, as a flat dict of numbers (what the checks compare).

Taken the way a kernel engineer reads a machine: /proc/vmstat counters and ratios of
them, per-order allocation success and latency, `mm_page_alloc_extfrag` trace lines
(fallbacks: fragmenting or not, block claimed or not, fallback order), buddyinfo at the
end (unusable free index at pageblock order, share of free memory in orders 0-3), the
node's fragmentation score over time, and a census of what sits in each pageblock at
the end (like the block analyses of LKML reports: blocks holding non-movable pages,
movable blocks mixed with them). The census reads the memmap of the machine the run
built; a page's mobility is the migratetype of the GFP flags its owner allocates with
(`gfp_migratetype(kind_gfp(...))`), and boot-reserved memmap pages are left out, as
memblock reservations are not allocations.
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np

from compactsim.sim.config import PAGEBLOCK_ORDER, PageKind
from compactsim.sim.gfp import gfp_migratetype
from compactsim.sim.page import ALLOC, KIND_OF_CODE, PG_LRU, PG_MOVABLE_OPS
from compactsim.sim.pageblock import MigrateType
from compactsim.sim.workload import kind_gfp, task_pids

MAX_ORDER_STATE = ALLOC + 11          # allocated heads: ALLOC + order, order 0..10
UNKNOWN = -1

_EXTFRAG = re.compile(r"mm_page_alloc_extfrag: .*?alloc_order=(\d+) fallback_order=(\d+) "
                      r".*?alloc_migratetype=(\d+) fallback_migratetype=(\d+) "
                      r"fragmenting=(\d+) change_ownership=(\d+)")


def ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def vmstat_figures(v: dict[str, int]) -> dict[str, float]:
    thp = v.get("thp_fault_alloc", 0) + v.get("thp_fault_fallback", 0)
    return {
        **{k: float(x) for k, x in v.items()},
        "thp_success": ratio(v.get("thp_fault_alloc", 0), thp),
        "thp_fail_rate": ratio(v.get("thp_fault_fallback", 0), thp),
        "compact_success_ratio": ratio(v.get("compact_success", 0), v.get("compact_stall", 0)),
        "migrated_per_compact_success": ratio(v.get("pgmigrate_success", 0),
                                              v.get("compact_success", 0)),
        "migrated_per_thp": ratio(v.get("pgmigrate_success", 0), v.get("thp_fault_alloc", 0)),
    }


def allocation_figures(allocations: dict[str, dict]) -> dict[str, float]:
    out = {}
    for key, a in allocations.items():
        for field in ("attempts", "successes", "success_ratio", "mean_us", "p50_us", "p90_us",
                      "p99_us", "max_us"):
            if field in a:
                out[f"{key}.{field}"] = float(a[field])
        if "attempts" in a and "successes" in a:
            out[f"{key}.failures"] = float(a["attempts"] - a["successes"])
    return out


def extfrag_figures(trace: str, duration: float) -> dict[str, float]:
    """Counts of `mm_page_alloc_extfrag` lines: all, fragmenting (fallback below pageblock
    order), claiming the block (change_ownership=1), by fallback order, and per second."""
    rows = np.array([tuple(int(g) for g in m.groups()) for m in _EXTFRAG.finditer(trace)],
                    dtype=np.int64).reshape(-1, 6)
    n = len(rows)
    out = {"extfrag_events": float(n),
           "extfrag_per_s": n / duration if duration else math.nan,
           "extfrag_fragmenting": float(rows[:, 4].sum()) if n else 0.0,
           "extfrag_claims": float(rows[:, 5].sum()) if n else 0.0,
           "extfrag_unmovable_in_movable": float(
               ((rows[:, 2] == MigrateType.UNMOVABLE) & (rows[:, 3] == MigrateType.MOVABLE)).sum())
           if n else 0.0}
    out["extfrag_fragmenting_share"] = ratio(out["extfrag_fragmenting"], n)
    out["extfrag_below_pageblock_share"] = ratio(
        float((rows[:, 1] < PAGEBLOCK_ORDER).sum()) if n else 0.0, n)
    return out


def buddy_figures(free_by_order: list[list[int]], zone_names: list[str]) -> dict[str, float]:
    """Buddyinfo shape of the zones that are not DMA, summed (the zones under load): the
    unusable free index at pageblock order, its complement (the share of free memory in
    blocks of pageblock order and above) and the share in orders 0-3."""
    rows = [r for r, name in zip(free_by_order, zone_names) if not name.endswith("/DMA")]
    nr_free = np.sum(np.array(rows, dtype=np.int64), axis=0)
    pages = nr_free * (1 << np.arange(len(nr_free)))
    total = float(pages.sum())
    return {"free_pages_end": total,
            "unusable_index_order9": ratio(float(pages[:PAGEBLOCK_ORDER].sum()), total),
            "free_share_order9_up": ratio(float(pages[PAGEBLOCK_ORDER:].sum()), total),
            "free_share_order0_3": ratio(float(pages[:4].sum()), total)}


def mobility_table(cfg) -> np.ndarray:
    """Migratetype of each kind code's allocations (UNKNOWN where the kind gives none)."""
    table = np.full(256, UNKNOWN, dtype=np.int8)
    for code, kind in KIND_OF_CODE.items():
        if kind is PageKind.THP:
            table[code] = MigrateType.MOVABLE
            continue
        try:
            table[code] = gfp_migratetype(kind_gfp(cfg, kind, 0))
        except ValueError:
            table[code] = UNKNOWN
    return table


def census(m) -> dict[str, float]:
    """What sits in the pageblocks at the end: blocks by label, blocks holding non-movable
    (unmovable or reclaimable) pages, movable blocks mixed with them, and the share of
    memory those pages take. A kind with no GFP flags of its own (replayed traces) counts
    by its page flags: on the LRU or with movable_ops is movable, else unmovable."""
    mem = m.mem
    state = np.frombuffer(mem.pstate, dtype=np.uint8)
    heads = np.nonzero((state >= ALLOC) & (state < MAX_ORDER_STATE))[0]
    kinds = np.frombuffer(mem.kind, dtype=np.uint8)[heads]
    mobility = mobility_table(m.config)[kinds].astype(np.int64)
    unknown = mobility == UNKNOWN
    if unknown.any():
        flags = np.frombuffer(mem.flags, dtype=np.uint8)[heads[unknown]]
        mobility[unknown] = np.where(flags & (PG_LRU | PG_MOVABLE_OPS), MigrateType.MOVABLE,
                                     MigrateType.UNMOVABLE)
    reserved = ~np.isin(kinds, list(KIND_OF_CODE))           # boot reservations
    orders = (state[heads] - ALLOC).astype(np.int64)
    nonmovable = (mobility != MigrateType.MOVABLE) & ~reserved
    labels = np.frombuffer(m.pageblocks.mt, dtype=np.uint8)
    nr_blocks = len(labels)
    held = np.zeros(nr_blocks, dtype=bool)
    for pfn, order in zip(heads[nonmovable], orders[nonmovable]):
        first = pfn >> PAGEBLOCK_ORDER
        held[first:first + max(1, 1 << max(order - PAGEBLOCK_ORDER, 0))] = True
    movable_blocks = labels == MigrateType.MOVABLE
    managed = sum(z.managed_pages for z in m.zones)
    nonmovable_pages = float((1 << orders[nonmovable]).sum())
    return {
        "blocks": float(nr_blocks),
        "blocks_unmovable": float((labels == MigrateType.UNMOVABLE).sum()),
        "blocks_reclaimable": float((labels == MigrateType.RECLAIMABLE).sum()),
        "blocks_movable": float(movable_blocks.sum()),
        "blocks_nonmovable_label_share": ratio(float((labels == MigrateType.UNMOVABLE).sum()
                                                     + (labels == MigrateType.RECLAIMABLE).sum()),
                                               nr_blocks),
        "blocks_holding_nonmovable": float(held.sum()),
        "blocks_holding_nonmovable_share": ratio(float(held.sum()), nr_blocks),
        "movable_blocks_mixed": float((held & movable_blocks).sum()),
        "movable_blocks_mixed_share": ratio(float((held & movable_blocks).sum()),
                                            float(movable_blocks.sum())),
        "nonmovable_pages": nonmovable_pages,
        "nonmovable_memory_share": ratio(nonmovable_pages, managed),
        "blocks_per_memory_share": ratio(ratio(float(held.sum()), nr_blocks),
                                         ratio(nonmovable_pages, managed)),
    }


def guarded(group: str, make, *args) -> dict[str, float]:
    """One group of figures; if the model no longer offers what it reads, the group's
    figures are left out (the findings using them say "not measurable") and the
    reason goes to stderr, so the other groups and checks still run."""
    try:
        return make(*args)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        print(f"validation: {group} figures unavailable: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return {}


def fault_figures(fault_log: str, config) -> dict[str, float]:
    """Per THP group, from its tasks' thpscale-style "fault <pid> huge|base <us>" lines:
    the share of huge faults and the mean fault latency (what thpscale reports for the
    mapping it times)."""
    group_of = {pid: name for name, pids in task_pids(config).items() for pid in pids}
    faults: dict[str, list[tuple[bool, float]]] = {}
    for line in fault_log.splitlines():
        _, pid, size, latency = line.split()
        faults.setdefault(group_of[int(pid)], []).append((size == "huge", float(latency)))
    out = {}
    for name, rows in faults.items():
        out[f"fault/{name}.huge_share"] = sum(h for h, _ in rows) / len(rows)
        out[f"fault/{name}.mean_us"] = sum(t for _, t in rows) / len(rows)
    return out


def figures(result, machine) -> dict[str, float]:
    """Every figure of one run (`result` from `compactsim.sim.run.run`, the machine it
    built)."""
    s = result.summary
    out = vmstat_figures(s["vmstat"])
    out.update(guarded("allocation", allocation_figures, s["allocations"]))
    out.update(guarded("fault log", fault_figures, result.fault_log, result.config))
    out.update(guarded("extfrag", extfrag_figures, result.trace, s["sim_time_s"]))
    out.update(guarded("buddyinfo", buddy_figures, s["free_pages_by_order"],
                       s["machine"]["zones"]))
    comp = s.get("compaction", {})
    out["wasted_migrations"] = float(comp.get("wasted_migrations", 0))
    out["proactive_runs"] = float(comp.get("proactive_runs", 0))
    results = comp.get("results", {})
    for key, n in results.items():               # compact_zone runs by trigger/result
        out[f"compaction/{key}"] = float(n)
    direct = sum(n for k, n in results.items() if k.startswith("direct/"))
    out["direct_runs"] = float(direct)
    out["direct_runs_scanners_met_share"] = ratio(
        sum(results.get(f"direct/{r}", 0) for r in ("complete", "partial_skipped")), direct)
    scores = [v for row in result.series for k, v in row.items()
              if k.endswith("_fragmentation_score")]
    out["fragmentation_score_max"] = float(max(scores)) if scores else math.nan
    out["fragmentation_score_end"] = float(np.mean(s["fragmentation_score"]))
    trace = getattr(machine, "trace", None)
    out["trace_lines_lost"] = float(trace.entries_written - trace.capacity_lines
                                    if trace is not None
                                    and trace.entries_written > trace.capacity_lines else 0)
    out.update(guarded("pageblock census", census, machine))
    return out
