"""zsmalloc: size classes, zspages in fullness groups, zs_compact, and the locks a zspage's
page migration contends with.

Follows mm/zsmalloc.c. Size classes: ZS_SIZE_CLASSES (255) sizes ZS_SIZE_CLASS_DELTA
(16 bytes) apart from ZS_MIN_ALLOC_SIZE (32) to PAGE_SIZE, each with the chain length of
`get_pages_per_zspage` (least tail waste, at most ZS_MAX_PAGES_PER_ZSPAGE: 4, or
CONFIG_ZSMALLOC_CHAIN_SIZE 8 from 6.3), and, as `zs_create_pool` does, a class with the
same pages and objects per zspage as the next larger one merged into it. zram stores an
object of `huge_class_size` or more uncompressed, in the PAGE_SIZE class; an object's
chunk is its size plus ZS_HANDLE_SIZE.

Fullness groups (`get_fullness_group`): before 6.3 ZS_EMPTY, ZS_ALMOST_EMPTY (in use
<= 3/4), ZS_ALMOST_FULL, ZS_FULL; from 6.3 ZS_INUSE_RATIO_0, _10 .. _90 in 10 % steps,
_99 and _100. `zs_malloc` takes the first zspage of the fullest partial group
(`find_get_zspage`) and allocates a new zspage only when none has room; `zs_free` frees
a zspage once empty. `zs_compact` (from the pool's shrinker `zs_shrinker_scan` when
reclaim runs `shrink_slab`, and from zram's `compact` attribute) walks the classes from
the largest, moving the objects of the emptiest zspage (`isolate_src_zspage`) into the
fullest (`isolate_dst_zspage`) while `zs_can_compact` says a whole zspage can be saved;
the pages it frees count in `pages_compacted` (zs_pool_stats; zram's mm_stat).

The locks, per `kernel.zsmalloc_locking`, as `zs_page_migrate` takes them:
  CLASS_LOCK (4.8-5.16): migrate_write_lock(zspage), an rwlock that waits for zram's
    zs_map_object readers, then size_class->lock (zs_malloc, zs_free, __zs_compact);
  MIGRATE_LOCK (5.17-6.1): write_lock(pool->migrate_lock) (zs_map_object's lookup and
    zs_free read it), class->lock, migrate_write_lock(zspage);
  POOL_LOCK (6.2-6.14): spin_lock(pool->lock), the one lock of zs_malloc, zs_free,
    zs_map_object's lookup and __zs_compact, then migrate_write_lock(zspage);
  ZSPAGE_TRYLOCK (6.15+): write_lock(pool->lock), class->lock, zspage_write_trylock():
    a zspage that zram is reading or writing is not waited for: zs_page_migrate returns
    -EINVAL, which migrate_pages counts as a failure and does not retry in that pass;
    __zs_compact stops the class the same way.
The 4.8-5.16 handle pins (trypin_tag) are taken under the zspage read lock, so a
migration that got the write lock finds them free; they are not modelled apart.

Simplified: zram's readers are its writes and frees (swapped-out pages are not faulted
back in); lock holders book the simulated time their step costs (`BookedLock`) instead
of being processes; compressed sizes are lognormal around PAGE_SIZE / compression ratio;
same-filled pages are not special; objects do not straddle subpages for migration (a
subpage's migration locks its whole zspage, as in the kernel).
"""

from __future__ import annotations

from array import array

from compactsim.sim.config import PAGE_SIZE, PageKind, ZsmallocLocking
from compactsim.sim.gfp import ALLOC_NO_WATERMARKS
from compactsim.sim.locks import BookedLock, LockStats
from compactsim.sim.lru import node_of
from compactsim.sim.machine import LIST_ZSPAGES, Machine
from compactsim.sim.migrate import EINVAL, MIGRATEPAGE_SUCCESS
from compactsim.sim.page import KIND_CODE, PG_ISOLATED, PG_MOVABLE_OPS
from compactsim.sim.shrinker import Shrinker
from compactsim.sim.page_alloc import Outcome, free_pages, get_page_from_freelist, trace_alloc
from compactsim.sim.task import Task

ZS_MIN_ALLOC_SIZE = 32
ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> 8
ZS_SIZE_CLASSES = -(-(PAGE_SIZE - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA) + 1
ZS_HANDLE_SIZE = 8              # zs_malloc keeps the handle in the object's chunk
ZSMALLOC = KIND_CODE[PageKind.ZSMALLOC]
MIGRATION = "migration"         # the owner of zs_page_migrate's lock bookings

# Fullness groups: (number of groups, zs_malloc's search order, compaction's source and
# destination orders) before and from 6.3.
ZS_EMPTY, ZS_ALMOST_EMPTY, ZS_ALMOST_FULL, ZS_FULL = range(4)
ZS_INUSE_RATIO_0, ZS_INUSE_RATIO_10, ZS_INUSE_RATIO_99, ZS_INUSE_RATIO_100 = 0, 1, 10, 11


def fullness_4_8(inuse: int, objs: int) -> int:
    if inuse == 0:
        return ZS_EMPTY
    if inuse == objs:
        return ZS_FULL
    return ZS_ALMOST_EMPTY if inuse <= 3 * objs // 4 else ZS_ALMOST_FULL


def fullness_6_3(inuse: int, objs: int) -> int:
    if inuse == 0:
        return ZS_INUSE_RATIO_0
    if inuse == objs:
        return ZS_INUSE_RATIO_100
    return 100 * inuse // objs // 10 + 1


GROUPS_4_8 = (4, (ZS_ALMOST_FULL, ZS_ALMOST_EMPTY), (ZS_ALMOST_EMPTY, ZS_ALMOST_FULL),
              (ZS_ALMOST_FULL, ZS_ALMOST_EMPTY))
GROUPS_6_3 = (12, tuple(range(ZS_INUSE_RATIO_99, ZS_INUSE_RATIO_0, -1)),
              tuple(range(ZS_INUSE_RATIO_10, ZS_INUSE_RATIO_99 + 1)),
              tuple(range(ZS_INUSE_RATIO_99, ZS_INUSE_RATIO_0, -1)))


def get_pages_per_zspage(class_size: int, max_pages: int) -> int:
    """The chain length that wastes the least of its tail page."""
    best, best_pc = 1, 0
    for i in range(1, max_pages + 1):
        zspage_size = i * PAGE_SIZE
        used_pc = (zspage_size - zspage_size % class_size) * 100 // zspage_size
        if used_pc > best_pc:
            best, best_pc = i, used_pc
    return best


def get_size_class_index(size: int) -> int:
    if size <= ZS_MIN_ALLOC_SIZE:
        return 0
    return min(-(-(size - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA), ZS_SIZE_CLASSES - 1)


class SizeClass:
    """struct size_class: its zspages by fullness group, object counts, its lock."""

    __slots__ = ("index", "size", "pages_per_zspage", "objs_per_zspage", "lists",
                 "objs_allocated", "objs_used", "lock", "can_compact", "io_locks")

    def __init__(self, index: int, size: int, pages: int, nr_groups: int, lock):
        self.index = index
        self.size = size
        self.pages_per_zspage = pages
        self.objs_per_zspage = pages * PAGE_SIZE // size
        self.lists: list[dict] = [{} for _ in range(nr_groups)]   # insertion-ordered sets
        self.objs_allocated = 0
        self.objs_used = 0
        self.lock: BookedLock | None = lock
        self.can_compact = 0
        self.io_locks: list[tuple[BookedLock, bool]] = []   # what zs_malloc/zs_free take


class Zspage:
    """struct zspage: its pages, the handles of its objects, its group and lock."""

    __slots__ = ("cls", "pfns", "objs", "fg", "lock")

    def __init__(self, cls: SizeClass, pfns: list[int], lock: BookedLock):
        self.cls = cls
        self.pfns = pfns
        self.objs: dict[int, None] = {}
        self.fg = -1                      # not on a list (new, or isolated by compaction)
        self.lock = lock


class ZsPool:
    """One zs_pool: classes, zspages, object handles, locks and stats."""

    def __init__(self, m: Machine, gfp: int, movable: bool):
        self.m = m
        self.env = m.env
        k = m.config.kernel
        c = m.config.costs
        self.locking = k.zsmalloc_locking
        self.gfp = gfp
        self.movable = movable
        modern = self.locking in (ZsmallocLocking.POOL_LOCK, ZsmallocLocking.ZSPAGE_TRYLOCK)
        nr_groups, self.alloc_order, self.src_order, self.dst_order = \
            GROUPS_6_3 if modern else GROUPS_4_8
        self.fullness = fullness_6_3 if modern else fullness_4_8
        self.chain = 8 if modern else 4
        self.lock_stats = {name: LockStats(name) for name in
                           ("zs_pool_lock", "zs_class_lock", "zspage_lock")}
        self.pool_lock = (BookedLock(self.lock_stats["zs_pool_lock"])
                          if self.locking is not ZsmallocLocking.CLASS_LOCK else None)
        self.pool_rw = self.locking is not ZsmallocLocking.POOL_LOCK   # rwlock, not spinlock
        self.malloc_s = c.zs_malloc_us * 1e-6
        self.map_s = c.zs_map_copy_us * 1e-6
        self.migrate_s = (c.copy_page_us + c.zs_map_copy_us + c.migrate_overhead_us) * 1e-6
        # zs_create_pool: from the largest size down, merging equal geometry.
        self.size_class: list[SizeClass] = [None] * ZS_SIZE_CLASSES    # type: ignore
        self.classes: list[SizeClass] = []                             # distinct, largest first
        self.huge_class_size = PAGE_SIZE
        prev = None
        class_locks = self.locking is not ZsmallocLocking.POOL_LOCK
        for i in range(ZS_SIZE_CLASSES - 1, -1, -1):
            size = min(ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA, PAGE_SIZE)
            pages = get_pages_per_zspage(size, self.chain)
            objs = pages * PAGE_SIZE // size
            if pages == 1 and objs == 1:
                # zs_malloc adds the handle before the class lookup
                self.huge_class_size = size - (ZS_HANDLE_SIZE - 1)
            if prev is not None and prev.pages_per_zspage == pages \
                    and prev.objs_per_zspage == objs:
                self.size_class[i] = prev
                continue
            prev = SizeClass(i, size, pages, nr_groups,
                             BookedLock(self.lock_stats["zs_class_lock"]) if class_locks
                             else None)
            self.size_class[i] = prev
            self.classes.append(prev)
            prev.io_locks = self._locks(prev, False)
        self.by_pfn: dict[int, Zspage] = {}
        self.handle_zspage: list[Zspage | None] = []
        self.handle_size = array("H")
        self.free_handles: list[int] = []
        self.pages_allocated = 0
        self.pages_max = 0
        self.objects = 0
        self.compr_bytes = 0
        self.huge_objects = 0
        self.huge_since = 0
        self.pages_compacted = 0            # zs_pool_stats.pages_compacted
        self.compactions = 0
        self.freeable = 0                   # sum of zs_can_compact over the classes
        self.shrinker = Shrinker()          # zs_register_shrinker
        self.migrate_busy = 0               # zs_page_migrate refused (zspage trylock)
        self.migrated = 0

    # --- bookkeeping -----------------------------------------------------------------

    def _account(self, cls: SizeClass) -> None:
        """zs_can_compact for one class, kept summed for the shrinker's count."""
        wasted = (cls.objs_allocated - cls.objs_used) // cls.objs_per_zspage
        can = wasted * cls.pages_per_zspage if cls.objs_per_zspage > 1 else 0
        self.freeable += can - cls.can_compact
        cls.can_compact = can

    def _insert(self, zspage: Zspage) -> int:
        cls = zspage.cls
        fg = self.fullness(len(zspage.objs), cls.objs_per_zspage)
        zspage.fg = fg
        cls.lists[fg][id(zspage)] = zspage
        return fg

    def _remove(self, zspage: Zspage) -> None:
        if zspage.fg >= 0:
            del zspage.cls.lists[zspage.fg][id(zspage)]
            zspage.fg = -1

    def _fix_fullness(self, zspage: Zspage) -> int:
        fg = self.fullness(len(zspage.objs), zspage.cls.objs_per_zspage)
        if fg != zspage.fg:
            self._remove(zspage)
            self._insert(zspage)
        return fg

    def _first(self, cls: SizeClass, order: tuple[int, ...]) -> Zspage | None:
        """The head of the first non-empty list in `order` (list_add puts at the head)."""
        for fg in order:
            group = cls.lists[fg]
            if group:
                return group[next(reversed(group))]
        return None

    def _locks(self, cls: SizeClass, pool_write: bool) -> list[tuple[BookedLock, bool]]:
        """The pool and class locks a step of `cls` takes, in order."""
        out = []
        if self.pool_lock is not None:
            out.append((self.pool_lock, pool_write or not self.pool_rw))
        if cls.lock is not None:
            out.append((cls.lock, True))
        return out

    @staticmethod
    def _acquire(locks: list[tuple[BookedLock, bool]], t: float, owner
                 ) -> list[tuple[float, float]]:
        """Take `locks` in order from `t`: (asked, got) per lock, nothing booked yet."""
        times = []
        at = t
        for lock, write in locks:
            start = max(at, lock.free_at(write, owner))
            times.append((at, start))
            at = start
        return times

    @staticmethod
    def _book(locks: list[tuple[BookedLock, bool]], times: list[tuple[float, float]],
              end: float, owner) -> None:
        """Hold every lock taken by `_acquire` until `end`."""
        for (lock, write), (asked, start) in zip(locks, times):
            lock.book(asked, start, max(end, start), write, owner)

    def _take_all(self, locks: list[tuple[BookedLock, bool]], t: float, hold: float,
                  owner) -> float:
        """Take `locks` in order from `t`, all held until the section of `hold` seconds
        after the last ends; returns when the section starts."""
        times = self._acquire(locks, t, owner)
        start = times[-1][1] if times else t
        self._book(locks, times, start + hold, owner)
        return start

    # --- zs_malloc / zs_free -----------------------------------------------------------

    def zs_malloc(self, task: Task, size: int, outcomes: list[Outcome]) -> int:
        """Store one object of `size` compressed bytes; its handle, or -1 (-ENOMEM).
        The caller's wait for the locks is added to its debt."""
        t0 = self.env.now + task.debt
        huge = size >= self.huge_class_size
        if huge:
            size = PAGE_SIZE
        cls = self.size_class[get_size_class_index(size + ZS_HANDLE_SIZE)]
        # zs_malloc under the class lock (the pool lock in 6.2-6.14), then the copy
        # (zs_obj_write / zs_map_object) under the zspage's read lock.
        owner = task.pid
        start = self._take_all(cls.io_locks, t0, self.malloc_s, owner)
        zspage = self._first(cls, self.alloc_order)
        if zspage is None:
            zspage = self._alloc_zspage(task, cls, outcomes)
            if zspage is None:
                task.debt += start - t0
                return -1
        if self.free_handles:
            handle = self.free_handles.pop()
            self.handle_zspage[handle] = zspage
            self.handle_size[handle] = size
        else:
            handle = len(self.handle_zspage)
            self.handle_zspage.append(zspage)
            self.handle_size.append(size)
        zspage.objs[handle] = None
        self._fix_fullness(zspage)
        cls.objs_used += 1
        self._account(cls)
        self.objects += 1
        self.compr_bytes += size
        if huge:
            self.huge_objects += 1
            self.huge_since += 1
        copy_at = start + self.malloc_s
        copy_at += zspage.lock.take(copy_at, self.map_s, False, owner)
        task.debt += copy_at - (t0 + self.malloc_s)
        return handle

    def _alloc_zspage(self, task: Task, cls: SizeClass, outcomes: list[Outcome]
                      ) -> Zspage | None:
        """alloc_zspage: pages_per_zspage order-0 pages, all or none."""
        m = self.m
        mem = m.mem
        pfns: list[int] = []
        for _ in range(cls.pages_per_zspage):
            out = get_page_from_freelist(m, task, self.gfp, 0, ALLOC_NO_WATERMARKS)
            trace_alloc(m, task, out.pfn, 0, self.gfp)
            if out.pfn < 0:
                for pfn in pfns:
                    released = self._release_page(task, pfn)
                    if released is not None:
                        outcomes.append(released)
                return None
            outcomes.append(out)
            pfns.append(out.pfn)
        zspage = Zspage(cls, pfns, BookedLock(self.lock_stats["zspage_lock"]))
        flags = PG_MOVABLE_OPS if self.movable else 0
        for pfn in pfns:
            mem.kind[pfn] = ZSMALLOC
            mem.flags[pfn] = flags
            mem.list_add(m.nodes[node_of(m, pfn)].lists[LIST_ZSPAGES], pfn)
            self.by_pfn[pfn] = zspage
        cls.objs_allocated += cls.objs_per_zspage
        self.pages_allocated += cls.pages_per_zspage
        self.pages_max = max(self.pages_max, self.pages_allocated)
        return zspage

    def _release_page(self, task: Task, pfn: int) -> Outcome | None:
        """A zspage's page goes back; one that compaction holds isolated is left to
        migration, which finds its owner gone and frees it."""
        mem = self.m.mem
        mem.list_del(pfn)
        if mem.flags[pfn] & PG_ISOLATED:
            mem.kind[pfn] = 0
            mem.expire[pfn] = 0
            return None
        mem.kind[pfn] = 0
        mem.flags[pfn] = 0
        return free_pages(self.m, task, pfn, 0)

    def _free_zspage(self, task: Task, zspage: Zspage, outcomes: list[Outcome]) -> None:
        cls = zspage.cls
        self._remove(zspage)
        for pfn in zspage.pfns:
            del self.by_pfn[pfn]
            out = self._release_page(task, pfn)
            if out is not None:
                outcomes.append(out)
        cls.objs_allocated -= cls.objs_per_zspage
        self.pages_allocated -= cls.pages_per_zspage
        self._account(cls)

    def zs_free(self, task: Task, handle: int, outcomes: list[Outcome]) -> None:
        zspage = self.handle_zspage[handle]
        assert zspage is not None, f"zs_free of the free handle {handle}"
        cls = zspage.cls
        t0 = self.env.now + task.debt
        locks = cls.io_locks
        if self.locking is ZsmallocLocking.CLASS_LOCK:
            locks = [(zspage.lock, False)] + locks          # 4.8: migrate_read_lock first
        start = self._take_all(locks, t0, self.malloc_s, task.pid)
        task.debt += start - t0
        del zspage.objs[handle]
        self.handle_zspage[handle] = None
        self.free_handles.append(handle)
        size = self.handle_size[handle]
        self.objects -= 1
        self.compr_bytes -= size
        if size == PAGE_SIZE and self.huge_objects:
            self.huge_objects -= 1
        cls.objs_used -= 1
        if zspage.objs:
            self._fix_fullness(zspage)
            self._account(cls)
        else:
            self._free_zspage(task, zspage, outcomes)

    # --- page migration (movable_ops) ---------------------------------------------------

    def zs_page_migrate(self, pfn: int, t: float) -> tuple[int, float]:
        """The driver's migrate callback for a page at `t`: (rc, seconds waited)."""
        zspage = self.by_pfn.get(pfn)
        if zspage is None:
            return MIGRATEPAGE_SUCCESS, 0.0
        cls = zspage.cls
        lk = self.locking
        if lk is ZsmallocLocking.CLASS_LOCK:
            locks = [(zspage.lock, True)] + self._locks(cls, True)    # the class lock
        elif lk is ZsmallocLocking.ZSPAGE_TRYLOCK:
            locks = self._locks(cls, True)
        else:
            locks = self._locks(cls, True) + [(zspage.lock, True)]
        times = self._acquire(locks, t, MIGRATION)
        start = times[-1][1] if times else t
        if lk is ZsmallocLocking.ZSPAGE_TRYLOCK and not zspage.lock.trylock(
                start, self.migrate_s, MIGRATION):
            self._book(locks, times, start, MIGRATION)     # unlocked again at once
            self.migrate_busy += 1
            return EINVAL, start - t
        self._book(locks, times, start + self.migrate_s, MIGRATION)
        return MIGRATEPAGE_SUCCESS, start - t

    def page_moved(self, old: int, new: int) -> None:
        """The page's data now lives at `new` (zs_page_migrate's replace_sub_page)."""
        zspage = self.by_pfn.pop(old, None)
        if zspage is None:
            return
        pfns = zspage.pfns
        pfns[pfns.index(old)] = new
        self.by_pfn[new] = zspage
        self.migrated += 1

    # --- compaction ----------------------------------------------------------------------

    def zs_compact(self, task: Task, outcomes: list[Outcome]) -> int:
        """zs_compact: every class from the largest; returns pages freed."""
        self.compactions += 1
        freed = 0
        t = self.env.now + task.debt
        for cls in self.classes:
            if cls.can_compact:
                pages, t = self._compact_class(task, cls, t, outcomes)
                freed += pages
        task.debt = t - self.env.now
        self.pages_compacted += freed
        return freed

    def _compact_class(self, task: Task, cls: SizeClass, t: float, outcomes: list[Outcome]
                       ) -> tuple[int, float]:
        """__zs_compact: returns (pages freed, when it finished)."""
        freed = 0
        owner = task.pid
        locks = self._locks(cls, True)
        dst = None
        lk = self.locking
        while cls.can_compact:
            if dst is None:
                dst = self._first(cls, self.dst_order)
                if dst is None:
                    break
                self._remove(dst)
            src = self._first(cls, self.src_order)
            if src is None:
                break
            self._remove(src)
            n = min(len(src.objs), cls.objs_per_zspage - len(dst.objs))
            hold = n * self.map_s
            times = self._acquire(locks, t, owner)
            start = times[-1][1] if times else t
            if lk is ZsmallocLocking.ZSPAGE_TRYLOCK:
                if not src.lock.trylock(start, hold, owner):
                    self._book(locks, times, start, owner)
                    self._insert(src)
                    t = start
                    break
            elif lk is not ZsmallocLocking.CLASS_LOCK:
                start += src.lock.take(start, hold, True, owner)
            self._book(locks, times, start + hold, owner)
            t = start + hold
            handles = list(src.objs)[:n]
            for h in handles:
                del src.objs[h]
                dst.objs[h] = None
                self.handle_zspage[h] = dst
            if src.objs:
                self._insert(src)
            else:
                self._free_zspage(task, src, outcomes)
                freed += cls.pages_per_zspage
            if len(dst.objs) == cls.objs_per_zspage:
                self._insert(dst)
                dst = None
            self._account(cls)
        if dst is not None:
            self._insert(dst)
        self._account(cls)
        return freed, t

    def shrink(self, task: Task, priority: int) -> list[Outcome]:
        """do_shrink_slab for the pool's shrinker: zs_shrinker_count is the pages
        compaction could free; the scan (zs_compact) runs once the scan count owed
        reaches a batch (or everything freeable), the rest is deferred."""
        outcomes: list[Outcome] = []
        total = self.shrinker.do_shrink_slab(self.freeable, priority)
        if not total:
            return outcomes
        self.m.events["slabs_scanned"] += total
        self.zs_compact(task, outcomes)
        return outcomes

    # --- reports -------------------------------------------------------------------------

    def fullness_counts(self) -> list[int]:
        """Zspages per fullness group, over all classes."""
        counts = [0] * len(self.classes[0].lists)
        for cls in self.classes:
            for fg, group in enumerate(cls.lists):
                counts[fg] += len(group)
        return counts

    def locks(self) -> dict[str, dict]:
        return {name: s.stats() for name, s in self.lock_stats.items() if s.acquisitions}
