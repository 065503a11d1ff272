"""The store's file: its schema, the migrations between schema versions, and opening a
file (refusing what is not a compactsim store or is newer than this code reads).

Schema versions live in `PRAGMA user_version`; `MIGRATIONS[v - 1]` takes a file from
version v - 1 to v, each step in its own transaction. A file from a newer compactsim is
refused rather than misread. The runs table's state CHECK takes the names of
`compactsim.codec.runstate`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from compactsim.codec.runstate import NAMES
from compactsim.server.store.errors import SchemaTooNew, StoreCorrupt, StoreIOError

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


def prepare(c: sqlite3.Connection, path: str, max_bytes: int | None) -> None:
    """Check that the file `c` opened is a compactsim store (or empty), set WAL mode and
    the size limit, and migrate it to the newest schema. sqlite3 errors pass through."""
    app_id = c.execute("PRAGMA application_id").fetchone()[0]
    version = c.execute("PRAGMA user_version").fetchone()[0]
    tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or tables)):
        raise StoreCorrupt(f"{path} is an SQLite file but not a compactsim store")
    if version > len(MIGRATIONS):
        raise SchemaTooNew(f"{path} has store schema {version}; this compactsim "
                           f"reads up to {len(MIGRATIONS)}: upgrade compactsim")
    mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreIOError(f"{path}: cannot use WAL mode (got {mode})")
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
