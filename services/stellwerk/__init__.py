"""Stellwerk: a distributed workflow engine — DAGs of tasks over gRPC and NATS JetStream.

The public surface for users writing task handlers::

    from stellwerk import handler, TaskContext

    @handler("shop/charge")
    async def charge(params: dict, ctx: TaskContext) -> dict: ...

A handler exception or a timeout fails the attempt, and the task is retried while its ``retry``
policy has attempts left; ``raise NonRetryableError("...")`` fails the task at once. Long
handlers call ``ctx.heartbeat()`` (required with a task's ``heartbeat_timeout``).

``@handler`` only marks the function; an executor runs what it is given
(``Executor(settings, handlers=[charge])``) or finds in the modules it scans
(``STELLWERK_HANDLER_MODULES``).

Services live in ``stellwerk.resolver``, ``stellwerk.executor`` and ``stellwerk.monitor``; the
shared core (model, substitution, DAG analysis, NATS plumbing, settings, errors) in
``stellwerk.core``; generated contract stubs in ``stellwerk.<area>.v1``.
"""

from stellwerk.core.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    NonRetryableError,
    NotFoundError,
    Problem,
    ReferenceResolutionError,
    StellwerkError,
    TaskError,
    UnavailableError,
    WorkflowInvalidError,
    WrongStateError,
)
from stellwerk.core.handlers import TaskContext, handler

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "NonRetryableError",
    "NotFoundError",
    "Problem",
    "ReferenceResolutionError",
    "StellwerkError",
    "TaskContext",
    "TaskError",
    "UnavailableError",
    "WorkflowInvalidError",
    "WrongStateError",
    "handler",
]
