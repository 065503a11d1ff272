"""WatchRun's stream: the run's snapshot, then its events as they are stored, heartbeats
while nothing happens, until the run has ended or the server shuts down.

Backpressure: grpc.aio applies HTTP/2 flow control to a server stream. When the watcher
does not read, the handler stays suspended at its `yield` once the stream's window is used
up. Measured with grpc 1.85 on loopback: a stream takes about 4 MiB, which sits in the
client's transport buffers, and the server's resident memory stays flat, for a held,
unread call and for a stopped client process alike. So a slow watcher never makes the
server queue events: a stalled stream holds at most the batch it was sending (up to 200
events).

Waiting happens on the loop (server.changes), not in a thread: an idle stream holds no
thread of the pool the other RPCs run in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import run_pb2, simulator_pb2
from compactsim.server import mapping
from compactsim.server.changes import RunChanges
from compactsim.server.rpc_errors import unavailable
from compactsim.server.store import RunEvent, RunRecord, RunStore

DEFAULT_HEARTBEAT_S = 10.0
# A watch stream with nothing to send looks at its run at least this often, woken or not.
WATCH_RECHECK_S = 5.0
# Events per read of the store.
_BATCH = 200


class Watches:
    def __init__(self, store: RunStore, runs: mapping.Runs, changes: RunChanges):
        self.store = store
        self.runs = runs
        self.changes = changes
        self.closed = asyncio.Event()

    def close(self) -> None:
        """Open streams send the events already stored, then end (UNAVAILABLE)."""
        self.closed.set()
        self.changes.close()

    def _events_or_run(self, run_id: str, seq: int) -> tuple[list[RunEvent], RunRecord | None]:
        """The run's events after `seq` (at most _BATCH), or, when there are none, the run."""
        events = self.store.events_after(run_id, seq, _BATCH)
        return events, None if events else self.store.get_run(run_id)

    def _state_at(self, run_id: str, seq: int) -> run_pb2.Run.State.ValueType:
        """The run's Run.State after its event `seq`."""
        state, after = run_pb2.Run.STATE_UNSPECIFIED, 0
        while after < seq:
            events = self.store.events_after(run_id, after, min(1000, seq - after))
            if not events:
                break
            for ev in events:
                if ev.type == "state":
                    state = RunState(ev.payload["state"]).proto
            after = events[-1].sequence
        return state

    async def stream(self, rec: RunRecord, heartbeat: float,
                     request: simulator_pb2.WatchRunRequest
                     ) -> AsyncIterator[simulator_pb2.WatchRunResponse]:
        """The responses of a watch of `rec`; RpcFailure (UNAVAILABLE) at shutdown."""
        snapshot = await asyncio.to_thread(self.runs.run, rec)
        yield simulator_pb2.WatchRunResponse(snapshot=snapshot, sequence=rec.last_sequence)
        if request.HasField("after_sequence"):
            seq = min(request.after_sequence, rec.last_sequence)
        else:
            seq = rec.last_sequence
            if rec.state.terminal:
                return
        state = await asyncio.to_thread(self._state_at, rec.id, seq)
        last_sent = time.monotonic()
        self.changes.attach(asyncio.get_running_loop())
        with self.changes.watching(rec.id):
            while True:
                closed = self.closed.is_set()   # shutting down: send what is stored, end
                version = self.changes.version(rec.id)
                events, now_rec = await asyncio.to_thread(self._events_or_run, rec.id, seq)
                if closed and not events:
                    raise unavailable()
                for ev in events:
                    msg, state = self.runs.event(rec, ev, state)
                    seq = ev.sequence
                    yield simulator_pb2.WatchRunResponse(event=msg, sequence=seq)
                    last_sent = time.monotonic()
                    if ev.type == "state" and RunState(ev.payload["state"]).terminal:
                        return
                if events:
                    continue
                assert now_rec is not None
                if now_rec.state.terminal and now_rec.last_sequence <= seq:
                    return
                if time.monotonic() - last_sent >= heartbeat:
                    yield simulator_pb2.WatchRunResponse(heartbeat=simulator_pb2.Heartbeat(),
                                                         sequence=seq)
                    last_sent = time.monotonic()
                due = heartbeat - (time.monotonic() - last_sent)
                await self.changes.wait(rec.id, version, min(due, WATCH_RECHECK_S))
