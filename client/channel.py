"""The channel every client of a compactsim server dials: plaintext or TLS, with or without
a bearer token.

- `ca_cert` (a PEM file; `--ca-cert`, COMPACTSIM_CA_CERT) turns TLS on and is the only CA
  trusted; `server_name` checks the certificate against another name than the address's
  host (a certificate made for `lab.example` reached through 127.0.0.1).
- `token` (`--token`, COMPACTSIM_TOKEN) is sent as `authorization: Bearer TOKEN` on every
  call: as gRPC access-token call credentials over TLS, and by an interceptor over
  plaintext (gRPC attaches call credentials to secure channels only).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

ENV_TOKEN = "COMPACTSIM_TOKEN"
ENV_CA_CERT = "COMPACTSIM_CA_CERT"


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self.entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self.entry])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def env_token() -> str | None:
    return os.environ.get(ENV_TOKEN, "").strip() or None


def env_ca_cert() -> str | None:
    return os.environ.get(ENV_CA_CERT, "").strip() or None


def open_channel(address: str, *, token: str | None = None, ca_cert: str | Path | None = None,
                 server_name: str | None = None) -> grpc.Channel:
    """A channel to `address` (host:port) as the module docstring describes. A CA file
    that cannot be read raises ValueError naming it."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if ca_cert is None:
        channel = grpc.insecure_channel(address, options=options)
        return grpc.intercept_channel(channel, _Bearer(token)) if token else channel
    try:
        roots = Path(ca_cert).read_bytes()
    except OSError as exc:
        raise ValueError(f"--ca-cert {ca_cert}: {exc.strerror}") from None
    creds = grpc.ssl_channel_credentials(root_certificates=roots)
    if token:
        creds = grpc.composite_channel_credentials(creds,
                                                   grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, creds, options=options)
