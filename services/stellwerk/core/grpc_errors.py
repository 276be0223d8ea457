"""Domain errors at the server's edge: the interceptor every Stellwerk server installs.

:class:`DomainErrorInterceptor` turns every ``StellwerkError`` escaping a handler into a
``google.rpc.Status`` (through :func:`status_for`), NATS failures into UNAVAILABLE, and request
bytes that do not decode into INVALID_ARGUMENT, for every RPC of the server (health and
reflection included). The mapping itself, both ways, is ``stellwerk_client.wire``: the client
distribution ships it so that clients read errors without the server installed. Its names are
re-exported here.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from stellwerk.core.errors import MalformedRequestError, StellwerkError, UnavailableError, clip
from stellwerk.core.publish import NATS_FAILURES
from stellwerk_client.wire import (
    DOMAIN,
    MAX_STATUS_DETAILS_BYTES,
    MAX_STATUS_MESSAGE_BYTES,
    STATUS_DETAILS_KEY,
    error_from_rpc,
    status_for,
)

__all__ = [
    "DOMAIN",
    "MAX_STATUS_DETAILS_BYTES",
    "MAX_STATUS_MESSAGE_BYTES",
    "DomainErrorInterceptor",
    "error_from_rpc",
    "status_for",
]

logger = logging.getLogger(__name__)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: StellwerkError) -> None:
    code, status = status_for(exc)
    await context.abort(
        code, status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


class _Undecodable:
    """Stands in for a request whose bytes did not decode, so the handler wrapper (not gRPC's
    own machinery, which answers UNKNOWN without details) can refuse it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Deserializer = Callable[[bytes], Any]


def _lenient(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, bad UTF-8, nesting beyond protobuf's limit
            return _Undecodable(exc)

    return decode


def _malformed(request: _Undecodable, method: str) -> MalformedRequestError:
    detail = clip(str(request.error) or type(request.error).__name__, 200)
    return MalformedRequestError(
        f"the request is not a valid message for {method}: {detail}",
        metadata={"method": method},
    )


Context = grpc.aio.ServicerContext[Any, Any]


async def _refuse(context: Context, exc: BaseException) -> None:
    """Abort the call for a domain or messaging error; anything else propagates."""
    if isinstance(exc, StellwerkError):
        await _abort(context, exc)
    elif isinstance(exc, NATS_FAILURES):
        await _abort(context, UnavailableError(f"NATS is unavailable: {exc}"))


def _wrap_unary_request(
    behaviour: Callable[[Any, Context], Any], method: str, streaming_response: bool
) -> Callable[[Any, Context], Any]:
    if streaming_response and inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                if isinstance(request, _Undecodable):
                    raise _malformed(request, method)
                async for item in behaviour(request, context):
                    yield item
            except (StellwerkError, *NATS_FAILURES) as exc:
                await _refuse(context, exc)

        return stream
    # A plain coroutine: unary, or server-streaming through ``context.write`` (health Watch).

    async def unary(request: Any, context: Context) -> Any:
        try:
            if isinstance(request, _Undecodable):
                raise _malformed(request, method)
            return await behaviour(request, context)
        except (StellwerkError, *NATS_FAILURES) as exc:
            await _refuse(context, exc)
            raise  # unreachable: abort raises

    return unary


def _wrap_stream_request(
    behaviour: Callable[[Any, Context], Any], method: str, streaming_response: bool
) -> Callable[[Any, Context], Any]:
    """Client-streaming RPCs (server reflection): each incoming message is checked as it is
    read; the handler sees only decoded ones."""

    def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async def each() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    await _abort(context, _malformed(request, method))
                yield request

        return each()

    if streaming_response and inspect.isasyncgenfunction(behaviour):

        async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for item in behaviour(checked(requests, context), context):
                yield item

        return stream

    async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behaviour(checked(requests, context), context)

    return unary


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps ``StellwerkError`` to status codes, and undecodable requests to INVALID_ARGUMENT,
    for every RPC of the server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        decode = _lenient(handler.request_deserializer)
        encode = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_request(handler.unary_unary, method, False),
                request_deserializer=decode,
                response_serializer=encode,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_request(handler.unary_stream, method, True),
                request_deserializer=decode,
                response_serializer=encode,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_stream_request(handler.stream_unary, method, False),
                request_deserializer=decode,
                response_serializer=encode,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream_request(handler.stream_stream, method, True),
                request_deserializer=decode,
                response_serializer=encode,
            )
        return handler
