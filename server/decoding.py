"""Requests whose bytes do not decode are refused as INVALID_ARGUMENT.

grpc.aio decodes a request before any handler runs, and a decoding failure (bytes that
are not the method's message, a string that is not UTF-8, nesting beyond protobuf's
recursion limit) surfaces as UNKNOWN "Unexpected DecodeError", as if the server had
failed. `DecodingInterceptor` gives each method a deserializer that catches
the failure and returns an `Undecodable` marker instead, and a behaviour that answers the
marker with INVALID_ARGUMENT and a `google.rpc.BadRequest` violation for the field
`request`, naming the message type expected. Anything that decodes reaches the real
handler unchanged. Install it last among the server's interceptors, so that
authentication still answers first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from compactsim.server.refusal import refuse
from compactsim.server.rpc_errors import bad_request


class Undecodable:
    """What a request decoded to when it did not: the expected type and why."""

    __slots__ = ("type_name", "reason")

    def __init__(self, type_name: str, reason: str):
        self.type_name = type_name
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any], type_name: str
              ) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:   # DecodeError, RecursionError from deep nesting...
            return Undecodable(type_name, str(exc) or type(exc).__name__)
    return read


def refusal(request: Undecodable) -> status_pb2.Status:
    """INVALID_ARGUMENT for a request that did not decode."""
    message = f"the request is not a valid {request.type_name}: {request.reason[:200]}"
    return bad_request([("request", message)], message).status


async def _abort(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    status = rpc_status.to_status(refusal(request))
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)


def _unary(fn: Callable) -> Callable:
    async def behaviour(request, context):
        if isinstance(request, Undecodable):
            return refuse(context, refusal(request))   # set, not raised: server.refusal
        return await fn(request, context)
    return behaviour


def _stream(fn: Callable) -> Callable:
    async def behaviour(request, context):
        if isinstance(request, Undecodable):
            refuse(context, refusal(request))
            return
        async for item in fn(request, context):
            yield item
    return behaviour


def _client_stream(fn: Callable) -> Callable:
    """A client-streaming behaviour whose request iterator answers the first message that
    did not decode with the refusal (the handler's cleanup runs, as for any abort)."""
    async def behaviour(requests, context):
        async def decoded():
            async for request in requests:
                if isinstance(request, Undecodable):
                    await _abort(context, request)
                yield request
        return await fn(decoded(), context)
    return behaviour


class DecodingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the async handlers of unary-unary, server-streaming and client-streaming
    methods; other handlers pass unchanged."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        owner = getattr(handler.request_deserializer, "__self__", None)
        descriptor = getattr(owner, "DESCRIPTOR", None)
        type_name = descriptor.full_name if descriptor is not None else \
            f"request of {details.method}"
        read = _tolerant(handler.request_deserializer, type_name)
        if inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary), request_deserializer=read,
                response_serializer=handler.response_serializer)
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream), request_deserializer=read,
                response_serializer=handler.response_serializer)
        if inspect.iscoroutinefunction(handler.stream_unary):
            return grpc.stream_unary_rpc_method_handler(
                _client_stream(handler.stream_unary), request_deserializer=read,
                response_serializer=handler.response_serializer)
        return handler
