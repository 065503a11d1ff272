"""RunManager with a real SQLite store and real worker processes running tiny specs."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compactsim.codec.runstate import RunState
from compactsim.server.executor import ProcessExecutor
from compactsim.server.manager import (
    EVENT_ERROR,
    REASON_INVALID_SPEC,
    REASON_WALL_TIME,
    REASON_WORKER_DIED,
    SHUTDOWN_MESSAGE,
    ManagerClosed,
    QueueLimit,
    RunManager,
)
from compactsim.server.store import (
    INTERRUPTED_REASON,
    NewRun,
    NotFound,
    RunStore,
    StoreFull,
    WrongState,
)
from compactsim.server.store import sweeps as store_sweeps

REPO = Path(__file__).resolve().parents[2]

TINY = {"seed": 3, "duration": "0.5s", "machine": {"memory": "64MiB", "cpus": 1},
        "workload": [{"name": "anon", "kind": "anon", "rate": 200, "batch": 4}],
        "sampling": {"interval": "0.1s"}}
# Paced at one simulated second per wall second: 10 s of wall time, progress each 0.5 s;
# the tests cancel or kill it long before.
LONG = {**TINY, "duration": "10s", "pace": 1.0}


def states(store, run_id):
    return [e.payload["state"] for e in store.events_after(run_id) if e.type == "state"]


def gone(pid, timeout=5.0):
    """Whether process `pid` has exited (and been reaped) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.db")
    yield s
    s.close()


@pytest.fixture
def make_manager(store):
    managers = []

    def make(workers=1, **kw):
        kw.setdefault("max_queue", 10)
        m = RunManager(store, ProcessExecutor(workers, cancel_grace_s=1.0), **kw)
        managers.append(m)
        return m

    yield make
    for m in managers:
        m.shutdown()


def running_pid(manager, run_id, timeout=10.0):
    manager.wait_for_state(run_id, RunState.RUNNING, RunState.CANCELLING, timeout_s=timeout)
    pid = manager.running()[run_id]
    assert pid is not None and not gone(pid, 0)
    return pid


def test_run_succeeds_with_gapless_events_progress_samples_and_reports(make_manager, store):
    m = make_manager()
    run = m.submit(TINY, display_name="tiny")
    assert run.state is RunState.QUEUED
    done = m.wait_for_state(run.id, timeout_s=20)
    assert done.state is RunState.SUCCEEDED, done.error_message

    events = store.events_after(run.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(store, run.id) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    progress = [e.payload for e in events if e.type == "progress"]
    assert len(progress) >= 5
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1]["events"] > 0 and progress[-1]["sim_time_s"] == pytest.approx(0.5)
    # every snapshot counts the SimPy events so far (not only the final one)
    assert all(p["events"] > 0 for p in progress)
    assert [p["events"] for p in progress] == sorted(p["events"] for p in progress)
    # progress comes between RUNNING and SUCCEEDED
    kinds = [e.type if e.type != "state" else e.payload["state"] for e in events]
    assert kinds.index("RUNNING") < kinds.index("progress") < kinds.index("SUCCEEDED")

    assert done.summary["duration_s"] == 0.5 and done.summary["seed"] == 3
    assert done.progress.fraction == 1.0
    samples, _ = store.list_samples(run.id)
    assert [s.sim_time_s for s in samples] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    reports = store.get_reports(run.id)
    assert {"proc/buddyinfo", "proc/vmstat", "trace", "fault_log"} <= set(reports)
    assert "Node 0, zone   Normal" in reports["proc/buddyinfo"]
    histograms = json.loads(reports["histograms"])
    assert histograms and all(sum(c for _, c in h["buckets"]) == h["n"] > 0
                              for h in histograms.values())

    # a watcher waiting past the last event times out empty rather than inventing one
    assert m.wait_events(run.id, events[-1].sequence, timeout_s=0.2) == []


def test_a_running_run_has_live_samples_and_an_event_count(make_manager, store):
    m = make_manager()
    run = m.submit({**LONG, "duration": "2s", "pace": 2.0})   # 1 s of wall time
    m.wait_for_state(run.id, RunState.RUNNING, timeout_s=10)
    deadline = time.monotonic() + 10
    while True:
        rec = store.get_run(run.id)
        samples, _ = store.list_samples(run.id)
        if rec.state is RunState.RUNNING and samples and rec.progress.events > 0:
            break
        assert rec.state is RunState.RUNNING, rec.state
        assert time.monotonic() < deadline, "no live samples while running"
        time.sleep(0.02)
    assert samples[-1].sim_time_s <= rec.progress.sim_time_s
    done = m.wait_for_state(run.id, timeout_s=20)
    assert done.state is RunState.SUCCEEDED
    times = [s.sim_time_s for s in store.list_samples(run.id)[0]]
    # the final series once, in order, live rows not repeated
    assert times == pytest.approx([i / 10 for i in range(21)])


class Clock:
    """time.monotonic, plus what a test adds."""

    def __init__(self):
        self.extra = 0.0

    def __call__(self):
        return time.monotonic() + self.extra


def test_an_ended_run_stays_a_target_with_its_final_state_for_a_while(make_manager, store,
                                                                       monkeypatch):
    clock = Clock()
    m = make_manager(clock=clock, target_linger_s=30.0)
    run = m.submit(TINY)
    done = m.wait_for_state(run.id, timeout_s=20)
    assert done.state is RunState.SUCCEEDED
    (live,) = m.targets().values()
    assert live.run_id == run.id and live.ended
    snap = m.latest_snapshot(run.id)
    # the state at the end: the summary's
    assert snap["time_s"] == done.summary["sim_time_s"] == 0.5
    assert {k: snap["vmstat"][k] for k in done.summary["vmstat"] if k in snap["vmstat"]} \
        == {k: v for k, v in done.summary["vmstat"].items() if k in snap["vmstat"]}
    assert snap["wasted_migrations"] == done.summary["compaction"]["wasted_migrations"]
    clock.extra += 29.0
    assert run.id in m.targets()
    clock.extra += 1.5
    assert m.targets() == {} and m.latest_snapshot(run.id) is None
    # a burst of short runs keeps the newest MAX_LINGERING
    monkeypatch.setattr("compactsim.server.manager.MAX_LINGERING", 2)
    ids = [m.submit(TINY).id for _ in range(3)]
    for rid in ids:
        m.wait_for_state(rid, timeout_s=20)
    assert sorted(m.targets()) == sorted(ids[1:])


def test_delete_finished_running_and_unknown(make_manager, store):
    m = make_manager(workers=1)
    done = m.submit(TINY)
    assert m.wait_for_state(done.id, timeout_s=20).state is RunState.SUCCEEDED
    deleted = m.delete(done.id)
    assert deleted.deleted and deleted.state is RunState.SUCCEEDED
    assert m.delete(done.id).delete_time_ns == deleted.delete_time_ns   # idempotent
    running = m.submit(LONG)
    running_pid(m, running.id)
    with pytest.raises(WrongState, match="force"):
        m.delete(running.id)
    assert not store.get_run(running.id).deleted
    gone_run = m.delete(running.id, force=True)
    assert gone_run.deleted and gone_run.state is RunState.CANCELLED
    assert [e.type for e in store.events_after(running.id)][-1] == "deleted"
    with pytest.raises(NotFound):
        m.delete("nosuchrun")


def test_bad_spec_fails_the_run_naming_each_field(make_manager, store):
    m = make_manager()
    bad = {**TINY, "duration": "-1s", "machine": {"memory": "64MiB", "cpus": 0}}
    run = m.submit(bad)
    done = m.wait_for_state(run.id, timeout_s=20)
    assert done.state is RunState.FAILED
    assert done.error_reason == REASON_INVALID_SPEC
    assert "duration" in done.error_message and "machine.cpus" in done.error_message
    (err,) = [e.payload for e in store.events_after(run.id) if e.type == EVENT_ERROR]
    assert err["error_type"] == "ConfigError"
    assert {f["path"] for f in err["fields"]} == {"duration", "machine.cpus"}
    assert states(store, run.id) == ["QUEUED", "RUNNING", "FAILED"]


def test_cancel_queued_and_running(make_manager, store):
    m = make_manager(workers=1)
    first = m.submit(LONG)
    second = m.submit(TINY)
    pid = running_pid(m, first.id)
    assert m.queued() == [second.id]

    assert m.cancel(second.id).state is RunState.CANCELLED      # at once
    assert m.queued() == []
    assert m.cancel(first.id).state is RunState.CANCELLING
    done = m.wait_for_state(first.id, timeout_s=10)
    assert done.state is RunState.CANCELLED
    assert gone(pid)
    assert states(store, first.id) == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]
    assert states(store, second.id) == ["QUEUED", "CANCELLED"]
    with pytest.raises(WrongState):
        m.cancel(first.id)
    # the freed slot takes new work
    assert m.wait_for_state(m.submit(TINY).id, timeout_s=20).state is RunState.SUCCEEDED


def test_killed_worker_fails_its_run_and_the_next_run_succeeds(make_manager, store):
    m = make_manager(workers=1)
    victim = m.submit(LONG)
    after = m.submit(TINY)
    pid = running_pid(m, victim.id)
    os.kill(pid, signal.SIGKILL)
    done = m.wait_for_state(victim.id, timeout_s=10)
    assert done.state is RunState.FAILED
    assert done.error_reason == REASON_WORKER_DIED
    assert done.error_message == "worker died: signal 9 (SIGKILL)"
    assert m.wait_for_state(after.id, timeout_s=20).state is RunState.SUCCEEDED
    assert m.healthy()


def test_wall_time_limit_stops_the_worker_and_fails_the_run(make_manager, store):
    m = make_manager(workers=1, max_run_wall_time_s=1.5)
    run = m.submit(LONG)
    pid = running_pid(m, run.id)
    t0 = time.monotonic()
    done = m.wait_for_state(run.id, timeout_s=10)
    assert done.state is RunState.FAILED
    assert done.error_reason == REASON_WALL_TIME
    assert done.error_message.startswith("wall time limit")
    assert time.monotonic() - t0 < 5
    assert gone(pid)
    assert 0 < done.progress.fraction < 0.5     # stopped long before its 10 s


def test_full_queue_refuses_without_storing(make_manager, store):
    m = make_manager(workers=1, max_queue=1)
    running = m.submit(LONG)
    running_pid(m, running.id)       # out of the queue, on the worker
    waiting = m.submit(TINY)
    with pytest.raises(QueueLimit) as e:
        m.submit(TINY)
    [limit] = e.value.exceeded
    assert limit.subject == "server" and limit.retry
    assert "1 runs waiting + 1 new > 1" in limit.description
    runs, _ = store.list_runs()
    assert {r.id for r in runs} == {running.id, waiting.id}
    m.cancel(waiting.id)
    m.submit(TINY)                    # room again
    assert len(m.queued()) == 1


def sweep_runs(n, creator="", pad=0):
    """`n` runs of a sweep of TINY over seeds (`pad` characters of provenance each)."""
    return [NewRun(spec={**TINY, "seed": i}, creator=creator, labels={"sweep_point": str(i)},
                   provenance={"pad": "x" * pad}) for i in range(n)]


def test_sweep_beyond_the_queue_room_stores_nothing(make_manager, store):
    # not started: nothing leaves the queue, so its room is exactly what the test leaves
    m = make_manager(max_queue=4, max_queued_per_user=3, start=False)
    notified = []
    m.add_listener(notified.append)
    first = m.submit(TINY, creator="alice")
    before = (store.list_runs()[0], m.queued(), list(notified))

    with pytest.raises(QueueLimit) as e:           # 1 waiting + 4 > 4, and 4 > bob's 3
        m.submit_sweep(TINY, {}, sweep_runs(4, "bob"), creator="bob", sweep_id="too-big")
    server, bob = e.value.exceeded
    assert server.subject == "server" and "1 runs waiting + 4 new > 4" in server.description
    assert bob.subject == "user:bob" and "'bob' has 0 waiting + 4 new > 3" in bob.description
    with pytest.raises(QueueLimit) as e:           # alice: 1 waiting + 3 > 3 of hers
        m.submit_sweep(TINY, {}, sweep_runs(3, "alice"), creator="alice", sweep_id="hers")
    [limit] = e.value.exceeded
    assert limit.subject == "user:alice"
    assert "'alice' has 1 waiting + 3 new > 3" in limit.description
    for refused in ("too-big", "hers"):
        with pytest.raises(NotFound):
            store.get_sweep(refused)
    assert store.list_sweeps() == []
    assert (store.list_runs()[0], m.queued(), notified) == before

    # what fits is stored and queued whole, in order, and each run is announced
    sweep, runs = m.submit_sweep(TINY, {"seeds": 3}, sweep_runs(3, "bob"), creator="bob",
                                 sweep_id="fits")
    assert sweep.id == "fits" and [r.sweep_id for r in runs] == ["fits"] * 3
    assert [r.id for r in store.sweep_runs("fits")] == [r.id for r in runs]
    assert all(store.get_run(r.id).state is RunState.QUEUED for r in runs)
    assert m.queued() == [first.id] + [r.id for r in runs]
    assert m.queued_by("bob") == 3 and notified[len(before[2]):] == [r.id for r in runs]
    with pytest.raises(QueueLimit):                # now full: one more is refused too
        m.submit_sweep(TINY, {}, sweep_runs(1, "carol"), creator="carol")
    assert len(store.list_runs()[0]) == 4 and len(store.list_sweeps()) == 1


def test_sweep_whose_store_write_fails_midway_stores_nothing(tmp_path, monkeypatch):
    # a store on a "disk" of 256 KiB: a sweep of ten 40 KB runs fills it midway
    small = RunStore(tmp_path / "small.db", max_bytes=256 * 1024)
    m = RunManager(small, ProcessExecutor(1), max_queue=20, start=False)
    notified = []
    m.add_listener(notified.append)
    inserted = []
    insert = store_sweeps.insert_run

    def counting_insert(c, new, sweep_id, now):
        inserted.append(new.spec["seed"])
        return insert(c, new, sweep_id, now)

    monkeypatch.setattr(store_sweeps, "insert_run", counting_insert)
    try:
        with pytest.raises(StoreFull):
            m.submit_sweep(TINY, {}, sweep_runs(10, pad=40_000), sweep_id="huge")
        assert len(inserted) > 1               # some runs were written before it failed
        with pytest.raises(NotFound):
            small.get_sweep("huge")
        assert small.list_sweeps() == [] and small.list_runs()[0] == []
        assert m.queued() == [] and notified == []
        # the rollback left the room it had: a sweep that fits goes in whole
        sweep, runs = m.submit_sweep(TINY, {}, sweep_runs(2, pad=40_000), sweep_id="fits")
        assert [r.id for r in small.sweep_runs("fits")] == [r.id for r in runs]
        assert m.queued() == [r.id for r in runs] == notified
    finally:
        m.shutdown()
        small.close()


def test_shutdown_marks_running_runs_keeps_queued_and_refuses_new(make_manager, store):
    m = make_manager(workers=1)
    running = m.submit(LONG)
    waiting = m.submit(TINY)
    pid = running_pid(m, running.id)
    m.shutdown()
    assert gone(pid)
    stopped = store.get_run(running.id)
    assert stopped.state is RunState.FAILED and stopped.interrupted
    assert (stopped.error_reason, stopped.error_message) == (INTERRUPTED_REASON,
                                                             SHUTDOWN_MESSAGE)
    assert store.get_run(waiting.id).state is RunState.QUEUED
    with pytest.raises(ManagerClosed):
        m.submit(TINY)


CRASHING_SERVER = textwrap.dedent("""
    import json, sys
    from compactsim.server.executor import ProcessExecutor
    from compactsim.server.manager import RunManager
    from compactsim.codec.runstate import RunState
    from compactsim.server.store import RunStore
    store = RunStore(sys.argv[1])
    m = RunManager(store, ProcessExecutor(1), max_queue=10)
    spec_long, spec_tiny = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    a = m.submit(spec_long)
    b = m.submit(spec_tiny)
    m.wait_for_state(a.id, RunState.RUNNING, timeout_s=20)
    m.wait_events(a.id, 2, timeout_s=20)   # some progress stored
    print(json.dumps({"a": a.id, "b": b.id, "worker": m.running()[a.id]}), flush=True)
    sys.stdin.read()                        # until the test kills us
""")


def test_restart_recovery(tmp_path):
    path = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SERVER, str(path),
                             json.dumps(LONG), json.dumps(TINY)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        ids = json.loads(proc.stdout.readline())
    finally:
        proc.kill()        # the crash: no shutdown, no flush
        proc.wait()
    with contextlib.suppress(ProcessLookupError):   # it may already have died of EPIPE
        os.kill(ids["worker"], signal.SIGKILL)

    store = RunStore(path)
    try:
        before = store.get_run(ids["a"])
        assert before.state is RunState.RUNNING and before.progress.fraction > 0
        m = RunManager(store, ProcessExecutor(1), max_queue=10)
        try:
            assert [r.id for r in m.recovered] == [ids["a"]]
            a = store.get_run(ids["a"])
            assert a.state is RunState.FAILED and a.interrupted
            assert a.error_reason == INTERRUPTED_REASON
            assert a.spec == json.loads(json.dumps(LONG))   # re-runnable from spec and seed
            events = store.events_after(ids["a"])
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert states(store, ids["a"]) == ["QUEUED", "RUNNING", "FAILED"]
            b = m.wait_for_state(ids["b"], timeout_s=20)
            assert b.state is RunState.SUCCEEDED
            assert states(store, ids["b"]) == ["QUEUED", "RUNNING", "SUCCEEDED"]
        finally:
            m.shutdown()
    finally:
        store.close()
