"""Queries over many runs: ListRuns' pages (filter, order and keyset page tokens), their
count, runs by state, and the runs changed since a cursor (for the metrics collector)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from compactsim.codec.runstate import NAMES, RunState
from compactsim.server.filters import (
    CompiledFilter,
    compile_filter,
    parse_order_by,
    render_order_by,
)
from compactsim.server.store import paging
from compactsim.server.store.database import Database
from compactsim.server.store.records import RUN_COLUMNS, RUN_SELECT, RunRecord, run_from_row

DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE = 50, 1000
DEFAULT_ORDER = "create_time desc"

_STATE_RANK = "CASE runs.state " + " ".join(
    f"WHEN '{s}' THEN {i}" for i, s in enumerate(NAMES)) + " END"
# end_time: runs not ended (NULL) after every time, so keyset pages compare no NULL
_ORDER_SQL = {"create_time": "runs.create_time_ns",
              "end_time": f"COALESCE(runs.end_time_ns, {2**63 - 1})",
              "display_name": "runs.display_name", "state": _STATE_RANK}


def _run_filter(filter: str, show_deleted: bool) -> tuple[CompiledFilter, list[str], list]:
    """The compiled filter, and the WHERE terms (joined with AND) and parameters that select
    the runs it matches: list_runs and count_runs share them."""
    compiled = compile_filter(filter)
    where, params = [compiled.sql], list(compiled.params)
    if not show_deleted:
        where.append("runs.deleted = 0")
    return compiled, where, params


class Listing:
    def __init__(self, db: Database):
        self._db = db

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
        size = paging.page_size(page_size, DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE)
        compiled, where, params = _run_filter(filter, show_deleted)
        order = parse_order_by(order_by or DEFAULT_ORDER)
        exprs = [(_ORDER_SQL[f.name], f.descending) for f in order] + [("runs.id", False)]
        query = paging.query_hash("runs", compiled.canonical, render_order_by(order),
                                  show_deleted)
        if page_token:
            term, term_params = paging.after_key(
                exprs, paging.decode_token(page_token, query).get("k"))
            where.append(term)
            params += term_params
        keys = ", ".join(f"{e} AS k{i}" for i, (e, _) in enumerate(exprs))
        order_sql = ", ".join(f"k{i}{' DESC' if d else ''}" for i, (_, d) in enumerate(exprs))
        sql = (f"SELECT {RUN_SELECT}, {keys} FROM runs WHERE {' AND '.join(where)} "
               f"ORDER BY {order_sql} LIMIT ?")
        with self._db.read() as c:
            rows = c.execute(sql, (*params, size + 1)).fetchall()
        records = [run_from_row(r) for r in rows[:size]]
        n = paging.fitting(records, weigh, max_weight)
        if n < len(records):
            records, rows, size = records[:n], rows[:n + 1], n
        token = ""
        if len(rows) > size:
            token = paging.encode_token(query, {"k": list(rows[size - 1][len(RUN_COLUMNS):])})
        return records, token

    def count_runs(self, filter: str = "", *, show_deleted: bool = False) -> int:
        """How many runs list_runs(filter, show_deleted=...) yields over all its pages, in
        one query. FilterError for a bad filter."""
        _, where, params = _run_filter(filter, show_deleted)
        with self._db.read() as c:
            return c.execute(f"SELECT COUNT(*) FROM runs WHERE {' AND '.join(where)}",
                             params).fetchone()[0]

    def count_by_state(self) -> dict[RunState, int]:
        """Runs not deleted, by state (every state present, 0 when none), in one query."""
        counts = dict.fromkeys(RunState, 0)
        with self._db.read() as c:
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
        with self._db.read() as c:
            rows = c.execute(f"SELECT runs.rowid, {RUN_SELECT} FROM runs WHERE rowid > ? "
                             f"ORDER BY rowid", (after,)).fetchall()
            new = {r[1] for r in rows}
            rest = [i for i in ids if i not in new]
            for start in range(0, len(rest), 500):   # far below SQLite's variable limit
                chunk = rest[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                rows += c.execute(f"SELECT runs.rowid, {RUN_SELECT} FROM runs "
                                  f"WHERE id IN ({marks})", chunk).fetchall()
        rows.sort(key=lambda r: r[0])
        cursor = max([after, *(r[0] for r in rows)])
        return [run_from_row(r[1:]) for r in rows], cursor
