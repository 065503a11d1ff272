"""Faults, end to end: the real `compactsim-server` process, real worker processes, the real
SQLite file, real channels on loopback; what breaks is broken for real (SIGKILL, a full
tmpfs, clients that stop reading or vanish).

- a worker killed mid-run fails its run only;
- the server killed while runs are queued, running and watched, then restarted: the
  restart policy of server/manager.py;
- the data directory's disk full: clear errors, no corruption, recovery without a restart;
- watchers that never read: the server's memory stays flat and other calls stay fast;
- clients that disconnect mid-stream: no threads left behind, the run completes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverproc import ROOT, R, Server, create, descendants, spec, wait_state, watch_all, workers

from compactsim.proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc

SERVICE = "compactsim.v1.Simulator"


# ---- helpers -------------------------------------------------------------------------------

def _wait_workers(server: Server, n: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := workers(server)) != n:
        assert time.monotonic() < deadline, f"{len(found)} workers, not {n}"
        time.sleep(0.05)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _proc_status(pid: int, key: str) -> int:
    """A number from /proc/PID/status: "VmRSS" (kB), "Threads"..."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _health(server: Server) -> int:
    health = health_pb2_grpc.HealthStub(server.channel)
    return health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status


def _get(server: Server, name: str) -> run_pb2.Run:
    return server.stub.GetRun(simulator_pb2.GetRunRequest(name=name), timeout=10)


def _error_info(run: run_pb2.Run) -> error_details_pb2.ErrorInfo:
    infos = [d for d in run.error.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, run.error
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


def _state_changes(events) -> list[tuple[int, int]]:
    return [(e.state_change.previous_state, e.state_change.state) for e in events
            if e.WhichOneof("kind") == "state_change"]


class Watcher(threading.Thread):
    """Reads one WatchRun stream to its end, on a channel of its own: every message, and
    the status code it ended with (None: it ended normally)."""

    def __init__(self, server: Server, name: str, **request):
        super().__init__(daemon=True)
        self.channel = server.channel_for(server.token)
        stub = simulator_pb2_grpc.SimulatorStub(self.channel)
        self.call = stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, **request),
                                  timeout=120)
        self.messages: list[simulator_pb2.WatchRunResponse] = []
        self.code: grpc.StatusCode | None = None
        self.start()

    def run(self) -> None:
        try:
            for m in self.call:
                self.messages.append(m)
        except grpc.RpcError as e:
            self.code = e.code()
        finally:
            self.channel.close()

    @property
    def events(self) -> list[run_pb2.RunEvent]:
        return [m.event for m in list(self.messages) if m.WhichOneof("message") == "event"]

    def wait_for(self, pred, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            assert self.is_alive() and time.monotonic() < deadline, \
                (self.code, [m.WhichOneof("message") for m in self.messages])
            time.sleep(0.02)

    def finish(self, timeout: float = 20) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the watch stream did not end"


def _saw_progress(w: Watcher) -> bool:
    return any(e.WhichOneof("kind") == "progress" for e in w.events)


def _recorded(server: Server, name: str) -> tuple[bytes, bytes, list[bytes], list[bytes]]:
    """Everything the API gives about a run, serialized: GetRun, the full report (a
    SUCCEEDED run's), every sample page, the whole event stream."""
    stub = server.stub
    run = stub.GetRun(simulator_pb2.GetRunRequest(name=name))
    report = run_pb2.RunReport()
    if run.state == R.SUCCEEDED:
        report = stub.GetRunReport(simulator_pb2.GetRunReportRequest(
            name=name + "/report", view=run_pb2.RUN_REPORT_VIEW_FULL))
        assert report.procfs_files and report.histograms
    pages, token = [], ""
    while True:
        page = stub.ListRunSamples(simulator_pb2.ListRunSamplesRequest(
            parent=name, page_size=7, page_token=token))
        pages.append(page.SerializeToString(deterministic=True))
        if not (token := page.next_page_token):
            break
    events = [m.SerializeToString(deterministic=True)
              for m in watch_all(stub, name, after_sequence=0)]
    assert len(events) > 3 and (len(pages) > 1 or run.state != R.SUCCEEDED)
    return (run.SerializeToString(deterministic=True), report.SerializeToString(
        deterministic=True), pages, events)


# ---- a worker killed -----------------------------------------------------------------------

def test_sigkill_of_a_worker_fails_only_its_run(server):
    doomed = create(server.stub, spec(duration=2.0, pace=1.0))
    wait_state(server.stub, doomed.name, (R.RUNNING,))
    (victim,) = _wait_workers(server, 1)
    other = create(server.stub, spec(seed=4, duration=1.0, pace=0.5))
    wait_state(server.stub, other.name, (R.RUNNING,))
    _wait_workers(server, 2)
    waiting = create(server.stub, spec(seed=5))          # both workers busy: it waits
    assert _get(server, waiting.name).state == R.QUEUED
    watcher = Watcher(server, doomed.name, after_sequence=0)
    watcher.wait_for(_saw_progress)

    os.kill(victim, signal.SIGKILL)

    failed = wait_state(server.stub, doomed.name)
    assert failed.state == R.FAILED and failed.error.code == code_pb2.INTERNAL
    assert "worker died: signal 9 (SIGKILL)" in failed.error.message
    assert _error_info(failed).reason == "WORKER_DIED"
    # the watcher saw the FAILED state change, then its stream ended normally, no gaps
    watcher.finish()
    assert watcher.code is None
    seqs = [e.sequence for e in watcher.events]
    assert seqs == list(range(1, len(seqs) + 1))
    last = watcher.events[-1].state_change
    assert (last.previous_state, last.state) == (R.RUNNING, R.FAILED)
    assert "SIGKILL" in last.error.message
    # the others are untouched: the running one and the queued one finish
    assert wait_state(server.stub, other.name).state == R.SUCCEEDED
    done = wait_state(server.stub, waiting.name)
    assert done.state == R.SUCCEEDED
    assert done.start_time.ToNanoseconds() >= failed.end_time.ToNanoseconds()
    assert _state_changes(e.event for e in watch_all(server.stub, waiting.name,
                                                     after_sequence=0)[1:]) == \
        [(R.STATE_UNSPECIFIED, R.QUEUED), (R.QUEUED, R.RUNNING), (R.RUNNING, R.SUCCEEDED)]
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING
    assert server.proc.poll() is None


# ---- the server killed -----------------------------------------------------------------

def test_sigkill_of_the_server_then_restart(make_server, tmp_path):
    s = make_server()
    finished = [create(s.stub, spec(seed=3)), create(s.stub, spec(seed=4))]
    for r in finished:
        assert wait_state(s.stub, r.name).state == R.SUCCEEDED
    cancelled = create(s.stub, spec(duration=5.0, pace=1.0))
    wait_state(s.stub, cancelled.name, (R.RUNNING,))
    s.stub.CancelRun(simulator_pb2.CancelRunRequest(name=cancelled.name))
    assert wait_state(s.stub, cancelled.name).state == R.CANCELLED
    finished.append(cancelled)
    before = {r.name: _recorded(s, r.name) for r in finished}

    # the first reports progress every 0.75 s, the second only every 15 s: its worker would
    # send nothing for a long while after the kill
    running = [create(s.stub, spec(seed=6, duration=30.0, pace=2.0)),
               create(s.stub, spec(seed=7, duration=600.0, pace=2.0))]
    for r in running:
        wait_state(s.stub, r.name, (R.RUNNING,))
    queued = [create(s.stub, spec(seed=8)), create(s.stub, spec(seed=9))]
    assert [_get(s, r.name).state for r in queued] == [R.QUEUED, R.QUEUED]
    watchers = {r.name: Watcher(s, r.name, after_sequence=0) for r in running + queued}
    watchers[running[0].name].wait_for(_saw_progress)
    watchers[running[1].name].wait_for(lambda w: len(w.events) >= 2)   # QUEUED, RUNNING
    for r in queued:
        watchers[r.name].wait_for(lambda w: w.events)
    processes = descendants(s.proc.pid)
    assert len(workers(s)) == 2 and len(processes) >= 3
    killed_at = time.time_ns()

    s.proc.kill()
    s.proc.wait()

    # every watch stream ends UNAVAILABLE on the client side
    for w in watchers.values():
        w.finish()
        assert w.code == grpc.StatusCode.UNAVAILABLE
    # the orphaned forkserver and workers do not run on
    deadline = time.monotonic() + 5
    while (left := [p for p in processes if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the killed server still running: {left}"

    s2 = make_server(data_dir=tmp_path)
    # finished runs: bit for bit what they were
    for name, record in before.items():
        assert _recorded(s2, name) == record, name
    # cut-off runs: FAILED, interrupted
    for r in running:
        run = _get(s2, r.name)
        assert run.state == R.FAILED and run.error.code == code_pb2.UNAVAILABLE
        info = _error_info(run)
        assert info.reason == "RUN_INTERRUPTED" and info.metadata["interrupted"] == "true"
    # the watch streams resume after the restart without gaps, each to its run's end
    for r in running + queued:
        seen = watchers[r.name].events
        rest = [m.event for m in watch_all(s2.stub, r.name, after_sequence=seen[-1].sequence)
                if m.WhichOneof("message") == "event"]
        events = seen + rest
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        full = [m.event for m in watch_all(s2.stub, r.name, after_sequence=0)[1:]]
        assert events == full
        changes = _state_changes(events)
        if r in running:
            assert changes[-2:] == [(R.QUEUED, R.RUNNING), (R.RUNNING, R.FAILED)]
        else:   # still QUEUED across the kill, then started by the new server
            assert changes == [(R.STATE_UNSPECIFIED, R.QUEUED), (R.QUEUED, R.RUNNING),
                               (R.RUNNING, R.SUCCEEDED)]
            started = next(e for e in events if e.state_change.state == R.RUNNING)
            assert started.event_time.ToNanoseconds() > killed_at
    assert _health(s2) == health_pb2.HealthCheckResponse.SERVING


# ---- watchers that never read, clients that vanish ----------------------------------------

# A client in its own process: opens N WatchRun streams of a run, reads the first message
# (the snapshot) of each, says "ready", then does what it is told: "stop" (SIGSTOP itself:
# it never reads again) or nothing (it waits to be killed).
_CLIENT = """
import os, signal, sys, time
import grpc
from compactsim.proto.v1 import simulator_pb2, simulator_pb2_grpc
port, name, n, then = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
stub = simulator_pb2_grpc.SimulatorStub(grpc.insecure_channel("127.0.0.1:" + port))
calls = [stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, after_sequence=0,
                                                     heartbeat_interval_seconds=1))
         for _ in range(n)]
for c in calls:
    assert next(c).WhichOneof("message") == "snapshot"
print("ready", flush=True)
if then == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(600)
"""


@contextlib.contextmanager
def _client_process(server: Server, name: str, n: int, then: str):
    proc = subprocess.Popen([sys.executable, "-c", _CLIENT, str(server.port), name, str(n),
                             then], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _latencies(server: Server, name: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        _get(server, name)
        out.append(time.perf_counter() - t)
        time.sleep(0.02)
    return sorted(out)


def _settled_threads(pid: int, at_most: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (n := _proc_status(pid, "Threads")) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def test_watchers_that_never_read_do_not_grow_the_server(server):
    """Streams held in this process and never read, and more in a client process that is
    stopped (it does not even read its socket), all on a busy run: the server's resident
    memory stays flat while the run produces its events, GetRun stays fast, and a held
    stream, read at last, still has every event. (Two of each: a waiting watch takes one
    of the server's handler threads for up to half a second at a time, and more watches
    than that pool has threads delay every other call; that is a matter of load, not of
    clients that do not read.)"""
    run = create(server.stub, spec(duration=6.0, pace=2.0, rate=4000.0))
    wait_state(server.stub, run.name, (R.RUNNING,))
    _latencies(server, run.name, 5)   # warm up
    channel = server.channel_for(server.token)
    stub = simulator_pb2_grpc.SimulatorStub(channel)
    held = [stub.WatchRun(simulator_pb2.WatchRunRequest(
        name=run.name, after_sequence=0, heartbeat_interval_seconds=1)) for _ in range(2)]
    with _client_process(server, run.name, 2, "stop") as client:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{client.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] \
                != "T":
            assert time.monotonic() < deadline, "the client did not stop"
            time.sleep(0.02)
        rss = [_proc_status(server.proc.pid, "VmRSS")]
        lat: list[float] = []
        while _get(server, run.name).state == R.RUNNING:
            lat += _latencies(server, run.name, 5)
            rss.append(_proc_status(server.proc.pid, "VmRSS"))
        assert _get(server, run.name).state == R.SUCCEEDED
        events = _get(server, run.name).progress
        assert len(rss) >= 5 and len(lat) >= 25
        assert max(rss) - rss[0] < 16 * 1024, f"server RSS grew: {rss} kB"
        assert lat[len(lat) // 2] < 0.1 and lat[-1] < 1.0, lat
        assert server.proc.poll() is None and _health(server) == \
            health_pb2.HealthCheckResponse.SERVING
    # nothing was dropped to keep memory flat: a held stream has it all, in order
    msgs = list(held[0])
    assert msgs[0].WhichOneof("message") == "snapshot"
    seqs = [m.event.sequence for m in msgs if m.WhichOneof("message") == "event"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert msgs[-1].event.state_change.state == R.SUCCEEDED
    assert sum(m.event.WhichOneof("kind") == "progress" for m in msgs[1:]) >= 10
    assert events.fraction == 1.0
    channel.close()


def test_clients_that_disconnect_mid_stream(server):
    """Rounds of watchers that go away mid-stream, their channel closed or their process
    killed: the server keeps answering, its thread count does not grow from round to
    round, and the run they watched completes with its events intact."""
    run = create(server.stub, spec(duration=8.0, pace=2.0))
    wait_state(server.stub, run.name, (R.RUNNING,))

    def round_of_drops() -> None:
        channels = [server.channel_for(server.token) for _ in range(3)]
        streams = [simulator_pb2_grpc.SimulatorStub(ch).WatchRun(
            simulator_pb2.WatchRunRequest(name=run.name, after_sequence=0))
            for ch in channels for _ in range(4)]
        for st in streams:
            assert next(st).WhichOneof("message") == "snapshot"
        with _client_process(server, run.name, 6, "wait"):
            pass   # killed as soon as its streams are open
        for ch in channels:
            ch.close()
        assert _get(server, run.name).state == R.RUNNING

    round_of_drops()   # the first round fills the server's thread pools
    time.sleep(1)
    threads = _proc_status(server.proc.pid, "Threads")
    for _ in range(3):
        round_of_drops()
    # 54 more dropped streams; a thread kept per stream would show. The default executor
    # may still grow to its bound (min(32, CPUs + 4)) under a busy machine, nothing more.
    pool = min(32, (os.cpu_count() or 1) + 4)
    assert _settled_threads(server.proc.pid, threads) <= threads + pool
    done = wait_state(server.stub, run.name)
    assert done.state == R.SUCCEEDED
    msgs = watch_all(server.stub, run.name, after_sequence=0)
    seqs = [m.event.sequence for m in msgs if m.WhichOneof("message") == "event"]
    assert seqs == list(range(1, len(seqs) + 1)) and msgs[-1].event.state_change.state == \
        R.SUCCEEDED
    lat = _latencies(server, run.name, 20)
    assert lat[len(lat) // 2] < 0.1, lat
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


# ---- the data directory's disk full ---------------------------------------------------------

class _Tmpfs:
    """A small tmpfs as the data directory, filled by a file taking every free byte. Needs
    the right to mount (root); skips the test otherwise."""

    message = "compactsim.db is full"      # SQLITE_FULL: the store's StoreFull

    def __init__(self, path: Path, size_mb: int = 24):
        path.mkdir()
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                                str(path)], capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
        self.path = path
        self.filler = path / "filler"

    def fill(self, server: Server) -> None:
        with open(self.filler, "wb", buffering=0) as f:
            chunk = 1 << 20
            while chunk >= 512:
                try:
                    f.write(b"\0" * chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk //= 2

    def free(self, server: Server) -> None:
        self.filler.unlink()

    def close(self) -> None:
        if subprocess.run(["umount", str(self.path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)])


class _FileSizeLimit:
    """No filesystem of its own (works unprivileged): the server process's RLIMIT_FSIZE set
    to the size of the store's write-ahead log now, so the log cannot grow (the server is a
    Python process: SIGXFSZ is ignored, the write fails with EFBIG)."""

    message = "I/O error on the store"     # EFBIG: SQLITE_IOERR_WRITE, the store's StoreIOError

    def __init__(self, path: Path):
        path.mkdir()
        self.path = path

    def fill(self, server: Server) -> None:
        self.limits = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        wal = (self.path / "compactsim.db-wal").stat().st_size
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (wal, self.limits[1]))

    def free(self, server: Server) -> None:
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, self.limits)

    def close(self) -> None:
        pass


@pytest.fixture(params=[_Tmpfs, _FileSizeLimit], ids=["tmpfs", "rlimit_fsize"])
def small_disk(request, tmp_path):
    disk = request.param(tmp_path / "data")
    try:
        yield disk
    finally:
        disk.close()


def test_disk_full_refuses_writes_clearly_and_recovers_without_a_restart(small_disk):
    """The data directory's disk fills up while one run is running and another waits:
    CreateRun and CancelRun are refused UNAVAILABLE with the store's message and change
    nothing; reads and health go on (SERVING: the server still answers, and needs nothing
    but space); the waiting run stays QUEUED; the running run, whose results cannot be
    stored, is marked FAILED "store_error" once a write lands again. After space is freed
    everything works again without a restart, and the file is intact."""
    data = small_disk.path
    s = Server(data, "--workers", "1")
    try:
        s.start()
        done = create(s.stub, spec())
        assert wait_state(s.stub, done.name).state == R.SUCCEEDED
        before = _recorded(s, done.name)
        live = create(s.stub, spec(seed=4, duration=2.0, pace=1.0))
        wait_state(s.stub, live.name, (R.RUNNING,))
        waiting = create(s.stub, spec(seed=5))
        assert waiting.state == R.QUEUED

        small_disk.fill(s)

        with pytest.raises(grpc.RpcError) as e:
            create(s.stub, spec(seed=6))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert small_disk.message in e.value.details()
        listed = s.stub.ListRuns(simulator_pb2.ListRunsRequest())
        assert {r.name for r in listed.runs} == {done.name, live.name, waiting.name}
        # a cancel that cannot be stored is refused, and cancels nothing
        with pytest.raises(grpc.RpcError) as e:
            s.stub.CancelRun(simulator_pb2.CancelRunRequest(name=live.name))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert small_disk.message in e.value.details()
        with pytest.raises(grpc.RpcError) as e:   # a queued one stays queued
            s.stub.CancelRun(simulator_pb2.CancelRunRequest(name=waiting.name))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # the running run's worker ends; nothing it sent could be stored
        _wait_workers(s, 0, timeout=30)
        time.sleep(0.5)   # a few pump passes
        assert _get(s, waiting.name).state == R.QUEUED
        assert _recorded(s, done.name) == before
        assert _health(s) == health_pb2.HealthCheckResponse.SERVING
        assert s.proc.poll() is None

        small_disk.free(s)

        failed = wait_state(s.stub, live.name)
        assert failed.state == R.FAILED and _error_info(failed).reason == "STORE_ERROR"
        assert "results could not be stored" in failed.error.message
        assert small_disk.message in failed.error.message
        assert wait_state(s.stub, waiting.name).state == R.SUCCEEDED
        again = create(s.stub, spec(seed=7))
        assert wait_state(s.stub, again.name).state == R.SUCCEEDED
        assert _recorded(s, done.name) == before
        assert s.stop() == 0
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        if s.proc is not None:
            s.log.close()
    db = sqlite3.connect(data / "compactsim.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        states = dict(db.execute("SELECT id, state FROM runs"))
    finally:
        db.close()
    assert states == {done.name[5:]: "SUCCEEDED", live.name[5:]: "FAILED",
                      waiting.name[5:]: "SUCCEEDED", again.name[5:]: "SUCCEEDED"}
