"""Who is calling: bearer tokens from a token file, checked by a grpc.aio server interceptor.

The token file has one token per line, `TOKEN USER [ROLE]`, ROLE `user` (the default) or
`admin`; blank lines and `#` comments are skipped:

    # compactsim tokens: keep this file mode 0600
    4f0c...e1  alice
    9ab2...77  bob    admin

Clients send `authorization: Bearer TOKEN` metadata. Every method but `grpc.health.v1.Health`
(open for load-balancer and kubelet probes) needs a token the file names; a missing or unknown
one is refused with UNAUTHENTICATED before the handler runs. `Tokens.reload()` (on SIGHUP,
server/main.py) reads the file again: a bad file is refused whole and the tokens in force
stay. Tokens are kept only as SHA-256 digests, so a lookup costs the same whatever the token.

Without a token file every caller is `anonymous` with the user role: runs belong to
`anonymous`, and the server binds to loopback only unless told otherwise (server/main.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

ROLES = ("user", "admin")
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Caller:
    """The authenticated user of one call."""

    user: str
    admin: bool = False


ANONYMOUS = Caller("anonymous")


class TokenFileError(ValueError):
    """A token file that cannot be used; names the file and line."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token_file(text: str, path: str = "<tokens>") -> dict[bytes, Caller]:
    """Token-file text -> {sha256(token): Caller}; TokenFileError names the first bad line."""
    out: dict[bytes, Caller] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if len(fields) not in (2, 3):
            raise TokenFileError(f"{where}: expected 'TOKEN USER [ROLE]', got {len(fields)} "
                                 f"fields")
        token, user = fields[0], fields[1]
        role = fields[2] if len(fields) == 3 else "user"
        if len(token) < 16:
            raise TokenFileError(f"{where}: token too short (at least 16 characters)")
        if not _USER.fullmatch(user):
            raise TokenFileError(f"{where}: user {user!r} must be 1..64 characters of "
                                 f"[A-Za-z0-9._@-]")
        if role not in ROLES:
            raise TokenFileError(f"{where}: role {role!r} must be one of {', '.join(ROLES)}")
        key = _digest(token)
        if key in out:
            raise TokenFileError(f"{where}: token listed twice")
        out[key] = Caller(user, admin=role == "admin")
    if not out:
        raise TokenFileError(f"{path}: no tokens")
    return out


class Tokens:
    """The tokens in force, from a file; `reload()` swaps them in one assignment."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._by_digest: Mapping[bytes, Caller] = {}
        self.reload()

    def reload(self) -> int:
        """Read the file again; on any error keep the tokens in force and raise."""
        try:
            data = self.path.read_bytes()
            mode = self.path.stat().st_mode
        except OSError as exc:
            raise TokenFileError(f"{self.path}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise TokenFileError(f"{self.path}:{line}: not UTF-8 text (byte "
                                 f"0x{data[exc.start]:02x} at offset {exc.start})") from None
        by_digest = parse_token_file(text, str(self.path))
        if mode & stat.S_IRWXO:
            log.warning("token file %s is readable by others (mode %o); chmod 600 it",
                        self.path, stat.S_IMODE(mode))
        self._by_digest = by_digest
        return len(by_digest)

    def lookup(self, token: str) -> Caller | None:
        return self._by_digest.get(_digest(token))

    def users(self) -> set[str]:
        return {c.user for c in self._by_digest.values()}


def bearer(metadata) -> str | None:
    """The token of an `authorization: Bearer TOKEN` entry, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class Authenticator:
    """Maps a call to its Caller: by token when a token file is set, else ANONYMOUS."""

    def __init__(self, tokens: Tokens | None = None):
        self.tokens = tokens

    @property
    def required(self) -> bool:
        return self.tokens is not None

    def caller_of(self, metadata) -> Caller | None:
        """The caller, or None when a token is required and missing or unknown."""
        if self.tokens is None:
            return ANONYMOUS
        token = bearer(metadata)
        return self.tokens.lookup(token) if token else None

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _AuthInterceptor(self)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    async def unary(request, context):   # set, not raised: see server.refusal
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details(message)

    async def stream(request, context):
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details(message)
        return
        yield  # pragma: no cover - an async generator that yields nothing

    kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler, unary),
             ("unary_stream", grpc.unary_stream_rpc_method_handler, stream),
             ("stream_unary", grpc.stream_unary_rpc_method_handler, unary),
             ("stream_stream", grpc.stream_stream_rpc_method_handler, stream))
    for attr, make, fn in kinds:
        if getattr(handler, attr) is not None:
            return make(fn, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator):
        self.auth = auth

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        tokens = self.auth.tokens                   # None: not required
        if handler is None or tokens is None or details.method.startswith(OPEN_SERVICES):
            return handler
        token = bearer(details.invocation_metadata)
        if token is None:
            return _refusal(handler, "missing bearer token: send 'authorization: Bearer "
                                     "TOKEN' metadata (compactsim --token, COMPACTSIM_TOKEN)")
        if tokens.lookup(token) is None:
            return _refusal(handler, "unknown or revoked token")
        return handler


def token_from_env(value: str | None = None) -> str | None:
    """A client's token: the argument, else COMPACTSIM_TOKEN; empty means none."""
    token = value if value is not None else os.environ.get("COMPACTSIM_TOKEN", "")
    return token.strip() or None
