"""What the store refuses or cannot do: `StoreError` and its subclasses, and the one
mapping from an sqlite3 error (by its primary result code) to them."""

from __future__ import annotations

import sqlite3


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


def storage_error(e: sqlite3.Error, path: str) -> StoreError:
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
