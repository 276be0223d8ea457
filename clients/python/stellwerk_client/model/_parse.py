"""Workflow text → plain Python data, defensively.

The parsers are third-party code fed with untrusted text, so every failure becomes a
:class:`Problem` instead of escaping. Defences: a 64 MiB size limit, strict UTF-8, libyaml's
nesting limit (1,000 levels) or JSON's recursion guard, no YAML aliases (a "billion laughs"
document is a few hundred bytes of aliases), and duplicate mapping keys reported instead of
silently keeping the last one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

import yaml

from stellwerk_client.errors import Problem, WorkflowInvalidError

from ._values import describe

__all__ = ["FAILED", "MAX_DOCUMENT_BYTES", "Format", "parse_document"]

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest workflow document accepted, in bytes of UTF-8 text."""

Format = Literal["yaml", "json"]

FAILED: Final = object()
"""Returned by :func:`parse_document` when the text could not be turned into data."""

_FIELD = "document"

# The C loader is ~20x faster than the pure Python one; both build the same node graph.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _problem(message: str) -> Problem:
    return Problem(None, _FIELD, message)


def _yaml_error(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f"{error.context}: " if error.context else ""
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {context}{error.problem} ({where})"
    return f"invalid YAML: {' '.join(str(error).split())}"


def _check_nodes(root: yaml.Node, problems: list[Problem]) -> bool:
    """Refuse aliases and report duplicate keys; ``False`` if the document must not be built.

    An alias makes the composer reuse a node object, so a node met twice is an alias. The walk
    stops there, which keeps it linear even on a billion-laughs document.
    """
    seen: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            problems.append(
                _problem(
                    "YAML anchors and aliases (&name, *name) are not supported; the node "
                    f"anchored at line {line} is used again — write the value out instead"
                )
            )
            return False
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    identity = (key.tag, key.value)
                    if identity in first_line:
                        problems.append(
                            _problem(
                                f"duplicate key {key.value[:60]!r} at line {line} "
                                f"(first at line {first_line[identity]})"
                            )
                        )
                    else:
                        first_line[identity] = line
                stack.append(key)
                stack.append(value)
    return True


def _load_yaml(text: str, problems: list[Problem]) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(_problem("the document is empty"))
            return FAILED
        if not _check_nodes(node, problems):
            return FAILED
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _load_json(text: str, problems: list[Problem]) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                problems.append(_problem(f"duplicate key {key[:60]!r} in a JSON object"))
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        problems.append(
            _problem(f"invalid JSON: {error.msg} (line {error.lineno}, column {error.colno})")
        )
    return FAILED


def _text(source: str | bytes, problems: list[Problem]) -> str | None:
    size = len(source)
    if size > MAX_DOCUMENT_BYTES or (
        isinstance(source, str)
        and not source.isascii()
        and len(source.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES
    ):
        problems.append(_problem(f"the document is larger than {MAX_DOCUMENT_BYTES:,} bytes"))
        return None
    if isinstance(source, str):
        return source.removeprefix("\ufeff")
    try:
        return source.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        problems.append(
            _problem(f"the document is not UTF-8 text (invalid byte at offset {error.start})")
        )
        return None


def parse_document(source: object, format: Format | None, problems: list[Problem]) -> Any:
    """The data in ``source`` (text, bytes or an already parsed mapping), or :data:`FAILED`.

    ``format=None`` reads text starting with ``{`` as JSON and anything else as YAML (YAML
    1.1 reads some JSON differently, e.g. ``1e3`` is a string to it).
    """
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytearray | memoryview):
        source = bytes(source)
    if not isinstance(source, str | bytes):
        problems.append(
            _problem(f"a workflow is YAML or JSON text or a mapping, not {describe(source)}")
        )
        return FAILED
    if format not in (None, "yaml", "json"):
        problems.append(_problem(f"unknown format {format!r}; use 'yaml' or 'json'"))
        return FAILED
    text = _text(source, problems)
    if text is None:
        return FAILED
    if format is None:
        format = "json" if text.lstrip().startswith("{") else "yaml"
    try:
        return _load_json(text, problems) if format == "json" else _load_yaml(text, problems)
    except yaml.YAMLError as error:
        problems.append(_problem(_yaml_error(error)))
    except RecursionError:
        problems.append(_problem("the document is nested too deeply"))
    except Exception as error:
        # Hostile text must never escape as a crash, e.g. ValueError for integers beyond
        # Python's 4,300-digit conversion limit.
        problems.append(_problem(f"cannot read the {format.upper()} document: {error}"))
    return FAILED


def read_document(source: object, format: Format | None = None) -> Any:
    """The raw data of a workflow document, defended like :func:`load_workflow` does (size,
    encoding, aliases, duplicate keys) but not yet checked as a workflow; raises
    ``WorkflowInvalidError`` when the text cannot even be read."""
    problems: list[Problem] = []
    data = parse_document(source, format, problems)
    if data is FAILED:
        raise WorkflowInvalidError(problems=problems)
    return data
