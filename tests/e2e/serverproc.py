"""What the end-to-end tests share: the real `compactsim-server` in a subprocess, a real
channel on loopback (plaintext or TLS, with or without a bearer token), small specs, and
waiting helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
from grpc_status import rpc_status

from compactsim.client.channel import open_channel
from compactsim.proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc, spec_pb2
from compactsim.sim.tracepoint import fmt_mm_page_alloc, fmt_mm_page_free, format_line, pfn_to_page

ROOT = Path(__file__).resolve().parents[2]
R = run_pb2.Run
TERMINAL = (R.SUCCEEDED, R.FAILED, R.CANCELLED)
# the token file of a lab server (the lab_server fixture): alice and bob users, root an admin
LAB_TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789",
              "root": "root-token-0123456789"}


class Server:
    """`python -m server.main` on 127.0.0.1:0; `token` and `ca` (a PEM file) shape the
    channel `stub` uses; `channel_for()` makes others."""

    def __init__(self, data_dir: Path, *extra: str, token: str | None = None,
                 ca: Path | None = None, env: dict | None = None):
        self.data_dir = data_dir
        self.extra = extra
        self.token = token
        self.ca = ca
        self.env = env
        self.proc: subprocess.Popen | None = None

    def channel_for(self, token: str | None = None, ca: Path | None = None,
                    host: str = "127.0.0.1", server_name: str | None = None) -> grpc.Channel:
        return open_channel(f"{host}:{self.port}", token=token, ca_cert=ca or self.ca,
                            server_name=server_name)

    def stub_for(self, token: str | None = None) -> simulator_pb2_grpc.SimulatorStub:
        return simulator_pb2_grpc.SimulatorStub(self.channel_for(token))

    def start(self) -> Server:
        port_file = self.data_dir / f"port-{uuid.uuid4().hex[:6]}"
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compactsim.server.main", "--listen", "127.0.0.1:0",
             "--port-file", str(port_file), "--data-dir", str(self.data_dir), "--workers", "2",
             "--metrics-listen", "127.0.0.1:0", *self.extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert self.proc.poll() is None, (self.data_dir / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.channel = self.channel_for(self.token)
        self.stub = simulator_pb2_grpc.SimulatorStub(self.channel)
        return self

    def stop(self, timeout: float = 20) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc


def spec(seed=3, duration=0.5, pace=0.0, rate=2000.0) -> spec_pb2.Spec:
    s = spec_pb2.Spec(seed=seed, duration_seconds=duration, pace=pace)
    s.machine.memory_bytes = 64 << 20
    s.machine.cpus = 1
    s.sampling.interval_seconds = 0.05
    g = s.workload.add(name="anon", kind=spec_pb2.PAGE_KIND_ANON, tasks=2, rate=rate)
    g.order_mix.update({0: 0.8, 3: 0.2})
    return s


def create(stub, s=None, **kw) -> run_pb2.Run:
    return stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=s or spec(), **kw)))


def wait_state(stub, name, states=TERMINAL, timeout=20) -> run_pb2.Run:
    deadline = time.monotonic() + timeout
    while True:
        run = stub.GetRun(simulator_pb2.GetRunRequest(name=name))
        if run.state in states:
            return run
        assert time.monotonic() < deadline, f"{name} still {R.State.Name(run.state)}"
        time.sleep(0.05)


def rss_mib(pid: int) -> float:
    """The resident memory of process `pid` now (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _children() -> dict[int, list[int]]:
    """pid -> its child pids, from /proc."""
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def workers(server: Server) -> list[int]:
    """The run processes: the server's grandchildren (its children are the forkserver and
    the resource tracker)."""
    kids = _children()
    return [g for c in kids.get(server.proc.pid, []) for g in kids.get(c, [])]


def details(err, kind):
    """The details of type `kind` of a refused call (grpc.RpcError) or a google.rpc.Status
    (Run.error)."""
    st = rpc_status.from_call(err) if isinstance(err, grpc.RpcError) else err
    out = []
    for d in st.details:
        if d.Is(kind.DESCRIPTOR):
            msg = kind()
            d.Unpack(msg)
            out.append(msg)
    return out


def watch_all(stub, name, **kw):
    return list(stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, **kw), timeout=30))


def write_trace(path, pairs=40):
    """An ftrace text of `pairs` allocations, each freed later."""
    lines = []
    for i in range(pairs):
        pfn = 4096 + 8 * i
        lines.append(format_line(0.01 * i, 0, "a", 1, "mm_page_alloc", fmt_mm_page_alloc(
            pfn_to_page(pfn), pfn, i % 3, 0, "GFP_KERNEL")) + "\n")
    for i in range(pairs):
        pfn = 4096 + 8 * i
        lines.append(format_line(0.5 + 0.01 * i, 0, "a", 1, "mm_page_free", fmt_mm_page_free(
            pfn_to_page(pfn), pfn, i % 3)) + "\n")
    path.write_text("".join(lines))
    return path


def replay_spec(path: str) -> spec_pb2.Spec:
    s = spec_pb2.Spec(seed=1, duration_seconds=1.0)
    s.machine.memory_bytes = 64 << 20
    s.machine.cpus = 1
    s.kernel.pcp = False
    s.workload.add(name="replay", kind=spec_pb2.PAGE_KIND_REPLAY).replay.path = path
    return s
