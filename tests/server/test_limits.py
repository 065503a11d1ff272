"""server.limits arithmetic (the resident-memory estimate against a real worker's peak RSS),
server.traces' path rules and uploads on a real directory, and the run manager's per-user
counting and dispatch with a real store and real workers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compactsim.codec.runstate import RunState
from compactsim.server import limits
from compactsim.server.executor import ProcessExecutor
from compactsim.server.limits import (
    Exceeded,
    Limits,
    format_bytes,
    queue_exceeded,
    resident_estimate,
)
from compactsim.server.manager import QueueLimit, RunManager
from compactsim.server.store import RunStore
from compactsim.server.traces import TraceError, TraceNotFound, TraceStore, TraceTooLarge, trace_id

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30
MiB = 1 << 20


# ---- the estimate ---------------------------------------------------------------------

def test_estimate_is_fixed_plus_per_page_plus_per_trace_byte():
    assert resident_estimate(0) == limits.RESIDENT_FIXED_BYTES
    assert resident_estimate(GiB) == (80 << 20) + 17 * (GiB // 4096)
    assert resident_estimate(16 * GiB) - resident_estimate(GiB) == 17 * 15 * (GiB // 4096)
    assert resident_estimate(GiB, trace_bytes=10 * MiB) - resident_estimate(GiB) == 50 * MiB


# Started as the server starts a worker: forkserver, modules preloaded, and a main module
# importing server.main (the forkserver re-imports the main module's imports).
PEAK_RSS = """
import multiprocessing, resource, sys
import compactsim.server.main


def peak(memory, conn):
    from compactsim.server.worker import execute

    class Discard:
        def send(self, obj):
            if obj["type"] == "error":
                raise SystemExit(obj["message"])

    spec = {"seed": 1, "duration": 0.5, "machine": {"memory": memory, "cpus": 1},
            "workload": [{"name": "anon", "kind": "anon", "rate": 1000.0}]}
    execute("rss", spec, Discard())
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["compactsim.server.worker", "compactsim.sim.run",
                                "compactsim.sim.config"])
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=peak, args=(int(sys.argv[1]), send))
    p.start()
    print(recv.recv())
    p.join()
"""


def test_estimate_covers_a_real_worker_and_is_not_far_above_it(tmp_path):
    """A real worker simulating 4 GiB: its peak RSS is below the estimate, and above 7/10
    of it (the fixed part is 58 MiB with cached bytecode, 69 MiB without)."""
    script = tmp_path / "peak_rss.py"
    script.write_text(PEAK_RSS)
    out = subprocess.run([sys.executable, str(script), str(4 * GiB)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    rss, estimate = int(out.stdout), resident_estimate(4 * GiB)
    assert 0.7 * estimate < rss <= estimate, (rss, estimate)


# ---- limits ---------------------------------------------------------------------------

def test_run_within_every_cap_exceeds_nothing():
    lim = Limits(max_run_memory_bytes=4 * GiB, max_run_duration_s=60,
                 max_run_resident_bytes=resident_estimate(4 * GiB))
    assert lim.run_exceeded("run.spec", 2, 2 * GiB, 60.0) == []


def test_memory_cap_counts_every_node_and_names_the_field():
    lim = Limits(max_run_memory_bytes=4 * GiB)
    [e] = lim.run_exceeded("run.spec", 3, 2 * GiB, 1.0)
    assert e.subject == "server" and not e.retry
    assert e.description.startswith("run.spec.machine.memory_bytes: 3 node(s) x 2 GiB = 6 GiB")
    assert "> 4 GiB" in e.description and "--max-run-memory" in e.description


def test_duration_cap():
    [e] = Limits(max_run_duration_s=100).run_exceeded("sweep.base_spec", 1, GiB, 100.5)
    assert e.description == ("sweep.base_spec.duration_seconds: 100.5 s of simulated time > "
                             "100 s, the most per run (--max-run-duration)")


def test_resident_cap_gives_the_estimate_and_its_terms():
    lim = Limits(max_run_memory_bytes=1 << 50, max_run_resident_bytes=120 * MiB)
    assert lim.run_exceeded("run.spec", 1, 8 * GiB, 1.0) == []     # 80 + 34 MiB
    [e] = lim.run_exceeded("run.spec", 1, 16 * GiB, 1.0, trace_bytes=MiB)
    need = resident_estimate(16 * GiB, MiB)
    assert need == (80 << 20) + 17 * 4194304 + 5 * MiB
    assert f"about {format_bytes(need)}" in e.description
    assert "80 MiB + 17 B x 4194304 pages + 5 B x 1048576 trace bytes" in e.description
    assert "> 120 MiB" in e.description and "--max-run-resident" in e.description


def test_every_exceeded_cap_is_reported():
    lim = Limits(max_run_memory_bytes=GiB, max_run_duration_s=1, max_run_resident_bytes=85 * MiB)
    found = lim.run_exceeded("run.spec", 1, 2 * GiB, 2.0)
    assert [e.description.split(":")[0] for e in found] == [
        "run.spec.machine.memory_bytes", "run.spec.duration_seconds", "run.spec"]


def test_queue_limits_global_and_per_user_with_retry():
    assert queue_exceeded("alice", 1, 9, 10, 4, 5) == []
    [g] = queue_exceeded("alice", 2, 9, 10, 0, None)
    assert g.subject == "server" and g.retry and "9 runs waiting + 2 new > 10" in g.description
    [u] = queue_exceeded("alice", 1, 0, 10, 5, 5)
    assert u.subject == "user:alice" and u.retry
    assert "'alice' has 5 waiting + 1 new > 5" in u.description
    assert len(queue_exceeded("bob", 20, 0, 10, 0, 5)) == 2


def test_repeated_field_bounds():
    assert limits.repeated_exceeded([("run.labels", 64, 64, "labels")]) == []
    assert limits.repeated_exceeded([("run.labels", 65, 64, "labels"),
                                     ("run.spec.workload", 3, 64, "groups")]) == [
        Exceeded("server", "run.labels: 65 labels; at most 64 per request")]


def test_trace_limit_and_bad_limits():
    assert Limits(max_trace_bytes=10).trace_exceeded(10) == []
    [e] = Limits(max_trace_bytes=10).trace_exceeded(11)
    assert "--max-trace-bytes" in e.description and not e.retry
    with pytest.raises(ValueError, match="max_running_per_user"):
        Limits(max_running_per_user=0)
    with pytest.raises(ValueError, match="max_trace_bytes"):
        Limits(max_trace_bytes=0)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1536, 256 * GiB, 113246208)] == [
        "0 B", "1023 B", "1.5 KiB", "256 GiB", "108 MiB"]


# ---- traces ---------------------------------------------------------------------------

def _upload(store: TraceStore, *chunks: bytes):
    up = store.upload("alice")
    try:
        for c in chunks:
            up.write(c)
        return up.commit()
    finally:
        up.discard()


def test_upload_is_content_addressed_and_kept_once(tmp_path):
    store = TraceStore(tmp_path, max_bytes=1000)
    info = _upload(store, b"abc", b"def")
    sha = hashlib.sha256(b"abcdef").hexdigest()
    assert (info.name, info.size) == (f"traces/{sha}", 6)
    assert (tmp_path / "traces" / sha).read_bytes() == b"abcdef"
    again = _upload(store, b"abcdef")
    assert again == info
    assert os.listdir(tmp_path / "traces") == [sha]
    assert store.path(info.name) == (tmp_path / "traces" / sha).resolve()
    assert store.worker_spec({"workload": [{"name": "r", "replay": {"path": info.name}},
                                           {"name": "a"}]}) == {
        "workload": [{"name": "r", "replay": {"path": str(store.path(info.name))}},
                     {"name": "a"}]}


def test_upload_over_the_limit_or_empty_leaves_nothing(tmp_path):
    store = TraceStore(tmp_path, max_bytes=5)
    with pytest.raises(TraceTooLarge):
        _upload(store, b"abc", b"def")
    with pytest.raises(TraceError, match="empty"):
        _upload(store)
    assert os.listdir(tmp_path / "traces") == []


def test_partial_uploads_are_removed_on_open(tmp_path):
    store = TraceStore(tmp_path, max_bytes=100)
    up = store.upload("alice")
    up.write(b"half")          # a crash here leaves the partial file
    assert len(os.listdir(tmp_path / "traces")) == 1
    TraceStore(tmp_path, max_bytes=100)
    assert os.listdir(tmp_path / "traces") == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "traces/../compactsim.db",
                                  "traces/" + "A" * 64, "traces/" + "0" * 63, "traces/",
                                  "traces/" + "0" * 64 + "/x", " traces/" + "0" * 64])
def test_names_other_than_traces_sha256_are_refused(tmp_path, name):
    store = TraceStore(tmp_path, max_bytes=100)
    with pytest.raises(TraceError, match="must name an uploaded trace"):
        store.path(name)
    with pytest.raises(TraceError):
        trace_id(name)


def test_unknown_symlinked_and_non_file_traces_are_refused(tmp_path):
    store = TraceStore(tmp_path, max_bytes=100)
    (tmp_path / "secret").write_text("x")
    link = "1" * 64
    (tmp_path / "traces" / link).symlink_to(tmp_path / "secret")
    (tmp_path / "traces" / ("2" * 64)).mkdir()
    with pytest.raises(TraceNotFound):
        store.path("traces/" + "0" * 64)
    for name in (link, "2" * 64):
        with pytest.raises(TraceError, match="not a regular file"):
            store.path(f"traces/{name}")
        with pytest.raises(TraceError):
            store.worker_spec({"workload": [{"replay": {"path": f"traces/{name}"}}]})


# ---- the manager's per-user counting ---------------------------------------------------

SHORT = {"seed": 3, "duration": "0.2s", "machine": {"memory": "64MiB", "cpus": 1},
         "workload": [{"name": "anon", "kind": "anon", "rate": 200}]}
LONG = {**SHORT, "duration": "20s", "pace": 1.0}


@pytest.fixture
def manager_for(tmp_path):
    made = []

    def make(**kw):
        store = RunStore(tmp_path / "runs.db")
        m = RunManager(store, ProcessExecutor(2, cancel_grace_s=1.0), max_queue=10, **kw)
        made.append((m, store))
        return m

    yield make
    for m, store in made:
        m.shutdown()
        store.close()


def test_manager_keeps_a_user_at_the_running_limit_queued_and_counts_queued_runs(manager_for):
    m = manager_for(max_queued_per_user=2, max_running_per_user=1)
    a1 = m.submit(LONG, creator="alice")
    m.wait_for_state(a1.id, RunState.RUNNING, timeout_s=10)
    a2, a3 = m.submit(LONG, creator="alice"), m.submit(LONG, creator="alice")
    with pytest.raises(QueueLimit) as e:
        m.submit(LONG, creator="alice")
    [limit] = e.value.exceeded
    assert limit.subject == "user:alice" and "> 2 (--max-queued-per-user)" in limit.description
    assert (m.queued_by("alice"), m.running_by("alice")) == (2, 1)
    b1 = m.submit(SHORT, creator="bob")             # a worker is free: bob's run goes first
    assert m.wait_for_state(b1.id, timeout_s=20).state is RunState.SUCCEEDED
    assert [m.store.get_run(r.id).state for r in (a2, a3)] == [RunState.QUEUED] * 2
    m.cancel(a2.id)                                 # a queued run leaves the count at once
    assert m.queued_by("alice") == 1
    m.cancel(a1.id)
    m.wait_for_state(a3.id, RunState.RUNNING, timeout_s=10)
    assert (m.queued_by("alice"), m.running_by("alice")) == (0, 1)


def test_manager_worker_spec_hook_feeds_the_worker_and_its_failure_fails_the_run(manager_for):
    seen = []

    def worker_spec(spec):
        seen.append(spec["seed"])
        if spec["seed"] == 13:
            raise TraceError("no uploaded trace traces/x on this server")
        return {**spec, "duration": "0.1s"}

    m = manager_for(worker_spec=worker_spec)
    ok = m.submit(SHORT)
    bad = m.submit({**SHORT, "seed": 13})
    done = m.wait_for_state(ok.id, timeout_s=20)
    assert done.state is RunState.SUCCEEDED and done.progress.sim_time_s == pytest.approx(0.1)
    failed = m.wait_for_state(bad.id, timeout_s=20)
    assert failed.state is RunState.FAILED
    assert "no uploaded trace" in failed.error_message
    assert m.store.get_run(ok.id).spec["duration"] == "0.2s"    # the stored spec is kept
    assert sorted(seen) == [3, 13]
