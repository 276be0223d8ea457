"""Whole-workflow validation: the checks that need more than one task at a time."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Collection

from stellwerk_client.errors import Problem, WorkflowInvalidError, clip, shorten

from ._compensations import compensation_problems
from ._graph import WorkflowGraph, cycle_problem
from ._references import scan_references
from ._spec import TaskSpec, WorkflowSpec
from ._strategies import strategy_problems

__all__ = ["check_workflow", "validate_workflow"]


def _quoted(ids: Collection[str], shown: int = 5) -> str:
    listed = [shorten(i) for i in list(ids)[:shown]]
    if len(ids) > shown:
        listed.append(f"and {len(ids) - shown} more")
    return ", ".join(listed)


def _unknown_task(spec: WorkflowSpec, token: str, *, unknown: str, ambiguous: str) -> str:
    """``unknown`` if no task is called ``token``, else why the shared name cannot be used."""
    named = spec.tasks_named(token)
    if len(named) > 1:
        return (
            f"{ambiguous} is ambiguous: {len(named)} tasks have it ({_quoted(named)}); "
            "use one of their ids"
        )
    return unknown


def _method_problems(spec: WorkflowSpec, known_methods: Collection[str]) -> list[Problem]:
    known = set(known_methods)
    problems = []
    for task in spec.tasks:
        if task.method not in known:
            close = difflib.get_close_matches(task.method, sorted(known), n=1)
            hint = f" (did you mean {shorten(close[0])}?)" if close else ""
            problems.append(
                Problem(task.id, "method", f"unknown method {shorten(task.method)}{hint}")
            )
    return problems


def _dependency_problems(spec: WorkflowSpec) -> list[Problem]:
    ids = {task.id for task in spec.tasks}
    problems = []
    for task in spec.tasks:
        for dep in task.dependencies:
            if dep == task.id:
                problems.append(Problem(task.id, "dependencies", "a task cannot depend on itself"))
            elif dep not in ids:
                message = _unknown_task(
                    spec,
                    dep,
                    unknown=f"unknown dependency {shorten(dep)}: no task has this id or name",
                    ambiguous=f"the dependency name {shorten(dep)}",
                )
                problems.append(Problem(task.id, "dependencies", message))
    return problems


class _ReferenceChecker:
    """Checks that every reference names a task among the referencing task's ancestors.

    Direct dependencies answer most references in O(1); for the others the descendants of the
    referenced task are computed once and shared by every task that refers to it.
    """

    def __init__(self, spec: WorkflowSpec, graph: WorkflowGraph) -> None:
        self._spec = spec
        self._graph = graph
        self._descendants: dict[str, frozenset[str]] = {}

    def _reaches(self, target: str, task_id: str) -> bool:
        if target not in self._descendants:
            self._descendants[target] = self._graph.descendants(target)
        return task_id in self._descendants[target]

    def check(self, task: TaskSpec) -> list[Problem]:
        found, errors = scan_references(task.params)
        problems = [Problem(task.id, "params", error) for error in errors]
        direct = set(task.dependencies)
        reported: set[str] = set()
        for where, reference in found:
            if reference.raw in reported:
                continue
            message = self._problem(task, where, reference.task, str(reference), direct)
            if message is not None:
                reported.add(reference.raw)
                problems.append(Problem(task.id, "params", message))
        return problems

    def _problem(
        self, task: TaskSpec, where: str, token: str, text: str, direct: set[str]
    ) -> str | None:
        where = clip(where, 120)
        target = self._spec.resolve_task_ref(token)
        if target is None:
            message = _unknown_task(
                self._spec,
                token,
                unknown=f"{where}: unknown task {shorten(token)} in reference {clip(text, 80)}",
                ambiguous=f"{where}: the task name {shorten(token)} in reference {clip(text, 80)}",
            )
            if "[" in token:
                message += "; to index a task's output write ${task.result[0]} or ${task.0}"
            return message
        if target == task.id:
            return f"{where}: {clip(text, 80)} refers to the task's own output"
        if target in direct or self._reaches(target, task.id):
            return None
        named = (
            f"task {shorten(target)}"
            if target == token
            else f"task {shorten(target)} (named {shorten(token)})"
        )
        return (
            f"{where}: {clip(text, 80)} uses {named}, which is not among this task's dependencies; "
            f"add {shorten(target)} to dependencies"
        )


def validate_workflow(
    spec: WorkflowSpec, *, known_methods: Collection[str] | None = None
) -> list[Problem]:
    """Every problem of ``spec`` as a whole; an empty list means it is valid.

    Checks: at least one task; unique ids; dependencies that exist, are not the task itself and
    are not ambiguous names; no cycles (one problem per cycle); well-formed references to known
    tasks that the referencing task (transitively) depends on; alternatives and compensations
    that exist, are off the normal path and form no cycle (``_strategies``,
    ``_compensations``); and, when ``known_methods`` is
    given, that every method is one of them.
    """
    problems: list[Problem] = []
    if not spec.tasks:
        problems.append(Problem(None, "tasks", "the workflow has no tasks"))
    counts = Counter(task.id for task in spec.tasks)
    for task_id, count in counts.items():
        if count > 1:
            problems.append(Problem(task_id, "id", f"{count} tasks have the id {shorten(task_id)}"))
    if known_methods is not None:
        problems.extend(_method_problems(spec, known_methods))
    problems.extend(_dependency_problems(spec))
    graph = WorkflowGraph.build(spec)
    problems.extend(cycle_problem(cycle) for cycle in graph.find_cycles())
    checker = _ReferenceChecker(spec, graph)
    for task in spec.tasks:
        problems.extend(checker.check(task))
    problems.extend(strategy_problems(spec, graph))
    problems.extend(compensation_problems(spec, graph))
    return problems


def check_workflow(spec: WorkflowSpec, *, known_methods: Collection[str] | None = None) -> None:
    """Raise :class:`WorkflowInvalidError` with every problem of ``spec``, if it has any."""
    problems = validate_workflow(spec, known_methods=known_methods)
    if problems:
        raise WorkflowInvalidError(problems=problems)
