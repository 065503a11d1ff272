"""Event counters under their /proc/vmstat names.

Follows include/linux/vm_event_item.h and mm/vmstat.c `vmstat_text` (6.x names and order
for the items the model produces). Counters live in one dict per run; gauges such as
`nr_free_pages` are computed from the zones when a snapshot is taken.
"""

from __future__ import annotations

ZONE_COUNTERS = ("pgalloc_dma32", "pgalloc_normal", "allocstall_dma32", "allocstall_normal",
                 "pgskip_dma32", "pgskip_normal")

VM_EVENTS = (
    "pgpgin", "pgpgout", "pswpin", "pswpout",
    "pgalloc_dma32", "pgalloc_normal", "allocstall_dma32", "allocstall_normal",
    "pgskip_dma32", "pgskip_normal",
    "pgfree", "pgactivate", "pgdeactivate", "pgfault", "pgmajfault",
    "pgrefill", "pgreuse", "pgsteal_kswapd", "pgsteal_direct",
    "pgdemote_kswapd", "pgdemote_direct",
    "pgscan_kswapd", "pgscan_direct", "pgscan_direct_throttle",
    "pgscan_anon", "pgscan_file", "pgsteal_anon", "pgsteal_file",
    "pginodesteal", "slabs_scanned", "kswapd_inodesteal",
    "kswapd_low_wmark_hit_quickly", "kswapd_high_wmark_hit_quickly",
    "pageoutrun", "pgrotated", "drop_pagecache", "drop_slab", "oom_kill",
    "pgmigrate_success", "pgmigrate_fail", "thp_migration_success", "thp_migration_fail",
    "thp_migration_split",
    "compact_migrate_scanned", "compact_free_scanned", "compact_isolated",
    "compact_stall", "compact_fail", "compact_success",
    "compact_daemon_wake", "compact_daemon_migrate_scanned", "compact_daemon_free_scanned",
    "unevictable_pgs_culled", "unevictable_pgs_mlocked",
    "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge",
    "thp_collapse_alloc", "thp_collapse_alloc_failed",
    "thp_split_page", "thp_split_page_failed", "thp_deferred_split_page",
    "balloon_inflate", "balloon_deflate", "balloon_migrate",
    "swap_ra", "swap_ra_hit",
)

# Gauges printed ahead of the events (zone_stat_item / node_stat_item names).
GAUGES = ("nr_free_pages", "nr_zone_inactive_anon", "nr_zone_inactive_file",
          "nr_zone_unevictable", "nr_zone_write_pending", "nr_mlock", "nr_zspages",
          "nr_inactive_anon", "nr_inactive_file", "nr_unevictable",
          "nr_isolated_anon", "nr_isolated_file", "nr_file_pages", "nr_dirty",
          "nr_writeback", "nr_anon_pages", "nr_anon_transparent_hugepages",
          "nr_slab_reclaimable", "nr_slab_unreclaimable", "nr_kernel_misc_reclaimable",
          "nr_balloon_pages", "nr_swapcached")


def new_events() -> dict[str, int]:
    return dict.fromkeys(VM_EVENTS, 0)
