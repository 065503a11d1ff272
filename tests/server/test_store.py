"""RunStore on real SQLite files: lifecycle, events across restarts, paging, samples, faults."""

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compactsim.codec.runstate import RunState
from compactsim.server.filters import FilterError, OrderByError
from compactsim.server.store import (
    INTERRUPTED_MESSAGE,
    INTERRUPTED_REASON,
    InvalidArgument,
    InvalidPageToken,
    NewRun,
    NotFound,
    Progress,
    RequestIdConflict,
    RunStore,
    SchemaTooNew,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreFull,
    WrongState,
    checkpoint,
    listing,
    schema,
)
from compactsim.server.store.paging import downsample_indices

REPO = Path(__file__).resolve().parents[2]
T0 = 1_714_564_800_000_000_000   # 2024-05-01T12:00:00Z in ns


class Clock:
    """ns since the epoch, advancing by `step` per call (0: frozen, for ties)."""

    def __init__(self, start=T0, step=1_000):
        self.now, self.step = start, step

    def __call__(self):
        self.now += self.step
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = RunStore(tmp_path / "runs.db", clock=clock)
    yield s
    s.close()


def run_to(store, run_id, *states):
    for state in states:
        store.update_state(run_id, state)


# -- the file -------------------------------------------------------------------------------

def test_file_is_wal_versioned_and_marked(tmp_path):
    path = tmp_path / "runs.db"
    with RunStore(path) as s:
        s.create_run({"seed": 1})
        assert s.schema_version == len(schema.MIGRATIONS) == 2
        assert Path(str(path) + "-wal").exists()      # WAL mode writes beside the file
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


PART = ("x" * 139 + "\n") * 7_500   # a 1 MB part of a trace, as server.worker sends it


def test_no_write_waits_for_a_checkpoint(tmp_path):
    """In WAL mode only a checkpoint writes the main file. SQLite's automatic checkpoint
    would run inside the commit that takes the WAL past 1000 pages (4 MB), under the
    store's write lock, and make that write (a client's CreateRun) wait for the copy and
    its fsyncs. With the store's own checkpoints held off, 24 MB of writes leave the main
    file as it was: no write checkpointed."""
    path = tmp_path / "runs.db"
    with RunStore(path, checkpoint_every_s=3600) as s:
        run = s.create_run({"seed": 1})[0]
        before = path.stat().st_size
        for part in range(24):
            s.put_report_part(run.id, "trace", part, PART)
            s.create_run({"seed": 2 + part})
            assert path.stat().st_size == before, f"a write checkpointed at part {part}"
    assert path.stat().st_size > 24 * len(PART)   # closing copied the WAL back


def test_a_small_wal_is_left_until_it_reaches_sqlites_mark(tmp_path):
    """As SQLite's own automatic checkpoint, the store's waits for 1000 pages (4 MB) of
    WAL: a lightly written store is not copied and synced after every write."""
    path = tmp_path / "runs.db"
    with RunStore(path, checkpoint_every_s=0.01) as s:
        before = path.stat().st_size
        for seed in range(20):
            s.create_run({"seed": seed})
            time.sleep(0.01)
        time.sleep(0.2)
        assert path.stat().st_size == before
        assert len(s.list_runs()[0]) == 20


def test_the_wal_goes_back_into_the_file_while_writes_go_on(tmp_path):
    """The store's checkpointer copies the WAL into the file a short while after writes,
    from its own thread. A burst of writes grows the WAL (24 MB here); once a checkpoint
    has copied all of it, the next write starts the WAL over and cuts its file back to
    WAL_LIMIT, so later writes with pauses between them reuse its start (12 MB more of
    them here)."""
    path = tmp_path / "runs.db"
    wal = Path(str(path) + "-wal")
    with RunStore(path, checkpoint_every_s=0.02) as s:
        run = s.create_run({"seed": 1})[0]
        for part in range(24):
            s.put_report_part(run.id, "trace", part, PART)
        deadline = time.monotonic() + 30
        while path.stat().st_size < 24 * len(PART):
            assert time.monotonic() < deadline, "the WAL never reached the file"
            time.sleep(0.02)
        assert wal.stat().st_size > 24 * len(PART)
        for part in range(24, 36):   # more parts, each after a pause
            time.sleep(0.1)
            s.put_report_part(run.id, "trace", part, PART)
        assert wal.stat().st_size < checkpoint.WAL_LIMIT + 4 * len(PART)
        assert s.get_report(run.id, "trace") == PART * 36


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    RunStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(SchemaTooNew, match="schema 99"):
        RunStore(path)


def test_other_files_are_refused(tmp_path):
    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("CREATE TABLE runs (x)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreCorrupt, match="not a compactsim store"):
        RunStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreCorrupt):
        RunStore(junk)


def test_migration_step_runs_once_and_keeps_data(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    with RunStore(path) as s:
        rid = s.create_run({"seed": 7}, display_name="old")[0].id
    calls = []

    def add_notes(conn):
        calls.append(1)
        conn.execute("ALTER TABLE runs ADD COLUMN notes TEXT NOT NULL DEFAULT 'migrated'")

    n = len(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, add_notes])
    with RunStore(path) as s:
        assert s.schema_version == n + 1
        assert s.get_run(rid).display_name == "old"
    with RunStore(path) as s:                      # already there: the step does not rerun
        assert s.schema_version == n + 1
    assert calls == [1]
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT notes FROM runs").fetchone()[0] == "migrated"
    raw.close()


def test_failed_migration_leaves_old_version(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    with RunStore(path) as s:
        rid = s.create_run({"seed": 7})[0].id

    def broken(conn):
        conn.execute("ALTER TABLE runs ADD COLUMN half_done INTEGER")
        raise RuntimeError("step failed")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        RunStore(path)
    monkeypatch.undo()
    with RunStore(path) as s:
        assert s.schema_version == len(schema.MIGRATIONS)
        assert s.get_run(rid).id == rid
    raw = sqlite3.connect(path)
    cols = [r[1] for r in raw.execute("PRAGMA table_info(runs)")]
    raw.close()
    assert "half_done" not in cols


def test_closed_store_refuses(tmp_path):
    s = RunStore(tmp_path / "runs.db")
    s.close()
    s.close()                                       # twice is harmless
    with pytest.raises(StoreClosed):
        s.get_run("x")
    with pytest.raises(StoreClosed):
        s.create_run({})


def test_backup_is_a_readable_copy(store, tmp_path):
    rid = store.create_run({"seed": 3}, display_name="kept")[0].id
    store.backup(tmp_path / "copy.db")
    with RunStore(tmp_path / "copy.db") as copy:
        assert copy.get_run(rid).display_name == "kept"
        assert [e.sequence for e in copy.events_after(rid)] == [1]


# -- runs -----------------------------------------------------------------------------------

def test_create_and_get_round_trip(store, clock):
    spec = {"seed": 5, "machine": {"memory": "1GiB"}, "workload": [{"kind": "anon"}]}
    rec, created = store.create_run(spec, display_name="zram NONE", scenario="zram-movable-ops",
                                    labels={"design": "NONE", "k.with.dots": ""},
                                    provenance={"code_version": "abc", "seed": 5},
                                    creator="alice", request_id="req-1")
    assert created
    got = store.get_run(rec.id)
    assert got == rec
    assert got.spec == spec and json.loads(got.spec_json) == spec
    assert got.state is RunState.QUEUED and not got.deleted and not got.interrupted
    assert got.labels == {"design": "NONE", "k.with.dots": ""}
    assert got.provenance == {"code_version": "abc", "seed": 5}
    assert (got.creator, got.request_id, got.scenario) == ("alice", "req-1", "zram-movable-ops")
    assert got.create_time_ns == clock.now and got.start_time_ns is None
    assert got.summary is None and got.progress == Progress()
    assert got.last_sequence == 1


def test_unknown_run_is_not_found(store):
    for call in (lambda: store.get_run("nope"), lambda: store.update_state("nope", "RUNNING"),
                 lambda: store.events_after("nope"), lambda: store.add_samples("nope", []),
                 lambda: store.list_samples("nope"), lambda: store.put_report("nope", "a", ""),
                 lambda: store.soft_delete("nope")):
        with pytest.raises(NotFound, match="nope"):
            call()


def test_bad_arguments_write_nothing(store):
    with pytest.raises(InvalidArgument, match="spec"):
        store.create_run({"x": float("nan")})
    with pytest.raises(InvalidArgument, match="label"):
        store.create_run({}, labels={"k": 3})
    with pytest.raises(InvalidArgument, match="run id"):
        store.create_run({}, run_id="Bad Id!")
    with pytest.raises(NotFound, match="sweep"):
        store.create_run({}, sweep_id="missing")
    assert store.list_runs(show_deleted=True) == ([], "")


def test_caller_chosen_id_is_unique(store):
    store.create_run({}, run_id="r-1")
    with pytest.raises(InvalidArgument, match="taken"):
        store.create_run({}, run_id="r-1")


def test_lifecycle_times_summary_and_progress(store):
    rid = store.create_run({})[0].id
    with pytest.raises(WrongState, match="only while it runs"):
        store.update_progress(rid, Progress(1.0, 0.1, 5, 0.2))
    running = store.update_state(rid, RunState.RUNNING)
    assert running.start_time_ns is not None and running.end_time_ns is None
    p = store.update_progress(rid, Progress(2.5, 0.25, 1000, 0.4)).progress
    assert p == Progress(2.5, 0.25, 1000, 0.4)
    done = store.update_state(rid, "SUCCEEDED", summary={"compact_stall": 3, "ratio": float("inf")})
    assert done.end_time_ns > done.start_time_ns == running.start_time_ns
    assert done.summary == {"compact_stall": 3, "ratio": float("inf")}
    with pytest.raises(WrongState, match="SUCCEEDED; it cannot become RUNNING"):
        store.update_state(rid, "RUNNING")
    with pytest.raises(WrongState):
        store.update_progress(rid, Progress(3.0, 0.3, 1, 0.5))
    assert store.get_run(rid).progress == Progress(2.5, 0.25, 1000, 0.4)
    assert [e.type for e in store.events_after(rid)] == ["state", "state", "progress", "state"]


@pytest.mark.parametrize("path, ok", [
    (["RUNNING", "SUCCEEDED"], True),
    (["RUNNING", "CANCELLING", "CANCELLED"], True),
    (["RUNNING", "CANCELLING", "SUCCEEDED"], True),   # finished before the cancel landed
    (["CANCELLED"], True),
    (["RUNNING", "FAILED", "RUNNING"], False),
    (["CANCELLED", "CANCELLING"], False),
    (["RUNNING", "RUNNING"], False),
    (["SUCCEEDED"], False),
])
def test_transitions(store, path, ok):
    rid = store.create_run({})[0].id
    if ok:
        run_to(store, rid, *path)
        assert store.get_run(rid).state.value == path[-1]
    else:
        with pytest.raises(WrongState):
            run_to(store, rid, *path)
        # the refused step changed nothing and appended no event
        assert store.get_run(rid).last_sequence == len(store.events_after(rid)) == len(path)


def test_request_id_makes_create_idempotent(store):
    first, created = store.create_run({"seed": 1}, creator="alice", request_id="r1",
                                      display_name="a")
    again, created2 = store.create_run({"seed": 1}, creator="alice", request_id="r1",
                                       display_name="a")
    assert created and not created2 and again == first
    other, created3 = store.create_run({"seed": 1}, creator="bob", request_id="r1",
                                       display_name="a")
    assert created3 and other.id != first.id          # unique per creator, not globally
    with pytest.raises(RequestIdConflict, match="r1"):
        store.create_run({"seed": 2}, creator="alice", request_id="r1", display_name="a")
    assert store.find_by_request_id("alice", "r1") == first
    assert store.find_by_request_id("alice", "r2") is None
    assert len(store.list_runs()[0]) == 2
    # no request id: every call creates
    assert store.create_run({})[0].id != store.create_run({})[0].id


def test_soft_delete_hides_from_lists_but_get_reports_it(store):
    keep = store.create_run({}, display_name="keep")[0].id
    gone = store.create_run({}, display_name="gone")[0].id
    deleted = store.soft_delete(gone)
    assert deleted.deleted and deleted.delete_time_ns is not None
    assert [r.id for r in store.list_runs()[0]] == [keep]
    assert [r.id for r in store.list_runs('display_name = "gone"')[0]] == []
    assert {r.id for r in store.list_runs(show_deleted=True)[0]} == {keep, gone}
    assert store.get_run(gone).deleted                   # the service answers NOT_FOUND
    assert store.events_after(gone)[-1].type == "deleted"
    assert store.soft_delete(gone) == store.get_run(gone)   # again: nothing changes
    assert store.get_run(gone).last_sequence == 2


def test_mark_interrupted_on_startup(tmp_path, clock):
    path = tmp_path / "runs.db"
    with RunStore(path, clock=clock) as s:
        queued = s.create_run({"seed": 1})[0].id
        running = s.create_run({"seed": 2})[0].id
        cancelling = s.create_run({"seed": 3})[0].id
        done = s.create_run({"seed": 4})[0].id
        run_to(s, running, "RUNNING")
        s.update_progress(running, Progress(4.0, 0.4, 99, 1.0))
        run_to(s, cancelling, "RUNNING", "CANCELLING")
        run_to(s, done, "RUNNING", "SUCCEEDED")
        before = {r: s.get_run(r) for r in (queued, done)}
    with RunStore(path, clock=clock) as s:               # the server comes back
        changed = s.mark_interrupted_on_startup()
        assert [r.id for r in changed] == [running, cancelling]
        for rid in (running, cancelling):
            r = s.get_run(rid)
            assert r.state is RunState.FAILED and r.interrupted
            assert (r.error_reason, r.error_message) == (INTERRUPTED_REASON, INTERRUPTED_MESSAGE)
            assert r.end_time_ns is not None and r.spec["seed"] in (2, 3)   # re-runnable
            last = s.events_after(rid)[-1]
            assert last.payload == {"state": "FAILED", "error_reason": "interrupted",
                                    "error_message": INTERRUPTED_MESSAGE, "interrupted": True}
        assert s.get_run(running).progress.sim_time_s == 4.0
        assert {r: s.get_run(r) for r in (queued, done)} == before
        assert [r.id for r in s.queued_runs()] == [queued]
        assert s.mark_interrupted_on_startup() == []


# -- events ---------------------------------------------------------------------------------

def test_events_are_gapless_per_run_and_resume_after_restart(tmp_path, clock):
    path = tmp_path / "runs.db"
    with RunStore(path, clock=clock) as s:
        a = s.create_run({})[0].id
        b = s.create_run({})[0].id
        run_to(s, a, "RUNNING")
        for i in range(5):                                  # interleaved writers
            s.update_progress(a, Progress(i, i / 10, i, 0))
            s.append_event(b, "log", {"line": i})
        seen = s.events_after(a, 0, limit=3)               # a watcher reads part, drops
        assert [e.sequence for e in seen] == [1, 2, 3]
    with RunStore(path, clock=clock) as s:                   # restart
        rest = s.events_after(a, seen[-1].sequence)
        assert [e.sequence for e in rest] == [4, 5, 6, 7]
        assert [e.payload["sim_time_s"] for e in rest] == [1, 2, 3, 4]
        new = s.update_state(a, "SUCCEEDED")
        assert new.last_sequence == 8
        assert [e.sequence for e in s.events_after(a)] == list(range(1, 9))
        assert [e.sequence for e in s.events_after(b)] == list(range(1, 7))
        assert [e.payload["line"] for e in s.events_after(b, 1)] == [0, 1, 2, 3, 4]
        times = [e.time_ns for e in s.events_after(a)]
        assert times == sorted(times)
        assert s.events_after(a, 8) == []
        with pytest.raises(InvalidArgument):
            s.events_after(a, -1)


def test_concurrent_writers_keep_sequences_gapless(store):
    runs = [store.create_run({})[0].id for _ in range(3)]
    errors = []

    def writer(t):
        try:
            for i in range(40):
                store.append_event(runs[(t + i) % 3], "tick", {"t": t, "i": i})
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = 0
    for rid in runs:
        events = store.events_after(rid, limit=10_000)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert store.get_run(rid).last_sequence == len(events)
        total += len(events) - 1
    assert total == 6 * 40


def test_committed_writes_survive_sigkill(tmp_path):
    path = tmp_path / "runs.db"
    code = f"""
import sys, time
from compactsim.server.store import RunStore, Progress
s = RunStore({str(path)!r})
rid = s.create_run({{"seed": 9}})[0].id
s.update_state(rid, "RUNNING")
s.update_progress(rid, Progress(1.0, 0.5, 10, 0.1))
done = s.create_run({{"seed": 10}})[0].id
s.update_state(done, "RUNNING")
s.add_samples(done, [{{"time_s": 0.0}}, {{"time_s": 1.0}}])
s.put_report(done, "proc/vmstat", "compact_stall 3\\n")
s.update_state(done, "SUCCEEDED", summary={{"ok": True}})
print(rid, done, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        rid, done = proc.stdout.readline().split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with RunStore(path) as s:
        assert s.get_run(done).state is RunState.SUCCEEDED
        assert s.get_run(done).summary == {"ok": True}
        assert s.get_reports(done) == {"proc/vmstat": "compact_stall 3\n"}
        assert len(s.list_samples(done)[0]) == 2
        assert [r.id for r in s.mark_interrupted_on_startup()] == [rid]
        assert s.get_run(rid).progress.fraction == 0.5


# -- listing --------------------------------------------------------------------------------

@pytest.fixture
def lab(tmp_path):
    """Six runs with known fields; create times 1 s apart from T0 + 1 s."""
    clock = Clock(step=0)
    s = RunStore(tmp_path / "lab.db", clock=clock)
    sweep = s.create_sweep({"seed": 1}, {"seeds": 2}, sweep_id="sw1")[0]
    rows = [
        # name, scenario, creator, labels, final state
        ("zram-none", "zram-movable-ops", "alice", {"design": "NONE", "sweep": "a"}, "SUCCEEDED"),
        ("zram-mapping", "zram-movable-ops", "alice", {"design": "MAPPING_OPS"}, "FAILED"),
        ("thp-1", "thpscale", "bob", {"design": "NONE"}, "RUNNING"),
        ("thp-2", "thpscale", "bob", {}, "QUEUED"),
        ('quote " name', "", "carol", {"odd key": "x'y"}, "CANCELLED"),
        ("frag", "frag-hugepage", "alice", {"design": "PAGE_TYPE"}, "CANCELLING"),
    ]
    ids = {}
    for i, (name, scenario, creator, labels, state) in enumerate(rows):
        clock.now = T0 + (i + 1) * 1_000_000_000
        rid = s.create_run({"seed": i}, display_name=name, scenario=scenario, creator=creator,
                           labels=labels, sweep_id="sw1" if i < 2 else "")[0].id
        ids[name] = rid
        path = {"QUEUED": [], "RUNNING": ["RUNNING"], "SUCCEEDED": ["RUNNING", "SUCCEEDED"],
                "FAILED": ["RUNNING", "FAILED"], "CANCELLED": ["CANCELLED"],
                "CANCELLING": ["RUNNING", "CANCELLING"]}[state]
        run_to(s, rid, *path)
    assert sweep.id == "sw1"
    yield s, ids
    s.close()


def names(store, flt="", order_by="display_name", **kw):
    return [r.display_name for r in store.list_runs(flt, order_by, **kw)[0]]


@pytest.mark.parametrize("flt, expected", [
    ("", ["frag", 'quote " name', "thp-1", "thp-2", "zram-mapping", "zram-none"]),
    ('state = "RUNNING"', ["thp-1"]),
    ("state = CANCELLING", ["frag"]),
    ('state != "RUNNING"', ["frag", 'quote " name', "thp-2", "zram-mapping", "zram-none"]),
    ('scenario = "thpscale"', ["thp-1", "thp-2"]),
    ('scenario = ""', ['quote " name']),
    ('scenario = "zram*"', ["zram-mapping", "zram-none"]),
    ('creator = "alice"', ["frag", "zram-mapping", "zram-none"]),
    ('creator != "alice"', ['quote " name', "thp-1", "thp-2"]),
    ('display_name = "thp-1"', ["thp-1"]),
    ('display_name = "quote \\" name"', ['quote " name']),
    ('display_name = "thp*"', ["thp-1", "thp-2"]),
    ('display_name != "thp*"', ["frag", 'quote " name', "zram-mapping", "zram-none"]),
    ('labels.design = "NONE"', ["thp-1", "zram-none"]),
    ('labels.design != "NONE"', ["frag", 'quote " name', "thp-2", "zram-mapping"]),
    ("labels.design:*", ["frag", "thp-1", "zram-mapping", "zram-none"]),
    ('labels."odd key" = "x\'y"', ['quote " name']),
    ('labels.sweep = "a"', ["zram-none"]),
    ('sweep = "sw1"', ["zram-mapping", "zram-none"]),
    # the resource name, as Run.sweep shows it
    ('sweep = "sweeps/sw1"', ["zram-mapping", "zram-none"]),
    ('sweep != "sweeps/sw1"', ["frag", 'quote " name', "thp-1", "thp-2"]),
    ('sweep = "sweeps/*"', ["zram-mapping", "zram-none"]),
    ('sweep = "sweeps/"', []),
    ('sweep = ""', ["frag", 'quote " name', "thp-1", "thp-2"]),
    ('create_time > "2024-05-01T12:00:04Z"', ["frag", 'quote " name']),
    ('create_time >= "2024-05-01T12:00:04Z"', ["frag", 'quote " name', "thp-2"]),
    ('create_time < "2024-05-01T12:00:02Z"', ["zram-none"]),
    ('create_time <= "2024-05-01T14:00:02+02:00"', ["zram-mapping", "zram-none"]),
    ('create_time = "2024-05-01T12:00:03.000Z"', ["thp-1"]),
    ('create_time != "2024-05-01T12:00:03Z"',
     ["frag", 'quote " name', "thp-2", "zram-mapping", "zram-none"]),
    # combinations
    ('creator = "alice" AND labels.design = "NONE"', ["zram-none"]),
    ('scenario = "thpscale" AND state = "QUEUED"', ["thp-2"]),
    ('state = "FAILED" OR state = "CANCELLED"', ['quote " name', "zram-mapping"]),
    # AIP-160: OR binds tighter than AND
    ('creator = "alice" AND state = "SUCCEEDED" OR state = "RUNNING"', ["zram-none"]),
    ('(creator = "bob" AND state = "RUNNING") OR state = "SUCCEEDED"', ["thp-1", "zram-none"]),
    ('NOT creator = "alice" AND NOT state = "QUEUED"', ['quote " name', "thp-1"]),
    ('-labels.design:* OR labels.design = "PAGE_TYPE"', ["frag", 'quote " name', "thp-2"]),
    ('NOT (scenario = "zram*" OR scenario = "thp*")', ["frag", 'quote " name']),
    ('create_time > "2024-05-01T12:00:01Z" AND create_time < "2024-05-01T12:00:05Z" AND '
     'creator = "bob"', ["thp-1", "thp-2"]),
])
def test_filters(lab, flt, expected):
    s, _ = lab
    assert names(s, flt) == expected


def test_filter_values_are_data_not_sql(lab):
    s, _ = lab
    for evil in ["x' OR '1'='1", "\\\" OR 1=1 --", "'); DROP TABLE runs; --"]:
        flt = 'display_name = "' + evil.replace("\\", "\\\\").replace('"', '\\"') + '"'
        assert names(s, flt) == []
    assert len(names(s)) == 6


def test_list_errors_come_from_the_grammar(lab):
    s, _ = lab
    with pytest.raises(FilterError) as e:
        s.list_runs('state = "DONE"')
    assert e.value.column == 9
    with pytest.raises(OrderByError) as e:
        s.list_runs(order_by="create_time, size desc")
    assert e.value.column == 14
    with pytest.raises(InvalidArgument, match="page_size"):
        s.list_runs(page_size=-1)


@pytest.mark.parametrize("order_by, expected", [
    ("", ["frag", 'quote " name', "thp-2", "thp-1", "zram-mapping", "zram-none"]),
    ("create_time", ["zram-none", "zram-mapping", "thp-1", "thp-2", 'quote " name', "frag"]),
    ("display_name desc", ["zram-none", "zram-mapping", "thp-2", "thp-1", 'quote " name',
                           "frag"]),
    # lifecycle order: QUEUED RUNNING SUCCEEDED FAILED CANCELLING CANCELLED
    ("state, display_name", ["thp-2", "thp-1", "zram-none", "zram-mapping", "frag",
                             'quote " name']),
    ("state desc, create_time desc", ['quote " name', "frag", "zram-mapping", "zram-none",
                                      "thp-1", "thp-2"]),
])
def test_order_by(lab, order_by, expected):
    s, _ = lab
    assert [r.display_name for r in s.list_runs(order_by=order_by)[0]] == expected


def collect(store, flt, order_by, page_size, **kw):
    out, token, pages = [], "", 0
    while True:
        page, token = store.list_runs(flt, order_by, page_size, token, **kw)
        assert len(page) <= page_size
        out += page
        pages += 1
        if not token:
            return out, pages
        assert len(page) == page_size          # only the last page is short
        assert pages <= 400, "paging does not end"


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """300 runs; create times in bursts of equal values, so ties need the id tiebreak."""
    clock = Clock(step=0)
    s = RunStore(tmp_path_factory.mktemp("many") / "runs.db", clock=clock)
    states = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
    paths = {"QUEUED": [], "RUNNING": ["RUNNING"], "SUCCEEDED": ["RUNNING", "SUCCEEDED"],
             "FAILED": ["RUNNING", "FAILED"], "CANCELLED": ["CANCELLED"]}
    with s.transaction():
        for i in range(300):
            clock.now = T0 + (i // 7) * 1_000_000
            rid = s.create_run({"i": i}, display_name=f"run-{i % 37:02d}",
                               creator=f"user{i % 3}", labels={"parity": str(i % 2)})[0].id
            run_to(s, rid, *paths[states[i % 5]])
    yield s
    s.close()


def python_key(order):
    rank = {s.value: i for i, s in enumerate(RunState)}

    def key(r):
        parts = []
        for name, desc in order:
            v = {"create_time": r.create_time_ns, "display_name": r.display_name,
                 "state": rank[r.state.value]}[name]
            parts.append(_Desc(v) if desc else v)
        return (*parts, r.id)
    return key


class _Desc:
    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return self.v > other.v

    def __eq__(self, other):
        return self.v == other.v


@pytest.mark.parametrize("page_size", [1, 7, 50, 299, 300, 1000])
@pytest.mark.parametrize("flt, order_by, order", [
    ("", "", [("create_time", True)]),
    ("", "create_time", [("create_time", False)]),
    ('creator = "user1"', "display_name desc, create_time", [("display_name", True),
                                                             ("create_time", False)]),
    ('labels.parity = "0" OR state = "FAILED"', "state, display_name",
     [("state", False), ("display_name", False)]),
])
def test_paging_yields_every_run_once_in_order(many, page_size, flt, order_by, order):
    everything = many.list_runs(page_size=1000)[0]
    assert len(everything) == 300
    got, pages = collect(many, flt, order_by, page_size)
    ids = [r.id for r in got]
    assert len(ids) == len(set(ids))
    wanted = [r for r in everything if flt == "" or (
        r.creator == "user1" if "creator" in flt else
        r.labels["parity"] == "0" or r.state is RunState.FAILED)]
    assert ids == [r.id for r in sorted(wanted, key=python_key(order))]
    assert pages == max(1, -(-len(wanted) // page_size))


def test_page_size_is_capped(many):
    page, token = many.list_runs(page_size=10**6)
    assert len(page) == 300 and token == ""
    page, token = many.list_runs()
    assert len(page) == listing.DEFAULT_RUNS_PAGE and token


def test_page_tokens_belong_to_their_query(many):
    _, token = many.list_runs('creator = "user1"', "display_name", 10)
    assert token
    for flt, order_by, kw in [('creator = "user2"', "display_name", {}),
                              ("", "display_name", {}),
                              ('creator = "user1"', "display_name desc", {}),
                              ('creator = "user1"', "", {}),
                              ('creator = "user1"', "display_name", {"show_deleted": True})]:
        with pytest.raises(InvalidPageToken, match="different filter"):
            many.list_runs(flt, order_by, 10, token, **kw)
    # the same query written differently is the same query; a new page size is fine
    page, _ = many.list_runs('(creator="user1")', "display_name asc", 5, token)
    assert len(page) == 5
    for junk in ["garbage!!", "eyJ4IjoxfQ", token[:-4] + "AAAA",
                 base64.urlsafe_b64encode(b'{"h": "0000", "k": [1]}').decode()]:
        with pytest.raises(InvalidPageToken):
            many.list_runs('creator = "user1"', "display_name", 10, junk)


def test_page_token_survives_a_restart(tmp_path):
    path = tmp_path / "runs.db"
    with RunStore(path) as s:
        for i in range(10):
            s.create_run({}, display_name=f"r{i}")
        first, token = s.list_runs(order_by="display_name", page_size=4)
    with RunStore(path) as s:
        rest, _ = s.list_runs(order_by="display_name", page_size=10, page_token=token)
    assert [r.display_name for r in first + rest] == [f"r{i}" for i in range(10)]


# -- samples --------------------------------------------------------------------------------

def test_samples_page_and_keep_rows(store):
    rid = store.create_run({})[0].id
    assert store.add_samples(rid, [{"time_s": i * 0.5, "free": 100 - i} for i in range(25)]) == 25
    assert store.add_samples(rid, [{"time_s": 12.5, "free": 75}]) == 26
    got, token, pages = [], "", 0
    while True:
        page, token = store.list_samples(rid, page_size=10, page_token=token)
        got += page
        pages += 1
        if not token:
            break
        assert pages < 5, "paging does not end"
    assert pages == 3
    assert [s.index for s in got] == list(range(26))
    assert got[3].sim_time_s == 1.5 and got[3].row == {"time_s": 1.5, "free": 97}
    with pytest.raises(InvalidArgument, match="time_s"):
        store.add_samples(rid, [{"time_s": 13.0}, {"free": 1}])
    assert len(store.list_samples(rid)[0]) == 26      # the bad batch wrote nothing



def test_pages_are_bounded_by_weight_as_well_as_count(store):
    """A page ends before the item that would pass max_weight (one item at least) and the
    next page starts with it: how ListRuns and ListRunSamples keep under 4 MiB."""
    rid = store.create_run({})[0].id
    store.add_samples(rid, [{"time_s": float(i), "free": i} for i in range(10)])
    got, token, sizes = [], "", []
    while True:
        page, token = store.list_samples(rid, page_size=10, page_token=token,
                                         weigh=lambda smp: 100, max_weight=250)
        got += [s.index for s in page]
        sizes.append(len(page))
        if not token:
            break
    assert got == list(range(10)) and sizes == [2, 2, 2, 2, 2]
    page, token = store.list_samples(rid, weigh=lambda smp: 10**9, max_weight=1)
    assert len(page) == 1 and token   # never an empty page
    for i in range(7):
        store.create_run({}, display_name=f"w{i}")
    names, token = [], ""
    while True:
        page, token = store.list_runs('display_name = "w*"', "display_name", 5, token,
                                      weigh=lambda r: 300, max_weight=1000)
        assert len(page) <= 3
        names += [r.display_name for r in page]
        if not token:
            break
    assert names == [f"w{i}" for i in range(7)]


def test_merge_samples_dedupes_by_time_and_keeps_time_order(store):
    rid = store.create_run({})[0].id
    # live rows, as progress snapshots bring them (one repeated)
    assert store.merge_samples(rid, [{"time_s": 0.2, "free": 8, "live": 1}]) == 1
    assert store.merge_samples(rid, [{"time_s": 0.4, "free": 6, "live": 1}]) == 2
    assert store.merge_samples(rid, [{"time_s": 0.4, "free": 6, "live": 1}]) == 2
    # the final series: every row, the live ones again
    final = [{"time_s": i / 10, "free": 10 - i} for i in range(6)]
    assert store.merge_samples(rid, final) == 6
    got, _ = store.list_samples(rid)
    assert [s.sim_time_s for s in got] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert [s.index for s in got] == list(range(6))
    assert [s.row.get("live") for s in got] == [None, None, 1, None, 1, None]
    # rows after the last are appended
    assert store.merge_samples(rid, [{"time_s": 0.7}, {"time_s": 0.6}, {"time_s": 0.5}]) == 8
    assert [s.sim_time_s for s in store.list_samples(rid)[0]][-3:] == [0.5, 0.6, 0.7]
    with pytest.raises(InvalidArgument, match="time_s"):
        store.merge_samples(rid, [{"time_s": 0.05}, {"free": 1}])
    assert store.list_samples(rid)[0][1].sim_time_s == 0.1   # all or none
    with pytest.raises(NotFound):
        store.merge_samples("nope", [{"time_s": 0.0}])

@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 400), max_points=st.integers(2, 120))
def test_downsample_indices(n, max_points):
    index = downsample_indices(n, max_points)
    kept = [index(p) for p in range(min(n, max_points))]
    assert len(kept) == min(n, max_points)
    assert kept == sorted(set(kept))
    if n:
        assert kept[0] == 0 and kept[-1] == n - 1
        gaps = [b - a for a, b in zip(kept, kept[1:])]
        assert not gaps or max(gaps) - min(gaps) <= 1     # evenly spaced
    assert all(0 <= i < n for i in kept)


def test_max_points_downsampling_through_pages(store):
    rid = store.create_run({})[0].id
    store.add_samples(rid, [{"time_s": float(i)} for i in range(1000)])
    whole, token = store.list_samples(rid, page_size=1000, max_points=64)
    assert token == "" and len(whole) == 64
    assert whole[0].index == 0 and whole[-1].index == 999
    paged, token = [], ""
    while True:
        page, token = store.list_samples(rid, page_size=9, page_token=token, max_points=64)
        paged += page
        if not token:
            break
        assert len(paged) < 64, "paging does not end"
        store.add_samples(rid, [{"time_s": 5000.0}])     # the run keeps writing meanwhile
    assert paged == whole                                  # pages do not shift
    everything, _ = store.list_samples(rid, 5000, max_points=5000)   # more than there are
    assert [x.index for x in everything] == list(range(1007))
    fresh, _ = store.list_samples(rid, max_points=64)           # a new listing sees them
    assert len(fresh) == 64 and fresh[-1].index == 1006
    with pytest.raises(InvalidPageToken):
        store.list_samples(rid, page_size=9, page_token=_first_token(store, rid), max_points=32)
    with pytest.raises(InvalidArgument, match="max_points"):
        store.list_samples(rid, max_points=1)


def _first_token(store, rid):
    return store.list_samples(rid, page_size=9, max_points=64)[1]


# -- reports and sweeps ---------------------------------------------------------------------

def test_reports(store):
    rid = store.create_run({})[0].id
    store.put_report(rid, "proc/buddyinfo", "Node 0, zone Normal 1 2 3\n")
    store.put_reports(rid, {"trace": "line\n", "histograms/compaction": "{}"})
    store.put_report(rid, "trace", "replaced\n")
    assert store.report_names(rid) == ["histograms/compaction", "proc/buddyinfo", "trace"]
    assert store.get_report(rid, "trace") == "replaced\n"
    assert store.get_reports(rid, ["trace", "missing"]) == {"trace": "replaced\n"}
    with pytest.raises(NotFound, match="missing"):
        store.get_report(rid, "missing")
    with pytest.raises(InvalidArgument):
        store.put_reports(rid, {"ok": "x", "": "y"})
    assert "ok" not in store.report_names(rid)            # all or nothing


def test_report_in_parts_reads_whole_and_each_part_commits_on_its_own(store):
    rid = store.create_run({})[0].id
    store.put_report(rid, "trace", "old whole\n")
    text = "".join(f"line {i} \u00e9\n" for i in range(1000))
    parts = [text[i:i + 777] for i in range(0, len(text), 777)]
    for k, part in enumerate(parts):
        store.put_report_part(rid, "trace", k, part)
        assert not store.db.in_transaction                # committed, nothing held open
    store.put_report_part(rid, "fault_log", 0, "")
    assert store.get_report(rid, "trace") == text       # part 0 replaced the old text
    assert store.get_reports(rid) == {"fault_log": "", "trace": text}
    assert store.report_names(rid) == ["fault_log", "trace"]
    store.put_report_part(rid, "trace", 0, "again\n")   # part 0 starts it over
    assert store.get_report(rid, "trace") == "again\n"
    store.put_report(rid, "trace", "whole\n")           # a whole text replaces the parts
    assert store.get_reports(rid) == {"fault_log": "", "trace": "whole\n"}
    with pytest.raises(InvalidArgument, match="part"):
        store.put_report_part(rid, "trace", -1, "x")
    with pytest.raises(NotFound):
        store.put_report_part("nope", "trace", 0, "x")


def test_sweep_with_runs_is_atomic(store):
    runs = [NewRun(spec={"seed": s, "tunables": {"compaction_proactiveness": p}},
                   labels={"point": f"p={p}", "seed": str(s)}, creator="alice")
            for p in (0, 20) for s in (1, 2)]
    sweep, records = store.create_sweep({"seed": 1}, {"tunables.compaction_proactiveness": [0, 20],
                                                       "seeds": 2},
                                        display_name="proactiveness", creator="alice", runs=runs)
    assert store.get_sweep(sweep.id) == sweep
    assert sweep.grid == {"tunables.compaction_proactiveness": [0, 20], "seeds": 2}
    assert [r.id for r in store.sweep_runs(sweep.id)] == [r.id for r in records]
    assert all(r.sweep_id == sweep.id for r in records)
    assert {r.id for r in store.list_runs(f'sweep = "{sweep.id}"')[0]} == {r.id for r in records}
    # a sweep whose runs cannot all be created leaves nothing behind
    store.create_run({"seed": 9}, creator="alice", request_id="dup")
    bad = [NewRun(spec={"seed": 1}), NewRun(spec={"seed": 2}, creator="alice", request_id="dup")]
    with pytest.raises(RequestIdConflict):
        store.create_sweep({}, {}, runs=bad, sweep_id="half")
    with pytest.raises(NotFound):
        store.get_sweep("half")
    assert len(store.list_runs()[0]) == 5
    assert [s.id for s in store.list_sweeps()] == [sweep.id]
    store.soft_delete_sweep(sweep.id)
    assert store.list_sweeps() == [] and store.list_sweeps(show_deleted=True)[0].deleted


# -- transactions and faults ----------------------------------------------------------------

def test_transaction_groups_writes(store):
    rid = store.create_run({})[0].id
    run_to(store, rid, "RUNNING")
    with store.transaction():
        store.add_samples(rid, [{"time_s": 1.0}])
        store.put_report(rid, "trace", "t\n")
        store.update_state(rid, "SUCCEEDED", summary={"ok": 1})
    assert store.get_run(rid).state is RunState.SUCCEEDED
    other = store.create_run({})[0].id
    run_to(store, other, "RUNNING")
    with pytest.raises(StoreError, match="rolled back"):
        with store.transaction():
            store.add_samples(other, [{"time_s": 1.0}])
            try:
                store.update_state(other, "QUEUED")        # refused ...
            except WrongState:
                pass                                       # ... and the error swallowed
    assert store.list_samples(other)[0] == []
    assert store.get_run(other).last_sequence == 2
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.put_report(other, "x", "y")
            raise ZeroDivisionError
    assert store.report_names(other) == []


def test_full_disk_is_a_clear_error_and_nothing_is_half_written(tmp_path):
    path = tmp_path / "runs.db"
    s = RunStore(path, max_bytes=256 * 1024)
    rid = s.create_run({"seed": 1})[0].id
    run_to(s, rid, "RUNNING")
    s.add_samples(rid, [{"time_s": 0.0, "pad": "x"}])
    before = (s.get_run(rid), s.events_after(rid), s.list_samples(rid)[0])
    with pytest.raises(StoreFull, match="full") as e:
        s.add_samples(rid, [{"time_s": float(i), "pad": "x" * 1000} for i in range(1, 1000)])
    assert isinstance(e.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreFull):
        s.update_state(rid, "SUCCEEDED", summary={"blob": "y" * 400_000})
    assert (s.get_run(rid), s.events_after(rid), s.list_samples(rid)[0]) == before
    s.update_state(rid, "FAILED", error_reason="store_full", error_message="disk full")
    s.close()
    with RunStore(path) as s:                               # room again: all intact
        assert s.get_run(rid).state is RunState.FAILED
        assert [e.sequence for e in s.events_after(rid)] == [1, 2, 3]
        s.add_samples(rid, [{"time_s": float(i), "pad": "x" * 1000} for i in range(1, 400)])
        assert len(s.list_samples(rid)[0]) == 400
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


# -- counting and following -----------------------------------------------------------------

def test_count_runs_and_count_by_state(lab):
    s, ids = lab
    assert s.count_runs() == 6 and s.count_runs('creator = "alice"') == 3
    assert s.count_runs('state = "QUEUED" OR labels.design:*') == 5
    s.soft_delete(ids["thp-2"])
    assert s.count_runs() == 5 and s.count_runs(show_deleted=True) == 6
    assert s.count_by_state() == {RunState.QUEUED: 0, RunState.RUNNING: 1,
                                  RunState.SUCCEEDED: 1, RunState.FAILED: 1,
                                  RunState.CANCELLING: 1, RunState.CANCELLED: 1}


def test_runs_changed_reads_new_runs_and_the_ones_followed(store):
    first = [store.create_run({"i": i})[0].id for i in range(3)]
    runs, cursor = store.runs_changed(0)
    assert [r.id for r in runs] == first
    assert store.runs_changed(cursor) == ([], cursor)          # nothing new, nothing followed
    run_to(store, first[1], "RUNNING")
    store.soft_delete(first[2])
    later = store.create_run({"i": 3})[0].id
    runs, again = store.runs_changed(cursor, [first[1], first[2], "no-such-run", first[1]])
    assert [r.id for r in runs] == [first[1], first[2], later]   # in the order added, once
    assert runs[0].state is RunState.RUNNING and runs[1].deleted and again > cursor
    assert store.runs_changed(again, [later])[0][0].id == later


def test_runs_changed_follows_more_ids_than_one_statement_binds(store):
    with store.transaction():
        ids = [store.create_run({"i": i})[0].id for i in range(1203)]
    cursor = store.runs_changed(0)[1]
    runs, same = store.runs_changed(cursor, ids[::-1])
    assert [r.id for r in runs] == ids and same == cursor
