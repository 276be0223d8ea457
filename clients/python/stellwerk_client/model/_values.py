"""JSON value checks shared by the loader and the model's own validators.

Parameters, results and metadata travel as JSON text end to end, so the model accepts exactly
what a JSON parser produces: ``str``, ``int`` (exact, any size Python can print), finite
``float``, ``bool``, ``None``, ``list`` and ``dict`` with ``str`` keys. Tuples, dates, bytes and
sets are refused rather than silently converted, so what a client sends is what a handler gets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_PARAMS_BYTES",
    "JsonCheck",
    "check_json_value",
    "describe",
    "format_path",
]

MAX_PARAMS_BYTES = 1024 * 1024
"""Largest JSON encoding of one task's ``params`` (compact, UTF-8), in bytes."""

MAX_DEPTH = 100
"""Deepest nesting of lists and mappings inside one value; it also stops cyclic Python objects."""

_MAX_ERRORS = 20
# Past this size the exact figure no longer helps anyone, and stopping early bounds the work on
# hostile in-memory objects (a list holding itself many times over, "billion laughs" style).
_ABORT_FACTOR = 4


@dataclass(frozen=True, slots=True)
class JsonCheck:
    """The outcome of :func:`check_json_value`.

    ``size`` is the length of the compact UTF-8 JSON encoding (a lower bound when the walk
    stopped early); ``complete`` is false when the walk did not see every value (too deep or
    too large), in which case the value must not be walked again by code without limits.
    """

    errors: tuple[str, ...]
    size: int
    complete: bool


def describe(value: object) -> str:
    """A short, human name for the JSON kind of ``value`` (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"


def format_path(root: str, path: tuple[str | int, ...]) -> str:
    """``params`` + ``("a", 0, "b")`` → ``params.a[0].b``; a deep path keeps its first and last
    segments and long keys are cut, so that a message naming it stays short."""

    def shown(segment: str | int) -> str:
        if isinstance(segment, int):
            return f"[{segment}]"
        return f".{segment}" if len(segment) <= 40 else f".{segment[:37]}..."

    if len(path) > 12:
        return "".join([root, *map(shown, path[:5]), "...", *map(shown, path[-5:])])
    return "".join([root, *map(shown, path)])


def _text_size(text: str) -> int | None:
    """Bytes of ``text`` as a JSON string literal, or ``None`` if it is not valid Unicode."""
    try:
        return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _not_json(value: object) -> str:
    hint = ""
    name = type(value).__name__
    if name in {"date", "datetime", "time"}:
        hint = " (quote it to keep it as text)"
    elif isinstance(value, tuple):
        hint = " (use a list)"
    return f"{describe(value)} is not a JSON value{hint}"


def check_json_value(
    value: Any,
    *,
    root: str,
    limit: int = MAX_PARAMS_BYTES,
    subject: str = "params are",
    scope: str = "per task",
) -> JsonCheck:
    """Check that ``value`` is a JSON value and measure its encoding.

    Walks iteratively (no recursion limit to hit), refuses nesting deeper than
    :data:`MAX_DEPTH` and stops early once the size is far beyond ``limit``. Messages name the
    place as ``root.key[0]``; an oversized value is reported as
    ``"<subject> N bytes as JSON; the limit is 1 MiB <scope>"``.
    """
    errors: list[str] = []
    extra_errors = 0
    size = 0
    complete = True
    aborted = False
    abort_at = limit * _ABORT_FACTOR

    def report(message: str) -> None:
        nonlocal extra_errors
        if len(errors) < _MAX_ERRORS:
            errors.append(message)
        else:
            extra_errors += 1

    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        if size > abort_at:
            complete = False
            aborted = True
            break
        item, path = stack.pop()
        if item is None or isinstance(item, bool):
            size += 4 if item in (None, True) else 5
        elif isinstance(item, int):
            try:
                size += len(str(item))
            except ValueError:  # more digits than Python will print (sys.int_info)
                report(f"{format_path(root, path)}: the integer has too many digits")
        elif isinstance(item, float):
            if math.isfinite(item):
                size += len(repr(item))
            else:
                report(f"{format_path(root, path)}: {item!r} is not a JSON number")
        elif isinstance(item, str):
            text_size = _text_size(item)
            if text_size is None:
                report(f"{format_path(root, path)}: the string is not valid Unicode")
            else:
                size += text_size
        elif isinstance(item, list | dict):
            if len(path) >= MAX_DEPTH:
                report(f"{format_path(root, path)}: nested more than {MAX_DEPTH} levels deep")
                complete = False
                continue
            size += 2 + max(len(item) - 1, 0)
            if isinstance(item, list):
                for index in range(len(item) - 1, -1, -1):
                    stack.append((item[index], (*path, index)))
            else:
                children: list[tuple[Any, tuple[str | int, ...]]] = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        report(
                            f"{format_path(root, path)}: key {repr(key)[:40]} is {describe(key)}; "
                            "JSON object keys are strings"
                        )
                        continue
                    key_size = _text_size(key)
                    if key_size is None:
                        report(f"{format_path(root, path)}: a key is not valid Unicode")
                        continue
                    size += key_size + 1
                    children.append((child, (*path, key)))
                stack.extend(reversed(children))
        else:
            report(f"{format_path(root, path)}: {_not_json(item)}")
    if extra_errors:
        errors.append(f"{root}: {extra_errors} more values are not JSON values")
    if aborted:
        errors.append(
            f"{subject} more than {abort_at:,} bytes as JSON; the limit is {_mib(limit)} {scope}"
        )
    elif size > limit:
        errors.append(f"{subject} {size:,} bytes as JSON; the limit is {_mib(limit)} {scope}")
    return JsonCheck(errors=tuple(errors), size=size, complete=complete)


def _mib(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{limit:,} bytes"
