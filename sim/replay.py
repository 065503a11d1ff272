"""Trace replay: a workload group that repeats a captured kmem page trace.

Reads an ftrace or babeltrace capture of ``mm_page_alloc`` / ``mm_page_free``
(sim/traceparse.py) and repeats it on the simulated machine:

- Pages the capture frees without having allocated them were in use before it
  began (``pair_events``). They are taken off the free lists when the group is
  built, before the first event, at their traced pfns.
- Events run at ``group.start + (trace time - first event time) * time_scale``;
  those at one trace time are replayed together, in file order. One SimPy
  process replays them all, so their order is kept even when the allocator's
  costs make the replay fall behind the trace.
- An allocation takes exactly the traced block when all of it is free in the
  simulation: ``take_block`` removes the free buddy block that contains it and
  gives the remainders back to that block's free list, as
  ``break_down_buddy_pages`` (mm/page_alloc.c, ``take_page_off_buddy``) does.
  Pages on per-cpu lists count as free: an order-0 one is taken off its list,
  those inside a larger block are drained to the buddy lists first. The
  allocation is then charged as a buddy allocation under ``zone->lock`` and
  traced as ``mm_page_alloc``, so a replay of the simulator's own trace (with
  pcp off) reproduces its free lists and its trace exactly. Otherwise the block is
  allocated normally through ``Allocator.alloc_pages`` with flags of the traced
  migratetype (GFP_KERNEL, GFP_HIGHUSER_MOVABLE, GFP_KERNEL|__GFP_RECLAIMABLE)
  and the traced pfns are remembered as that block.
- A free releases what the traced pages map to. A free of part of a held
  block first splits it into order-0 pages, as ``split_page`` does for the
  callers that free the pages of a higher-order allocation one by one.
- What a capture shows but a replay cannot have (frees of pages already freed,
  allocations of pages still held, because the capture lost events or missed
  CPUs) is counted, not refused: an allocation of held pages frees them first
  (their free was missed), a free of pages not held is skipped.

Simplified:

- Exact placements bypass watermarks (the traced kernel did allocate those
  pages); kswapd is woken when a placement leaves its zone under the LOW
  watermark. They do not relabel pageblocks: ``mm_page_alloc_extfrag`` is not
  replayed, so /proc/pagetypeinfo may differ from the traced run's.
- Replayed pages are owned by the group (kind ``replay``), are not on the LRU
  and have no deadline: only the trace frees them, never reclaim or the reaper.
- Traced pfns are used as simulated pfns as they are; relative pfns (from page
  pointers) start at pfn 0. A block that is not aligned to its order cannot be
  placed exactly and is allocated normally.
- Preallocated blocks carry no migratetype; those that cannot be placed
  exactly are allocated as movable at time 0.
"""

from __future__ import annotations

import dataclasses
import os

from compactsim.sim.buddy import add_to_free_list, del_page_from_free_list, free_one_page, mark_allocated
from compactsim.sim.charge import alloc_cost, charge, charge_frees, settle
from compactsim.sim.config import MAX_ORDER, PAGE_SIZE, LifetimeConfig, Lifetime, WorkloadGroup
from compactsim.sim.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_RECLAIMABLE
from compactsim.sim.histogram import Histogram
from compactsim.sim.machine import Machine
from compactsim.sim.page import ALLOC, KIND_CODE, PCP
from compactsim.sim.page_alloc import WORK_BUDDY, Outcome, trace_alloc
from compactsim.sim.pageblock import MigrateType
from compactsim.sim.schema import ConfigError, FieldError
from compactsim.sim.slowpath import Allocator
from compactsim.sim.task import Task
from compactsim.sim.traceparse import Pairing, Trace, pair_events, parse_trace_file
from compactsim.sim.zone import WMARK_LOW, Zone

# Flags an allocation of each traced migratetype (4.4+ numbering) is made with;
# HIGHATOMIC (3; pre-4.4 RESERVE) is asked for as unmovable.
MIGRATETYPE_GFP: dict[int, int] = {
    MigrateType.UNMOVABLE: GFP_KERNEL,
    MigrateType.MOVABLE: GFP_HIGHUSER_MOVABLE,
    MigrateType.RECLAIMABLE: GFP_KERNEL | __GFP_RECLAIMABLE,
    MigrateType.HIGHATOMIC: GFP_KERNEL,
}
PREALLOCATED_GFP = GFP_HIGHUSER_MOVABLE


def take_block(z: Zone, pfn: int, order: int) -> bool:
    """Take the block [pfn, pfn + 2^order) off the free lists if all of it is free.

    Finds the free buddy block holding it, removes it, and puts the parts that
    are not the target back on that block's free list, halving as
    ``break_down_buddy_pages`` does; the target becomes an allocated head.
    An order-0 page on a per-cpu list is taken off that list; per-cpu pages
    inside a larger block go back to the buddy lists first (as a drain would).
    Returns False when some page of the block is not free or the block is
    not aligned to its order; the free lists are then unchanged but for
    such a drain.
    """
    if pfn & ((1 << order) - 1) or not (z.contains(pfn) and z.contains(pfn + (1 << order) - 1)):
        return False
    mem = z.mem
    pstate = mem.pstate
    if z.pcp is not None:
        if order == 0:
            if PCP <= pstate[pfn] < PCP + 16:
                return _take_from_pcp(z, pfn, pstate[pfn] - PCP)
        else:
            for p in range(pfn, pfn + (1 << order)):
                if PCP <= pstate[p] < PCP + 16:   # back to the buddy lists first
                    mt = pstate[p] - PCP
                    _take_from_pcp(z, p, mt)
                    free_one_page(z, p, 0, mt)
    high = order
    while True:
        head = pfn & ~((1 << high) - 1)
        s = pstate[head]
        if s < 64 and s & 15 == high:
            break
        high += 1
        if high > MAX_ORDER or pfn & ~((1 << high) - 1) < z.zone_start_pfn:
            return False
    mt = s >> 4
    del_page_from_free_list(z, head, high, mt)
    page = head
    while high > order:
        high -= 1
        size = 1 << high
        if pfn >= page + size:
            buddy, page = page, page + size
        else:
            buddy = page + size
        add_to_free_list(z, buddy, high, mt)
    mark_allocated(z, pfn, order)
    return True


def _take_from_pcp(z: Zone, pfn: int, mt: int) -> bool:
    pcp = z.pcp
    if pcp is None:
        return False
    for cpu, lists in enumerate(pcp.lists):
        lst = lists[mt]
        try:
            lst.remove(pfn)
        except ValueError:
            continue
        pcp.counts[cpu] -= 1
        z.mem.pstate[pfn] = ALLOC
        return True
    return False


def memory_needed(pfn_max: int, nodes: int, struct_page_size: int) -> int:
    """Smallest machine.memory (bytes per node, whole 4 MiB steps) whose pfns
    below the last node's memmap reach `pfn_max`."""
    step = (PAGE_SIZE << MAX_ORDER) // PAGE_SIZE
    # usable pfns grow by about (nodes - struct_page_size / PAGE_SIZE) per page of each
    # node: start just below the answer, so the loop below takes a step or two
    usable = nodes * PAGE_SIZE - struct_page_size
    per_node = max(step, ((pfn_max + 1) * PAGE_SIZE // usable) // step * step)
    while nodes * per_node - -(-per_node * struct_page_size // PAGE_SIZE) <= pfn_max:
        per_node += step
    return per_node * PAGE_SIZE


@dataclasses.dataclass(slots=True)
class _Held:
    """Simulated block that backs a run of traced pages (sim_pfn -1: allocation failed)."""

    trace_pfn: int
    order: int
    sim_pfn: int


class Replay:
    """One `kind: replay` workload group: its trace, its process and its counts."""

    def __init__(self, m: Machine, allocator: Allocator, workload, group: WorkloadGroup):
        self.m = m
        self.env = m.env
        self.alloc = allocator
        self.workload = workload
        self.group = group
        self.index = m.config.workload.index(group)
        cfg = group.replay
        assert cfg is not None              # kind replay: the config requires its trace
        where = f"workload[{self.index}].replay"
        try:
            trace = parse_trace_file(cfg.path, gfp_era=cfg.gfp_era,
                                     struct_page_size=cfg.struct_page_size)
        except OSError as exc:
            raise ConfigError([FieldError(f"{where}.path",
                                          f"cannot read {cfg.path}: {exc.strerror or exc}")]
                              ) from exc
        except ValueError as exc:  # a bad gfp_era; TraceParseError is not caught here
            if type(exc) is not ValueError:
                raise
            raise ConfigError([FieldError(f"{where}.gfp_era", str(exc))]) from exc
        if not trace.events:
            raise ConfigError([FieldError(f"{where}.path",
                                          "has no mm_page_alloc or mm_page_free events")])
        if cfg.format.value != "auto" and trace.format != cfg.format.value:
            raise ConfigError([FieldError(f"{where}.format",
                                          f"is {cfg.format.value} but {cfg.path} is "
                                          f"{trace.format} text")])
        self.trace: Trace = trace
        self.pairing: Pairing = pair_events(trace)
        self._check_span(where)
        self.source = os.path.basename(cfg.path)
        self.owned = dataclasses.replace(group, lifetime=LifetimeConfig(
            distribution=Lifetime.FOREVER))
        self.rng = workload.rngs(f"replay.{group.name}")
        self.kind_code = KIND_CODE[group.kind]
        cpu = self.index % m.config.machine.cpus
        self.task = Task(comm=group.name[:15], pid=5000 + self.index, cpu=cpu,
                         node=m.cpu_node[cpu])
        self.held: dict[int, _Held] = {}   # traced page -> the block backing it
        self.counts = dict.fromkeys(
            ("events_replayed", "allocs", "frees", "exact", "remapped", "failed_allocs",
             "unknown_frees", "frees_of_failed", "double_allocs", "split_frees",
             "preallocated", "preallocated_exact", "preallocated_remapped"), 0)
        self._late_preallocated: list[tuple[int, int]] = []
        for pfn, order in self.pairing.preallocated:
            self.counts["preallocated"] += 1
            z = self._zone(pfn)
            if z is not None and take_block(z, pfn, order):
                self.counts["preallocated_exact"] += 1
                self._own(pfn, order, pfn)
            else:
                self._late_preallocated.append((pfn, order))
        self.env.process(self._run())

    # --- setup -------------------------------------------------------------------------

    def _check_span(self, where: str) -> None:
        """The traced pfns must lie below the memmap at the top of the machine."""
        m = self.m
        top = m.nodes[-1]
        usable_end = top.start_pfn + top.nr_pages - top.memmap_pages
        pfn_max = self.pairing.pfn_max
        if pfn_max < usable_end:
            return
        need = memory_needed(pfn_max, len(m.nodes), m.struct_page_size)
        nodes = f" per node ({len(m.nodes)} nodes)" if len(m.nodes) > 1 else ""
        raise ConfigError([FieldError(
            f"{where}.path",
            f"touches pfn {pfn_max} but the machine's free pages end at pfn "
            f"{usable_end - 1}: the trace needs at least {need >> 20} MiB of "
            f"machine.memory{nodes}")])

    def _zone(self, pfn: int) -> Zone | None:
        for z in self.m.zones:
            if z.contains(pfn):
                return z
        return None

    def _own(self, trace_pfn: int, order: int, sim_pfn: int) -> None:
        """Record the block and give it the group's page states (no deadline)."""
        h = _Held(trace_pfn, order, sim_pfn)
        for p in range(trace_pfn, trace_pfn + (1 << order)):
            self.held[p] = h
        if sim_pfn >= 0:
            self.workload.setup_page(self.owned, sim_pfn, order, self.rng)

    # --- the process -------------------------------------------------------------------

    def _run(self):
        env = self.env
        task = self.task
        for pfn, order in self._late_preallocated:
            sim = yield from self.alloc.alloc_pages(task, PREALLOCATED_GFP, order)
            if sim >= 0:
                self.counts["preallocated_remapped"] += 1
            self._own(pfn, order, sim)
        yield from settle(env, task)
        events = self.trace.events
        assert self.group.replay is not None
        scale = self.group.replay.time_scale
        t0 = events[0].time_s
        stop = self.group.stop
        cpus = self.m.config.machine.cpus
        i, n = 0, len(events)
        while i < n:
            t = events[i].time_s
            at = self.group.start + (t - t0) * scale
            if stop is not None and at >= stop:
                return
            if at > env.now:
                yield env.timeout(at - env.now)
            j = i
            while j < n and events[j].time_s == t:
                ev = events[j]
                task.cpu = ev.cpu % cpus
                task.node = self.m.cpu_node[task.cpu]
                if ev.kind == "alloc":
                    yield from self._alloc(ev.pfn, ev.order, ev.migratetype)
                else:
                    yield from self._free(ev.pfn, ev.order)
                self.counts["events_replayed"] += 1
                j += 1
            yield from settle(env, task)
            i = j

    def _alloc(self, pfn: int, order: int, migratetype: int):
        c = self.counts
        c["allocs"] += 1
        pages = range(pfn, pfn + (1 << order))
        if any(p in self.held for p in pages):
            c["double_allocs"] += 1          # their free is missing from the capture
            yield from self._release(pages, count=False)
        gfp = MIGRATETYPE_GFP.get(migratetype, GFP_KERNEL)
        z = self._zone(pfn)
        start = self.env.now + self.task.debt
        if z is not None and take_block(z, pfn, order):
            c["exact"] += 1
            self.m.events[f"pgalloc_{z.name.lower()}"] += 1 << order
            out = Outcome(pfn=pfn, zone=z, work=WORK_BUDDY)
            cpu_s, locked_s = alloc_cost(self.m.config.costs, out, order)
            yield from charge(self.env, self.task, cpu_s, out, locked_s)
            trace_alloc(self.m, self.task, pfn, order, gfp)
            self._record(order, start, True)
            if z.free_pages < z.wmark_pages(WMARK_LOW):
                self.alloc.reclaim.wakeup_kswapd(z.node_id, gfp, order, 1)
            self._own(pfn, order, pfn)
            return
        sim = yield from self.alloc.alloc_pages(self.task, gfp, order)
        self._record(order, start, sim >= 0)
        if sim >= 0:
            c["remapped"] += 1
        else:
            c["failed_allocs"] += 1
        self._own(pfn, order, sim)

    def _record(self, order: int, start: float, ok: bool) -> None:
        """Latency and outcome under replay/orderN, as the workload records its own."""
        key = f"{self.group.kind.value}/order{order}"
        wl = self.workload
        hist = wl.latency.get(key)
        if hist is None:
            hist = wl.latency[key] = Histogram()
            wl.requests[key] = [0, 0]
        hist.record(self.env.now + self.task.debt - start)
        stats = wl.requests[key]
        stats[0] += 1
        stats[1] += ok

    def _free(self, pfn: int, order: int):
        c = self.counts
        c["frees"] += 1
        pages = range(pfn, pfn + (1 << order))
        if not all(p in self.held for p in pages):
            c["unknown_frees"] += 1
        yield from self._release(pages, count=True)

    def _release(self, pages: range, count: bool):
        """Free the simulated blocks behind these traced pages (splitting a block of
        which only some pages go)."""
        held = self.held
        blocks: list[_Held] = []
        for p in pages:
            h = held.get(p)
            if h is not None and (not blocks or blocks[-1] is not h):
                blocks.append(h)
        outcomes = []
        failed = False
        for h in blocks:
            first, last = h.trace_pfn, h.trace_pfn + (1 << h.order)
            whole = pages.start <= first and last <= pages.stop
            if h.sim_pfn < 0:
                failed = True
                for p in range(max(first, pages.start), min(last, pages.stop)):
                    del held[p]
                continue
            if whole:
                for p in range(first, last):
                    del held[p]
                outcomes.append(self._free_sim(h.sim_pfn))
                continue
            if count:
                self.counts["split_frees"] += 1
            for k, piece in enumerate(self._split(h)):
                p = first + k
                if pages.start <= p < pages.stop:
                    del held[p]
                    outcomes.append(self._free_sim(piece.sim_pfn))
        if failed and count:
            self.counts["frees_of_failed"] += 1
        if outcomes:
            yield from charge_frees(self.env, self.task, self.m.config.costs, outcomes)

    def _split(self, h: _Held) -> list[_Held]:
        """split_page: the block becomes 2^order allocated order-0 pages."""
        mem = self.m.mem
        pieces = []
        flags = mem.flags[h.sim_pfn]
        for k in range(1 << h.order):
            sim = h.sim_pfn + k
            mem.pstate[sim] = ALLOC
            mem.kind[sim] = self.kind_code
            mem.flags[sim] = flags
            piece = _Held(h.trace_pfn + k, 0, sim)
            self.held[h.trace_pfn + k] = piece
            pieces.append(piece)
        return pieces

    def _free_sim(self, sim_pfn: int) -> Outcome:
        return self.workload.release_page(self.task, sim_pfn)

    # --- results -----------------------------------------------------------------------

    def summary(self) -> dict:
        t = self.trace
        return {
            "group": self.group.name,
            "source": self.source,
            "format": t.format,
            "gfp_era": t.gfp_era,
            "pfns_relative": t.pfns_relative,
            "events": len(t.events),
            **self.counts,
            "pages_held": len(self.held),
            "trace_failed_allocs": t.failed_allocs,
            "trace_lost_events": t.lost_events,
        }
