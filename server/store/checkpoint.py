"""Copying the WAL back into the store's file, off the writers' path.

SQLite's own automatic checkpoint runs inside the COMMIT that takes the WAL past 1000
pages: that commit copies the WAL into the file and syncs both before it returns, while
the store's write lock is held, so whichever write crosses the mark (a part of a large
trace, or a client's CreateRun) waits for a checkpoint and its fsyncs. Here the writing
connection's automatic checkpoint is off, and a thread of the store's own, on a
connection of its own, runs a PASSIVE checkpoint a short while after writes once the WAL
file holds 4 MB (SQLite's mark, 1000 pages of 4 KB: a lightly written store is not
synced after every write): it copies what it can without taking the write lock, so
writes go on while it runs, and the WAL starts over at the next write once a checkpoint
has copied all of it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

WAL_CHECKPOINT_BYTES = 1000 * 4096   # SQLite's automatic checkpoint mark
WAL_LIMIT = 16 << 20                 # bytes the WAL file is cut back to when it starts over


def prepare_writer(conn: sqlite3.Connection) -> None:
    """The writing connection's side: it never checkpoints (a `Checkpointer` does), and
    the WAL file is cut back to WAL_LIMIT when it starts over after a burst."""
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")


class Checkpointer:
    """Checkpoints the WAL file `wal`, on the connection `conn` (its own, usable from any
    thread), at most every `every_s` seconds while writes come (`wrote()` after each
    commit) and once more after the last of them, whenever the file holds
    WAL_CHECKPOINT_BYTES or more."""

    def __init__(self, conn: sqlite3.Connection, wal: str, every_s: float):
        self._conn = conn
        self._wal = wal
        self._every_s = every_s
        self._pending = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-checkpoint",
                                        daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """A transaction committed: the WAL has grown."""
        self._pending.set()

    def _loop(self) -> None:
        while True:
            self._pending.wait()
            if self._stopping.wait(self._every_s):
                return
            self._pending.clear()
            try:
                if os.stat(self._wal).st_size < WAL_CHECKPOINT_BYTES:
                    continue
            except FileNotFoundError:
                continue
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as e:   # the next write tries again; close() does all
                log.warning("checkpoint of the store's WAL: %s", e)

    def stop(self) -> None:
        """End the thread (the store's close then checkpoints what is left, on the writing
        connection, and closes this one's connection with its readers)."""
        self._stopping.set()
        self._pending.set()
        self._thread.join()
