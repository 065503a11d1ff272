"""Runs: creating them (idempotently, by request_id), reading one, moving them through
the lifecycle of `compactsim.codec.runstate` with a "state" event in the same
transaction, their progress, and soft deletion."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Mapping
from typing import Any

from compactsim.codec.runstate import TRANSITIONS, RunState
from compactsim.server.store import events
from compactsim.server.store.database import Database
from compactsim.server.store.errors import (
    IdTaken,
    InvalidArgument,
    NotFound,
    RequestIdConflict,
    WrongState,
)
from compactsim.server.store.records import (
    RUN_SELECT,
    NewRun,
    Progress,
    RunRecord,
    fetch_run,
    run_from_row,
    to_json,
)

INTERRUPTED_REASON = "interrupted"
INTERRUPTED_MESSAGE = "interrupted by a server restart"

_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_WORKING = tuple(s.value for s in RunState if s.has_worker)


def check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(f"{what} {value!r}: must be 1 to 63 lower-case letters, digits "
                              f"or '-', starting with a letter or digit")
    return value


def _check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not k or len(k) > 128:
            raise InvalidArgument(f"label key {k!r}: must be a string of 1 to 128 characters")
        if not isinstance(v, str) or len(v) > 1024:
            raise InvalidArgument(f"label {k}: the value must be a string of at most 1024 "
                                  f"characters")
        out[k] = v
    return out


def check_same_request(old: RunRecord, new: NewRun, sweep_id: str = "") -> None:
    """RequestIdConflict unless `new` asks for what `old`, the run made the first time its
    request_id was used, was made of (spec, display name, labels, scenario, sweep)."""
    if (json.loads(old.spec_json) != json.loads(to_json("spec", dict(new.spec)))
            or old.display_name != new.display_name or old.labels != dict(new.labels)
            or old.scenario != new.scenario or old.sweep_id != sweep_id):
        raise RequestIdConflict(
            f"request_id {new.request_id!r} was already used by {new.creator!r} for "
            f"runs/{old.id} with a different request; use a new request_id for a new run")


def _by_request_id(c: sqlite3.Connection, creator: str, request_id: str) -> RunRecord | None:
    row = c.execute(f"SELECT {RUN_SELECT} FROM runs WHERE creator = ? AND request_id = ?",
                    (creator, request_id)).fetchone()
    return None if row is None else run_from_row(row)


def _state_payload(state: RunState, reason: str, message: str, interrupted: bool) -> dict:
    return {"state": state.value, "error_reason": reason, "error_message": message,
            "interrupted": interrupted}


def insert_run(c: sqlite3.Connection, new: NewRun, sweep_id: str, now: int
               ) -> tuple[RunRecord, bool]:
    """Store `new` as a QUEUED run of the sweep `sweep_id` ("" for none), in the
    transaction `c` is in; or the run its request_id made before, with created=False."""
    spec_json = to_json("spec", dict(new.spec))
    labels_json = to_json("labels", _check_labels(new.labels))
    provenance_json = to_json("provenance", dict(new.provenance))
    if new.request_id is not None:
        old = _by_request_id(c, new.creator, new.request_id)
        if old is not None:
            check_same_request(old, new, sweep_id)
            return old, False
    run_id = check_id("run id", new.run_id) if new.run_id else uuid.uuid4().hex
    if sweep_id and c.execute("SELECT 1 FROM sweeps WHERE id = ?",
                              (sweep_id,)).fetchone() is None:
        raise NotFound(f"sweep {sweep_id} not found")
    if c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None:
        raise IdTaken(f"run id {run_id} is taken")
    c.execute("INSERT INTO runs (id, display_name, scenario, spec_json, state, labels_json, "
              "provenance_json, creator, request_id, sweep_id, create_time_ns, "
              "update_time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              (run_id, new.display_name, new.scenario, spec_json, RunState.QUEUED.value,
               labels_json, provenance_json, new.creator, new.request_id, sweep_id, now, now))
    events.append(c, run_id, events.EVENT_STATE,
                  _state_payload(RunState.QUEUED, "", "", False), now)
    return fetch_run(c, run_id), True


def _set_state(c: sqlite3.Connection, run_id: str, state: RunState, reason: str, message: str,
               summary: Mapping[str, Any] | None, interrupted: bool, now: int) -> RunRecord:
    run = fetch_run(c, run_id)
    if state not in TRANSITIONS[run.state]:
        raise WrongState(f"run {run_id} is {run.state.value}; it cannot become "
                         f"{state.value}")
    start = now if state is RunState.RUNNING else run.start_time_ns
    end = now if state.terminal else None
    summary_json = (run.summary_json if summary is None
                    else to_json("summary", dict(summary), strict=False))
    c.execute("UPDATE runs SET state = ?, error_reason = ?, error_message = ?, "
              "interrupted = ?, start_time_ns = ?, end_time_ns = ?, summary_json = ?, "
              "update_time_ns = ? WHERE id = ?",
              (state.value, reason, message, int(interrupted), start, end, summary_json,
               now, run_id))
    events.append(c, run_id, events.EVENT_STATE,
                  _state_payload(state, reason, message, interrupted), now)
    return fetch_run(c, run_id)


class Runs:
    def __init__(self, db: Database):
        self._db = db

    def create_run(self, spec: Mapping[str, Any], *, display_name: str = "",
                   scenario: str = "", labels: Mapping[str, str] | None = None,
                   provenance: Mapping[str, Any] | None = None, creator: str = "",
                   request_id: str | None = None, sweep_id: str = "",
                   run_id: str | None = None) -> tuple[RunRecord, bool]:
        """Store a new QUEUED run (its first event is the QUEUED state).

        Returns (record, created). With a request_id this creator has used before, nothing
        is written and the earlier run comes back with created=False; if that request asked
        for something else, RequestIdConflict.
        """
        new = NewRun(spec=spec, display_name=display_name, scenario=scenario,
                     labels=labels or {}, provenance=provenance or {}, creator=creator,
                     request_id=request_id or None, run_id=run_id)
        with self._db.write() as c:
            return insert_run(c, new, sweep_id, self._db.now())

    def get_run(self, run_id: str) -> RunRecord:
        """The run, deleted or not (see `deleted`); NotFound if there never was one."""
        with self._db.read() as c:
            return fetch_run(c, run_id)

    def find_by_request_id(self, creator: str, request_id: str) -> RunRecord | None:
        """The run `creator` made with `request_id`, if any (check_same_request tells
        whether a retry asks for the same)."""
        with self._db.read() as c:
            return _by_request_id(c, creator, request_id)

    def update_state(self, run_id: str, state: RunState | str, *, error_reason: str = "",
                     error_message: str = "", summary: Mapping[str, Any] | None = None,
                     interrupted: bool = False) -> RunRecord:
        """Move a run to `state` (WrongState if TRANSITIONS forbid it), stamping the start
        or end time, with its "state" event in the same transaction. `summary` (any state)
        replaces the stored summary."""
        state = RunState(state)
        with self._db.write() as c:
            return _set_state(c, run_id, state, error_reason, error_message, summary,
                              interrupted, self._db.now())

    def update_progress(self, run_id: str, progress: Progress) -> RunRecord:
        """Record progress of a run that has a worker, with its "progress" event."""
        with self._db.write() as c:
            run = fetch_run(c, run_id)
            if not run.state.has_worker:
                raise WrongState(f"run {run_id} is {run.state.value}; progress is recorded "
                                 f"only while it runs")
            now = self._db.now()
            c.execute("UPDATE runs SET sim_time_s = ?, fraction = ?, events = ?, wall_s = ?, "
                      "update_time_ns = ? WHERE id = ?",
                      (float(progress.sim_time_s), float(progress.fraction),
                       int(progress.events), float(progress.wall_s), now, run_id))
            events.append(c, run_id, events.EVENT_PROGRESS, {
                "sim_time_s": progress.sim_time_s, "fraction": progress.fraction,
                "events": progress.events, "wall_s": progress.wall_s}, now)
            return fetch_run(c, run_id)

    def soft_delete(self, run_id: str) -> RunRecord:
        """Hide a run from lists (get_run still finds it, with deleted=True); its data stay.
        Deleting a deleted run changes nothing."""
        with self._db.write() as c:
            run = fetch_run(c, run_id)
            if run.deleted:
                return run
            now = self._db.now()
            c.execute("UPDATE runs SET deleted = 1, delete_time_ns = ?, update_time_ns = ? "
                      "WHERE id = ?", (now, now, run_id))
            events.append(c, run_id, events.EVENT_DELETED, {}, now)
            return fetch_run(c, run_id)

    def mark_interrupted_on_startup(self) -> list[RunRecord]:
        """After a crash or restart: runs that had a worker (RUNNING, CANCELLING) lost it
        and become FAILED with reason "interrupted" (re-runnable from their spec and seed);
        QUEUED runs stay QUEUED for the manager to start again. Returns the changed runs."""
        with self._db.write() as c:
            ids = [r[0] for r in c.execute(
                f"SELECT id FROM runs WHERE state IN ({', '.join('?' * len(_WORKING))}) "
                f"ORDER BY create_time_ns, id", _WORKING)]
            return [_set_state(c, i, RunState.FAILED, INTERRUPTED_REASON, INTERRUPTED_MESSAGE,
                               None, True, self._db.now()) for i in ids]

    def queued_runs(self) -> list[RunRecord]:
        """QUEUED runs, oldest first (deleted ones too: the manager decides)."""
        with self._db.read() as c:
            return [run_from_row(r) for r in c.execute(
                f"SELECT {RUN_SELECT} FROM runs WHERE state = ? ORDER BY create_time_ns, id",
                (RunState.QUEUED.value,))]
