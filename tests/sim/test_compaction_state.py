"""Compaction interleaved with allocation and freeing, under random programs.

A Hypothesis `RuleBasedStateMachine` drives a 64 MiB machine (v4.4, v6.1 or v6.10
profile, pcp on or off) with allocations of every page kind and state (LRU pages dirty,
under writeback, locked, pinned or mlocked; slab; zsmalloc and balloon pages on their
driver lists; orders 0-3), frees (single, patterned), pcp drains, and compactions run to
completion in the machine's SimPy environment: manual (SYNC, whole zone), proactive,
kcompactd-style and direct (`direct_compact`, with capture). Each allocated block carries
an id in its `expire` word, so the model follows it when migration moves it (migration
schedules the moved block's deadline again: `Lifetimes.schedule`). After every step the
memmap, the free lists, the pcp lists, the LRU and driver lists and the model must agree,
as in test_buddy_state.py, and nothing may be left isolated.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from buddycheck import assert_lists_match_counters, free_blocks
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from compactsim.sim.compaction import (
    CompactControl,
    Compaction,
    CompactPriority,
    CompactResult,
    Trigger,
)
from compactsim.sim.config import MAX_ORDER, ClaimRule, MovableOps, PageKind, config_from_dict
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS, ALLOC_WMARK_LOW, ALLOC_WMARK_MIN, GFP_KERNEL
from compactsim.sim.lifetimes import Lifetimes
from compactsim.sim.lru import add_page_to_lru, del_page_from_lru, lru_list_for
from compactsim.sim.machine import (
    LIST_BALLOON,
    LIST_ZSPAGES,
    LRU_ANON,
    LRU_FILE,
    LRU_UNEVICTABLE,
    build_machine,
)
from compactsim.sim.migrate import MigrateMode, Migration
from compactsim.sim.page import (
    ALLOC,
    KIND_CODE,
    KIND_RESERVED,
    PCP,
    PG_DIRTY,
    PG_EXTRA_REF,
    PG_ISOLATED,
    PG_LOCKED,
    PG_LRU,
    PG_MLOCKED,
    PG_MOVABLE_OPS,
    PG_WRITEBACK,
    TAIL,
)
from compactsim.sim.page_alloc import drain_all_pages, free_pages, get_page_from_freelist
from compactsim.sim.pageblock import PAGEBLOCK_ORDER
from compactsim.sim.reclaim import Reclaim
from compactsim.sim.rng import RngStreams
from compactsim.sim.task import Task
from compactsim.sim.workload import kind_gfp
from compactsim.sim.zram import Zram

NR_ORDERS = MAX_ORDER + 1
NR_CPUS = 2
KINDS = [PageKind.ANON, PageKind.FILE, PageKind.PINNED, PageKind.SLAB_UNMOVABLE,
         PageKind.SLAB_RECLAIMABLE, PageKind.ZSMALLOC, PageKind.BALLOON]
DRIVER = {KIND_CODE[PageKind.ZSMALLOC]: LIST_ZSPAGES, KIND_CODE[PageKind.BALLOON]: LIST_BALLOON}
STATES = [0, PG_DIRTY, PG_WRITEBACK, PG_LOCKED, PG_EXTRA_REF, PG_MLOCKED, PG_DIRTY | PG_LOCKED]


class Followed(Lifetimes):
    """A wheel of deadlines that tells the model where migration moved each block (the
    id in its expire word) instead of scheduling it."""

    def __init__(self, m, moved):
        super().__init__(m, 1.0)
        self.moved = moved

    def schedule(self, pfn, tick):
        self.moved(pfn, tick)


class CompactionMachine(RuleBasedStateMachine):
    """`allocated` maps head pfn -> (order, kind code, id); `where` maps id -> head pfn."""

    @initialize(profile=st.sampled_from(["v4.4", "v6.1", "v6.10"]), pcp=st.booleans(),
                fraction=st.sampled_from([1.0, 1.0, 0.9, 0.6, 0.0]),
                pin_every=st.sampled_from([0, 61, 509]),
                hole_stride=st.integers(2, 5))
    def build(self, profile, pcp, fraction, pin_every, hole_stride):
        cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": NR_CPUS},
                                "kernel": {"profile": profile, "pcp": pcp},
                                "workload": [{"name": "x"}]})
        self.env = simpy.Environment()
        self.m = m = build_machine(cfg, self.env)
        self.zone = m.zones[0]
        reclaim = Reclaim(m, Zram(m))
        # kswapd balances a node it finds unbalanced when it starts: let it nap and go to
        # sleep on the empty machine before the fills, which wake nobody.
        self.env.run(until=0.2)
        self.migration = Migration(m, RngStreams(cfg.seed)("migrate.driver"),
                                   lifetimes=Followed(m, self._moved))
        self.compaction = Compaction(m, self.migration, reclaim)
        self.tasks = [Task(comm="t", pid=100 + c, cpu=c, node=0) for c in range(NR_CPUS)]
        self.allocated: dict[int, tuple[int, int, int]] = {}
        self.where: dict[int, int] = {}
        self.next_id = 1
        self.movable_ops = cfg.kernel.movable_ops is not MovableOps.NONE
        # Start fragmented: fill, then punch a hole every `hole_stride` pages.
        self.fill(fraction, PageKind.ANON, pin_every, PageKind.SLAB_UNMOVABLE, 0, 1, 0)
        self.free_many(hole_stride, 0, 1)

    # --- model upkeep -----------------------------------------------------------------

    def _moved(self, new: int, ident: int) -> None:
        """The block with this id now lives at `new`, and keeps its id there."""
        self.m.mem.expire[new] = ident
        old = self.where[ident]
        order, kind, _ = self.allocated.pop(old)
        assert order == 0 and new not in self.allocated
        self.allocated[new] = (order, kind, ident)
        self.where[ident] = new

    def _setup(self, pfn: int, order: int, kind: PageKind, flags: int) -> None:
        """Workload.setup_page, with the block's id in its expire word."""
        m = self.m
        code = KIND_CODE[kind]
        if kind is PageKind.PINNED:
            flags |= PG_EXTRA_REF
        if kind is PageKind.BALLOON or (kind is PageKind.ZSMALLOC and self.movable_ops):
            flags |= PG_MOVABLE_OPS
        m.mem.kind[pfn] = code
        m.mem.flags[pfn] = flags
        m.mem.expire[pfn] = self.next_id
        lru = lru_list_for(code, flags)
        if lru >= 0:
            add_page_to_lru(m, pfn, 1 << order, lru)
        elif code in DRIVER:
            m.mem.list_add(m.nodes[0].lists[DRIVER[code]], pfn)
        assert pfn not in self.allocated
        self.allocated[pfn] = (order, code, self.next_id)
        self.where[self.next_id] = pfn
        self.next_id += 1

    def _free(self, pfn: int, cpu: int) -> None:
        """Workload.release_page."""
        m = self.m
        order, code, ident = self.allocated.pop(pfn)
        del self.where[ident]
        flags = m.mem.flags[pfn]
        assert not flags & PG_ISOLATED
        if flags & PG_LRU:
            del_page_from_lru(m, pfn, 1 << order, lru_list_for(code, flags))
        elif code in DRIVER:
            m.mem.list_del(pfn)
        free_pages(m, self.tasks[cpu], pfn, order)

    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The model as arrays: (head pfns, orders, kind codes, ids)."""
        n = len(self.allocated)
        pfns = np.fromiter(self.allocated.keys(), dtype=np.int64, count=n)
        rows = np.array(list(self.allocated.values()), dtype=np.int64).reshape(n, 3)
        return pfns, rows[:, 0], rows[:, 1], rows[:, 2]

    def _kind_counts(self) -> tuple[list[int], list[int]]:
        """Pages per kind code: (the model's, the memmap's allocated heads')."""
        pfns, orders, codes, _ = self._model()
        mem = self.m.mem
        pstate = np.frombuffer(mem.pstate, dtype=np.uint8)[pfns].astype(np.int64)
        kind = np.frombuffer(mem.kind, dtype=np.uint8)[pfns]
        model = np.bincount(codes, weights=1 << orders, minlength=256).astype(int)
        memmap = np.bincount(kind, weights=1 << (pstate - ALLOC), minlength=256).astype(int)
        return model.tolist(), memmap.tolist()

    def _walk_lists(self) -> None:
        """Walk the LRU and driver lists: each holds exactly the model's pages of it."""
        m = self.m
        mem = m.mem
        node = m.nodes[0]
        on_lru = set()
        for lru in (LRU_ANON, LRU_FILE, LRU_UNEVICTABLE):
            size = 0
            for pfn in mem.iter_list(node.lists[lru]):
                order, code, _ = self.allocated[pfn]
                assert mem.flags[pfn] & PG_LRU
                assert lru_list_for(code, mem.flags[pfn]) == lru
                size += 1 << order
                on_lru.add(pfn)
            assert size == node.lru_size[lru], lru
        assert on_lru == {pfn for pfn in self.allocated if mem.flags[pfn] & PG_LRU}
        by_code: dict[int, list[int]] = {code: [] for code in DRIVER}
        for pfn, (_, code, _) in self.allocated.items():
            if code in by_code:
                by_code[code].append(pfn)
        for code, head in DRIVER.items():
            assert sorted(mem.iter_list(node.lists[head])) == sorted(by_code[code])

    def _run(self, gen):
        proc = self.env.process(gen)
        self.env.run(until=proc)
        return proc.value

    # --- rules ----------------------------------------------------------------------

    @rule(kind=st.sampled_from(KINDS), order=st.integers(0, 3), n=st.integers(1, 400),
          state=st.sampled_from(STATES), every=st.integers(1, 8),
          wmark=st.sampled_from([ALLOC_WMARK_LOW, ALLOC_WMARK_MIN, ALLOC_NO_WATERMARKS]),
          cpu=st.integers(0, NR_CPUS - 1))
    def allocate(self, kind, order, n, state, every, wmark, cpu):
        if kind in (PageKind.ZSMALLOC, PageKind.BALLOON):
            order = 0
        gfp = kind_gfp(self.m.config, kind, order)
        for i in range(n):
            out = get_page_from_freelist(self.m, self.tasks[cpu], gfp, order, wmark)
            if out.pfn < 0:
                break
            assert self.m.mem.pstate[out.pfn] == ALLOC + order
            lru_kind = kind in (PageKind.ANON, PageKind.FILE, PageKind.PINNED)
            self._setup(out.pfn, order, kind, state if lru_kind and i % every == 0 else 0)

    @rule(fraction=st.floats(0.3, 1.0), kind=st.sampled_from([PageKind.ANON, PageKind.FILE]),
          pin_every=st.sampled_from([0, 61, 300, 509]),
          pin_kind=st.sampled_from([PageKind.SLAB_UNMOVABLE, PageKind.SLAB_RECLAIMABLE,
                                    PageKind.ZSMALLOC, PageKind.BALLOON, PageKind.PINNED]),
          state=st.sampled_from(STATES), every=st.integers(1, 50), cpu=st.integers(0, NR_CPUS - 1))
    def fill(self, fraction, kind, pin_every, pin_kind, state, every, cpu):
        """Fill memory up to `fraction` in use with order-0 LRU pages, every `pin_every`-th
        allocation of another kind: the mixed blocks compaction has to deal with."""
        m = self.m
        target = int(self.zone.managed_pages * (1.0 - fraction))
        i = 0
        while self.zone.free_pages + self.zone.pcp_count() > target:
            this = pin_kind if pin_every and i % pin_every == pin_every - 1 else kind
            out = get_page_from_freelist(m, self.tasks[cpu], kind_gfp(m.config, this, 0), 0,
                                         ALLOC_NO_WATERMARKS)
            if out.pfn < 0:
                break
            self._setup(out.pfn, 0, this, state if this is kind and i % every == 0 else 0)
            i += 1

    @precondition(lambda self: self.allocated)
    @rule(data=st.data(), cpu=st.integers(0, NR_CPUS - 1))
    def free(self, data, cpu):
        self._free(data.draw(st.sampled_from(sorted(self.allocated)), label="pfn"), cpu)

    @precondition(lambda self: self.allocated)
    @rule(stride=st.integers(1, 5), offset=st.integers(0, 4), cpu=st.integers(0, NR_CPUS - 1))
    def free_many(self, stride, offset, cpu):
        """Free every stride-th block: leaves holes all over the zone."""
        for pfn in sorted(self.allocated)[offset % stride::stride]:
            self._free(pfn, cpu)

    @rule()
    def drain(self):
        drain_all_pages(self.m)

    @rule(how=st.sampled_from(["manual", "proactive", "kcompactd", "sync_light", "async"]),
          order=st.integers(1, MAX_ORDER))
    def compact(self, how, order):
        """compact_zone to completion; every page keeps its owner kind."""
        before = self._kind_counts()
        z = self.zone
        task = self.tasks[0]
        if how == "manual":
            cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC, trigger=Trigger.MANUAL,
                                task=task, gfp=GFP_KERNEL, whole_zone=True,
                                ignore_skip_hint=True)
        elif how == "proactive":
            cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC_LIGHT,
                                trigger=Trigger.PROACTIVE, task=task, gfp=GFP_KERNEL,
                                whole_zone=True, ignore_skip_hint=True,
                                proactive_compaction=True)
        else:
            mode = MigrateMode.ASYNC if how == "async" else MigrateMode.SYNC_LIGHT
            cc = CompactControl(zone=z, order=order, mode=mode, trigger=Trigger.KCOMPACTD,
                                task=task, gfp=GFP_KERNEL, direct_compaction=how == "async")
        ret = self._run(self.compaction.run(cc))
        assert isinstance(ret, CompactResult)
        event(f"{how}: {ret.name}, {'moved' if cc.nr_migrated else 'nothing moved'}")
        assert not cc.migratepages and not cc.freepages
        if how == "manual":
            # Scanners meet, unless __isolate_free_page's watermark left no targets
            # (-ENOMEM before they met).
            assert ret in (CompactResult.COMPLETE, CompactResult.CONTENDED)
        after = self._kind_counts()
        assert after == before
        assert after[0] == after[1]
        self._walk_lists()
        self._check_cached(z)

    @rule(kind=st.sampled_from([PageKind.ANON, PageKind.SLAB_UNMOVABLE,
                                PageKind.SLAB_RECLAIMABLE]),
          order=st.integers(1, MAX_ORDER), priority=st.sampled_from(list(CompactPriority)))
    def direct(self, kind, order, priority):
        """__alloc_pages_direct_compact: the captured or allocated block joins the model."""
        before = self._kind_counts()
        gfp = kind_gfp(self.m.config, kind, order)
        stall = self.m.events["compact_stall"]
        pfn, result = self._run(self.compaction.direct_compact(
            self.tasks[0], gfp, order, ALLOC_WMARK_MIN, priority))
        assert self._kind_counts() == before
        event(f"direct: {result.name}, {'page' if pfn >= 0 else 'no page'}")
        if pfn >= 0:
            assert self.m.mem.pstate[pfn] == ALLOC + order
            assert pfn % (1 << order) == 0 and self.zone.contains(pfn + (1 << order) - 1)
            self._setup(pfn, order, kind, 0)
        else:
            assert result is not CompactResult.SUCCESS or self.m.events["compact_fail"]
        self._walk_lists()
        ev = self.m.events
        assert ev["compact_stall"] == ev["compact_success"] + ev["compact_fail"]
        assert ev["compact_stall"] == stall + (result is not CompactResult.SKIPPED)
        self._check_cached(self.zone)

    @staticmethod
    def _check_cached(z) -> None:
        assert z.zone_start_pfn <= z.compact_cached_free_pfn < z.zone_end_pfn
        for pfn in z.compact_cached_migrate_pfn:
            assert z.zone_start_pfn <= pfn <= z.zone_end_pfn

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def lists_match_counters(self):
        assert_lists_match_counters(self.zone)

    @invariant()
    def pages_partition_memory(self):
        """Free blocks, pcp pages, allocated blocks (the model) and the memmap tile every
        pfn exactly once; heads and tails carry the right states, owners and ids."""
        m = self.m
        mem = m.mem
        z = self.zone
        pstate = np.frombuffer(mem.pstate, dtype=np.uint8)
        kind = np.frombuffer(mem.kind, dtype=np.uint8)
        expire = np.frombuffer(mem.expire, dtype=np.uint32)
        cover = np.zeros(m.total_pages, dtype=np.int64)

        def take(heads: np.ndarray, orders: np.ndarray) -> None:
            for o in np.unique(orders).tolist():
                sel = heads[orders == o]
                n = 1 << o
                assert not (sel % n).any(), (o, sel[sel % n != 0][:4])
                cover[:] += np.bincount((sel[:, None] + np.arange(n)).ravel(),
                                        minlength=m.total_pages)
                tails = (sel[:, None] + np.arange(1, n)).ravel()
                assert (pstate[tails] == TAIL).all(), o

        blocks = free_blocks(z)
        fpfn = np.array([b[0] for b in blocks], dtype=np.int64)
        ford = np.array([b[1] for b in blocks], dtype=np.int64)
        take(fpfn, ford)
        assert (kind[fpfn] == 0).all()
        assert (fpfn >= z.zone_start_pfn).all() and (fpfn + (1 << ford) <= z.zone_end_pfn).all()
        pcp = []
        if z.pcp is not None:
            for cpu, lists in enumerate(z.pcp.lists):
                assert z.pcp.counts[cpu] == sum(len(lst) for lst in lists)
                for mt, lst in enumerate(lists):
                    assert all(pstate[pfn] == PCP + mt for pfn in lst)
                    pcp.extend(lst)
        take(np.array(pcp, dtype=np.int64), np.zeros(len(pcp), dtype=np.int64))
        pfns, orders, codes, ids = self._model()
        take(pfns, orders)
        assert (pstate[pfns] == ALLOC + orders).all()
        assert (kind[pfns] == codes).all()
        assert (expire[pfns] == ids).all()
        assert len(self.where) == len(self.allocated)
        assert all(self.where[i] == p for p, i in zip(pfns.tolist(), ids.tolist()))
        node = m.nodes[0]
        first = node.start_pfn + node.nr_pages - node.memmap_pages
        assert (kind[first:first + node.memmap_pages] == KIND_RESERVED).all()
        cover[first:first + node.memmap_pages] += 1
        assert (cover == 1).all(), np.flatnonzero(cover != 1)[:8]
        assert z.free_pages + z.pcp_count() + int((1 << orders).sum()) + node.memmap_pages \
            == m.total_pages

    @invariant()
    def free_blocks_are_merged(self):
        mem = self.m.mem
        z = self.zone
        for pfn, o, _mt in free_blocks(z):
            if o == MAX_ORDER:
                continue
            buddy = pfn ^ (1 << o)
            if z.contains(buddy):
                s = mem.pstate[buddy]
                assert not (s < 64 and s & 15 == o), f"free buddies {pfn:#x}/{buddy:#x} order {o}"

    @invariant()
    def freelist_hygiene(self):
        """6.10+: every free block is on the list of the pageblock(s) it lies in, also
        after compaction's frees merged it (`__free_one_page` matches the buddy type)."""
        if self.m.config.kernel.claim_rule is not ClaimRule.FREELIST_HYGIENE:
            return
        labels = self.m.pageblocks.mt
        for pfn, o, mt in free_blocks(self.zone):
            first = pfn >> PAGEBLOCK_ORDER
            covered = set(labels[first:first + (1 << max(o - PAGEBLOCK_ORDER, 0))])
            assert covered == {mt}, (hex(pfn), o, mt, covered)

    @invariant()
    def nothing_isolated_and_lists_consistent(self):
        """No page left PG_ISOLATED; every PG_LRU page is a model head linked into a
        list, and the LRU sizes add up (the lists are walked after each compaction)."""
        m = self.m
        mem = m.mem
        flags = np.frombuffer(mem.flags, dtype=np.uint8)
        assert not (flags & PG_ISOLATED).any(), np.flatnonzero(flags & PG_ISOLATED)[:8]
        pfns, orders, codes, _ = self._model()
        on_lru = (flags[pfns] & PG_LRU) != 0
        nxt = np.frombuffer(mem.nxt, dtype=np.int32)
        prv = np.frombuffer(mem.prv, dtype=np.int32)
        linked = pfns[on_lru | np.isin(codes, list(DRIVER))]
        assert (nxt[prv[linked]] == linked).all() and (prv[nxt[linked]] == linked).all()
        assert int((flags & PG_LRU != 0).sum()) == int(on_lru.sum())
        assert int((1 << orders[on_lru]).sum()) == sum(m.nodes[0].lru_size[:3])


CompactionMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=20,
                                               deadline=None)
TestCompactionState = CompactionMachine.TestCase

pytestmark = pytest.mark.slow      # a minute or more of generated programs: the full suite only
