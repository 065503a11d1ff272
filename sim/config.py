"""The frozen config tree of one run: machine, kernel profile and switches, tunables,
workload groups, costs, sampling and pacing.

Follows the kernel's sysctl table (`kernel/sysctl.c`, `mm/page_alloc.c`,
`mm/compaction.c`): tunables keep their `/proc/sys/vm` names, defaults and bounds and are
checked here, once; downstream code uses them as plain values. A kernel profile
(`kernel.profile`) fills in the mechanism switches of a release; any switch set in the
spec wins over the profile.

Entry points: `load_spec(path)`, `apply_overrides(raw, ["path=value", ...])` and
`config_from_dict(raw)`, which raises `ConfigError` listing every bad field.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from compactsim.sim.costs import Costs
from compactsim.sim.schema import ConfigError, FieldError, build, spec, to_plain
from compactsim.sim.units import parse_duration, parse_size

PAGE_SIZE = 4096
MAX_ORDER = 10                # MAX_PAGE_ORDER (6.8+): largest buddy block is 2^10 pages
PAGEBLOCK_ORDER = 9
MAX_GROUPS = 256              # workload groups in one spec
MAX_NAME = 64                 # characters of a workload group's name
MAX_COMPACT_MEMORY = 1000     # compact_memory (and zram_compact) times in one spec
MAX_TRACE_EVENTS = 64         # names in sampling.trace_events
MIN_PACE = 1e-3               # slowest pace above 0: 1 simulated ms per wall second
MAX_ORDER_BYTES = PAGE_SIZE << MAX_ORDER


class MovableOps(enum.Enum):
    """How non-LRU pages (zsmalloc, balloon) are made migratable."""

    NONE = "NONE"                                # before 4.8: zsmalloc pages unmovable
    PAGE_FLAG_CALLBACKS = "PAGE_FLAG_CALLBACKS"  # the 2015 proposal: PG_movable + 3 pointers
    MAPPING_OPS = "MAPPING_OPS"                  # 4.8-6.16: page->mapping | PAGE_MAPPING_MOVABLE
    PAGE_TYPE = "PAGE_TYPE"                      # 6.17: PG_movable_ops + page type


class ZsmallocLocking(enum.Enum):
    """The locks zsmalloc's page migration takes, by era (mm/zsmalloc.c `zs_page_migrate`)."""

    CLASS_LOCK = "CLASS_LOCK"          # 4.8-5.16: zspage rwlock, then size_class->lock
    MIGRATE_LOCK = "MIGRATE_LOCK"      # 5.17-6.1: pool->migrate_lock, class lock, zspage rwlock
    POOL_LOCK = "POOL_LOCK"            # 6.2-6.14: one pool->lock spinlock, zspage rwlock
    ZSPAGE_TRYLOCK = "ZSPAGE_TRYLOCK"  # 6.15+: pool rwlock, class lock, zspage write trylock


class ClaimRule(enum.Enum):
    """When a fallback allocation relabels (claims) the pageblock it took from
    (`steal_suitable_fallback` to 6.9, `try_to_claim_block` 6.10+; sim/buddy.py)."""

    FREE_COUNT = "FREE_COUNT"              # 4.4: free pages moved >= half a block
    IN_USE_COUNT = "IN_USE_COUNT"          # 4.12-6.9: free + compatible in-use pages >= half
    FREELIST_HYGIENE = "FREELIST_HYGIENE"  # 6.10+: claim whole or steal one page, remainders stay


class ContendedAbort(enum.Enum):
    """What async compaction does when a trylock fails (`compact_lock_irqsave`)."""

    IMMEDIATE = "IMMEDIATE"        # 4.4: COMPACT_CONTENDED_LOCK at once
    FINISH_BLOCK = "FINISH_BLOCK"  # 5.1+: take the lock anyway, finish the block, then abort


class PcpHigh(enum.Enum):
    """How a zone's per-cpu list `high` is sized."""

    BATCH_X6 = "BATCH_X6"      # up to 5.13: pageset_set_high_and_batch, high = 6 * batch
    ZONE_LOW = "ZONE_LOW"      # 5.14+: zone_highsize, the LOW watermark over the node's CPUs


class PcpFree(enum.Enum):
    """Which pages `free_pcppages_bulk` takes, from the tail (coldest end) of each list."""

    BATCH_FREE = "BATCH_FREE"  # to 5.17: round-robin from MOVABLE, batch_free pages a visit
    WHOLE_LIST = "WHOLE_LIST"  # 5.18+: each list emptied in turn, the freed page's list first


class TraceEra(enum.Enum):
    """Which kernel's tracepoint formats and compact_result names the trace uses."""

    V4_4 = "V4_4"        # include/trace/events/compaction.h before 4.6-4.8's changes
    V4_8 = "V4_8"        # 4.8+ (the 6.x formats)


class ThpDefrag(enum.Enum):
    """/sys/kernel/mm/transparent_hugepage/defrag."""

    ALWAYS = "always"
    DEFER = "defer"
    DEFER_MADVISE = "defer+madvise"
    MADVISE = "madvise"
    NEVER = "never"


class ThpEnabled(enum.Enum):
    """/sys/kernel/mm/transparent_hugepage/enabled."""

    ALWAYS = "always"
    MADVISE = "madvise"
    NEVER = "never"


class PageKind(enum.Enum):
    """What a workload group allocates; decides GFP flags, migratetype and reclaimability."""

    FILE = "file"                      # page cache
    ANON = "anon"                      # anonymous memory
    THP = "thp"                        # transparent huge page faults
    SLAB_RECLAIMABLE = "slab_reclaimable"
    SLAB_UNMOVABLE = "slab_unmovable"
    KERNEL_HIGH_ORDER = "kernel_high_order"  # fork's order-2/3 stacks and task structs
    NETBUF = "netbuf"                  # network receive buffers (GFP_ATOMIC)
    ZSMALLOC = "zsmalloc"              # zspages behind zram
    BALLOON = "balloon"                # virtio balloon inflation
    PINNED = "pinned"                  # long-term pinned user memory (FOLL_LONGTERM)
    REPLAY = "replay"                  # a captured kmem trace


class Arrival(enum.Enum):
    """How a group's requests arrive."""

    POISSON = "poisson"    # exponential gaps at `rate` per task
    PERIODIC = "periodic"  # fixed gaps at `rate` per task
    BURST = "burst"        # `burst` requests back to back every `burst_interval`
    FILL = "fill"          # as fast as possible up to `fill_fraction` of memory, then poisson


class Lifetime(enum.Enum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"
    UNIFORM = "uniform"        # uniform on [0, 2*mean]
    LOGNORMAL = "lognormal"    # with `sigma`
    FOREVER = "forever"        # freed only by reclaim or never


class ZramAlgorithm(enum.Enum):
    LZ4 = "lz4"
    LZO = "lzo"
    ZSTD = "zstd"


class TraceFormat(enum.Enum):
    AUTO = "auto"
    FTRACE = "ftrace"
    BABELTRACE = "babeltrace"


def _duration(**kw: Any) -> Any:
    return spec(parse=parse_duration, **kw)


def _size(**kw: Any) -> Any:
    return spec(parse=parse_size, **kw)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PageFlagsConfig:
    """The kernel build's widths that share `page->flags` (page-flags-layout.h)."""

    nr_pageflags: int = spec(24, lo=16, hi=40, doc="NR_PAGEFLAGS before the design adds")
    nodes_shift: int = spec(6, lo=0, hi=10, doc="CONFIG_NODES_SHIFT (10 with MAXSMP)")
    zones_width: int = spec(3, lo=0, hi=3, doc="ZONES_WIDTH (3 with DMA, DMA32, Normal, "
                            "Movable, Device)")
    sparsemem_vmemmap: bool = spec(True, doc="no section bits in page->flags")
    section_width: int = spec(0, lo=0, hi=20, doc="SECTIONS_WIDTH without vmemmap")
    lru_gen_width: int = spec(3, lo=0, hi=4, doc="MGLRU generation bits (0 without MGLRU)")
    kasan_tag_width: int = spec(0, lo=0, hi=8, doc="8 with arm64 KASAN tag modes")
    numa_balancing: bool = spec(True, doc="LAST_CPUPID bits are wanted")
    nr_cpus_bits: int = spec(13, lo=1, hi=13, doc="order_base_2(CONFIG_NR_CPUS)")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MachineConfig:
    """The simulated hardware: nodes of equal size, zones, CPUs and a zram device."""

    nodes: int = spec(1, lo=1, hi=64, doc="NUMA nodes, equal memory each")
    memory: int = _size(default=1 << 30, lo=64 << 20, hi=4 << 40, doc="bytes of RAM per node")
    dma32: int = _size(default=0, lo=0, hi=4 << 30,
                       doc="bytes of node 0 in a DMA32 zone below Normal (0: Normal only)")
    cpus: int = spec(4, lo=1, hi=1024, doc="CPUs, spread evenly over the nodes")
    zram: int = _size(default=0, lo=0, hi=4 << 40, doc="zram disksize in bytes (0: no zram)")
    zram_algorithm: ZramAlgorithm = spec(ZramAlgorithm.LZ4)
    zram_compression_ratio: float = spec(3.0, lo=1.0, hi=16.0,
                                         doc="uncompressed / compressed size of anon pages")
    zram_size_sigma: float = spec(0.5, lo=0.0, hi=3.0,
                                  doc="spread (lognormal sigma) of compressed sizes around "
                                  "4096 / zram_compression_ratio")
    struct_page_size: int = spec(64, lo=32, hi=256,
                                 doc="sizeof(struct page) before the movable-ops design adds")
    page_flags: PageFlagsConfig = spec(default_factory=lambda: PageFlagsConfig())

    def check(self, path: str) -> list[FieldError]:
        errs = []
        for name in ("memory", "dma32"):
            value = getattr(self, name)
            if value % MAX_ORDER_BYTES:
                errs.append(FieldError(f"{path}.{name}",
                                       "must be a multiple of 4MiB (one order-10 block)"))
        if self.dma32 >= self.memory and self.dma32:
            errs.append(FieldError(f"{path}.dma32", "must be smaller than machine.memory"))
        if self.cpus < self.nodes:
            errs.append(FieldError(f"{path}.cpus", "needs at least one CPU per node"))
        return errs


# Mechanism switches of each release (docs/model.md names the change behind each). A
# profile fills in the switches a spec leaves out.
_V4_4 = dict(claim_rule="FREE_COUNT", watermark_boost=False, scaled_watermarks=False,
             alloc_nofragment=False, movable_ops="NONE", pcp=True, compaction=True,
             kcompactd=False, compact_priorities=False, compaction_capture=False,
             fast_search=False, proactive_compaction=False, migrate_batching=False,
             contended_abort="IMMEDIATE", sync_light_isolates_writeback=True,
             zsmalloc_locking="CLASS_LOCK", vmap_stack=False,
             pcp_batch_max_kb=512, pcp_high="BATCH_X6", pcp_free="BATCH_FREE",
             steal_smallest=False,
             sync_light_io_nowait=False, trace_format="V4_4")
PROFILES: dict[str, dict[str, Any]] = {
    "v4.4": _V4_4,
    "v4.8": {**_V4_4, "scaled_watermarks": True, "movable_ops": "MAPPING_OPS",
             "trace_format": "V4_8",
             "kcompactd": True, "compact_priorities": True,
             "sync_light_isolates_writeback": False},
    "v4.12": {**_V4_4, "scaled_watermarks": True, "movable_ops": "MAPPING_OPS",
              "trace_format": "V4_8",
              "kcompactd": True, "compact_priorities": True, "claim_rule": "IN_USE_COUNT",
              "sync_light_isolates_writeback": False, "vmap_stack": True},
}
PROFILES["v5.0"] = {**PROFILES["v4.12"], "watermark_boost": True, "alloc_nofragment": True,
                    "pcp_batch_max_kb": 1024}
PROFILES["v5.9"] = {**PROFILES["v5.0"], "compaction_capture": True, "fast_search": True,
                    "proactive_compaction": True, "contended_abort": "FINISH_BLOCK"}
PROFILES["v6.1"] = {**PROFILES["v5.9"], "zsmalloc_locking": "MIGRATE_LOCK",
                    "pcp_high": "ZONE_LOW", "pcp_free": "WHOLE_LIST"}
PROFILES["v6.10"] = {**PROFILES["v6.1"], "migrate_batching": True,
                     "claim_rule": "FREELIST_HYGIENE", "zsmalloc_locking": "POOL_LOCK",
                     "sync_light_io_nowait": True}
PROFILES["v6.17"] = {**PROFILES["v6.10"], "movable_ops": "PAGE_TYPE",
                     "zsmalloc_locking": "ZSPAGE_TRYLOCK", "steal_smallest": True}
DEFAULT_PROFILE = "v6.10"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KernelConfig:
    """The kernel release being modelled and its mechanism switches."""

    profile: str = spec(DEFAULT_PROFILE, doc="named release preset: " + ", ".join(PROFILES))
    movable_ops: MovableOps = spec(MovableOps.MAPPING_OPS,
                                   doc="how zsmalloc/balloon pages are made movable")
    claim_rule: ClaimRule = spec(ClaimRule.FREELIST_HYGIENE,
                                 doc="fallback block claim/steal rules")
    watermark_boost: bool = spec(True, doc="boost_watermark on fragmenting fallbacks (5.0+)")
    scaled_watermarks: bool = spec(True, doc="watermark_scale_factor gaps (4.6+); "
                                   "off: low=1.25*min, high=1.5*min as in 4.4")
    alloc_nofragment: bool = spec(True, doc="ALLOC_NOFRAGMENT when the preferred zone is "
                                  "Normal (5.0+)")
    pcp: bool = spec(True, doc="per-cpu order-0 page lists")
    compaction: bool = spec(True, doc="CONFIG_COMPACTION: direct compaction in the slow path")
    kcompactd: bool = spec(True, doc="a kcompactd thread per node (4.6+)")
    compact_priorities: bool = spec(True, doc="compaction priorities and should_compact_retry "
                                    "(4.8+); off: 4.4's async then sync-light")
    compaction_capture: bool = spec(True, doc="direct compactors capture the page they free (5.1+)")
    fast_search: bool = spec(True, doc="fast_find_migrateblock / fast_isolate_freepages (5.1+)")
    proactive_compaction: bool = spec(True, doc="kcompactd's proactive mode (5.9+)")
    migrate_batching: bool = spec(True, doc="migrate_pages batching and one TLB flush per "
                                  "batch (6.3+)")
    contended_abort: ContendedAbort = spec(ContendedAbort.FINISH_BLOCK,
                                           doc="async compaction on a contended lock")
    sync_light_isolates_writeback: bool = spec(False, doc="SYNC_LIGHT isolates pages under "
                                               "writeback (4.4); later only SYNC does")
    vmap_stack: bool = spec(True, doc="CONFIG_VMAP_STACK (x86-64 4.9+): kernel stacks are "
                            "order-0 vmalloc pages, not one order-2 block")
    zsmalloc_locking: ZsmallocLocking = spec(ZsmallocLocking.POOL_LOCK,
                                             doc="zsmalloc's locks against page migration; "
                                             "POOL_LOCK and later also have 10 % fullness "
                                             "groups and 8-page zspage chains (6.3+)")
    trace_format: TraceEra = spec(TraceEra.V4_8, doc="tracepoint formats and compact_result "
                                  "names: V4_4 (try_to_compact_pages mode=, 'partial') or "
                                  "V4_8 (priority=, 'success', 'partial_skipped')")
    sync_light_io_nowait: bool = spec(True, doc="6.5+: SYNC_LIGHT migration does not sleep "
                                      "on the lock of a page under read I/O (!uptodate)")
    pcp_batch_max_kb: int = spec(1024, lo=64, hi=1 << 20,
                                 doc="zone_batchsize's cap on a pcp batch: 512 KiB before "
                                 "4.19, 1 MiB since (batch 31 / 63 for zones >= 512 MiB)")
    pcp_high: PcpHigh = spec(PcpHigh.ZONE_LOW, doc="pcp high: 6 * batch (to 5.13) or "
                             "zone_highsize (5.14+; the 6.7+ auto-tuning is not modelled)")
    pcp_free: PcpFree = spec(PcpFree.WHOLE_LIST, doc="free_pcppages_bulk: BATCH_FREE "
                             "round-robin over the lists (to 5.17) or WHOLE_LIST, each list "
                             "emptied in turn starting with the freed page's (5.18+)")
    steal_smallest: bool = spec(False, doc="6.15+: a fallback that claims no block "
                                "(__rmqueue_claim) steals one page from the smallest suitable "
                                "block (__rmqueue_steal) rather than the largest")

    @staticmethod
    def defaults(raw: dict[str, Any], path: str, errors: list[FieldError]) -> dict[str, Any]:
        name = raw.get("profile", DEFAULT_PROFILE)
        if name not in PROFILES:
            errors.append(FieldError(f"{path}.profile",
                                     f"{name!r} is not a profile ({', '.join(PROFILES)})"))
            return raw
        return {**PROFILES[name], **raw}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tunables:
    """sysctls and sysfs knobs under their kernel names, with the kernel's defaults."""

    min_free_kbytes: int | None = spec(None, lo=128, hi=1 << 30,
                                       doc="vm.min_free_kbytes; unset: sqrt(lowmem_kbytes*16)")
    watermark_scale_factor: int = spec(10, lo=1, hi=3000, doc="vm.watermark_scale_factor")
    watermark_boost_factor: int = spec(15000, lo=0, hi=1 << 20, doc="vm.watermark_boost_factor")
    extfrag_threshold: int = spec(500, lo=0, hi=1000, doc="vm.extfrag_threshold")
    compaction_proactiveness: int = spec(20, lo=0, hi=100, doc="vm.compaction_proactiveness")
    swappiness: int = spec(60, lo=0, hi=200, doc="vm.swappiness")
    lowmem_reserve_ratio: int = spec(256, lo=1, hi=1 << 20,
                                     doc="vm.lowmem_reserve_ratio for DMA32 (Normal's is 32)")
    percpu_pagelist_high_fraction: int = spec(0, lo=0, hi=1 << 20,
                                              doc="vm.percpu_pagelist_high_fraction (0 or >= 8)")
    compact_unevictable_allowed: int = spec(1, lo=0, hi=1,
                                            doc="vm.compact_unevictable_allowed")
    thp_enabled: ThpEnabled = spec(ThpEnabled.ALWAYS, doc="transparent_hugepage/enabled")
    thp_defrag: ThpDefrag = spec(ThpDefrag.MADVISE, doc="transparent_hugepage/defrag")

    def check(self, path: str) -> list[FieldError]:
        if 0 < self.percpu_pagelist_high_fraction < 8:
            return [FieldError(f"{path}.percpu_pagelist_high_fraction", "must be 0 or at least 8")]
        return []


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LifetimeConfig:
    """How long an allocation lives before its owner frees it."""

    distribution: Lifetime = spec(Lifetime.EXPONENTIAL)
    mean: float = _duration(default=10.0, lo=0.0, hi=365 * 86400.0, doc="seconds")
    sigma: float = spec(1.0, lo=0.0, hi=10.0, doc="lognormal shape")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplayConfig:
    """A kmem trace to replay (ftrace text or babeltrace text)."""

    path: str = spec(doc="trace file")
    format: TraceFormat = spec(TraceFormat.AUTO)
    gfp_era: str = spec("4.4+", doc="bit layout of numeric gfp flags: 3.x or 4.4+")
    struct_page_size: int = spec(64, lo=16, hi=256, doc="for page pointers without pfn")
    time_scale: float = spec(1.0, lo=1e-6, hi=1e6, doc="simulated seconds per trace second")

    def check(self, path: str) -> list[FieldError]:
        if self.gfp_era not in ("3.x", "4.4+"):
            return [FieldError(f"{path}.gfp_era", f"{self.gfp_era!r} is not one of 3.x, 4.4+")]
        return []


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadGroup:
    """A group of identical allocating tasks."""

    name: str = spec(doc="unique within the spec, 1..64 printable characters")
    kind: PageKind = spec(PageKind.ANON)
    tasks: int = spec(1, lo=1, hi=4096)
    pattern: Arrival = spec(Arrival.POISSON)
    rate: float = spec(100.0, lo=0.0, hi=1e9, doc="requests per second per task")
    batch: int = spec(1, lo=1, hi=4096, doc="blocks allocated per request")
    burst: int = spec(1, lo=1, hi=1 << 20, doc="requests per burst (pattern burst)")
    burst_interval: float = _duration(default=1.0, lo=1e-6, hi=86400.0)
    fill_fraction: float = spec(0.9, lo=0.0, hi=1.0,
                                doc="pattern fill: share of memory in use before churning")
    order_mix: tuple[tuple[int, float], ...] = spec(((0, 1.0),), lo=0, hi=MAX_ORDER,
                                                    doc="order: weight")
    lifetime: LifetimeConfig = spec(default_factory=LifetimeConfig)
    dirty: float = spec(0.0, lo=0.0, hi=1.0, doc="share of pages dirty when allocated")
    writeback: float = spec(0.0, lo=0.0, hi=1.0, doc="share under writeback when allocated")
    locked: float = spec(0.0, lo=0.0, hi=1.0, doc="share locked by I/O when allocated")
    extra_ref: float = spec(0.0, lo=0.0, hi=1.0, doc="share holding an extra reference")
    mlocked: float = spec(0.0, lo=0.0, hi=1.0, doc="share mlocked (unevictable)")
    madvise: bool = spec(False, doc="THP: region has MADV_HUGEPAGE")
    unmap: float = spec(0.0, lo=0.0, hi=1.0, doc="THP: share of each huge page, from its start, "
                        "that its deadline unmaps (munmap of part of the mapping; the huge "
                        "page waits on the deferred split queue); the rest stays mapped")
    forks: float = spec(0.0, lo=0.0, hi=1e6, doc="forks per request: each allocates a kernel "
                        "stack, task_struct slab and page tables")
    implicit_kernel: bool = spec(True, doc="allocate the kernel memory the group's activity "
                                 "implies: page tables, slab, sk_buff heads, fork's stacks")
    start: float = _duration(default=0.0, lo=0.0, hi=365 * 86400.0)
    stop: float | None = _duration(default=None, lo=0.0, hi=365 * 86400.0)
    replay: ReplayConfig | None = spec(None, doc="kind replay: the trace")

    def check(self, path: str) -> list[FieldError]:
        errs = []
        if not 1 <= len(self.name) <= MAX_NAME:
            errs.append(FieldError(f"{path}.name", f"must be 1..{MAX_NAME} characters, got "
                                                   f"{len(self.name)}"))
        elif not self.name.isprintable():
            errs.append(FieldError(f"{path}.name", "must not hold control or other "
                                                   "non-printable characters"))
        if self.stop is not None and self.stop <= self.start:
            errs.append(FieldError(f"{path}.stop", "must be later than start"))
        if (self.kind is PageKind.REPLAY) != (self.replay is not None):
            errs.append(FieldError(f"{path}.replay", "is required with kind replay, and only then"))
        if self.kind is PageKind.THP and any(o != PAGEBLOCK_ORDER for o, _ in self.order_mix):
            errs.append(FieldError(f"{path}.order_mix", "THP faults are order 9"))
        if self.unmap and self.kind is not PageKind.THP:
            errs.append(FieldError(f"{path}.unmap", "only THP groups unmap part of a block"))
        if self.pattern is not Arrival.FILL and self.rate == 0:
            errs.append(FieldError(f"{path}.rate", "must be above 0 for this pattern"))
        return errs


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SamplingConfig:
    """What is recorded while the run goes."""

    interval: float = _duration(default=1.0, lo=1e-3, hi=86400.0,
                                doc="simulated seconds between snapshots")
    trace_buffer: int = spec(100_000, lo=0, hi=10_000_000, doc="lines kept (ring buffer)")
    trace_events: tuple[str, ...] = spec(("mm_page_alloc_extfrag",),
                                         max_items=MAX_TRACE_EVENTS,
                                         doc="tracepoints enabled")
    lifetime_tick: float = _duration(default=0.01, lo=1e-4, hi=10.0,
                                     doc="resolution of allocation lifetimes")


TRACE_EVENTS = ("mm_page_alloc", "mm_page_free", "mm_page_free_batched",
                "mm_page_alloc_zone_locked", "mm_page_pcpu_drain", "mm_page_alloc_extfrag",
                "mm_compaction_begin", "mm_compaction_end", "mm_compaction_isolate_migratepages",
                "mm_compaction_isolate_freepages",
                "mm_compaction_fast_isolate_freepages", "mm_compaction_migratepages",
                "mm_compaction_try_to_compact_pages", "mm_compaction_suitable",
                "mm_compaction_finished", "mm_compaction_deferred",
                "mm_compaction_defer_compaction", "mm_compaction_defer_reset",
                "mm_compaction_kcompactd_sleep", "mm_compaction_wakeup_kcompactd",
                "mm_compaction_kcompactd_wake", "mm_migrate_pages")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """One run: a pure function of this tree and the code version."""

    seed: int = spec(1, lo=0, hi=2**63 - 1)
    duration: float = _duration(default=60.0, lo=1e-3, hi=30 * 86400.0,
                                doc="simulated seconds")
    machine: MachineConfig = spec(default_factory=MachineConfig)
    kernel: KernelConfig = spec(default_factory=KernelConfig)
    tunables: Tunables = spec(default_factory=Tunables)
    workload: tuple[WorkloadGroup, ...] = spec((), max_items=MAX_GROUPS)
    costs: Costs = spec(default_factory=Costs)
    sampling: SamplingConfig = spec(default_factory=SamplingConfig)
    pace: float = spec(0.0, lo=0.0, hi=1e9,
                       doc=f"simulated seconds per wall second (0: as fast as possible, "
                           f"else at least {MIN_PACE:g})")
    compact_memory: tuple[float, ...] = spec((), item_parse=parse_duration, lo=0.0,
                                             max_items=MAX_COMPACT_MEMORY,
                                             doc="times of `echo 1 > /proc/sys/vm/compact_memory`")
    zram_compact: tuple[float, ...] = spec((), item_parse=parse_duration, lo=0.0,
                                           max_items=MAX_COMPACT_MEMORY,
                                           doc="times of `echo 1 > /sys/block/zram0/compact`")

    def check(self, path: str) -> list[FieldError]:
        errs = []
        for i, t in enumerate(self.compact_memory):
            if not 0 <= t <= self.duration:
                errs.append(FieldError(f"compact_memory[{i}]", "must be within the run's duration"))
        for i, t in enumerate(self.zram_compact):
            if not 0 <= t <= self.duration:
                errs.append(FieldError(f"zram_compact[{i}]", "must be within the run's duration"))
        seen = set()
        for i, group in enumerate(self.workload):
            if group.name in seen:
                errs.append(FieldError(f"workload[{i}].name", f"{group.name!r} is used twice"))
            seen.add(group.name)
        for i, name in enumerate(self.sampling.trace_events):
            if name not in TRACE_EVENTS:
                errs.append(FieldError(f"sampling.trace_events[{i}]",
                                       f"{name!r} is not one of {', '.join(TRACE_EVENTS)}"))
        if not self.workload:
            errs.append(FieldError("workload", "needs at least one group"))
        if 0 < self.pace < MIN_PACE:
            errs.append(FieldError("pace", f"must be 0 (as fast as possible) or {MIN_PACE:g}.."
                                           f"1e9 simulated seconds per wall second, got "
                                           f"{self.pace:g}"))
        return errs


def config_from_dict(raw: Mapping[str, Any]) -> SimConfig:
    """The validated tree, or `ConfigError` naming every bad field."""
    errors: list[FieldError] = []
    cfg = build(SimConfig, raw, "", errors)
    if errors:
        raise ConfigError(errors)
    return cfg


def config_to_dict(cfg: SimConfig) -> dict[str, Any]:
    """Plain data that `config_from_dict` turns back into an equal tree."""
    return to_plain(cfg)


def load_spec(path: str | Path) -> dict[str, Any]:
    """Raw spec data from a YAML or JSON file (YAML is read with the safe loader)."""
    text = Path(path).read_text()
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError([FieldError("spec", f"{path}: not valid YAML/JSON: {exc}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([FieldError("spec", f"{path}: the top level must be a map")])
    return data


_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def _split_path(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.split("."):
        m = _STEP.fullmatch(part)
        if not m:
            raise ValueError(f"{path!r} is not a field path (e.g. workload[1].rate)")
        steps.append(m.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return steps


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with each `path=value` set (value read as a YAML scalar or list)."""
    out = json.loads(json.dumps(raw, default=str)) if raw else {}
    errors = []
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep:
            errors.append(FieldError(item, "an override is path=value"))
            continue
        try:
            steps = _split_path(path.strip())
            value = yaml.safe_load(text) if text.strip() else None
        except (ValueError, yaml.YAMLError) as exc:
            errors.append(FieldError(path, str(exc)))
            continue
        node: Any = out
        for i, (step, nxt) in enumerate(zip(steps, steps[1:] + [None])):
            where = path if nxt is None else str(step)
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    errors.append(FieldError(path, f"index {step} is out of range"))
                    break
            elif not isinstance(node, dict):
                errors.append(FieldError(path, f"{where} is not a map"))
                break
            if nxt is None:
                node[step] = value
            else:
                if isinstance(step, str) and step not in node:
                    node[step] = [] if isinstance(nxt, int) else {}
                node = node[step]
    if errors:
        raise ConfigError(errors)
    return out
