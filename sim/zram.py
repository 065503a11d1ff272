"""zram swap backed by a zsmalloc pool.

Follows drivers/block/zram/zram_drv.c: `zram_write_page` compresses a page, stores it
uncompressed when the result is `huge_class_size` or more, and `zs_malloc`s the object
(sim/zsmalloc.py) from reclaim context (PF_MEMALLOC, so without watermarks) with
`__GFP_MOVABLE` when the movable-ops design lets zsmalloc pages migrate (4.8+) and
without it (unmovable) under `NONE`, as 4.4 did; `zram_free_page` frees the object when
its owner would have freed the page. The `compact` attribute runs `zs_compact`, and
`mm_stat` reports the pool. Simplified: compressed sizes are lognormal around
PAGE_SIZE / `zram_compression_ratio` with `zram_size_sigma`; swapped-out pages are not
faulted back in; same-filled pages are not special.
"""

from __future__ import annotations

import math

import numpy as np

from compactsim.sim.config import MovableOps
from compactsim.sim.gfp import __GFP_HIGHMEM, __GFP_MOVABLE, __GFP_NOWARN, GFP_NOIO
from compactsim.sim.machine import Machine
from compactsim.sim.page_alloc import Outcome
from compactsim.sim.task import Task
from compactsim.sim.zsmalloc import PAGE_SIZE, ZsPool

ZSPAGE_GFP_MOVABLE = GFP_NOIO | __GFP_HIGHMEM | __GFP_MOVABLE | __GFP_NOWARN
ZSPAGE_GFP_UNMOVABLE = GFP_NOIO | __GFP_HIGHMEM | __GFP_NOWARN
SIZE_BLOCK = 4096


class Zram:
    """One zram device per machine, its zsmalloc pool spread over the nodes."""

    def __init__(self, m: Machine, rng=None):
        self.m = m
        cfg = m.config.machine
        self.capacity = cfg.zram // PAGE_SIZE         # disksize in pages
        self.algorithm = cfg.zram_algorithm.value
        self.movable = m.config.kernel.movable_ops is not MovableOps.NONE
        self.gfp = ZSPAGE_GFP_MOVABLE if self.movable else ZSPAGE_GFP_UNMOVABLE
        self.pool = ZsPool(m, self.gfp, self.movable)
        self.rng = rng
        sigma = cfg.zram_size_sigma
        self._sigma = sigma
        self._mu = math.log(PAGE_SIZE / cfg.zram_compression_ratio) - sigma * sigma / 2
        self._sizes: list[int] = []
        self.expiring: dict[int, list[int]] = {}     # lifetime tick -> handles dying then
        self.failed_writes = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def stored(self) -> int:
        return self.pool.objects

    @property
    def pages(self) -> int:
        return self.pool.pages_allocated

    def has_room(self, nr: int) -> bool:
        return self.enabled and self.stored + nr <= self.capacity

    def comp_len(self) -> int:
        """The compressed size of the next page written (lognormal, drawn in blocks)."""
        if not self._sizes:
            if self.rng is None or not self._sigma:
                return max(1, min(PAGE_SIZE, round(math.exp(self._mu))))
            sizes = np.rint(self.rng.gen.lognormal(self._mu, self._sigma, SIZE_BLOCK))
            self._sizes = np.clip(sizes, 1, PAGE_SIZE).astype(np.int64).tolist()[::-1]
        return self._sizes.pop()

    def store(self, task: Task, nr: int, expire_tick: int) -> tuple[bool, list[Outcome]]:
        """zram_write_page for `nr` pages; False if zs_malloc failed (-ENOMEM)."""
        outcomes: list[Outcome] = []
        pool = self.pool
        handles = self.expiring.setdefault(expire_tick, []) if expire_tick else None
        for i in range(nr):
            handle = pool.zs_malloc(task, self.comp_len(), outcomes)
            if handle < 0:
                self.failed_writes += 1
                self.m.events["pswpout"] += i
                return False, outcomes
            if handles is not None:
                handles.append(handle)
        self.m.events["pswpout"] += nr
        return True, outcomes

    def expire(self, task: Task, tick: int) -> list[Outcome]:
        """zram_free_page for the objects whose owners are gone by `tick`."""
        handles = self.expiring.pop(tick, None)
        outcomes: list[Outcome] = []
        if handles:
            for handle in handles:
                self.pool.zs_free(task, handle, outcomes)
        return outcomes

    def compact(self, task: Task) -> list[Outcome]:
        """`echo 1 > /sys/block/zram0/compact`."""
        outcomes: list[Outcome] = []
        self.pool.zs_compact(task, outcomes)
        return outcomes

    def mm_stat(self) -> str:
        """/sys/block/zram0/mm_stat (6.x fields: orig_data_size compr_data_size
        mem_used_total mem_limit mem_used_max same_pages pages_compacted huge_pages
        huge_pages_since)."""
        p = self.pool
        return (f"{p.objects * PAGE_SIZE:8d} {p.compr_bytes:8d} "
                f"{p.pages_allocated * PAGE_SIZE:8d} {0:8d} {p.pages_max * PAGE_SIZE:8d} "
                f"{0:8d} {p.pages_compacted:8d} {p.huge_objects:8d} {p.huge_since:8d}\n")

    def summary(self) -> dict:
        p = self.pool
        return {"stored_pages": p.objects, "zspages": p.pages_allocated,
                "failed_writes": self.failed_writes, "compr_data_size": p.compr_bytes,
                "mem_used_max_pages": p.pages_max, "pages_compacted": p.pages_compacted,
                "zs_compact_runs": p.compactions, "huge_pages": p.huge_objects,
                "migrated_pages": p.migrated, "migrate_busy": p.migrate_busy,
                "fullness_groups": p.fullness_counts(),
                "locking": p.locking.name}
