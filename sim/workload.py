"""Allocating tasks: groups of SimPy processes, their pages' lifetimes and states.

A group's tasks issue requests (Poisson, periodic, bursts, or fill-then-churn), each of
`batch` blocks with orders from the group's mix and GFP flags from its page kind, the way
the kernel's callers ask (page cache and anonymous faults GFP_HIGHUSER_MOVABLE; THP per
`transparent_hugepage/{enabled,defrag}` and MADV_HUGEPAGE as `vma_thp_gfp_mask` does,
falling back to base pages; slab GFP_KERNEL with or without __GFP_RECLAIMABLE; fork's
stacks GFP_KERNEL; network buffers GFP_ATOMIC at order 3 with __GFP_NORETRY, falling back
to order 0 as `skb_page_frag_refill` does; balloon pages as `balloon_page_alloc`). Each
allocated block gets page states drawn from the group's probabilities and a deadline
from its lifetime distribution; a reaper frees due blocks every `lifetime_tick`.
Simplified: tasks own no address space; a block is freed by its deadline or by reclaim.
"""

from __future__ import annotations

import dataclasses
import math
from array import array

from sim.charge import charge_frees, settle
from sim.config import (Arrival, Lifetime, MovableOps, PageKind, SimConfig, ThpDefrag,
                        ThpEnabled, WorkloadGroup)
from sim.gfp import (__GFP_COMP, __GFP_KSWAPD_RECLAIM, __GFP_NOMEMALLOC, __GFP_NORETRY,
                     __GFP_NOWARN, __GFP_RECLAIMABLE, GFP_ATOMIC, GFP_HIGHUSER_MOVABLE,
                     GFP_KERNEL, GFP_TRANSHUGE, GFP_TRANSHUGE_LIGHT)
from sim.histogram import Histogram
from sim.lru import add_page_to_lru, del_page_from_lru, lru_list_for, node_of
from sim.machine import LIST_BALLOON, LIST_ZSPAGES, Machine
from sim.page import (ALLOC, KIND_CODE, PG_DIRTY, PG_EXTRA_REF, PG_ISOLATED, PG_LOCKED,
                      PG_LRU, PG_MLOCKED, PG_MOVABLE_OPS, PG_WRITEBACK)
from sim.page_alloc import free_pages
from sim.pageblock import PAGEBLOCK_ORDER
from sim.rng import RngStreams
from sim.slowpath import Allocator
from sim.task import Task
from sim.zram import ZSPAGE_GFP_MOVABLE, ZSPAGE_GFP_UNMOVABLE, Zram

HPAGE_PMD_NR = 1 << PAGEBLOCK_ORDER


def thp_gfp(cfg: SimConfig, madvised: bool) -> int | None:
    """vma_thp_gfp_mask, or None when THP is off for this mapping."""
    enabled = cfg.tunables.thp_enabled
    if enabled is ThpEnabled.NEVER or (enabled is ThpEnabled.MADVISE and not madvised):
        return None
    defrag = cfg.tunables.thp_defrag
    if defrag is ThpDefrag.ALWAYS:
        return GFP_TRANSHUGE | (0 if madvised else __GFP_NORETRY)
    if defrag is ThpDefrag.DEFER:
        return GFP_TRANSHUGE_LIGHT | __GFP_KSWAPD_RECLAIM
    if defrag is ThpDefrag.DEFER_MADVISE:
        return GFP_TRANSHUGE if madvised else GFP_TRANSHUGE_LIGHT | __GFP_KSWAPD_RECLAIM
    if defrag is ThpDefrag.MADVISE:
        return GFP_TRANSHUGE if madvised else GFP_TRANSHUGE_LIGHT
    return GFP_TRANSHUGE_LIGHT


def kind_gfp(cfg: SimConfig, kind: PageKind, order: int) -> int:
    """The GFP flags a caller of this kind passes."""
    if kind in (PageKind.FILE, PageKind.ANON, PageKind.PINNED):
        return GFP_HIGHUSER_MOVABLE
    if kind is PageKind.SLAB_RECLAIMABLE:
        return GFP_KERNEL | __GFP_RECLAIMABLE | (__GFP_COMP if order else 0)
    if kind in (PageKind.SLAB_UNMOVABLE, PageKind.KERNEL_HIGH_ORDER):
        return GFP_KERNEL | (__GFP_COMP if order else 0)
    if kind is PageKind.NETBUF:
        return GFP_ATOMIC | __GFP_NOWARN | ((__GFP_COMP | __GFP_NORETRY) if order else 0)
    if kind is PageKind.ZSMALLOC:
        return (ZSPAGE_GFP_UNMOVABLE if cfg.kernel.movable_ops is MovableOps.NONE
                else ZSPAGE_GFP_MOVABLE)
    if kind is PageKind.BALLOON:
        return GFP_HIGHUSER_MOVABLE | __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN
    raise ValueError(f"no GFP flags for {kind}")


class Lifetimes:
    """Deadlines of live blocks: a wheel of `tick`-wide buckets of pfns.

    A bucket entry is valid only while its pfn is an allocated head whose `expire` still
    equals the bucket's tick; reclaim and migration leave stale entries behind, which are
    skipped (a migrated block is scheduled again under its new pfn)."""

    def __init__(self, m: Machine, tick: float):
        self.m = m
        self.tick = tick
        self.buckets: dict[int, array] = {}

    def due_tick(self, seconds: float) -> int:
        return max(1, math.ceil((self.m.env.now + seconds) / self.tick))

    def schedule(self, pfn: int, tick: int) -> None:
        self.m.mem.expire[pfn] = tick
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = array("i")
        bucket.append(pfn)


class Workload:
    """All groups' tasks, the reaper, and the per-allocation records."""

    def __init__(self, m: Machine, allocator: Allocator, zram: Zram, rngs: RngStreams):
        self.m = m
        self.env = m.env
        self.alloc = allocator
        self.zram = zram
        self.rngs = rngs
        self.cfg = m.config
        self.costs = m.config.costs
        self.lifetimes = Lifetimes(m, m.config.sampling.lifetime_tick)
        self.latency: dict[str, Histogram] = {}
        self.requests: dict[str, list[int]] = {}     # "kind/orderN" -> [attempts, successes]
        self._as_anon: dict[str, WorkloadGroup] = {}  # THP groups' base-page fallback
        self.reapers = [Task(comm="reaper", pid=90 + n.node_id, cpu=n.cpus[0], node=n.node_id)
                        for n in m.nodes]
        pid = 1000
        for gi, group in enumerate(self.cfg.workload):
            if group.kind is PageKind.REPLAY:
                continue
            for t in range(group.tasks):
                cpu = (gi + t) % m.config.machine.cpus
                task = Task(comm=group.name[:15], pid=pid, cpu=cpu, node=m.cpu_node[cpu])
                pid += 1
                self.env.process(self._task(group, task, t))
        self.env.process(self._reaper())

    # --- page bookkeeping ----------------------------------------------------------------

    def setup_page(self, group: WorkloadGroup, pfn: int, order: int, rng) -> None:
        """Give a new block its owner kind, page states, list and deadline."""
        m = self.m
        mem = m.mem
        code = KIND_CODE[group.kind]
        mem.kind[pfn] = code
        flags = 0
        if group.dirty and rng.random() < group.dirty:
            flags |= PG_DIRTY
        if group.extra_ref and rng.random() < group.extra_ref or group.kind is PageKind.PINNED:
            flags |= PG_EXTRA_REF
        if group.mlocked and rng.random() < group.mlocked:
            flags |= PG_MLOCKED
        if group.kind in (PageKind.BALLOON, PageKind.ZSMALLOC) and (
                group.kind is PageKind.BALLOON or m.config.kernel.movable_ops is not MovableOps.NONE):
            flags |= PG_MOVABLE_OPS
        mem.flags[pfn] = flags
        if group.writeback and rng.random() < group.writeback:
            mem.flags[pfn] |= PG_WRITEBACK
            self.alloc.reclaim.clear_flag_later(pfn, PG_WRITEBACK,
                                                self.costs.writeback_page_ms * 1e-3)
        if group.locked and rng.random() < group.locked:
            mem.flags[pfn] |= PG_LOCKED
            self.alloc.reclaim.clear_flag_later(pfn, PG_LOCKED,
                                                self.costs.page_lock_hold_ms * 1e-3)
        lru = lru_list_for(code, flags)
        node = m.nodes[node_of(m, pfn)]
        if lru >= 0:
            add_page_to_lru(m, pfn, 1 << order, lru)
        elif group.kind is PageKind.ZSMALLOC:
            mem.list_add(node.lists[LIST_ZSPAGES], pfn)
        elif group.kind is PageKind.BALLOON:
            mem.list_add(node.lists[LIST_BALLOON], pfn)
            m.events["balloon_inflate"] += 1
        life = group.lifetime
        if life.distribution is not Lifetime.FOREVER:
            self.lifetimes.schedule(pfn, self.lifetimes.due_tick(self._lifetime(life, rng)))

    @staticmethod
    def _lifetime(life, rng) -> float:
        d = life.distribution
        if d is Lifetime.EXPONENTIAL:
            return rng.exponential(life.mean)
        if d is Lifetime.FIXED:
            return life.mean
        if d is Lifetime.UNIFORM:
            return 2.0 * life.mean * rng.random()
        # lognormal with the given mean: mu = ln(mean) - sigma^2 / 2
        mu = math.log(max(life.mean, 1e-12)) - life.sigma ** 2 / 2
        return math.exp(mu + life.sigma * rng.normal())

    def release_page(self, task: Task, pfn: int):
        """The owner frees a block: off its list, back to the allocator."""
        m = self.m
        mem = m.mem
        order = mem.pstate[pfn] - ALLOC
        flags = mem.flags[pfn]
        if flags & PG_LRU:
            del_page_from_lru(m, pfn, 1 << order, lru_list_for(mem.kind[pfn], flags))
        elif flags & PG_MOVABLE_OPS or mem.kind[pfn] == KIND_CODE[PageKind.ZSMALLOC]:
            mem.list_del(pfn)
            if mem.kind[pfn] == KIND_CODE[PageKind.BALLOON]:
                m.events["balloon_deflate"] += 1
        return free_pages(m, task, pfn, order)

    def release_isolated(self, pfn: int) -> None:
        """The owner lets go of a page compaction has isolated: migration finds it
        released and frees it (move_to_new_folio / putback see a page nobody holds)."""
        mem = self.m.mem
        if mem.flags[pfn] & PG_MOVABLE_OPS:
            mem.list_del(pfn)
        mem.kind[pfn] = 0
        mem.expire[pfn] = 0

    def rescheduled(self, pfn: int, tick: int) -> None:
        """A migrated block keeps its owner's deadline under its new pfn."""
        self.lifetimes.schedule(pfn, tick)

    # --- the reaper ----------------------------------------------------------------------

    def _reaper(self):
        """Free every block whose deadline has come, once per tick."""
        m = self.m
        mem = m.mem
        tick = 0
        period = self.lifetimes.tick
        buckets = self.lifetimes.buckets
        nr_nodes = len(m.nodes)
        rr = 0
        while True:
            yield self.env.timeout(period)
            tick += 1
            bucket = buckets.pop(tick, None)
            outcomes = []
            task = self.reapers[0]
            if bucket is not None:
                pstate, expire = mem.pstate, mem.expire
                for pfn in bucket:
                    s = pstate[pfn]
                    if ALLOC <= s <= ALLOC + 10 and expire[pfn] == tick and mem.kind[pfn]:
                        if mem.flags[pfn] & PG_ISOLATED:
                            self.release_isolated(pfn)
                            continue
                        if nr_nodes > 1:
                            task = self.reapers[node_of(m, pfn)]
                        node_cpus = m.nodes[task.node].cpus
                        task.cpu = node_cpus[rr % len(node_cpus)]
                        rr += 1
                        outcomes.append(self.release_page(task, pfn))
            if self.zram is not None and self.zram.enabled:
                outcomes.extend(self.zram.expire(self.reapers[0], tick))
            if outcomes:
                yield from charge_frees(self.env, task, self.costs, outcomes)
                yield from settle(self.env, task)

    # --- tasks ---------------------------------------------------------------------------

    def in_use_fraction(self) -> float:
        m = self.m
        free = sum(z.free_pages + z.pcp_count() for z in m.zones)
        return 1.0 - free / m.managed_pages

    def _gaps(self, group: WorkloadGroup, rng):
        """Seconds to wait before each request."""
        p = group.pattern
        while True:
            if p is Arrival.FILL:
                if self.in_use_fraction() < group.fill_fraction:
                    yield 0.0
                    continue
                p = Arrival.POISSON
            if p is Arrival.POISSON:
                yield rng.exponential(1.0 / group.rate)
            elif p is Arrival.PERIODIC:
                yield 1.0 / group.rate
            else:
                yield group.burst_interval
                for _ in range(group.burst - 1):
                    yield 0.0

    def _task(self, group: WorkloadGroup, task: Task, index: int):
        env = self.env
        rng = self.rngs(f"workload.{group.name}.{index}")
        weights = [w for _, w in group.order_mix]
        total = sum(weights)
        cdf = [sum(weights[:i + 1]) / total for i in range(len(weights))]
        orders = [o for o, _ in group.order_mix]
        if group.start > env.now:
            yield env.timeout(group.start)
        gaps = self._gaps(group, rng)
        stop = group.stop if group.stop is not None else math.inf
        while True:
            gap = next(gaps)
            if gap:
                yield env.timeout(gap)
            if env.now >= stop:
                return
            for _ in range(group.batch):
                order = orders[rng.pick(cdf)] if len(orders) > 1 else orders[0]
                yield from self._one(group, task, order, rng)
            yield from settle(env, task)

    def _one(self, group: WorkloadGroup, task: Task, order: int, rng):
        """One allocation (a THP fault with its fallback, a netbuf with its order-0 retry)."""
        kind = group.kind
        if kind is PageKind.THP:
            yield from self._thp_fault(group, task, rng)
            return
        gfp = kind_gfp(self.cfg, kind, order)
        pfn = yield from self._timed(group, task, gfp, order)
        if pfn < 0 and kind is PageKind.NETBUF and order:
            order = 0
            pfn = yield from self._timed(group, task, kind_gfp(self.cfg, kind, 0), 0)
        if pfn >= 0:
            self.setup_page(group, pfn, order, rng)
            task.debt += self._fault_cost(kind, order)

    def _fault_cost(self, kind: PageKind, order: int) -> float:
        c = self.costs
        if kind in (PageKind.ANON, PageKind.PINNED):
            return c.anon_fault_us * 1e-6 * (1 << order)
        if kind is PageKind.FILE:
            return (c.file_fault_us + c.clear_page_us) * 1e-6 * (1 << order)
        return 0.0

    def _timed(self, group: WorkloadGroup, task: Task, gfp: int, order: int):
        """alloc_pages with its latency and outcome recorded under kind/order."""
        env = self.env
        key = f"{group.kind.value}/order{order}"
        start = env.now + task.debt
        pfn = yield from self.alloc.alloc_pages(task, gfp, order)
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = Histogram()
            self.requests[key] = [0, 0]
        hist.record(env.now + task.debt - start)
        stats = self.requests[key]
        stats[0] += 1
        stats[1] += pfn >= 0
        return pfn

    def _thp_fault(self, group: WorkloadGroup, task: Task, rng):
        """do_huge_pmd_anonymous_page: an order-9 page, or base pages on fallback."""
        m = self.m
        gfp = thp_gfp(self.cfg, group.madvise)
        if gfp is not None:
            pfn = yield from self._timed(group, task, gfp, PAGEBLOCK_ORDER)
            if pfn >= 0:
                m.events["thp_fault_alloc"] += 1
                self.setup_page(group, pfn, PAGEBLOCK_ORDER, rng)
                task.debt += self.costs.thp_fault_nocompact_us * 1e-6
                return
            m.events["thp_fault_fallback"] += 1
        base = self._as_anon.get(group.name)
        if base is None:
            base = self._as_anon[group.name] = dataclasses.replace(group, kind=PageKind.ANON)
        for _ in range(HPAGE_PMD_NR):
            pfn = yield from self._timed(group, task, GFP_HIGHUSER_MOVABLE, 0)
            if pfn < 0:
                return
            self.setup_page(base, pfn, 0, rng)
            task.debt += self.costs.anon_fault_us * 1e-6

