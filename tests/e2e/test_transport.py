"""Transport and identity through the real server: bearer tokens from a token file (and its
SIGHUP reload), TLS on the gRPC and metrics listeners, loopback-only binding without tokens,
and the command line and health probe against all of it."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverproc import ROOT, create, wait_state

from compactsim.proto.v1 import simulator_pb2

ALICE = "alice-0123456789abcdef"
ROOT_TOKEN = "root-fedcba9876543210"
CAROL = "carol-00112233445566778"
CLI = [sys.executable, "-m", "compactsim.client.cli"]
HEALTH = [sys.executable, "-m", "compactsim.client.healthcheck"]


@pytest.fixture
def tokens(token_file) -> Path:
    return token_file(f"# lab tokens\n{ALICE} alice\n{ROOT_TOKEN} root admin  # the operator\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory, make_certificate) -> dict[str, Path]:
    """A self-signed certificate for compactsim.test and 127.0.0.1, and its key."""
    d = tmp_path_factory.mktemp("pki")
    cert, key = make_certificate("compactsim.test", ("compactsim.test", "127.0.0.1")).write(
        d / "cert.pem", d / "key.pem")
    return {"cert": cert, "key": key}


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def list_runs(stub):
    return stub.ListRuns(simulator_pb2.ListRunsRequest(), timeout=10)


def health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=10).status


def listening(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp{,6} (IPv4
    addresses mapped into IPv6 shown as IPv4)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            hexaddr, _, p = local.rpartition(":")
            if state != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(hexaddr)   # 32-bit words in host (little-endian) order
            ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            out.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return out


def test_tokens_gate_every_method_but_health(make_server, tokens):
    s = make_server("--token-file", str(tokens), token=ALICE)
    anon, wrong = s.stub_for(None), s.stub_for("not-a-token-of-this-lab")
    assert code_of(lambda: list_runs(anon)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: list_runs(wrong)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: create(anon)) == grpc.StatusCode.UNAUTHENTICATED
    # Streams are refused the same way, before the handler runs.
    watch = anon.WatchRun(simulator_pb2.WatchRunRequest(name="runs/x"), timeout=10)
    assert code_of(lambda: next(watch)) == grpc.StatusCode.UNAUTHENTICATED
    assert health(s.channel_for(None)) == health_pb2.HealthCheckResponse.SERVING
    assert list_runs(s.stub).total_size == 0        # nothing was created by the refusals
    run = create(s.stub)
    assert run.creator == "alice"
    assert wait_state(s.stub, run.name).creator == "alice"
    assert s.stub_for(ROOT_TOKEN).GetRun(
        simulator_pb2.GetRunRequest(name=run.name), timeout=10).creator == "alice"
    # A scheme other than Bearer is no token.
    md = [("authorization", f"Basic {ALICE}")]
    with pytest.raises(grpc.RpcError) as e:
        anon.ListRuns(simulator_pb2.ListRunsRequest(), metadata=md, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing bearer token" in e.value.details()


def test_sighup_reloads_tokens_and_keeps_them_when_the_file_is_bad(make_server, tokens,
                                                                     token_file):
    s = make_server("--token-file", str(tokens), token=ALICE)
    assert list_runs(s.stub).total_size == 0
    token_file(f"{CAROL} carol\n{ROOT_TOKEN} root admin\n")
    s.proc.send_signal(signal.SIGHUP)
    carol, deadline = s.stub_for(CAROL), time.monotonic() + 10
    while True:
        try:
            list_runs(carol)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() < deadline, "SIGHUP did not load the new token"
            time.sleep(0.05)
    assert code_of(lambda: list_runs(s.stub)) == grpc.StatusCode.UNAUTHENTICATED  # revoked
    assert s.proc.poll() is None
    token_file(f"{ALICE} alice superuser\n")   # bad role: the whole file refused
    s.proc.send_signal(signal.SIGHUP)
    log = s.data_dir / "server.log"
    deadline = time.monotonic() + 10
    while "not reloaded" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "role 'superuser'" in log.read_text()
    assert list_runs(s.stub_for(CAROL)).total_size == 0   # the tokens in force stayed
    assert code_of(lambda: list_runs(s.stub)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("text, why", [
    ("short alice\n", "too short"),
    (f"{ALICE} al/ice\n", "user 'al/ice'"),
    (f"{ALICE}\n", "expected 'TOKEN USER [ROLE]'"),
    (f"{ALICE} alice\n{ALICE} bob\n", "listed twice"),
    ("# nothing\n", "no tokens"),
])
def test_a_bad_token_file_stops_the_start_naming_the_line(tmp_path, token_file, text, why):
    path = token_file(text)
    out = subprocess.run([sys.executable, "-m", "compactsim.server.main", "--listen", "127.0.0.1:0",
                          "--metrics-listen", "", "--data-dir", str(tmp_path),
                          "--token-file", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode != 0
    assert f"--token-file: {path}:" in out.stderr and why in out.stderr
    assert not (tmp_path / "compactsim.db").exists()   # refused before touching the store


def test_tls_on_grpc_and_metrics_with_tokens(make_server, tokens, pki):
    s = make_server("--token-file", str(tokens), "--tls-cert", str(pki["cert"]),
                    "--tls-key", str(pki["key"]), token=ALICE, ca=pki["cert"])
    assert list_runs(s.stub).total_size == 0
    assert create(s.stub).creator == "alice"      # token as call credentials over TLS
    named = s.channel_for(ALICE, server_name="compactsim.test")
    assert health(named) == health_pb2.HealthCheckResponse.SERVING
    wrong_name = s.channel_for(ALICE, server_name="elsewhere.test")
    assert code_of(lambda: health(wrong_name)) == grpc.StatusCode.UNAVAILABLE
    plaintext = grpc.insecure_channel(f"127.0.0.1:{s.port}")
    assert code_of(lambda: health(plaintext)) == grpc.StatusCode.UNAVAILABLE
    # The metrics listener speaks HTTPS with the same certificate, and takes the tokens.
    mport = int(next(s.data_dir.glob("port-*.metrics")).read_text())
    ctx = ssl.create_default_context(cafile=str(pki["cert"]))
    auth = {"Authorization": f"Bearer {ALICE}"}
    body = urllib.request.urlopen(urllib.request.Request(
        f"https://127.0.0.1:{mport}/metrics", headers=auth), context=ctx,
        timeout=10).read().decode()
    assert "compactsim_runs{" in body
    sd = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"https://127.0.0.1:{mport}/sd", headers=auth), context=ctx, timeout=10).read())
    assert isinstance(sd, list)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
    # The health probe of the container, against the TLS listener.
    env = {**os.environ, "COMPACTSIM_CA_CERT": str(pki["cert"])}
    ok = subprocess.run(HEALTH + ["--address", f"127.0.0.1:{s.port}"], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=30)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    env.pop("COMPACTSIM_CA_CERT")
    bad = subprocess.run(HEALTH + ["--address", f"127.0.0.1:{s.port}", "--timeout", "2"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=30)
    assert bad.returncode == 1


def test_cli_with_token_and_ca_cert(make_server, tokens, pki):
    s = make_server("--token-file", str(tokens), "--tls-cert", str(pki["cert"]),
                    "--tls-key", str(pki["key"]), "--max-run-duration", "10s", token=ALICE,
                    ca=pki["cert"])
    server = f"127.0.0.1:{s.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPACTSIM_")}

    def cli(*args, **extra_env):
        return subprocess.run(CLI + ["--server", server, *args], capture_output=True,
                              text=True, cwd=ROOT, env={**env, **extra_env}, timeout=60)

    out = cli("--ca-cert", str(pki["cert"]), "--token", ALICE, "run", "--scenario", "churn",
              "--set", "duration=0.2s", "--set", "machine.memory=64MiB", "--watch",
              "--no-progress", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["vmstat"]["pgalloc_normal"] > 0   # the run's summary
    listed = cli("list", "--format", "json", COMPACTSIM_TOKEN=ROOT_TOKEN,
                 COMPACTSIM_CA_CERT=str(pki["cert"]))
    assert listed.returncode == 0, listed.stderr
    assert [r["creator"] for r in json.loads(listed.stdout)["runs"]] == ["alice"]
    denied = cli("--ca-cert", str(pki["cert"]), "list")
    assert denied.returncode == 6
    assert "UNAUTHENTICATED" in denied.stderr and "COMPACTSIM_TOKEN" in denied.stderr
    too_long = cli("--ca-cert", str(pki["cert"]), "--token", ALICE, "run", "--scenario",
                   "churn", "--set", "duration=20s", "--set", "machine.memory=64MiB")
    assert too_long.returncode == 5
    assert "RESOURCE_EXHAUSTED" in too_long.stderr
    assert "  server: run.spec.duration_seconds: 20 s of simulated time > 10 s" in \
        too_long.stderr                                  # the QuotaFailure, subject: why
    missing = cli("--ca-cert", str(s.data_dir / "no-such.pem"), "--token", ALICE, "list")
    assert missing.returncode == 2 and "no-such.pem" in missing.stderr


def test_without_tokens_the_server_binds_loopback_only(make_server, tmp_path):
    s = make_server("--listen", "0.0.0.0:0", data_dir=tmp_path)
    assert listening(s.port) == {"127.0.0.1"}
    log = (tmp_path / "server.log").read_text()
    assert "listens on loopback only" in log and "--insecure-allow-remote" in log
    assert list_runs(s.stub).total_size == 0          # anonymous, no token needed
    assert create(s.stub).creator == "anonymous"
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    r = make_server("--listen", "0.0.0.0:0", "--insecure-allow-remote", data_dir=open_dir)
    assert listening(r.port) & {"0.0.0.0", "::"}
    assert "anyone who reaches it acts as 'anonymous'" in (open_dir / "server.log").read_text()
