"""Page migration: `migrate_pages` with its passes, per-mode rules and costs.

Follows mm/migrate.c: `migrate_pages` (4.4-6.2: up to 10 passes, `force` from the third;
6.3+: batches of up to `NR_MAX_BATCHED_MIGRATION` pages unmapped together with one TLB
flush, async passes then, for the sync modes, one-by-one passes with 7 retries),
`__unmap_and_move` / `migrate_folio_unmap` (page lock trylock; ASYNC and PF_MEMALLOC
callers, i.e. direct compaction and kswapd but not kcompactd, never sleep on it; before
6.3 the others sleep only from the third pass; 6.5+ SYNC_LIGHT does not sleep on a page
under read I/O, which is what a locked page is here; writeback waited for only in
MIGRATE_SYNC), the reference
check of `folio_migrate_mapping` (an extra reference is -EAGAIN), non-LRU movable pages
through their driver (`move_to_new_folio` with movable_ops: zsmalloc's `zs_page_migrate`
takes the pool, class and zspage locks of its era, sim/zsmalloc.py; balloon pages
always move), and `putback_movable_pages` (a blocking page
lock for movable_ops pages). Targets come from the caller (`get_target`), -ENOMEM when
there are none. Costs: unmap, TLB flush or shootdown, copy, remap and overhead from
sim/costs.py. Simplified: every page of a multi-CPU machine is taken as mapped on
other CPUs (a shootdown per page before 6.3, per batch after); a page-lock or writeback
wait lasts half the configured hold or write time; THPs are not migrated (compaction
skips compound pages).
"""

from __future__ import annotations

import enum

import cython
from compactsim.sim.config import PageKind
from compactsim.sim.lifetimes import Lifetimes
from compactsim.sim.lru import add_page_to_lru, lru_list_for
from compactsim.sim.machine import Machine
from compactsim.sim import page as pg
from compactsim.sim.page import KIND_CODE, MemMap
from compactsim.sim.task import Task


class MigrateMode(enum.IntEnum):
    """include/linux/migrate_mode.h: ordered, so `mode < SYNC` reads as in the kernel."""

    ASYNC = 0
    SYNC_LIGHT = 1
    SYNC = 2


MIGRATEPAGE_SUCCESS = 0
EAGAIN = -11
EBUSY = -16
EINVAL = -22
ENOMEM = -12
RELEASED = 1                   # the owner freed the page while it was isolated

NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = 7
NR_MAX_BATCHED_MIGRATION = 512
# 6.3+ migrate_pages in a sync mode: first the batched async passes (migrate_pages_batch).
ASYNC_BATCH_PASS = (MigrateMode.ASYNC, NR_MAX_MIGRATE_ASYNC_RETRY, True)

# The page states, flags and kinds a move tests and sets, as C constants where compiled.
ALLOC = cython.declare(cython.int, pg.ALLOC)
KIND_NONE = cython.declare(cython.int, pg.KIND_NONE)
PG_WRITEBACK = cython.declare(cython.int, pg.PG_WRITEBACK)
PG_LOCKED = cython.declare(cython.int, pg.PG_LOCKED)
PG_EXTRA_REF = cython.declare(cython.int, pg.PG_EXTRA_REF)
PG_ISOLATED = cython.declare(cython.int, pg.PG_ISOLATED)
PG_LRU = cython.declare(cython.int, pg.PG_LRU)
PG_MOVABLE_OPS = cython.declare(cython.int, pg.PG_MOVABLE_OPS)
ZSMALLOC = cython.declare(cython.int, KIND_CODE[PageKind.ZSMALLOC])
MIGRATE_ASYNC = cython.declare(cython.int, MigrateMode.ASYNC)
MIGRATE_SYNC_LIGHT = cython.declare(cython.int, MigrateMode.SYNC_LIGHT)
MIGRATE_SYNC = cython.declare(cython.int, MigrateMode.SYNC)
BALLOON = cython.declare(cython.int, KIND_CODE[PageKind.BALLOON])
# Migrated pages by what they were: LRU anonymous (THP fallbacks and pinned included),
# LRU file, zsmalloc and balloon pages.
MIGRATED_KIND = {KIND_CODE[PageKind.ANON]: "anon", KIND_CODE[PageKind.THP]: "anon",
                 KIND_CODE[PageKind.PINNED]: "anon", KIND_CODE[PageKind.FILE]: "file",
                 ZSMALLOC: "zsmalloc", BALLOON: "balloon"}
MIGRATED_KINDS = ("anon", "file", "zsmalloc", "balloon")
# The same by kind code.
MIGRATED_LABEL = [MIGRATED_KIND.get(code, "other") for code in range(256)]


class Migration:
    """migrate_pages for one machine: rules, costs and bookkeeping of moved pages."""

    def __init__(self, m: Machine, rng, lifetimes: Lifetimes | None = None, zsmalloc=None):
        self.m = m
        self.env = m.env
        self.costs = m.config.costs
        self.batching = m.config.kernel.migrate_batching
        self.sync_light_io_nowait = m.config.kernel.sync_light_io_nowait
        self.multi_cpu = m.config.machine.cpus > 1
        self.rng = rng
        self.lifetimes = lifetimes          # the deadlines, which follow a moved block
        self.zsmalloc = zsmalloc            # the zram pool (ZsPool), whose locks zspages take
        # CPU seconds per page moved (LRU, movable_ops), worked out once for migrate_pages.
        self.cost_lru = self.page_cost(False)
        self.cost_ops = self.page_cost(True)
        self.shootdown_us = self.costs.tlb_shootdown_us
        self.migrated_v = m.migrated        # pages moved, by kind code

    # --- one page ----------------------------------------------------------------------

    @cython.locals(flags=cython.int, may_sleep=cython.bint, wait=cython.double)
    def unmap_and_move_rc(self, pfn: int, mode: int, force: bool, memalloc: bool
                          ) -> tuple[int, float]:
        """The fate of one isolated page in this pass: (rc, seconds spent waiting)."""
        mem = self.m.mem
        if mem.kind_v[pfn] == KIND_NONE:
            return RELEASED, 0.0
        flags = mem.flags_v[pfn]
        wait = 0.0
        if flags & PG_LOCKED:
            # A locked page here is one under read I/O (not uptodate).
            may_sleep = (mode != MIGRATE_ASYNC and not memalloc and (force or self.batching)
                         and not (mode == MIGRATE_SYNC_LIGHT and self.sync_light_io_nowait))
            if not may_sleep:
                return EAGAIN, 0.0
            wait += self.costs.page_lock_hold_ms * 0.5e-3
        if flags & PG_WRITEBACK:
            if mode < MIGRATE_SYNC:
                return EBUSY, wait
            if not force and not self.batching:
                return EAGAIN, wait
            wait += self.costs.writeback_page_ms * 0.5e-3
        if flags & PG_MOVABLE_OPS:
            if mem.kind_v[pfn] == ZSMALLOC and self.zsmalloc is not None:
                rc, waited = self.zsmalloc.zs_page_migrate(pfn, self.env.now + wait)
                return rc, wait + waited
            return MIGRATEPAGE_SUCCESS, wait
        if flags & PG_EXTRA_REF:
            return EAGAIN, wait
        return MIGRATEPAGE_SUCCESS, wait

    def page_cost(self, movable_ops: bool) -> float:
        """CPU seconds to move one page (no shootdown): a movable_ops page or an LRU one."""
        c = self.costs
        if movable_ops:
            return (c.copy_page_us + c.zs_map_copy_us + c.migrate_overhead_us) * 1e-6
        return (c.unmap_page_us + c.copy_page_us + c.remap_page_us + c.migrate_overhead_us
                + c.tlb_flush_local_ns * 1e-3) * 1e-6

    @cython.locals(kind=cython.int, flags=cython.int, lru=cython.int, expire=cython.uint, m=Machine,
                   mem=MemMap)
    def move(self, old: int, new: int) -> None:
        """Hand the page's identity to `new` and put it back where its owner keeps it."""
        m = self.m
        mem = m.mem
        kind, flags, expire = mem.kind_v[old], mem.flags_v[old], mem.expire_v[old]
        flags &= ~(PG_ISOLATED | PG_LOCKED | PG_WRITEBACK)
        mem.pstate_v[new] = ALLOC
        mem.kind_v[new] = kind
        mem.flags_v[new] = flags & ~PG_LRU
        mem.expire_v[new] = 0
        self.migrated_v[kind] += 1
        if flags & PG_MOVABLE_OPS:
            # Driver pages stay on their driver's list while isolated: swap places.
            prev = mem.prv[old]
            mem.list_del(old)
            mem.list_add(prev, new)
            if kind == BALLOON:
                m.events["balloon_migrate"] += 1
            elif kind == ZSMALLOC and self.zsmalloc is not None:
                self.zsmalloc.page_moved(old, new)
        else:
            lru = lru_list_for(kind, flags)
            if lru >= 0:
                add_page_to_lru(m, new, 1, lru)
        if expire and self.lifetimes is not None:
            self.lifetimes.schedule(new, expire)
        mem.kind_v[old] = KIND_NONE
        mem.flags_v[old] = 0
        mem.expire_v[old] = 0

    def putback(self, pfn: int) -> bool:
        """putback_movable_pages for one page; False if its owner is gone (free it)."""
        m = self.m
        mem = m.mem
        kind, flags = mem.kind[pfn], mem.flags[pfn]
        if kind == KIND_NONE:
            return False
        mem.flags[pfn] = flags & ~PG_ISOLATED
        if not flags & PG_MOVABLE_OPS:
            lru = lru_list_for(kind, flags)
            if lru >= 0:
                add_page_to_lru(m, pfn, 1, lru)
        return True

    def putback_cost(self, pages: list[int]) -> float:
        """movable_ops putback takes a blocking page lock; LRU putback a lru_lock batch."""
        c = self.costs
        ops = sum(1 for p in pages if self.m.mem.flags[p] & PG_MOVABLE_OPS)
        lru = len(pages) - ops
        return ops * c.migrate_overhead_us * 1e-6 + (lru / 32.0) * c.lru_lock_batch_hold_us * 1e-6

    # --- the loop ----------------------------------------------------------------------

    def passes(self, mode: MigrateMode) -> list[tuple[MigrateMode, int, bool]]:
        """(mode of the pass, retries, batched) steps of one migrate_pages call."""
        if not self.batching:
            return [(mode, NR_MAX_MIGRATE_PAGES_RETRY, False)]
        if mode == MIGRATE_ASYNC:
            return [(mode, NR_MAX_MIGRATE_PAGES_RETRY, True)]
        return [ASYNC_BATCH_PASS, (mode, NR_MAX_MIGRATE_SYNC_RETRY, False)]

    @cython.locals(succeeded=cython.Py_ssize_t, untried=cython.Py_ssize_t, i=cython.Py_ssize_t,
                   pfn=cython.Py_ssize_t, target=cython.Py_ssize_t, rc=cython.int,
                   shootdowns=cython.Py_ssize_t, cpu=cython.double, wait=cython.double,
                   waited=cython.double, enomem=cython.bint, force=cython.bint,
                   pass_mode=cython.int, retries=cython.int, batched=cython.bint,
                   memalloc=cython.bint, ops=cython.bint, cost_lru=cython.double,
                   cost_ops=cython.double, flags=cython.uchar[:], task=Task, targets=list,
                   pending=list, retry=list, freed=list, permanent=list)
    def migrate_pages(self, task, pages: list[int], mode: MigrateMode, get_target, free_sources,
                      targets: list[int] | None = None):
        """Generator: migrate `pages` (isolated heads); returns (succeeded, failed, pages
        still isolated to put back, -ENOMEM hit).

        Each target is popped from `targets` while it holds any, else `get_target()` (a
        generator returning a free pfn or -1) is asked. `free_sources(pfns)` frees source
        pages after their data moved (or their owner let go), in that order; the caller
        decides where freed pages go. It is called before every wait (asking for a target,
        the pass's cost), so nothing else runs between a page's move and its free, as in
        the kernel, where the source is put as soon as it is moved."""
        m = self.m
        flags = m.mem.flags_v
        pending = list(pages)
        succeeded = failed = 0
        permanent: list[int] = []
        enomem = False
        untried = 0                 # left unattempted when the targets ran out
        freed: list[int] = []       # sources to free before the next wait
        memalloc = task.memalloc
        cost_lru = self.cost_lru
        cost_ops = self.cost_ops
        for pass_mode, retries, batched in self.passes(mode):
            for attempt in range(retries):
                if not pending:
                    break
                force = not self.batching and attempt > 2
                retry: list[int] = []
                cpu = wait = 0.0
                shootdowns = 0
                for i in range(len(pending)):
                    page = pending[i]       # the list's own int object, passed on as is
                    pfn = page
                    rc, waited = self.unmap_and_move_rc(pfn, pass_mode, force, memalloc)
                    wait += waited
                    if rc == RELEASED:
                        freed.append(page)
                        succeeded += 1
                        continue
                    if rc == EAGAIN:
                        retry.append(page)
                        continue
                    if rc != MIGRATEPAGE_SUCCESS:
                        permanent.append(page)
                        continue
                    if targets:
                        target = targets.pop()
                    else:
                        if freed:
                            free_sources(freed)
                            freed = []
                        target = yield from get_target()
                    if target < 0:
                        enomem = True
                        untried = len(pending) - i - 1
                        retry.extend(pending[i:])
                        break
                    ops = (flags[pfn] & PG_MOVABLE_OPS) != 0
                    if ops:
                        cpu += cost_ops
                    else:
                        cpu += cost_lru
                        shootdowns += 1
                    self.move(pfn, target)
                    freed.append(page)
                    succeeded += 1
                if freed:
                    free_sources(freed)
                    freed = []
                if self.multi_cpu and shootdowns:
                    flushes = 1 if batched else shootdowns
                    cpu += flushes * self.shootdown_us * 1e-6
                if cpu or wait:
                    task.debt += cpu
                    yield self.env.timeout(task.debt + wait)
                    task.debt = 0.0
                pending = retry
                if enomem:
                    break
            if enomem:
                break
            if pass_mode != mode:
                # migrate_pages_sync: every folio the async batch failed, -EBUSY
                # included, is retried one by one in the requested mode.
                pending += permanent
                permanent = []
        failed = len(pending) + len(permanent)
        m.events["pgmigrate_success"] += succeeded
        # -ENOMEM stops the call: the pages never tried are returned, not counted.
        m.events["pgmigrate_fail"] += failed - untried
        return succeeded, failed, pending + permanent, enomem
