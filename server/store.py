"""RunStore: runs, their events, time series, reports and sweeps in one SQLite file.

The store is the service's only shared state (docs/architecture.md: spec -> worker -> run manager ->
store -> answers). The run manager is its single writer; RPC handlers, the metrics
collector and exports read. One connection writes, under one lock, in WAL mode with
`synchronous=NORMAL`: a crash of the process loses no committed transaction. Reads take a
connection of their own from a pool (read-only, each read one read transaction: a
consistent snapshot of what was committed), so a read never waits for a write, however
large, nor for the lock; a read inside a thread's own `transaction()` uses the writing
connection and sees what the transaction wrote so far. An outside reader (a backup,
`sqlite3` by hand) never blocks the writer either.

Every write is one transaction. A state change and its run event commit together, so a
watcher resuming with `after_sequence` after a disconnect or a server restart sees each
change exactly once, numbered 1, 2, 3... per run without gaps. A write that fails (disk
full, an I/O error, a bad argument) rolls back whole and raises a `StoreError` subclass;
the file stays consistent. `transaction()` groups several writes (a run's last samples,
reports, summary and terminal state) into one.

Nothing here knows protobuf: records are plain dataclasses, specs and summaries JSON.
Page tokens are opaque: base64 of the last row's sort key and a hash of the query that
issued them, so a token cannot be replayed against another filter or order.

Schema versions live in `PRAGMA user_version`; `MIGRATIONS[v - 1]` takes a file from
version v - 1 to v, each step in its own transaction. A file from a newer compactsim is
refused rather than misread.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compactsim.codec.runstate import NAMES, TRANSITIONS, RunState
from compactsim.server.filters import (
    CompiledFilter,
    compile_filter,
    parse_order_by,
    render_order_by,
)

INTERRUPTED_REASON = "interrupted"
INTERRUPTED_MESSAGE = "interrupted by a server restart"

# Event types the store itself appends; append_event() may add others.
EVENT_STATE = "state"
EVENT_PROGRESS = "progress"
EVENT_DELETED = "deleted"

DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE = 50, 1000
DEFAULT_SAMPLES_PAGE, MAX_SAMPLES_PAGE = 1000, 10_000
DEFAULT_ORDER = "create_time desc"


# -- errors ---------------------------------------------------------------------------------

class StoreError(Exception):
    """Anything the store refuses or cannot do."""


class NotFound(StoreError):
    """No such run, sweep or report."""


class InvalidArgument(StoreError, ValueError):
    """A bad argument (page size, label, JSON that is not JSON...): nothing was written."""


class IdTaken(InvalidArgument):
    """A run or sweep id given by the caller that another run or sweep already has."""


class InvalidPageToken(InvalidArgument):
    """A page token this store did not issue, or issued for another query."""


class WrongState(StoreError):
    """The run's state does not allow this (a transition out of a terminal state...)."""


class RequestIdConflict(StoreError):
    """A request_id reused by the same creator for a different request."""


class StorageError(StoreError):
    """The file under the store failed; the failed write was rolled back."""


class StoreFull(StorageError):
    """The disk (or the store's size limit) is full."""


class StoreIOError(StorageError):
    """The operating system reported an I/O error, or the file is read-only."""


class StoreCorrupt(StorageError):
    """The file is not a compactsim store or is damaged."""


class StoreBusy(StorageError):
    """Another process holds the file's write lock for longer than the busy timeout."""


class SchemaTooNew(StoreError):
    """The file was written by a newer compactsim."""


class StoreClosed(StoreError):
    """The store was closed."""


_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26


def _storage_error(e: sqlite3.Error, path: str) -> StoreError:
    """A StoreError subclass for an sqlite3 error, by its primary result code."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    name = getattr(e, "sqlite_errorname", "") or type(e).__name__
    detail = f"{e} [{name}]"
    if code == _SQLITE_FULL:
        return StoreFull(f"the store {path} is full (no space left on its disk, or its size "
                         f"limit reached); the write was rolled back: {detail}")
    if code in (_SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_CANTOPEN):
        return StoreIOError(f"I/O error on the store {path}; the write was rolled back: "
                            f"{detail}")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupt(f"{path} is not a readable compactsim store: {detail}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreBusy(f"the store {path} is locked by another process: {detail}")
    return StorageError(f"store {path}: {detail}")


# -- records --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run has got."""

    sim_time_s: float = 0.0   # simulated time reached, seconds
    fraction: float = 0.0     # of the simulated duration, 0..1
    events: int = 0           # SimPy events processed
    wall_s: float = 0.0       # wall-clock time spent running, seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run as stored. Times are ns since the epoch (None: not yet)."""

    id: str
    display_name: str
    scenario: str                 # preset the spec came from ("" for a spec file)
    spec_json: str                # the raw spec as submitted
    state: RunState
    error_reason: str             # short machine-readable cause ("interrupted", ...) or ""
    error_message: str            # for people, or ""
    interrupted: bool             # cut off by a server crash or restart
    progress: Progress
    summary_json: str | None
    labels: dict[str, str]
    provenance: dict[str, Any]    # code version, seed, spec hash, library versions
    creator: str
    request_id: str | None        # unique per creator: makes CreateRun retries safe
    sweep_id: str                 # "" when not part of a sweep
    create_time_ns: int
    start_time_ns: int | None
    end_time_ns: int | None
    update_time_ns: int
    deleted: bool                 # soft-deleted: hidden from lists, NOT_FOUND to readers
    delete_time_ns: int | None
    last_sequence: int            # sequence of the run's latest event

    @property
    def spec(self) -> dict:
        return json.loads(self.spec_json)

    @property
    def summary(self) -> dict | None:
        return None if self.summary_json is None else json.loads(self.summary_json)


@dataclass(frozen=True, slots=True)
class RunEvent:
    run_id: str
    sequence: int      # 1, 2, 3... per run, without gaps
    time_ns: int
    type: str          # "state", "progress", "deleted" or an append_event() type
    payload: dict


@dataclass(frozen=True, slots=True)
class Sample:
    index: int         # 0, 1, 2... per run in the order added
    sim_time_s: float
    row: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepRecord:
    id: str
    display_name: str
    base_spec_json: str
    grid_json: str
    creator: str
    create_time_ns: int
    deleted: bool

    @property
    def base_spec(self) -> dict:
        return json.loads(self.base_spec_json)

    @property
    def grid(self) -> Any:
        return json.loads(self.grid_json)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """What create_run() and create_sweep() need to create a run."""

    spec: Mapping[str, Any]
    display_name: str = ""
    scenario: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    creator: str = ""
    request_id: str | None = None
    run_id: str | None = None      # chosen by the caller; a fresh id when None


# -- schema ---------------------------------------------------------------------------------

APPLICATION_ID = 0x63736D31  # "csm1": marks the file as a compactsim store

_STATE_CHECK = ", ".join(f"'{s}'" for s in NAMES)

_SCHEMA_V1 = f"""
CREATE TABLE sweeps (
    id              TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL DEFAULT '',
    base_spec_json  TEXT NOT NULL,
    grid_json       TEXT NOT NULL,
    creator         TEXT NOT NULL DEFAULT '',
    create_time_ns  INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL DEFAULT '',
    scenario        TEXT NOT NULL DEFAULT '',
    spec_json       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
    error_reason    TEXT NOT NULL DEFAULT '',
    error_message   TEXT NOT NULL DEFAULT '',
    interrupted     INTEGER NOT NULL DEFAULT 0,
    sim_time_s      REAL NOT NULL DEFAULT 0,
    fraction        REAL NOT NULL DEFAULT 0,
    events          INTEGER NOT NULL DEFAULT 0,
    wall_s          REAL NOT NULL DEFAULT 0,
    summary_json    TEXT,
    labels_json     TEXT NOT NULL DEFAULT '{{}}',
    provenance_json TEXT NOT NULL DEFAULT '{{}}',
    creator         TEXT NOT NULL DEFAULT '',
    request_id      TEXT,
    sweep_id        TEXT NOT NULL DEFAULT '',
    create_time_ns  INTEGER NOT NULL,
    start_time_ns   INTEGER,
    end_time_ns     INTEGER,
    update_time_ns  INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0,
    delete_time_ns  INTEGER,
    last_sequence   INTEGER NOT NULL DEFAULT 0,
    sample_count    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX runs_request_id ON runs (creator, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX runs_create_time ON runs (create_time_ns, id);
CREATE INDEX runs_state ON runs (state);
CREATE INDEX runs_sweep ON runs (sweep_id) WHERE sweep_id != '';
CREATE TABLE run_events (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    sequence        INTEGER NOT NULL,
    time_ns         INTEGER NOT NULL,
    type            TEXT NOT NULL,
    payload_json    TEXT NOT NULL,
    PRIMARY KEY (run_id, sequence)
) WITHOUT ROWID;
CREATE TABLE samples (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    idx             INTEGER NOT NULL,
    sim_time_s      REAL NOT NULL,
    row_json        TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
CREATE TABLE reports (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    name            TEXT NOT NULL,
    text            TEXT NOT NULL,
    update_time_ns  INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V1)


# A report too large for one short transaction (a run's trace: up to 10^6 lines) is stored
# as parts, each written on its own; its text is the parts joined in order.
_SCHEMA_V2 = """
CREATE TABLE report_parts (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    name            TEXT NOT NULL,
    part            INTEGER NOT NULL,
    text            TEXT NOT NULL,
    PRIMARY KEY (run_id, name, part)
);
"""


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    _run_script(conn, _SCHEMA_V2)


# MIGRATIONS[v - 1] takes a file from schema v - 1 to v. Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_1, _migrate_to_2]


# -- helpers --------------------------------------------------------------------------------

_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

_RUN_COLUMNS = ("id, display_name, scenario, spec_json, state, error_reason, error_message, "
                "interrupted, sim_time_s, fraction, events, wall_s, summary_json, labels_json, "
                "provenance_json, creator, request_id, sweep_id, create_time_ns, start_time_ns, "
                "end_time_ns, update_time_ns, deleted, delete_time_ns, last_sequence")
_RUN_SELECT = ", ".join(f"runs.{c.strip()}" for c in _RUN_COLUMNS.split(","))
_N_RUN_COLUMNS = len(_RUN_COLUMNS.split(","))

_STATE_RANK = "CASE runs.state " + " ".join(
    f"WHEN '{s}' THEN {i}" for i, s in enumerate(NAMES)) + " END"
# end_time: runs not ended (NULL) after every time, so keyset pages compare no NULL
_WORKING = tuple(s.value for s in RunState if s.has_worker)
_ORDER_SQL = {"create_time": "runs.create_time_ns",
              "end_time": f"COALESCE(runs.end_time_ns, {2**63 - 1})",
              "display_name": "runs.display_name", "state": _STATE_RANK}


def _run_from_row(r: Sequence) -> RunRecord:
    return RunRecord(
        id=r[0], display_name=r[1], scenario=r[2], spec_json=r[3], state=RunState(r[4]),
        error_reason=r[5], error_message=r[6], interrupted=bool(r[7]),
        progress=Progress(r[8], r[9], r[10], r[11]), summary_json=r[12],
        labels=json.loads(r[13]), provenance=json.loads(r[14]), creator=r[15],
        request_id=r[16], sweep_id=r[17], create_time_ns=r[18], start_time_ns=r[19],
        end_time_ns=r[20], update_time_ns=r[21], deleted=bool(r[22]), delete_time_ns=r[23],
        last_sequence=r[24])


def _sweep_from_row(r: Sequence) -> SweepRecord:
    return SweepRecord(id=r[0], display_name=r[1], base_spec_json=r[2], grid_json=r[3],
                       creator=r[4], create_time_ns=r[5], deleted=bool(r[6]))


def _json(what: str, value: Any, *, strict: bool = True) -> str:
    """`value` as JSON. Not strict (summaries, samples): NaN and infinities pass, as
    Python's json writes and reads them."""
    try:
        return json.dumps(value, allow_nan=not strict)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} is not representable as JSON: {e}") from None


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


def _check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(f"{what} {value!r}: must be 1 to 63 lower-case letters, digits "
                              f"or '-', starting with a letter or digit")
    return value


def _page_size(page_size: int, default: int, maximum: int) -> int:
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative (got {page_size})")
    return min(page_size or default, maximum)


def _run_filter(filter: str, show_deleted: bool) -> tuple[CompiledFilter, list[str], list]:
    """The compiled filter, and the WHERE terms (joined with AND) and parameters that select
    the runs it matches: list_runs and count_runs share them."""
    compiled = compile_filter(filter)
    where, params = [compiled.sql], list(compiled.params)
    if not show_deleted:
        where.append("runs.deleted = 0")
    return compiled, where, params


def _encode_token(query_hash: str, body: dict) -> str:
    raw = json.dumps({"h": query_hash, **body}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query_hash: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("h"), str):
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidPageToken("page_token is not one this server issued; start again "
                               "without a page_token") from None
    if body["h"] != query_hash:
        raise InvalidPageToken("page_token was issued for a different filter, order_by or "
                               "query; send the same ones as on the first page, or start "
                               "again without a page_token")
    return body


def _bindable(v: Any) -> bool:
    """A sort key a page token may carry: a 64-bit integer or text SQLite can bind."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -2**63 <= v < 2**63
    if isinstance(v, str):
        try:
            v.encode()
        except UnicodeEncodeError:   # a lone surrogate from a \ud800 escape
            return False
        return True
    return False


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def downsample_indices(n: int, max_points: int) -> Callable[[int], int]:
    """For a series of n points kept to at most max_points (>= 2, or 0 for all): position
    p -> index of the p-th kept point. Kept points are evenly spaced, the first and the
    last always among them; there are min(n, max_points) of them."""
    m = n if max_points == 0 else min(n, max_points)
    if m <= 1 or m == n:
        return lambda p: p
    # round(p * (n - 1) / (m - 1)), half up, in integers; the step is >= 1 so no repeats.
    return lambda p: (2 * p * (n - 1) + (m - 1)) // (2 * (m - 1))


# -- the store ------------------------------------------------------------------------------

def check_same_request(old: RunRecord, new: NewRun, sweep_id: str = "") -> None:
    """RequestIdConflict unless `new` asks for what `old`, the run made the first time its
    request_id was used, was made of (spec, display name, labels, scenario, sweep)."""
    if (json.loads(old.spec_json) != json.loads(_json("spec", dict(new.spec)))
            or old.display_name != new.display_name or old.labels != dict(new.labels)
            or old.scenario != new.scenario or old.sweep_id != sweep_id):
        raise RequestIdConflict(
            f"request_id {new.request_id!r} was already used by {new.creator!r} for "
            f"runs/{old.id} with a different request; use a new request_id for a new run")


class RunStore:
    """Runs and everything they produce, in the SQLite file at `path`.

    `clock` gives ns since the epoch (injected for tests). `max_bytes` caps the file's size:
    a write that would pass it fails with StoreFull, as on a full disk.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], int] = time.time_ns,
                 max_bytes: int | None = None, busy_timeout_s: float = 5.0):
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._tx_depth = 0
        self._tx_failed = False
        self._tx_thread: int | None = None
        self._busy_timeout_s = busy_timeout_s
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []   # all of them, to close
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=busy_timeout_s)
        except sqlite3.Error as e:
            raise _storage_error(e, self.path) from e
        try:
            self._open(max_bytes)
        except BaseException:
            self._conn.close()
            raise

    def _open(self, max_bytes: int | None) -> None:
        c = self._conn
        try:
            app_id = c.execute("PRAGMA application_id").fetchone()[0]
            version = c.execute("PRAGMA user_version").fetchone()[0]
            tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or tables)):
                raise StoreCorrupt(f"{self.path} is an SQLite file but not a compactsim store")
            if version > len(MIGRATIONS):
                raise SchemaTooNew(f"{self.path} has store schema {version}; this compactsim "
                                   f"reads up to {len(MIGRATIONS)}: upgrade compactsim")
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreIOError(f"{self.path}: cannot use WAL mode (got {mode})")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA foreign_keys=ON")
            if max_bytes is not None:
                page = c.execute("PRAGMA page_size").fetchone()[0]
                c.execute(f"PRAGMA max_page_count={max(1, int(max_bytes) // page)}")
            for v in range(version + 1, len(MIGRATIONS) + 1):
                c.execute("BEGIN IMMEDIATE")
                try:
                    MIGRATIONS[v - 1](c)
                    c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    c.execute(f"PRAGMA user_version={v}")
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            raise _storage_error(e, self.path) from e

    @property
    def schema_version(self) -> int:
        with self._read() as c:
            return c.execute("PRAGMA user_version").fetchone()[0]

    # -- transactions -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: a pooled reader in a read transaction, or the
        writing connection inside this thread's own transaction."""
        if self._tx_depth and self._tx_thread == threading.get_ident():
            with self._lock:
                try:
                    yield self._conn
                except sqlite3.Error as e:
                    raise _storage_error(e, self.path) from e
            return
        if self._conn is None:
            raise StoreClosed(f"the store {self.path} is closed")
        try:
            c = self._idle_readers.get_nowait()
        except queue.Empty:
            c = self._new_reader()
        try:
            c.execute("BEGIN")
            try:
                yield c
            finally:
                if c.in_transaction:
                    c.execute("COMMIT")
        except sqlite3.Error as e:
            raise _storage_error(e, self.path) from e
        finally:
            if self._conn is not None:
                self._idle_readers.put(c)

    def _new_reader(self) -> sqlite3.Connection:
        try:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                timeout=self._busy_timeout_s)
            c.execute("PRAGMA query_only=ON")
        except sqlite3.Error as e:
            raise _storage_error(e, self.path) from e
        with self._lock:
            self._readers.append(c)
        return c

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction: all of them commit, or none.

        Store methods called inside run in it. If one of them fails, the whole transaction
        rolls back on leaving the block, even if the caller caught the error.
        """
        with self._lock:
            if self._conn is None:
                raise StoreClosed(f"the store {self.path} is closed")
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield
                except BaseException:
                    self._tx_failed = True
                    raise
                finally:
                    self._tx_depth -= 1
                return
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _storage_error(e, self.path) from e
            self._tx_depth, self._tx_failed = 1, False
            self._tx_thread = threading.get_ident()
            try:
                yield
                if self._tx_failed:
                    raise StoreError("the transaction was rolled back: a write in it failed")
                c.execute("COMMIT")
            except BaseException as e:
                if c.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise _storage_error(e, self.path) from e
                raise
            finally:
                self._tx_depth, self._tx_failed, self._tx_thread = 0, False, None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self.transaction():
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise _storage_error(e, self.path) from e

    def _now(self) -> int:
        return int(self._clock())

    # -- runs -------------------------------------------------------------------------------

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
        with self._write() as c:
            return self._insert_run(c, new, sweep_id)

    def _insert_run(self, c: sqlite3.Connection, new: NewRun,
                    sweep_id: str) -> tuple[RunRecord, bool]:
        spec_json = _json("spec", dict(new.spec))
        labels = _check_labels(new.labels)
        labels_json = _json("labels", labels)
        provenance_json = _json("provenance", dict(new.provenance))
        if new.request_id is not None:
            row = c.execute(f"SELECT {_RUN_SELECT} FROM runs WHERE creator = ? AND "
                            f"request_id = ?", (new.creator, new.request_id)).fetchone()
            if row is not None:
                old = _run_from_row(row)
                check_same_request(old, new, sweep_id)
                return old, False
        run_id = _check_id("run id", new.run_id) if new.run_id else uuid.uuid4().hex
        if sweep_id and c.execute("SELECT 1 FROM sweeps WHERE id = ?",
                                  (sweep_id,)).fetchone() is None:
            raise NotFound(f"sweep {sweep_id} not found")
        if c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None:
            raise IdTaken(f"run id {run_id} is taken")
        now = self._now()
        c.execute("INSERT INTO runs (id, display_name, scenario, spec_json, state, labels_json, "
                  "provenance_json, creator, request_id, sweep_id, create_time_ns, "
                  "update_time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (run_id, new.display_name, new.scenario, spec_json, RunState.QUEUED.value,
                   labels_json, provenance_json, new.creator, new.request_id, sweep_id, now,
                   now))
        self._append(c, run_id, EVENT_STATE, self._state_payload(RunState.QUEUED, "", "", False),
                     now)
        return self._get(c, run_id), True

    def get_run(self, run_id: str) -> RunRecord:
        """The run, deleted or not (see `deleted`); NotFound if there never was one."""
        with self._read() as c:
            return self._get(c, run_id)

    def _get(self, c: sqlite3.Connection, run_id: str) -> RunRecord:
        row = c.execute(f"SELECT {_RUN_SELECT} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return _run_from_row(row)

    def find_by_request_id(self, creator: str, request_id: str) -> RunRecord | None:
        """The run `creator` made with `request_id`, if any (check_same_request tells
        whether a retry asks for the same)."""
        with self._read() as c:
            row = c.execute(f"SELECT {_RUN_SELECT} FROM runs WHERE creator = ? AND "
                            f"request_id = ?", (creator, request_id)).fetchone()
            return None if row is None else _run_from_row(row)

    @staticmethod
    def _state_payload(state: RunState, reason: str, message: str, interrupted: bool) -> dict:
        return {"state": state.value, "error_reason": reason, "error_message": message,
                "interrupted": interrupted}

    def update_state(self, run_id: str, state: RunState | str, *, error_reason: str = "",
                     error_message: str = "", summary: Mapping[str, Any] | None = None,
                     interrupted: bool = False) -> RunRecord:
        """Move a run to `state` (WrongState if TRANSITIONS forbid it), stamping the start
        or end time, with its "state" event in the same transaction. `summary` (any state)
        replaces the stored summary."""
        state = RunState(state)
        with self._write() as c:
            return self._set_state(c, run_id, state, error_reason, error_message, summary,
                                   interrupted)

    def _set_state(self, c, run_id, state, reason, message, summary, interrupted) -> RunRecord:
        run = self._get(c, run_id)
        if state not in TRANSITIONS[run.state]:
            raise WrongState(f"run {run_id} is {run.state.value}; it cannot become "
                             f"{state.value}")
        now = self._now()
        start = now if state is RunState.RUNNING else run.start_time_ns
        end = now if state.terminal else None
        summary_json = (run.summary_json if summary is None
                        else _json("summary", dict(summary), strict=False))
        c.execute("UPDATE runs SET state = ?, error_reason = ?, error_message = ?, "
                  "interrupted = ?, start_time_ns = ?, end_time_ns = ?, summary_json = ?, "
                  "update_time_ns = ? WHERE id = ?",
                  (state.value, reason, message, int(interrupted), start, end, summary_json,
                   now, run_id))
        self._append(c, run_id, EVENT_STATE, self._state_payload(state, reason, message,
                                                                 interrupted), now)
        return self._get(c, run_id)

    def update_progress(self, run_id: str, progress: Progress) -> RunRecord:
        """Record progress of a RUNNING or CANCELLING run, with its "progress" event."""
        with self._write() as c:
            run = self._get(c, run_id)
            if not run.state.has_worker:
                raise WrongState(f"run {run_id} is {run.state.value}; progress is recorded "
                                 f"only while it runs")
            now = self._now()
            c.execute("UPDATE runs SET sim_time_s = ?, fraction = ?, events = ?, wall_s = ?, "
                      "update_time_ns = ? WHERE id = ?",
                      (float(progress.sim_time_s), float(progress.fraction),
                       int(progress.events), float(progress.wall_s), now, run_id))
            self._append(c, run_id, EVENT_PROGRESS, {
                "sim_time_s": progress.sim_time_s, "fraction": progress.fraction,
                "events": progress.events, "wall_s": progress.wall_s}, now)
            return self._get(c, run_id)

    def soft_delete(self, run_id: str) -> RunRecord:
        """Hide a run from lists (get_run still finds it, with deleted=True); its data stay.
        Deleting a deleted run changes nothing."""
        with self._write() as c:
            run = self._get(c, run_id)
            if run.deleted:
                return run
            now = self._now()
            c.execute("UPDATE runs SET deleted = 1, delete_time_ns = ?, update_time_ns = ? "
                      "WHERE id = ?", (now, now, run_id))
            self._append(c, run_id, EVENT_DELETED, {}, now)
            return self._get(c, run_id)

    def mark_interrupted_on_startup(self) -> list[RunRecord]:
        """After a crash or restart: RUNNING and CANCELLING runs lost their workers and
        become FAILED with reason "interrupted" (re-runnable from their spec and seed);
        QUEUED runs stay QUEUED for the manager to start again. Returns the changed runs."""
        with self._write() as c:
            ids = [r[0] for r in c.execute(
                f"SELECT id FROM runs WHERE state IN ({', '.join('?' * len(_WORKING))}) "
                f"ORDER BY create_time_ns, id", _WORKING)]
            return [self._set_state(c, i, RunState.FAILED, INTERRUPTED_REASON,
                                    INTERRUPTED_MESSAGE, None, True) for i in ids]

    def queued_runs(self) -> list[RunRecord]:
        """QUEUED runs, oldest first (deleted ones too: the manager decides)."""
        with self._read() as c:
            return [_run_from_row(r) for r in c.execute(
                f"SELECT {_RUN_SELECT} FROM runs WHERE state = ? ORDER BY create_time_ns, id",
                (RunState.QUEUED.value,))]

    # -- listing ----------------------------------------------------------------------------

    def list_runs(self, filter: str = "", order_by: str = "", page_size: int = 0,
                  page_token: str = "", *, show_deleted: bool = False,
                  weigh: Callable[[RunRecord], int] | None = None, max_weight: int = 0
                  ) -> tuple[list[RunRecord], str]:
        """One page of runs matching `filter` (server/filters.py) in `order_by` order
        (default "create_time desc"; ties broken by id), and the token of the next page
        ("" after the last). With `weigh`, the page also ends before the run that would
        take the sum of `weigh(run)` past `max_weight` (it holds one run at least).
        FilterError / OrderByError for bad strings, InvalidPageToken for a token from
        another query."""
        size = _page_size(page_size, DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE)
        compiled, where, params = _run_filter(filter, show_deleted)
        order = parse_order_by(order_by or DEFAULT_ORDER)
        exprs = [(_ORDER_SQL[f.name], f.descending) for f in order] + [("runs.id", False)]
        query_hash = _hash("runs", compiled.canonical, render_order_by(order), show_deleted)
        if page_token:
            last = _decode_token(page_token, query_hash).get("k")
            if not isinstance(last, list) or len(last) != len(exprs) or not all(
                    _bindable(v) for v in last):
                raise InvalidPageToken("page_token is not one this server issued; start "
                                       "again without a page_token")
            ors = []
            for i, (expr, desc) in enumerate(exprs):
                terms = [f"{e} = ?" for e, _ in exprs[:i]] + [f"{expr} {'<' if desc else '>'} ?"]
                params.extend(last[:i + 1])
                ors.append("(" + " AND ".join(terms) + ")")
            where.append("(" + " OR ".join(ors) + ")")
        keys = ", ".join(f"{e} AS k{i}" for i, (e, _) in enumerate(exprs))
        order_sql = ", ".join(f"k{i}{' DESC' if d else ''}" for i, (_, d) in enumerate(exprs))
        sql = (f"SELECT {_RUN_SELECT}, {keys} FROM runs WHERE {' AND '.join(where)} "
               f"ORDER BY {order_sql} LIMIT ?")
        with self._read() as c:
            rows = c.execute(sql, (*params, size + 1)).fetchall()
        records = [_run_from_row(r) for r in rows[:size]]
        if weigh is not None:
            total, n = 0, 0
            for rec in records:
                total += weigh(rec)
                if total > max_weight and n:
                    break
                n += 1
            if n < len(records):
                records, rows, size = records[:n], rows[:n + 1], n
        token = ""
        if len(rows) > size:
            token = _encode_token(query_hash, {"k": list(rows[size - 1][_N_RUN_COLUMNS:])})
        return records, token

    def count_runs(self, filter: str = "", *, show_deleted: bool = False) -> int:
        """How many runs list_runs(filter, show_deleted=...) yields over all its pages, in
        one query. FilterError for a bad filter."""
        _, where, params = _run_filter(filter, show_deleted)
        with self._read() as c:
            return c.execute(f"SELECT COUNT(*) FROM runs WHERE {' AND '.join(where)}",
                             params).fetchone()[0]

    def count_by_state(self) -> dict[RunState, int]:
        """Runs not deleted, by state (every state present, 0 when none), in one query."""
        counts = dict.fromkeys(RunState, 0)
        with self._read() as c:
            for state, n in c.execute("SELECT state, COUNT(*) FROM runs WHERE deleted = 0 "
                                      "GROUP BY state"):
                counts[RunState(state)] = n
        return counts

    def runs_changed(self, after: int, ids: Iterable[str] = ()) -> tuple[list[RunRecord], int]:
        """For readers that follow runs as they progress and end without rereading the
        finished ones: the runs added after the cursor `after` (0: every run) and the runs
        `ids` (those the reader still follows), deleted ones included, in the order added;
        and the cursor to pass next time. Ids that do not exist are left out.

        The cursor is the table's rowid: runs are never removed from the table, so each new
        run gets a larger one than every run before it. VACUUM may renumber rows; the store
        never runs it, and a cursor is meant for the life of one open store."""
        ids = list(dict.fromkeys(ids))
        with self._read() as c:
            rows = c.execute(f"SELECT runs.rowid, {_RUN_SELECT} FROM runs WHERE rowid > ? "
                             f"ORDER BY rowid", (after,)).fetchall()
            new = {r[1] for r in rows}
            rest = [i for i in ids if i not in new]
            for start in range(0, len(rest), 500):   # far below SQLite's variable limit
                chunk = rest[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                rows += c.execute(f"SELECT runs.rowid, {_RUN_SELECT} FROM runs "
                                  f"WHERE id IN ({marks})", chunk).fetchall()
        rows.sort(key=lambda r: r[0])
        cursor = max([after, *(r[0] for r in rows)])
        return [_run_from_row(r[1:]) for r in rows], cursor

    # -- events -----------------------------------------------------------------------------

    def _append(self, c: sqlite3.Connection, run_id: str, type_: str, payload: dict,
                now: int) -> RunEvent:
        payload_json = _json("event payload", payload)
        (seq,) = c.execute("UPDATE runs SET last_sequence = last_sequence + 1 WHERE id = ? "
                           "RETURNING last_sequence", (run_id,)).fetchone()
        c.execute("INSERT INTO run_events (run_id, sequence, time_ns, type, payload_json) "
                  "VALUES (?, ?, ?, ?, ?)", (run_id, seq, now, type_, payload_json))
        return RunEvent(run_id, seq, now, type_, json.loads(payload_json))

    def append_event(self, run_id: str, type: str, payload: Mapping[str, Any]) -> RunEvent:
        """Append an event of another type (a log line, a phase change...)."""
        if not type:
            raise InvalidArgument("event type must not be empty")
        with self._write() as c:
            self._get(c, run_id)
            return self._append(c, run_id, type, dict(payload), self._now())

    def events_after(self, run_id: str, after_sequence: int = 0,
                     limit: int = 1000) -> list[RunEvent]:
        """The run's events with sequence > after_sequence, oldest first, at most `limit`."""
        if after_sequence < 0 or limit <= 0:
            raise InvalidArgument("after_sequence must be >= 0 and limit > 0")
        with self._read() as c:
            self._get(c, run_id)
            return [RunEvent(run_id, s, t, ty, json.loads(p)) for s, t, ty, p in c.execute(
                "SELECT sequence, time_ns, type, payload_json FROM run_events WHERE run_id = ? "
                "AND sequence > ? ORDER BY sequence LIMIT ?", (run_id, after_sequence, limit))]

    # -- samples ----------------------------------------------------------------------------

    def add_samples(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append time-series rows (each with its simulated time in "time_s"); all or none.
        Returns the run's sample count."""
        with self._write() as c:
            row = c.execute("SELECT sample_count FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} not found")
            n, batch = row[0], []
            for row in rows:
                t = row.get("time_s")
                if not isinstance(t, (int, float)) or isinstance(t, bool):
                    raise InvalidArgument(f"sample {n + len(batch)}: needs a numeric 'time_s'")
                batch.append((run_id, n + len(batch), float(t),
                              _json("sample", dict(row), strict=False)))
            c.executemany("INSERT INTO samples (run_id, idx, sim_time_s, row_json) "
                          "VALUES (?, ?, ?, ?)", batch)
            c.execute("UPDATE runs SET sample_count = ? WHERE id = ?", (n + len(batch), run_id))
            return n + len(batch)

    def put_samples(self, run_id: str, start: int, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store `rows` as the run's samples `start`, `start` + 1... replacing any stored
        at those places; all or none. For a run's final series, written a piece at a time
        over the rows sent live (which it holds at their final places). Returns the run's
        sample count."""
        with self._write() as c:
            row = c.execute("SELECT sample_count FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} not found")
            batch = []
            for i, r in enumerate(rows):
                t = r.get("time_s")
                if not isinstance(t, (int, float)) or isinstance(t, bool):
                    raise InvalidArgument(f"sample {start + i}: needs a numeric 'time_s'")
                batch.append((run_id, start + i, float(t), _json("sample", dict(r), strict=False)))
            c.executemany("INSERT OR REPLACE INTO samples (run_id, idx, sim_time_s, row_json) "
                          "VALUES (?, ?, ?, ?)", batch)
            n = max(row[0], start + len(batch))
            c.execute("UPDATE runs SET sample_count = ? WHERE id = ?", (n, run_id))
            return n

    def merge_samples(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add the rows whose "time_s" is not stored yet (rows already stored stay as they
        are) and keep the series ordered by simulated time; all or none. For a run's final
        series after live rows sent with its progress. Returns the run's sample count.

        When a new row falls before a stored one the series is renumbered, so a page token
        issued before the merge may skip or repeat rows."""
        rows = list(rows)
        with self._write() as c:
            row = c.execute("SELECT sample_count FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} not found")
            have = {t for (t,) in c.execute("SELECT sim_time_s FROM samples WHERE run_id = ?",
                                            (run_id,))}
            new = []
            for i, r in enumerate(rows):
                t = r.get("time_s")
                if not isinstance(t, (int, float)) or isinstance(t, bool):
                    raise InvalidArgument(f"sample {i}: needs a numeric 'time_s'")
                if float(t) not in have:
                    new.append((float(t), _json("sample", dict(r), strict=False)))
            if not new:
                return row[0]
            new.sort(key=lambda x: x[0])                    # stable: equal times keep order
            if not have or new[0][0] > max(have):
                start, merged = row[0], new                 # all after: append
            else:
                stored = c.execute("SELECT sim_time_s, row_json FROM samples WHERE run_id = ? "
                                   "ORDER BY idx", (run_id,)).fetchall()
                c.execute("DELETE FROM samples WHERE run_id = ?", (run_id,))
                start, merged = 0, sorted(stored + new, key=lambda x: x[0])
            c.executemany("INSERT INTO samples (run_id, idx, sim_time_s, row_json) "
                          "VALUES (?, ?, ?, ?)",
                          [(run_id, start + i, t, j) for i, (t, j) in enumerate(merged)])
            c.execute("UPDATE runs SET sample_count = ? WHERE id = ?",
                      (start + len(merged), run_id))
            return start + len(merged)

    def list_samples(self, run_id: str, page_size: int = 0, page_token: str = "",
                     max_points: int = 0, *, weigh: Callable[[Sample], int] | None = None,
                     max_weight: int = 0) -> tuple[list[Sample], str]:
        """One page of the run's series, and the next page's token ("" after the last).

        max_points (0: all) keeps at most that many evenly spaced points, always the first
        and the last; which ones is fixed by the series' length at the first page, so rows
        added while paging do not shift later pages. With `weigh`, the page also ends
        before the sample that would take the sum of `weigh(sample)` past `max_weight`
        (it holds one sample at least).
        """
        if max_points < 0 or max_points == 1:
            raise InvalidArgument("max_points must be 0 (all points) or at least 2 (the "
                                  "first and the last are always kept)")
        size = _page_size(page_size, DEFAULT_SAMPLES_PAGE, MAX_SAMPLES_PAGE)
        query_hash = _hash("samples", run_id, max_points)
        with self._read() as c:
            row = c.execute("SELECT sample_count FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} not found")
            pos, n = 0, row[0]
            if page_token:
                body = _decode_token(page_token, query_hash)
                pos, n = body.get("p"), body.get("n")
                if not (isinstance(pos, int) and isinstance(n, int) and 0 <= pos and
                        0 <= n <= row[0]):
                    raise InvalidPageToken("page_token is not one this server issued; "
                                           "start again without a page_token")
            kept = n if max_points == 0 else min(n, max_points)
            index = downsample_indices(n, max_points)
            wanted = [index(p) for p in range(pos, min(pos + size, kept))]
            samples = self._samples_at(c, run_id, wanted)
        if weigh is not None:
            total, k = 0, 0
            for smp in samples:
                total += weigh(smp)
                if total > max_weight and k:
                    break
                k += 1
            samples, wanted = samples[:k], wanted[:k]
        nxt = pos + len(wanted)
        token = _encode_token(query_hash, {"p": nxt, "n": n}) if nxt < kept else ""
        return samples, token

    @staticmethod
    def _samples_at(c: sqlite3.Connection, run_id: str, wanted: list[int]) -> list[Sample]:
        if not wanted:
            return []
        if wanted[-1] - wanted[0] + 1 == len(wanted):   # consecutive: one range scan
            return [Sample(i, t, json.loads(j)) for i, t, j in c.execute(
                "SELECT idx, sim_time_s, row_json FROM samples WHERE run_id = ? AND "
                "idx BETWEEN ? AND ? ORDER BY idx", (run_id, wanted[0], wanted[-1]))]
        out = []
        for start in range(0, len(wanted), 500):   # stay far below SQLite's variable limit
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            out += [Sample(i, t, json.loads(j)) for i, t, j in c.execute(
                f"SELECT idx, sim_time_s, row_json FROM samples WHERE run_id = ? AND "
                f"idx IN ({marks}) ORDER BY idx", (run_id, *chunk))]
        return out

    # -- reports ----------------------------------------------------------------------------

    def put_report(self, run_id: str, name: str, text: str) -> None:
        """Store (or replace) a named text: "proc/buddyinfo", "trace", "histograms"..."""
        self.put_reports(run_id, {name: text})

    @staticmethod
    def _check_report(name: Any, text: Any) -> None:
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidArgument(f"report name {name!r}: 1 to 256 characters")
        if not isinstance(text, str):
            raise InvalidArgument(f"report {name}: the text must be a string")

    def put_reports(self, run_id: str, reports: Mapping[str, str]) -> None:
        with self._write() as c:
            self._get(c, run_id)
            now = self._now()
            for name, text in reports.items():
                self._check_report(name, text)
                c.execute("DELETE FROM report_parts WHERE run_id = ? AND name = ?",
                          (run_id, name))
                c.execute("INSERT INTO reports (run_id, name, text, update_time_ns) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET "
                          "text = excluded.text, update_time_ns = excluded.update_time_ns",
                          (run_id, name, text, now))

    def put_report_part(self, run_id: str, name: str, part: int, text: str) -> None:
        """Store part `part` (0, 1...) of the report `name`, in a transaction of its own so
        that other writes go between the parts of a large report. Part 0 starts the report
        again (its earlier text and parts go). The report reads as its parts joined in
        order."""
        if not isinstance(part, int) or isinstance(part, bool) or part < 0:
            raise InvalidArgument(f"report {name}: part {part!r} must be an integer >= 0")
        with self._write() as c:
            self._get(c, run_id)
            self._check_report(name, text)
            if part == 0:
                c.execute("DELETE FROM reports WHERE run_id = ? AND name = ?", (run_id, name))
                c.execute("DELETE FROM report_parts WHERE run_id = ? AND name = ?",
                          (run_id, name))
            c.execute("INSERT OR REPLACE INTO report_parts (run_id, name, part, text) "
                      "VALUES (?, ?, ?, ?)", (run_id, name, part, text))

    def get_reports(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, str]:
        """Name -> text of the run's reports (all, or those of `names` that exist)."""
        with self._read() as c:
            self._get(c, run_id)
            rows = c.execute("SELECT name, text FROM reports WHERE run_id = ?",
                             (run_id,)).fetchall()
            parts: dict[str, list[str]] = {}
            for name, text in c.execute("SELECT name, text FROM report_parts WHERE "
                                        "run_id = ? ORDER BY name, part", (run_id,)):
                parts.setdefault(name, []).append(text)
        wanted = None if names is None else set(names)
        texts = dict(rows) | {n: "".join(p) for n, p in parts.items()}
        return {n: texts[n] for n in sorted(texts) if wanted is None or n in wanted}

    def get_report(self, run_id: str, name: str) -> str:
        reports = self.get_reports(run_id, [name])
        if name not in reports:
            raise NotFound(f"run {run_id} has no report {name!r}")
        return reports[name]

    def report_names(self, run_id: str) -> list[str]:
        with self._read() as c:
            self._get(c, run_id)
            return [r[0] for r in c.execute(
                "SELECT name FROM reports WHERE run_id = ? UNION "
                "SELECT name FROM report_parts WHERE run_id = ? ORDER BY name",
                (run_id, run_id))]

    # -- sweeps -----------------------------------------------------------------------------

    def create_sweep(self, base_spec: Mapping[str, Any], grid: Any, *, display_name: str = "",
                     creator: str = "", runs: Sequence[NewRun] = (),
                     sweep_id: str | None = None) -> tuple[SweepRecord, list[RunRecord]]:
        """A sweep and its runs (each in the sweep), in one transaction."""
        base_json, grid_json = _json("base spec", dict(base_spec)), _json("grid", grid)
        with self._write() as c:
            sid = _check_id("sweep id", sweep_id) if sweep_id else uuid.uuid4().hex
            if c.execute("SELECT 1 FROM sweeps WHERE id = ?", (sid,)).fetchone():
                raise InvalidArgument(f"sweep id {sid} is taken")
            c.execute("INSERT INTO sweeps (id, display_name, base_spec_json, grid_json, "
                      "creator, create_time_ns) VALUES (?, ?, ?, ?, ?, ?)",
                      (sid, display_name, base_json, grid_json, creator, self._now()))
            records = []
            for new in runs:
                record, created = self._insert_run(c, new, sid)
                if not created:
                    raise RequestIdConflict(f"request_id {new.request_id!r} of a sweep run "
                                            f"was already used for run {record.id}")
                records.append(record)
            return self._get_sweep(c, sid), records

    def get_sweep(self, sweep_id: str) -> SweepRecord:
        with self._read() as c:
            return self._get_sweep(c, sweep_id)

    def _get_sweep(self, c: sqlite3.Connection, sweep_id: str) -> SweepRecord:
        row = c.execute("SELECT id, display_name, base_spec_json, grid_json, creator, "
                        "create_time_ns, deleted FROM sweeps WHERE id = ?",
                        (sweep_id,)).fetchone()
        if row is None:
            raise NotFound(f"sweep {sweep_id} not found")
        return _sweep_from_row(row)

    def list_sweeps(self, *, creator: str | None = None,
                    show_deleted: bool = False) -> list[SweepRecord]:
        """Sweeps, oldest first."""
        sql = ("SELECT id, display_name, base_spec_json, grid_json, creator, create_time_ns, "
               "deleted FROM sweeps WHERE (? IS NULL OR creator = ?) AND (? OR deleted = 0) "
               "ORDER BY create_time_ns, id")
        with self._read() as c:
            return [_sweep_from_row(r) for r in c.execute(sql, (creator, creator,
                                                                int(show_deleted)))]

    def sweep_runs(self, sweep_id: str) -> list[RunRecord]:
        """The sweep's runs in creation order (deleted ones too)."""
        with self._read() as c:
            self._get_sweep(c, sweep_id)
            return [_run_from_row(r) for r in c.execute(
                f"SELECT {_RUN_SELECT} FROM runs WHERE sweep_id = ? ORDER BY create_time_ns, "
                f"rowid", (sweep_id,))]

    def soft_delete_sweep(self, sweep_id: str) -> SweepRecord:
        """Hide a sweep from list_sweeps (its runs are deleted one by one, by the caller)."""
        with self._write() as c:
            self._get_sweep(c, sweep_id)
            c.execute("UPDATE sweeps SET deleted = 1 WHERE id = ?", (sweep_id,))
            return self._get_sweep(c, sweep_id)

    # -- the file ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Checkpoint the WAL into the main file (as on shutdown)."""
        with self._lock:
            if self._conn is None:
                raise StoreClosed(f"the store {self.path} is closed")
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise _storage_error(e, self.path) from e

    def backup(self, dest: str | Path) -> None:
        """A consistent copy of the store at `dest`, taken while it stays in use."""
        with self._read() as c:
            target = sqlite3.connect(str(dest))
            try:
                c.backup(target)
            finally:
                target.close()

    def close(self) -> None:
        """Flush and close; later calls raise StoreClosed. Closing twice is harmless."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None
                for reader in self._readers:
                    reader.close()
                self._readers.clear()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
