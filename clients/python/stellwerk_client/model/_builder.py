"""Workflows built in code: :class:`WorkflowBuilder` writes the same document a YAML file holds
and loads it with :func:`load_workflow`, so a built workflow passes exactly the validation a
file does (every problem at once, as ``WorkflowInvalidError``).

::

    flow = WorkflowBuilder("numbers")
    add = flow.task("add", "mcp/tool.add", {"a": 40, "b": 2})
    double = flow.task("double", "mcp/tool.multiply", {"a": add.result, "b": 2})
    spec = flow.build()   # "double" depends on "add": its params refer to it

A :class:`Ref` in the params (``add.result``, ``add["items"][0]``, also inside an f-string)
becomes ``${...}`` text, and every task the params refer to that was added before becomes a
dependency, so references and dependencies cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._loader import load_workflow
from ._references import scan_references
from ._spec import WorkflowSpec

__all__ = ["Ref", "TaskHandle", "WorkflowBuilder"]


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to (part of) a task's output: ``${task}``, ``${task.key.0}``.

    Index it to go deeper (``ref["key"][0]``); put it into params whole, or into a string with
    ``str(ref)`` / an f-string (then it is substituted as text).
    """

    task_id: str
    path: tuple[str | int, ...] = ()

    def __getitem__(self, key: str | int) -> Ref:
        return Ref(self.task_id, (*self.path, key))

    def __str__(self) -> str:
        return "${" + ".".join([self.task_id, *(str(p) for p in self.path)]) + "}"


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """A task added to a :class:`WorkflowBuilder`; pass it to ``after=`` or take :attr:`result`."""

    id: str

    @property
    def result(self) -> Ref:
        """The task's whole output (``${id}``, the same as ``${id.result}``)."""
        return Ref(self.id)

    def __getitem__(self, key: str | int) -> Ref:
        return Ref(self.id, (key,))

    def __str__(self) -> str:
        return str(self.result)


def _render(value: Any, found: list[str]) -> Any:
    """``value`` with every :class:`Ref` turned into its ``${...}`` text; their tasks noted."""
    if isinstance(value, Ref | TaskHandle):
        ref = value if isinstance(value, Ref) else value.result
        found.append(ref.task_id)
        return str(ref)
    if isinstance(value, Mapping):
        return {key: _render(item, found) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, found) for item in value]
    return value


class WorkflowBuilder:
    """Collects a workflow's tasks; :meth:`build` returns the validated :class:`WorkflowSpec`.

    Args:
        name: the workflow's name (shown with its runs).
        id: the workflow's id (``workflow_id`` of its runs), optional.
        description: free text.
        metadata: JSON values kept with the workflow.
    """

    def __init__(
        self,
        name: str = "",
        *,
        id: str | None = None,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._document: dict[str, Any] = {}
        if name:
            self._document["name"] = name
        if id is not None:
            self._document["id"] = id
        if description:
            self._document["description"] = description
        if metadata:
            self._document["metadata"] = dict(metadata)
        self._tasks: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def task(
        self,
        id: str,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        after: Iterable[TaskHandle | str] = (),
        name: str | None = None,
        priority: str | int | None = None,
        timeout: float | None = None,
        retry: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        alternative_task: TaskHandle | str | None = None,
        compensation_task: TaskHandle | str | None = None,
    ) -> TaskHandle:
        """Add a task; returns its handle.

        Args:
            id: the task's id, unique in the workflow.
            method: what runs it, e.g. ``"mcp/tool.add"`` or a ``@handler`` method.
            params: its parameters (JSON values; :class:`Ref` values refer to other tasks).
            after: tasks it waits for besides those its params refer to.
            name: display name (default: the id).
            priority: ``"urgent"``, ``"high"``, ``"normal"``, ``"low"`` (or 1, 2, 3).
            timeout: seconds one attempt may run.
            retry: ``{"max_attempts", "backoff", "base_delay", "max_delay", "jitter"}``.
            metadata: JSON values kept with the task.
            on_failure: ``"block"`` (default), ``"skip"``, ``"alternative"`` or
                ``"compensate"`` once no retry is left.
            alternative_task: with ``on_failure="alternative"``, the task to run instead.
            compensation_task: the task that undoes this one if it completed and the run's
                saga runs (a task with ``on_failure="compensate"`` failed).

        Nothing is checked here; :meth:`build` reports every problem at once.
        """
        referenced: list[str] = []
        task: dict[str, Any] = {"id": id, "method": method}
        task["params"] = _render(dict(params or {}), referenced)
        # References written as text (f-strings, "${add}") to tasks added before count too;
        # malformed ones are left for build() to report.
        found, _ = scan_references(task["params"])
        referenced += [ref.task for _, ref in found if ref.task in self._ids]
        explicit = [str(t.id) if isinstance(t, TaskHandle) else t for t in after]
        dependencies = list(dict.fromkeys([*explicit, *referenced]))
        if dependencies:
            task["dependencies"] = dependencies
        optional = {
            "name": name,
            "priority": priority,
            "timeout": timeout,
            "retry": dict(retry) if retry is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
            "on_failure": on_failure,
            "alternative_task": (
                str(alternative_task.id)
                if isinstance(alternative_task, TaskHandle)
                else alternative_task
            ),
            "compensation_task": (
                str(compensation_task.id)
                if isinstance(compensation_task, TaskHandle)
                else compensation_task
            ),
        }
        task.update({key: value for key, value in optional.items() if value is not None})
        self._tasks.append(task)
        self._ids.add(id)
        return TaskHandle(id)

    def to_dict(self) -> dict[str, Any]:
        """The workflow document: the mapping a YAML file with the same content gives."""
        return {**self._document, "tasks": [dict(task) for task in self._tasks]}

    def build(self) -> WorkflowSpec:
        """The validated spec; ``WorkflowInvalidError`` listing every problem otherwise."""
        return load_workflow(self.to_dict())
