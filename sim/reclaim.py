"""Page reclaim: kswapd per node and direct reclaim, simplified.

Follows mm/vmscan.c (4.12-6.x) in outline: `wakeup_kswapd` (with the hopeless and
balanced-node rules that wake kcompactd instead), `balance_pgdat` reclaiming until a
zone meets its HIGH watermark (+boost) for the order, each `kswapd_shrink_node` pass
aiming at the zones' high watermarks and raising the priority when it scanned less,
dropping a high-order request to order 0 once `compact_gap(order)` pages were reclaimed
and returning that reclaim order, then a boosted pass; `kswapd()` going back to
`kswapd_try_to_sleep(alloc_order, reclaim_order)` when the reclaim order dropped, which
(`prepare_kswapd_sleep` at the reclaim order) resets the skip hints, wakes kcompactd for
the original order, naps HZ/10 and then sleeps if still balanced (counting
`kswapd_{low,high}_wmark_hit_quickly` otherwise); and `try_to_free_pages` for direct
reclaim with `allocstall_<zone>`. `shrink_page_list` is reduced to what matters for
fragmentation: pages leave from the cold end of the node's anon and file LRU lists (the
anon share set by `swappiness`); clean unlocked file pages are dropped; dirty ones are
put under writeback and rotated; pages under writeback, locked, pinned or isolated are
rotated; anonymous pages are compressed into zram when there is one (otherwise anon is
not scanned). Writeback completes `writeback_page_ms` later. `shrink_slab` runs the
registered shrinkers (zsmalloc's pool, the THP deferred split queue) after each node
pass. Simplified: no active list, no referenced bit, no other slab shrinkers, no memcg;
kswapd's scan of one pass stops once it reclaimed what the pass aims at.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator

import simpy

from compactsim.sim.charge import charge_frees, settle
from compactsim.sim.config import PAGEBLOCK_ORDER
from compactsim.sim.gfp import gfpflags_allow_blocking
from compactsim.sim.lru import del_page_from_lru, lru_add_drain
from compactsim.sim.machine import LRU_ANON, LRU_FILE, Machine, Node
from compactsim.sim.page import ALLOC, PG_DIRTY, PG_EXTRA_REF, PG_ISOLATED, PG_LOCKED, PG_WRITEBACK
from compactsim.sim.page_alloc import Outcome, free_pages
from compactsim.sim.task import Task
from compactsim.sim.zone import WMARK_HIGH, zone_watermark_ok

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12
MAX_RECLAIM_RETRIES = 16
KSWAPD_NAP = 0.1                  # HZ/10: kswapd's short sleep before sleeping for good
BUSY = PG_WRITEBACK | PG_LOCKED | PG_EXTRA_REF | PG_ISOLATED


def compact_gap(order: int) -> int:
    return 2 << order


def pgdat_balanced(node: Node, order: int, highest_zoneidx: int) -> bool:
    """Some eligible zone meets HIGH (+boost) at this order."""
    return any(zone_watermark_ok(z, order, z.wmark_pages(WMARK_HIGH), highest_zoneidx, 0)
               for z in node.zones if z.zone_idx <= highest_zoneidx)


def pgdat_watermark_boosted(node: Node) -> bool:
    return any(z.watermark_boost for z in node.zones)


class Reclaim:
    """kswapd threads, direct reclaim and the writeback completions they start."""

    def __init__(self, m: Machine, zram):
        self.m = m
        self.env: simpy.Environment = m.env
        self.zram = zram
        self.costs = m.config.costs
        self.shrinkers: list = []           # objects with shrink(task, priority) -> outcomes
        # Set by the run once compaction exists: kcompactd's waker, kswapd's own
        # compaction where there is no kcompactd (4.4), and the sleep-time skip reset.
        # (node_id, order, highest_zoneidx); kswapd_compact is a generator function
        self.kcompactd_wake: Callable[[int, int, int], None] | None = None
        self.kswapd_compact: Callable[[int, int, int], Generator] | None = None
        self.on_kswapd_sleep: Callable[[int], None] | None = None       # (node_id)
        self.swappiness = m.config.tunables.swappiness
        n = len(m.nodes)
        self.kswapd_order = [0] * n
        self.kswapd_highest_zoneidx = [1] * n
        self.kswapd_failures = [0] * n
        self.kswapd_sleeping = [True] * n
        self._wake = [m.env.event() for _ in range(n)]
        # I/O completions, a heap of (due time, sequence, pfn, flag, kind, expire).
        self._writeback: list[tuple[float, int, int, int, int, int]] = []
        self._wb_seq = 0
        self._wb_kick = m.env.event()
        self.tasks = [Task(comm=f"kswapd{nid}", pid=100 + nid, cpu=m.nodes[nid].cpus[0],
                           node=nid, memalloc=True) for nid in range(n)]
        for nid in range(n):
            m.env.process(self._kswapd(nid))
        m.env.process(self._writeback_completion())

    # --- writeback ---------------------------------------------------------------------

    def start_writeback(self, pfn: int) -> None:
        mem = self.m.mem
        mem.flags[pfn] = (mem.flags[pfn] & ~PG_DIRTY) | PG_WRITEBACK
        self.clear_flag_later(pfn, PG_WRITEBACK, self.costs.writeback_page_ms * 1e-3)

    def clear_flag_later(self, pfn: int, flag: int, delay: float) -> None:
        """End an I/O state (writeback, a read holding the page lock) after `delay`."""
        self._wb_seq += 1
        mem = self.m.mem
        # The page is identified by pfn, owner kind and deadline: a page that moved away
        # or was freed and reused in the meantime is not the one whose I/O ends.
        heapq.heappush(self._writeback, (self.env.now + delay, self._wb_seq, pfn, flag,
                                         mem.kind[pfn], mem.expire[pfn]))
        if not self._wb_kick.triggered:
            self._wb_kick.succeed()

    def _writeback_completion(self):
        mem = self.m.mem
        q = self._writeback
        while True:
            if not q:
                self._wb_kick = self.env.event()
                yield self._wb_kick
                continue
            due = q[0][0]
            if due > self.env.now:
                yield self.env.timeout(due - self.env.now)
            now = self.env.now
            while q and q[0][0] <= now:
                _, _, pfn, flag, kind, expire = heapq.heappop(q)
                if (ALLOC <= mem.pstate[pfn] < ALLOC + 16 and mem.kind[pfn] == kind
                        and mem.expire[pfn] == expire):
                    mem.flags[pfn] &= ~flag

    # --- shrink_page_list --------------------------------------------------------------

    def _lru_share(self, node: Node) -> list[int]:
        """The lists to scan, anon first with probability of its swappiness share."""
        if self.zram is not None and self.zram.has_room(1) and node.lru_size[LRU_ANON]:
            anon_share = self.swappiness / 200.0 if node.lru_size[LRU_FILE] else 1.0
            return [LRU_ANON, LRU_FILE] if anon_share >= 0.5 else [LRU_FILE, LRU_ANON]
        return [LRU_FILE]

    def shrink_batch(self, task: Task, node: Node, lru: int, nr_to_scan: int
                     ) -> tuple[int, int, float, list[Outcome]]:
        """Scan up to `nr_to_scan` pages from the cold end of one list.

        Returns (scanned, reclaimed pages, cpu seconds, free outcomes)."""
        m = self.m
        mem = m.mem
        head = node.lists[lru]
        costs = self.costs
        scanned = reclaimed = 0
        cpu = 0.0
        outcomes = []
        while scanned < nr_to_scan:
            pfn = mem.prv[head]
            if pfn == head:
                break
            order = mem.pstate[pfn] - ALLOC
            nr = 1 << order
            scanned += nr
            flags = mem.flags[pfn]
            if flags & BUSY:
                mem.list_del(pfn)
                mem.list_add(head, pfn)                   # rotate
                cpu += costs.reclaim_scan_keep_us * 1e-6
                continue
            if lru == LRU_FILE:
                if flags & PG_DIRTY:
                    self.start_writeback(pfn)
                    mem.list_del(pfn)
                    mem.list_add(head, pfn)
                    m.events["pgrotated"] += nr
                    cpu += costs.reclaim_scan_keep_us * 1e-6
                    continue
                cpu += costs.reclaim_clean_page_us * 1e-6 * nr
                m.events["pgsteal_file"] += nr
            else:
                if not self.zram.has_room(nr):
                    break                                 # the zram disk is full
                expire = mem.expire[pfn]
                ok, zs_out = self.zram.store(task, nr, expire)
                outcomes.extend(zs_out)
                if not ok:
                    break
                cpu += nr * (costs.zram_compress_us(self.zram.algorithm) + costs.zs_malloc_us
                             + costs.zs_map_copy_us + costs.unmap_page_us) * 1e-6
                m.events["pgsteal_anon"] += nr
            del_page_from_lru(m, pfn, nr, lru)
            outcomes.append(free_pages(m, task, pfn, order))
            reclaimed += nr
        m.events["pgscan_anon" if lru == LRU_ANON else "pgscan_file"] += scanned
        return scanned, reclaimed, cpu, outcomes

    def shrink_node(self, task: Task, node: Node, nr_to_reclaim: int, priority: int):
        """One pass over the node's lists at `priority`: returns (scanned, reclaimed, cpu,
        outcomes, batches isolated under the lru_lock)."""
        scanned = reclaimed = batches = 0
        cpu = 0.0
        outcomes: list[Outcome] = []
        lru_add_drain(self.m, task.lru_add)     # shrink_inactive_list's lru_add_drain()
        for lru in self._lru_share(node):
            budget = max(node.lru_size[lru] >> priority, SWAP_CLUSTER_MAX)
            while reclaimed < nr_to_reclaim and budget > 0:
                s, r, c, o = self.shrink_batch(task, node, lru, min(budget, SWAP_CLUSTER_MAX))
                batches += 1
                scanned += s
                reclaimed += r
                cpu += c
                outcomes.extend(o)
                budget -= max(s, 1)
                if s == 0:
                    break
            if reclaimed >= nr_to_reclaim:
                break
        for shrinker in self.shrinkers:                   # shrink_slab
            outcomes.extend(shrinker.shrink(task, priority))
        return scanned, reclaimed, cpu, outcomes, batches

    def _pay(self, task: Task, node: Node, cpu: float, outcomes: list[Outcome], batches: int):
        """Isolation batches hold the node's lru_lock; then CPU time and the frees."""
        if batches:
            yield from settle(self.env, task)
            lock = node.lru_lock
            if not lock.trylock():
                yield lock.lock()
            yield self.env.timeout(batches * self.costs.lru_lock_batch_hold_us * 1e-6)
            lock.unlock()
        task.debt += cpu
        yield from charge_frees(self.env, task, self.costs, outcomes)
        yield from settle(self.env, task)

    # --- direct reclaim ----------------------------------------------------------------

    def direct_reclaim(self, task: Task, order: int, zone_name: str):
        """try_to_free_pages: reclaim SWAP_CLUSTER_MAX pages, raising the priority."""
        m = self.m
        m.events[f"allocstall_{zone_name.lower()}"] += 1
        node = m.nodes[task.node]
        total = 0
        task.memalloc = True
        try:
            for priority in range(DEF_PRIORITY, -1, -1):
                scanned, reclaimed, cpu, outcomes, batches = self.shrink_node(
                    task, node, SWAP_CLUSTER_MAX - total, priority)
                m.events["pgscan_direct"] += scanned
                m.events["pgsteal_direct"] += reclaimed
                total += reclaimed
                if reclaimed:
                    self.kswapd_failures[node.node_id] = 0     # the node is not hopeless
                if cpu or outcomes or batches:
                    yield from self._pay(task, node, cpu, outcomes, batches)
                if total >= SWAP_CLUSTER_MAX:
                    break
        finally:
            task.memalloc = False
        return total

    # --- kswapd ------------------------------------------------------------------------

    def wakeup_kswapd(self, nid: int, gfp: int, order: int, highest_zoneidx: int) -> None:
        node = self.m.nodes[nid]
        self.kswapd_order[nid] = max(self.kswapd_order[nid], order)
        self.kswapd_highest_zoneidx[nid] = min(self.kswapd_highest_zoneidx[nid],
                                               highest_zoneidx)
        if not self.kswapd_sleeping[nid]:
            return
        if (self.kswapd_failures[nid] >= MAX_RECLAIM_RETRIES
                or (pgdat_balanced(node, order, highest_zoneidx)
                    and not pgdat_watermark_boosted(node))):
            if not gfpflags_allow_blocking(gfp) and self.kcompactd_wake is not None:
                self.kcompactd_wake(nid, order, highest_zoneidx)
            return
        self.kswapd_sleeping[nid] = False
        self._wake[nid].succeed()

    def prepare_kswapd_sleep(self, node: Node, order: int, highest_zoneidx: int) -> bool:
        """A hopeless node, or one balanced at `order`, lets kswapd sleep."""
        return (self.kswapd_failures[node.node_id] >= MAX_RECLAIM_RETRIES
                or pgdat_balanced(node, order, highest_zoneidx))

    def _kswapd(self, nid: int):
        """kswapd(): sleep, read the order asked for, balance; when balancing stopped at a
        lower order than asked (compaction can take over), go back to sleep the short
        way with the original order still to hand to kcompactd."""
        node = self.m.nodes[nid]
        task = self.tasks[nid]
        alloc_order = reclaim_order = 0
        zoneidx = 1
        while True:
            yield from self._kswapd_try_to_sleep(nid, alloc_order, reclaim_order, zoneidx)
            alloc_order = self.kswapd_order[nid]
            zoneidx = self.kswapd_highest_zoneidx[nid]
            self.kswapd_order[nid] = 0
            self.kswapd_highest_zoneidx[nid] = 1
            reclaim_order = yield from self._balance_pgdat(task, node, alloc_order, zoneidx)
            if self.kswapd_compact is not None and alloc_order > 0:
                yield from self.kswapd_compact(nid, alloc_order, zoneidx)
            if reclaim_order >= alloc_order:
                # Balanced at the order asked for: start over from what was asked since.
                alloc_order = reclaim_order = self.kswapd_order[nid]

    def _kswapd_try_to_sleep(self, nid: int, alloc_order: int, reclaim_order: int,
                             zoneidx: int):
        """kswapd_try_to_sleep: once the node is balanced at the order reclaim stopped at,
        reset the skip hints (if a direct compactor asked), wake kcompactd for the order
        that was asked for, nap HZ/10, and sleep for good if still balanced."""
        node = self.m.nodes[nid]
        events = self.m.events
        remaining = False
        if self.prepare_kswapd_sleep(node, reclaim_order, zoneidx):
            if self.on_kswapd_sleep is not None:
                self.on_kswapd_sleep(nid)
            if self.kcompactd_wake is not None:
                self.kcompactd_wake(nid, alloc_order, zoneidx)
            self.kswapd_sleeping[nid] = True
            wake = self._wake[nid]
            yield wake | self.env.timeout(KSWAPD_NAP)
            if wake.triggered:
                # Woken before the nap ended: keep at least the order reclaimed for.
                remaining = True
                self._wake[nid] = self.env.event()
                self.kswapd_order[nid] = max(self.kswapd_order[nid], reclaim_order)
        if not remaining and self.prepare_kswapd_sleep(node, reclaim_order, zoneidx):
            self.kswapd_sleeping[nid] = True
            yield self._wake[nid]
            self._wake[nid] = self.env.event()
        else:
            events["kswapd_low_wmark_hit_quickly" if remaining
                   else "kswapd_high_wmark_hit_quickly"] += 1
        self.kswapd_sleeping[nid] = False

    def _balance_pgdat(self, task: Task, node: Node, order: int, zoneidx: int):
        """balance_pgdat: generator returning the order reclaim stopped at (sc.order),
        0 once `compact_gap(order)` pages were reclaimed for a high order."""
        m = self.m
        m.events["pageoutrun"] += 1
        nid = node.node_id
        boosted = pgdat_watermark_boosted(node)
        sc_order = order
        if pgdat_balanced(node, order, zoneidx) and not boosted:
            return sc_order
        reclaimed_total = 0
        priority = DEF_PRIORITY
        while priority >= 1:
            if pgdat_balanced(node, sc_order, zoneidx):
                break
            # kswapd_shrink_node: each pass aims at the high watermarks of the zones.
            nr_to_reclaim = sum(max(z.wmark_pages(WMARK_HIGH), SWAP_CLUSTER_MAX)
                                for z in node.zones if z.zone_idx <= zoneidx)
            scanned, reclaimed, cpu, outcomes, batches = self.shrink_node(
                task, node, nr_to_reclaim, priority)
            m.events["pgscan_kswapd"] += scanned
            m.events["pgsteal_kswapd"] += reclaimed
            reclaimed_total += reclaimed
            if sc_order and reclaimed_total >= compact_gap(sc_order):
                sc_order = 0
            yield from self._pay(task, node, cpu or SWAP_CLUSTER_MAX
                                 * self.costs.reclaim_scan_keep_us * 1e-6, outcomes, batches)
            if scanned < nr_to_reclaim or not reclaimed:
                priority -= 1
        if not reclaimed_total and priority < 1:
            self.kswapd_failures[nid] += 1
        elif reclaimed_total:
            self.kswapd_failures[nid] = 0
        if boosted:
            # The boost is reclaimed and then dropped; kcompactd finishes the job.
            for z in node.zones:
                z.watermark_boost = 0
            if self.kcompactd_wake is not None:
                self.kcompactd_wake(nid, PAGEBLOCK_ORDER, zoneidx)
        return sc_order


def reclaimable_pages(m: Machine, nid: int, zram_room: bool) -> int:
    """zone_reclaimable_pages, node-wide: file LRU, and anon when it can be swapped."""
    node = m.nodes[nid]
    return node.lru_size[LRU_FILE] + (node.lru_size[LRU_ANON] if zram_room else 0)
