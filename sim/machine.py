"""Building the simulated machine: nodes, zones, the memmap and its cost.

Follows mm/mm_init.c / page_alloc.c boot-time setup in outline: zones are laid out per
node (DMA32 below Normal on node 0 when configured), the memmap (`struct page` array) is
reserved from the top of each node as memblock allocates it, everything else is freed to
the buddy lists as maximal blocks, watermarks, lowmem reserves and pcp sizes are
computed. `struct_page_bytes` gives the memmap cost of each movable-ops design, and the
machine's config carries the per-pfn step costs of its struct page
(`pageflags.memmap_costs`), so every mechanism pays them.
Simplified: no holes, no DMA zone, no kernel image or other boot reservations.
"""

from __future__ import annotations

import dataclasses
from array import array

import cython
import simpy

from compactsim.sim.buddy import BuddyPolicy, free_one_page
from compactsim.sim.config import (MAX_ORDER, PAGE_SIZE, MovableOps, PageFlagsConfig, PcpFree, PcpHigh,
                        SimConfig, ThpEnabled)
from compactsim.sim.pageflags import memmap_costs, page_flags_budget
from compactsim.sim.locks import SimLock
from compactsim.sim.page import ALLOC, KIND_RESERVED, MemMap
from compactsim.sim.pageblock import PAGEBLOCK_ORDER, Pageblocks
from compactsim.sim.pcp import PerCpuPages
from compactsim.sim.tracepoint import TraceBuffer
from compactsim.sim.vmstat import new_events
from compactsim.sim.zone import (WMARK_HIGH, Zone, calculate_min_free_kbytes, recommended_min_free_kbytes,
                      pageset_high, setup_per_zone_lowmem_reserve, setup_per_zone_wmarks,
                      words, zone_batchsize, zone_highsize)

# Per-node list heads: LRU lists (node-wide lruvec) and driver page lists.
LRU_ANON, LRU_FILE, LRU_UNEVICTABLE, LIST_ZSPAGES, LIST_BALLOON = range(5)
NR_NODE_LISTS = 5


def struct_page_bytes(base: int, design: MovableOps, flags: PageFlagsConfig | None = None) -> int:
    """sizeof(struct page) under a movable-ops design, after 16-byte alignment
    (CONFIG_HAVE_ALIGNED_STRUCT_PAGE), including `_last_cpupid` if page->flags is full."""
    return page_flags_budget(flags or PageFlagsConfig(), design, base).struct_page_bytes


@dataclasses.dataclass(slots=True)
class Node:
    """pg_data_t: a node's zones, CPUs and LRU lists."""

    node_id: int
    start_pfn: int
    nr_pages: int
    zones: list[Zone]
    cpus: list[int]
    lists: list[int]                    # list heads, indexed by LRU_ANON ...
    lru_lock: SimLock                   # the lruvec lock (per node since 4.8)
    lru_size: memoryview                # pages on each list: this node's row of
                                        # Machine.lru_sizes
    memmap_pages: int = 0


@cython.dataclasses.dataclass
@cython.cclass
class Machine:
    """The simulated hardware state every mechanism works on (no behaviour of its own)."""

    env: simpy.Environment
    config: SimConfig
    mem: MemMap
    pageblocks: Pageblocks
    nodes: list[Node]
    zones: list[Zone]
    policy: BuddyPolicy
    min_free_kbytes: int
    struct_page_size: int
    cpu_node: list[int]
    events: dict[str, int]              # /proc/vmstat event counters
    trace: TraceBuffer | None           # tracepoints, when any are enabled
    # Every node's list heads and list sizes in one table, row nid, column LRU_ANON ...
    # (`Node.lists`, `Node.lru_size` are its rows): the per-page paths index it by
    # nid * NR_NODE_LISTS + list.
    lru_heads: array
    lru_sizes: array
    zonelists: list[list[Zone]] = cython.dataclasses.field(default_factory=list)  # per node
    # Pages migration moved, by the kind code they had (sim/page.py KIND_CODE).
    migrated: memoryview = cython.dataclasses.field(default_factory=lambda: words(256))
    # Derived, for the per-page paths: pages per node, and typed views of the list table.
    node_pages: int = cython.dataclasses.field(init=False, repr=False, compare=False)
    lru_heads_v: array = cython.dataclasses.field(init=False, repr=False, compare=False)
    lru_sizes_v: array = cython.dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.node_pages = self.nodes[0].nr_pages
        self.lru_heads_v = self.lru_heads
        self.lru_sizes_v = self.lru_sizes
        # Fallback order per node: the local node's zones, highest first, then the rest.
        for nid in range(len(self.nodes)):
            order = [nid] + [n for n in range(len(self.nodes)) if n != nid]
            self.zonelists.append([z for n in order for z in reversed(self.nodes[n].zones)])

    def zone_of(self, pfn: int) -> Zone:
        zones = self.nodes[pfn // self.node_pages].zones
        if len(zones) == 1 or pfn >= zones[1].zone_start_pfn:
            return zones[-1]
        return zones[0]

    @property
    def total_pages(self) -> int:
        return self.mem.nr_pages

    @property
    def managed_pages(self) -> int:
        return sum(z.managed_pages for z in self.zones)


def free_range(z: Zone, start: int, end: int, mt: int) -> None:
    """Free [start, end) to the buddy lists as maximal aligned blocks (memblock_free_all)."""
    pfn = start
    while pfn < end:
        order = MAX_ORDER
        while order and (pfn & ((1 << order) - 1) or pfn + (1 << order) > end):
            order -= 1
        free_one_page(z, pfn, order, mt, to_tail=True)
        pfn += 1 << order


def build_machine(cfg: SimConfig, env: simpy.Environment) -> Machine:
    mc = cfg.machine
    node_pages = mc.memory // PAGE_SIZE
    nr_pages = node_pages * mc.nodes
    heads = mc.nodes * (NR_NODE_LISTS + 2 * (MAX_ORDER + 1) * 4)
    mem = MemMap(nr_pages, heads)
    pageblocks = Pageblocks(nr_pages >> PAGEBLOCK_ORDER)
    budget = page_flags_budget(mc.page_flags, cfg.kernel.movable_ops, mc.struct_page_size)
    sps = budget.struct_page_bytes
    cfg = dataclasses.replace(cfg, costs=memmap_costs(cfg.costs, budget))
    cpus_per_node = mc.cpus // mc.nodes
    cpu_node = [min(c // cpus_per_node, mc.nodes - 1) for c in range(mc.cpus)]
    nodes: list[Node] = []
    zones: list[Zone] = []
    lru_sizes = array("q", bytes(8 * NR_NODE_LISTS * mc.nodes))
    for nid in range(mc.nodes):
        start = nid * node_pages
        spans = [("Normal", 1, start, node_pages)]
        if nid == 0 and mc.dma32:
            dma32 = mc.dma32 // PAGE_SIZE
            spans = [("DMA32", 0, start, dma32), ("Normal", 1, start + dma32, node_pages - dma32)]
        node_zones = [Zone(node_id=nid, zone_idx=idx, name=name, start_pfn=s, nr_pages=n,
                           mem=mem, lock=SimLock(env, f"zone_lock/{nid}/{name}"))
                      for name, idx, s, n in spans]
        memmap = -(-node_pages * sps // PAGE_SIZE)
        top = node_zones[-1]
        top.managed_pages -= memmap
        first_reserved = start + node_pages - memmap
        mem.pstate[first_reserved:start + node_pages] = bytes([ALLOC]) * memmap
        mem.kind[first_reserved:start + node_pages] = bytes([KIND_RESERVED]) * memmap
        nodes.append(Node(node_id=nid, start_pfn=start, nr_pages=node_pages, zones=node_zones,
                          cpus=[c for c in range(mc.cpus) if cpu_node[c] == nid],
                          lists=[mem.new_list() for _ in range(NR_NODE_LISTS)],
                          lru_lock=SimLock(env, f"lru_lock/{nid}"),
                          lru_size=memoryview(lru_sizes)[nid * NR_NODE_LISTS:
                                                         (nid + 1) * NR_NODE_LISTS],
                          memmap_pages=memmap))
        zones.extend(node_zones)
    policy = BuddyPolicy(claim_rule=cfg.kernel.claim_rule,
                         watermark_boost_factor=(cfg.tunables.watermark_boost_factor
                                                 if cfg.kernel.watermark_boost else 0),
                         pageblocks=pageblocks, steal_smallest=cfg.kernel.steal_smallest)
    for z in zones:
        end = z.zone_end_pfn
        if z is z_top(nodes, z):
            end -= nodes[z.node_id].memmap_pages
        free_range(z, z.zone_start_pfn, end, 1)
    managed = sum(z.managed_pages for z in zones)
    min_free_kbytes = cfg.tunables.min_free_kbytes
    scale, scaled = cfg.tunables.watermark_scale_factor, cfg.kernel.scaled_watermarks
    if min_free_kbytes is None:
        min_free_kbytes = calculate_min_free_kbytes(managed * 4)
        setup_per_zone_wmarks(zones, min_free_kbytes, scale, scaled)
        if cfg.tunables.thp_enabled is not ThpEnabled.NEVER:
            # khugepaged starts after boot: its cap is 5 % of nr_free_buffer_pages(),
            # managed pages above each zone's HIGH mark at that point.
            buffer_pages = sum(max(z.managed_pages - z.watermark[WMARK_HIGH], 0) for z in zones)
            min_free_kbytes = max(min_free_kbytes,
                                  recommended_min_free_kbytes(len(zones), buffer_pages))
    setup_per_zone_wmarks(zones, min_free_kbytes, scale, scaled)
    for node in nodes:
        setup_per_zone_lowmem_reserve(node.zones, cfg.tunables.lowmem_reserve_ratio)
    if cfg.kernel.pcp:
        for z in zones:
            batch = zone_batchsize(z.managed_pages, cfg.kernel.pcp_batch_max_kb)
            if cfg.kernel.pcp_high is PcpHigh.BATCH_X6:
                high = pageset_high(batch, cfg.tunables.percpu_pagelist_high_fraction,
                                    z.managed_pages)
            else:
                high = zone_highsize(z, batch, len(nodes[z.node_id].cpus),
                                     cfg.tunables.percpu_pagelist_high_fraction)
            z.pcp = PerCpuPages(mc.cpus, batch, high,
                                whole_list=cfg.kernel.pcp_free is PcpFree.WHOLE_LIST)
    return Machine(env=env, config=cfg, mem=mem, pageblocks=pageblocks, nodes=nodes,
                   zones=zones, policy=policy, min_free_kbytes=min_free_kbytes,
                   struct_page_size=sps, cpu_node=cpu_node, events=new_events(),
                   lru_heads=array("i", [h for n in nodes for h in n.lists]),
                   lru_sizes=lru_sizes,
                   trace=(TraceBuffer(cfg.sampling.trace_buffer, cfg.sampling.trace_events)
                          if cfg.sampling.trace_buffer and cfg.sampling.trace_events else None))


def z_top(nodes: list[Node], z: Zone) -> Zone:
    """The highest zone of `z`'s node (where that node's memmap lives)."""
    return nodes[z.node_id].zones[-1]
