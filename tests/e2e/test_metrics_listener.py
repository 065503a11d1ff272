"""How the metrics listener serves, against the real server: the gRPC listener's policy
(a bearer token of the token file or a client certificate; loopback only without
either), TLS handshakes and request reads off the accept loop under timeouts, and a bound
on the connections (and so threads) it serves at once."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serverproc import create

from compactsim.server.metrics_listener import IO_TIMEOUT_S, MAX_CONNECTIONS

TOKEN = "scraper-token-0123456789"
SCRAPE_S = 2.0    # a scrape on an idle loopback server takes milliseconds


def _mport(server) -> int:
    return int(next(server.data_dir.glob("port-*.metrics")).read_text())


def _get(url: str, token: str | None = None, ctx: ssl.SSLContext | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    context=ctx, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def pki(tmp_path_factory, make_certificate) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed."""
    d = tmp_path_factory.mktemp("metrics-pki")
    ca = make_certificate("test CA")
    out = {"ca": ca.write(d / "ca.pem", d / "ca.key")[0]}
    out["cert"], out["key"] = make_certificate("compactsim.test", ("127.0.0.1",),
                                               issuer=ca).write(d / "server.pem",
                                                                d / "server.key")
    out["client_cert"], out["client_key"] = make_certificate("prometheus", issuer=ca).write(
        d / "client.pem", d / "client.key")
    return out


def test_every_path_needs_the_token_when_the_server_has_a_token_file(make_server, token_file):
    server = make_server("--token-file", str(token_file(f"{TOKEN} prometheus\n")), token=TOKEN)
    run = create(server.stub)
    base = f"http://127.0.0.1:{_mport(server)}"
    probe = f"/probe?target={run.name}"
    for path in ("/metrics", "/sd", probe, "/"):
        assert _get(base + path)[0] == 401, path
        assert _get(base + path, token="wrong-token-0123456789")[0] == 401, path
    status, body = _get(base + "/metrics", TOKEN)
    assert status == 200 and b"compactsim_runs{" in body
    status, body = _get(base + "/sd", TOKEN)
    assert status == 200 and isinstance(json.loads(body), list)
    assert _get(base + probe, TOKEN)[0] in (200, 404)   # 404 once the run has ended


def test_without_tokens_the_metrics_listener_stays_on_loopback(make_server):
    server = make_server("--metrics-listen", "0.0.0.0:0")
    port = _mport(server)
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"]   # LISTEN
    assert f"0100007F:{port:04X}" in listening, listening
    assert f"00000000:{port:04X}" not in listening
    log = (server.data_dir / "server.log").read_text()
    assert "metrics listens on loopback only" in log


def test_an_idle_connection_does_not_block_tls_scrapes(make_server, token_file, pki):
    server = make_server("--token-file", str(token_file(f"{TOKEN} prometheus\n")), "--tls-cert",
                         str(pki["cert"]), "--tls-key", str(pki["key"]), token=TOKEN,
                         ca=pki["ca"])
    port = _mport(server)
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # no handshake
    try:
        t0 = time.monotonic()
        status, body = _get(f"https://127.0.0.1:{port}/metrics", TOKEN, ctx,
                            timeout=IO_TIMEOUT_S * 3)
        took = time.monotonic() - t0
        assert status == 200 and b"compactsim_runs{" in body
        assert took < SCRAPE_S, f"scrape took {took:.2f} s with idle connections open"
    finally:
        for s in idle:
            s.close()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError


def test_half_sent_requests_hold_a_bounded_number_of_threads(make_server):
    server = make_server()
    port = _mport(server)
    before = _threads(server.proc.pid)
    half = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # no blank line
            half.append(s)
        time.sleep(0.5)
        grown = _threads(server.proc.pid) - before
        # a few more may be the server's own thread pool growing meanwhile
        assert grown <= MAX_CONNECTIONS + 8, f"{grown} more threads for 200 half-sent requests"
    finally:
        for s in half:
            s.close()
    # the slots come back: a scrape succeeds (at the latest once the reads time out)
    deadline = time.monotonic() + IO_TIMEOUT_S * 3
    while True:
        try:
            status, _ = _get(f"http://127.0.0.1:{port}/metrics", timeout=IO_TIMEOUT_S * 2)
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "no scrape served after the half-sent requests"
        time.sleep(0.1)


def test_a_client_certificate_admits_without_a_token(make_server, token_file, pki):
    server = make_server("--token-file", str(token_file(f"{TOKEN} prometheus\n")), "--tls-cert",
                         str(pki["cert"]), "--tls-key", str(pki["key"]),
                         "--metrics-client-ca", str(pki["ca"]), token=TOKEN, ca=pki["ca"])
    url = f"https://127.0.0.1:{_mport(server)}/sd"
    with_cert = ssl.create_default_context(cafile=str(pki["ca"]))
    with_cert.load_cert_chain(pki["client_cert"], pki["client_key"])
    without = ssl.create_default_context(cafile=str(pki["ca"]))
    assert _get(url, ctx=with_cert)[0] == 200
    assert _get(url, ctx=without)[0] == 401
    assert _get(url, TOKEN, ctx=without)[0] == 200


def test_tokens_over_plain_text_on_a_remote_listener_are_warned_about(make_server, token_file):
    server = make_server("--token-file", str(token_file(f"{TOKEN} prometheus\n")),
                         "--listen", "0.0.0.0:0", token=TOKEN)
    log = (server.data_dir / "server.log").read_text()
    assert "gRPC on 0.0.0.0:0 takes bearer tokens over plain text" in log, log[-2000:]
