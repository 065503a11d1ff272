"""`compactsim-backup DATA_DIR DEST`: a consistent copy of a server's data directory, taken
while the server runs.

The store is copied with SQLite's online backup API (a read transaction: the server keeps
writing meanwhile, into its WAL), then checked with `PRAGMA integrity_check`; uploaded
traces (`traces/`, named by their SHA-256 and never changed once stored) are copied by
name, skipping partial uploads. DEST must not hold a store already. A server started on DEST
treats it as after a crash: runs that were running when the copy was taken are marked
FAILED "interrupted" (re-runnable from spec and seed), queued runs queue again.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

STORE = "compactsim.db"
TRACES = "traces"
PARTIAL_PREFIX = "."     # partial uploads and temporary files are dot files


class BackupError(Exception):
    """A backup that could not be made; the message names the path and why."""


@dataclass(frozen=True)
class Backup:
    runs: int
    store_bytes: int
    traces: int
    trace_bytes: int


def backup(data_dir: str | Path, dest: str | Path) -> Backup:
    """Copy `data_dir`'s store and traces into `dest` (created if missing)."""
    src, out = Path(data_dir), Path(dest)
    db = src / STORE
    if not db.is_file():
        raise BackupError(f"{db}: no compactsim store there")
    if (out / STORE).exists():
        raise BackupError(f"{out / STORE} exists; back up into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{PARTIAL_PREFIX}{STORE}.partial"
    try:
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
            ok = target.execute("PRAGMA integrity_check").fetchone()[0]
            runs = target.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            target.close()
            source.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"{db}: {exc}") from None
    if ok != "ok":
        tmp.unlink(missing_ok=True)
        raise BackupError(f"{db}: the copy fails PRAGMA integrity_check: {ok}")
    tmp.replace(out / STORE)
    traces = trace_bytes = 0
    if (src / TRACES).is_dir():
        (out / TRACES).mkdir(exist_ok=True)
        for f in sorted((src / TRACES).iterdir()):
            if f.name.startswith(PARTIAL_PREFIX) or f.is_symlink() or not f.is_file():
                continue
            if not (out / TRACES / f.name).exists():
                shutil.copy2(f, out / TRACES / f.name)
            traces += 1
            trace_bytes += f.stat().st_size
    return Backup(runs, (out / STORE).stat().st_size, traces, trace_bytes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compactsim-backup", description=__doc__.splitlines()[0])
    p.add_argument("data_dir", metavar="DATA_DIR", help="the server's --data-dir")
    p.add_argument("dest", metavar="DEST", help="a new directory for the copy")
    args = p.parse_args(argv)
    try:
        b = backup(args.data_dir, args.dest)
    except (BackupError, OSError) as exc:
        print(f"compactsim-backup: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {b.runs} runs ({b.store_bytes} bytes of store), {b.traces} traces "
          f"({b.trace_bytes} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
