"""The one SQLite connection every part of the store writes through, its lock, and the
pool of read-only connections reads take.

One connection writes, under one lock, in WAL mode with `synchronous=NORMAL`: a crash of
the process loses no committed transaction. Reads take a connection of their own from a
pool (read-only, each read one read transaction: a consistent snapshot of what was
committed), so a read never waits for a write, however large, nor for the lock; a read
inside a thread's own `transaction()` uses the writing connection and sees what the
transaction wrote so far. An outside reader (a backup, `sqlite3` by hand) never blocks the
writer either.

The writing connection never checkpoints: a `Checkpointer` copies the WAL into the file
from a thread of its own, so no write waits for a checkpoint (server.store.checkpoint).

Every write is one transaction; `transaction()` groups several into one. A write that
fails (disk full, an I/O error, a bad argument) rolls back whole and raises a `StoreError`
subclass; the file stays consistent.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from compactsim.server.store import schema
from compactsim.server.store.checkpoint import Checkpointer, prepare_writer
from compactsim.server.store.errors import StoreClosed, StoreError, storage_error


class Database:
    """The store's file at `path`. `clock` gives ns since the epoch (injected for tests);
    `max_bytes` caps the file's size: a write that would pass it fails with StoreFull, as
    on a full disk. The WAL is checkpointed at most every `checkpoint_every_s` seconds
    while writes come."""

    def __init__(self, path: str | Path, *, clock: Callable[[], int] = time.time_ns,
                 max_bytes: int | None = None, busy_timeout_s: float = 5.0,
                 checkpoint_every_s: float = 0.25):
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
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=busy_timeout_s)
        except sqlite3.Error as e:
            raise storage_error(e, self.path) from e
        try:
            schema.prepare(self._conn, self.path, max_bytes)
            prepare_writer(self._conn)
            self._checkpointer = Checkpointer(self._new_reader(), self.path + "-wal",
                                              checkpoint_every_s)
        except sqlite3.Error as e:
            self._conn.close()
            raise storage_error(e, self.path) from e
        except BaseException:
            self._conn.close()
            raise

    def now(self) -> int:
        return int(self._clock())

    @property
    def schema_version(self) -> int:
        with self.read() as c:
            return c.execute("PRAGMA user_version").fetchone()[0]

    @property
    def in_transaction(self) -> bool:
        """A `transaction()` is open (in any thread)."""
        return self._tx_depth > 0

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: a pooled reader in a read transaction, or the
        writing connection inside this thread's own transaction."""
        if self._tx_depth and self._tx_thread == threading.get_ident():
            with self._lock:
                try:
                    yield self._writer()
                except sqlite3.Error as e:
                    raise storage_error(e, self.path) from e
            return
        self._writer()   # StoreClosed once closed
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
            raise storage_error(e, self.path) from e
        finally:
            if self._conn is not None:
                self._idle_readers.put(c)

    def _new_reader(self) -> sqlite3.Connection:
        """A read-only connection, closed with the store (a checkpoint, which copies and
        changes nothing, may run on one)."""
        try:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                timeout=self._busy_timeout_s)
            c.execute("PRAGMA query_only=ON")
        except sqlite3.Error as e:
            raise storage_error(e, self.path) from e
        with self._lock:
            self._readers.append(c)
        return c

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed(f"the store {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction: all of them commit, or none.

        Store methods called inside run in it. If one of them fails, the whole transaction
        rolls back on leaving the block, even if the caller caught the error.
        """
        with self._lock:
            c = self._writer()
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
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e
            self._tx_depth, self._tx_failed = 1, False
            self._tx_thread = threading.get_ident()
            try:
                yield
                if self._tx_failed:
                    raise StoreError("the transaction was rolled back: a write in it failed")
                c.execute("COMMIT")
                self._checkpointer.wrote()
            except BaseException as e:
                if c.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise storage_error(e, self.path) from e
                raise
            finally:
                self._tx_depth, self._tx_failed, self._tx_thread = 0, False, None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The writing connection, in a transaction (this thread's own, or a new one)."""
        with self.transaction():
            try:
                yield self._writer()
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e

    def flush(self) -> None:
        """Checkpoint the WAL into the main file (as on shutdown)."""
        with self._lock:
            try:
                self._writer().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e

    def backup(self, dest: str | Path) -> None:
        """A consistent copy of the file at `dest`, taken while it stays in use."""
        with self.read() as c:
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
            self._checkpointer.stop()
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None
                for reader in self._readers:
                    reader.close()
                self._readers.clear()
