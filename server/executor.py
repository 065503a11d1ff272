"""Executors: where runs execute. The default gives each run its own OS process.

An `Executor` takes (run_id, spec), runs `server.worker.main` somewhere, and hands back
what the worker said as `WorkerMessage`s, ending each run with exactly one `WorkerExit`.
The run manager calls an executor from its one pump thread only, so executors need not be
thread-safe.

`ProcessExecutor` starts one process per run from the 'forkserver' context (with
`server.worker` and `sim` preloaded, so a run starts in milliseconds instead of paying the
imports again) or 'spawn' where there is no forkserver. Never 'fork': the manager process
has threads and an open SQLite connection. A run's process is separate from the caller's,
so a crash or a kill takes only that run. Cancel is SIGTERM, then SIGKILL after a grace
period.

Workers never outlive their server. Each holds the reading end of the executor's
*lifeline*, a pipe whose writing end only the server process has and never writes to; a
thread in the worker waits on it, and when the server is gone (killed with SIGKILL,
crashed: the kernel closes the writing end) it reads EOF and the worker exits at once, even
in the middle of a long simulation step. (The worker's parent is the forkserver, which
outlives the server for as long as any worker does, since each worker inherits the
forkserver's own keep-alive pipe: PR_SET_PDEATHSIG would not fire. And a worker that only
noticed at its next progress message, a broken pipe, could run on for minutes.)
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from compactsim.server import worker

DEFAULT_CANCEL_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class WorkerMessage:
    """A "progress", "result" or "error" message from a worker (server/worker.py)."""

    run_id: str
    body: dict

    @property
    def type(self) -> str:
        return self.body["type"]


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """The worker of `run_id` is gone.

    `completed`: it sent its result or error first. `cancelled`: cancel() stopped it. Else
    it died: `exitcode` is the process's (negative: killed by signal -exitcode).
    """

    run_id: str
    exitcode: int | None
    completed: bool
    cancelled: bool

    @property
    def signal(self) -> int | None:
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None

    def describe(self) -> str:
        """ "signal 9 (SIGKILL)", "exit code 3"... """
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "unknown"
            return f"signal {self.signal} ({name})"
        return f"exit code {self.exitcode}"


Message = WorkerMessage | WorkerExit


class Executor(Protocol):
    """Where runs execute. All methods are called from one thread."""

    max_workers: int

    def submit(self, run_id: str, spec: Mapping[str, Any]) -> Any:
        """Start the run now; returns a handle. The caller keeps within `free_slots()`."""

    def cancel(self, handle: Any) -> None:
        """Stop the run; its WorkerExit (cancelled=True) follows from poll()."""

    def poll(self, timeout: float) -> list[Message]:
        """Messages that arrived, waiting up to `timeout` seconds for the first."""

    def free_slots(self) -> int:
        """How many more runs submit() may start now."""

    def alive(self) -> bool:
        """Whether the executor can still run work (for health checks)."""

    def pid(self, handle: Any) -> int | None:
        """The OS process id of a run's worker, when there is one."""

    def shutdown(self) -> None:
        """Stop every run (each gets its WorkerExit) and release resources."""


@dataclass(eq=False)
class _Worker:
    run_id: str
    process: Any                      # multiprocessing.Process
    conn: Any                         # receiving end of the worker's pipe
    completed: bool = False           # sent its result or error
    cancelled: bool = False
    eof: bool = False
    pending: list[Message] = field(default_factory=list)


# The exit code of a worker whose server died (nobody reads it: its parent is gone too).
ORPHAN_EXIT_CODE = 70


def _exit_when_server_dies(lifeline: Any) -> None:
    """In the worker: block until the server's end of the lifeline closes, then exit."""
    try:
        lifeline.recv_bytes()   # the server never sends: this returns only by raising
    except (EOFError, OSError):
        pass
    os._exit(ORPHAN_EXIT_CODE)


def run_worker(run_id: str, spec: Mapping[str, Any], conn: Any, progress_steps: int,
               lifeline: Any) -> None:
    """Worker process entry point: `worker.main`, watched over by the lifeline thread."""
    threading.Thread(target=_exit_when_server_dies, args=(lifeline,), name="lifeline",
                     daemon=True).start()
    worker.main(run_id, spec, conn, progress_steps)


def _default_context() -> (multiprocessing.context.ForkServerContext
                            | multiprocessing.context.SpawnContext):
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["compactsim.server.worker", "compactsim.server.executor",
                                    "compactsim.sim.run", "compactsim.sim.config"])
        return ctx
    return multiprocessing.get_context("spawn")


class ProcessExecutor:
    """One OS process per run, at most `max_workers` at a time."""

    def __init__(self, max_workers: int, *, context: Any = None,
                 cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
                 progress_steps: int = worker.DEFAULT_PROGRESS_STEPS):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._ctx = context or _default_context()
        self._grace = cancel_grace_s
        self._progress_steps = progress_steps
        self._workers: dict[int, _Worker] = {}   # by id(handle)
        self._closed = False
        # Workers get the reading end; the writing end stays here, unused, until shutdown.
        self._lifeline: multiprocessing.connection.Connection
        self._lifeline_w: multiprocessing.connection.Connection
        self._lifeline, self._lifeline_w = self._ctx.Pipe(duplex=False)

    def submit(self, run_id: str, spec: Mapping[str, Any]) -> _Worker:
        if self._closed:
            raise RuntimeError("executor is shut down")
        if self.free_slots() <= 0:
            raise RuntimeError(f"all {self.max_workers} workers are busy")
        recv, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=run_worker, name=f"compactsim-run-{run_id}",
                                 args=(run_id, dict(spec), send, self._progress_steps,
                                       self._lifeline),
                                 daemon=True)
        proc.start()
        send.close()   # the child holds the only sending end: EOF when it exits
        w = _Worker(run_id, proc, recv)
        self._workers[id(w)] = w
        return w

    def cancel(self, handle: _Worker) -> None:
        if id(handle) not in self._workers or handle.process.exitcode is not None:
            return
        handle.cancelled = True
        handle.process.terminate()
        handle.process.join(self._grace)
        if handle.process.exitcode is None:
            handle.process.kill()
            handle.process.join()

    def pid(self, handle: _Worker) -> int | None:
        return handle.process.pid

    def free_slots(self) -> int:
        return self.max_workers - len(self._workers)

    def alive(self) -> bool:
        return not self._closed

    def _drain(self, w: _Worker, out: list[Message]) -> None:
        """Read everything the worker has sent so far (stops at EOF)."""
        while not w.eof:
            try:
                if not w.conn.poll():
                    return
                body = w.conn.recv()
            except (EOFError, OSError):
                w.eof = True
                return
            if not w.cancelled:
                out.append(WorkerMessage(w.run_id, body))
            if body.get("type") in ("result", "error"):
                w.completed = True

    def poll(self, timeout: float) -> list[Message]:
        out: list[Message] = []
        if not self._workers:
            time.sleep(timeout)
            return out
        waitables = [w.conn for w in self._workers.values() if not w.eof]
        waitables += [w.process.sentinel for w in self._workers.values()]
        multiprocessing.connection.wait(waitables, timeout)
        for key, w in list(self._workers.items()):
            self._drain(w, out)
            if w.process.exitcode is None and not w.eof:
                continue
            if not w.eof:
                # exited: whatever it sent is already in the pipe; read it to the end
                w.process.join()
                while not w.eof:
                    self._drain(w, out)
                    if not w.eof and not w.conn.poll(0.5):
                        break   # a grandchild holds the pipe open; stop waiting
            w.process.join()
            w.conn.close()
            del self._workers[key]
            out.append(WorkerExit(w.run_id, w.process.exitcode, w.completed and not w.cancelled,
                                  w.cancelled))
        return out

    def shutdown(self) -> None:
        for w in list(self._workers.values()):
            self.cancel(w)
        if not self._closed:
            self._lifeline.close()
            self._lifeline_w.close()
        self._closed = True
