"""What both ends of a Stellwerk gRPC call agree on, beyond the generated messages.

* the error mapping, both ways: :func:`status_for` (a server turns a domain error into a
  ``google.rpc.Status`` with an ``ErrorInfo``, and a ``BadRequest`` listing the problems for
  INVALID_ARGUMENT) and :func:`error_from_rpc` (a client gets the domain error back);
* the largest message either side sends or accepts (:data:`GRPC_MAX_MESSAGE_BYTES`);
* the shape of a run id (:func:`is_run_id`), checked before an id goes anywhere.

A status travels in the call's trailers, which stock gRPC clients cap at 8-16 KiB, so it is
bounded whatever the input: the message to :data:`MAX_STATUS_MESSAGE_BYTES`, the details to
:data:`MAX_STATUS_DETAILS_BYTES` (the first problems, then one "and K more" violation; the full
list is in ``ValidateWorkflow``'s response body). The server side (the interceptor that applies
the mapping to every RPC) is ``stellwerk.core.grpc_errors``; it re-exports these names.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from stellwerk_client.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
    WrongStateError,
    clip,
)

__all__ = [
    "DOMAIN",
    "GRPC_MAX_MESSAGE_BYTES",
    "MAX_STATUS_DETAILS_BYTES",
    "MAX_STATUS_MESSAGE_BYTES",
    "RUN_ID_PATTERN",
    "STATUS_DETAILS_KEY",
    "error_from_rpc",
    "is_run_id",
    "status_for",
]

GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message a Stellwerk server or client sends or accepts (a 64 MiB workflow
document fits, as the model allows)."""

RUN_ID_PATTERN = re.compile(r"[0-9a-f]{22}")
"""The shape of every run id the resolver makes: 12 hex digits of milliseconds since the epoch,
then 10 of randomness (so ids sort by creation). Anything else names no run: an id from outside
is checked against this before it goes near a subject or a KV key, whose length and characters
NATS limits (a 4 KiB key once closed the resolver's connection)."""


def is_run_id(text: str) -> bool:
    """Whether ``text`` has the shape of a run id (it may still name no run)."""
    return RUN_ID_PATTERN.fullmatch(text) is not None


STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries the serialised ``google.rpc.Status``."""

DOMAIN = "stellwerk.dev"
"""The ``ErrorInfo.domain`` of every Stellwerk error."""

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


def _status_from_metadata(metadata: Any) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY:
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
