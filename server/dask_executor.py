"""DaskExecutor: the `Executor` protocol (server/executor.py) on a Dask distributed cluster.

For labs with a cluster (`--executor dask --dask-scheduler ADDRESS`). Each run is one task
on the cluster running the same worker code as a worker process (`server.worker.execute`:
spec -> config -> `sim.run.run`), so the messages are the ones `ProcessExecutor` hands
back and the run manager needs no changes:

- progress dicts go back through a `distributed.Queue` named per run (the scheduler holds
  it; a put from the task returns once the scheduler has it, so when the task's future is
  done every progress message is already in the queue and is drained before the result);
- the final "result" or "error" dict is the task's return value (the future's result);
- exactly one `WorkerExit` ends each run: completed after its result or error; cancelled
  after `cancel()`; otherwise a `DaskWorkerExit` whose `describe()` says what Dask
  reported (a lost worker's `KilledWorker`, an exception from the task, a cancellation by
  the scheduler...), which the manager turns into FAILED "worker died: ...".

Cancel is `future.cancel()` plus a `distributed.Event` named per run: Dask cannot stop a
running task's thread, so the task checks that event at each progress step and stops
there (one twentieth of the simulated duration at most, by default). The run's
`WorkerExit(cancelled=True)` comes from the next `poll()` at once, as with processes.

`free_slots()` is `max_workers` (the constructor's, else the cluster's total thread count,
re-read at most once a second) minus the runs in flight. `pid()` is None: the task runs
on some worker of the cluster, not in a process of ours. `alive()` is the client's status.

The cluster's workers must be able to import `server` and `sim` (compactsim installed in
their environment). Called from one thread only, like every executor.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compactsim.server import worker
from compactsim.server.executor import Message, WorkerExit, WorkerMessage

POLL_STEP_S = 0.02          # how often poll() looks again while nothing has arrived
NTHREADS_TTL_S = 1.0        # how long the cluster's thread count is reused
RESULT_TIMEOUT_S = 60.0     # fetching a finished task's result from its worker


@dataclass(frozen=True, slots=True)
class DaskWorkerExit(WorkerExit):
    """A WorkerExit whose cause is Dask's word rather than an exit code."""

    reason: str = ""

    def describe(self) -> str:
        return self.reason or WorkerExit.describe(self)


class RunCancelled(Exception):
    """Raised inside a task when its run's cancel event is set: stops the simulation."""


class _TaskSender:
    """The `conn` server.worker.execute sends on, inside the task: progress into the run's
    queue, the final message kept to be the task's return value."""

    def __init__(self, queue_name: str, event_name: str):
        from distributed import Event, Queue

        self.queue = Queue(queue_name)
        self.event = Event(event_name)
        self.final: dict | None = None
        self.cancelled = False

    def send(self, obj: Any) -> None:
        if self.cancelled or self.event.is_set():
            self.cancelled = True
            raise RunCancelled("the run was cancelled")
        if obj.get("type") in ("progress", "series", "report"):
            self.queue.put(obj)
        else:
            self.final = obj

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.event.clear()   # removes it from the scheduler
        with contextlib.suppress(Exception):
            self.queue.close()


def run_task(run_id: str, spec: Mapping[str, Any], queue_name: str, event_name: str,
             progress_steps: int = worker.DEFAULT_PROGRESS_STEPS) -> dict:
    """What one run's task does on a Dask worker: `server.worker.execute`, with progress
    into the queue `queue_name`; returns the "result" or "error" message."""
    sender = _TaskSender(queue_name, event_name)
    try:
        worker.execute(run_id, spec, sender, progress_steps)
    finally:
        sender.close()
    if sender.final is None:   # execute always ends with one, or raises
        raise RuntimeError(f"run {run_id}: the worker sent no result")
    return sender.final


@dataclass(eq=False)
class DaskRun:
    """A run's handle: its future, its progress queue, its cancel event's name."""

    run_id: str
    future: Any                       # distributed.Future
    queue: Any                        # distributed.Queue (client side)
    event_name: str
    cancelled: bool = False

    @property
    def key(self) -> str:
        return self.future.key


class DaskExecutor:
    """Runs as tasks on a Dask distributed cluster.

    `address`: the scheduler's ("tcp://host:8786"); with neither it nor `client`, a
    `distributed.Client()` is made the default way (dask's configured scheduler, else a
    local cluster). `client`: an existing `distributed.Client`, used as is and not closed
    by `shutdown()` (a client made here is). `max_workers`: at most this many runs at once;
    default the cluster's thread count.
    """

    def __init__(self, address: str | None = None, *, client: Any = None,
                 max_workers: int | None = None,
                 progress_steps: int = worker.DEFAULT_PROGRESS_STEPS):
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if client is not None and address is not None:
            raise ValueError("give either a scheduler address or a client, not both")
        if client is None:
            from distributed import Client
            client = Client(address, set_as_default=False)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self._max_workers = max_workers
        self._progress_steps = progress_steps
        self._runs: dict[int, DaskRun] = {}       # by id(handle)
        self._exits: list[Message] = []           # WorkerExits due from the next poll()
        self._nthreads = 0
        self._nthreads_at = float("-inf")
        self._closed = False

    # -- capacity and health ------------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        if self._max_workers is not None:
            return self._max_workers
        return self.cluster_threads()

    def cluster_threads(self) -> int:
        """Total worker threads in the cluster (0 while it has no workers)."""
        now = time.monotonic()
        if now - self._nthreads_at >= NTHREADS_TTL_S and self.alive():
            try:
                self._nthreads = sum(self.client.nthreads().values())
            except Exception:   # noqa: BLE001 - scheduler unreachable: keep the last count
                pass
            self._nthreads_at = now
        return self._nthreads

    def free_slots(self) -> int:
        if not self.alive():
            return 0
        return max(0, self.max_workers - len(self._runs))

    def alive(self) -> bool:
        return not self._closed and self.client.status == "running"

    def pid(self, handle: DaskRun) -> int | None:
        return None

    # -- runs -----------------------------------------------------------------------------------

    def submit(self, run_id: str, spec: Mapping[str, Any]) -> DaskRun:
        from distributed import Queue

        if self._closed:
            raise RuntimeError("executor is shut down")
        if not self.alive():
            raise RuntimeError(f"the Dask client is {self.client.status}")
        if self.free_slots() <= 0:
            raise RuntimeError(f"all {self.max_workers} cluster threads are busy")
        tag = f"{run_id}-{uuid.uuid4().hex[:12]}"
        queue = Queue(f"compactsim-progress-{tag}", client=self.client)
        event_name = f"compactsim-cancel-{tag}"
        try:
            future = self.client.submit(run_task, run_id, dict(spec), queue.name, event_name,
                                        self._progress_steps, key=f"compactsim-run-{tag}",
                                        pure=False, retries=0)
        except BaseException:
            with contextlib.suppress(Exception):
                queue.close()
            raise
        h = DaskRun(run_id, future, queue, event_name)
        self._runs[id(h)] = h
        return h

    def cancel(self, handle: DaskRun) -> None:
        if id(handle) not in self._runs or handle.cancelled or handle.future.done():
            return   # gone, already cancelled, or finished first (its result follows)
        from distributed import Event

        handle.cancelled = True
        with contextlib.suppress(Exception):
            Event(handle.event_name, client=self.client).set()   # stops a running task
        with contextlib.suppress(Exception):
            handle.future.cancel()                               # drops a waiting one

    def _drain(self, h: DaskRun, out: list[Message]) -> None:
        for body in h.queue.get(batch=True):
            out.append(WorkerMessage(h.run_id, body))

    def _end(self, key: int, h: DaskRun, exit: WorkerExit, out: list[Message]) -> None:
        del self._runs[key]
        with contextlib.suppress(Exception):
            h.queue.close()
        out.append(exit)

    def _collect_one(self, key: int, h: DaskRun, out: list[Message]) -> None:
        if h.cancelled:
            self._end(key, h, WorkerExit(h.run_id, None, False, True), out)
            return
        done = h.future.done()          # before draining: then the queue holds everything
        self._drain(h, out)
        if not done:
            return
        status = h.future.status
        if status == "finished":
            try:
                body = h.future.result(timeout=RESULT_TIMEOUT_S)
            except Exception as exc:   # noqa: BLE001 - lost with its worker, say so
                self._end(key, h, _failed(h, "could not fetch the run's result", exc), out)
                return
            out.append(WorkerMessage(h.run_id, body))
            self._end(key, h, WorkerExit(h.run_id, None, True, False), out)
        elif status == "error":
            self._end(key, h, _failed(h, "the task failed", h.future.exception()), out)
        else:   # cancelled by the cluster (scheduler restart, lost connection...)
            try:
                h.future.result(timeout=0)
                cause: BaseException | None = None
            except BaseException as e:  # noqa: BLE001 - FutureCancelledError carries why
                cause = e
            self._end(key, h, _failed(h, f"the task was {status} by the cluster", cause), out)

    def poll(self, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            out, self._exits = self._exits, []
            if self.client.status in ("closing", "closed"):
                for key, h in list(self._runs.items()):
                    self._end(key, h, DaskWorkerExit(
                        h.run_id, None, False, h.cancelled,
                        f"the Dask client is {self.client.status}"), out)
            for key, h in list(self._runs.items()):
                try:
                    self._collect_one(key, h, out)
                except Exception:
                    if not self.alive():
                        continue
                    raise
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            time.sleep(min(left, POLL_STEP_S))

    def shutdown(self) -> None:
        """Cancel every run (each gets its WorkerExit from poll()) and close a client made
        here; a client passed in stays open."""
        if self._closed:
            return
        for h in list(self._runs.values()):
            self.cancel(h)
        for key, h in list(self._runs.items()):
            if h.cancelled:
                self._end(key, h, WorkerExit(h.run_id, None, False, True), self._exits)
        self._closed = True
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _failed(h: DaskRun, what: str, exc: BaseException | None) -> DaskWorkerExit:
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    return DaskWorkerExit(h.run_id, None, False, False,
                          f"{what} ({detail})" if detail else what)
