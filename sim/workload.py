"""Allocating tasks: groups of SimPy processes, their pages' lifetimes and states.

A group's tasks issue requests (Poisson, periodic, bursts, or fill-then-churn), each of
`batch` blocks with orders from the group's mix and GFP flags from its page kind, the way
the kernel's callers ask (page cache and anonymous faults GFP_HIGHUSER_MOVABLE; THP per
`transparent_hugepage/{enabled,defrag}` and MADV_HUGEPAGE as `vma_thp_gfp_mask` does,
falling back to base pages; slab GFP_KERNEL with or without __GFP_RECLAIMABLE; fork's
stacks GFP_KERNEL; network buffers GFP_ATOMIC at order 3 with __GFP_NORETRY, falling back
to order 0 as `skb_page_frag_refill` does; balloon pages as `balloon_page_alloc`). Each
allocated block gets page states drawn from the group's probabilities and a deadline
from its lifetime distribution; a reaper frees due blocks every `lifetime_tick`. Pages
reach and leave the LRU lists through per-cpu batches (`folio_batch_move_lru`,
`release_pages`) that take the node's lruvec lock, so compaction and reclaim contend
with the workload for it. Simplified: tasks own no address space; a block is freed by
its deadline or by reclaim; a request's (or a reaper tick's) LRU batches take the lock
once, for all their pages.

Common random numbers (sim/rng.py): a task's k-th request takes its arrival gap, orders,
lifetimes and page states from record k of the task's stream, one fixed slot per block,
so what the simulated kernel does (a failed allocation, a THP fallback, a slower fault)
never changes what later requests ask for; only the arrival times shift with the time
the task spent allocating. Runs with the same seed under different designs, profiles or
tunables therefore see the same workload. A new per-task source of randomness takes a
stream of its own name (`rngs(f"...{group}.{index}")`), never draws from this one.
"""

from __future__ import annotations

import dataclasses
import math

import cython
from cython.cimports.libc.math import ceil, exp, log1p

from compactsim.sim.charge import charge_frees, settle
from compactsim.sim.config import (Arrival, Lifetime, LifetimeConfig, MovableOps, PageKind,
                        SimConfig, ThpDefrag, ThpEnabled, WorkloadGroup)
from compactsim.sim.gfp import (__GFP_COMP, __GFP_KSWAPD_RECLAIM, __GFP_NOMEMALLOC, __GFP_NORETRY,
                     __GFP_NOWARN, __GFP_RECLAIMABLE, GFP_ATOMIC, GFP_HIGHUSER_MOVABLE,
                     GFP_KERNEL, GFP_TRANSHUGE, GFP_TRANSHUGE_LIGHT)
from compactsim.sim.histogram import Histogram
from compactsim.sim.kernelmem import KernelMemory
from compactsim.sim.lifetimes import Bucket, Lifetimes
from compactsim.sim.lru import (del_page_from_lru, del_pages_from_lru, lru_add_batch_kept,
                                lru_add_drain, lru_list_for)
from compactsim.sim.machine import LIST_BALLOON, LIST_ZSPAGES, Machine
from compactsim.sim import config as sim_config
from compactsim.sim import page as pg
from compactsim.sim import pageblock
from compactsim.sim.page import (KIND_CODE, PG_DIRTY, PG_EXTRA_REF, PG_LOCKED, PG_MOVABLE_OPS,
                                 PG_WRITEBACK, MemMap)
from compactsim.sim.page_alloc import free_pages, free_unref_page_list, rmqueue_pcplist_bulk
from compactsim.sim.rng import Draws, RngStreams, Stream, Uniforms
from compactsim.sim.slowpath import MUST_WAIT, Allocator
from compactsim.sim.task import Task
from compactsim.sim.thp import DeferredSplit
from compactsim.sim.zone import Zone
from compactsim.sim.zram import ZSPAGE_GFP_MOVABLE, ZSPAGE_GFP_UNMOVABLE, Zram

# The states and flags the per-page loops test, as C constants where compiled.
ALLOC = cython.declare(cython.int, pg.ALLOC)
PG_ISOLATED = cython.declare(cython.int, pg.PG_ISOLATED)
PG_LRU = cython.declare(cython.int, pg.PG_LRU)
PG_MLOCKED = cython.declare(cython.int, pg.PG_MLOCKED)
PAGEBLOCK_ORDER = cython.declare(cython.int, pageblock.PAGEBLOCK_ORDER)
MAX_ORDER = cython.declare(cython.int, sim_config.MAX_ORDER)

HPAGE_PMD_NR = 1 << PAGEBLOCK_ORDER
# Lifetime distributions by GroupPlan.life_kind (C constants where compiled).
LIFETIME_KINDS = (Lifetime.EXPONENTIAL, Lifetime.FIXED, Lifetime.UNIFORM, Lifetime.LOGNORMAL,
                  Lifetime.FOREVER)
LIFE_EXPONENTIAL = cython.declare(cython.int, 0)
LIFE_FIXED = cython.declare(cython.int, 1)
LIFE_UNIFORM = cython.declare(cython.int, 2)
LRU_BATCH = cython.declare(cython.int, 15)  # PAGEVEC_SIZE / FOLIO_BATCH_SIZE: per-cpu batch
# The kinds the per-request and per-free paths test: as kind codes (C constants where
# compiled) and as module globals (an enum member costs Python 3.11's EnumType.__getattr__
# hook at every read).
ZSMALLOC = cython.declare(cython.int, KIND_CODE[PageKind.ZSMALLOC])
BALLOON = cython.declare(cython.int, KIND_CODE[PageKind.BALLOON])
KIND_THP = PageKind.THP
KIND_NETBUF = PageKind.NETBUF
COMPACT_CLUSTER = 32    # folios the lru_lock_batch_hold_us cost is measured for
FAULT_LOG_LINES = 200_000


def task_pids(cfg: SimConfig) -> dict[str, list[int]]:
    """The pid of every task of every group (replay groups have none), in start order."""
    pids: dict[str, list[int]] = {}
    pid = 1000
    for group in cfg.workload:
        if group.kind is PageKind.REPLAY:
            continue
        pids[group.name] = list(range(pid, pid + group.tasks))
        pid += group.tasks
    return pids


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


@cython.dataclasses.dataclass
@cython.cclass
class GroupPlan:
    """What every allocation of a group shares, worked out once."""

    group: WorkloadGroup
    code: int                       # kind byte
    base_flags: int                 # flags every page gets (pinned, movable_ops)
    random_states: bool             # any page-state share above zero
    lru: int                        # LRU list, or -1
    driver_list: int                # zspage or balloon list, or -1
    balloon: bool
    lifetime: LifetimeConfig | None  # None for FOREVER
    orders: list[int]
    cdf: list[float]
    gfp: dict[int, int]             # order -> GFP flags
    fault_cost: dict[int, float]    # order -> seconds of fault work after the allocation
    latency: dict[int, Histogram]   # order -> allocation latency
    stats: dict[int, list[int]]     # order -> [attempts, successes]
    width: int                      # uniforms per block: order pick, lifetime, page states
    kernel_sources: tuple | None    # the implicit allocations it owes (KernelMemory.note)
    name: str                       # the group's
    forks: float                    # forks per request that allocate implicitly
    dirty: float                    # the group's page-state shares
    extra_ref: float
    mlocked: float
    writeback: float
    locked: float
    life_kind: int                  # LIFETIME_KINDS.index(the lifetime's distribution)
    life_mean: float
    life_sigma: float
    life_mu: float                  # lognormal: ln(mean) - sigma^2 / 2

    @cython.locals(kind=cython.int)
    def draw_lifetime(self, rng: Uniforms) -> float:
        """Seconds a block lives, drawn from the group's lifetime distribution."""
        kind = self.life_kind
        if kind == LIFE_EXPONENTIAL:
            return rng.exponential(self.life_mean)
        if kind == LIFE_FIXED:
            return self.life_mean
        if kind == LIFE_UNIFORM:
            return 2.0 * self.life_mean * rng.random()
        return exp(self.life_mu + self.life_sigma * rng.normal())


@cython.cclass
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
        self.lru_page_hold = self.costs.lru_lock_batch_hold_us * 1e-6 / COMPACT_CLUSTER
        self.pcp_alloc_s = self.costs.pcp_alloc_ns * 1e-9
        self.lifetimes = Lifetimes(m, m.config.sampling.lifetime_tick)
        self.kernel = KernelMemory(m, allocator, self.lifetimes)   # implicit allocations
        self.latency: dict[str, Histogram] = {}
        self.requests: dict[str, list[int]] = {}     # "kind/orderN" -> [attempts, successes]
        self._as_anon: dict[str, GroupPlan] = {}  # THP groups' base-page fallback
        self._as_anon_kept: dict[str, GroupPlan] = {}  # ... and its pages no munmap frees
        self.deferred_split = DeferredSplit(m)         # partly unmapped THPs
        self.unmapping: dict[int, int] = {}            # THP head -> pages its deadline unmaps
        self.plans = {g.name: self._plan(g) for g in self.cfg.workload}
        self._extra_plans: dict[int, GroupPlan] = {}  # groups derived at run time
        self.fault_log: list[str] = []                # thpscale-style per-fault lines
        # (request key, block, order, lifetime s, page states) of every block set up from
        # a request's draws, when a list (for checking common random numbers)
        self.block_log: list[tuple] | None = None
        self.touched = 0          # the reaper's touch of due pages (see _reaper)
        self.reapers = [Task(comm="reaper", pid=90 + n.node_id, cpu=n.cpus[0], node=n.node_id)
                        for n in m.nodes]
        pids = task_pids(self.cfg)
        for gi, group in enumerate(self.cfg.workload):
            if group.kind is PageKind.REPLAY:
                continue
            for t, pid in enumerate(pids[group.name]):
                cpu = (gi + t) % m.config.machine.cpus
                task = Task(comm=group.name[:15], pid=pid, cpu=cpu, node=m.cpu_node[cpu])
                self.env.process(self._task(group, task, t))
        self.env.process(self._reaper())

    # --- page bookkeeping ----------------------------------------------------------------

    def _plan(self, group: WorkloadGroup) -> GroupPlan:
        kind = group.kind
        code = KIND_CODE[kind]
        base = PG_EXTRA_REF if kind is PageKind.PINNED else 0
        movable_ops = kind is PageKind.BALLOON or (
            kind is PageKind.ZSMALLOC and self.cfg.kernel.movable_ops is not MovableOps.NONE)
        if movable_ops:
            base |= PG_MOVABLE_OPS
        driver = {PageKind.ZSMALLOC: LIST_ZSPAGES, PageKind.BALLOON: LIST_BALLOON}.get(kind, -1)
        weights = [w for _, w in group.order_mix]
        total = sum(weights)
        orders = [o for o, _ in group.order_mix]
        extra = [0] if kind in (PageKind.THP, PageKind.NETBUF) else []   # their fallbacks
        gfp = {} if kind in (PageKind.THP, PageKind.REPLAY) else \
            {o: kind_gfp(self.cfg, kind, o) for o in orders + ([0] if kind is PageKind.NETBUF
                                                                else [])}
        life_draws = group.lifetime.distribution not in (Lifetime.FOREVER, Lifetime.FIXED)
        states = sum(1 for share in (group.dirty, group.writeback, group.locked,
                                     group.extra_ref, group.mlocked) if share)
        return GroupPlan(
            width=(len(orders) > 1) + life_draws + states,
            group=group, code=code, base_flags=base,
            random_states=any((group.dirty, group.writeback, group.locked, group.extra_ref,
                               group.mlocked)),
            lru=lru_list_for(code, 0), driver_list=driver, balloon=kind is PageKind.BALLOON,
            lifetime=None if group.lifetime.distribution is Lifetime.FOREVER else group.lifetime,
            orders=orders, cdf=[sum(weights[:i + 1]) / total for i in range(len(weights))],
            gfp=gfp, fault_cost={o: self._fault_cost(kind, o) for o in orders + extra},
            latency={}, stats={}, kernel_sources=KernelMemory.sources(group, kind),
            name=group.name, forks=group.forks if group.implicit_kernel else 0,
            dirty=group.dirty, extra_ref=group.extra_ref, mlocked=group.mlocked,
            writeback=group.writeback, locked=group.locked,
            life_kind=LIFETIME_KINDS.index(group.lifetime.distribution),
            life_mean=group.lifetime.mean, life_sigma=group.lifetime.sigma,
            # lognormal with the given mean: mu = ln(mean) - sigma^2 / 2
            life_mu=math.log(max(group.lifetime.mean, 1e-12)) - group.lifetime.sigma ** 2 / 2)

    def setup_page(self, group: WorkloadGroup, pfn: int, order: int, rng) -> None:
        """Give a new block its owner kind, page states, list and deadline."""
        plan = self.plans.get(group.name)
        if plan is None or plan.group is not group:
            plan = self._extra_plans.get(id(group))
            if plan is None:
                plan = self._extra_plans[id(group)] = self._plan(group)
        self.setup_pages(plan, (pfn,), order, rng)

    @cython.locals(pfn=cython.Py_ssize_t, nr=cython.Py_ssize_t, node_pages=cython.Py_ssize_t,
                   code=cython.int, flags=cython.int, lru=cython.int, added=cython.Py_ssize_t,
                   due=cython.long,
                   now=cython.double, tick=cython.double, exp_mean=cython.double,
                   u=cython.double, seconds=cython.double, base_flags=cython.int,
                   mem=MemMap, lifetimes=Lifetimes, plan=GroupPlan, random_states=cython.bint,
                   plan_lru=cython.int, driver_list=cython.int)
    def setup_pages(self, plan: "GroupPlan", pfns, order: int, rng,
                    batch: list[int] | None = None) -> int:
        """setup_page for several blocks of one group and order (the hot path: wheel
        operations are inlined). Returns the pages bound for an LRU list: with
        `batch` (a task's lru_add batch, sim/lru.py) they wait there, not yet PageLRU;
        without, they go on their list at once."""
        m = self.m
        mem = m.mem
        code = plan.code
        nr = 1 << order
        life = plan.lifetime
        lifetimes = self.lifetimes
        now, tick = self.env.now, lifetimes.tick
        node_pages = m.node_pages
        nodes = m.nodes
        exp_mean = plan.life_mean if plan.life_kind == LIFE_EXPONENTIAL else 0.0
        # Exponential lifetimes without page states: every uniform of the batch at once
        # (the same values, in the same order, as one draw per page).
        log = self.block_log if isinstance(rng, Draws) else None
        block = rng.block if log is not None else 0
        uniforms = iter(rng.randoms(len(pfns))) if exp_mean and not plan.random_states \
            else None
        seconds = 0.0
        added = 0
        lru_batch = batch if batch is not None else []
        base_flags, random_states = plan.base_flags, plan.random_states
        plan_lru, driver_list = plan.lru, plan.driver_list
        for page in pfns:               # `page` the list's own int object, passed on as is
            pfn = page
            mem.kind_v[pfn] = code
            if life is not None:          # before the page states: I/O timers key on it
                if exp_mean:
                    u = next(uniforms) if uniforms is not None else rng.random()
                    seconds = -exp_mean * log1p(-u)
                else:
                    seconds = plan.draw_lifetime(rng)
                due = max(1, cython.cast(cython.long, ceil((now + seconds) / tick)))
                lifetimes.schedule(pfn, due)
            flags = base_flags
            if random_states:
                states = self._draw_flags(plan, pfn, rng)
                flags |= states
            if log is not None:
                log.append((rng.key, block, order, seconds,
                            states if random_states else 0))
                block += 1
            lru = plan_lru if not flags & PG_MLOCKED else lru_list_for(code, flags)
            if lru >= 0:
                lru_batch.append(page)
                added += nr
            elif driver_list >= 0:
                mem.list_add(nodes[pfn // node_pages].lists[driver_list], pfn)
                if plan.balloon:
                    m.events["balloon_inflate"] += 1
            mem.flags_v[pfn] = flags
        if batch is None:
            lru_add_drain(m, lru_batch)
        self.kernel.note(plan.name, plan.kernel_sources, len(pfns) << order,
                         mem.expire_v[pfns[-1]])
        return added

    @cython.locals(flags=cython.int)
    def _draw_flags(self, plan: GroupPlan, pfn: int, rng: Uniforms) -> int:
        """Page states drawn from the group's shares; I/O states end on their own."""
        flags = 0
        if plan.dirty and rng.random() < plan.dirty:
            flags |= PG_DIRTY
        if plan.extra_ref and rng.random() < plan.extra_ref:
            flags |= PG_EXTRA_REF
        if plan.mlocked and rng.random() < plan.mlocked:
            flags |= PG_MLOCKED
        if plan.writeback and rng.random() < plan.writeback:
            flags |= PG_WRITEBACK
            self.alloc.reclaim.clear_flag_later(pfn, PG_WRITEBACK,
                                                self.costs.writeback_page_ms * 1e-3)
        if plan.locked and rng.random() < plan.locked:
            flags |= PG_LOCKED
            self.alloc.reclaim.clear_flag_later(pfn, PG_LOCKED,
                                                self.costs.page_lock_hold_ms * 1e-3)
        return flags

    @cython.locals(m=Machine, mem=MemMap, pfn=cython.Py_ssize_t, order=cython.int,
                   flags=cython.int, kind=cython.int)
    def release_page(self, task: Task, pfn: int):
        """The owner frees a block: off its list, back to the allocator."""
        m = self.m
        mem = m.mem
        order = mem.pstate_v[pfn] - ALLOC
        flags = mem.flags_v[pfn]
        kind = mem.kind_v[pfn]
        if flags & PG_LRU:
            del_page_from_lru(m, pfn, 1 << order, lru_list_for(kind, flags))
        elif flags & PG_MOVABLE_OPS or kind == ZSMALLOC:
            mem.list_del(pfn)
            if kind == BALLOON:
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

    @cython.locals(task=Task)
    def lru_batch_drain(self, task: Task, nid: int):
        """The task's per-cpu LRU batch reaches the lists: `folio_batch_move_lru` (adds) or
        `release_pages` (frees) under the node's lruvec lock, held for the pages moved
        (a task's earlier CPU time is paid before it calls this). The hold, after any
        earlier reserved sections, becomes the task's time; behind an ordinary holder
        (compaction, reclaim) the task queues for the lock."""
        lock = self.m.nodes[nid].lru_lock
        hold = task.lru_pending * self.lru_page_hold
        task.lru_pending = 0
        waited = lock.reserve(hold)
        if waited is None:
            yield lock.lock()
        if task.lru_add:
            lru_add_drain(self.m, task.lru_add, lru_add_batch_kept(self.m, task.lru_add))
        if waited is not None:
            task.debt += waited + hold
            return
        yield self.env.timeout(hold)
        lock.unlock()

    # --- the reaper ----------------------------------------------------------------------

    @cython.locals(task=Task, tick=cython.long, rr=cython.Py_ssize_t, pfn=cython.Py_ssize_t,
                   i=cython.Py_ssize_t, nid=cython.Py_ssize_t, node_pages=cython.Py_ssize_t,
                   s=cython.int, f=cython.int, cpu=cython.int, entries=cython.int[:],
                   pstate=cython.uchar[:], flags=cython.uchar[:], kinds=cython.uchar[:],
                   expire=cython.uint[:], mem=MemMap, bucket=Bucket, nxt=cython.int[:],
                   touched=cython.Py_ssize_t, lifetimes=Lifetimes)
    def _reaper(self):
        """Free every block whose deadline has come, once per tick."""
        m = self.m
        mem = m.mem
        nxt = mem.nxt_v
        tick = 0
        period = self.lifetimes.tick
        lifetimes = self.lifetimes
        multi_node = len(m.nodes) > 1
        node_pages = m.node_pages
        node_cpus = [node.cpus for node in m.nodes]
        pstate, flags, kinds = mem.pstate_v, mem.flags_v, mem.kind_v
        rr = 0
        while True:
            yield self.env.timeout(period)
            tick += 1
            bucket = lifetimes.take(tick)
            outcomes = []
            task = self.reapers[0]
            if bucket is not None:
                expire = mem.expire_v
                entries = bucket.view
                # Touch each due page's fields first: these loads do not depend on one
                # another, so their cache misses overlap, where the loop below would
                # wait for them one page at a time. (The sum is kept only so that the
                # loads are not optimised away.)
                touched = 0
                for i in range(bucket.n):
                    pfn = entries[i]
                    touched += pstate[pfn] + expire[pfn] + flags[pfn] + kinds[pfn] + nxt[pfn]
                self.touched = touched
                # Order-0 LRU pages go back as one list per CPU (release_pages), in the
                # order the CPUs were first taken; the rest one by one.
                lists: dict[int, list[int]] = {}
                for i in range(bucket.n):
                    pfn = entries[i]
                    s = pstate[pfn]
                    if not (ALLOC <= s <= ALLOC + MAX_ORDER and expire[pfn] == tick and kinds[pfn]):
                        continue
                    f = flags[pfn]
                    if f & PG_ISOLATED:
                        self.release_isolated(pfn)
                        continue
                    nid = pfn // node_pages if multi_node else 0
                    if multi_node:
                        task = self.reapers[nid]
                    cpus = node_cpus[nid]
                    cpu = cpus[rr % len(cpus)]
                    rr += 1
                    if s == ALLOC and f & PG_LRU:
                        expire[pfn] = 0          # a duplicate entry is stale now
                        pfns = lists.get(cpu)
                        if pfns is None:
                            pfns = lists[cpu] = []
                        pfns.append(pfn)
                        continue
                    task.cpu = cpu
                    if s == ALLOC + PAGEBLOCK_ORDER and pfn in self.unmapping:
                        self.deferred_split.partial_unmap(pfn, self.unmapping.pop(pfn))
                        continue
                    outcomes.append(self.release_page(task, pfn))
                for cpu, pfns in lists.items():
                    task = self.reapers[m.cpu_node[cpu]]
                    task.cpu = cpu
                    del_pages_from_lru(m, pfns)
                    task.lru_pending += len(pfns)
                    outcomes.extend(free_unref_page_list(m, task, pfns))
                    task.debt += len(pfns) * self.costs.pcp_free_ns * 1e-9
            if self.zram is not None and self.zram.enabled:
                outcomes.extend(self.zram.expire(self.reapers[0], tick))
            # release_pages takes the lruvec lock before it frees the pages.
            for reaper in self.reapers:
                if reaper.lru_pending:
                    yield from self.lru_batch_drain(reaper, reaper.node)
            if outcomes:
                yield from charge_frees(self.env, task, self.costs, outcomes)
                yield from settle(self.env, task)

    # --- tasks ---------------------------------------------------------------------------

    @cython.locals(z=Zone, free=cython.Py_ssize_t, managed=cython.Py_ssize_t)
    def in_use_fraction(self) -> float:
        free = managed = 0
        for z in self.m.zones:
            free += z.free_pages + z.pcp_count()
            managed += z.managed_pages
        return 1.0 - free / managed

    @cython.locals(task=Task, plan=GroupPlan, draws=Draws, stream=Stream, k=cython.Py_ssize_t,
                   j=cython.Py_ssize_t, done=cython.Py_ssize_t, batch=cython.Py_ssize_t,
                   record=cython.Py_ssize_t, head=cython.Py_ssize_t, filling=cython.bint,
                   bulk=cython.bint, compound=cython.bint, stop=cython.double,
                   fill_fraction=cython.double, gap=cython.double, poisson=cython.bint,
                   rate=cython.double, periodic_gap=cython.double, burst=cython.Py_ssize_t,
                   burst_interval=cython.double)
    def _task(self, group: WorkloadGroup, task: Task, index: int):
        """Request after request; request k reads only record k of the task's stream."""
        env = self.env
        stream = self.rngs(f"workload.{group.name}.{index}")
        plan = self.plans[group.name]
        orders, cdf = plan.orders, plan.cdf
        bulk = orders == [0] and group.kind is not PageKind.THP
        compound = not bulk
        # The gap before request k: Poisson (also FILL once filled) from the uniform at
        # the head of its record, unused while a FILL group is still filling; periodic;
        # or bursts of `burst` back to back every `burst_interval`.
        poisson = group.pattern in (Arrival.POISSON, Arrival.FILL)
        rate = group.rate if poisson else 0.0
        periodic_gap = 1.0 / group.rate if group.pattern is Arrival.PERIODIC else 0.0
        burst, burst_interval = (group.burst, group.burst_interval) \
            if group.pattern is Arrival.BURST else (1, 0.0)
        head = 1 if poisson else 0
        batch = group.batch
        record = head + batch * plan.width
        if group.start > env.now:
            yield env.timeout(group.start)
        filling = group.pattern is Arrival.FILL
        fill_fraction = group.fill_fraction
        stop = group.stop if group.stop is not None else math.inf
        name = group.name
        k = 0
        while True:
            draws = Draws((name, index, k), stream.randoms(record), head, plan.width)
            if filling and self.in_use_fraction() >= fill_fraction:
                filling = False
            if poisson:
                gap = draws.random()
                gap = 0.0 if filling else -log1p(-gap) / rate
            elif periodic_gap:
                gap = periodic_gap
            else:
                gap = burst_interval if k % burst == 0 else 0.0
            if gap:
                yield env.timeout(gap)
            if env.now >= stop:
                lru_add_drain(self.m, task.lru_add)
                return
            done = self._bulk(plan, task, draws.seek(0), batch) if bulk else 0
            for j in range(done, batch):
                draws.seek(j)
                order = orders[draws.pick(cdf)] if len(orders) > 1 else orders[0]
                yield from self._one(plan, task, order, draws)
            owed = self.kernel.request_done(name, plan.forks)
            if owed:
                yield from self.kernel.allocate(task, owed)
            if task.debt > 0:
                yield from settle(env, task)
            # A full batch, or (groups with compound pages) one a compound page flushed.
            if task.lru_pending >= LRU_BATCH or compound and \
                    len(task.lru_add) > lru_add_batch_kept(self.m, task.lru_add):
                yield from self.lru_batch_drain(task, task.node)
            k += 1

    @cython.locals(k=cython.Py_ssize_t, cost=cython.double)
    def _bulk(self, plan: GroupPlan, task: Task, rng, n: int) -> int:
        """Order-0 pages for a request straight from the per-cpu list; returns how many."""
        pfns = rmqueue_pcplist_bulk(self.m, task, plan.gfp[0], n)
        k = len(pfns)
        if k:
            cost = self.pcp_alloc_s
            task.debt += k * (cost + plan.fault_cost[0])
            self._record(plan, 0, cost, k, k)
            task.lru_pending += self.setup_pages(plan, pfns, 0, rng, task.lru_add)
        return k

    @cython.locals(hist=Histogram, stats=list)
    def _record(self, plan: GroupPlan, order: int, latency: float, attempts: int, ok: int):
        hist = plan.latency.get(order)
        if hist is None:
            key = f"{plan.group.kind.value}/order{order}"
            hist = plan.latency[order] = self.latency.setdefault(key, Histogram())
            plan.stats[order] = self.requests.setdefault(key, [0, 0])
        hist.record(latency, attempts)
        stats = plan.stats[order]
        stats[0] += attempts
        stats[1] += ok

    def _one(self, plan: GroupPlan, task: Task, order: int, rng):
        """One allocation (a THP fault with its fallback, a netbuf with its order-0 retry)."""
        kind = plan.group.kind
        if kind is KIND_THP:
            yield from self._thp_fault(plan, task, rng)
            return
        pfn = yield from self._timed(plan, task, plan.gfp[order], order)
        if pfn < 0 and kind is KIND_NETBUF and order:
            order = 0
            pfn = yield from self._timed(plan, task, plan.gfp[0], 0)
        if pfn >= 0:
            task.lru_pending += self.setup_pages(plan, (pfn,), order, rng, task.lru_add)
            task.debt += plan.fault_cost[order]

    def _fault_cost(self, kind: PageKind, order: int) -> float:
        c = self.costs
        if kind in (PageKind.ANON, PageKind.PINNED):
            return c.anon_fault_us * 1e-6 * (1 << order)
        if kind is PageKind.FILE:
            return (c.file_fault_us + c.clear_page_us) * 1e-6 * (1 << order)
        return 0.0

    @cython.locals(task=Task)
    def _timed(self, plan: GroupPlan, task: Task, gfp: int, order: int):
        """alloc_pages with its latency and outcome recorded under kind/order."""
        env = self.env
        start = env.now + task.debt
        pfn = self.alloc.alloc_pages_nowait(task, gfp, order)
        if pfn == MUST_WAIT:
            pfn = yield from self.alloc.alloc_pages(task, gfp, order)
        self._record(plan, order, env.now + task.debt - start, 1, int(pfn >= 0))
        return pfn

    def _thp_fault(self, plan: GroupPlan, task: Task, rng):
        """do_huge_pmd_anonymous_page: an order-9 page, or base pages on fallback; logs
        one thpscale-style line per 2 MB unit, with the latency of faulting all of it."""
        m = self.m
        env = self.env
        group = plan.group
        start = env.now + task.debt
        gfp = thp_gfp(self.cfg, group.madvise)
        if gfp is not None:
            pfn = yield from self._timed(plan, task, gfp, PAGEBLOCK_ORDER)
            if pfn >= 0:
                m.events["thp_fault_alloc"] += 1
                self.deferred_split.forget(pfn)
                if group.unmap:
                    self.unmapping[pfn] = round(group.unmap * HPAGE_PMD_NR)
                elif self.unmapping:
                    self.unmapping.pop(pfn, None)
                task.lru_pending += self.setup_pages(plan, (pfn,), PAGEBLOCK_ORDER, rng,
                                                     task.lru_add)
                task.debt += self.costs.thp_fault_nocompact_us * 1e-6
                self._log_fault(task, "huge", env.now + task.debt - start)
                return
            m.events["thp_fault_fallback"] += 1
        base = self._as_anon.get(group.name)
        if base is None:
            base = self._as_anon[group.name] = self._plan(
                dataclasses.replace(group, kind=PageKind.ANON, order_mix=((0, 1.0),)))
            self._as_anon_kept[group.name] = self._plan(dataclasses.replace(
                group, kind=PageKind.ANON, order_mix=((0, 1.0),),
                lifetime=LifetimeConfig(distribution=Lifetime.FOREVER)))
        # A partial munmap at the deadline frees only the first `unmap` share of them.
        unmapped = round(group.unmap * HPAGE_PMD_NR) if group.unmap else HPAGE_PMD_NR
        kept = self._as_anon_kept[group.name]
        # The base pages' draws: keyed by the request, read only when the kernel falls back.
        name, index, k = rng.key
        draws = Draws((name, index, k, "fallback"),
                      self.rngs.keyed(f"workload.{name}.{index}.fallback", k,
                                      HPAGE_PMD_NR * base.width), 0, base.width)
        for i in range(HPAGE_PMD_NR):
            pfn = yield from self._timed(plan, task, GFP_HIGHUSER_MOVABLE, 0)
            if pfn < 0:
                break
            task.lru_pending += self.setup_pages(base if i < unmapped else kept, (pfn,), 0,
                                                 draws.seek(i), task.lru_add)
            task.debt += self.costs.anon_fault_us * 1e-6
        # thpscale times the touch and memset of the whole 2 MB unit: 512 base faults.
        self._log_fault(task, "base", env.now + task.debt - start)

    def _log_fault(self, task: Task, size: str, latency: float) -> None:
        if len(self.fault_log) < FAULT_LOG_LINES:
            self.fault_log.append(f"fault {task.pid} {size} {latency * 1e6:.0f}")

