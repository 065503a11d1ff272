"""How the metrics listener serves (server.exporter says what it serves): HTTP or HTTPS on
a socketserver, with the gRPC listener's policy and bounds a shared server needs.

- Who may read: with a token file, every request needs `Authorization: Bearer TOKEN`
  naming a token of the file (Prometheus: `authorization: {credentials_file: ...}`, or
  `bearer_token_file`), or, with `client_ca`, a TLS client certificate that CA signed
  (Prometheus: `tls_config: {cert_file, key_file}`); anything else is 401. Without
  either, anyone who reaches the listener may read, so server/main.py keeps it on
  loopback unless told otherwise, as it does the gRPC listener.
- The accept loop only accepts. The TLS handshake and the reading of the request run in
  the connection's own thread, each under a timeout (`IO_TIMEOUT_S`), so an idle or
  half-sent connection never delays another scrape.
- At most `max_connections` connections are served at once (a thread each); one more
  is closed at once, so 200 half-sent requests cost `max_connections` threads for at most
  `IO_TIMEOUT_S` each, not 200 threads forever.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from compactsim.server.auth import bearer

log = logging.getLogger(__name__)

IO_TIMEOUT_S = 5.0         # TLS handshake, and each read or write of a request
MAX_CONNECTIONS = 32       # served at once; a scrape takes one for a few milliseconds
REFUSAL_WARNING_S = 60.0


class _Handler(WSGIRequestHandler):
    timeout = IO_TIMEOUT_S   # StreamRequestHandler: the socket's timeout for every read

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - the base's name
        log.debug("metrics %s: " + format, self.client_address[0], *args)

    def get_environ(self) -> dict:
        env = super().get_environ()
        peer = getattr(self.connection, "getpeercert", None)
        env["compactsim.client_cert"] = bool(peer and peer())
        return env


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128   # listen backlog: connections wait for accept(), not SYN retries

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None,
                 max_connections: int):
        self.tls = tls
        self.slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.refused = 0
        self._warned = -REFUSAL_WARNING_S
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accept loop: hand the connection to a thread, or close it when
        `max_connections` are being served."""
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            now = time.monotonic()
            if now - self._warned > REFUSAL_WARNING_S:   # a flood makes one line a minute
                log.warning("metrics listener: %d connections refused, %d already open "
                            "(latest from %s)", self.refused, self.max_connections,
                            client_address[0])
                self._warned = now
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake (under the timeout), then the
        request."""
        if self.tls is not None:
            request.settimeout(IO_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("metrics listener: TLS handshake with %s failed: %s",
                          client_address[0], exc)
                return
        try:
            super().finish_request(request, client_address)
        finally:
            if self.tls is not None:   # the plain socket the caller closes is detached
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics listener: %s", client_address[0], exc_info=True)


def guarded(app: Callable, lookup: Callable[[str], Any] | None) -> Callable:
    """`app` for authorized requests only: a bearer token `lookup` knows, or a verified
    client certificate; `lookup` None: everyone."""
    if lookup is None:
        return app

    def check(environ: dict, start_response: Callable) -> Any:
        token = bearer([("authorization", environ.get("HTTP_AUTHORIZATION", ""))])
        if environ.get("compactsim.client_cert") or (token and lookup(token) is not None):
            return app(environ, start_response)
        body = b"unauthorized: send 'Authorization: Bearer TOKEN' (a token of the server's " \
               b"token file) or a client certificate\n"
        start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                            ("Content-Length", str(len(body))),
                                            ("WWW-Authenticate", 'Bearer realm="compactsim"')])
        return [body]
    return check


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The server side of HTTPS; with `client_ca`, client certificates it signed are
    asked for and verified (a client without one may still send a token)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def serve(app: Callable, host: str, port: int, *, tls: ssl.SSLContext | None = None,
          lookup: Callable[[str], Any] | None = None,
          max_connections: int = MAX_CONNECTIONS) -> tuple[_Server, threading.Thread]:
    """Serve WSGI `app` on host:port in a daemon thread; returns (server, thread)."""
    httpd = _Server((host, port), tls, max_connections)
    httpd.set_app(guarded(app, lookup))
    t = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    t.start()
    return httpd, t
