"""A shrinker's scan count: `do_shrink_slab`'s arithmetic, shared by every shrinker.

Follows mm/vmscan.c `do_shrink_slab` (mm/shrinker.c from 6.7): the work owed at a reclaim
priority is `freeable >> priority` scaled by 4 / `seeks`, added to what earlier calls
deferred and capped at twice the freeable count; a scan runs only once that reaches a
batch (`SHRINK_BATCH`, or everything freeable when there is less), otherwise the count is
deferred to the next call. Simplified: one deferred count per shrinker (the kernel keeps
one per node and memcg), and a scan does all the work owed at once rather than batch by
batch.
"""

from __future__ import annotations

SHRINK_BATCH = 128
DEFAULT_SEEKS = 2


class Shrinker:
    """One shrinker's deferred scan count (`shrinker->nr_deferred`)."""

    __slots__ = ("nr_deferred",)

    def __init__(self) -> None:
        self.nr_deferred = 0

    def do_shrink_slab(self, freeable: int, priority: int) -> int:
        """The objects to scan now at reclaim `priority`; 0 while the work is deferred."""
        if not freeable:
            return 0
        delta = (freeable >> priority) * 4 // DEFAULT_SEEKS
        total = min(self.nr_deferred + delta, 2 * freeable)
        if total < min(SHRINK_BATCH, freeable):
            self.nr_deferred = total
            return 0
        self.nr_deferred = 0
        return total
