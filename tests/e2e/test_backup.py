"""compactsim-backup against a live server: the copy is consistent, a server started on it
has every finished run bit for bit and marks the run that was mid-flight as a crash would."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from serverproc import ROOT, R, create, spec, wait_state

from compactsim.proto.v1 import simulator_pb2

BACKUP = [sys.executable, "-m", "compactsim.server.backup"]


def test_backup_of_a_running_server(make_server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    s = make_server(data_dir=data)
    done = wait_state(s.stub, create(s.stub, spec(seed=5)).name)
    assert done.state == R.SUCCEEDED
    running = create(s.stub, spec(seed=6, duration=30, pace=1.0))
    wait_state(s.stub, running.name, (R.RUNNING,))
    (data / "traces").mkdir(exist_ok=True)
    body = b"# tracer: nop\n"
    name = hashlib.sha256(body).hexdigest()
    (data / "traces" / name).write_bytes(body)
    (data / "traces" / ".upload-1234").write_bytes(b"half a trace")

    out = subprocess.run(BACKUP + [str(data), str(tmp_path / "copy")], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 runs" in out.stdout and "1 traces (14 bytes)" in out.stdout
    assert (tmp_path / "copy" / "traces" / name).read_bytes() == body
    assert not (tmp_path / "copy" / "traces" / ".upload-1234").exists()
    again = subprocess.run(BACKUP + [str(data), str(tmp_path / "copy")], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
    assert again.returncode == 1 and "exists; back up into a new directory" in again.stderr
    assert s.stub.GetRun(simulator_pb2.GetRunRequest(name=running.name)).state == R.RUNNING

    c = make_server(data_dir=tmp_path / "copy")
    copied = c.stub.GetRun(simulator_pb2.GetRunRequest(name=done.name))
    assert copied.SerializeToString(deterministic=True) == \
        done.SerializeToString(deterministic=True)
    report = simulator_pb2.GetRunReportRequest(name=f"{done.name}/report")
    assert c.stub.GetRunReport(report) == s.stub.GetRunReport(report)
    cut = c.stub.GetRun(simulator_pb2.GetRunRequest(name=running.name))
    assert cut.state == R.FAILED and cut.error.message
    assert "interrupted" in cut.error.message
    c.stop()


def test_backup_refuses_a_directory_without_a_store(tmp_path):
    out = subprocess.run(BACKUP + [str(tmp_path), str(tmp_path / "copy")], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1 and "no compactsim store there" in out.stderr
    assert not (tmp_path / "copy").exists()
