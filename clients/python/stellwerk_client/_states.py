"""The states a client reads — of runs, tasks and circuit breakers — and the conversions of
contract scalars (enum values, timestamps, JSON text) that the typed values use.

Split from ``_types.py`` (the values a call returns) so that each file is one thing: the
vocabulary of states and how contract scalars are read here, the result values there.
``_types`` re-exports the three enums, so every import of them stays as it was.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from google.protobuf.message import Message

from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = ["BreakerState", "RunState", "TaskState"]


class RunState(StrEnum):
    """The state of a run (``UNSPECIFIED``: a state this client does not know)."""

    UNSPECIFIED = "UNSPECIFIED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    """Cancelled by an operator (:meth:`Client.cancel`)."""
    COMPENSATED = "COMPENSATED"
    """A task under ``on_failure: compensate`` failed; the compensations of the completed
    tasks ran (in reverse completion order) and the run ended. ``error`` names any
    compensation that failed."""
    COMPENSATING = "COMPENSATING"
    """A task under ``on_failure: compensate`` failed; the compensations are running."""

    @property
    def finished(self) -> bool:
        """Whether the run has ended (COMPLETED, FAILED, CANCELLED or COMPENSATED)."""
        return self in (
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CANCELLED,
            RunState.COMPENSATED,
        )

    def to_proto(self) -> pb.RunState.ValueType:
        """The contract's enum value."""
        return pb.RunState.Value(f"RUN_STATE_{self.value}")


class TaskState(StrEnum):
    """The state of one task of a run (``UNSPECIFIED``: a state this client does not know)."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"
    RETRY_WAIT = "RETRY_WAIT"
    """An attempt failed; the next one is due at :attr:`TaskRun.retry_at`."""
    SKIPPED = "SKIPPED"
    """Failed for good under ``on_failure: skip``: :attr:`TaskRun.error` says why; its
    dependents ran with ``null`` for its result."""
    CANCELLED = "CANCELLED"
    """Its run was cancelled before it ended."""

    @property
    def finished(self) -> bool:
        """Whether the task is settled: COMPLETED, FAILED, BLOCKED, SKIPPED or CANCELLED (it
        will not run again)."""
        return self in _FINISHED_TASK


_FINISHED_TASK = frozenset(
    (
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.BLOCKED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
    )
)


def _enum(kind: type[RunState] | type[TaskState], descriptor: Any, value: int, prefix: str) -> Any:
    try:
        return kind(str(descriptor.Name(value)).removeprefix(prefix))
    except ValueError:  # a newer server may send a state this client does not know
        return kind.UNSPECIFIED


def _time(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp = getattr(message, field)
    result: datetime = stamp.ToDatetime(tzinfo=UTC)
    return result


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:  # a correct server never sends it; keep the text rather than fail
        return text


class BreakerState(StrEnum):
    """The state of a circuit breaker (``UNSPECIFIED``: one this client does not know)."""

    UNSPECIFIED = "UNSPECIFIED"
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    """Too many failures: what it guards waits (tasks of its method, without spending attempts;
    or its run's resolution) until ``retry_at``."""
    HALF_OPEN = "HALF_OPEN"
    """The cool-down ended: one trial goes; its success closes the breaker."""
