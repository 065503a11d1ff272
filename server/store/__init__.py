"""RunStore: runs, their events, time series, reports and sweeps in one SQLite file.

The store is the service's only shared state (docs/architecture.md: spec -> worker -> run
manager -> store -> answers). The run manager is its single writer; RPC handlers, the
metrics collector and exports read. Nothing here knows protobuf: records are plain
dataclasses, specs and summaries JSON.

`RunStore` is a facade over parts that share one `Database` (the writing connection, its
lock and the pool of readers), one module a concern:

    database   the connection, transactions, reads, flush, backup, close
    checkpoint copying the WAL back into the file, off the writers' path
    schema     tables, migrations between schema versions, opening a file
    errors     StoreError and its subclasses
    records    RunRecord, RunEvent, Sample, SweepRecord, NewRun and their rows
    paging     page sizes, page tokens, keyset conditions, downsampling
    runs       creating runs, the lifecycle, progress, soft deletion
    listing    ListRuns' pages and counts, runs changed since a cursor
    events     a run's numbered events
    samples    a run's time series
    reports    a run's named texts
    sweeps     sweeps and their runs
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from compactsim.server.store.database import Database
from compactsim.server.store.errors import (
    IdTaken,
    InvalidArgument,
    InvalidPageToken,
    NotFound,
    RequestIdConflict,
    SchemaTooNew,
    StorageError,
    StoreBusy,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreIOError,
    WrongState,
)
from compactsim.server.store.events import Events
from compactsim.server.store.listing import Listing
from compactsim.server.store.records import (
    NewRun,
    Progress,
    RunEvent,
    RunRecord,
    Sample,
    SweepRecord,
)
from compactsim.server.store.reports import Reports
from compactsim.server.store.runs import (
    INTERRUPTED_MESSAGE,
    INTERRUPTED_REASON,
    Runs,
    check_same_request,
)
from compactsim.server.store.samples import Samples
from compactsim.server.store.sweeps import Sweeps

__all__ = [
    "INTERRUPTED_MESSAGE", "INTERRUPTED_REASON", "IdTaken", "InvalidArgument",
    "InvalidPageToken", "NewRun", "NotFound", "Progress", "RequestIdConflict", "RunEvent",
    "RunRecord", "RunStore", "Sample", "SchemaTooNew", "StorageError", "StoreBusy",
    "StoreClosed", "StoreCorrupt", "StoreError", "StoreFull", "StoreIOError", "SweepRecord",
    "WrongState", "check_same_request",
]


class RunStore:
    """Runs and everything they produce, in the SQLite file at `path`.

    `clock` gives ns since the epoch (injected for tests). `max_bytes` caps the file's size:
    a write that would pass it fails with StoreFull, as on a full disk. The WAL goes back
    into the file at most every `checkpoint_every_s` seconds, off the writers' path.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], int] = time.time_ns,
                 max_bytes: int | None = None, busy_timeout_s: float = 5.0,
                 checkpoint_every_s: float = 0.25):
        self.db = db = Database(path, clock=clock, max_bytes=max_bytes,
                                busy_timeout_s=busy_timeout_s,
                                checkpoint_every_s=checkpoint_every_s)
        self.path = db.path
        self.transaction = db.transaction
        self.flush = db.flush
        self.backup = db.backup
        self.close = db.close

        runs = Runs(db)
        self.create_run = runs.create_run
        self.get_run = runs.get_run
        self.find_by_request_id = runs.find_by_request_id
        self.update_state = runs.update_state
        self.update_progress = runs.update_progress
        self.soft_delete = runs.soft_delete
        self.mark_interrupted_on_startup = runs.mark_interrupted_on_startup
        self.queued_runs = runs.queued_runs

        listing = Listing(db)
        self.list_runs = listing.list_runs
        self.count_runs = listing.count_runs
        self.count_by_state = listing.count_by_state
        self.runs_changed = listing.runs_changed

        events = Events(db)
        self.append_event = events.append_event
        self.events_after = events.events_after

        samples = Samples(db)
        self.add_samples = samples.add_samples
        self.put_samples = samples.put_samples
        self.merge_samples = samples.merge_samples
        self.list_samples = samples.list_samples

        reports = Reports(db)
        self.put_report = reports.put_report
        self.put_reports = reports.put_reports
        self.put_report_part = reports.put_report_part
        self.get_reports = reports.get_reports
        self.get_report = reports.get_report
        self.report_names = reports.report_names

        sweeps = Sweeps(db)
        self.create_sweep = sweeps.create_sweep
        self.get_sweep = sweeps.get_sweep
        self.list_sweeps = sweeps.list_sweeps
        self.sweep_runs = sweeps.sweep_runs
        self.soft_delete_sweep = sweeps.soft_delete_sweep

    @property
    def schema_version(self) -> int:
        return self.db.schema_version

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
