"""The server under test in its own process, and the pinner that keeps its workers on the
simulation CPU and samples their CPU time and run-queue wait (/proc/PID/schedstat).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.loadtest import ROOT, R


class ServerProcess:
    """`compactsim-server` on 127.0.0.1:0 with its own data directory."""

    def __init__(self, data_dir: Path, max_queue: int):
        self.data_dir = data_dir
        self.max_queue = max_queue
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> ServerProcess:
        exe = Path(sys.executable).with_name("compactsim-server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "compactsim.server.main"]
        port_file = self.data_dir / "port"
        self.log_path = self.data_dir / "server.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                 "--data-dir", str(self.data_dir), "--workers", "1",
                 "--max-queue", str(self.max_queue), "--metrics-listen", "127.0.0.1:0",
                 "--log-level", "WARNING"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def vm_hwm_bytes(self) -> int:
        """Peak resident set of the server process (VmHWM), in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid` -> its parent, from the parent links in /proc/*/stat."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children[ppid].append(int(entry))
    out, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for c in children.get(parent, ()):
            out[c] = parent
            todo.append(c)
    return out


def schedstat(pid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for one) of a process; None when gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class Worker:
    """A worker process the pinner saw: when it appeared, its latest schedstat."""

    pid: int
    first_seen_ns: int          # time.time_ns()
    cpu_ns: int = 0
    wait_ns: int = 0


class WorkerPinner(threading.Thread):
    """Keeps every descendant of the server (forkserver, workers) on `cpus`, and samples
    the CPU time and run-queue wait of the workers (children of the forkserver) every
    `interval_s` while they live."""

    def __init__(self, server_pid: int, cpus: set[int], interval_s: float = 0.05):
        super().__init__(name="pinner", daemon=True)
        self.server_pid = server_pid
        self.cpus = cpus
        self.interval_s = interval_s
        self.seen: set[int] = set()
        self.moved: set[int] = set()      # found elsewhere and moved
        self.workers: dict[int, Worker] = {}
        self._live: set[int] = set()
        self._halt = threading.Event()

    def pin_now(self) -> None:
        for pid, parent in descendants(self.server_pid).items():
            if pid in self.seen:
                continue
            try:
                if os.sched_getaffinity(pid) != self.cpus:
                    os.sched_setaffinity(pid, self.cpus)
                    self.moved.add(pid)
                self.seen.add(pid)
            except OSError:   # gone meanwhile
                continue
            if parent != self.server_pid:
                self.workers[pid] = Worker(pid, time.time_ns())
                self._live.add(pid)

    def sample(self) -> None:
        for pid in list(self._live):
            st = schedstat(pid)
            if st is None:
                self._live.discard(pid)
            else:
                self.workers[pid].cpu_ns, self.workers[pid].wait_ns = st

    def worker_of(self, run: R) -> Worker | None:
        """The worker that appeared while `run` was running (one worker at a time)."""
        start = run.start_time.ToNanoseconds()
        end = run.end_time.ToNanoseconds()
        found = [w for w in self.workers.values() if start <= w.first_seen_ns <= end]
        return found[0] if len(found) == 1 else None

    def run(self) -> None:
        n = 0
        while not self._halt.wait(self.interval_s):
            if n % 2 == 0:
                self.pin_now()
            self.sample()
            n += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()
