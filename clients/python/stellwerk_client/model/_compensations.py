"""Compensations (``compensation_task``): the tasks that undo completed ones in a run's saga.

A task may name a ``compensation_task`` whatever its own strategy: if it completed and a task
with ``on_failure: compensate`` fails for good, the run's saga runs the compensations of its
completed tasks one at a time, in reverse completion order. A compensation runs only there:
never a root, nobody's dependency, no sink. It may depend on (and refer to) the task it undoes
and that task's ancestors, all completed when it runs.
"""

from __future__ import annotations

from stellwerk_client.errors import Problem, shorten

from ._graph import WorkflowGraph
from ._spec import FailureStrategy, WorkflowSpec
from ._strategies import alternatives

__all__ = ["compensation_problems", "compensations"]

_FIELD = "compensation_task"


def compensations(spec: WorkflowSpec) -> dict[str, str]:
    """compensation task id -> id of the task it undoes (valid specs only: one each)."""
    found: dict[str, str] = {}
    for task in spec.tasks:
        if task.compensation_task is not None:
            target = spec.resolve_task_ref(task.compensation_task)
            if target is not None and target != task.id:
                found.setdefault(target, task.id)
    return found


def compensation_problems(spec: WorkflowSpec, graph: WorkflowGraph) -> list[Problem]:
    """Why the compensations of ``spec`` cannot work: unknown, the task itself, named twice,
    also an alternative, on the normal path, cyclic, with a strategy or compensation of their
    own, depending on tasks that may not have completed — or never run (no task starts a saga)."""
    problems: list[Problem] = []
    named: dict[str, str] = {}
    alternative_ids = alternatives(spec)
    for task in spec.tasks:
        if task.compensation_task is None:
            continue
        target = spec.resolve_task_ref(task.compensation_task)
        if target is None:
            message = (
                f"unknown compensation task {shorten(task.compensation_task)}: "
                "no task has this id or name"
            )
        elif target == task.id:
            message = "a task cannot be its own compensation"
        elif target in named:
            message = (
                f"{shorten(target)} is already the compensation of {shorten(named[target])}; "
                "each compensation serves one task"
            )
        elif target in alternative_ids:
            message = (
                f"{shorten(target)} is the alternative of {shorten(alternative_ids[target])}; "
                "a task runs on one path only"
            )
        else:
            named[target] = task.id
            continue
        problems.append(Problem(task.id, _FIELD, message))
    if named and not any(t.on_failure is FailureStrategy.COMPENSATE for t in spec.tasks):
        owner = next(iter(named.values()))
        message = "compensation_task never runs: no task has on_failure: compensate"
        problems.append(Problem(owner, _FIELD, message))
    problems += _cycles_and_chains(spec, named)
    for compensation, owner in named.items():
        if compensation not in graph or owner not in graph:
            continue
        users = graph.dependents(compensation)
        if users:
            message = (
                f"the compensation {shorten(compensation)} is on the normal path: "
                f"{', '.join(shorten(u) for u in users[:3])} depend on it"
            )
            problems.append(Problem(owner, _FIELD, message))
        allowed = graph.ancestors(owner) | {owner}
        extra = [d for d in graph.dependencies(compensation) if d not in allowed]
        if extra:
            message = (
                f"a compensation runs after {shorten(owner)} completed, so it may depend only "
                f"on {shorten(owner)} and tasks it depends on; {shorten(extra[0])} is not one"
            )
            problems.append(Problem(compensation, "dependencies", message))
    return problems


def _cycles_and_chains(spec: WorkflowSpec, named: dict[str, str]) -> list[Problem]:
    """A compensation runs only in the saga, whose failures are reported, not handled: it takes
    no failure strategy and no compensation of its own. Cycles of compensations are named."""
    problems: list[Problem] = []
    undoes = {owner: compensation for compensation, owner in named.items()}
    reported: set[frozenset[str]] = set()
    for task in spec.tasks:
        if task.id not in named:
            continue
        if task.on_failure is not FailureStrategy.BLOCK:
            message = (
                "a compensation's failure is reported by the saga, never handled: it takes no "
                f"on_failure (got {task.on_failure.value})"
            )
            problems.append(Problem(task.id, "on_failure", message))
        if task.id not in undoes:
            continue
        chain, current = [task.id], undoes[task.id]
        while current in undoes and current not in chain:
            chain.append(current)
            current = undoes[current]
        if current in chain:
            members = chain[chain.index(current) :]
            if frozenset(members) not in reported:
                reported.add(frozenset(members))
                shown = " -> ".join(shorten(c) for c in [*members, members[0]])
                problems.append(Problem(members[0], _FIELD, f"compensations cycle: {shown}"))
        else:
            message = "a compensation cannot have a compensation of its own"
            problems.append(Problem(task.id, _FIELD, message))
    return problems
