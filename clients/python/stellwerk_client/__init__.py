"""Python client of Stellwerk: submit workflows, follow their runs, build workflows in code.

::

    from stellwerk_client import Client, WorkflowBuilder

    flow = WorkflowBuilder("numbers")
    add = flow.task("add", "mcp/tool.add", {"a": 40, "b": 2})
    flow.task("double", "mcp/tool.multiply", {"a": add.result, "b": 2})

    async with await Client.connect("127.0.0.1:50051") as client:
        run = await client.run(flow.build())
        print(run.state, run.results)

:class:`SyncClient` offers the same calls without an event loop. Every error is a
:class:`StellwerkError` (the tree: :mod:`stellwerk_client.errors`). ``stellwerk_client.cli`` is
the ``stellwerk`` command line built on it.
"""

from __future__ import annotations

from ._channel import DEFAULT_TIMEOUT, RetryConfig
from ._client import WATCH_SEGMENT, Client, RunPage, Workflow
from ._health import HealthProbe, wait_for_health
from ._inspection import HealthCheck, HealthReport, QueueDepth, RunExplanation, TaskWait
from ._operations import Checkpoint
from ._services import ExecutorClient, MonitorClient
from ._sync import SyncClient
from ._types import (
    BreakerState,
    CircuitBreaker,
    ExecutorInfo,
    ExecutorStatus,
    Method,
    Overview,
    Run,
    RunChange,
    RunState,
    TaskAttempt,
    TaskRun,
    TaskState,
    Validation,
)
from .errors import (
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
)
from .model import Ref, TaskHandle, WorkflowBuilder, WorkflowSpec, load_workflow

__all__ = [
    "DEFAULT_TIMEOUT",
    "WATCH_SEGMENT",
    "AlreadyExistsError",
    "BreakerState",
    "Checkpoint",
    "CircuitBreaker",
    "Client",
    "ConflictError",
    "DeadlineExceededError",
    "ExecutorClient",
    "ExecutorInfo",
    "ExecutorStatus",
    "HealthCheck",
    "HealthProbe",
    "HealthReport",
    "InvalidArgumentError",
    "Method",
    "MonitorClient",
    "NotFoundError",
    "Overview",
    "Problem",
    "QueueDepth",
    "Ref",
    "RetryConfig",
    "Run",
    "RunChange",
    "RunExplanation",
    "RunPage",
    "RunState",
    "StellwerkError",
    "SyncClient",
    "TaskAttempt",
    "TaskHandle",
    "TaskRun",
    "TaskState",
    "TaskWait",
    "UnavailableError",
    "Validation",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowInvalidError",
    "WorkflowSpec",
    "WrongStateError",
    "load_workflow",
    "wait_for_health",
]
