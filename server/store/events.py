"""A run's events: numbered 1, 2, 3... per run without gaps, each appended in the
transaction of the change it reports, so a watcher resuming with `after_sequence` after a
disconnect or a server restart sees each change exactly once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from compactsim.server.store.database import Database
from compactsim.server.store.errors import InvalidArgument
from compactsim.server.store.records import RunEvent, fetch_run, to_json

# Event types the store itself appends; append_event() may add others.
EVENT_STATE = "state"
EVENT_PROGRESS = "progress"
EVENT_DELETED = "deleted"


def append(c: sqlite3.Connection, run_id: str, type_: str, payload: dict, now: int
           ) -> RunEvent:
    """Append an event to the run, in the transaction `c` is in."""
    payload_json = to_json("event payload", payload)
    (seq,) = c.execute("UPDATE runs SET last_sequence = last_sequence + 1 WHERE id = ? "
                       "RETURNING last_sequence", (run_id,)).fetchone()
    c.execute("INSERT INTO run_events (run_id, sequence, time_ns, type, payload_json) "
              "VALUES (?, ?, ?, ?, ?)", (run_id, seq, now, type_, payload_json))
    return RunEvent(run_id, seq, now, type_, json.loads(payload_json))


class Events:
    def __init__(self, db: Database):
        self._db = db

    def append_event(self, run_id: str, type: str, payload: Mapping[str, Any]) -> RunEvent:
        """Append an event of another type (a log line, a phase change...)."""
        if not type:
            raise InvalidArgument("event type must not be empty")
        with self._db.write() as c:
            fetch_run(c, run_id)
            return append(c, run_id, type, dict(payload), self._db.now())

    def events_after(self, run_id: str, after_sequence: int = 0,
                     limit: int = 1000) -> list[RunEvent]:
        """The run's events with sequence > after_sequence, oldest first, at most `limit`."""
        if after_sequence < 0 or limit <= 0:
            raise InvalidArgument("after_sequence must be >= 0 and limit > 0")
        with self._db.read() as c:
            fetch_run(c, run_id)
            return [RunEvent(run_id, s, t, ty, json.loads(p)) for s, t, ty, p in c.execute(
                "SELECT sequence, time_ns, type, payload_json FROM run_events WHERE run_id = ? "
                "AND sequence > ? ORDER BY sequence LIMIT ?", (run_id, after_sequence, limit))]
