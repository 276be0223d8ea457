"""The method table: which task methods this executor can run, and how to run one."""

from __future__ import annotations

import importlib
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from stellwerk.core.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    StellwerkError,
    TaskError,
)
from stellwerk.core.handlers import HandlerDefinition, TaskContext, collect_handlers

from ._invoke import call_handler, ensure_json, exception_message, with_deadline
from ._mcp_tools import BUILTIN_TOOLS
from ._python_script import PythonScriptRunner, resolve_script_dirs

__all__ = ["PYTHON_EXECUTE", "MethodInfo", "MethodKind", "MethodTable", "build_method_table"]

PYTHON_EXECUTE = "python/execute"
_RESERVED = frozenset({*BUILTIN_TOOLS, PYTHON_EXECUTE})
_LISTED_IN_ERRORS = 20

_Call = Callable[[dict[str, Any], TaskContext, "float | None"], Awaitable[Any]]


class MethodKind(StrEnum):
    """Where a method's implementation comes from."""

    BUILTIN = "builtin"
    """Shipped with Stellwerk (the Gleitzeit ``mcp/tool.*`` tools)."""
    HANDLER = "handler"
    """A Python function marked with ``@handler`` and given to the executor."""
    SCRIPT = "script"
    """``python/execute``: a script file run in a child process."""
    REMOTE = "remote"
    """Served by task workers connected over ``WorkerService`` (``executor/_workers.py``,
    ``WorkerHub.infos``); never in a :class:`MethodTable`."""


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """A method as an executor advertises it."""

    name: str
    kind: MethodKind
    description: str


@dataclass(frozen=True, slots=True)
class _Method:
    info: MethodInfo
    call: _Call


class MethodTable:
    """Method name → implementation; built by :func:`build_method_table`."""

    def __init__(self, methods: Mapping[str, _Method]) -> None:
        """Wrap a prepared mapping; use :func:`build_method_table` to build one."""
        self._methods = dict(sorted(methods.items()))

    def names(self) -> list[str]:
        """The method names, sorted."""
        return list(self._methods)

    def infos(self) -> list[MethodInfo]:
        """Name, kind and description of every method, sorted by name."""
        return [method.info for method in self._methods.values()]

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a method of this table."""
        return name in self._methods

    def __len__(self) -> int:
        """The number of methods."""
        return len(self._methods)

    async def invoke(
        self,
        name: str,
        params: dict[str, Any],
        ctx: TaskContext,
        *,
        timeout: float | None,  # noqa: ASYNC109 -- the deadline is per task, hence an argument
    ) -> Any:
        """Run method ``name`` with ``params`` and return its output as plain JSON data.

        Args:
            name: The task's method.
            params: The task's parameters after substitution.
            ctx: The attempt being run; handlers that ask for it receive it.
            timeout: Seconds the call may take, or ``None`` for no limit (``python/execute``
                then uses its own default of 10 s).

        Raises:
            TaskError: for every failure: unknown method, bad arguments, an exception in the
                implementation, an output that is not JSON, or the timeout. Its message is
                what gets recorded on the task. Cancellation propagates as ``CancelledError``.
        """
        method = self._methods.get(name)
        if method is None:
            raise TaskError(self._unknown(name), metadata={"method": str(name)})
        if not isinstance(params, dict):
            raise TaskError(f"{name}: params must be an object, got {type(params).__name__}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise TaskError(f"{name}: timeout must be a positive number of seconds: {timeout!r}")
        return ensure_json(await method.call(params, ctx, timeout))

    def _unknown(self, name: str) -> str:
        names = self.names()
        offered = ", ".join(names[:_LISTED_IN_ERRORS])
        if len(names) > _LISTED_IN_ERRORS:
            offered += f", ... ({len(names)} in all)"
        return f"unknown method {name!r}; this executor offers: {offered}"


def build_method_table(
    *,
    script_dirs: Sequence[Path] = (),
    handlers: Iterable[Callable[..., Any]] = (),
    handler_modules: Sequence[str] = (),
) -> MethodTable:
    """Build the table: built-ins, the given handlers and (optionally) ``python/execute``.

    Args:
        script_dirs: Directories ``python/execute`` may run scripts from
            (``STELLWERK_SCRIPT_DIRS``). Empty (the default) leaves ``python/execute`` out.
        handlers: Functions marked with ``@handler``; each becomes a method.
        handler_modules: Dotted module names to import and scan; every ``@handler`` function
            among their names becomes a method too.

    Raises:
        InvalidArgumentError: a module cannot be imported, an entry of ``handlers`` is not a
            handler, or a script directory does not exist.
        AlreadyExistsError: a handler uses the name of a built-in method, or two different
            functions (given, or found in the modules) implement the same method.
    """
    modules = [_import_handler_module(module) for module in handler_modules]
    definitions = collect_handlers(handlers, modules)

    methods: dict[str, _Method] = {}
    for tool, (fn, description) in BUILTIN_TOOLS.items():
        methods[tool] = _Method(MethodInfo(tool, MethodKind.BUILTIN, description), _builtin(fn))
    if script_dirs:
        runner = PythonScriptRunner(resolve_script_dirs(script_dirs))
        description = "Run a Python script: {file, context} -> {result, output, success}"
        methods[PYTHON_EXECUTE] = _Method(
            MethodInfo(PYTHON_EXECUTE, MethodKind.SCRIPT, description), runner
        )
    for name, definition in definitions.items():
        if name in _RESERVED:
            raise AlreadyExistsError(
                f"handler {name!r} uses the name of a built-in method; choose another name",
                metadata={"handler": name},
            )
        info = MethodInfo(name, MethodKind.HANDLER, definition.description)
        methods[name] = _Method(info, _handler(definition))
    return MethodTable(methods)


def _import_handler_module(module: str) -> ModuleType:
    if not isinstance(module, str) or not module:
        raise InvalidArgumentError(f"handler module name must be a non-empty string: {module!r}")
    try:
        return importlib.import_module(module)
    except StellwerkError:
        raise  # e.g. InvalidArgumentError from a bad @handler: already says what is wrong
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise InvalidArgumentError(
            f"cannot import handler module {module!r}: {exception_message(exc)}",
            metadata={"module": module},
        ) from exc


def _builtin(fn: Callable[[Mapping[str, Any]], dict[str, Any]]) -> _Call:
    async def call(params: dict[str, Any], ctx: TaskContext, time_limit: float | None) -> Any:
        # Built-ins are instant and pure, so they run in the loop without a deadline.
        try:
            return fn(params)
        except TaskError:
            raise
        except Exception as exc:
            raise TaskError(exception_message(exc)) from exc

    return call


def _handler(definition: HandlerDefinition) -> _Call:
    async def call(params: dict[str, Any], ctx: TaskContext, time_limit: float | None) -> Any:
        return await with_deadline(
            definition.name, time_limit, call_handler(definition, params, ctx)
        )

    return call
