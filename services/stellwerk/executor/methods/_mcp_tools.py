"""The built-in ``mcp/tool.*`` methods, with Gleitzeit's output shapes.

Gleitzeit 0.0.4 called these "MCP tools" although they are plain in-process functions; the names
and output keys are kept so that Gleitzeit workflows (and their ``${task.key}`` references) run
unchanged. Unlike Gleitzeit, arguments are checked: a wrong or missing argument fails the task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from stellwerk.core.errors import TaskError

__all__ = ["BUILTIN_TOOLS"]

_MISSING = object()


def _arguments(params: Mapping[str, Any]) -> Mapping[str, Any]:
    # Gleitzeit accepted both ``{"arguments": {...}}`` (MCP's call shape) and bare params.
    arguments = params.get("arguments")
    return arguments if isinstance(arguments, dict) else params


def _get(method: str, args: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    value = args.get(name, default)
    if value is _MISSING:
        raise TaskError(f"{method}: missing required argument {name!r}")
    return value


def _short(value: Any) -> str:
    # Error messages land in KV and on screens; a multi-megabyte repr helps nobody.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but True + 1 == 2 would be a surprise in a workflow.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(method: str, args: Mapping[str, Any], name: str) -> int | float:
    value = _get(method, args, name)
    if not _is_number(value):
        raise TaskError(
            f"{method}: argument {name!r} must be a number, "
            f"got {type(value).__name__} {_short(value)}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise TaskError(f"{method}: argument {name!r} must be a finite number, got {value!r}")
    return value  # type: ignore[no-any-return]


def _arithmetic(
    method: str, symbol: str, op: Callable[[Any, Any], Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    args = _arguments(params)
    a = _number(method, args, "a")
    b = _number(method, args, "b")
    result = op(a, b)
    if isinstance(result, float) and not math.isfinite(result):
        raise TaskError(f"{method}: {a} {symbol} {b} is not a finite number")
    try:
        text = str(result)
    except ValueError as exc:  # an int beyond sys.get_int_max_str_digits()
        raise TaskError(f"{method}: the result of {symbol} has too many digits") from exc
    return {"response": text, "result": result, "calculation": f"{a} {symbol} {b} = {text}"}


def echo(params: Mapping[str, Any]) -> dict[str, Any]:
    """``mcp/tool.echo {message}`` → ``{"response": message, "echoed": True, "length": n}``."""
    method = "mcp/tool.echo"
    message = _get(method, _arguments(params), "message")
    if not isinstance(message, str):
        raise TaskError(
            f"{method}: argument 'message' must be a string, got {type(message).__name__}"
        )
    return {"response": message, "echoed": True, "length": len(message)}


def add(params: Mapping[str, Any]) -> dict[str, Any]:
    """``mcp/tool.add {a, b}`` → ``{"response": "r", "result": r, "calculation": "a + b = r"}``."""
    return _arithmetic("mcp/tool.add", "+", lambda a, b: a + b, params)


def multiply(params: Mapping[str, Any]) -> dict[str, Any]:
    """``mcp/tool.multiply {a, b}`` → same shape as ``add``, with ``*``."""
    return _arithmetic("mcp/tool.multiply", "*", lambda a, b: a * b, params)


def concat(params: Mapping[str, Any]) -> dict[str, Any]:
    """``mcp/tool.concat {strings, separator=" "}`` → ``{"response", "joined": True, "count"}``."""
    method = "mcp/tool.concat"
    args = _arguments(params)
    strings = _get(method, args, "strings")
    if not isinstance(strings, list):
        raise TaskError(
            f"{method}: argument 'strings' must be a list, got {type(strings).__name__}"
        )
    separator = _get(method, args, "separator", " ")
    if not isinstance(separator, str):
        raise TaskError(
            f"{method}: argument 'separator' must be a string, got {type(separator).__name__}"
        )
    parts: list[str] = []
    for index, item in enumerate(strings):
        if isinstance(item, str):
            parts.append(item)
        elif _is_number(item):
            parts.append(str(item))
        else:
            raise TaskError(
                f"{method}: strings[{index}] must be a string or a number, "
                f"got {type(item).__name__} {_short(item)}"
            )
    return {"response": separator.join(parts), "joined": True, "count": len(strings)}


BUILTIN_TOOLS: Mapping[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], str]] = {
    "mcp/tool.echo": (echo, "Echo a message: {message} -> {response, echoed, length}"),
    "mcp/tool.add": (add, "Add two numbers: {a, b} -> {response, result, calculation}"),
    "mcp/tool.multiply": (
        multiply,
        "Multiply two numbers: {a, b} -> {response, result, calculation}",
    ),
    "mcp/tool.concat": (
        concat,
        "Join strings: {strings, separator=' '} -> {response, joined, count}",
    ),
}
"""Built-in tool name → (implementation, one-line description)."""
