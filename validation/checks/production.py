"""Production reports and papers: pageblock mixing in a fleet, scattered unmovable pages
against huge pages, and the field ratio of direct compaction success."""

from __future__ import annotations

import numpy as np

from validation import stats
from validation.checks import bands
from validation.checks.explain import compare, mean
from validation.model import Arm, Band, Check, Expect, Results, Source

# --- pageblock mixing on Meta's servers -----------------------------------------------

META_RFC = Source(
    title="[RFC PATCH 00/26] mm: reliable huge page allocator",
    author="Johannes Weiner (Meta), linux-mm", date="2023-04-18",
    url="http://mail.spinics.net/lists/linux-mm/msg336521.html")

META_NONMOVABLE_MEMORY = 7.0      # % of memory, "less than 7 % ... on average"
META_BLOCKS_HOLDING = 34.0        # % of 2M blocks
META_MOVABLE_MIXED = 77 / 701     # movable blocks with non-LRU pages, 20 min of build load


def _explain_mix(results: Results) -> list[str]:
    out = [compare(results, "nonmovable_memory_share", "non-movable share of memory"),
           compare(results, "blocks_holding_nonmovable_share",
                   "share of pageblocks holding non-movable pages"),
           compare(results, "blocks_nonmovable_label_share",
                   "share of pageblocks labelled unmovable/reclaimable"),
           compare(results, "movable_blocks_mixed_share",
                   "share of movable pageblocks holding non-movable pages"),
           compare(results, "extfrag_events", "extfrag fallbacks"),
           compare(results, "extfrag_claims", "fallbacks claiming the block")]
    events = mean(results, "v6.1", "extfrag_events")
    claims = mean(results, "v6.1", "extfrag_claims")
    if events and claims >= 0.9 * events:
        out.append(f"{claims:.0f} of {events:.0f} fallbacks claimed their whole block, so "
                   "the model keeps non-movable pages grouped in blocks of their own type: "
                   "nothing scatters them into movable blocks, whereas in production a third "
                   "of all blocks held some. Non-movable memory in the model comes from "
                   "the explicit slab and fork groups and from the kernel memory the "
                   "groups' activity implies (sim/kernelmem.py: page tables on anonymous "
                   "and THP faults, reclaimable slab with page-cache I/O, sk_buff heads "
                   "with network traffic, stacks and task structures on fork).")
    return out


PAGEBLOCK_MIX = Check(
    name="pageblock-mix",
    title="Pageblock mixing seen in production (Meta, pre-6.10 fallback rules)",
    sources=(META_RFC,),
    published=(
        f"In a broad sample of Meta servers, unmovable allocations made up less than "
        f"{META_NONMOVABLE_MEMORY:g} % of memory on average, yet occupied "
        f"{META_BLOCKS_HOLDING:g} % of the 2M blocks (a factor of "
        f"{META_BLOCKS_HOLDING / META_NONMOVABLE_MEMORY:.1f}), independent of uptime; "
        "after 20 minutes of build load under moderate pressure, 77 of 701 movable blocks "
        f"held non-LRU pages ({100 * META_MOVABLE_MIXED:.1f} %)."),
    experiment=(
        "Preset churn (a 2 GiB server: anonymous memory, page cache under reclaim, slab, "
        "fork's order-2/3 allocations, THP) on the v6.1 profile (the fallback rules Meta's "
        "kernels had). At the end, the census of every pageblock: blocks holding any "
        "non-movable (unmovable or reclaimable) page, against the share of memory those "
        "pages take."),
    arms={"v6.1": Arm("churn", ("kernel.profile=v6.1",))},
    expects=(
        Expect("share of pageblocks holding non-movable pages over the share of memory "
               "they take (x)",
               f"{META_BLOCKS_HOLDING:g} % of blocks / <{META_NONMOVABLE_MEMORY:g} % of "
               f"memory = {META_BLOCKS_HOLDING / META_NONMOVABLE_MEMORY:.1f}x (at least)",
               stats.level("v6.1", "blocks_per_memory_share"),
               bands.level(META_BLOCKS_HOLDING / META_NONMOVABLE_MEMORY, "published"),
               unit="x"),
        Expect("share of movable pageblocks holding non-movable pages",
               f"77 of 701 = {100 * META_MOVABLE_MIXED:.1f} %",
               stats.level("v6.1", "movable_blocks_mixed_share", 100.0),
               bands.level(100 * META_MOVABLE_MIXED, "published"), unit="%"),
    ),
    mechanism=(
        "where non-movable pages land: the fallback and claim rules in sim/buddy.py and "
        "sim/page_alloc.py, per-cpu list refills in sim/pcp.py, and which kernel "
        "allocations the workload causes (sim/workload.py, sim/kernelmem.py)."),
    context=("nonmovable_memory_share", "blocks_holding_nonmovable_share",
             "blocks_per_memory_share", "movable_blocks_mixed_share",
             "blocks_nonmovable_label_share", "extfrag_events"),
    explain=_explain_mix,
)

# --- scattered unmovable pages against huge pages --------------------------------------

ILLUMINATOR = Source(
    title="Making Huge Pages Actually Useful (ASPLOS '18; the Illuminator paper)",
    author="Ashish Panwar, Aravinda Prasad, K. Gopinath", date="2018-03",
    url="https://doi.org/10.1145/3173162.3173203")


def _explain_scattered(results: Results) -> list[str]:
    out = _scattered_figures(results)
    ratio_ = (mean(results, "with kmalloc", "migrated_per_thp")
              / mean(results, "without kmalloc", "migrated_per_thp"))
    if ratio_ < 2:
        out.append(f"the scattered unmovable pages raise the pages migrated per huge page "
                   f"only {ratio_:.2f}x: compaction in the model rarely wastes work on blocks "
                   "it cannot free, or the pages do not land in the blocks it scans.")
    pages = mean(results, "with kmalloc", "nonmovable_pages")
    blocks = mean(results, "with kmalloc", "blocks_holding_nonmovable")
    if pages and blocks and pages / blocks > 64:
        out.append(f"the {pages:.0f} non-movable pages sit in {blocks:.0f} pageblocks "
                   f"({pages / blocks:.0f} per block): grouped by the fallback rules rather "
                   "than scattered a few per block as the paper found on loaded machines, "
                   "so few blocks are left that compaction cannot free.")
    return out


def _scattered_figures(results: Results) -> list[str]:
    return [compare(results, "thp_success", "THP fault success (share)"),
            compare(results, "pgmigrate_success", "pages migrated"),
            compare(results, "migrated_per_thp", "pages migrated per THP obtained"),
            compare(results, "wasted_migrations",
                    "blocks migrated from that did not become free"),
            compare(results, "blocks_holding_nonmovable",
                    "pageblocks holding non-movable pages at the end"),
            compare(results, "unusable_index_order9", "unusable free index at order 9")]


SCATTERED = Check(
    name="scattered-unmovable",
    title="Scattered unmovable pages against order-9 contiguity",
    sources=(ILLUMINATOR,),
    published=(
        "On a loaded Linux machine, unmovable kernel pages falling back into movable "
        "pageblocks leave a few unmovable pages in blocks compaction then tries to free: "
        "it migrates their movable pages and still cannot form a huge page (useless "
        "migration, CPU time and latency spikes). Tracking unmovable pages so that "
        "compaction skips such blocks (Illuminator) cut the cost of compaction by up to "
        "99 %, i.e. in stock Linux most compaction work in that state was wasted. The "
        "paper gives no single success-rate figure, so the direction is checked for THP "
        "success and a magnitude only for the work per huge page."),
    experiment=(
        "Preset scattered-unmovable (a full, churning 1 GiB machine with madvised THP "
        "faults) with its trickle of never-freed unmovable slab ('kmalloc', ~1 % of RAM "
        "from t=2 s) and without it (the group's rate set to 1e-6/s: no page in 40 s). "
        "v6.10 profile."),
    arms={"without kmalloc": Arm("scattered-unmovable", ("workload[2].rate=0.000001",)),
          "with kmalloc": Arm("scattered-unmovable")},
    expects=(
        Expect("pages migrated per THP obtained, with over without the scattered pages (x)",
               "up to 100x more compaction work (cost cut by up to 99 % once skipped)",
               stats.ratio("without kmalloc", "with kmalloc", "migrated_per_thp"),
               Band(2.0, 100.0 * bands.FACTOR, "published: up to 100x, and most work wasted "
                    "(at least 2x); x2 on the upper bound"),
               unit="x"),
        Expect("THP fault success, relative change with the scattered pages",
               "lower (direction)",
               stats.change("without kmalloc", "with kmalloc", "thp_success"),
               bands.direction(False, "published"), unit="%"),
    ),
    mechanism=(
        "isolate_migratepages_block and the skip bits in sim/compaction.py (what makes a "
        "block worth scanning), migration failures in sim/migrate.py, where unmovable "
        "steals land in sim/buddy.py."),
    context=("thp_success", "pgmigrate_success", "migrated_per_thp", "compact_stall",
             "compact_success", "wasted_migrations", "blocks_holding_nonmovable"),
    explain=_explain_scattered,
)

# --- field ratio of direct compaction success -----------------------------------------

COLLECTD = Source(
    title="collectd issue #1307 'vmem plugin: fix pgsteal for newer kernels' (a "
          "production host's /proc/vmstat, Linux 4.2.3)",
    author="shastah", date="2015-10-15", url="https://github.com/collectd/collectd/issues/1307")
HOTSOS = Source(
    title="hotsos issue #526 'Improve out-of-memory/fragmentation warning' (a production "
          "node: 'Memory compaction failures are at 989% of successes')",
    author="pponnuvel", date="2023-02-17", url="https://github.com/canonical/hotsos/issues/526")
PCP_SHARD = Source(
    title="validation/data/pcp-qa-archive-20201109-b-vmstat.csv (host 'shard', 16 GB, "
          "nearly full; PCP QA archive)",
    author="performancecopilot/pcp", date="2020-11-08",
    url="https://github.com/performancecopilot/pcp/tree/main/qa/archives")

# compact_success / compact_stall in each field report.
FIELD_SUCCESS = {
    "collectd #1307 (4.2.3)": 9318 / 6559780,
    "hotsos #526": 1 / (1 + 9.89),
}


def field_success_ratios() -> dict[str, float]:
    from validation.captures import vmstat_last
    v = vmstat_last()
    return {**FIELD_SUCCESS,
            "PCP 'shard' capture": v["compact_success"] / v["compact_stall"]}


def _field_band():
    ratios = [100 * r for r in field_success_ratios().values()]
    return bands.span(min(ratios), max(ratios), "field reports", cap=100.0)


def _pooled(*arms: str):
    def values(results: Results) -> np.ndarray:
        return np.concatenate([stats.figures(results, arm, "compact_success_ratio") * 100
                               for arm in arms])
    return values


def _explain_field(results: Results) -> list[str]:
    field = field_success_ratios()
    listed = ", ".join(f"{k} {100 * v:.2f} %" for k, v in field.items())
    out = [f"field compact_success/compact_stall: {listed}",
           compare(results, "compact_stall"), compare(results, "compact_success"),
           compare(results, "compact_success_ratio")]
    out += [compare(results, "direct_runs", "direct compact_zone runs"),
            compare(results, "direct_runs_scanners_met_share",
                    "share of them ending with the scanners met (COMPLETE / PARTIAL_SKIPPED)"),
            compare(results, "pgmigrate_fail")]
    got = np.nanmean(_pooled(*results)(results)) / 100
    if got > 2 * max(field.values()):
        met = max(mean(results, arm, "direct_runs_scanners_met_share") for arm in results)
        out.append(f"direct compaction succeeds on {100 * got:.0f} % of stalls, "
                   f"{got / max(field.values()):.0f}x the highest field ratio. The counting "
                   "is the kernel's (__alloc_pages_direct_compact counts a stall for every "
                   "call not SKIPPED, deferred ones included, and a success only when the "
                   "allocation then gets its page), but the presets give it little to "
                   "fail on: at most "
                   f"{100 * met:.0f} % of direct runs end with the scanners met, the outcome "
                   "that defers the zone and, in the field, turns most later stalls into "
                   "deferred failures (compaction_deferred skips up to 63 of 64 calls at "
                   "defer_shift 6); pages almost never fail migration (the presets' groups "
                   "pin, dirty or lock almost none of their pages), non-movable pages stay "
                   "grouped in their own blocks, and nearly every stall is a madvised THP "
                   "fault, "
                   "where field stalls also come from khugepaged and order-1..3 kernel "
                   "allocations. A workload departure, not a counting one.")
    return out


FIELD_RATIOS = Check(
    name="field-ratios",
    title="Field ratio of direct compaction success (compact_success / compact_stall)",
    sources=(COLLECTD, HOTSOS, PCP_SHARD),
    published=(
        "Production /proc/vmstat reports show direct compaction failing far more often "
        "than it succeeds: " + ", ".join(f"{k}: {100 * v:.2f} %" for k, v in
                                         FIELD_SUCCESS.items())
        + ", and the PCP capture of a nearly full 16 GB host: 2 of 24 stalls (8.3 %)."),
    experiment=(
        "The loaded presets with direct compaction at their defaults (v6.10): "
        "scattered-unmovable (a full, churning server) and zram-movable-ops (a phone "
        "swapping to zram); compact_success / compact_stall of every run, pooled."),
    arms={"scattered-unmovable": Arm("scattered-unmovable"),
          "zram-movable-ops": Arm("zram-movable-ops")},
    expects=(
        Expect("compact_success / compact_stall, pooled over the presets",
               "0.14 % .. 9.2 %",
               _pooled("scattered-unmovable", "zram-movable-ops"),
               _field_band, unit="%"),
    ),
    mechanism=(
        "when direct compaction runs and when it reports success: compaction_suitable, "
        "compact_finished and deferral in sim/compaction.py, the slow path's compaction "
        "priority loop in sim/slowpath.py, the source of unmovable memory in "
        "sim/workload.py."),
    context=("compact_stall", "compact_success", "compact_fail", "compact_success_ratio",
             "thp_fail_rate"),
    explain=_explain_field,
)

CHECKS = (PAGEBLOCK_MIX, SCATTERED, FIELD_RATIOS)
