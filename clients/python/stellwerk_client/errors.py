"""The one domain error tree of Stellwerk.

Every error a service, the client or the CLI raises on purpose is one of these::

    StellwerkError
    ├── InvalidArgumentError      bad input; carries every problem found (gRPC INVALID_ARGUMENT)
    │   ├── WorkflowInvalidError  a workflow document failed validation
    │   └── MalformedRequestError the request bytes are not a valid message of the RPC
    ├── NotFoundError             no such workflow run, task or executor (NOT_FOUND)
    ├── AlreadyExistsError        a create collided with an existing resource (ALREADY_EXISTS)
    ├── WrongStateError           the resource's state forbids the call (FAILED_PRECONDITION)
    ├── ConflictError             lost a compare-and-set race; retry at a higher level (ABORTED)
    ├── UnavailableError          NATS (or a peer) cannot be reached right now (UNAVAILABLE)
    │   └── DeadlineExceededError the call got no answer within its deadline (DEADLINE_EXCEEDED)
    └── TaskError                 a task failed while running; its message is recorded on the task
        └── ReferenceResolutionError  a ``${...}`` reference could not be resolved at run time

The mapping to gRPC status codes lives in one place, ``stellwerk_client.wire`` (servers apply
it through ``stellwerk.core.grpc_errors``, which also re-exports this module as
``stellwerk.core.errors``).

``DeadlineExceededError`` is a kind of ``UnavailableError`` rather than its sibling: both say
"the call did not go through now; it may or may not have taken effect, and may be repeated", so
every ``except UnavailableError`` that retries or reports an unreachable service stays right for
a deadline too. Callers to whom the difference matters (a server that is slow rather than gone:
raising the deadline helps, reconnecting does not) catch ``DeadlineExceededError`` first, as
with httpx's ``TimeoutException`` beside ``NetworkError`` under ``TransportError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_MESSAGE_CHARS",
    "AlreadyExistsError",
    "ConflictError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "MalformedRequestError",
    "NonRetryableError",
    "NotFoundError",
    "Problem",
    "ReferenceResolutionError",
    "StellwerkError",
    "TaskError",
    "UnavailableError",
    "WorkflowInvalidError",
    "WrongStateError",
    "clip",
    "shorten",
    "summarise",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, named precisely enough to fix it.

    ``task`` is the task id (or ``None`` for the workflow itself), ``field`` the key or
    request field at fault (dotted for nested values, e.g. ``retry.max_attempts``).
    """

    task: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"task {self.task!r}: " if self.task is not None else ""
        return f"{where}{self.field}: {self.message}"

    def to_dict(self) -> dict[str, str | None]:
        """The JSON shape the CLI prints (``{"task", "field", "message"}``)."""
        return {"task": self.task, "field": self.field, "message": self.message}


MAX_MESSAGE_CHARS = 1000
"""An error message built from problems stops listing them here ("... and K more"): an error
must not grow with the input that caused it (gRPC trailers are limited to a few KiB)."""


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, with the full length noted: the way to
    echo user input inside a message, so a 10,000-character id yields a short error."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}... ({size:,} characters)"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked as cut."""
    return text if len(text) <= limit else f"{text[: max(0, limit - 3)]}..."


def summarise(problems: tuple[Problem, ...], limit: int = MAX_MESSAGE_CHARS) -> str:
    """The problems joined by ``"; "`` while they fit in ``limit`` characters, then
    ``"and K more"``."""
    parts: list[str] = []
    used = 0
    for shown, problem in enumerate(problems):
        text = clip(str(problem), 300)
        if parts and used + len(text) + 2 > limit - 40:
            parts.append(f"and {len(problems) - shown} more")
            break
        parts.append(text)
        used += len(text) + 2
    return "; ".join(parts)


class StellwerkError(Exception):
    """Base of every deliberate Stellwerk error.

    ``reason`` is the UPPER_SNAKE_CASE code put into ``google.rpc.ErrorInfo``;
    ``metadata`` carries the request-specific facts behind the message.
    """

    reason: str = "STELLWERK_ERROR"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgumentError(StellwerkError):
    """The input is malformed; ``problems`` lists every problem, not just the first."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str | None = None,
        *,
        problems: Iterable[Problem] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if message is None:
            message = summarise(self.problems) or "invalid argument"
        super().__init__(message, metadata=metadata)


class WorkflowInvalidError(InvalidArgumentError):
    """A workflow document failed loading or validation."""

    reason = "WORKFLOW_INVALID"


class MalformedRequestError(InvalidArgumentError):
    """The request bytes could not be decoded as the RPC's message (corrupt wire format, a
    string field that is not UTF-8)."""

    reason = "MALFORMED_REQUEST"


class NotFoundError(StellwerkError):
    """The named resource does not exist (or no longer exists)."""

    reason = "NOT_FOUND"


class AlreadyExistsError(StellwerkError):
    """A create collided with a resource that already exists."""

    reason = "ALREADY_EXISTS"


class WrongStateError(StellwerkError):
    """The resource exists but its state forbids the call."""

    reason = "WRONG_STATE"


class ConflictError(StellwerkError):
    """A compare-and-set lost against a concurrent writer."""

    reason = "CONFLICT"


class UnavailableError(StellwerkError):
    """NATS or a peer service cannot be reached right now; retrying the call may help."""

    reason = "UNAVAILABLE"


class DeadlineExceededError(UnavailableError):
    """The call got no answer within its deadline: the peer may be slow rather than gone, and
    the call may still take effect. Retrying with a longer deadline may help."""

    reason = "DEADLINE_EXCEEDED"


class TaskError(StellwerkError):
    """A task failed while running; ``message`` is what gets recorded on the task."""

    reason = "TASK_FAILED"


class NonRetryableError(TaskError):
    """Raised by a handler to fail its task at once: no retry, whatever its ``retry`` policy
    (bad input that another attempt would not mend). Other exceptions and timeouts are
    retried while attempts remain."""

    reason = "TASK_FAILED_NON_RETRYABLE"


class ReferenceResolutionError(TaskError):
    """A ``${...}`` reference could not be resolved against its dependency's output."""

    reason = "REFERENCE_UNRESOLVED"

    def __init__(self, reference: str, message: str, *, available: Iterable[str] = ()) -> None:
        self.reference = reference
        self.available: tuple[str, ...] = tuple(available)
        super().__init__(message, metadata={"reference": reference})
