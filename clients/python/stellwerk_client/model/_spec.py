"""The workflow model: immutable, well-typed descriptions of a workflow and its tasks.

A :class:`WorkflowSpec` is *well-formed* (every field has the right type and range) as soon as
it exists; whether it is *valid* as a whole (known dependencies, no cycles, references inside
the dependencies) is decided by :func:`~stellwerk_client.model.validate_workflow`.
:func:`~stellwerk_client.model.load_workflow` returns only specs that are both.
"""

from __future__ import annotations

import math
import re
import unicodedata
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stellwerk_client.errors import NotFoundError, shorten

from ._values import check_json_value, describe

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_TIMEOUT_SECONDS",
    "Backoff",
    "FailureStrategy",
    "Priority",
    "RetryPolicy",
    "TaskSpec",
    "WorkflowSpec",
    "default_protocol",
    "failure_strategy_problem",
    "identifier_problem",
    "method_problem",
    "protocol_problem",
    "timeout_problem",
]

MAX_ID_LENGTH = 200
"""Longest task id or name, in characters (Gleitzeit's limit for names)."""

MAX_TIMEOUT_SECONDS = 86_400.0
"""Longest task timeout: one day."""

_FORBIDDEN_IN_IDS = frozenset(".${}")
_METHOD_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_./:-]*")
_PROTOCOL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.:-]*(/[a-zA-Z0-9_.:-]+)?")
_MAX_METHOD_LENGTH = 200


class Priority(StrEnum):
    """How urgently a task wants a worker; Gleitzeit's ``1/2/3`` mean high/normal/low."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Backoff(StrEnum):
    """How the delay between retry attempts grows."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"


class FailureStrategy(StrEnum):
    """What a task's failure (no retry left) means for its run: ``block`` (the default) fails
    the task and blocks its dependents; ``skip`` marks it SKIPPED and lets its dependents run,
    references to its result resolving to ``null``; ``alternative`` runs its
    ``alternative_task`` instead, whose result stands in for its own; ``compensate`` fails the
    task and starts the run's saga: the ``compensation_task`` of each completed task runs, in
    reverse completion order, and the run ends COMPENSATED."""

    BLOCK = "block"
    SKIP = "skip"
    ALTERNATIVE = "alternative"
    COMPENSATE = "compensate"


def failure_strategy_problem(value: object) -> str | None:
    """Why ``value`` cannot be a failure strategy, or ``None`` if it can."""
    if isinstance(value, str) and value.lower() in FailureStrategy._value2member_map_:
        return None
    return (
        f"the failure strategy must be block, skip, alternative or compensate, got {shorten(value)}"
    )


def identifier_problem(value: object, what: str = "id") -> str | None:
    """Why ``value`` cannot be a task id or name, or ``None`` if it can.

    Any characters are allowed except ``.``, ``$``, ``{`` and ``}`` (references are built from
    them) and control characters (a newline in an id is always a mistake); 1..200 characters.
    """
    if not isinstance(value, str):
        return f"the {what} must be a string, got {describe(value)}"
    if not value.strip():
        return f"the {what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"the {what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
    forbidden = sorted(_FORBIDDEN_IN_IDS.intersection(value))
    if forbidden:
        listed = ", ".join(repr(c) for c in forbidden)
        return (
            f"the {what} {shorten(value)} contains {listed}; ids and names may hold any character "
            "except '.', '$', '{' and '}', which references use"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return f"the {what} {shorten(value)} contains a control character or a lone surrogate"
    return None


def method_problem(value: object) -> str | None:
    """Why ``value`` cannot be a method name (``mcp/tool.add``), or ``None`` if it can."""
    if not isinstance(value, str):
        return f"the method must be a string, got {describe(value)}"
    if not value:
        return "the method must not be empty"
    if len(value) > _MAX_METHOD_LENGTH:
        return f"the method is longer than {_MAX_METHOD_LENGTH} characters"
    if not _METHOD_RE.fullmatch(value):
        return (
            f"the method {shorten(value)} must start with a letter and hold only letters, digits "
            "and '_', '.', '/', ':', '-'"
        )
    if ".." in value or value.endswith("."):
        return f"the method {shorten(value)} must not contain '..' or end with '.'"
    return None


def protocol_problem(value: object) -> str | None:
    """Why ``value`` cannot be a protocol name (``mcp/v1``), or ``None`` if it can."""
    if not isinstance(value, str):
        return f"the protocol must be a string, got {describe(value)}"
    if len(value) > _MAX_METHOD_LENGTH or not _PROTOCOL_RE.fullmatch(value):
        return f"the protocol {shorten(value)} must look like 'name/v1'"
    return None


def default_protocol(method: str) -> str:
    """Gleitzeit's default protocol: ``mcp/tool.add`` → ``mcp/v1``, ``add`` → ``python/v1``."""
    return f"{method.split('/')[0]}/v1" if "/" in method else "python/v1"


def timeout_problem(value: object) -> str | None:
    """Why ``value`` cannot be a timeout in seconds, or ``None`` if it can."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"the timeout must be a number of seconds, got {describe(value)}"
    # Compare before any float() conversion: a huge int would overflow it.
    if isinstance(value, float) and not math.isfinite(value):
        return f"the timeout must be a finite number, got {shorten(value)}"
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        return f"the timeout must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g} seconds"
    return None


def _json_or_raise(value: dict[str, Any], root: str, scope: str) -> dict[str, Any]:
    check = check_json_value(value, root=root, subject=f"{root} are", scope=scope)
    if check.errors:
        raise ValueError("; ".join(check.errors))
    return value


def _checked(problem: str | None, value: Any) -> Any:
    if problem is not None:
        raise ValueError(problem)
    return value


class RetryPolicy(BaseModel):
    """How often and how patiently a failed task is tried again."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_attempts: int = Field(default=3, ge=1, le=10)
    backoff: Backoff = Backoff.EXPONENTIAL
    base_delay: float = Field(default=1.0, ge=0.1, le=60.0, allow_inf_nan=False)
    max_delay: float = Field(default=300.0, ge=1.0, le=3600.0, allow_inf_nan=False)
    jitter: bool = True

    @field_validator("backoff", mode="before")
    @classmethod
    def _backoff_case(cls, value: Any) -> Any:
        # Strict mode wants the enum itself; accept its value in any case, like priorities.
        if isinstance(value, str) and value.lower() in Backoff._value2member_map_:
            return Backoff(value.lower())
        if isinstance(value, Backoff):
            return value
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"backoff must be exponential, linear or fixed, got {shown}")

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetryPolicy:
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({self.max_delay:g}) must not be less than base_delay "
                f"({self.base_delay:g})"
            )
        return self


class TaskSpec(BaseModel):
    """One task of a workflow: a method call with JSON parameters.

    ``dependencies`` hold task *ids* (the loader maps names to ids), in the order written,
    without duplicates. ``params`` and ``metadata`` are JSON values; treat them as read-only.
    Built directly, ``name`` defaults to ``id`` and ``protocol`` to :func:`default_protocol`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str = ""  # "" only as a signature default: omitted, it becomes the id
    method: str
    protocol: str = ""  # omitted, it follows from the method (default_protocol)
    params: dict[str, Any] = Field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    retry: RetryPolicy | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    on_failure: FailureStrategy = FailureStrategy.BLOCK
    alternative_task: str | None = None
    compensation_task: str | None = None
    """The task that undoes this one if it completed and the run's saga runs (any strategy)."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        # Gleitzeit's defaults: the name is the id, the protocol follows from the method.
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        if "name" not in filled and "id" in filled:
            filled["name"] = filled["id"]
        metadata = filled.get("metadata")
        if (
            "on_failure" not in filled
            and isinstance(metadata, dict)
            and "failure_strategy" in metadata  # the design analysis's spelling
        ):
            filled["on_failure"] = metadata["failure_strategy"]
        if (
            "alternative_task" not in filled
            and isinstance(metadata, dict)
            and "alternative_task" in metadata
        ):
            filled["alternative_task"] = metadata["alternative_task"]
        if (
            "compensation_task" not in filled
            and isinstance(metadata, dict)
            and "compensation_task" in metadata
        ):
            filled["compensation_task"] = metadata["compensation_task"]
        method = filled.get("method")
        if "protocol" not in filled and isinstance(method, str):
            filled["protocol"] = default_protocol(method)
        return filled

    @field_validator("id", "name", mode="before")
    @classmethod
    def _identifier(cls, value: Any, info: ValidationInfo) -> Any:
        return _checked(identifier_problem(value, info.field_name or "id"), value)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        return _checked(method_problem(value), value)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return _checked(protocol_problem(value), value)

    @field_validator("timeout", "heartbeat_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else float(_checked(timeout_problem(value), value))

    @field_validator("on_failure", mode="before")
    @classmethod
    def _strategy(cls, value: Any) -> Any:
        _checked(failure_strategy_problem(value), value)
        return FailureStrategy(str(value).lower())

    @field_validator("alternative_task", "compensation_task", mode="before")
    @classmethod
    def _alternative(cls, value: Any) -> Any:
        return None if value is None else _checked(identifier_problem(value, "task id"), value)

    @field_validator("params", "metadata", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping, got {describe(value)}")
        return _json_or_raise(value, info.field_name or "params", "per task")

    @field_validator("dependencies", mode="after")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


class WorkflowSpec(BaseModel):
    """A workflow definition: named tasks and the dependencies between them.

    ``id`` names the definition (every submit starts a new run with its own id); ``name``
    defaults to the id, else ``"Unnamed Workflow"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    name: str = ""
    description: str = ""
    tasks: tuple[TaskSpec, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)

    _by_id: dict[str, TaskSpec] = PrivateAttr(default_factory=dict)
    _by_name: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            return {**data, "name": data.get("id") or "Unnamed Workflow"}
        return data

    @field_validator("metadata", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping, got {describe(value)}")
        return _json_or_raise(value, "metadata", "per workflow")

    def model_post_init(self, context: Any, /) -> None:
        """Index the tasks by id and by name (the first of duplicate ids wins)."""
        for task in self.tasks:
            self._by_id.setdefault(task.id, task)
            self._by_name.setdefault(task.name, []).append(task.id)

    def task(self, task_id: str) -> TaskSpec:
        """The task with id ``task_id``; raises :class:`NotFoundError` if there is none."""
        try:
            return self._by_id[task_id]
        except KeyError:
            raise NotFoundError(f"workflow has no task {shorten(task_id)}") from None

    def resolve_task_ref(self, token: str) -> str | None:
        """The id of the task ``token`` names: an id first, else a name held by one task only.

        Returns ``None`` for an unknown token and for a name shared by several tasks.
        """
        if token in self._by_id:
            return token
        ids = self._by_name.get(token, ())
        return ids[0] if len(ids) == 1 else None

    def tasks_named(self, name: str) -> tuple[str, ...]:
        """The ids of every task called ``name`` (several when the name is ambiguous)."""
        return tuple(self._by_name.get(name, ()))

    def to_proto(self) -> Any:
        """This workflow as a ``stellwerk.workflow.v1.WorkflowSpec`` message."""
        from ._proto import spec_to_proto  # the contracts load only when used

        return spec_to_proto(self)

    @classmethod
    def from_proto(cls, message: Any) -> WorkflowSpec:
        """Load and validate a ``stellwerk.workflow.v1.WorkflowSpec`` message, exactly as a file
        with the same content; raises ``WorkflowInvalidError`` listing every problem."""
        from ._loader import load_workflow
        from ._proto import spec_mapping_from_proto

        return load_workflow(spec_mapping_from_proto(message))
