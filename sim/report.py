"""The machine's state as the kernel's files print it, and the run's summary.

Builds the data for sim/procfs.py's renderers from a `Machine`: /proc/buddyinfo,
/proc/pagetypeinfo, /proc/zoneinfo, /proc/vmstat (gauges then events), debugfs
extfrag/extfrag_index and extfrag/unusable_index, and the show_free_areas per-zone line.
"""

from __future__ import annotations

import numpy as np

from compactsim.sim import procfs
from compactsim.sim.config import MAX_ORDER, PAGE_SIZE, PageKind
from compactsim.sim.machine import LRU_ANON, LRU_FILE, LRU_UNEVICTABLE, Machine
from compactsim.sim.page import KIND_CODE
from compactsim.sim.pageblock import MIGRATE_TYPES, MIGRATETYPE_NAMES, PAGEBLOCK_ORDER
from compactsim.sim.vmstat import VM_EVENTS
from compactsim.sim.zone import WMARK_HIGH, WMARK_LOW, WMARK_MIN, WMARK_PROMO


def zone_free(m: Machine) -> list[procfs.ZoneFree]:
    return [procfs.ZoneFree(z.node_id, z.name, tuple(z.nr_free)) for z in m.zones]


def pagetypeinfo(m: Machine) -> procfs.PagetypeInfo:
    free = tuple(procfs.PagetypeFree(z.node_id, z.name, MIGRATETYPE_NAMES[mt],
                                     tuple(z.nr_free_mt[o, mt] for o in range(MAX_ORDER + 1)))
                 for z in m.zones for mt in range(MIGRATE_TYPES))
    blocks = tuple(procfs.PagetypeBlocks(z.node_id, z.name,
                                         tuple(m.pageblocks.counts(z.zone_start_pfn,
                                                                   z.zone_end_pfn)))
                   for z in m.zones)
    return procfs.PagetypeInfo(PAGEBLOCK_ORDER, 1 << PAGEBLOCK_ORDER, MIGRATETYPE_NAMES,
                               free, blocks)


def kind_pages(m: Machine) -> dict[int, int]:
    """Pages allocated per owner kind (array scan: for snapshots, not hot paths). One
    boolean mask per order keeps the temporaries at a byte per page."""
    mem = m.mem
    state = np.frombuffer(mem.pstate, dtype=np.uint8)
    kinds = np.frombuffer(mem.kind, dtype=np.uint8)
    totals = np.zeros(256, dtype=np.int64)
    for order in range(MAX_ORDER + 1):
        heads = state == 64 + order
        if heads.any():
            totals += np.bincount(kinds[heads], minlength=256) << order
    return {k: int(v) for k, v in enumerate(totals[:16])}


def vmstat(m: Machine) -> dict[str, int]:
    """Gauges as the kernel prints them ahead of the events, then every event."""
    kp = kind_pages(m)
    code = KIND_CODE
    lru_anon = sum(n.lru_size[LRU_ANON] for n in m.nodes)
    lru_file = sum(n.lru_size[LRU_FILE] for n in m.nodes)
    unevictable = sum(n.lru_size[LRU_UNEVICTABLE] for n in m.nodes)
    gauges = {
        "nr_free_pages": sum(z.free_pages for z in m.zones),
        "nr_zone_inactive_anon": lru_anon, "nr_zone_inactive_file": lru_file,
        "nr_zone_unevictable": unevictable,
        "nr_zspages": kp[code[PageKind.ZSMALLOC]],
        "nr_inactive_anon": lru_anon, "nr_inactive_file": lru_file,
        "nr_unevictable": unevictable,
        "nr_file_pages": kp[code[PageKind.FILE]],
        "nr_anon_pages": kp[code[PageKind.ANON]] + kp[code[PageKind.THP]]
        + kp[code[PageKind.PINNED]],
        "nr_anon_transparent_hugepages": kp[code[PageKind.THP]] >> PAGEBLOCK_ORDER,
        "nr_slab_reclaimable": kp[code[PageKind.SLAB_RECLAIMABLE]],
        "nr_slab_unreclaimable": kp[code[PageKind.SLAB_UNMOVABLE]],
        "nr_kernel_stack": kp[code[PageKind.KERNEL_HIGH_ORDER]] * PAGE_SIZE // 1024,
        "nr_balloon_pages": kp[code[PageKind.BALLOON]],
    }
    return {**gauges, **{k: m.events[k] for k in VM_EVENTS}}


def zoneinfo(m: Machine) -> list[procfs.ZoneinfoZone]:
    out = []
    for z in m.zones:
        pagesets: tuple[procfs.Pageset, ...] = ()
        if z.pcp is not None:
            pagesets = tuple(procfs.Pageset(cpu=c, count=z.pcp.counts[c], high=z.pcp.high,
                                            batch=z.pcp.batch)
                             for c in m.nodes[z.node_id].cpus)
        out.append(procfs.build_zoneinfo_zone(
            node=z.node_id, zone=z.name, free=z.free_pages, boost=z.watermark_boost,
            min=z.watermark[WMARK_MIN], low=z.watermark[WMARK_LOW],
            high=z.watermark[WMARK_HIGH], promo=z.watermark[WMARK_PROMO],
            spanned=z.spanned_pages, present=z.present_pages, managed=z.managed_pages,
            protection=tuple(z.lowmem_reserve), start_pfn=z.zone_start_pfn,
            counters={"nr_free_pages": z.free_pages}, pagesets=pagesets))
    return out


def show_free_areas(m: Machine) -> str:
    return "".join(procfs.render_show_free_areas_line(z.nr_free_by_type(), node=z.node_id,
                                                      zone=z.name) + "\n"
                   for z in m.zones)


def procfs_files(m: Machine, counters: dict[str, int] | None = None) -> dict[str, str]:
    """File name -> text, as a kernel of this state would print them (`counters`: the
    /proc/vmstat values if already computed)."""
    zf = zone_free(m)
    return {
        "buddyinfo": procfs.render_buddyinfo(zf),
        "pagetypeinfo": procfs.render_pagetypeinfo(pagetypeinfo(m)),
        "zoneinfo": procfs.render_zoneinfo(zoneinfo(m)),
        "vmstat": procfs.render_vmstat(counters if counters is not None else vmstat(m)),
        "extfrag_index": procfs.render_extfrag_index(zf),
        "unusable_index": procfs.render_unusable_index(zf),
        "show_free_areas": show_free_areas(m),
    }

