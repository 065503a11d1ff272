"""RunChanges: wake WatchRun streams when their run changes, without a thread per stream.

The run manager writes from its own threads; a watch stream lives on the server's asyncio
loop. Waiting for the manager's condition in a thread (`RunManager.wait_events` via
`asyncio.to_thread`) would hold one thread of the loop's small default pool per open
stream, so a few streams would starve every other RPC. Instead the manager calls
`notify(run_id)` after each change it stores (`RunManager.add_listener`), from any
thread; that bumps the run's version on the loop and wakes the coroutines waiting on it.

A watcher takes `version(run_id)` before it reads the store and then `wait`s for the
version to move: a change stored between the read and the wait has already bumped it, so
no wake-up is lost. Versions are kept only for runs someone is `watching`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class RunChanges:
    """Per-run change counters on one asyncio loop; `notify` may be called from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refs: dict[str, int] = {}          # run id -> open streams watching it
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the watchers run on (the first call wins)."""
        if self._loop is None:
            self._loop = loop

    def notify(self, run_id: str) -> None:
        """From any thread: a change of `run_id` was stored."""
        loop = self._loop
        if loop is None:
            return   # no stream has been opened yet
        try:
            loop.call_soon_threadsafe(self._bump, run_id)
        except RuntimeError:   # the loop is closed: nobody is waiting any more
            pass

    def close(self) -> None:
        """From any thread (shutting down): wake every waiter; later waits return at once."""
        self._closed = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake_all)
        except RuntimeError:
            pass

    @contextlib.contextmanager
    def watching(self, run_id: str) -> Iterator[None]:
        """Keep the version of `run_id` while the block runs (on the loop)."""
        self._refs[run_id] = self._refs.get(run_id, 0) + 1
        try:
            yield
        finally:
            self._refs[run_id] -= 1
            if not self._refs[run_id]:
                del self._refs[run_id]
                self._versions.pop(run_id, None)

    def version(self, run_id: str) -> int:
        return self._versions.get(run_id, 0)

    async def wait(self, run_id: str, version: int, timeout_s: float) -> bool:
        """Until the version of `run_id` differs from `version`, or `timeout_s` has passed,
        or `close()`; whether it changed. Call inside `watching(run_id)`."""
        if self.version(run_id) != version or self._closed:
            return self.version(run_id) != version
        fut = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(run_id, set())
        waiters.add(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout_s))
        except TimeoutError:
            pass
        finally:
            waiters.discard(fut)
            if not waiters and self._waiters.get(run_id) is waiters:
                del self._waiters[run_id]
        return self.version(run_id) != version

    def _bump(self, run_id: str) -> None:
        if run_id not in self._refs:
            return
        self._versions[run_id] = self._versions.get(run_id, 0) + 1
        for fut in self._waiters.get(run_id, ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
