"""Registration of Python task handlers: ``@handler("name")``.

A handler is a plain function, sync or async, that an executor runs for every task whose
``method`` equals the handler's name::

    from stellwerk import handler

    @handler("billing/charge", description="Charge a card once per attempt key")
    async def charge(params: dict, ctx: TaskContext) -> dict:
        return await gateway.charge(params["card"], key=ctx.idempotency_key)

The function takes the task's parameters (``fn(params)``) and optionally the task's context
(``fn(params, ctx)``); its return value must be JSON-serialisable. Registration happens at import
time into a process-wide registry; the executor imports the modules named in its settings and
takes what they registered. This module imports no service, so workers and clients can use it.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from stellwerk.core.errors import AlreadyExistsError, InvalidArgumentError

__all__ = [
    "RegisteredHandler",
    "TaskContext",
    "handler",
    "registered_handlers",
]

F = TypeVar("F", bound=Callable[..., Any])

# Same alphabet as a task's ``method`` (Gleitzeit's rule); the "/" keeps handler names out of the
# flat namespace so that they read like ``area/verb`` and cannot shadow a bare protocol name.
_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_./:-]*$")
_MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler may know about the attempt it runs in.

    ``idempotency_key`` is stable across every delivery of the same attempt (and differs between
    attempts), so a handler can make its external effects happen at most once per attempt.
    """

    workflow_id: str
    task_id: str
    attempt: int
    idempotency_key: str
    method: str


@dataclass(frozen=True, slots=True)
class RegisteredHandler:
    """One registered handler, with what the executor needs to know to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    """True when calling ``fn`` returns a coroutine (it is awaited in the event loop)."""
    wants_ctx: bool
    """True when ``fn`` takes a second positional parameter for the :class:`TaskContext`."""
    description: str


_lock = threading.Lock()
_registry: dict[str, RegisteredHandler] = {}


def handler(name: str, *, description: str = "") -> Callable[[F], F]:
    """Register the decorated function as the implementation of method ``name``.

    Args:
        name: The task method this function implements, e.g. ``"billing/charge"``. It must match
            ``^[a-zA-Z][a-zA-Z0-9_./:-]*$``, contain a ``/``, hold no ``..`` and not end in ``.``.
        description: One line shown when an executor lists its methods.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        InvalidArgumentError: the name or the function's signature is not acceptable (raised when
            the decorator is created or applied, i.e. at import time, not when a task runs).
        AlreadyExistsError: another function is already registered under ``name``.
    """
    _check_name(name)
    if not isinstance(description, str):
        raise InvalidArgumentError(f"handler {name!r}: description must be a string")

    def register(fn: F) -> F:
        is_async, wants_ctx = _inspect_callable(name, fn)
        entry = RegisteredHandler(
            name=name, fn=fn, is_async=is_async, wants_ctx=wants_ctx, description=description
        )
        with _lock:
            existing = _registry.get(name)
            if existing is not None and existing.fn is not fn:
                raise AlreadyExistsError(
                    f"handler {name!r} is already registered by {_describe(existing.fn)}; "
                    f"cannot register {_describe(fn)} under the same name",
                    metadata={"handler": name},
                )
            _registry[name] = entry
        return fn

    return register


def registered_handlers() -> Mapping[str, RegisteredHandler]:
    """A read-only snapshot of every handler registered so far, by name."""
    with _lock:
        return MappingProxyType(dict(_registry))


def _clear_registry_for_tests() -> None:
    """Forget every registered handler. For tests only."""
    with _lock:
        _registry.clear()


@contextmanager
def _isolated_registry() -> Iterator[None]:
    """Run a block with an empty registry and restore the previous one afterwards. For tests."""
    with _lock:
        saved = dict(_registry)
        _registry.clear()
    try:
        yield
    finally:
        with _lock:
            _registry.clear()
            _registry.update(saved)


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
