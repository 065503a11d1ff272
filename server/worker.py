"""What a worker process runs: one spec, one `sim.run.run`, messages back to the manager.

The worker is the only place a run's config is built and simulated (docs/architecture.md: spec
-> validated config -> `sim.run` in a worker process -> progress and results back to the run
manager). It never touches the store: everything goes back over `conn` (the sending end of
a `multiprocessing` pipe) as plain picklable dicts, so the manager stays the single writer.

Messages, in order:

- ``{"type": "progress", "run_id", "sim_time_s", "fraction", "events", "wall_s", "row",
  "snapshot", "kernel"}``
  each time simulated time crosses the next multiple of ``duration / progress_steps``
  (from `sim.run.run`'s ``on_step``): ``events`` is the SimPy events scheduled so far and
  ``row`` the latest sampled series row (a dict with "time_s"), or None when no row was
  sampled since the last progress message; ``snapshot`` likewise the latest full
  `sim.sampling.snapshot` (zones, fragmentation score, vmstat: what `/probe` serves) with
  ``histograms`` (alloc_latency, lock_wait, compaction_latency: `histograms_message`) and
  ``wasted_migrations``, and ``kernel`` ``{"profile", "design"}`` of the run's config. The
  last progress message carries the snapshot taken at the end (the summary's state).
- after a successful run, its whole series in pieces of at most `SERIES_PIECE` rows,
  ``{"type": "series", "run_id", "start", "rows"}`` (rows ``start``, ``start`` + 1...): no
  message, and so no decoding or storing on the server, grows with the run's length;
- then its trace and its fault log, each in parts of at most `REPORT_PIECE` characters
  (one part at least, "" for an empty text), ``{"type": "report", "run_id", "name",
  "part", "text"}`` with ``name`` "trace" or "fault_log" and ``part`` 0, 1...: the text
  is the parts joined in order;
- then exactly one of
  ``{"type": "result", "run_id", "summary", "files", "histograms", "events",
  "sim_time_s", "wall_s"}`` (``files``: the procfs files, small; ``histograms``: see
  `histograms_message`) or
  ``{"type": "error", "run_id", "error_type", "message", "fields": [{"path", "reason"}],
  "traceback"}`` (``fields`` is non-empty only for a `ConfigError`).

A worker that dies before its last message (killed, out of memory) sends nothing more; the
executor notices the closed pipe and the exit code.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any, Protocol

DEFAULT_PROGRESS_STEPS = 20
SERIES_PIECE = 2000   # series rows per message (about 1 KB of JSON each once stored)
REPORT_PIECE = 1 << 20   # characters of a trace or fault log per message (~7 000 trace lines)


class Sender(Protocol):
    def send(self, obj: Any) -> None: ...


def error_message(run_id: str, exc: BaseException) -> dict:
    """The "error" message for `exc`, with a ConfigError's bad fields listed."""
    fields = [{"path": e.path, "reason": e.reason} for e in getattr(exc, "errors", ())
              if hasattr(e, "path") and hasattr(e, "reason")]
    return {"type": "error", "run_id": run_id, "error_type": type(exc).__name__,
            "message": str(exc), "fields": fields,
            "traceback": "".join(traceback.format_exception(exc))}


def histograms_message(latency: Mapping[str, Any]) -> dict[str, dict]:
    """`RunResult.latency` (name -> `sim.histogram.Histogram`) as plain data: per name
    ``{"n", "sum_s", "mean_s", "max_s", "buckets": [[upper_bound_s, count], ...]}`` with the
    non-empty buckets by increasing bound (`server.convert.histograms_from_message` turns
    it into the report's LatencyHistogram messages)."""
    return {name: {"n": int(h.n), "sum_s": float(h.total_s), "mean_s": float(h.mean()),
                   "max_s": float(h.max_s),
                   "buckets": [[float(b), int(c)] for b, c in h.buckets()]}
            for name, h in sorted(latency.items())}


def execute(run_id: str, spec: Mapping[str, Any], conn: Sender,
            progress_steps: int = DEFAULT_PROGRESS_STEPS) -> None:
    """Build the config from `spec`, run it, and send progress and the outcome on `conn`.

    Runs in the worker process (also callable in-process, as the tests of a fake executor
    do). Any exception from building or running becomes an "error" message; only a failure
    to send escapes.
    """
    from compactsim.sim.config import config_from_dict
    from compactsim.sim.run import run

    start = time.monotonic()
    try:
        config = config_from_dict(spec)
        step = config.duration / max(1, progress_steps)
        next_at = [step]
        last_row_time = [None]
        last_snapshot_time = [None]
        kernel = {"profile": config.kernel.profile, "design": config.kernel.movable_ops.name}

        def on_step(info: dict) -> None:
            # sim.run calls this at its own fine steps; forward only at our coarser fixed
            # steps (and always at the end) so the store gets a bounded number of events.
            sim_now, duration = info["sim_time_s"], config.duration
            if sim_now + 1e-12 < next_at[0] and sim_now < duration:
                return
            while next_at[0] <= sim_now + 1e-12:
                next_at[0] += step
            row = info.get("row")
            if row is not None and row.get("time_s") == last_row_time[0]:
                row = None   # already sent with an earlier snapshot
            if row is not None:
                last_row_time[0] = row.get("time_s")
            snap = info.get("snapshot")
            if (snap is not None and snap.get("time_s") == last_snapshot_time[0]
                    and not info.get("final")):
                snap = None
            if snap is not None:
                last_snapshot_time[0] = snap.get("time_s")
                snap = dict(snap, wasted_migrations=int(info.get("wasted_migrations", 0)),
                            histograms={
                    "alloc_latency": histograms_message(info.get("latency", {})),
                    "lock_wait": histograms_message(info.get("locks", {})),
                    "compaction_latency": histograms_message(
                        info.get("compaction_latency", {}))})
            conn.send({"type": "progress", "run_id": run_id, "sim_time_s": float(sim_now),
                       "fraction": min(1.0, sim_now / duration) if duration > 0 else 1.0,
                       "events": int(info.get("events", 0)), "wall_s": time.monotonic() - start,
                       "row": dict(row) if row is not None else None,
                       "snapshot": snap, "kernel": kernel})

        result = run(config, on_step=on_step)
    except Exception as exc:  # noqa: BLE001 - every failure is reported as the run's error
        conn.send(error_message(run_id, exc))
        return
    series = result.series
    for first in range(0, len(series), SERIES_PIECE):
        conn.send({"type": "series", "run_id": run_id, "start": first,
                   "rows": series[first:first + SERIES_PIECE]})
    for name, text in (("trace", result.trace), ("fault_log", result.fault_log)):
        for part, first in enumerate(range(0, max(1, len(text)), REPORT_PIECE)):
            conn.send({"type": "report", "run_id": run_id, "name": name, "part": part,
                       "text": text[first:first + REPORT_PIECE]})
    conn.send({"type": "result", "run_id": run_id, "summary": result.summary,
               "files": result.files, "histograms": histograms_message(result.latency),
               "events": int(result.events_scheduled),
               "sim_time_s": float(result.summary.get("sim_time_s", config.duration)),
               "wall_s": time.monotonic() - start})


def main(run_id: str, spec: Mapping[str, Any], conn: Any,
         progress_steps: int = DEFAULT_PROGRESS_STEPS) -> None:
    """Process entry point: run, then close the pipe so the manager sees the end."""
    try:
        execute(run_id, spec, conn, progress_steps)
    finally:
        conn.close()
