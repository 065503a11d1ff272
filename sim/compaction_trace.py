"""Tracepoint formats of the compaction and migrate systems (include/trace/events/
compaction.h and migrate.h), as fields text for `TraceBuffer.emit`.

Two eras: 4.8+ (the 6.x formats and `enum compact_result` names) and 4.4, whose
`mm_compaction_try_to_compact_pages` printed `gfp_mask=0x%x mode=%d` (the migrate mode;
priorities came in 4.8, flag names in 4.6) and whose `COMPACTION_STATUS` table knew
neither `partial_skipped` (4.7: a run whose scanners met was `complete`) nor `success`
(4.8: a run that freed a suitable page was `partial`).
"""

from __future__ import annotations

from compactsim.sim import tracepoint as tp

COMPACTION_STATUS = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page",
                     "continue", "complete", "partial_skipped", "contended", "success")
# The same results (indexed by the 6.x enum) as 4.4 printed them.
COMPACTION_STATUS_4_4 = ("not_suitable_zone", "skipped", "deferred", "no_suitable_page",
                         "continue", "complete", "complete", "contended", "partial")
MIGRATE_MODE_NAMES = ("MIGRATE_ASYNC", "MIGRATE_SYNC_LIGHT", "MIGRATE_SYNC")


def status_name(result: int, era44: bool = False) -> str:
    return (COMPACTION_STATUS_4_4 if era44 else COMPACTION_STATUS)[int(result)]


def fmt_begin(zone_start: int, migrate_pfn: int, free_pfn: int, zone_end: int,
              sync: bool) -> str:
    return (f"zone_start=0x{zone_start:x} migrate_pfn=0x{migrate_pfn:x} free_pfn=0x{free_pfn:x} "
            f"zone_end=0x{zone_end:x}, mode={'sync' if sync else 'async'}")


def fmt_end(zone_start: int, migrate_pfn: int, free_pfn: int, zone_end: int, sync: bool,
            status: int, era44: bool = False) -> str:
    return fmt_begin(zone_start, migrate_pfn, free_pfn, zone_end, sync) + \
        f" status={status_name(status, era44)}"


def fmt_isolate(start: int, end: int, nr_scanned: int, nr_taken: int) -> str:
    return f"range=(0x{start:x} ~ 0x{end:x}) nr_scanned={nr_scanned} nr_taken={nr_taken}"


def fmt_migratepages(nr_migrated: int, nr_failed: int) -> str:
    return f"nr_migrated={nr_migrated} nr_failed={nr_failed}"


def fmt_try_to_compact_pages(order: int, gfp_mask: int, priority: int) -> str:
    return f"order={order} gfp_mask={tp.gfp_flags_to_str(gfp_mask)} priority={priority}"


def fmt_try_to_compact_pages_4_4(order: int, gfp_mask: int, mode: int) -> str:
    return f"order={order} gfp_mask=0x{gfp_mask:x} mode={mode}"


def fmt_suitable(nid: int, zone: str, order: int, result: int, era44: bool = False) -> str:
    return f"node={nid} zone={zone:<8s} order={order} ret={status_name(result, era44)}"


def fmt_defer(nid: int, zone: str, order: int, order_failed: int, considered: int,
              shift: int) -> str:
    return (f"node={nid} zone={zone:<8s} order={order} order_failed={order_failed} "
            f"consider={considered} limit={1 << shift}")


def fmt_kcompactd_sleep(nid: int) -> str:
    return f"nid={nid}"


def fmt_kcompactd_wake(nid: int, order: int, zone: str) -> str:
    return f"nid={nid} order={order} classzone_idx={zone:<8s}"


def fmt_migrate_pages(succeeded: int, failed: int, mode: int, batching: bool) -> str:
    split = " nr_split=0" if batching else ""
    return (f"nr_succeeded={succeeded} nr_failed={failed} nr_thp_succeeded=0 "
            f"nr_thp_failed=0 nr_thp_split=0{split} mode={MIGRATE_MODE_NAMES[mode]} "
            f"reason=compaction")
