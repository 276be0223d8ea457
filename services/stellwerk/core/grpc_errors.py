"""The one place where domain errors meet gRPC status codes, in both directions.

Servers install :class:`DomainErrorInterceptor`; it turns every ``StellwerkError`` escaping a
handler into a ``google.rpc.Status`` with an ``ErrorInfo`` (and a ``BadRequest`` listing every
problem for INVALID_ARGUMENT). Clients call :func:`error_from_rpc` to get the domain error back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import nats.errors
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from stellwerk.core.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
    WrongStateError,
)

__all__ = ["DOMAIN", "DomainErrorInterceptor", "error_from_rpc", "status_for"]

logger = logging.getLogger(__name__)

DOMAIN = "stellwerk.dev"
_DETAILS_KEY = "grpc-status-details-bin"

# Failures of the messaging layer under a handler: the call may succeed if retried.
_TRANSPORT = (nats.errors.Error, TimeoutError, ConnectionError)

_CODES: list[tuple[type[StellwerkError], grpc.StatusCode]] = [
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (WrongStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConflictError, grpc.StatusCode.ABORTED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
]


def _code_for(exc: StellwerkError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def status_for(exc: StellwerkError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and rich status for a domain error."""
    code = _code_for(exc)
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status.details.append(detail)
    if isinstance(exc, InvalidArgumentError) and exc.problems:
        bad = error_details_pb2.BadRequest()
        for problem in exc.problems:
            field = (
                problem.field if problem.task is None else f"tasks[{problem.task}].{problem.field}"
            )
            bad.field_violations.add(field=field, description=problem.message)
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return code, status


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: StellwerkError) -> None:
    code, status = status_for(exc)
    await context.abort(
        code, exc.message, trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),)
    )


def _wrap_unary(
    behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behaviour(request, context)
        except StellwerkError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises
        except _TRANSPORT as exc:
            await _abort(context, UnavailableError(f"NATS is unavailable: {exc}"))
            raise

    return wrapped


def _wrap_stream(
    behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def wrapped(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(request, context):
                yield item
        except StellwerkError as exc:
            await _abort(context, exc)
        except _TRANSPORT as exc:
            await _abort(context, UnavailableError(f"NATS is unavailable: {exc}"))

    return wrapped


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps ``StellwerkError`` to status codes for every unary and server-streaming RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
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
    """The domain error behind a failed call (``UnavailableError`` for transport failures)."""
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
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return UnavailableError(message)
    return StellwerkError(f"{code.name}: {message}", metadata=metadata)


def _problem_from_field(field: str, description: str) -> Problem:
    if field.startswith("tasks[") and "]." in field:
        task, _, rest = field[len("tasks[") :].partition("].")
        return Problem(task=task, field=rest, message=description)
    return Problem(task=None, field=field, message=description)
