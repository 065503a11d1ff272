"""The seed question: zsmalloc pages unmovable (before 4.8) against movable."""

from __future__ import annotations

from validation import stats
from validation.checks import bands
from validation.checks.explain import compare, mean
from validation.model import Arm, Check, Expect, Results, Source

JOONSOO = Source(
    title="Re: [RFC PATCH 3/3] mm: support active anti-fragmentation algorithm (the "
          "measurement quoted from Joonsoo Kim's patch)",
    author="Joonsoo Kim, quoted by Mel Gorman, LKML", date="2015-04-27",
    url="http://lkml.iu.edu/hypermail/linux/kernel/1504.3/01418.html")
MINCHAN = Source(
    title="[PATCH v1 00/19] Support non-lru page migration",
    author="Minchan Kim, LKML", date="2016-03-11",
    url="https://lkml.iu.edu/hypermail/linux/kernel/1603.1/03114.html", kernel="4.8")

MIXED_MOVABLE = 111.2 / 207      # "Number of mixed blocks (movable) DMA32: 111.2" of 207


def _explain_seed(results: Results) -> list[str]:
    out = _seed_figures(results)
    if all(mean(results, arm, "kernel_high_order/order3.success_ratio") == 1.0
           for arm in results):
        out.append("fork's order-3 allocations never fail in either design: the preset's "
                   "fork load finds order-3 blocks (or gets them by compaction and reclaim) "
                   "even with unmovable zspages in 3 of 4 movable blocks, where devices "
                   "with unmovable zram pages failed to fork.")
    return out


def _seed_figures(results: Results) -> list[str]:
    return [compare(results, "movable_blocks_mixed_share",
                    "share of movable pageblocks holding non-movable pages"),
            compare(results, "kernel_high_order/order3.success_ratio", "fork order-3 success"),
            compare(results, "kernel_high_order/order2.success_ratio", "fork order-2 success"),
            compare(results, "pgscan_direct"), compare(results, "pgsteal_kswapd"),
            compare(results, "thp_success", "THP fault success (share)"),
            compare(results, "extfrag_events", "extfrag fallbacks")]


ZSMALLOC = Check(
    name="zsmalloc-movable",
    title="Seed question: zsmalloc pages unmovable (pre-4.8) against movable (4.8+)",
    sources=(JOONSOO, MINCHAN),
    published=(
        "With zram swap on a 512 MB, 8-CPU machine after a kernel build with -j12 (page "
        f"owner on), 111.2 of 207 movable pageblocks ({100 * MIXED_MOVABLE:.0f} %) held "
        "unmovable or reclaimable pages: 'more than half of movable pageblock is tainted' "
        "(zsmalloc's pages were unmovable then). The non-LRU migration series (4.8) was "
        "motivated by the same: zram pages cannot be migrated, compaction cannot work, "
        "reclaim shrinks the working set and fork's order-2/3 allocations fail easily; it "
        "gives no figures, so those are checked for direction only."),
    experiment=(
        "Preset zram-movable-ops (a 1 GiB phone, zram of 512 MiB, apps' anonymous memory "
        "swapped to zsmalloc, fork order-2/3, THP) on v6.10 with kernel.movable_ops=NONE "
        "(zspages unmovable) and MAPPING_OPS (4.8+ non-LRU movable pages)."),
    arms={"NONE": Arm("zram-movable-ops", ("kernel.movable_ops=NONE",)),
          "MAPPING_OPS": Arm("zram-movable-ops", ("kernel.movable_ops=MAPPING_OPS",))},
    expects=(
        Expect("share of movable pageblocks holding non-movable pages, zsmalloc unmovable",
               f"111.2 of 207 = {100 * MIXED_MOVABLE:.1f} %",
               stats.level("NONE", "movable_blocks_mixed_share", 100.0),
               bands.level(100 * MIXED_MOVABLE, "published", cap=100.0), unit="%"),
        Expect("fork's order-3 allocation success, NONE -> MAPPING_OPS, relative change",
               "up: forks failed easily with unmovable zram pages (direction)",
               stats.change("NONE", "MAPPING_OPS", "kernel_high_order/order3.success_ratio"),
               bands.direction(True, "published"), unit="%"),
        Expect("direct reclaim scanning (pgscan_direct), NONE -> MAPPING_OPS, relative change",
               "down: reclaim shrank the working set instead of compacting (direction)",
               stats.change("NONE", "MAPPING_OPS", "pgscan_direct"),
               bands.direction(False, "published"), unit="%"),
    ),
    mechanism=(
        "zspage allocation flags per design and their migration (sim/zram.py, "
        "sim/migrate.py non-LRU movable pages), fallbacks of unmovable zspage allocations "
        "into movable blocks (sim/buddy.py), and reclaim into zram (sim/reclaim.py)."),
    context=("movable_blocks_mixed_share", "kernel_high_order/order3.success_ratio",
             "pgscan_direct", "extfrag_events", "thp_success", "nonmovable_memory_share"),
    explain=_explain_seed,
)

CHECKS = (ZSMALLOC,)
