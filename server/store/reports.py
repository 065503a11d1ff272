"""A run's reports: named texts ("proc/buddyinfo", "trace", "histograms"...), whole or,
for one too large for a short transaction (a run's trace), in parts each written on its
own and read joined in order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from compactsim.server.store.database import Database
from compactsim.server.store.errors import InvalidArgument, NotFound
from compactsim.server.store.records import fetch_run


def _check(name: Any, text: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise InvalidArgument(f"report name {name!r}: 1 to 256 characters")
    if not isinstance(text, str):
        raise InvalidArgument(f"report {name}: the text must be a string")


class Reports:
    def __init__(self, db: Database):
        self._db = db

    def put_report(self, run_id: str, name: str, text: str) -> None:
        """Store (or replace) a named text: "proc/buddyinfo", "trace", "histograms"..."""
        self.put_reports(run_id, {name: text})

    def put_reports(self, run_id: str, reports: Mapping[str, str]) -> None:
        with self._db.write() as c:
            fetch_run(c, run_id)
            now = self._db.now()
            for name, text in reports.items():
                _check(name, text)
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
        with self._db.write() as c:
            fetch_run(c, run_id)
            _check(name, text)
            if part == 0:
                c.execute("DELETE FROM reports WHERE run_id = ? AND name = ?", (run_id, name))
                c.execute("DELETE FROM report_parts WHERE run_id = ? AND name = ?",
                          (run_id, name))
            c.execute("INSERT OR REPLACE INTO report_parts (run_id, name, part, text) "
                      "VALUES (?, ?, ?, ?)", (run_id, name, part, text))

    def get_reports(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, str]:
        """Name -> text of the run's reports (all, or those of `names` that exist)."""
        with self._db.read() as c:
            fetch_run(c, run_id)
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
        with self._db.read() as c:
            fetch_run(c, run_id)
            return [r[0] for r in c.execute(
                "SELECT name FROM reports WHERE run_id = ? UNION "
                "SELECT name FROM report_parts WHERE run_id = ? ORDER BY name",
                (run_id, run_id))]
