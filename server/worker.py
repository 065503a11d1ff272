"""What a worker process runs: one spec, one `sim.run.run`, messages back to the manager.

The worker is the only place a run's config is built and simulated (design.md: spec ->
validated config -> `sim.run` in a worker process -> progress and results back to the run
manager). It never touches the store: everything goes back over `conn` (the sending end of
a `multiprocessing` pipe) as plain picklable dicts, so the manager stays the single writer.

Messages, in order:

- ``{"type": "progress", "run_id", "sim_time_s", "fraction", "events", "wall_s"}`` each
  time simulated time crosses the next multiple of ``duration / progress_steps``.
  `sim.run.run` only hands its callback (sim_now, duration), so ``events`` (SimPy events
  scheduled) is 0 until the final message; the sampler's rows are not reachable from the
  callback either, so snapshots carry no series rows.
- then exactly one of
  ``{"type": "result", "run_id", "summary", "series", "files", "trace", "fault_log",
  "events", "sim_time_s", "wall_s"}`` or
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


class Sender(Protocol):
    def send(self, obj: Any) -> None: ...


def error_message(run_id: str, exc: BaseException) -> dict:
    """The "error" message for `exc`, with a ConfigError's bad fields listed."""
    fields = [{"path": e.path, "reason": e.reason} for e in getattr(exc, "errors", ())
              if hasattr(e, "path") and hasattr(e, "reason")]
    return {"type": "error", "run_id": run_id, "error_type": type(exc).__name__,
            "message": str(exc), "fields": fields,
            "traceback": "".join(traceback.format_exception(exc))}


def execute(run_id: str, spec: Mapping[str, Any], conn: Sender,
            progress_steps: int = DEFAULT_PROGRESS_STEPS) -> None:
    """Build the config from `spec`, run it, and send progress and the outcome on `conn`.

    Runs in the worker process (also callable in-process, as the tests of a fake executor
    do). Any exception from building or running becomes an "error" message; only a failure
    to send escapes.
    """
    from sim.config import config_from_dict
    from sim.run import run

    start = time.monotonic()
    try:
        config = config_from_dict(spec)
        step = config.duration / max(1, progress_steps)
        next_at = [step]

        def progress(sim_now: float, duration: float) -> None:
            # sim.run calls this at its own fine steps; forward only at our coarser fixed
            # steps (and always at the end) so the store gets a bounded number of events.
            if sim_now + 1e-12 < next_at[0] and sim_now < duration:
                return
            while next_at[0] <= sim_now + 1e-12:
                next_at[0] += step
            conn.send({"type": "progress", "run_id": run_id, "sim_time_s": float(sim_now),
                       "fraction": min(1.0, sim_now / duration) if duration > 0 else 1.0,
                       "events": 0, "wall_s": time.monotonic() - start})

        result = run(config, progress=progress)
    except Exception as exc:  # noqa: BLE001 - every failure is reported as the run's error
        conn.send(error_message(run_id, exc))
        return
    conn.send({"type": "result", "run_id": run_id, "summary": result.summary,
               "series": result.series, "files": result.files, "trace": result.trace,
               "fault_log": result.fault_log, "events": int(result.events_scheduled),
               "sim_time_s": float(result.summary.get("sim_time_s", config.duration)),
               "wall_s": time.monotonic() - start})


def main(run_id: str, spec: Mapping[str, Any], conn: Any,
         progress_steps: int = DEFAULT_PROGRESS_STEPS) -> None:
    """Process entry point: run, then close the pipe so the manager sees the end."""
    try:
        execute(run_id, spec, conn, progress_steps)
    finally:
        conn.close()
