"""Typed results of the inspection calls: ``explain`` (why a run's tasks wait) and
``health`` (the installation's checks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api

from ._states import _enum, _time
from ._types import CircuitBreaker, Run, TaskState

__all__ = ["HealthCheck", "HealthReport", "QueueDepth", "RunExplanation", "TaskWait"]


@dataclass(frozen=True, slots=True)
class TaskWait:
    """What one task that has not ended waits for.

    ``reason`` is ``DEPENDENCIES``, ``QUEUED``, ``CLAIMED``, ``RETRY``, ``BREAKER`` (held by an
    open circuit breaker until ``until``), ``BLOCKED``, ``LOST`` or ``REPORTED``; ``summary``
    one line for people.
    """

    task_id: str
    state: TaskState
    reason: str
    summary: str
    waiting_for: tuple[str, ...]
    since: datetime | None
    executor_id: str | None
    until: datetime | None
    queue_position: int


@dataclass(frozen=True, slots=True)
class RunExplanation:
    """A run and, for each of its tasks that has not ended, what it waits for."""

    run: Run
    tasks: tuple[TaskWait, ...]
    breakers: tuple[CircuitBreaker, ...] = ()
    """The circuit breakers that concern the run and are not CLOSED."""

    @classmethod
    def from_proto(cls, message: api.ExplainRunResponse) -> RunExplanation:
        """Convert the contract message."""
        waits = tuple(
            TaskWait(
                task_id=t.task_id,
                state=_enum(TaskState, pb.TaskState, t.state, "TASK_STATE_"),
                reason=api.WaitReason.Name(t.reason).removeprefix("WAIT_REASON_"),
                summary=t.summary,
                waiting_for=tuple(t.waiting_for),
                since=_time(t, "since_time"),
                executor_id=t.executor_id or None,
                until=_time(t, "until_time"),
                queue_position=t.queue_position,
            )
            for t in message.tasks
        )
        breakers = tuple(CircuitBreaker.from_proto(b) for b in message.breakers)
        return cls(Run.from_proto(message.run), waits, breakers)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One check: ``progress``, ``queue_depth`` or ``consistency``."""

    name: str
    ok: bool
    summary: str
    details: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Messages waiting in one consumer."""

    stream: str
    consumer: str
    pending: int
    ack_pending: int


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The installation's health: ``healthy`` when every check passes."""

    healthy: bool
    checks: tuple[HealthCheck, ...]
    queues: tuple[QueueDepth, ...]
    as_of: datetime | None

    @classmethod
    def from_proto(cls, message: mon.GetHealthReportResponse) -> HealthReport:
        """Convert the contract message."""
        checks = tuple(
            HealthCheck(c.name, c.status == mon.CHECK_STATUS_OK, c.summary, tuple(c.details))
            for c in message.checks
        )
        queues = tuple(
            QueueDepth(q.stream, q.consumer, q.pending, q.ack_pending) for q in message.queues
        )
        return cls(message.healthy, checks, queues, _time(message, "as_of_time"))
