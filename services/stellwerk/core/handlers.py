"""Marking Python task handlers: ``@handler("name")``.

A handler is a plain function, sync or async, that an executor runs for every task whose
``method`` equals the handler's name::

    from stellwerk import handler

    @handler("billing/charge", description="Charge a card once per attempt key")
    async def charge(params: dict, ctx: TaskContext) -> dict:
        return await gateway.charge(params["card"], key=ctx.idempotency_key)

The function takes the task's parameters (``fn(params)``) and optionally the task's context
(``fn(params, ctx)``); its return value must be JSON-serialisable.

The decorator only checks the function and marks it; nothing is registered anywhere. An executor
is handed its handlers explicitly (``Executor(settings, handlers=[charge])``, as Temporal's
``Worker(..., activities=[...])``) or scans the modules named in ``STELLWERK_HANDLER_MODULES``
for marked functions (:func:`handlers_in`). With no process-wide registry, what an executor
offers depends only on what it was given, and importing a module has no effect to undo.
This module imports no service, so workers and clients can use it.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from stellwerk.core.errors import AlreadyExistsError, InvalidArgumentError

__all__ = [
    "HandlerDefinition",
    "Heartbeats",
    "TaskContext",
    "collect_handlers",
    "handler",
    "handler_definition",
    "handlers_in",
]

F = TypeVar("F", bound=Callable[..., Any])

# Same alphabet as a task's ``method`` (Gleitzeit's rule); the "/" keeps handler names out of the
# flat namespace so that they read like ``area/verb`` and cannot shadow a bare protocol name.
_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_./:-]*$")
_MAX_NAME_LENGTH = 200
# The attribute @handler sets on the function (Temporal's @activity.defn does the same).
_MARK = "__stellwerk_handler__"


class Heartbeats:
    """When the handler of one attempt last called :meth:`TaskContext.heartbeat` (monotonic
    clock); written from any thread, read by the executor."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        """Note that the handler is alive now."""
        self.last = time.monotonic()


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler may know about the attempt it runs in.

    ``idempotency_key`` is stable across every delivery of the same attempt (and differs between
    attempts), so a handler can make its external effects happen at most once per attempt.
    ``run_id`` is the run's id (one execution of a workflow); ``workflow_id`` is kept as an
    alias of it, because handlers written before the terms were settled read that name.
    """

    run_id: str
    task_id: str
    attempt: int
    idempotency_key: str
    method: str

    heartbeats: Heartbeats | None = field(default=None, repr=False, compare=False)

    @property
    def workflow_id(self) -> str:
        """Deprecated alias of :attr:`run_id` (the run's id, not the workflow file's id)."""
        return self.run_id

    def heartbeat(self) -> None:
        """Tell the executor that this attempt's handler is alive. Cheap (no I/O) and safe from
        any thread, so a plain ``def`` handler may call it too. A task with a
        ``heartbeat_timeout`` fails its attempt ("timed out") when its handler goes longer
        than that without calling it; without one, calling it does nothing else."""
        if self.heartbeats is not None:
            self.heartbeats.beat()


@dataclass(frozen=True, slots=True)
class HandlerDefinition:
    """One marked handler, with what the executor needs to know to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    """True when calling ``fn`` returns a coroutine (it is awaited in the event loop)."""
    wants_ctx: bool
    """True when ``fn`` takes a second positional parameter for the :class:`TaskContext`."""
    description: str


def handler(name: str, *, description: str = "") -> Callable[[F], F]:
    """Mark the decorated function as the implementation of method ``name``.

    Args:
        name: The task method this function implements, e.g. ``"billing/charge"``. It must match
            ``^[a-zA-Z][a-zA-Z0-9_./:-]*$``, contain a ``/``, hold no ``..`` and not end in ``.``.
        description: One line shown when an executor lists its methods.

    Returns:
        A decorator that marks the function and returns it unchanged.

    Raises:
        InvalidArgumentError: the name or the function's signature is not acceptable, or the
            function is already marked under another name (raised when the decorator is
            created or applied, i.e. at import time, not when a task runs).
    """
    _check_name(name)
    if not isinstance(description, str):
        raise InvalidArgumentError(f"handler {name!r}: description must be a string")

    def mark(fn: F) -> F:
        is_async, wants_ctx = _inspect_callable(name, fn)
        existing = handler_definition(fn)
        if existing is not None and existing.name != name:
            raise InvalidArgumentError(
                f"handler {name!r}: {_describe(fn)} is already marked as {existing.name!r}; "
                "one function implements one method"
            )
        definition = HandlerDefinition(
            name=name, fn=fn, is_async=is_async, wants_ctx=wants_ctx, description=description
        )
        try:
            setattr(fn, _MARK, definition)
        except (AttributeError, TypeError) as exc:  # bound methods, objects with __slots__
            raise InvalidArgumentError(
                f"handler {name!r}: cannot mark {_describe(fn)} ({exc}); "
                "decorate a function or an object that takes attributes"
            ) from exc
        return fn

    return mark


def handler_definition(fn: object) -> HandlerDefinition | None:
    """The definition ``@handler`` attached to ``fn``, or ``None`` when it is not marked."""
    definition = getattr(fn, _MARK, None)
    # A mark that points at another object was inherited (a subclass instance, a wrapper copying
    # __dict__ with functools.wraps): that object was never decorated itself.
    if isinstance(definition, HandlerDefinition) and definition.fn is fn:
        return definition
    return None


def handlers_in(module: ModuleType) -> list[HandlerDefinition]:
    """Every marked handler among the names of ``module``, in the module's order.

    Handlers the module imported from elsewhere count too: a module listing the handlers of a
    worker is a fine way to gather them.
    """
    found: dict[int, HandlerDefinition] = {}
    for value in list(vars(module).values()):
        definition = handler_definition(value)
        if definition is not None:
            found.setdefault(id(definition.fn), definition)
    return list(found.values())


def collect_handlers(
    handlers: Iterable[object] = (), modules: Iterable[ModuleType] = ()
) -> dict[str, HandlerDefinition]:
    """Method name → definition for the given functions and every handler of ``modules``.

    Raises:
        InvalidArgumentError: an entry of ``handlers`` is not marked with ``@handler``.
        AlreadyExistsError: two different functions implement the same method name.
    """
    definitions: list[HandlerDefinition] = []
    for fn in handlers:
        definition = handler_definition(fn)
        if definition is None:
            hint = 'decorate it with @handler("area/name")'
            if isinstance(getattr(fn, _MARK, None), HandlerDefinition):
                hint = "it wraps a handler; put @handler outermost"
            raise InvalidArgumentError(f"{_describe(fn)} is not a handler; {hint}")
        definitions.append(definition)
    for module in modules:
        definitions.extend(handlers_in(module))

    by_name: dict[str, HandlerDefinition] = {}
    for definition in definitions:
        existing = by_name.setdefault(definition.name, definition)
        if existing.fn is not definition.fn:
            raise AlreadyExistsError(
                f"handler {definition.name!r} is defined by both {_describe(existing.fn)} and "
                f"{_describe(definition.fn)}; one method name needs one function",
                metadata={"handler": definition.name},
            )
    return by_name


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"handler name must be a string, got {type(name).__name__}")
    problem = None
    if not _NAME_RE.fullmatch(name):
        problem = "must start with a letter and hold only letters, digits and _ . / : -"
    elif len(name) > _MAX_NAME_LENGTH:
        problem = f"must be at most {_MAX_NAME_LENGTH} characters long"
    elif ".." in name:
        problem = "must not contain '..'"
    elif name.endswith("."):
        problem = "must not end in '.'"
    elif "/" not in name:
        problem = "must contain a '/' (e.g. 'billing/charge')"
    if problem is not None:
        raise InvalidArgumentError(f"handler name {name!r} {problem}")


def _inspect_callable(name: str, fn: object) -> tuple[bool, bool]:
    """Return ``(is_async, wants_ctx)`` for ``fn`` or explain why it cannot be a handler."""
    if not callable(fn):
        raise InvalidArgumentError(f"handler {name!r}: {fn!r} is not callable")
    call = getattr(fn, "__call__", None)  # noqa: B004 -- also inspect callable objects
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise InvalidArgumentError(
            f"handler {name!r}: {_describe(fn)} is a generator; a handler returns one value"
        )
    is_async = inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)
    )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"handler {name!r}: cannot read the signature of {_describe(fn)}: {exc}"
        ) from exc

    usage = "declare it as fn(params) or fn(params, ctx)"
    positional = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            raise InvalidArgumentError(
                f"handler {name!r}: *{parameter.name} is not supported; {usage}"
            )
        if (
            parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is inspect.Parameter.empty
        ):
            raise InvalidArgumentError(
                f"handler {name!r}: keyword-only parameter {parameter.name!r} has no default "
                f"and would never be passed; {usage}"
            )
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    if positional not in (1, 2):
        raise InvalidArgumentError(
            f"handler {name!r}: {_describe(fn)} takes {positional} positional parameters; {usage}"
        )
    return is_async, positional == 2


def _describe(fn: object) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"
