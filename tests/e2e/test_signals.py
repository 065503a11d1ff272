"""SIGTERM and SIGINT stop the server cleanly (exit 0, no traceback) whenever they come:
while it imports and builds itself, before its port file appears, just after, while it
serves, and twice 50 ms apart.

A delay counts from the moment the process has loaded grpc's extension (seen in
/proc/PID/maps): the server's main module handles the signals before it imports grpc, and
the few milliseconds of interpreter start-up before that line runs cannot be covered by
any Python program, so they are not tested."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
from serverproc import ROOT

STARTED = "serving on port"


@pytest.fixture(autouse=True)
def _no_server_left():
    """Whatever a test asserts, no server it started outlives it."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _STARTED.clear()


_STARTED: list[subprocess.Popen] = []


def _start(data_dir):
    port_file = data_dir / f"port-{uuid.uuid4().hex[:6]}"
    log = open(data_dir / f"{port_file.name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "compactsim.server.main", "--listen", "127.0.0.1:0",
         "--port-file", str(port_file), "--data-dir", str(data_dir), "--workers", "1",
         "--metrics-listen", "127.0.0.1:0"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    return proc, port_file, log


def _wait_grpc_loaded(proc, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if "cygrpc" in open(f"/proc/{proc.pid}/maps").read():
                return
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)


def _wait_port_file(proc, port_file, timeout=30):
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)


def _stopped(proc, log, port_file) -> int:
    try:
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (port_file.parent / f"{port_file.name}.log").read_text(errors="replace")
    assert rc == 0, f"exit {rc}\n{text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    return rc


@pytest.mark.parametrize("sig, delay", [
    *((signal.SIGTERM, d) for d in (0.0, 0.05, 0.15, 0.4, 1.0)),
    (signal.SIGINT, 0.0), (signal.SIGINT, 0.4)])
def test_stop_signal_while_starting(tmp_path, sig, delay):
    proc, port_file, log = _start(tmp_path)
    _wait_grpc_loaded(proc)
    time.sleep(delay)
    proc.send_signal(sig)
    _stopped(proc, log, port_file)


@pytest.mark.parametrize("after", [0.0, 0.02, 0.1, 0.5])
def test_sigterm_after_the_port_file(tmp_path, after):
    proc, port_file, log = _start(tmp_path)
    _wait_port_file(proc, port_file)
    time.sleep(after)
    proc.send_signal(signal.SIGTERM)
    _stopped(proc, log, port_file)


@pytest.mark.parametrize("delay", [0.0, 0.2, 1.0, "port file"])
def test_two_sigterms_50ms_apart(tmp_path, delay):
    proc, port_file, log = _start(tmp_path)
    if delay == "port file":
        _wait_port_file(proc, port_file)
    else:
        _wait_grpc_loaded(proc)
        time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _stopped(proc, log, port_file)


def test_a_signal_before_the_port_file_means_no_port_file(tmp_path):
    """Stopped while starting: it never announces a port it is not serving on."""
    proc, port_file, log = _start(tmp_path)
    _wait_grpc_loaded(proc)
    assert not port_file.exists()
    proc.send_signal(signal.SIGTERM)
    _stopped(proc, log, port_file)
    assert not port_file.exists()
