"""Sweeps: a grid or an experiment's arms over a base spec, stored with all its runs in
one transaction, read with its runs, and soft-deleted."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from compactsim.server.store.database import Database
from compactsim.server.store.errors import InvalidArgument, RequestIdConflict
from compactsim.server.store.records import (
    RUN_SELECT,
    SWEEP_SELECT,
    NewRun,
    RunRecord,
    SweepRecord,
    fetch_sweep,
    run_from_row,
    sweep_from_row,
    to_json,
)
from compactsim.server.store.runs import check_id, insert_run


class Sweeps:
    def __init__(self, db: Database):
        self._db = db

    def create_sweep(self, base_spec: Mapping[str, Any], grid: Any, *, display_name: str = "",
                     creator: str = "", runs: Sequence[NewRun] = (),
                     sweep_id: str | None = None) -> tuple[SweepRecord, list[RunRecord]]:
        """A sweep and its runs (each in the sweep), in one transaction."""
        base_json, grid_json = to_json("base spec", dict(base_spec)), to_json("grid", grid)
        with self._db.write() as c:
            sid = check_id("sweep id", sweep_id) if sweep_id else uuid.uuid4().hex
            if c.execute("SELECT 1 FROM sweeps WHERE id = ?", (sid,)).fetchone():
                raise InvalidArgument(f"sweep id {sid} is taken")
            c.execute("INSERT INTO sweeps (id, display_name, base_spec_json, grid_json, "
                      "creator, create_time_ns) VALUES (?, ?, ?, ?, ?, ?)",
                      (sid, display_name, base_json, grid_json, creator, self._db.now()))
            records = []
            for new in runs:
                record, created = insert_run(c, new, sid, self._db.now())
                if not created:
                    raise RequestIdConflict(f"request_id {new.request_id!r} of a sweep run "
                                            f"was already used for run {record.id}")
                records.append(record)
            return fetch_sweep(c, sid), records

    def get_sweep(self, sweep_id: str) -> SweepRecord:
        with self._db.read() as c:
            return fetch_sweep(c, sweep_id)

    def list_sweeps(self, *, creator: str | None = None,
                    show_deleted: bool = False) -> list[SweepRecord]:
        """Sweeps, oldest first."""
        sql = (f"SELECT {SWEEP_SELECT} FROM sweeps WHERE (? IS NULL OR creator = ?) "
               f"AND (? OR deleted = 0) ORDER BY create_time_ns, id")
        with self._db.read() as c:
            return [sweep_from_row(r) for r in c.execute(sql, (creator, creator,
                                                               int(show_deleted)))]

    def sweep_runs(self, sweep_id: str) -> list[RunRecord]:
        """The sweep's runs in creation order (deleted ones too)."""
        with self._db.read() as c:
            fetch_sweep(c, sweep_id)
            return [run_from_row(r) for r in c.execute(
                f"SELECT {RUN_SELECT} FROM runs WHERE sweep_id = ? ORDER BY create_time_ns, "
                f"rowid", (sweep_id,))]

    def soft_delete_sweep(self, sweep_id: str) -> SweepRecord:
        """Hide a sweep from list_sweeps (its runs are deleted one by one, by the caller)."""
        with self._db.write() as c:
            fetch_sweep(c, sweep_id)
            c.execute("UPDATE sweeps SET deleted = 1 WHERE id = ?", (sweep_id,))
            return fetch_sweep(c, sweep_id)
