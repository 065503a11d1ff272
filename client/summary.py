"""The summary table of a run, printed by `simulate` and by `run --watch` from the same
summary dict (a local run's, or a server run's `Run.summary`)."""

from __future__ import annotations

from rich.table import Table

from compactsim.sim.units import format_duration

SUMMARY_COUNTERS = ("pgalloc_normal", "pgfree", "allocstall_normal", "pgscan_kswapd",
                    "pgsteal_kswapd", "pgscan_direct", "pgsteal_direct", "pswpout",
                    "thp_fault_alloc", "thp_fault_fallback", "compact_stall",
                    "compact_success", "compact_fail", "compact_migrate_scanned",
                    "compact_free_scanned", "compact_isolated", "compact_daemon_wake",
                    "compact_daemon_migrate_scanned", "compact_daemon_free_scanned",
                    "pgmigrate_success", "pgmigrate_fail", "oom_kill", "nr_free_pages")


def summary_table(s: dict, wall: float) -> Table:
    """The summary table of `simulate` (and of `run --watch`), from a run's summary."""
    table = Table(title=f"compactsim: {s['kernel']['profile']}, "
                        f"movable_ops={s['memmap']['design']}, seed {s['seed']}, "
                        f"{format_duration(s['duration_s'])} simulated in {wall:.1f}s")
    table.add_column("counter / measure")
    table.add_column("value", justify="right")
    for key in SUMMARY_COUNTERS:
        table.add_row(key, str(s["vmstat"][key]))
    table.add_row("fragmentation score (per node)", ", ".join(map(str, s["fragmentation_score"])))
    mm = s["memmap"]
    table.add_row("struct page / memmap", f"{mm['struct_page_bytes']} B / "
                  f"{mm['memmap_bytes'] / 2**20:.1f} MiB ({mm['memmap_percent_of_ram']} % of RAM)")
    pf = mm["page_flags"]
    table.add_row("page->flags", f"{pf['nr_pageflags']} flags + {pf['fields_bits']} field bits, "
                  f"LAST_CPUPID {'in flags' if pf['last_cpupid_in_flags'] else 'in struct page'}"
                  f", {pf['free_bits']} bits spare")
    comp = s.get("compaction", {})
    if comp.get("enabled"):
        table.add_row("compaction runs", ", ".join(f"{k} {v}" for k, v in comp["results"].items())
                      or "none")
        for trigger, lat in comp["latency"].items():
            table.add_row(f"compaction latency ({trigger})",
                          f"p50 {lat['p50_us']:.1f} us, p99 {lat['p99_us']:.1f} us, "
                          f"max {lat['max_us']:.1f} us")
        table.add_row("wasted migrations", str(comp["wasted_migrations"]))
    for key, a in s["allocations"].items():
        table.add_row(f"alloc {key}", f"{a['successes']}/{a['attempts']} ok, "
                      f"p50 {a['p50_us']:.1f} us, p99 {a['p99_us']:.1f} us")
    return table
