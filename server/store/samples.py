"""A run's time series: rows of numbers at simulated times, numbered 0, 1, 2... in time
order, written live and merged with the run's final series, and read in pages, downsampled
evenly when asked."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from compactsim.server.store import paging
from compactsim.server.store.database import Database
from compactsim.server.store.errors import InvalidArgument, InvalidPageToken, NotFound
from compactsim.server.store.records import Sample, to_json

DEFAULT_SAMPLES_PAGE, MAX_SAMPLES_PAGE = 1000, 10_000


def _count(c: sqlite3.Connection, run_id: str) -> int:
    """How many samples the run has; NotFound if there is no such run."""
    row = c.execute("SELECT sample_count FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row[0]


def _time(index: int, row: Mapping[str, Any]) -> float:
    """The simulated time of sample `index`."""
    t = row.get("time_s")
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise InvalidArgument(f"sample {index}: needs a numeric 'time_s'")
    return float(t)


def _row(index: int, row: Mapping[str, Any]) -> tuple[float, str]:
    """The simulated time and JSON of sample `index`."""
    return _time(index, row), to_json("sample", dict(row), strict=False)


def _store(c: sqlite3.Connection, run_id: str, start: int, rows: Sequence[tuple[float, str]],
           verb: str = "INSERT") -> None:
    c.executemany(f"{verb} INTO samples (run_id, idx, sim_time_s, row_json) "
                  f"VALUES (?, ?, ?, ?)",
                  [(run_id, start + i, t, j) for i, (t, j) in enumerate(rows)])


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


class Samples:
    def __init__(self, db: Database):
        self._db = db

    def _set_count(self, c: sqlite3.Connection, run_id: str, n: int) -> int:
        c.execute("UPDATE runs SET sample_count = ? WHERE id = ?", (n, run_id))
        return n

    def add_samples(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append time-series rows (each with its simulated time in "time_s"); all or none.
        Returns the run's sample count."""
        with self._db.write() as c:
            n = _count(c, run_id)
            batch = [_row(n + i, r) for i, r in enumerate(rows)]
            _store(c, run_id, n, batch)
            return self._set_count(c, run_id, n + len(batch))

    def put_samples(self, run_id: str, start: int, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store `rows` as the run's samples `start`, `start` + 1... replacing any stored
        at those places; all or none. For a run's final series, written a piece at a time
        over the rows sent live (which it holds at their final places). Returns the run's
        sample count."""
        with self._db.write() as c:
            n = _count(c, run_id)
            batch = [_row(start + i, r) for i, r in enumerate(rows)]
            _store(c, run_id, start, batch, "INSERT OR REPLACE")
            return self._set_count(c, run_id, max(n, start + len(batch)))

    def merge_samples(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add the rows whose "time_s" is not stored yet (rows already stored stay as they
        are) and keep the series ordered by simulated time; all or none. For a run's final
        series after live rows sent with its progress. Returns the run's sample count.

        When a new row falls before a stored one the series is renumbered, so a page token
        issued before the merge may skip or repeat rows."""
        rows = list(rows)
        with self._db.write() as c:
            n = _count(c, run_id)
            have = {t for (t,) in c.execute("SELECT sim_time_s FROM samples WHERE run_id = ?",
                                            (run_id,))}
            new = [(t, to_json("sample", dict(r), strict=False))
                   for t, r in ((_time(i, r), r) for i, r in enumerate(rows)) if t not in have]
            if not new:
                return n
            new.sort(key=lambda x: x[0])                    # stable: equal times keep order
            if not have or new[0][0] > max(have):
                start, merged = n, new                      # all after: append
            else:
                stored = c.execute("SELECT sim_time_s, row_json FROM samples WHERE run_id = ? "
                                   "ORDER BY idx", (run_id,)).fetchall()
                c.execute("DELETE FROM samples WHERE run_id = ?", (run_id,))
                start, merged = 0, sorted(stored + new, key=lambda x: x[0])
            _store(c, run_id, start, merged)
            return self._set_count(c, run_id, start + len(merged))

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
        size = paging.page_size(page_size, DEFAULT_SAMPLES_PAGE, MAX_SAMPLES_PAGE)
        query = paging.query_hash("samples", run_id, max_points)
        with self._db.read() as c:
            count = _count(c, run_id)
            pos, n = 0, count
            if page_token:
                body = paging.decode_token(page_token, query)
                at, length = body.get("p"), body.get("n")   # position, series length
                if not (isinstance(at, int) and isinstance(length, int) and 0 <= at and
                        0 <= length <= count):
                    raise InvalidPageToken(paging.NOT_ISSUED)
                pos, n = at, length
            kept = n if max_points == 0 else min(n, max_points)
            index = paging.downsample_indices(n, max_points)
            wanted = [index(p) for p in range(pos, min(pos + size, kept))]
            samples = _samples_at(c, run_id, wanted)
        if weigh is not None:
            k = paging.fitting(samples, weigh, max_weight)
            samples, wanted = samples[:k], wanted[:k]
        nxt = pos + len(wanted)
        token = paging.encode_token(query, {"p": nxt, "n": n}) if nxt < kept else ""
        return samples, token
