"""kcompactd: per-node background compaction, woken by reclaim or proactive.

Follows mm/compaction.c (6.x): `wakeup_kcompactd` (ignores order 0, raises the pending
order, wakes only a sleeping thread whose node is `kcompactd_node_suitable`),
`kcompactd_do_work` (SYNC_LIGHT without PF_MEMALLOC, skip hints honoured, deferral,
drain and defer on COMPLETE/PARTIAL_SKIPPED, `compact_daemon_*` counters), and the
proactive mode (5.9+):
every `HPAGE_FRAG_CHECK_INTERVAL_MSEC` = 500 ms, when proactiveness > 0, kswapd is not
running and the node's fragmentation score is above the high threshold, compact every
zone (order -1, whole zone, skip hints ignored) down to the low threshold; back off to
32 s when the score did not drop. Without kcompactd (4.4-4.5) kswapd compacts the node
itself after balancing (`compact_pgdat`, async).
"""

from __future__ import annotations

from compactsim.sim import compaction_trace as ct
from compactsim.sim.compaction import (COMPACT_MAX_DEFER_SHIFT, CompactControl, Compaction,
                            CompactResult, Trigger,
                            compaction_defer_reset, compaction_deferred, compaction_suitable,
                            defer_compaction, fragmentation_score_wmark)
from compactsim.sim.gfp import GFP_KERNEL
from compactsim.sim.machine import Machine
from compactsim.sim.migrate import MigrateMode
from compactsim.sim.page_alloc import drain_all_pages
from compactsim.sim.sampling import fragmentation_score_node
from compactsim.sim.task import Task
from compactsim.sim.zone import WMARK_MIN, zone_watermark_ok

HPAGE_FRAG_CHECK_INTERVAL = 0.5


class Kcompactd:
    """One kcompactd thread per node, or kswapd's own compaction when disabled."""

    def __init__(self, m: Machine, compaction: Compaction, reclaim):
        self.m = m
        self.env = m.env
        self.compaction = compaction
        self.reclaim = reclaim
        self.k = m.config.kernel
        self.tun = m.config.tunables
        n = len(m.nodes)
        self.max_order = [0] * n
        self.highest_zoneidx = [1] * n
        self.sleeping = [True] * n
        self._wake = [m.env.event() for _ in range(n)]
        # kcompactd() runs without PF_MEMALLOC (unlike kswapd and direct compactors), so
        # its MIGRATE_SYNC_LIGHT migration may sleep on page locks where the version lets it.
        self.tasks = [Task(comm=f"kcompactd{nid}", pid=200 + nid, cpu=m.nodes[nid].cpus[-1],
                           node=nid) for nid in range(n)]
        self.proactive_runs = 0
        if self.k.kcompactd:
            for nid in range(n):
                m.env.process(self._kcompactd(nid))

    def _trace(self, task: Task, event: str, text: str) -> None:
        trace = self.m.trace
        if trace is not None and trace.is_enabled(event):
            trace.emit(self.env.now, task.cpu, task.comm, task.pid, event, text)

    def _suit_order(self, z, order: int, zoneidx: int) -> CompactResult:
        """compaction_suit_allocation_order at the MIN watermark."""
        if zone_watermark_ok(z, order, z.wmark_pages(WMARK_MIN), zoneidx, 0):
            return CompactResult.SUCCESS
        return compaction_suitable(z, order, zoneidx, self.tun.extfrag_threshold,
                                   not self.k.compact_priorities)

    def kcompactd_node_suitable(self, nid: int) -> bool:
        order = self.max_order[nid]
        return any(self._suit_order(z, order, self.highest_zoneidx[nid]) == CompactResult.CONTINUE
                   for z in self.m.nodes[nid].zones if z.zone_idx <= self.highest_zoneidx[nid])

    def wakeup_kcompactd(self, nid: int, order: int, highest_zoneidx: int) -> None:
        if not order or not self.k.kcompactd:
            return
        self.max_order[nid] = max(self.max_order[nid], order)
        self.highest_zoneidx[nid] = min(self.highest_zoneidx[nid], highest_zoneidx)
        if not self.sleeping[nid] or not self.kcompactd_node_suitable(nid):
            return
        self._trace(self.tasks[nid], "mm_compaction_wakeup_kcompactd",
                    ct.fmt_kcompactd_wake(nid, order, "Normal"))
        self.sleeping[nid] = False
        self._wake[nid].succeed()

    def _kcompactd(self, nid: int):
        env = self.env
        task = self.tasks[nid]
        timeout = HPAGE_FRAG_CHECK_INTERVAL
        proactive = self.k.proactive_compaction and self.tun.compaction_proactiveness > 0
        while True:
            self._trace(task, "mm_compaction_kcompactd_sleep", ct.fmt_kcompactd_sleep(nid))
            wake = self._wake[nid]
            # wait_event checks kcompactd_work_requested() before sleeping and again on
            # timeout: an order raised while the thread was busy is served without a wake.
            if not self.max_order[nid]:
                self.sleeping[nid] = True
                if proactive:
                    yield wake | env.timeout(timeout)
                else:
                    yield wake
                self.sleeping[nid] = False
            if wake.triggered:
                self._wake[nid] = env.event()
            if wake.triggered or self.max_order[nid]:
                yield from self.kcompactd_do_work(nid)
                timeout = HPAGE_FRAG_CHECK_INTERVAL
                continue
            timeout = HPAGE_FRAG_CHECK_INTERVAL
            if self.should_proactive_compact_node(nid):
                prev = fragmentation_score_node(self.m, nid)
                yield from self.proactive_compact_node(nid)
                if fragmentation_score_node(self.m, nid) >= prev:
                    timeout = HPAGE_FRAG_CHECK_INTERVAL * (1 << COMPACT_MAX_DEFER_SHIFT)

    def kcompactd_do_work(self, nid: int, mode: MigrateMode = MigrateMode.SYNC_LIGHT):
        """The kcompactd thread's work (also kswapd's compact_pgdat when `mode` is async)."""
        m = self.m
        task = self.tasks[nid] if mode != MigrateMode.ASYNC else self.reclaim.tasks[nid]
        order = self.max_order[nid]
        zoneidx = self.highest_zoneidx[nid]
        if self.k.kcompactd:
            self._trace(task, "mm_compaction_kcompactd_wake",
                        ct.fmt_kcompactd_wake(nid, order, "Normal"))
            m.events["compact_daemon_wake"] += 1
        for z in m.nodes[nid].zones:
            if z.zone_idx > zoneidx or compaction_deferred(z, order):
                continue
            if self._suit_order(z, order, zoneidx) != CompactResult.CONTINUE:
                continue
            cc = CompactControl(zone=z, order=order, mode=mode, trigger=Trigger.KCOMPACTD,
                                task=task, gfp=GFP_KERNEL, highest_zoneidx=zoneidx)
            status = yield from self.compaction.run(cc)
            if status == CompactResult.SUCCESS:
                compaction_defer_reset(z, order, False)
            elif status in (CompactResult.PARTIAL_SKIPPED, CompactResult.COMPLETE):
                drain_all_pages(m, z)
                defer_compaction(z, order)
            self._count_daemon(cc)
        if self.max_order[nid] <= order:
            self.max_order[nid] = 0
        if self.highest_zoneidx[nid] >= zoneidx:
            self.highest_zoneidx[nid] = 1

    def _count_daemon(self, cc: CompactControl) -> None:
        if self.k.kcompactd:
            self.m.events["compact_daemon_migrate_scanned"] += cc.total_migrate_scanned
            self.m.events["compact_daemon_free_scanned"] += cc.total_free_scanned

    def should_proactive_compact_node(self, nid: int) -> bool:
        if not self.tun.compaction_proactiveness or not self.reclaim.kswapd_sleeping[nid]:
            return False
        high = fragmentation_score_wmark(self.tun.compaction_proactiveness, False)
        return fragmentation_score_node(self.m, nid) > high

    def proactive_compact_node(self, nid: int):
        self.proactive_runs += 1
        task = self.tasks[nid]
        for z in self.m.nodes[nid].zones:
            cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC_LIGHT,
                                trigger=Trigger.PROACTIVE, task=task, gfp=GFP_KERNEL,
                                ignore_skip_hint=True, whole_zone=True,
                                proactive_compaction=True)
            yield from self.compaction.run(cc)
            self._count_daemon(cc)

    def kswapd_compact(self, nid: int, order: int, zoneidx: int):
        """4.4-4.5: kswapd compacts the node itself after reclaiming for a high order."""
        self.max_order[nid] = order
        self.highest_zoneidx[nid] = zoneidx
        yield from self.kcompactd_do_work(nid, MigrateMode.ASYNC)


def compact_node(m: Machine, compaction: Compaction, nid: int, task: Task):
    """`echo 1 > /proc/sys/vm/compact_memory` for one node: MIGRATE_SYNC, whole zones."""
    for z in m.nodes[nid].zones:
        cc = CompactControl(zone=z, order=-1, mode=MigrateMode.SYNC, trigger=Trigger.MANUAL,
                            task=task, gfp=GFP_KERNEL, ignore_skip_hint=True, whole_zone=True)
        yield from compaction.run(cc)
