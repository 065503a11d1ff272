"""Simulated-time cost of each step.

The kernel has no latency constants; every default below is a measurement, or derived
from measurements, and its `doc` names the source by letter ([A]..[P], listed with what
each measured in docs/model.md, "Costs"). `preset: arm_phone` scales the defaults
(clearing and copying x1.75, CPU-bound steps x2.5, zram and writeback from phone
measurements); any key set in the spec wins over the preset. Units are in the key names.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, cast

from compactsim.sim.schema import FieldError, spec


class CostPreset(enum.Enum):
    X86_SERVER = "x86_server"
    ARM_PHONE = "arm_phone"


def _c(default: float, source: str, hi: float = 1e9) -> Any:
    return spec(default, lo=0.0, hi=hi, doc=source)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Costs:
    """Per-step costs in simulated time; the letters name the sources listed in docs/model.md."""

    preset: CostPreset = spec(CostPreset.X86_SERVER)
    pcp_alloc_ns: float = _c(28, "[A] per-cpu list alloc")
    pcp_free_ns: float = _c(12, "[A] per-cpu list free")
    buddy_page_ns: float = _c(40, "[B] per page moved under zone->lock (pcp refill/drain)")
    zone_lock_batch_hold_us: float = _c(2.5, "[B] hold for a 63-page pcp refill or drain")
    buddy_alloc_ns: float = _c(150, "derived: lock, one buddy operation, watermark check")
    buddy_alloc_order9_us: float = _c(4, "[C] 2 MiB page from the free lists")
    clear_page_us: float = _c(0.3, "[D] rep stos 4 KiB")
    clear_huge_page_us: float = _c(150, "[D][E] 2 MiB clear")
    thp_fault_nocompact_us: float = _c(170, "derived: clear + order-9 alloc + PMD install")
    copy_page_us: float = _c(0.3, "[F][G] memcpy 4 KiB")
    unmap_page_us: float = _c(0.15, "derived: rmap walk, PTE to migration entry")
    remap_page_us: float = _c(0.15, "derived: migration entries back to PTEs")
    migrate_overhead_us: float = _c(0.15, "derived: locks, refcount freeze, mapping swap")
    tlb_flush_local_ns: float = _c(100, "[H] one PTE flush")
    tlb_shootdown_us: float = _c(3, "[I] IPI round trip per unbatched page")
    free_scan_page_ns: float = _c(12, "[J] free scanner per pfn")
    migrate_scan_page_ns: float = _c(15, "derived from [K]")
    isolate_page_ns: float = _c(50, "[K] isolation per page")
    isolate_batch_us: float = _c(1.6, "derived: 32 x isolate_page_ns")
    lru_lock_batch_hold_us: float = _c(1.5, "derived: 32 folios under the lruvec lock")
    reclaim_clean_page_us: float = _c(0.5, "[L] kswapd CPU per reclaimed page")
    reclaim_scan_keep_us: float = _c(0.15, "derived: scanned page kept or rotated")
    writeback_page_ms: float = _c(0.5, "[M] 4 KiB write incl. queueing")
    zram_lz4_compress_us: float = _c(4, "[F] lz4 780 MB/s")
    zram_lzo_compress_us: float = _c(5, "[F] lzo 670 MB/s")
    zram_zstd_compress_us: float = _c(8, "[F][N] zstd -1")
    zram_lz4_decompress_us: float = _c(1.0, "[F][O]")
    zram_lzo_decompress_us: float = _c(2.0, "[F][O]")
    zram_zstd_decompress_us: float = _c(4.0, "[F][O][N]")
    zs_malloc_us: float = _c(0.3, "derived: size class lookup plus link")
    zs_map_copy_us: float = _c(0.2, "derived: kmap plus 1-2 KiB copy")
    anon_fault_us: float = _c(1.0, "[P] first touch of an anonymous page")
    file_fault_us: float = _c(0.5, "derived: anon_fault_us less allocation and zeroing")
    page_lock_hold_ms: float = _c(1.0, "derived: a read I/O holding the page lock")
    memmap_line_ns: float = _c(6, "derived: one more 64-byte line of the memmap per struct "
                               "page touched, at ~10 GB/s; the per-pfn costs above are for "
                               "a 64-byte struct page")

    @staticmethod
    def defaults(raw: dict[str, Any], path: str, errors: list[FieldError]) -> dict[str, Any]:
        preset = str(raw.get("preset", "x86_server")).lower()
        if preset != CostPreset.ARM_PHONE.value:
            return raw
        return {**ARM_PHONE, **raw}

    def zram_compress_us(self, algorithm: str) -> float:
        return getattr(self, f"zram_{algorithm}_compress_us")

    def zram_decompress_us(self, algorithm: str) -> float:
        return getattr(self, f"zram_{algorithm}_decompress_us")


def _scaled(factor: float, *names: str) -> dict[str, float]:
    defaults = {f.name: cast(float, f.default) for f in dataclasses.fields(Costs)
                if f.name != "preset"}
    return {n: round(defaults[n] * factor, 6) for n in names}


# The arm_phone preset: clearing and copying x1.5-2 and CPU-bound steps x2-3 slower than
# the x86 server, zram from phone measurements ([N], [O]), phone UFS writeback 1 ms.
ARM_PHONE: dict[str, float] = {
    **_scaled(1.75, "clear_page_us", "clear_huge_page_us", "copy_page_us",
              "thp_fault_nocompact_us"),
    **_scaled(2.5, "pcp_alloc_ns", "pcp_free_ns", "buddy_page_ns", "zone_lock_batch_hold_us",
              "buddy_alloc_ns", "buddy_alloc_order9_us", "unmap_page_us", "remap_page_us",
              "migrate_overhead_us", "tlb_flush_local_ns", "tlb_shootdown_us",
              "free_scan_page_ns", "migrate_scan_page_ns", "isolate_page_ns",
              "isolate_batch_us", "lru_lock_batch_hold_us", "reclaim_clean_page_us",
              "reclaim_scan_keep_us", "zs_malloc_us", "zs_map_copy_us", "anon_fault_us",
              "file_fault_us", "memmap_line_ns"),
    "zram_lz4_compress_us": 15.0, "zram_zstd_compress_us": 22.0,
    "zram_lz4_decompress_us": 5.0, "zram_zstd_decompress_us": 9.0,
    "writeback_page_ms": 1.0,
}
