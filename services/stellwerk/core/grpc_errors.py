"""The one place where domain errors meet gRPC status codes, in both directions.

Servers install :class:`DomainErrorInterceptor`; it turns every ``StellwerkError`` escaping a
handler into a ``google.rpc.Status`` with an ``ErrorInfo`` (and a ``BadRequest`` listing the
problems for INVALID_ARGUMENT), and request bytes that do not decode into INVALID_ARGUMENT for
every RPC of the server (health and reflection included). Clients call :func:`error_from_rpc` to
get the domain error back.

A status travels in the call's trailers, which stock gRPC clients cap at 8-16 KiB, so it is
bounded whatever the input: the message to :data:`MAX_STATUS_MESSAGE_BYTES`, the details to
:data:`MAX_STATUS_DETAILS_BYTES` (the first problems, then one "and K more" violation; the full
list is in ``ValidateWorkflow``'s response body).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from stellwerk.core.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    MalformedRequestError,
    NotFoundError,
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
    WrongStateError,
    clip,
)
from stellwerk.core.publish import NATS_FAILURES

__all__ = [
    "DOMAIN",
    "MAX_STATUS_DETAILS_BYTES",
    "MAX_STATUS_MESSAGE_BYTES",
    "DomainErrorInterceptor",
    "error_from_rpc",
    "status_for",
]

logger = logging.getLogger(__name__)

DOMAIN = "stellwerk.dev"
_DETAILS_KEY = "grpc-status-details-bin"

MAX_STATUS_MESSAGE_BYTES = 1024
"""UTF-8 bytes of a status message (percent-encoded on the wire: at most ~3 KiB)."""
MAX_STATUS_DETAILS_BYTES = 3072
"""Bytes of the serialised ``google.rpc.Status`` details (base64 on the wire: ~4 KiB)."""
_MAX_FIELD_CHARS = 200
_MAX_DESCRIPTION_CHARS = 300
_MAX_METADATA_ENTRIES = 16
_MAX_METADATA_CHARS = 200


_CODES: list[tuple[type[StellwerkError], grpc.StatusCode]] = [
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (WrongStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConflictError, grpc.StatusCode.ABORTED),
    # Before its base class: the first match wins, both ways.
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
]


def _code_for(exc: StellwerkError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _bounded_message(message: str) -> str:
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    cut = data[: MAX_STATUS_MESSAGE_BYTES - 40].decode("utf-8", "ignore")
    return f"{cut}... ({len(message):,} characters)"


def _bounded_metadata(metadata: dict[str, str]) -> dict[str, str]:
    items = list(metadata.items())[:_MAX_METADATA_ENTRIES]
    return {clip(k, _MAX_METADATA_CHARS): clip(v, _MAX_METADATA_CHARS) for k, v in items}


def _bad_request(exc: InvalidArgumentError, budget: int) -> error_details_pb2.BadRequest:
    """The first problems that fit in ``budget`` bytes, then one "and K more" violation."""
    bad = error_details_pb2.BadRequest()
    total = len(exc.problems)
    for shown, problem in enumerate(exc.problems):
        field = problem.field if problem.task is None else f"tasks[{problem.task}].{problem.field}"
        violation = bad.field_violations.add(
            field=clip(field, _MAX_FIELD_CHARS),
            description=clip(problem.message, _MAX_DESCRIPTION_CHARS),
        )
        if bad.ByteSize() > budget - 120:  # room for the "and K more" line
            bad.field_violations.remove(violation)
            bad.field_violations.add(
                field="problems",
                description=f"and {total - shown} more problems not listed here "
                f"({total} in all; ValidateWorkflow returns every one)",
            )
            break
    return bad


def status_for(exc: StellwerkError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and rich status for a domain error, bounded in size whatever the input."""
    code = _code_for(exc)
    status = status_pb2.Status(code=code.value[0], message=_bounded_message(exc.message))
    metadata = _bounded_metadata(exc.metadata)
    if isinstance(exc, InvalidArgumentError) and exc.problems:
        metadata["problem_count"] = str(len(exc.problems))
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status.details.append(detail)
    if isinstance(exc, InvalidArgumentError) and exc.problems:
        packed = any_pb2.Any()
        packed.Pack(_bad_request(exc, MAX_STATUS_DETAILS_BYTES - status.ByteSize()))
        status.details.append(packed)
    return code, status


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: StellwerkError) -> None:
    code, status = status_for(exc)
    await context.abort(
        code, status.message, trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),)
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


def _status_from_metadata(metadata: Any) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == _DETAILS_KEY:
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def error_from_rpc(exc: grpc.aio.AioRpcError) -> StellwerkError:
    """The domain error behind a failed call: ``DeadlineExceededError`` when no answer came
    within the deadline, ``UnavailableError`` for other transport failures."""
    code = exc.code()
    message = exc.details() or code.name
    status = _status_from_metadata(exc.trailing_metadata())
    problems: list[Problem] = []
    reason = ""
    metadata: dict[str, str] = {}
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                problems.extend(
                    _problem_from_field(v.field, v.description) for v in bad.field_violations
                )
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        kind = (
            WorkflowInvalidError if reason == WorkflowInvalidError.reason else InvalidArgumentError
        )
        return kind(message, problems=problems, metadata=metadata)
    for error_type, error_code in _CODES:
        if code == error_code:
            return error_type(message, metadata=metadata)
    if code == grpc.StatusCode.CANCELLED:
        return UnavailableError(message)
    return StellwerkError(f"{code.name}: {message}", metadata=metadata)


def _problem_from_field(field: str, description: str) -> Problem:
    if field.startswith("tasks[") and "]." in field:
        task, _, rest = field[len("tasks[") :].partition("].")
        return Problem(task=task, field=rest, message=description)
    return Problem(task=None, field=field, message=description)
