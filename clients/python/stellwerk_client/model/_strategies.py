"""Failure strategies across tasks: which task stands in for which (``alternative_task``).

An alternative runs only when the task that names it has failed for good; it is never a root,
never a dependency and never a sink of its own. It takes the place of the task it replaces:
that task's dependents wait for it and read its result, and a sink's place in the run is its.
"""

from __future__ import annotations

from stellwerk_client.errors import Problem, shorten

from ._graph import WorkflowGraph
from ._spec import FailureStrategy, WorkflowSpec

__all__ = ["alternatives", "replaced_by", "strategy_problems"]


def alternatives(spec: WorkflowSpec) -> dict[str, str]:
    """alternative task id -> id of the task that names it (valid specs only: one each)."""
    found: dict[str, str] = {}
    for task in spec.tasks:
        if task.on_failure is FailureStrategy.ALTERNATIVE and task.alternative_task is not None:
            target = spec.resolve_task_ref(task.alternative_task)
            if target is not None and target != task.id:
                found.setdefault(target, task.id)
    return found


def replaced_by(spec: WorkflowSpec) -> dict[str, str]:
    """alternative task id -> the task on the normal path it finally stands in for (the start
    of its chain: an alternative may name an alternative of its own)."""
    named = alternatives(spec)
    stands_for: dict[str, str] = {}
    for alternative in named:
        current, seen = alternative, {alternative}
        while current in named and named[current] not in seen:
            current = named[current]
            seen.add(current)
        stands_for[alternative] = current
    return stands_for


def strategy_problems(spec: WorkflowSpec, graph: WorkflowGraph) -> list[Problem]:
    """Why the alternatives of ``spec`` cannot work: missing, unknown, the task itself, named
    twice, on the normal path (something depends on them), cyclic, or depending on tasks that
    are not done when the task they replace has failed."""
    problems: list[Problem] = []
    named: dict[str, str] = {}
    for task in spec.tasks:
        alt = task.alternative_task
        if task.on_failure is not FailureStrategy.ALTERNATIVE:
            if alt is not None:
                message = "alternative_task is used only with on_failure: alternative"
                problems.append(Problem(task.id, "alternative_task", message))
            continue
        if alt is None:
            message = "on_failure: alternative needs alternative_task (the task to run instead)"
            problems.append(Problem(task.id, "alternative_task", message))
            continue
        target = spec.resolve_task_ref(alt)
        if target is None:
            message = f"unknown alternative task {shorten(alt)}: no task has this id or name"
            problems.append(Problem(task.id, "alternative_task", message))
        elif target == task.id:
            message = "a task cannot be its own alternative"
            problems.append(Problem(task.id, "alternative_task", message))
        elif target in named:
            message = (
                f"{shorten(target)} is already the alternative of {shorten(named[target])}; "
                "each alternative serves one task"
            )
            problems.append(Problem(task.id, "alternative_task", message))
        else:
            named[target] = task.id
    for alternative, owner in named.items():
        users = graph.dependents(alternative) if alternative in graph else ()
        if users:
            message = (
                f"the alternative {shorten(alternative)} is on the normal path: "
                f"{', '.join(shorten(u) for u in users[:3])} depend on it"
            )
            problems.append(Problem(owner, "alternative_task", message))
    stands_for: dict[str, str] = {}
    cycles: set[frozenset[str]] = set()
    for alternative in named:
        current, chain = alternative, [alternative]
        while current in named:
            current = named[current]
            if current in chain:
                members = list(reversed(chain[chain.index(current) :]))
                if frozenset(members) not in cycles:
                    cycles.add(frozenset(members))
                    shown = " -> ".join(shorten(c) for c in [*members, members[0]])
                    problems.append(
                        Problem(members[0], "alternative_task", f"alternatives cycle: {shown}")
                    )
                break
            chain.append(current)
        else:
            stands_for[alternative] = current
    for alternative, replaced in stands_for.items():
        if alternative not in graph or replaced not in graph:
            continue
        allowed = graph.ancestors(replaced)
        extra = [d for d in graph.dependencies(alternative) if d not in allowed]
        if extra:
            message = (
                f"an alternative runs when {shorten(replaced)} has failed, so it may depend "
                f"only on tasks {shorten(replaced)} depends on; {shorten(extra[0])} is not one"
            )
            problems.append(Problem(alternative, "dependencies", message))
    return problems
