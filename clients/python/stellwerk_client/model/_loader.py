"""Loading Gleitzeit-style workflow documents into a :class:`WorkflowSpec`.

Every problem is collected, not just the first: field problems of every task, then the
structural ones of :func:`validate_workflow` (run on a best-effort spec in which broken fields
are replaced by harmless placeholders, so one typo does not hide a cycle elsewhere).

This module reads the document as a whole: its top-level keys, the tasks list, dependencies
named by name, and the entry points for text and files. What one task's fields may be, and
the decisions beyond Gleitzeit taken there, are in ``_checks.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stellwerk_client.errors import NotFoundError, Problem, WorkflowInvalidError

from ._checks import IGNORED_TASK_KEYS, TASK_KEYS, Checks, Draft, show
from ._parse import FAILED, MAX_DOCUMENT_BYTES, Format, parse_document
from ._spec import MAX_ID_LENGTH, WorkflowSpec
from ._validate import validate_workflow
from ._values import describe

__all__ = [
    "IGNORED_TASK_KEYS",
    "IGNORED_WORKFLOW_KEYS",
    "TASK_KEYS",
    "WORKFLOW_KEYS",
    "load_workflow",
    "load_workflow_file",
]

WORKFLOW_KEYS = ("id", "name", "description", "tasks", "metadata")
IGNORED_WORKFLOW_KEYS = ("providers", "version", "timeout", "wait_for_completion")
_SUFFIXES: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_BATCH = "batch workflows (type: batch) are not supported yet"


def _workflow(checks: Checks, raw: object) -> WorkflowSpec | None:
    """The best-effort spec (``None`` if there is nothing to validate structurally)."""
    if not isinstance(raw, Mapping):
        checks.report(None, "document", f"a workflow must be a mapping, got {describe(raw)}")
        return None
    kind = raw.get("type")
    if "batch" in raw or (isinstance(kind, str) and kind.lower() == "batch"):
        checks.report(None, "type", _BATCH)
        return None
    checks.keys(raw, None, WORKFLOW_KEYS + IGNORED_WORKFLOW_KEYS)
    workflow_id = raw.get("id")
    if workflow_id is not None and (
        not isinstance(workflow_id, str)
        or not workflow_id.strip()
        or len(workflow_id) > MAX_ID_LENGTH
    ):
        message = f"the id must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        checks.report(None, "id", f"{message}, got {show(workflow_id)}")
        workflow_id = None
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        checks.report(None, "name", f"the name must be a non-empty string, got {show(name)}")
        name = None
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        message = f"the description must be a string, got {describe(description)}"
        checks.report(None, "description", message)
        description = None
    metadata = checks.json_field(None, raw.get("metadata"), "metadata", "per workflow")
    raw_tasks = raw.get("tasks")
    if raw_tasks is not None and not isinstance(raw_tasks, list):
        checks.report(None, "tasks", f"tasks must be a list of tasks, got {describe(raw_tasks)}")
        return None
    drafts = [d for n, t in enumerate(raw_tasks or ()) if (d := checks.task(n, t))]
    if raw_tasks and not drafts:
        return None  # nothing to check structurally; "no tasks" would only repeat problems
    tasks = tuple(checks.spec_task(d) for d in _normalise_dependencies(drafts))
    values: dict[str, Any] = {
        "id": workflow_id,
        "name": name or workflow_id or "Unnamed Workflow",
        "description": description or "",
        "tasks": tasks,
        "metadata": metadata,
    }
    return WorkflowSpec.model_construct(**values)


def _normalise_dependencies(drafts: list[Draft]) -> list[Draft]:
    """Map dependency names to ids (an id wins over a name) and drop repeats, in place."""
    ids = {d.values["id"] for d in drafts}
    named: dict[str, list[str]] = {}
    for draft in drafts:
        named.setdefault(draft.values["name"], []).append(draft.values["id"])
    for draft in drafts:
        resolved = []
        for token in draft.dependencies:
            owners = named.get(token, ())
            # Unknown and ambiguous tokens stay as written for validate_workflow to report.
            resolved.append(token if token in ids or len(owners) != 1 else owners[0])
        draft.values["dependencies"] = tuple(dict.fromkeys(resolved))
    return drafts


def load_workflow(
    source: str | bytes | Mapping[str, Any], *, format: Format | None = None
) -> WorkflowSpec:
    """Parse, check and return a workflow from YAML or JSON text (or parsed data).

    Raises :class:`WorkflowInvalidError` listing every problem found, and nothing else, on
    any input. ``format=None`` reads text starting with ``{`` as JSON, other text as YAML.
    Methods are not checked against a registry here; see :func:`validate_workflow`.
    """
    problems: list[Problem] = []
    data = parse_document(source, format, problems)
    if data is FAILED:
        raise WorkflowInvalidError(problems=problems)
    spec = _workflow(Checks(problems), data)
    if spec is not None:
        problems.extend(validate_workflow(spec))
    if problems or spec is None:
        raise WorkflowInvalidError(problems=problems)
    return spec


def load_workflow_file(path: str | os.PathLike[str]) -> WorkflowSpec:
    """Load a ``.yaml``, ``.yml`` or ``.json`` workflow file (as :func:`load_workflow`).

    Raises :class:`NotFoundError` if the file does not exist and
    :class:`WorkflowInvalidError` for any other suffix, an unreadable file or invalid content.
    """
    file = Path(path)
    format = _SUFFIXES.get(file.suffix.lower())
    if format is None:
        allowed = ", ".join(_SUFFIXES)
        message = f"{file.name!r} is not a workflow file; use one of {allowed}"
        raise WorkflowInvalidError(problems=[Problem(None, "path", message)])
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise NotFoundError(f"no such workflow file: {file}") from None
    except OSError as error:
        message = f"cannot read {file}: {error.strerror or error}"
        raise WorkflowInvalidError(problems=[Problem(None, "path", message)]) from None
    return load_workflow(data, format=format)
