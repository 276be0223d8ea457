"""Task outcomes as the resolver reads them from the events stream.

The events stream keeps one message per attempt subject and refuses later ones, so an outcome
read from it is *the* outcome of its attempt: nothing can overrule it. Recording it on the
task's document is bookkeeping that may trail behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from stellwerk.core import names
from stellwerk.core.blobs import LargeResult, StoredText
from stellwerk.core.limits import (
    DEFAULT_MAX_RESULT_BYTES,
    MAX_EXECUTOR_ID_CHARS,
    clip_error,
    result_too_large,
)
from stellwerk.core.names import parse_event_subject
from stellwerk.core.progress._retry import attempt_entry, retry_of
from stellwerk.core.records import TaskRecord, TaskState
from stellwerk_api.events.v1 import events_pb2

__all__ = [
    "TOO_EARLY",
    "Commit",
    "Outcome",
    "TooEarly",
    "decode_outcome",
    "recorded",
    "unreadable_outcome",
]


class Outcome:
    """A reported result of one attempt (decoded from a ``TaskEvent``); a result stored out
    of line reads as a :class:`~stellwerk.core.blobs.LargeResult` (fetched when needed)."""

    __slots__ = (
        "attempt",
        "ended_at",
        "error",
        "executor_id",
        "result",
        "retryable",
        "run_id",
        "started_at",
        "succeeded",
        "task_id",
    )

    def __init__(
        self,
        *,
        run_id: str,
        task_id: str,
        attempt: int,
        succeeded: bool,
        result: Any = None,
        error: str | None = None,
        executor_id: str | None = None,
        retryable: bool = True,
        started_at: float | None = None,
        ended_at: float | None = None,
    ) -> None:
        self.retryable = retryable
        self.started_at = started_at
        self.ended_at = ended_at
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.succeeded = succeeded
        self.result = result
        self.error = error
        self.executor_id = executor_id


class TooEarly:
    """Marks an outcome whose task is not recorded as dispatched yet."""


TOO_EARLY = TooEarly()


@dataclass(frozen=True, slots=True)
class Commit:
    """The write that records ``outcome`` on its task's document (at ``revision``)."""

    key: str
    revision: int
    outcome: Outcome
    record: TaskRecord
    data: bytes | None = None
    """``record`` encoded, once measured (see ``Progress._fitted``)."""


def recorded(task: TaskRecord, outcome: Outcome) -> TaskRecord:
    """``task`` with ``outcome`` recorded on it: settled, or — a retryable failure with
    attempts left — DISPATCHED for its next attempt, due after the retry delay."""
    if not outcome.succeeded:
        retry = retry_of(
            task,
            error=outcome.error,
            executor=outcome.executor_id,
            start=outcome.started_at,
            end=outcome.ended_at,
            retryable=outcome.retryable,
        )
        if retry is not None:
            return retry
    error = None if outcome.succeeded else clip_error(outcome.error or "task failed")
    large = outcome.result if isinstance(outcome.result, LargeResult) else None
    entry = attempt_entry(
        task.attempt,
        executor=outcome.executor_id,
        start=outcome.started_at,
        end=outcome.ended_at,
        error=error,
    )
    return task.evolve(
        state=TaskState.COMPLETED if outcome.succeeded else TaskState.FAILED,
        result=outcome.result if outcome.succeeded and large is None else None,
        stored_result=large.ref.to_record() if outcome.succeeded and large else None,
        has_result=outcome.succeeded,
        error=error,
        executor_id=outcome.executor_id,
        ended_at=time.time(),
        retry_at=None,
        history=[*task.history, entry],
    )


def _seconds(ts: Any) -> float | None:
    return ts.ToNanoseconds() / 1e9 if ts.seconds or ts.nanos else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"result holds {name}, which is not JSON")


def _parse_result(text: str) -> Any:
    """A result as JSON; NaN and infinities are refused (executors never send them)."""
    return json.loads(text, parse_constant=_refuse_constant)


def decode_outcome(
    data: bytes, *, max_result: int | None = None, max_stored: int = DEFAULT_MAX_RESULT_BYTES
) -> Outcome:
    """A ``TaskEvent`` as an ``Outcome``; raises ``ValueError`` on a message we cannot read.

    A success whose inline result exceeds ``max_result`` bytes reads as a failure naming the
    cap: its document could not hold it, and every reader of the event must decide alike (the
    executor stores such results out of line; this covers older or other executors). So does a
    stored result whose reference is malformed or beyond ``max_stored`` (the deployment's
    ``STELLWERK_MAX_RESULT_BYTES``). Errors and executor ids are clipped, so no outcome can
    make its task's document unwritable.
    """
    event = events_pb2.TaskEvent()
    try:
        event.ParseFromString(data)
    except DecodeError as exc:  # not a ValueError: callers would miss it
        raise ValueError(f"not a TaskEvent: {exc}") from exc
    if event.format_version not in names.READABLE_FORMAT_VERSIONS:
        raise ValueError(f"unknown event format version {event.format_version}")
    if not event.run_id or not event.task_id or event.attempt < 1:
        raise ValueError("event lacks run_id, task_id or attempt")
    succeeded = event.outcome == events_pb2.TASK_OUTCOME_SUCCEEDED
    if not succeeded and event.outcome != events_pb2.TASK_OUTCOME_FAILED:
        raise ValueError(f"unknown outcome {event.outcome}")
    error = clip_error(event.error) if event.error else None
    retryable = not event.non_retryable
    # The message's length bounds the result's: only a large message costs an exact count.
    if succeeded and max_result is not None and len(data) > max_result:
        size = len(event.result_json.encode("utf-8", "surrogatepass"))
        if size > max_result:
            succeeded, error = False, result_too_large(size, max_result)
            retryable = False
    result: Any = None
    if succeeded and event.HasField("stored_result"):
        try:
            ref = StoredText.from_proto(event.stored_result, max_size=max_stored)
        except ValueError as exc:
            succeeded, retryable = False, False
            error = clip_error(f"the outcome's stored result cannot be used: {exc}")
        else:
            result = LargeResult.of(event.run_id, event.task_id, event.attempt, ref)
    elif succeeded and event.result_json:
        result = _parse_result(event.result_json)
    return Outcome(
        run_id=event.run_id,
        task_id=event.task_id,
        attempt=event.attempt,
        succeeded=succeeded,
        result=result,
        error=error,
        executor_id=event.executor_id[:MAX_EXECUTOR_ID_CHARS] or None,
        retryable=retryable,
        started_at=_seconds(event.start_time),
        ended_at=_seconds(event.end_time),
    )


def unreadable_outcome(subject: str, reason: str) -> Outcome | None:
    """The outcome of an attempt whose event cannot be read, from its subject
    (``stellwerk.events.<run>.<task>.<attempt>``): failed, saying why. The stream keeps the
    first event of each attempt, so that unreadable one *is* the attempt's outcome; failing the
    task settles it (dependents BLOCKED) instead of leaving the run waiting for ever. ``None``
    if the subject names no attempt either."""
    address = parse_event_subject(subject)
    if address is None:
        return None
    return Outcome(
        run_id=address.run_id,
        task_id=address.task_id,
        attempt=address.attempt,
        succeeded=False,
        error=clip_error(f"the outcome of attempt {address.attempt} could not be read: {reason}"),
        retryable=False,
    )
