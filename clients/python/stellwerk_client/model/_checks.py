"""Checking a workflow document's fields, task by task: every problem reported, none hidden.

The loader (``_loader.py``) reads the document as a whole (its top-level keys, the tasks list,
dependencies by name) and hands each task here; this module holds what one task's fields may
be. It is apart from the loader because the field rules are most of the loading code and
change on their own (a new task key touches only this file and ``_spec.py``).

Decisions beyond Gleitzeit: a task without ``id`` takes its ``name`` as id (Gleitzeit made up
``task-<8 hex>``, which no reference can name); a key whose value is ``null`` counts as absent;
priorities other than the four names and 1/2/3 are errors, not "normal"; unknown keys are
errors; tasks in problem reports are named by id, or without a usable id by ``#n``, their
0-based position (``#3`` is ``tasks[3]``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stellwerk_client.errors import Problem

from ._spec import (
    MAX_ID_LENGTH,
    FailureStrategy,
    Priority,
    RetryPolicy,
    TaskSpec,
    default_protocol,
    failure_strategy_problem,
    identifier_problem,
    method_problem,
    protocol_problem,
    timeout_problem,
)
from ._values import check_json_value, describe

__all__ = ["IGNORED_TASK_KEYS", "TASK_KEYS", "Checks", "Draft", "show"]

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
_PRIORITY_NUMBERS = {1: Priority.HIGH, 2: Priority.NORMAL, 3: Priority.LOW}


def show(value: object) -> str:
    """``value`` as a problem message quotes it: its repr, cut to 60 characters."""
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
    return f"unknown key {show(key)}{hint}; allowed keys: {', '.join(sorted(allowed))}"


def _priority(value: object) -> Priority | None:
    """The priority ``value`` names, or ``None`` if it names none."""
    if isinstance(value, str) and value.lower() in Priority._value2member_map_:
        return Priority(value.lower())
    if isinstance(value, int) and not isinstance(value, bool):
        return _PRIORITY_NUMBERS.get(value)
    return None


@dataclass
class Draft:
    """One task on its way to a :class:`TaskSpec`: checked values plus the raw dependencies."""

    values: dict[str, Any]
    dependencies: list[str]


@dataclass
class Checks:
    """Collects every problem of one document; each check returns a usable value or a
    placeholder, so one bad field does not hide the problems of the others."""

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
            hint = f" (write [{show(raw)}])" if isinstance(raw, str) else ""
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
                f"normal, low), got {show(raw)}",
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

    def task(self, number: int, raw: object) -> Draft | None:
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
        return Draft(values, self.dependencies(label, raw.get("dependencies")))

    @staticmethod
    def spec_task(draft: Draft) -> TaskSpec:
        # The checks above are the model's own check functions, so validating again would only
        # double the cost (tests hold loader and model in agreement). Broken drafts become
        # placeholders that only serve the structural checks and are never returned.
        return TaskSpec.model_construct(**draft.values)
