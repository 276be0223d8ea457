"""What the client returns: typed, immutable values converted from the contract messages.

Protobuf messages stay in the transport layer; every call of :class:`~stellwerk_client.Client`
returns these. JSON values (task results) keep their JSON types (``100`` stays an integer).
The states they are in (and the scalar conversions) are in ``_states.py``, re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stellwerk_api.execution.v1 import executor_service_pb2 as exe
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

from ._states import BreakerState, RunState, TaskState, _enum, _json, _time
from .errors import NotFoundError, Problem, shorten

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "ExecutorInfo",
    "ExecutorStatus",
    "Method",
    "Overview",
    "Run",
    "RunChange",
    "RunState",
    "TaskAttempt",
    "TaskRun",
    "TaskState",
    "Validation",
]


@dataclass(frozen=True, slots=True)
class TaskAttempt:
    """One attempt of a task that ended."""

    number: int
    executor_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    """Why it failed; ``None`` if it succeeded."""

    @classmethod
    def from_proto(cls, message: pb.TaskAttempt) -> TaskAttempt:
        """Convert the contract message."""
        return cls(
            number=message.number,
            executor_id=message.executor_id or None,
            started_at=_time(message, "start_time"),
            ended_at=_time(message, "end_time"),
            error=message.error or None,
        )


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task of a run as the resolver reports it."""

    task_id: str
    name: str
    method: str
    state: TaskState
    attempts: int
    """Attempts made (1 for its first run; in RETRY_WAIT, those that failed)."""
    result: Any = None
    """The handler's output with its JSON types; ``None`` until COMPLETED."""
    error: str | None = None
    """Why it FAILED or is BLOCKED."""
    dependencies: tuple[str, ...] = ()
    dispatched_at: datetime | None = None
    ended_at: datetime | None = None
    executor_id: str | None = None
    retry_at: datetime | None = None
    """In RETRY_WAIT: when the next attempt is due."""
    attempt_history: tuple[TaskAttempt, ...] = ()
    """The attempts that ended, in order."""
    role: str = ""
    """``""`` on the normal path; ``"alternative"`` or ``"compensation"`` for a task that runs
    only on that path."""
    result_size: int = 0
    """Bytes of a result stored out of line (0 for one kept inline). When the reply could not
    carry it (a watch, or a ``get`` beyond its budget), ``result`` is ``None`` and this says how
    large it is."""

    @property
    def duration(self) -> float | None:
        """Seconds from dispatch to end (``None`` until both are known)."""
        if self.dispatched_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.dispatched_at).total_seconds()

    @classmethod
    def from_proto(cls, message: pb.TaskRun) -> TaskRun:
        """Convert the contract message."""
        return cls(
            task_id=message.task_id,
            name=message.name,
            method=message.method,
            state=_enum(TaskState, pb.TaskState, message.state, "TASK_STATE_"),
            attempts=message.attempts,
            result=_json(message.result_json),
            error=message.error or None,
            dependencies=tuple(message.dependencies),
            dispatched_at=_time(message, "dispatch_time"),
            ended_at=_time(message, "end_time"),
            executor_id=message.executor_id or None,
            retry_at=_time(message, "retry_time"),
            attempt_history=tuple(TaskAttempt.from_proto(a) for a in message.attempt_history),
            role=message.role,
            result_size=message.result_size,
        )


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """A circuit breaker that is not CLOSED: ``scope`` is ``method:<method>`` (around the
    method's executions) or ``run:<run id>`` (around the run's dependency resolution)."""

    scope: str
    state: BreakerState
    failures: int
    """Failures counted in its current window."""
    retry_at: datetime | None
    """While OPEN: when it turns HALF_OPEN."""
    changed_at: datetime | None

    @classmethod
    def from_proto(cls, message: pb.CircuitBreaker) -> CircuitBreaker:
        """Convert the contract message."""
        name = str(pb.BreakerState.Name(message.state)).removeprefix("BREAKER_STATE_")
        return cls(
            scope=message.scope,
            state=BreakerState(name)
            if name in BreakerState.__members__
            else BreakerState.UNSPECIFIED,
            failures=message.failures,
            retry_at=_time(message, "retry_time"),
            changed_at=_time(message, "change_time"),
        )


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a workflow: its state and (in the full view) every task."""

    run_id: str
    workflow_id: str | None
    """The ``id`` written in the workflow (``None`` when it has none)."""
    workflow_name: str
    state: RunState
    task_count: int
    tasks: tuple[TaskRun, ...] = ()
    """Every task in document order; empty in the views without tasks (``list``)."""
    description: str = ""
    created_at: datetime | None = None
    ended_at: datetime | None = None
    request_id: str = ""
    error: str | None = None
    restarts: int = 0
    """How many times the run was re-run (:meth:`Client.retry`) or restored."""
    breakers: tuple[CircuitBreaker, ...] = ()
    """The circuit breakers that concern it and are not CLOSED (full view only)."""

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self.state.finished

    def task(self, task_id: str) -> TaskRun:
        """The task ``task_id``; ``NotFoundError`` if the run has none (or no tasks loaded)."""
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise NotFoundError(f"run {self.run_id} has no task {shorten(task_id)}")

    @property
    def results(self) -> dict[str, Any]:
        """The result of every COMPLETED task, by task id."""
        return {t.task_id: t.result for t in self.tasks if t.state is TaskState.COMPLETED}

    @classmethod
    def from_proto(cls, message: pb.Run) -> Run:
        """Convert the contract message."""
        return cls(
            run_id=message.run_id,
            workflow_id=message.workflow_id or None,
            workflow_name=message.workflow_name,
            state=_enum(RunState, pb.RunState, message.state, "RUN_STATE_"),
            task_count=message.task_count,
            tasks=tuple(TaskRun.from_proto(task) for task in message.tasks),
            description=message.description,
            created_at=_time(message, "create_time"),
            ended_at=_time(message, "end_time"),
            request_id=message.request_id,
            error=message.error or None,
            restarts=message.restarts,
            breakers=tuple(CircuitBreaker.from_proto(b) for b in message.breakers),
        )


@dataclass(frozen=True, slots=True)
class RunChange:
    """One item of :meth:`Client.watch`: the run's header after the change, and the task that
    changed (``None`` for the first item, which carries the current state, and for changes of
    the run itself)."""

    run: Run
    task: TaskRun | None = None


@dataclass(frozen=True, slots=True)
class Validation:
    """The resolver's verdict on a workflow: every problem it found (none: valid)."""

    problems: tuple[Problem, ...]
    task_count: int

    @property
    def valid(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class Method:
    """A method an executor runs: ``kind`` is ``BUILTIN``, ``HANDLER``, ``SCRIPT``, or ``REMOTE``
    for one served by connected task workers (``WorkerService``)."""

    name: str
    kind: str
    description: str

    @classmethod
    def from_proto(cls, message: exe.Method) -> Method:
        """Convert the contract message."""
        kind = str(exe.MethodKind.Name(message.kind)).removeprefix("METHOD_KIND_")
        return cls(message.name, kind, message.description)


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    """One executor's identity, load and counters (``ExecutorService.GetExecutor``)."""

    id: str
    started_at: datetime | None
    uptime: float
    tasks_running: int
    concurrency: int
    methods: tuple[str, ...]
    tasks_completed: int
    tasks_failed: int

    @classmethod
    def from_proto(cls, message: exe.Executor) -> ExecutorInfo:
        """Convert the contract message."""
        return cls(
            id=message.id,
            started_at=_time(message, "start_time"),
            uptime=message.uptime.ToNanoseconds() / 1e9,
            tasks_running=message.tasks_running,
            concurrency=message.concurrency,
            methods=tuple(message.methods),
            tasks_completed=message.tasks_completed,
            tasks_failed=message.tasks_failed,
        )


@dataclass(frozen=True, slots=True)
class ExecutorStatus:
    """An executor as the monitor sees it from its registration."""

    id: str
    methods: tuple[str, ...]
    last_seen: datetime | None
    alive: bool


@dataclass(frozen=True, slots=True)
class Overview:
    """Runs and tasks counted by state, and the executors seen (``MonitorService``)."""

    runs: dict[RunState, int]
    tasks: dict[TaskState, int]
    executors: tuple[ExecutorStatus, ...]
    as_of: datetime | None
    breakers: tuple[CircuitBreaker, ...] = ()
    """Every circuit breaker that is not CLOSED."""
    resolution_retries: int = 0
    """Resolution retries counted by the resolvers (transient NATS/KV errors and the like)."""

    @classmethod
    def from_proto(cls, message: mon.GetOverviewResponse) -> Overview:
        """Convert the contract message."""
        runs = {
            _enum(RunState, pb.RunState, c.state, "RUN_STATE_"): c.count for c in message.run_counts
        }
        tasks = {
            _enum(TaskState, pb.TaskState, c.state, "TASK_STATE_"): c.count
            for c in message.task_counts
        }
        executors = tuple(
            ExecutorStatus(e.id, tuple(e.methods), _time(e, "last_seen_time"), e.alive)
            for e in message.executors
        )
        return cls(
            runs,
            tasks,
            executors,
            _time(message, "as_of_time"),
            breakers=tuple(CircuitBreaker.from_proto(b) for b in message.breakers),
            resolution_retries=message.resolution_retries,
        )
