"""Uploaded traces: kmem trace files kept in DATA_DIR/traces, named by their SHA-256.

A client never names a server file. It uploads a trace (UploadTrace) and gets the
resource `traces/{sha256}`; a spec replays it with `replay.path: traces/{sha256}`, and
only the worker's copy of the spec holds the file's path (`worker_spec`, at the moment
the run starts). A name is accepted only when it is exactly `traces/` and 64 lowercase hex
digits, and its file is a regular file (not a symlink) whose real path is inside the
trace directory, so `../../etc/passwd`, `/etc/passwd`, `traces/../compactsim.db` and a
symlink planted in the directory are all refused.

An upload is written to a private temporary file in the same directory while it is
hashed and counted; past the size limit it is removed at once (`TraceTooLarge`), as it is
when the client goes away, and on success it is renamed to its hash (an upload of bytes
already stored keeps the first copy). Partial uploads left by a crash are removed when
the store opens.

Each user's uploads are recorded as empty files DATA_DIR/trace-owners/{user}/{sha256}: a
user may keep at most `max_bytes_per_user` of traces (the sizes of the traces they
uploaded, each counted once, checked as an upload is stored: a partial upload is bounded
by `max_bytes`) and have at most `MAX_UPLOADS_PER_USER` uploads in progress. `delete()`
takes back a user's upload (an admin's: everyone's) and removes the file once nobody who
uploaded it keeps it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import stat
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACE_DIR = "traces"
OWNERS_DIR = "trace-owners"
MAX_UPLOADS_PER_USER = 4
_NAME = re.compile(r"traces/([0-9a-f]{64})")
_PARTIAL = ".upload-"


class TraceError(Exception):
    """A trace name or upload the store refuses (the message says why)."""


class TraceNotFound(TraceError):
    """No uploaded trace of that name."""


class TraceQuotaExceeded(TraceError):
    """A user's uploads would pass their quota (or too many are in progress); nothing of
    this upload is kept. `retry`: finishing other uploads helps."""

    def __init__(self, user: str, message: str, retry: bool = False):
        self.user = user
        self.retry = retry
        super().__init__(message)


class TraceTooLarge(TraceError):
    """An upload went past the size limit; nothing of it is kept."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"the trace is larger than {limit} bytes, the most the server "
                         f"accepts")


@dataclass(frozen=True)
class TraceInfo:
    sha256: str
    size: int
    create_time_ns: int

    @property
    def name(self) -> str:
        return f"{TRACE_DIR}/{self.sha256}"


def trace_id(name: str) -> str:
    """The {sha256} of `traces/{sha256}`; TraceError for anything else."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise TraceError(f"must name an uploaded trace, traces/{{sha256}} (upload the file "
                         f"with UploadTrace; the server reads no other path), got {name!r}")
    return m.group(1)


class Upload:
    """One upload in progress: `write()` chunks, then `commit()`; `discard()` (always
    safe, also after commit) removes what was written."""

    def __init__(self, store: TraceStore, user: str):
        self.store = store
        self.user = user
        self.tmp = store.directory / f"{_PARTIAL}{uuid.uuid4().hex}"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.released = False

    def write(self, chunk: bytes) -> None:
        """Add a chunk; TraceTooLarge (and the partial file removed) past the limit."""
        self.size += len(chunk)
        if self.size > self.store.max_bytes:
            self.discard()
            raise TraceTooLarge(self.store.max_bytes)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self) -> TraceInfo:
        """Store the upload under its hash; TraceError if it is empty."""
        if self.size == 0:
            self.discard()
            raise TraceError("the trace is empty")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        sha = self.hash.hexdigest()
        with self.store.lock:
            owned = self.store.owned_by(self.user)
            if sha not in owned:
                used = sum(owned.values())
                if used + self.size > self.store.max_bytes_per_user:
                    self.discard()
                    raise self.store.over_quota(self.user, used, self.size)
            final = self.store.directory / sha
            if final.exists():
                self.discard()        # the same bytes were uploaded before: keep that copy
            else:
                os.replace(self.tmp, final)
            mark = self.store.user_dir(self.user)
            mark.mkdir(parents=True, exist_ok=True)
            (mark / sha).touch()
        return self.store.get(f"{TRACE_DIR}/{sha}")

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)
        if not self.released:
            self.released = True
            self.store.finished_upload(self.user)


class TraceStore:
    """The trace directory, DATA_DIR/traces, and its size limit per trace."""

    def __init__(self, data_dir: str | Path, max_bytes: int,
                 max_bytes_per_user: int | None = None):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be above 0")
        self.directory = Path(data_dir).resolve() / TRACE_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.owners = Path(data_dir).resolve() / OWNERS_DIR
        self.max_bytes = max_bytes
        self.max_bytes_per_user = max_bytes_per_user or 4 * max_bytes
        self.lock = threading.RLock()
        self._uploading: dict[str, int] = {}
        for partial in self.directory.glob(f"{_PARTIAL}*"):
            partial.unlink(missing_ok=True)

    def user_dir(self, user: str) -> Path:
        return self.owners / user

    def owned_by(self, user: str) -> dict[str, int]:
        """{sha256: size} of the traces `user` uploaded and keeps."""
        out = {}
        d = self.user_dir(user)
        for mark in d.iterdir() if d.is_dir() else ():
            try:
                out[mark.name] = (self.directory / mark.name).stat().st_size
            except OSError:
                continue
        return out

    def used_by(self, user: str) -> int:
        return sum(self.owned_by(user).values())

    def over_quota(self, user: str, used: int, size: int) -> TraceQuotaExceeded:
        return TraceQuotaExceeded(user, (
            f"uploaded traces per user: {user!r} keeps {used} bytes + {size} new > "
            f"{self.max_bytes_per_user} (--max-trace-bytes-per-user); delete traces no "
            f"longer needed (DeleteTrace)"))

    def upload(self, user: str) -> Upload:
        """A new upload by `user`; TraceQuotaExceeded when they have
        MAX_UPLOADS_PER_USER in progress already."""
        with self.lock:
            n = self._uploading.get(user, 0)
            if n >= MAX_UPLOADS_PER_USER:
                raise TraceQuotaExceeded(user, (
                    f"uploads in progress per user: {user!r} has {n}, the most at once"),
                    retry=True)
            self._uploading[user] = n + 1
        try:
            return Upload(self, user)
        except BaseException:
            self.finished_upload(user)
            raise

    def finished_upload(self, user: str) -> None:
        with self.lock:
            n = self._uploading.get(user, 0) - 1
            if n > 0:
                self._uploading[user] = n
            else:
                self._uploading.pop(user, None)

    def delete(self, name: str, user: str, admin: bool = False) -> None:
        """Take back `user`'s upload of trace `name` (an admin: everyone's), and remove
        the file when nobody keeps it; TraceNotFound when there is nothing to take back."""
        sha = trace_id(name)
        with self.lock:
            users = [d for d in self.owners.glob("*") if (d / sha).exists()]
            mine = [d for d in users if d.name == user]
            if admin:
                if not users and not (self.directory / sha).exists():
                    raise TraceNotFound(f"no uploaded trace {name} on this server")
                taken = users
            elif mine:
                taken = mine
            else:
                raise TraceNotFound(f"{user!r} has no upload of {name} (only those who "
                                    f"uploaded a trace, and admins, may delete it)")
            for d in taken:
                (d / sha).unlink(missing_ok=True)
            if len(taken) == len(users):
                (self.directory / sha).unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The file of trace `name` (`traces/{sha256}`): TraceError unless the name is
        well formed and its file is a regular file inside the directory, TraceNotFound
        when there is no such trace."""
        path = self.directory / trace_id(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise TraceNotFound(f"no uploaded trace {name} on this server (upload it with "
                                f"UploadTrace first)") from None
        real = Path(os.path.realpath(path))
        if not stat.S_ISREG(st.st_mode) or real.parent != self.directory:
            raise TraceError(f"{name} is not a regular file in the server's trace directory")
        return real

    def get(self, name: str) -> TraceInfo:
        path = self.path(name)
        st = path.stat()
        return TraceInfo(path.name, st.st_size, st.st_mtime_ns)

    def list(self, after: str = "", limit: int = 100) -> list[TraceInfo]:
        """Up to `limit` traces by name, those after the name `after` ("": from the first);
        partial uploads and anything not named by a hash are not traces."""
        names = sorted(e.name for e in os.scandir(self.directory)
                       if re.fullmatch(r"[0-9a-f]{64}", e.name)
                       and e.is_file(follow_symlinks=False))
        out = []
        for n in names:
            if after and f"traces/{n}" <= after:
                continue
            try:
                out.append(self.get(f"traces/{n}"))
            except TraceError:   # removed meanwhile
                continue
            if len(out) == limit:
                break
        return out

    def worker_spec(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of raw spec data with each replayed `traces/{sha256}` replaced by its
        file (what the worker opens); TraceError if one is not an uploaded trace."""
        out = copy.deepcopy(dict(raw))
        for group in out.get("workload", []):
            replay = group.get("replay") if isinstance(group, dict) else None
            if isinstance(replay, dict) and "path" in replay:
                replay["path"] = str(self.path(str(replay["path"])))
        return out
