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

from stellwerk.core.records import TaskRecord, TaskState
from stellwerk.events.v1 import events_pb2

__all__ = ["TOO_EARLY", "Commit", "Outcome", "TooEarly", "decode_outcome", "recorded"]

EVENT_FORMAT_VERSION = 1


class Outcome:
    """A reported result of one attempt (decoded from a ``TaskEvent``)."""

    __slots__ = ("attempt", "error", "executor_id", "result", "run_id", "succeeded", "task_id")

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
    ) -> None:
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


def recorded(task: TaskRecord, outcome: Outcome) -> TaskRecord:
    """``task`` with ``outcome`` recorded on it."""
    return task.evolve(
        state=TaskState.COMPLETED if outcome.succeeded else TaskState.FAILED,
        result=outcome.result if outcome.succeeded else None,
        has_result=outcome.succeeded,
        error=None if outcome.succeeded else (outcome.error or "task failed"),
        executor_id=outcome.executor_id,
        ended_at=time.time(),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"result holds {name}, which is not JSON")


def _parse_result(text: str) -> Any:
    """A result as JSON; NaN and infinities are refused (executors never send them)."""
    return json.loads(text, parse_constant=_refuse_constant)


def decode_outcome(data: bytes) -> Outcome:
    """A ``TaskEvent`` as an ``Outcome``; raises ``ValueError`` on a message we cannot read."""
    event = events_pb2.TaskEvent()
    event.ParseFromString(data)
    if event.format_version != EVENT_FORMAT_VERSION:
        raise ValueError(f"unknown event format version {event.format_version}")
    if not event.workflow_id or not event.task_id or event.attempt < 1:
        raise ValueError("event lacks workflow_id, task_id or attempt")
    succeeded = event.outcome == events_pb2.TASK_OUTCOME_SUCCEEDED
    if not succeeded and event.outcome != events_pb2.TASK_OUTCOME_FAILED:
        raise ValueError(f"unknown outcome {event.outcome}")
    return Outcome(
        run_id=event.workflow_id,
        task_id=event.task_id,
        attempt=event.attempt,
        succeeded=succeeded,
        result=_parse_result(event.result_json) if succeeded and event.result_json else None,
        error=event.error or None,
        executor_id=event.executor_id or None,
    )
