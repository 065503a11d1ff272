"""DaskExecutor on an in-process Dask cluster: real tasks running server.worker's code."""

import time

import distributed
import pytest

from compactsim.codec.runstate import RunState
from compactsim.server import dask_executor
from compactsim.server.dask_executor import DaskExecutor, DaskWorkerExit
from compactsim.server.executor import WorkerExit, WorkerMessage
from compactsim.server.manager import REASON_WORKER_DIED, RunManager
from compactsim.server.store import RunStore

TINY = {"seed": 3, "duration": "0.3s", "machine": {"memory": "64MiB", "cpus": 1},
        "workload": [{"name": "anon", "kind": "anon", "rate": 200, "batch": 4}],
        "sampling": {"interval": "0.1s"}}
# one simulated second per wall second: lasts 10 s unless cancelled
LONG = {**TINY, "duration": "10s", "pace": 1.0}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                                  dashboard_address=None) as c:
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def executor(client):
    ex = DaskExecutor(client=client)
    yield ex
    ex.shutdown()


def collect(ex, run_id, timeout=30.0):
    """Every message for `run_id` up to and including its WorkerExit."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in ex.poll(0.1):
            assert m.run_id == run_id
            got.append(m)
            if isinstance(m, WorkerExit):
                return got
    raise AssertionError(f"no WorkerExit for {run_id} within {timeout} s: {got}")


def test_tiny_run_sends_progress_then_result_then_completed_exit(executor):
    assert executor.alive()
    assert executor.max_workers == 2 and executor.free_slots() == 2   # the cluster's threads
    h = executor.submit("r1", TINY)
    assert executor.free_slots() == 1
    assert executor.pid(h) is None
    msgs = collect(executor, "r1")

    *bodies, exit = msgs
    assert all(isinstance(m, WorkerMessage) for m in bodies)
    kinds = [m.type for m in bodies]
    assert kinds[-4:] == ["series", "report", "report", "result"]
    assert set(kinds[:-4]) == {"progress"}
    progress = [m.body for m in bodies[:-4]]
    assert len(progress) >= 5
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert set(progress[0]) == {"type", "run_id", "sim_time_s", "fraction", "events", "wall_s",
                                "row", "snapshot", "kernel"}
    snaps = [p["snapshot"] for p in progress if p["snapshot"] is not None]
    assert snaps and {"zones", "vmstat", "fragmentation_score"} <= set(snaps[-1])
    assert all(p["events"] > 0 for p in progress)
    rows = [p["row"] for p in progress if p["row"] is not None]
    assert rows and all(r["time_s"] <= p["sim_time_s"] for p in progress
                        for r in [p["row"]] if r is not None)
    assert progress[-1]["sim_time_s"] == pytest.approx(0.3)

    result = bodies[-1].body
    assert result["run_id"] == "r1"
    assert result["summary"]["duration_s"] == pytest.approx(0.3)
    assert result["summary"]["seed"] == 3
    assert result["events"] > 0
    series = bodies[-4].body
    assert series["start"] == 0 and "series" not in result
    assert [(m.body["name"], m.body["part"]) for m in bodies[-3:-1]] == [("trace", 0),
                                                                       ("fault_log", 0)]
    assert "trace" not in result and "fault_log" not in result
    assert [row["time_s"] for row in series["rows"]] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert "buddyinfo" in result["files"]
    assert result["histograms"] and all(h["buckets"] for h in result["histograms"].values())

    assert type(exit) is WorkerExit
    assert exit.completed and not exit.cancelled
    assert executor.free_slots() == 2
    assert executor.poll(0.05) == []


def test_invalid_spec_sends_an_error_naming_the_field(executor):
    executor.submit("bad", {**TINY, "machine": {"memory": "64MiB", "cpus": 0}})
    *bodies, exit = collect(executor, "bad")
    (err,) = [m.body for m in bodies]
    assert err["type"] == "error" and err["error_type"] == "ConfigError"
    assert [f["path"] for f in err["fields"]] == ["machine.cpus"]
    assert "machine.cpus" in err["message"]
    assert exit.completed and not exit.cancelled


def test_cancel_of_a_long_run_reports_cancelled_and_stops_the_task(executor, client):
    h = executor.submit("long", LONG)
    # wait until it is really running: its first progress message (0.5 s paced)
    first = []
    deadline = time.monotonic() + 10
    while not first and time.monotonic() < deadline:
        first = executor.poll(0.1)
    assert first and first[0].type == "progress" and first[0].body["fraction"] < 0.5
    started = time.monotonic()
    executor.cancel(h)
    msgs = collect(executor, "long", timeout=5)
    assert len(msgs) == 1   # nothing after cancel but the exit
    (exit,) = msgs
    assert exit.cancelled and not exit.completed
    assert time.monotonic() - started < 2
    assert executor.free_slots() == 2
    # the task itself (Dask cannot kill its thread) stops at its next progress step, long
    # before its 10 s: the worker's thread is free again
    def executing(dask_worker):
        return dask_worker.state.executing_count

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(client.run(executing).values()):
        time.sleep(0.05)
    assert sum(client.run(executing).values()) == 0
    assert time.monotonic() - started < 3
    # and cleared its cancel event on the way out
    assert not distributed.Event(h.event_name, client=client).is_set()


def test_a_task_that_fails_reports_an_exit_with_its_description(executor, client, monkeypatch,
                                                                   tmp_path):
    # what a lost worker or KilledWorker looks like to the executor: the future errs
    def broken(*args, **kw):
        raise MemoryError("worker ran out of memory")

    monkeypatch.setattr(dask_executor.worker, "execute", broken)   # in-process workers
    executor.submit("boom", TINY)
    (exit,) = collect(executor, "boom")
    assert isinstance(exit, DaskWorkerExit)
    assert not exit.completed and not exit.cancelled
    assert "MemoryError" in exit.describe() and "out of memory" in exit.describe()

    # and the manager fails such a run with that description, and keeps serving
    store = RunStore(tmp_path / "runs.db")
    manager = RunManager(store=store, executor=DaskExecutor(client=client))
    try:
        run = manager.submit(TINY)
        done = manager.wait_for_state(run.id, timeout_s=20)
        assert done.state is RunState.FAILED and done.error_reason == REASON_WORKER_DIED
        assert done.error_message.startswith("worker died: the task failed (MemoryError")
        assert manager.healthy()
    finally:
        manager.shutdown()
        store.close()


def test_executor_from_an_address_owns_and_closes_its_client(cluster, client):
    ex = DaskExecutor(cluster.scheduler_address, max_workers=1)
    assert ex.alive() and ex.free_slots() == 1
    h = ex.submit("own", TINY)
    with pytest.raises(RuntimeError, match="busy"):
        ex.submit("over", TINY)
    ex.shutdown()
    assert not ex.alive() and ex.client.status == "closed"
    assert h.cancelled
    (exit,) = ex.poll(0)
    assert exit.run_id == "own" and exit.cancelled
    assert client.status == "running"   # the cluster and other clients are untouched
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit("late", TINY)


def test_run_manager_on_dask_runs_to_succeeded_with_samples(tmp_path, client):
    store = RunStore(tmp_path / "runs.db")
    manager = RunManager(store=store, executor=DaskExecutor(client=client), max_queue=10)
    try:
        run = manager.submit(TINY, display_name="on dask")
        done = manager.wait_for_state(run.id, timeout_s=30)
        assert done.state is RunState.SUCCEEDED, done.error_message
        assert done.summary["seed"] == 3 and done.progress.fraction == 1.0
        samples, _ = store.list_samples(run.id)
        assert [s.sim_time_s for s in samples] == pytest.approx([0.0, 0.1, 0.2, 0.3])
        reports = store.get_reports(run.id)
        assert "Node 0, zone   Normal" in reports["proc/buddyinfo"]
        events = store.events_after(run.id)
        states = [e.payload["state"] for e in events if e.type == "state"]
        assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert sum(e.type == "progress" for e in events) >= 5

        # a cancelled run goes CANCELLING -> CANCELLED through the same messages
        long = manager.submit(LONG)
        manager.wait_for_state(long.id, RunState.RUNNING, timeout_s=10)
        manager.cancel(long.id)
        assert manager.wait_for_state(long.id, timeout_s=10).state is RunState.CANCELLED
        assert manager.healthy()
    finally:
        manager.shutdown()
        store.close()
    assert not manager.executor.alive()
