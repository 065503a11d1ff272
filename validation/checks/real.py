"""Calibration against the real captures of validation/data/: buddyinfo shape and
pageblock mix of loaded machines, and the 6.17 extfrag/compaction capture."""

from __future__ import annotations

import numpy as np

from validation import captures, stats
from validation.checks import bands
from validation.checks.explain import compare
from validation.model import Arm, Check, Expect, Results, Source

PCP_ARCHIVES = Source(
    title="PCP QA archives 20201109-b, 20180416, pcp-zeroconf (pmlogger buddyinfo of "
          "loaded machines; validation/data/)",
    author="performancecopilot/pcp", date="2018-04 .. 2025-10",
    url="https://github.com/performancecopilot/pcp/tree/main/qa/archives")
PROC_DOC = Source(
    title="Documentation/filesystems/proc.rst, /proc/pagetypeinfo example "
          "(validation/data/)",
    author="Linux kernel documentation", date="(pre-4.4 kernel)",
    url="https://github.com/torvalds/linux/blob/master/Documentation/filesystems/proc.rst")
PLOT_FRAGMENTATION = Source(
    title="plot-fragmentation data/fragmentation_data_{simple,load}.json (6.17.0-rc4, eBPF "
          "extfrag and compaction events under mmtests thpcompact; validation/data/)",
    author="Luis Chamberlain (mcgrof/plot-fragmentation)", date="2025-09-03",
    url="https://github.com/mcgrof/plot-fragmentation", kernel="6.17")

LOADED = {"churn": Arm("churn"), "scattered-unmovable": Arm("scattered-unmovable")}


def _pooled(key: str, scale: float = 1.0):
    def values(results: Results) -> np.ndarray:
        return np.concatenate([stats.figures(results, arm, key) * scale for arm in results])
    return values


def _capture_span(key: str, source: str, cap: float):
    def band():
        got = [shape[key] * 100 for shape in captures.buddyinfo_shapes().values()]
        return bands.span(min(got), max(got), source, cap=cap)
    return band


def _explain_buddy(results: Results) -> list[str]:
    real = "; ".join(f"{name.removeprefix('pcp-qa-archive-').removesuffix('-buddyinfo.txt')}: "
                     f"order >= 9 {100 * s['free_share_order9_up']:.2f} %, orders 0-3 "
                     f"{100 * s['free_share_order0_3']:.1f} %"
                     for name, s in captures.buddyinfo_shapes().items())
    out = [f"captures: {real}",
           compare(results, "free_share_order9_up"), compare(results, "free_share_order0_3"),
           compare(results, "free_pages_end", "free pages at the end"),
           compare(results, "compact_daemon_wake")]
    high = np.nanmean(_pooled("free_share_order9_up")(results))
    if high > 0.05:
        out.append(f"at the end {100 * high:.0f} % of the model's free memory is in free "
                   "pageblocks, where the loaded machines have at most 0.55 %. They are "
                   "mostly blocks no allocation split during the run (in churn, seed 1, "
                   "only 3 frees merged up to pageblock order in 60 s): the allocator takes "
                   "the smallest free block first and kswapd keeps the low orders stocked, "
                   "so the last blocks left from boot survive a run of a minute, where real "
                   "machines had hours of uptime and shortages that split every block once "
                   "(order-0 frees then rarely merge back). The presets' length and "
                   "history depart, not a mechanism.")
    return out


BUDDYINFO = Check(
    name="buddyinfo-shape",
    title="Buddyinfo shape of loaded machines (real captures)",
    sources=(PCP_ARCHIVES,),
    published=(
        "Last buddyinfo sample of three loaded machines, over their non-DMA zones: a 16 GB "
        "host with ~290 MB free (20201109-b), a laptop after 4.5 hours of desktop use "
        "(20180416), a Fedora 42 / 6.16 machine (pcp-zeroconf). Free memory sits almost "
        "all below pageblock order: 0 to 0.55 % of it in blocks of order 9 and 10 (an "
        "unusable free index at order 9 of 99.5-100 %), and 23-88 % in orders 0-3."),
    experiment=(
        "The loaded presets at their defaults (v6.10): churn (a 2 GiB server) and "
        "scattered-unmovable (a full 1 GiB machine); buddyinfo of the non-DMA zones at the "
        "end of each run, pooled."),
    arms=LOADED,
    expects=(
        Expect("share of free memory in blocks of order 9 and 10 (100 % less the unusable "
               "free index at order 9)",
               "0 % .. 0.55 %",
               _pooled("free_share_order9_up", 100.0),
               _capture_span("free_share_order9_up", "captures", cap=100.0), unit="%"),
        Expect("share of free memory in orders 0-3",
               "23 % .. 88 %",
               _pooled("free_share_order0_3", 100.0),
               _capture_span("free_share_order0_3", "captures", cap=100.0), unit="%"),
    ),
    mechanism=(
        "how much free memory stays in high orders under load: kswapd's balance and "
        "high watermark (sim/reclaim.py), per-cpu list sizes (sim/pcp.py), kcompactd "
        "(sim/kcompactd.py), and the free/alloc patterns of the presets."),
    context=("free_share_order9_up", "free_share_order0_3", "free_pages_end",
             "compact_daemon_wake"),
    explain=_explain_buddy,
)


def _explain_mix(results: Results) -> list[str]:
    real = captures.pagetype_mix()
    return [f"capture: DMA32 {100 * real['nonmovable_label_share']:.1f} % of "
            f"{real['blocks']:.0f} pageblocks unmovable or reclaimable",
            compare(results, "blocks_nonmovable_label_share"),
            compare(results, "blocks_unmovable"), compare(results, "blocks_reclaimable"),
            compare(results, "nonmovable_memory_share")] + _few_kernel_pages(results)


def _few_kernel_pages(results: Results) -> list[str]:
    share = np.nanmean(_pooled("nonmovable_memory_share")(results))
    if share >= 0.03:
        return []
    return [f"non-movable (unmovable and reclaimable) pages are {100 * share:.1f} % of the "
            "model's memory: its kernel memory is only the presets' explicit slab and fork "
            "groups, so few blocks are claimed for it."]


def _mix_band():
    share = 100 * captures.pagetype_mix()["nonmovable_label_share"]
    return bands.level(share, "capture")


PAGETYPE_MIX = Check(
    name="pagetypeinfo-mix",
    title="Pageblock mix by label (real /proc/pagetypeinfo)",
    sources=(PROC_DOC,),
    published=(
        "The kernel documentation's /proc/pagetypeinfo of a running x86_64 machine: in "
        "DMA32 (~2 GB), 41 Unmovable, 6 Reclaimable, 967 Movable and 2 Reserve pageblocks: "
        "4.6 % of blocks unmovable or reclaimable."),
    experiment=(
        "The loaded presets at their defaults (churn, scattered-unmovable; v6.10): share "
        "of pageblocks labelled Unmovable or Reclaimable at the end, pooled."),
    arms=LOADED,
    expects=(
        Expect("share of pageblocks labelled Unmovable or Reclaimable",
               "47 of 1016 = 4.6 %",
               _pooled("blocks_nonmovable_label_share", 100.0), _mix_band, unit="%"),
    ),
    mechanism=(
        "how many blocks fallbacks claim for unmovable and reclaimable allocations "
        "(sim/buddy.py, sim/page_alloc.py) and how much kernel memory the workloads "
        "allocate (sim/workload.py)."),
    context=("blocks_nonmovable_label_share", "blocks_unmovable", "blocks_reclaimable",
             "nonmovable_memory_share"),
    explain=_explain_mix,
)


def _extfrag_span(key: str, cap: float, scale: float = 1.0):
    def band():
        got = [c[key] * scale for c in captures.extfrag_captures().values()]
        return bands.span(min(got), max(got), "captures", cap=cap)
    return band


def _explain_617(results: Results) -> list[str]:
    real = "; ".join(f"{'load' if 'load' in n else 'simple'}: {c['extfrag_per_s']:.1f} "
                     f"fallbacks/s, {100 * c['extfrag_below_pageblock_share']:.0f} % below "
                     f"order 9, compaction success {100 * c['compaction_success_share']:.0f} %"
                     for n, c in captures.extfrag_captures().items())
    return [f"captures: {real}",
            compare(results, "extfrag_per_s", "fallbacks per second"),
            compare(results, "extfrag_below_pageblock_share", "share from below order 9"),
            compare(results, "extfrag_claims", "fallbacks claiming the block"),
            compare(results, "compact_success_ratio")] + _no_fallbacks(results)


def _no_fallbacks(results: Results) -> list[str]:
    if any(stats.figures(results, arm, "extfrag_events").sum() for arm in results):
        return []
    return ["no run made a single fallback: every allocation of the preset is movable "
            "(anonymous memory, page cache, THP) and finds movable blocks, whereas the "
            "capture's fallbacks were mostly order-0 (1330 of 1514) between unmovable and "
            "movable blocks: on the real machine kernel allocations made by the workload "
            "mix with movable ones."]


EXTFRAG_6_17 = Check(
    name="extfrag-6.17",
    title="6.17 fallbacks and order-9 compaction outcomes (real capture)",
    sources=(PLOT_FRAGMENTATION,),
    published=(
        "Two eBPF captures on 6.17.0-rc4 running mmtests thpcompact, alone (108 s) and "
        "with compaction, mmap and dd stress (135 s): 1514 and 269 mm_page_alloc_extfrag "
        "fallbacks (14.0 and 2.0 per second), of which 94 % and 64 % came from blocks "
        "below pageblock order; 42 % and 36 % of order-9 compactions succeeded."),
    experiment=(
        "Preset thpscale (the mmtests THP fault benchmark thpcompact is derived from) on "
        "the v6.17 profile: mm_page_alloc_extfrag lines and compact_success / "
        "compact_stall."),
    arms={"v6.17": Arm("thpscale", ("kernel.profile=v6.17",))},
    expects=(
        Expect("fallbacks per second", "2.0 .. 14.0 /s",
               stats.level("v6.17", "extfrag_per_s"),
               _extfrag_span("extfrag_per_s", cap=float("inf")), unit="/s"),
        Expect("share of fallbacks from blocks below pageblock order", "64 % .. 94 %",
               stats.level("v6.17", "extfrag_below_pageblock_share", 100.0),
               _extfrag_span("extfrag_below_pageblock_share", cap=100.0, scale=100.0),
               unit="%"),
        Expect("order-9 direct compaction success (compact_success / compact_stall)",
               "36 % .. 42 %",
               stats.level("v6.17", "compact_success_ratio", 100.0),
               _extfrag_span("compaction_success_share", cap=100.0, scale=100.0), unit="%"),
    ),
    mechanism=(
        "the 6.15+ fallback choice (smallest suitable block, claim or single-page steal) "
        "in sim/buddy.py and sim/page_alloc.py, and direct compaction's outcome in "
        "sim/compaction.py."),
    context=("extfrag_events", "extfrag_per_s", "extfrag_below_pageblock_share",
             "extfrag_claims", "compact_stall", "compact_success_ratio"),
    explain=_explain_617,
)

CHECKS = (BUDDYINFO, PAGETYPE_MIX, EXTFRAG_6_17)
