"""The simulated task context an allocation or free runs in (a sliver of task_struct)."""

from __future__ import annotations

import cython


@cython.dataclasses.dataclass
@cython.cclass
class Task:
    """Who is running: for trace lines, per-cpu lists and PF_MEMALLOC."""

    comm: str
    pid: int
    cpu: int
    node: int
    memalloc: bool = False   # PF_MEMALLOC: reclaim or compaction context, no recursion
    debt: float = 0.0        # CPU time used but not yet turned into a simulated wait
    lru_pending: int = 0     # pages put on or taken off an LRU, awaiting the lruvec lock
    # the per-cpu lru_add batch: blocks added to an LRU, not PageLRU until it drains
    lru_add: list[int] = cython.dataclasses.field(default_factory=list)
