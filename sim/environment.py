"""The SimPy environments a run steps: SimPy's own, counting the events they schedule.

`CountingEnvironment` is `simpy.Environment` and `PacedEnvironment` SimPy's real-time
environment (for `pace`), each with `events_scheduled`. This module is compiled
(setup.py): every event of a run passes through `schedule` and most steps read `now`,
and SimPy's versions of both are Python-level calls. The overrides keep SimPy's
semantics exactly -- `now` is the clock SimPy advances (`_now`), `schedule` pushes the
same (time, priority, event id, event) entry onto SimPy's queue that
`Environment.schedule` pushes -- and `timeout` is bound once per environment, where SimPy
binds it only for its own classes (`BoundClass.bind_early` reads the instance's class,
not its bases). tests/sim/test_environment.py holds them to SimPy's order of events.
"""

from __future__ import annotations

from functools import partial
from heapq import heappush

import simpy
import simpy.rt
from simpy.events import NORMAL, Timeout


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it schedules."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events_scheduled = 0
        # bound once, as SimPy's BoundClass.bind_early binds it for its own classes
        self.timeout = partial(Timeout, self)  # type: ignore[method-assign]

    @property
    def now(self) -> float:
        """The current simulated time (SimPy's `Environment.now`)."""
        return self._now

    def schedule(self, event, priority=NORMAL, delay=0) -> None:
        """`Environment.schedule`, counted."""
        self.events_scheduled += 1
        heappush(self._queue, (self._now + delay, priority, next(self._eid), event))


class PacedEnvironment(CountingEnvironment, simpy.rt.RealtimeEnvironment):
    """Real-time environment (for `pace`) with the same event count."""
