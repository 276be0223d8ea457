"""Loading Gleitzeit-style workflow documents into a :class:`WorkflowSpec`.

Every problem is collected, not just the first: field problems of every task, then the
structural ones of :func:`validate_workflow` (run on a best-effort spec in which broken fields
are replaced by harmless placeholders, so one typo does not hide a cycle elsewhere).

Decisions beyond Gleitzeit: a task without ``id`` takes its ``name`` as id (Gleitzeit made up
``task-<8 hex>``, which no reference can name); a key whose value is ``null`` counts as absent;
priorities other than the four names and 1/2/3 are errors, not "normal"; unknown keys are
errors; tasks in problem reports are named by id, or without a usable id by ``#n``, their
0-based position (``#3`` is ``tasks[3]``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stellwerk_client.errors import NotFoundError, Problem, WorkflowInvalidError

from ._parse import FAILED, MAX_DOCUMENT_BYTES, Format, parse_document
from ._spec import (
    MAX_ID_LENGTH,
    FailureStrategy,
    Priority,
    RetryPolicy,
    TaskSpec,
    WorkflowSpec,
    default_protocol,
    failure_strategy_problem,
    identifier_problem,
    method_problem,
    protocol_problem,
    timeout_problem,
)
from ._validate import validate_workflow
from ._values import check_json_value, describe

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
TASK_KEYS = (
    "id",
    "name",
    "method",
    "protocol",
    "params",
    "parameters",
    "dependencies",
    "priority",
    "timeout",
    "heartbeat_timeout",
    "retry",
    "retry_config",
    "metadata",
    "on_failure",
    "alternative_task",
    "compensation_task",
)
IGNORED_TASK_KEYS = ("description", "tags")
_RETRY_KEYS = tuple(RetryPolicy.model_fields)
_SUFFIXES: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_PRIORITY_NUMBERS = {1: Priority.HIGH, 2: Priority.NORMAL, 3: Priority.LOW}
_BATCH = "batch workflows (type: batch) are not supported yet"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(key: object, allowed: tuple[str, ...]) -> str:
    close: list[str] = []
    if isinstance(key, str):
        # Prefixes catch Gleitzeit's later spellings (retry_config, backoff_strategy).
        close = [a for a in allowed if key.startswith(a)] or difflib.get_close_matches(
            key, allowed, n=1
        )
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {_show(key)}{hint}; allowed keys: {', '.join(sorted(allowed))}"


def _priority(value: object) -> Priority | None:
    """The priority ``value`` names, or ``None`` if it names none."""
    if isinstance(value, str) and value.lower() in Priority._value2member_map_:
        return Priority(value.lower())
    if isinstance(value, int) and not isinstance(value, bool):
        return _PRIORITY_NUMBERS.get(value)
    return None


@dataclass
class _Draft:
    """One task on its way to a :class:`TaskSpec`: checked values plus the raw dependencies."""

    values: dict[str, Any]
    dependencies: list[str]


@dataclass
class _Builder:
    problems: list[Problem] = field(default_factory=list)

    def report(self, task: str | None, field_name: str, message: str) -> None:
        self.problems.append(Problem(task, field_name, message))

    def keys(self, raw: Mapping[Any, Any], task: str | None, allowed: tuple[str, ...]) -> bool:
        unknown = [key for key in raw if key not in allowed]
        for key in unknown:
            self.report(task, str(key)[:MAX_ID_LENGTH], _unknown_key(key, allowed))
        return not unknown

    def json_field(self, label: str | None, raw: object, root: str, scope: str) -> dict[str, Any]:
        """A checked JSON mapping; ``{}`` stands in when it is unusable or not checked through."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.report(label, root, f"{root} must be a mapping, got {describe(raw)}")
            return {}
        check = check_json_value(raw, root=root, subject=f"{root} are", scope=scope)
        for error in check.errors:
            self.report(label, root, error)
        return raw if check.complete else {}

    def retry(self, label: str, raw: object) -> RetryPolicy | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.report(label, "retry", f"retry must be a mapping, got {describe(raw)}")
            return None
        values = dict(raw)
        if "backoff_strategy" in values:  # Gleitzeit's later spelling
            if "backoff" in values:
                self.report(label, "retry.backoff", "give backoff or backoff_strategy, not both")
                return None
            values["backoff"] = values.pop("backoff_strategy")
        try:
            return RetryPolicy.model_validate(values)
        except ValidationError as error:
            for detail in error.errors(include_url=False, include_input=False):
                loc = ".".join(str(part) for part in detail["loc"])
                if detail["type"] == "extra_forbidden":
                    message = _unknown_key(detail["loc"][-1], _RETRY_KEYS)
                elif detail["type"] == "value_error":
                    message = str(detail.get("ctx", {}).get("error", detail["msg"]))
                else:
                    message = detail["msg"]
                self.report(label, f"retry.{loc}" if loc else "retry", message)
            return None

    def identity(self, number: int, raw: Mapping[Any, Any]) -> tuple[str, str]:
        """The task's id (or ``#number`` when it has no usable one) and its name."""
        raw_id, raw_name = raw.get("id"), raw.get("name")
        id_problem = None if raw_id is None else identifier_problem(raw_id, "id")
        name_problem = None if raw_name is None else identifier_problem(raw_name, "name")
        label = f"#{number}"
        if raw_id is not None and id_problem is None:
            label = raw_id
        elif raw_id is None and raw_name is not None and name_problem is None:
            label = raw_name  # no id: the name is the id
        if id_problem is not None:
            self.report(label, "id", id_problem)
        if name_problem is not None:
            self.report(label, "name", name_problem)
        if raw_id is None and raw_name is None:
            self.report(label, "id", "a task needs an id or a name")
        return label, raw_name if raw_name is not None and name_problem is None else label

    def method(self, label: str, raw: Mapping[Any, Any]) -> tuple[str, str]:
        """The method and protocol (placeholders when they are unusable)."""
        method = raw.get("method")
        method_error = "the method is missing" if method is None else method_problem(method)
        if method_error is not None:
            self.report(label, "method", method_error)
            method = "invalid"
        protocol = raw.get("protocol")
        if protocol is None:
            protocol = default_protocol(str(method))
        elif (protocol_error := protocol_problem(protocol)) is not None:
            self.report(label, "protocol", protocol_error)
            protocol = "invalid/v1"
        return str(method), str(protocol)

    def dependencies(self, label: str, raw: object) -> list[str]:
        """The dependency tokens as written (ids or names), strings only."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            hint = f" (write [{_show(raw)}])" if isinstance(raw, str) else ""
            message = f"dependencies must be a list of task ids or names, got {describe(raw)}"
            self.report(label, "dependencies", message + hint)
            return []
        for position, dep in enumerate(raw):
            if not isinstance(dep, str):
                message = f"dependencies[{position}] must be a task id or name, got {describe(dep)}"
                self.report(label, "dependencies", message)
        return [dep for dep in raw if isinstance(dep, str)]

    def priority(self, label: str, raw: object) -> Priority:
        named = Priority.NORMAL if raw is None else _priority(raw)
        if named is None:
            self.report(
                label,
                "priority",
                "the priority must be urgent, high, normal or low (or 1, 2, 3 for high, "
                f"normal, low), got {_show(raw)}",
            )
        return named or Priority.NORMAL

    def timeout(self, label: str, raw: object, *, field: str = "timeout") -> float | None:
        if raw is None:
            return None
        if (problem := timeout_problem(raw)) is not None or not isinstance(raw, int | float):
            self.report(label, field, problem or f"the {field} must be a number")
            return None
        return float(raw)

    def on_failure(self, label: str, raw: Mapping[Any, Any]) -> FailureStrategy:
        """The task's failure strategy: ``on_failure``, or the design analysis's
        ``metadata.failure_strategy`` (both given, they must agree)."""
        metadata = raw.get("metadata")
        spelled = [
            (f, v)
            for f, v in (
                ("on_failure", raw.get("on_failure")),
                (
                    "metadata.failure_strategy",
                    metadata.get("failure_strategy") if isinstance(metadata, Mapping) else None,
                ),
            )
            if v is not None
        ]
        for where, value in spelled:
            if (problem := failure_strategy_problem(value)) is not None:
                self.report(label, where, problem)
                return FailureStrategy.BLOCK
        named = {FailureStrategy(str(v).lower()) for _, v in spelled}
        if len(named) > 1:
            self.report(label, "on_failure", "on_failure and metadata.failure_strategy disagree")
        return named.pop() if len(named) == 1 else FailureStrategy.BLOCK

    def named_task(self, label: str, raw: Mapping[Any, Any], key: str) -> str | None:
        """The task named by ``key`` (``alternative_task``, ``compensation_task``), or by
        ``metadata.<key>`` (both given, they must agree)."""
        metadata = raw.get("metadata")
        given = raw.get(key)
        if isinstance(metadata, Mapping) and metadata.get(key) is not None:
            if given is not None and given != metadata[key]:
                self.report(label, key, f"{key} and metadata.{key} disagree")
            given = metadata[key] if given is None else given
        if given is None:
            return None
        if (problem := identifier_problem(given, "task id")) is not None:
            self.report(label, key, problem)
            return None
        return str(given)

    def retry_block(self, label: str, raw: Mapping[Any, Any]) -> object:
        """The task's retry block: ``retry``, or Gleitzeit's later spelling ``retry_config``."""
        if "retry" in raw and "retry_config" in raw:
            self.report(label, "retry", "give retry or retry_config, not both")
            return None
        return raw.get("retry", raw.get("retry_config"))

    def task(self, number: int, raw: object) -> _Draft | None:
        """Check one task; ``number`` is its 0-based position in ``tasks``."""
        if not isinstance(raw, Mapping):
            self.report(f"#{number}", "tasks", f"a task must be a mapping, got {describe(raw)}")
            return None
        label, name = self.identity(number, raw)
        self.keys(raw, label, TASK_KEYS + IGNORED_TASK_KEYS)
        method, protocol = self.method(label, raw)
        if "params" in raw and "parameters" in raw:
            self.report(label, "params", "give params or parameters, not both")
        params = raw["params"] if "params" in raw else raw.get("parameters")
        values: dict[str, Any] = {
            "id": label,
            "name": name,
            "method": method,
            "protocol": protocol,
            "params": self.json_field(label, params, "params", "per task"),
            "priority": self.priority(label, raw.get("priority")),
            "timeout": self.timeout(label, raw.get("timeout")),
            "heartbeat_timeout": self.timeout(
                label, raw.get("heartbeat_timeout"), field="heartbeat_timeout"
            ),
            "retry": self.retry(label, self.retry_block(label, raw)),
            "metadata": self.json_field(label, raw.get("metadata"), "metadata", "per task"),
            "on_failure": self.on_failure(label, raw),
            "alternative_task": self.named_task(label, raw, "alternative_task"),
            "compensation_task": self.named_task(label, raw, "compensation_task"),
        }
        return _Draft(values, self.dependencies(label, raw.get("dependencies")))

    @staticmethod
    def spec_task(draft: _Draft) -> TaskSpec:
        # The checks above are the model's own check functions, so validating again would only
        # double the cost (tests hold loader and model in agreement). Broken drafts become
        # placeholders that only serve the structural checks and are never returned.
        return TaskSpec.model_construct(**draft.values)

    def workflow(self, raw: object) -> WorkflowSpec | None:
        """The best-effort spec (``None`` if there is nothing to validate structurally)."""
        if not isinstance(raw, Mapping):
            self.report(None, "document", f"a workflow must be a mapping, got {describe(raw)}")
            return None
        kind = raw.get("type")
        if "batch" in raw or (isinstance(kind, str) and kind.lower() == "batch"):
            self.report(None, "type", _BATCH)
            return None
        self.keys(raw, None, WORKFLOW_KEYS + IGNORED_WORKFLOW_KEYS)
        workflow_id = raw.get("id")
        if workflow_id is not None and (
            not isinstance(workflow_id, str)
            or not workflow_id.strip()
            or len(workflow_id) > MAX_ID_LENGTH
        ):
            message = f"the id must be a non-empty string of at most {MAX_ID_LENGTH} characters"
            self.report(None, "id", f"{message}, got {_show(workflow_id)}")
            workflow_id = None
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            self.report(None, "name", f"the name must be a non-empty string, got {_show(name)}")
            name = None
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            message = f"the description must be a string, got {describe(description)}"
            self.report(None, "description", message)
            description = None
        metadata = self.json_field(None, raw.get("metadata"), "metadata", "per workflow")
        raw_tasks = raw.get("tasks")
        if raw_tasks is not None and not isinstance(raw_tasks, list):
            self.report(None, "tasks", f"tasks must be a list of tasks, got {describe(raw_tasks)}")
            return None
        drafts = [d for n, t in enumerate(raw_tasks or ()) if (d := self.task(n, t))]
        if raw_tasks and not drafts:
            return None  # nothing to check structurally; "no tasks" would only repeat problems
        tasks = tuple(self.spec_task(d) for d in _normalise_dependencies(drafts))
        values: dict[str, Any] = {
            "id": workflow_id,
            "name": name or workflow_id or "Unnamed Workflow",
            "description": description or "",
            "tasks": tasks,
            "metadata": metadata,
        }
        return WorkflowSpec.model_construct(**values)


def _normalise_dependencies(drafts: list[_Draft]) -> list[_Draft]:
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
    builder = _Builder(problems)
    spec = builder.workflow(data)
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
