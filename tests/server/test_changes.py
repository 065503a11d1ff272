"""RunChanges (wake-ups of watch streams on the asyncio loop) and the run manager's
listeners that feed it, with a real SQLite store and real worker processes."""

import asyncio
import threading
import time

import pytest

from compactsim.codec.runstate import RunState
from compactsim.server.changes import RunChanges
from compactsim.server.executor import ProcessExecutor
from compactsim.server.manager import RunManager
from compactsim.server.store import RunStore

TINY = {"seed": 3, "duration": "0.2s", "machine": {"memory": "64MiB", "cpus": 1},
        "workload": [{"name": "anon", "kind": "anon", "rate": 200, "batch": 4}],
        "sampling": {"interval": "0.1s"}}


def later(delay_s, fn, *args):
    t = threading.Timer(delay_s, fn, args)
    t.start()
    return t


def test_notify_from_another_thread_wakes_only_that_runs_waiter():
    async def main():
        ch = RunChanges()
        ch.attach(asyncio.get_running_loop())
        with ch.watching("a"), ch.watching("b"):
            va, vb = ch.version("a"), ch.version("b")
            later(0.1, ch.notify, "a")
            t = time.monotonic()
            woken_a, woken_b = await asyncio.gather(ch.wait("a", va, 5.0),
                                                    ch.wait("b", vb, 0.5))
            return woken_a, woken_b, time.monotonic() - t

    woken_a, woken_b, took = asyncio.run(main())
    assert woken_a is True
    assert woken_b is False          # "b" timed out: nothing changed it
    assert 0.45 <= took < 3.0


def test_a_change_between_version_and_wait_is_not_lost():
    async def main():
        ch = RunChanges()
        loop = asyncio.get_running_loop()
        ch.attach(loop)
        with ch.watching("a"):
            v = ch.version("a")
            ch.notify("a")                   # stored after the watcher's read...
            await asyncio.sleep(0.05)        # ...and applied before it waits
            t = time.monotonic()
            woken = await ch.wait("a", v, 5.0)
            return woken, time.monotonic() - t

    woken, took = asyncio.run(main())
    assert woken is True and took < 0.5


def test_unwatched_runs_keep_no_state_and_close_ends_waits():
    async def main():
        ch = RunChanges()
        ch.attach(asyncio.get_running_loop())
        ch.notify("x")
        await asyncio.sleep(0.05)
        unwatched = ch.version("x")
        with ch.watching("a"):
            v = ch.version("a")
            later(0.1, ch.close)
            t = time.monotonic()
            woken = await ch.wait("a", v, 10.0)
            took = time.monotonic() - t
            t = time.monotonic()
            await ch.wait("a", v, 10.0)      # after close: at once
            took_after = time.monotonic() - t
        return unwatched, woken, took, took_after, ch._versions, ch._refs, ch._waiters

    unwatched, woken, took, took_after, versions, refs, waiters = asyncio.run(main())
    assert unwatched == 0
    assert woken is False and took < 5.0 and took_after < 0.5
    assert versions == {} and refs == {} and waiters == {}


@pytest.fixture
def manager(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    m = RunManager(store, ProcessExecutor(1, cancel_grace_s=1.0), max_queue=10)
    yield m
    m.shutdown()
    store.close()


def test_manager_listeners_hear_every_stored_change_of_a_run(manager):
    heard: list[str] = []
    manager.add_listener(heard.append)
    run = manager.submit(TINY)
    queued = manager.submit(TINY)
    manager.cancel(queued.id)
    done = manager.wait_for_state(run.id, timeout_s=60)
    assert done.state is RunState.SUCCEEDED
    events = manager.store.events_after(run.id)
    # a notification for the run at or after each of its stored events (QUEUED, RUNNING,
    # progress..., SUCCEEDED); none for runs that did not change
    assert heard.count(run.id) >= len(events) - 1
    assert heard.count(queued.id) >= 2      # created, cancelled
    assert set(heard) == {run.id, queued.id}
