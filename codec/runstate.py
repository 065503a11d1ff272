"""The lifecycle of a run, defined once: its states in lifecycle order, which state may
follow which, and their numbers in the API (`compactsim.v1.Run.State`).

Everything else derives from here: the store's CHECK constraint and `order_by=state`
ranking, the filter language's state names, the service's Run.state values, the sweep
state, and the client's notion of a run that has ended. The proto enum spells the same
names; `tests/codec/test_runstate.py` fails when the two drift apart.

    QUEUED -> RUNNING -> SUCCEEDED | FAILED
    QUEUED -> CANCELLED, RUNNING -> CANCELLING -> CANCELLED

CANCELLING may still end SUCCEEDED or FAILED: the worker can finish or die before the
cancel lands.
"""

from __future__ import annotations

import enum

from compactsim.proto.v1 import run_pb2


class RunState(str, enum.Enum):
    """A run's state, members in the order `order_by=state` sorts them. The value is the
    name, as stored and as the API's enum spells it."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Ended: no state may follow it."""
        return not TRANSITIONS[self]

    @property
    def has_worker(self) -> bool:
        """A worker simulates it (or is being stopped): the states a server restart
        interrupts and the only ones that record progress."""
        return self in (RunState.RUNNING, RunState.CANCELLING)

    @property
    def proto(self) -> run_pb2.Run.State.ValueType:
        """The `compactsim.v1.Run.State` number."""
        return run_pb2.Run.State.Value(self.value)


# Which state may follow which.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLING, RunState.CANCELLED,
                                RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLING,
                                 RunState.CANCELLED}),
    RunState.CANCELLING: frozenset({RunState.CANCELLED, RunState.SUCCEEDED, RunState.FAILED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}

# The names in lifecycle order (the filter language's and the store's).
NAMES: tuple[str, ...] = tuple(s.value for s in RunState)
TERMINAL: frozenset[RunState] = frozenset(s for s in RunState if s.terminal)
# Run.State numbers of the terminal states: the client's "this run has ended".
TERMINAL_PROTO: frozenset[int] = frozenset(s.proto for s in TERMINAL)
