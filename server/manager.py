"""RunManager: the queue of runs, their workers, and the store's single writer.

The path of a run (docs/architecture.md): spec -> validated config -> `sim.run` in a worker
process -> progress snapshots and results back to the run manager -> store (single
writer). The manager owns that middle:

- `submit()` stores a QUEUED run and queues it, or raises `QueueLimit` when `max_queue` runs
  already wait, or `max_queued_per_user` runs of the same creator. Queued runs start, oldest
  first, as the executor frees a slot, skipping the runs of a creator who already has
  `max_running_per_user` runs running (they wait while other creators' runs start).
  `worker_spec` turns a stored spec into what the worker gets (the server resolves
  uploaded trace names to files there); when it fails, the run FAILED "could not start a
  worker".
- One background **thread** (not an asyncio task: the store and the executor block, and
  a thread keeps the manager usable from the gRPC aio server and from plain tests alike)
  pumps executor messages: progress -> `update_progress` and its latest series row as a
  sample (so a live run's series grows), and its latest full snapshot kept in memory for
  `/probe` (`targets()`, `latest_snapshot()`; kept `target_linger_s` after the run ends,
  so its final state is scraped); the finished run's series and its trace and fault log
  come in pieces (server.worker), each stored in a transaction of its own so other writes
  go between them; result -> the small reports (procfs files, latency histograms), final
  progress, summary and SUCCEEDED in one short transaction (a run one piece of which
  could not be stored is not SUCCEEDED but FAILED "store_error"); error -> an "error" event
  (type, message, ConfigError fields) and FAILED; a worker that dies -> FAILED
  "worker died: signal 9 (SIGKILL)" (the manager keeps going); a run past
  `max_run_wall_time_s` -> its worker is stopped and it is FAILED "wall time limit".
- `cancel()`: a QUEUED run is CANCELLED at once; a RUNNING one becomes CANCELLING and then
  CANCELLED when its worker is gone (or SUCCEEDED / FAILED if it finished first).
- `delete()` soft-deletes (a run that has not ended only with `force`: cancelled first);
  `submit_sweep()` stores a sweep and all its runs in one transaction and queues them
  together, or stores nothing (queue limits as for submit(), checked for all its runs under
  the same lock; a store error). The servicer writes nothing itself.
- `shutdown()` stops the running runs, marks them FAILED "interrupted" (re-runnable from
  spec and seed, like a crash), leaves queued runs QUEUED for the next start, and flushes.

The restart policy. Whether the server stopped cleanly (SIGTERM: `shutdown()`) or was
killed (SIGKILL, a crash), the next start on the same data directory finds:

- finished runs (SUCCEEDED, FAILED, CANCELLED): exactly as they were, with their summary,
  reports, samples and events. Every write is one committed transaction, so a kill loses at
  most the write in flight, never part of one (a power cut may also lose the last commits,
  `synchronous=NORMAL`, but leaves the file consistent);
- QUEUED runs: still QUEUED; construction queues them again in creation order and they run
  as before (a deleted one is CANCELLED instead);
- RUNNING runs: a clean stop has already marked them FAILED "interrupted" ("stopped by a
  server shutdown"); after a kill their workers are gone too (they notice that the server
  died and exit within moments: `server.executor`'s lifeline), and construction
  (`store.mark_interrupted_on_startup()`) marks them FAILED, reason "interrupted",
  `interrupted` set: the API's error code UNAVAILABLE, ErrorInfo RUN_INTERRUPTED with
  metadata interrupted=true. Re-run them from spec and seed; their progress events and
  live samples up to the kill stay;
- CANCELLING runs: a clean stop ends them CANCELLED; after a kill they are FAILED
  "interrupted" like RUNNING ones (the cancel was never confirmed).
Each change is a run event, so a watcher that resumes with `after_sequence` sees it.

When the store cannot take a write (its disk is full: `StoreFull`; an I/O error), the write
is rolled back whole and the manager keeps going: `submit()` raises the store's error (the
servicer answers UNAVAILABLE with its message), a lost progress update is skipped, a queued
run stays QUEUED at the head of the queue until it can be marked RUNNING, and a run whose
result cannot be stored, or whose end cannot be written, is ended FAILED "store_error" (or
its own end: worker death, wall time, cancel) as soon as a write lands again, the pump
trying once per pass (a stop before then leaves them to the next start, which marks them
"interrupted"). Reads go on, and health stays SERVING (`healthy()`: the pump is
alive; the server can still answer and needs nothing but space). Nothing needs a restart
once space is freed.

The store does not notify, so every write the manager makes bumps a
`threading.Condition`; `wait_events()` blocks on it (from an asyncio server, call it via
`asyncio.to_thread`). Each write about a run also calls the listeners of
`add_listener()` with its id (the servicer's `server.changes.RunChanges`, which wakes
watch streams on the asyncio loop without a thread per stream).

Store writes happen under the manager's lock (from the pump thread, or from submit(),
cancel(), delete() and submit_sweep() on the caller's thread); the executor is touched
only by the pump thread.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compactsim.codec.runstate import RunState
from compactsim.server import limits
from compactsim.server.executor import Executor, WorkerExit, WorkerMessage
from compactsim.server.limits import Exceeded
from compactsim.server.store import (
    INTERRUPTED_REASON,
    NewRun,
    NotFound,
    Progress,
    RunEvent,
    RunRecord,
    RunStore,
    StorageError,
    StoreError,
    SweepRecord,
    WrongState,
)

log = logging.getLogger(__name__)

REASON_INVALID_SPEC = "invalid_spec"
REASON_INVALID_TRACE = "invalid_trace"     # a replayed trace with unreadable lines
REASON_SIMULATION_ERROR = "simulation_error"
REASON_WORKER_DIED = "worker_died"
REASON_WALL_TIME = "wall_time_limit"
REASON_DELETED = "deleted"
REASON_STORE_ERROR = "store_error"
REASON_WORKER_START = "worker_start_failed"
SHUTDOWN_MESSAGE = "stopped by a server shutdown"
EVENT_ERROR = "error"
# Ended runs kept as metrics targets at most (each holds its final snapshot).
MAX_LINGERING = 256
# The report holding `server.worker.histograms_message` of the run's latency, as JSON.
REPORT_HISTOGRAMS = "histograms"


class ManagerError(Exception):
    """Anything the run manager refuses."""


class QueueLimit(ManagerError):
    """Queueing the runs would pass a queue limit (--max-queue, --max-queued-per-user):
    `exceeded` says which, with the numbers (server.limits.queue_exceeded)."""

    def __init__(self, exceeded: list[Exceeded]):
        self.exceeded = exceeded
        super().__init__("; ".join(e.description for e in exceeded) + "; try again later")


class ManagerClosed(ManagerError):
    """The manager is shutting down or shut down: no new runs."""


@dataclass
class LiveRun:
    """What the latest progress message said about a running run (kept in memory only,
    kept for `target_linger_s` after the run ends, so a scrape can still read its final
    state): the full `sim.sampling.snapshot` (None before the first) and the config's
    kernel ``{"profile", "design"}``."""

    run_id: str
    snapshot: dict | None = None
    kernel: dict[str, str] | None = None
    sim_time_s: float = 0.0
    ended: bool = False     # the run has ended: `snapshot` is its final state


@dataclass(eq=False)
class _Active:
    run_id: str
    handle: Any
    started: float          # the manager's clock, seconds
    creator: str = ""
    cancel_requested: bool = False
    stopping: bool = False  # executor.cancel() issued; waiting for its WorkerExit
    store_error: str = ""   # why the latest write of what its worker sent failed


def report_name(name: str) -> str:
    """Reports are stored as "proc/<file>" for procfs files, else by their own name."""
    return name if "/" in name else f"proc/{name}"


class RunManager:
    def __init__(self, store: RunStore, executor: Executor, *, max_queue: int = 1000,
                 max_run_wall_time_s: float | None = None, poll_interval_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, start: bool = True,
                 max_queued_per_user: int | None = None,
                 max_running_per_user: int | None = None,
                 worker_spec: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
                 target_linger_s: float = 30.0):
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        for name, value in (("max_queued_per_user", max_queued_per_user),
                            ("max_running_per_user", max_running_per_user)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (None: no limit)")
        self.store = store
        self.executor = executor
        self.max_queue = max_queue
        self.max_queued_per_user = max_queued_per_user
        self.max_running_per_user = max_running_per_user
        self._worker_spec = worker_spec
        self.max_run_wall_time_s = max_run_wall_time_s
        self._poll = poll_interval_s
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._listeners: list[Callable[[str], None]] = []
        # queued run id -> its creator, oldest first
        self._queue: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._active: dict[str, _Active] = {}
        self._live: dict[str, LiveRun] = {}   # runs not ended: latest snapshot (for /probe)
        # runs ended in the last target_linger_s: (final LiveRun, when it ended)
        self._ended: dict[str, tuple[LiveRun, float]] = {}
        self.target_linger_s = target_linger_s
        # run id -> (state, reason, message): ended runs whose terminal write failed (the
        # store's disk is full...); written again on every pump pass until it lands
        self._unsettled: dict[str, tuple[RunState, str, str]] = {}
        self._start_error = ""   # the latest failure to start a queued run, logged once
        self._closing = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.recovered: list[RunRecord] = self._recover()
        if start:
            self.start()

    # -- lifecycle ----------------------------------------------------------------------------

    def _recover(self) -> list[RunRecord]:
        interrupted = self.store.mark_interrupted_on_startup()
        for run in self.store.queued_runs():
            if run.deleted:
                self.store.update_state(run.id, RunState.CANCELLED, error_reason=REASON_DELETED,
                                        error_message="deleted before it started")
            else:
                self._queue[run.id] = run.creator
        return interrupted

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="run-manager", daemon=True)
            self._thread.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the pump, stop running runs (FAILED "interrupted"), flush the store."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self._stop_all()
        self.store.flush()

    def _stop_all(self) -> None:
        for a in list(self._active.values()):
            self.executor.cancel(a.handle)
        self.executor.shutdown()
        with self._lock:
            self._retry_unsettled()
            for run_id, a in list(self._active.items()):
                try:
                    if self.store.get_run(run_id).state.terminal:
                        continue
                    if a.cancel_requested:
                        self._finish(run_id, RunState.CANCELLED)
                    else:
                        self._finish(run_id, RunState.FAILED, reason=INTERRUPTED_REASON,
                                     message=SHUTDOWN_MESSAGE, interrupted=True)
                except StoreError:   # the next start marks it interrupted
                    log.exception("run %s: marking it stopped", run_id)
            self._active.clear()
            self._live.clear()

    def __enter__(self) -> RunManager:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- requests -------------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any], **create: Any) -> RunRecord:
        """Store a QUEUED run for `spec` (create_run's keywords pass through) and queue it.
        QueueLimit when it would pass max_queue or its creator's max_queued_per_user;
        ManagerClosed while shutting down. A repeated request_id returns the earlier run
        without queueing anything."""
        with self._lock:
            self._admit(create.get("creator", ""), 1)
            run, created = self.store.create_run(spec, **create)
            if created:
                self._queue[run.id] = run.creator
                self._notify(run.id)
            return run

    def cancel(self, run_id: str) -> RunRecord:
        """QUEUED -> CANCELLED now; RUNNING -> CANCELLING (CANCELLED when the worker is
        gone). Cancelling a CANCELLING run returns it; a finished one raises WrongState,
        an unknown one NotFound."""
        with self._lock:
            run = self.store.get_run(run_id)
            if run.state is RunState.CANCELLING:
                return run
            if run.state.terminal:
                raise WrongState(f"run {run_id} is already {run.state.value}")
            if run_id in self._queue:
                cancelled = self._finish(run_id, RunState.CANCELLED)   # a refused write:
                del self._queue[run_id]                                # still queued
                return cancelled
            if run_id in self._unsettled:
                raise WrongState(f"run {run_id} has ended; its end is not stored yet (the "
                                 f"store cannot write: {self._unsettled[run_id][0].value} "
                                 f"follows once it can)")
            a = self._active.get(run_id)
            if a is None:   # QUEUED in the store but not ours (another manager's); refuse
                raise WrongState(f"run {run_id} is not managed here")
            run = self._write(self.store.update_state, run_id, RunState.CANCELLING)
            a.cancel_requested = True   # only once stored: a failed write cancels nothing
            return run

    def delete(self, run_id: str, force: bool = False, timeout_s: float = 30.0
               ) -> RunRecord:
        """Soft-delete a run. A run that has not ended raises WrongState unless `force`:
        then it is cancelled first and deleted once it has ended (TimeoutError after
        `timeout_s`). Deleting a deleted run returns it; an unknown one raises NotFound."""
        run = self.store.get_run(run_id)
        if not run.state.terminal:
            if not force:
                raise WrongState(f"run {run_id} is {run.state.value}; cancel it first or "
                                 f"delete with force")
            try:
                self.cancel(run_id)
            except WrongState:
                pass   # it ended meanwhile
            self.wait_for_state(run_id, timeout_s=timeout_s)
        return self._write(self.store.soft_delete, run_id)

    def submit_sweep(self, base_spec: Mapping[str, Any], grid: Any, runs: Sequence[NewRun],
                     **create: Any) -> tuple[SweepRecord, list[RunRecord]]:
        """Store a sweep and all its QUEUED `runs` in one transaction and queue them
        together (`RunStore.create_sweep`'s other keywords pass through), or store nothing:
        QueueLimit when they would pass a queue limit (the runs are the sweep's creator's),
        ManagerClosed while shutting down, and the store's error (StoreFull...) when it
        cannot take the write. The limits are checked under the lock the runs are queued
        under, so no other submit comes in between."""
        creator = create.get("creator", "")
        if any(r.creator != creator for r in runs):
            raise ValueError("a sweep's runs are its creator's")
        with self._lock:
            self._admit(creator, len(runs))
            sweep, records = self.store.create_sweep(base_spec, grid, runs=runs, **create)
            for run in records:
                self._queue[run.id] = run.creator
                self._notify(run.id)
            return sweep, records

    def queued(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def queue_exceeded(self, creator: str, adding: int = 1) -> list[Exceeded]:
        """The queue limits that `adding` more runs of `creator` would pass now."""
        with self._lock:
            return limits.queue_exceeded(creator, adding, len(self._queue), self.max_queue,
                                         self._queued_by(creator), self.max_queued_per_user)

    def _admit(self, creator: str, adding: int) -> None:
        """Under the lock, before queueing: ManagerClosed, or QueueLimit."""
        if self._closing:
            raise ManagerClosed("the server is shutting down; no new runs")
        exceeded = self.queue_exceeded(creator, adding)
        if exceeded:
            raise QueueLimit(exceeded)

    def _queued_by(self, creator: str) -> int:
        return sum(1 for c in self._queue.values() if c == creator)

    def queued_by(self, creator: str) -> int:
        """Runs of `creator` waiting for a worker."""
        with self._lock:
            return self._queued_by(creator)

    def _running_by(self, creator: str) -> int:
        return sum(1 for a in self._active.values() if a.creator == creator)

    def running_by(self, creator: str) -> int:
        """Runs of `creator` with a worker."""
        with self._lock:
            return self._running_by(creator)

    def running(self) -> dict[str, int | None]:
        """run id -> worker pid of the runs with a worker."""
        with self._lock:
            return {r: self.executor.pid(a.handle) for r, a in self._active.items()}

    def targets(self) -> dict[str, LiveRun]:
        """run id -> `LiveRun` of the runs running and of those ended in the last
        `target_linger_s` seconds (``ended`` set, their final snapshot): what the metrics
        listener serves, so that a scrape after the end reads a run's final state."""
        with self._lock:
            self._expire()
            out = {r: LiveRun(**vars(v)) for r, (v, _) in self._ended.items()}
            out.update((r, LiveRun(**vars(v))) for r, v in self._live.items())
            return out

    def latest_snapshot(self, run_id: str) -> dict | None:
        """The latest snapshot the run's worker sent (its last one for a run among
        `targets()` that has ended); None when there is none yet or the run is not a
        target (unknown, or ended longer ago than `target_linger_s`)."""
        with self._lock:
            self._expire()
            live = self._live.get(run_id) or self._ended.get(run_id, (None, 0))[0]
            return live.snapshot if live is not None else None

    def _retire(self, run_id: str) -> None:
        """The run has ended: its LiveRun stays a target for `target_linger_s` (the
        `MAX_LINGERING` newest, so a burst of short runs holds bounded memory)."""
        live = self._live.pop(run_id, None)
        if live is not None and self.target_linger_s > 0:
            live.ended = True
            self._ended[run_id] = (live, self._clock())
            while len(self._ended) > MAX_LINGERING:
                del self._ended[next(iter(self._ended))]   # the oldest
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self.target_linger_s
        for run_id in [r for r, (_, t) in self._ended.items() if t <= horizon]:
            del self._ended[run_id]

    def add_listener(self, fn: Callable[[str], None]) -> None:
        """Call `fn(run_id)` after each change stored for a run (state, progress, events),
        on the writing thread with the manager's lock held: `fn` must return at once and
        must not call the manager."""
        with self._lock:
            self._listeners.append(fn)

    def _notify(self, run_id: str | None) -> None:
        """Wake `wait_events()` and tell the listeners (under the lock)."""
        self._changed.notify_all()
        if run_id is not None:
            for fn in self._listeners:
                fn(run_id)

    def healthy(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and not self._closing
                and self.executor.alive())

    def wait_events(self, run_id: str, after_sequence: int = 0, timeout_s: float = 10.0,
                    limit: int = 1000) -> list[RunEvent]:
        """The run's events after `after_sequence`, waiting up to `timeout_s` for the first
        (an empty list on timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                events = self.store.events_after(run_id, after_sequence, limit)
                left = deadline - time.monotonic()
                if events or left <= 0:
                    return events
                self._changed.wait(left)

    def wait_for_state(self, run_id: str, *states: RunState,
                       timeout_s: float = 30.0) -> RunRecord:
        """The run once it is in one of `states` (any terminal state when none are given);
        TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                run = self.store.get_run(run_id)
                if run.state in states if states else run.state.terminal:
                    return run
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"run {run_id} is still {run.state.value}")
                self._changed.wait(left)

    # -- the pump -------------------------------------------------------------------------------

    def _write(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A store write under the lock, waking watchers (of the run whose id is the first
        argument, when it is one)."""
        with self._lock:
            try:
                return fn(*args, **kw)
            finally:
                self._notify(args[0] if args and isinstance(args[0], str) else None)

    def _finish(self, run_id: str, state: RunState, *, reason: str = "", message: str = "",
                interrupted: bool = False, summary: Mapping[str, Any] | None = None
                ) -> RunRecord:
        if state.terminal:
            self._retire(run_id)
        return self._write(self.store.update_state, run_id, state, error_reason=reason,
                           error_message=message, interrupted=interrupted, summary=summary)

    def _pump(self) -> None:
        while True:
            try:
                with self._lock:
                    if self._closing:
                        break
                    self._retry_unsettled()
                self._start_queued()
                self._issue_cancels()
                for msg in self.executor.poll(self._poll):
                    self._handle(msg)
            except Exception:   # noqa: BLE001 - one bad run must not stop the service
                log.exception("run manager pump")
                time.sleep(self._poll)
        self._stop_all()
        self._stopped.set()

    def _next_startable(self) -> tuple[str, str] | None:
        """The oldest queued run whose creator is below max_running_per_user, taken off the
        queue, and its creator (None: none)."""
        limit = self.max_running_per_user
        full: set[str] = set()
        for run_id, creator in self._queue.items():
            if creator in full:
                continue
            if limit is None or self._running_by(creator) < limit:
                del self._queue[run_id]
                return run_id, creator
            full.add(creator)
        return None

    def _start_queued(self) -> None:
        while self.executor.free_slots() > 0:
            with self._lock:
                if self._closing or not self._queue:
                    return
                taken = self._next_startable()
                if taken is None:
                    return
                run_id, creator = taken
                try:
                    run = self.store.get_run(run_id)
                    if run.state is not RunState.QUEUED:
                        continue
                    if run.deleted:
                        self._finish(run_id, RunState.CANCELLED, reason=REASON_DELETED,
                                     message="deleted before it started")
                        continue
                    self._finish(run_id, RunState.RUNNING)
                except (NotFound, WrongState):
                    continue
                except StoreError as exc:
                    # the store cannot take the write (disk full...): the run stays QUEUED,
                    # first in line, and the next pump pass tries again
                    self._queue[run_id] = creator
                    self._queue.move_to_end(run_id, last=False)
                    if str(exc) != self._start_error:   # once, not on every pass
                        log.error("run %s: cannot mark it RUNNING, it stays queued: %s",
                                  run_id, exc)
                        self._start_error = str(exc)
                    return
                self._start_error = ""
                # submit under the lock so cancel() never sees the run in neither place
                try:
                    spec = run.spec if self._worker_spec is None else self._worker_spec(run.spec)
                    handle = self.executor.submit(run_id, spec)
                except Exception as exc:  # noqa: BLE001 - fail this run, keep serving
                    log.exception("run %s: starting its worker", run_id)
                    self._finish(run_id, RunState.FAILED, reason=REASON_WORKER_START,
                                 message=f"could not start a worker: {exc}")
                    continue
                self._active[run_id] = _Active(run_id, handle, self._clock(), run.creator)
                self._live[run_id] = LiveRun(run_id)

    def _issue_cancels(self) -> None:
        now = self._clock()
        with self._lock:
            todo = []
            for a in self._active.values():
                if a.stopping:
                    continue
                if a.cancel_requested:
                    todo.append(a)
                elif (self.max_run_wall_time_s is not None
                      and now - a.started > self.max_run_wall_time_s):
                    self._settle(a.run_id, RunState.FAILED, REASON_WALL_TIME,
                                 f"wall time limit: the run took more than "
                                 f"{self.max_run_wall_time_s:g} s")
                    todo.append(a)
                else:
                    continue
                a.stopping = True
        for a in todo:   # may block for the grace period: outside the lock
            self.executor.cancel(a.handle)

    def _handle(self, msg: WorkerMessage | WorkerExit) -> None:
        with self._lock:
            a = self._active.get(msg.run_id)
            if a is None:
                return
            if isinstance(msg, WorkerExit):
                del self._active[msg.run_id]
                self._retire(msg.run_id)
                self._on_exit(a, msg)
                return
            if a.stopping and not a.cancel_requested:
                return   # already FAILED (wall time); late messages change nothing
            try:
                kind = msg.type
                if kind == "progress":
                    self._on_progress(msg.run_id, msg.body)
                elif kind == "series":
                    self._on_series(msg.run_id, msg.body)
                elif kind == "report":
                    self._on_report(msg.run_id, msg.body)
                elif kind == "result" and a.store_error:
                    return   # a piece is missing: never SUCCEEDED; _on_exit ends it FAILED
                elif kind == "result":
                    self._on_result(msg.run_id, msg.body)
                elif kind == "error":
                    self._on_error(msg.run_id, msg.body)
            except StoreError as exc:
                a.store_error = str(exc)
                log.exception("run %s: storing %s", msg.run_id, msg.body.get("type"))

    def _on_exit(self, a: _Active, exit: WorkerExit) -> None:
        if a.run_id in self._unsettled:
            return   # its end is decided already; the write is pending
        run = self.store.get_run(a.run_id)
        if run.state.terminal:
            return
        if a.cancel_requested:
            self._settle(a.run_id, RunState.CANCELLED)
        elif exit.completed:   # it answered, but storing the answer failed (logged)
            self._settle(a.run_id, RunState.FAILED, REASON_STORE_ERROR,
                         "the run ended but its results could not be stored"
                         + (f": {a.store_error}" if a.store_error else ""))
        else:
            self._settle(a.run_id, RunState.FAILED, REASON_WORKER_DIED,
                         f"worker died: {exit.describe()}")

    def _settle(self, run_id: str, state: RunState, reason: str = "",
                message: str = "") -> None:
        """End a run whose worker is gone or going; if the store cannot take the write now
        (disk full...), keep it in `_unsettled` for the pump to write again."""
        try:
            self._finish(run_id, state, reason=reason, message=message)
        except StorageError:
            log.exception("run %s: cannot store its end (%s); trying again", run_id,
                          state.value)
            self._unsettled[run_id] = (state, reason, message)

    def _retry_unsettled(self) -> None:
        """Write the pending ends of `_unsettled`; those that still fail stay."""
        for run_id, (state, reason, message) in list(self._unsettled.items()):
            try:
                self._finish(run_id, state, reason=reason, message=message)
            except StorageError:
                continue
            except StoreError:   # gone, or already ended meanwhile: nothing to write
                log.exception("run %s: storing its end (%s)", run_id, state.value)
            del self._unsettled[run_id]

    def _on_progress(self, run_id: str, body: dict) -> None:
        progress = Progress(sim_time_s=body["sim_time_s"], fraction=body["fraction"],
                            events=body["events"], wall_s=body["wall_s"])
        row = body.get("row")
        with self._lock:
            live = self._live.get(run_id)
            if live is not None:
                live.sim_time_s = body["sim_time_s"]
                if body.get("snapshot") is not None:
                    live.snapshot = body["snapshot"]
                if body.get("kernel") is not None:
                    live.kernel = body["kernel"]
        with self._lock, self.store.transaction():
            if row is not None:   # the latest sampled row: the series grows while it runs
                self.store.merge_samples(run_id, [row])
            self.store.update_progress(run_id, progress)
            self._notify(run_id)

    def _on_series(self, run_id: str, body: dict) -> None:
        """A piece of a finished run's series (server.worker: "series" messages come before
        the result), one transaction each: other writes go between pieces. The rows sent
        with progress are rows of this series, so the pieces write them again at their
        final places."""
        self.store.put_samples(run_id, body["start"], body["rows"])

    def _on_report(self, run_id: str, body: dict) -> None:
        """A part of a finished run's trace or fault log (server.worker: "report" messages
        come before the result), one transaction each like the series pieces: a trace of
        10^6 lines (~150 MB) never holds other writes for more than one part. Parts are
        invisible until the result's transaction makes the run SUCCEEDED (only a SUCCEEDED
        run has a report), so a run that fails between them shows no half result."""
        self.store.put_report_part(run_id, body["name"], body["part"], body["text"])

    def _on_result(self, run_id: str, body: dict) -> None:
        reports = {report_name(k): v for k, v in body["files"].items()}
        for name in ("trace", "fault_log"):   # sent whole by callers that send no parts
            if name in body:
                reports[name] = body[name]
        if "histograms" in body:
            reports[REPORT_HISTOGRAMS] = json.dumps(body["histograms"])
        with self._lock:
            self._retire(run_id)
        with self._lock, self.store.transaction():
            self.store.put_reports(run_id, reports)
            self.store.update_progress(run_id, Progress(
                sim_time_s=body["sim_time_s"], fraction=1.0, events=body["events"],
                wall_s=body["wall_s"]))
            self.store.update_state(run_id, RunState.SUCCEEDED, summary=body["summary"])
            self._notify(run_id)

    def _on_error(self, run_id: str, body: dict) -> None:
        reason = {"ConfigError": REASON_INVALID_SPEC,
                  "TraceParseError": REASON_INVALID_TRACE}.get(body["error_type"],
                                                              REASON_SIMULATION_ERROR)
        message = (f"{body['error_type']}: {body['message']}"
                   if reason == REASON_SIMULATION_ERROR else body["message"])
        with self._lock:
            self._retire(run_id)
        with self._lock, self.store.transaction():
            self.store.append_event(run_id, EVENT_ERROR, {
                "error_type": body["error_type"], "message": body["message"],
                "fields": body["fields"], "traceback": body.get("traceback", "")})
            self.store.update_state(run_id, RunState.FAILED, error_reason=reason,
                                    error_message=message)
            self._notify(run_id)
