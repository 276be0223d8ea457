"""``${...}`` references in task parameters: parsing and substitution.

Grammar (decided in the brief, stricter than Gleitzeit where Gleitzeit was silent or wrong)::

    reference := "${" task ( "." segment ( "." segment | "[" digits "]" )* )? "}"
    task      := any text up to the first "." (task ids and names never hold "." "$" "{" "}")
    segment   := any text without "." "[" "]" "{" "}"  — a dict key, or a list index when digits

* ``${t}`` means ``${t.result}``. A leading ``result`` segment is a key when the output is a
  mapping with a ``result`` key, else it names the output itself: for ``{"result": 5}`` both
  give ``5``; for ``{"response": "hi"}`` both give the whole mapping and
  ``${t.result.response}`` equals ``${t.response}``.
* ``.0`` and ``[0]`` are interchangeable: on a mapping they look up the key ``"0"``, on a list
  they index it. Negative indexes are refused.
* ``$${`` is a literal ``${`` (scanned left to right, so ``$$${a}`` is ``$`` + literal ``${a}``).
* Only strings that are dict *values* or list items are scanned; dict keys are literal.
* A string that is exactly one reference becomes the referenced value with its type; inside a
  longer string, strings are inserted as they are and every other value as JSON
  (``100``, ``2.5``, ``true``, ``null``, ``{"k": 1}``). Substituted values are not scanned again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stellwerk_client.errors import Problem, ReferenceResolutionError, WorkflowInvalidError

from ._values import MAX_DEPTH, describe, format_path

__all__ = [
    "NULL_OUTPUT",
    "Reference",
    "find_references",
    "parse_template",
    "scan_references",
    "substitute",
]

_MAX_INDEX_DIGITS = 18
_MAX_KEYS_SHOWN = 30


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``${...}``: ``raw`` is the text inside the braces, ``task`` the token naming the
    task (an id or a unique name), ``path`` the keys (``str``) and ``[n]`` indexes (``int``)."""

    raw: str
    task: str
    path: tuple[str | int, ...]

    def __str__(self) -> str:
        return "${" + self.raw + "}"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed string: literal text and references in order, plus any syntax errors."""

    pieces: tuple[str | Reference, ...]
    errors: tuple[str, ...]


def _snippet(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_reference(raw: str) -> Reference | str:
    """``raw`` (the text between ``${`` and ``}``) as a reference, or why it is not one."""
    shown = "${" + _snippet(raw) + "}"
    if not raw:
        return "empty reference '${}'"
    if "{" in raw:
        return f"malformed reference {shown}: '{{' inside a reference (is a '}}' missing?)"
    task, dot, rest = raw.partition(".")
    if not task:
        return f"malformed reference {shown}: no task before the first '.'"
    path: list[str | int] = []
    pos = 0
    while dot:
        end = len(rest)
        for stop in (".", "["):
            found = rest.find(stop, pos)
            if found != -1:
                end = min(end, found)
        name = rest[pos:end]
        if not name:
            return f"malformed reference {shown}: empty path segment"
        if "]" in name:
            return f"malformed reference {shown}: ']' without '['"
        path.append(name)
        pos = end
        while pos < len(rest) and rest[pos] == "[":
            close = rest.find("]", pos)
            if close == -1:
                return f"malformed reference {shown}: '[' without ']'"
            inner = rest[pos + 1 : close]
            if inner.startswith("-") and inner[1:].isdigit():
                return f"malformed reference {shown}: negative list indexes are not allowed"
            if not (inner.isascii() and inner.isdigit()) or len(inner) > _MAX_INDEX_DIGITS:
                return f"malformed reference {shown}: [{inner}] is not a list index like [0]"
            path.append(int(inner))
            pos = close + 1
        if pos == len(rest):
            break
        if rest[pos] != ".":
            return f"malformed reference {shown}: expected '.' or '[' after ']'"
        pos += 1
    return Reference(raw=raw, task=task, path=tuple(path))


def parse_template(text: str) -> Template:
    """Split ``text`` into literal pieces and references (``$${`` → literal ``${``)."""
    if "${" not in text:
        return Template(pieces=(text,) if text else (), errors=())
    pieces: list[str | Reference] = []
    errors: list[str] = []
    literal: list[str] = []
    pos = 0
    while True:
        start = text.find("${", pos)
        if start == -1:
            literal.append(text[pos:])
            break
        if start > pos and text[start - 1] == "$":
            literal.append(text[pos : start - 1] + "${")
            pos = start + 2
            continue
        literal.append(text[pos:start])
        close = text.find("}", start + 2)
        if close == -1:
            errors.append(f"unclosed '${{' in {_snippet(text[start:])!r}")
            literal.append(text[start:])
            break
        parsed = _parse_reference(text[start + 2 : close])
        if isinstance(parsed, str):
            errors.append(parsed)
            literal.append(text[start : close + 1])
        else:
            if any(literal):
                pieces.append("".join(literal))
            literal.clear()
            pieces.append(parsed)
        pos = close + 1
    if any(literal):
        pieces.append("".join(literal))
    return Template(pieces=tuple(pieces), errors=tuple(errors))


def scan_references(
    value: Any, *, root: str = "params"
) -> tuple[list[tuple[str, Reference]], list[str]]:
    """Every reference in ``value`` with its location (``params.a[0]``), and every syntax error
    (location first). Walks dict values and list items iteratively, at most
    :data:`MAX_DEPTH` levels deep."""
    found: list[tuple[str, Reference]] = []
    errors: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "${" in item:
                template = parse_template(item)
                where = format_path(root, path)
                found.extend((where, p) for p in template.pieces if isinstance(p, Reference))
                errors.extend(f"{where}: {e}" for e in template.errors)
        elif isinstance(item, dict | list):
            if len(path) >= MAX_DEPTH:
                errors.append(f"{format_path(root, path)}: nested more than {MAX_DEPTH} levels")
                continue
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend(reversed([(child, (*path, key)) for key, child in children]))
    return found, errors


def find_references(value: Any) -> list[Reference]:
    """Every ``${...}`` reference in ``value`` (dict values, list items, strings), in order.

    Raises :class:`WorkflowInvalidError` listing every malformed reference.
    """
    found, errors = scan_references(value)
    if errors:
        raise WorkflowInvalidError(problems=[Problem(None, "params", e) for e in errors])
    return [reference for _, reference in found]


def _index(segment: str | int) -> int | str:
    """A list index from a path segment, or why the segment is not one."""
    if isinstance(segment, int):
        return segment
    if segment.startswith("-") and segment[1:].isdigit():
        return "negative list indexes are not allowed"
    if segment.isascii() and segment.isdigit() and len(segment) <= _MAX_INDEX_DIGITS:
        return int(segment)
    return f"{segment!r} is not a list index"


class _NullOutput:
    """The type of :data:`NULL_OUTPUT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL_OUTPUT"


NULL_OUTPUT = _NullOutput()
"""The output of a task whose result is gone (a task skipped by ``on_failure: skip``): every
reference into it, whatever its path, resolves to ``None`` (JSON ``null``)."""


def resolve(reference: Reference, output: Any) -> Any:
    """The value ``reference`` points at inside a task's ``output``.

    Raises :class:`ReferenceResolutionError` naming the reference and what exists where the
    walk stopped (the keys of a mapping, the length of a list).
    """
    if output is NULL_OUTPUT:
        return None
    text = str(reference)
    path = reference.path or ("result",)
    if path[0] == "result" and not (isinstance(output, dict) and "result" in output):
        path = path[1:]
    current = output
    walked: list[str | int] = []
    for segment in path:
        where = (
            f"the output of task {reference.task!r}"
            if not walked
            else repr(format_path(reference.task, tuple(walked)))
        )
        if isinstance(current, dict):
            key = segment if isinstance(segment, str) else str(segment)
            if key not in current:
                keys = [str(k) for k in current]
                shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
                if len(keys) > _MAX_KEYS_SHOWN:
                    shown += f", ... ({len(keys)} keys)"
                raise ReferenceResolutionError(
                    text,
                    f"{text}: {where} has no key {key!r}; "
                    + (f"its keys are: {shown}" if keys else "it is an empty mapping"),
                    available=keys,
                )
            current = current[key]
        elif isinstance(current, list):
            index = _index(segment)
            if isinstance(index, str):
                raise ReferenceResolutionError(
                    text, f"{text}: {where} is a list of {len(current)} items and {index}"
                )
            if index >= len(current):
                raise ReferenceResolutionError(
                    text,
                    f"{text}: index {index} is out of range; {where} is a list of "
                    f"{len(current)} items",
                )
            current = current[index]
        else:
            raise ReferenceResolutionError(
                text, f"{text}: {where} is {describe(current)}, so it has no {segment!r}"
            )
        walked.append(segment)
    return current


def _as_text(value: Any, reference: Reference) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ReferenceResolutionError(
            str(reference), f"{reference}: the value is not JSON ({error})"
        ) from None


def _substitute_text(text: str, lookup: Callable[[str], Any]) -> Any:
    if "${" not in text:
        return text
    template = parse_template(text)
    if template.errors:
        raise ReferenceResolutionError(text, "; ".join(template.errors))
    pieces = template.pieces
    if len(pieces) == 1 and isinstance(pieces[0], Reference):
        return resolve(pieces[0], lookup(pieces[0].task))
    return "".join(
        p if isinstance(p, str) else _as_text(resolve(p, lookup(p.task)), p) for p in pieces
    )


def substitute(value: Any, lookup: Callable[[str], Any]) -> Any:
    """``value`` with every ``${...}`` replaced; ``value`` itself is left untouched.

    ``lookup(task_token)`` returns the output (the handler's return value) of the task that
    the token names, or raises. Raises :class:`ReferenceResolutionError` when a path does not
    resolve, so no literal ``${...}`` ever survives. Recurses once per nesting level, which
    validated parameters bound to :data:`MAX_DEPTH`.
    """
    if isinstance(value, str):
        return _substitute_text(value, lookup)
    if isinstance(value, dict):
        return {key: substitute(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, lookup) for item in value]
    return value
