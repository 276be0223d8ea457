"""Will a run's records fit in one NATS message each? Checked before anything is written.

Validation and submit both call :func:`size_problems`, so a workflow ``ValidateWorkflow`` calls
valid is never refused by the server half way through its submit. The task documents are
measured without being built (building them is most of a large submit's cost, and submit
builds them again): each document is a fixed skeleton plus the JSON of its variable parts,
which one ``orjson`` call per task measures exactly. Only the references map is bounded
instead (``refs`` maps each distinct ``${...}`` token to a task id); a task whose bound does
not fit has its references resolved for the exact figure.

A task's dispatch carries the same parameters as its document (for a task whose references
are not yet substituted, the template) and less beside, so the document's limit covers it;
substituted parameters are measured when the dispatch is built (``Dispatcher.encode``), and a
dispatch too large fails its task.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

from stellwerk.core.errors import Problem
from stellwerk.core.limits import BOOKKEEPING, Limits
from stellwerk.core.model import (
    WorkflowSpec,
    alternatives,
    compensations,
    find_references,
    replaced_by,
)
from stellwerk.core.records import RunRecord, TaskRecord, TaskState, dumps, new_bitmap
from stellwerk.resolver._documents import new_run_id

__all__ = ["size_problems"]

# The parts measured per task, in this order (the labels name the field in a problem).
_PARTS = ("id", "name", "method", "params", "dependencies", "dependents", "metadata", "retry")
_TIMESTAMP = 1.7e9 + 0.1234567  # as long as any time this century prints


@functools.cache
def _skeleton() -> int:
    """Bytes of a task document whose variable parts are all empty (``""``, ``{}``, ``[]``,
    ``null``), as a submit writes it (DISPATCHED, attempt 1, a dispatch time)."""
    empty = TaskRecord(
        run_id=new_run_id(),
        id="",
        name="",
        method="",
        params={},
        dependencies=[],
        dependents=[],
        refs={},
        sink_index=None,
        priority="",
        timeout=None,
        retry=None,
        metadata={},
        state=TaskState.DISPATCHED,
        settled_deps="",
        attempt=1,
        dispatched_at=_TIMESTAMP,
    )
    return len(empty.to_bytes())


# What the empty parts above cost as JSON: "" for id, name, method; {} for params, metadata;
# [] for dependencies, dependents; null for retry.
_EMPTY = {"id": 2, "name": 2, "method": 2, "params": 2, "dependencies": 2, "dependents": 2,
          "metadata": 2, "retry": 4}  # fmt: skip


def _exact_refs(spec: WorkflowSpec, params: dict[str, Any]) -> int:
    refs: dict[str, str] = {}
    for ref in find_references(params):
        target = spec.resolve_task_ref(ref.task)
        if target is not None:
            refs[ref.task] = target
    return len(dumps(refs))


def _task_problem(task_id: str, sizes: dict[str, int], total: int, limits: Limits) -> Problem:
    largest = max(sizes, key=lambda part: sizes[part])
    return Problem(
        task=task_id,
        field=largest,
        message=(
            f"the task document would be {total:,} bytes ({largest}: {sizes[largest]:,} bytes); "
            f"this deployment stores at most {limits.task_definition:,} bytes per task "
            f"definition: NATS max_payload {limits.max_payload:,} bytes, less "
            f"{limits.result:,} kept for the task's result and {BOOKKEEPING:,} for its state"
        ),
    )


def task_problems(spec: WorkflowSpec, limits: Limits) -> list[Problem]:
    """A problem per task whose document, as a submit writes it, leaves too little room."""
    dependents: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    for task in spec.tasks:
        for index, dep in enumerate(task.dependencies):
            dependents[dep].append((task.id, index))
    for alternative, replaced in replaced_by(spec).items():  # it holds that task's place
        dependents[alternative] = list(dependents.get(replaced, []))
    owner_of = {owner: alternative for alternative, owner in alternatives(spec).items()}
    undone_by = {owner: undo for undo, owner in compensations(spec).items()}
    roles = dict.fromkeys(replaced_by(spec), "alternative")
    roles.update(dict.fromkeys(compensations(spec), "compensation"))
    longest = max((max(len(t.id), len(t.name)) for t in spec.tasks), default=0)
    ref_bound = 2 * (6 * longest + 2) + 2  # "token":"task id", each char escaped at worst
    skeleton = _skeleton()
    sink_digits = len(str(len(spec.tasks))) - 4
    problems: list[Problem] = []
    for task in spec.tasks:
        retry = task.retry.model_dump(mode="json") if task.retry is not None else None
        values = [task.id, task.name, task.method, task.params, list(task.dependencies),
                  dependents.get(task.id, []), task.metadata, retry]  # fmt: skip
        encoded = dumps(values)
        # One call measures all parts together; what the separators add is constant.
        total = skeleton + len(encoded) - (len(_PARTS) + 1) - sum(_EMPTY.values())
        total += len(str(task.priority)) + len(new_bitmap(len(task.dependencies)))
        total += 0 if task.timeout is None else len(dumps(task.timeout)) - 4  # not null
        total += 0 if task.id in dependents else sink_digits  # a sink's index, not null
        strategy = {} if task.on_failure == "block" else {"on_failure": str(task.on_failure)}
        if task.id in owner_of:
            strategy["alternative"] = owner_of[task.id]
        if task.id in undone_by:
            strategy["compensation"] = undone_by[task.id]
        if task.id in roles:
            strategy["role"] = roles[task.id]
        total += len(dumps(strategy)) if strategy else 0  # written only when not the default
        refs = 2 + encoded.count(b"${") * ref_bound if b"${" in encoded else 0
        if total + refs > limits.task_definition and refs:
            refs = _exact_refs(spec, task.params) - 2
        total += refs
        if total > limits.task_definition:
            sizes = {p: len(dumps(v)) for p, v in zip(_PARTS, values, strict=True)}
            problems.append(_task_problem(task.id, sizes, total, limits))
    return problems


def run_problems(spec: WorkflowSpec, limits: Limits) -> list[Problem]:
    """Problems of the run header and the order list (both measured exactly)."""
    problems: list[Problem] = []
    has_dependents = {dep for task in spec.tasks for dep in task.dependencies}
    sinks = sum(1 for task in spec.tasks if task.id not in has_dependents)
    header = RunRecord(
        id=new_run_id(),
        workflow_id=spec.id or "",
        name=spec.name,
        description=spec.description,
        task_count=len(spec.tasks),
        sink_count=sinks,
        created_at=_TIMESTAMP,
        metadata=spec.metadata,
        settled_sinks=new_bitmap(sinks),
    )
    size = len(header.to_bytes())
    if size > limits.run_header:
        parts = {"name": spec.name, "description": spec.description, "metadata": spec.metadata}
        largest = max(parts, key=lambda part: len(dumps(parts[part])))
        problems.append(
            Problem(
                task=None,
                field=largest,
                message=(
                    f"the run header would be {size:,} bytes ({largest}: "
                    f"{len(dumps(parts[largest])):,} bytes); this deployment stores at most "
                    f"{limits.run_header:,} bytes per run header: NATS max_payload "
                    f"{limits.max_payload:,} bytes, less {BOOKKEEPING:,} for its state"
                ),
            )
        )
    order = len(dumps([task.id for task in spec.tasks]))
    if order > limits.message:
        problems.append(
            Problem(
                task=None,
                field="tasks",
                message=(
                    f"the list of task ids would be {order:,} bytes; this deployment stores at "
                    f"most {limits.message:,} bytes per record (NATS max_payload "
                    f"{limits.max_payload:,} bytes): use fewer tasks or shorter ids"
                ),
            )
        )
    return problems


def size_problems(spec: WorkflowSpec, limits: Limits) -> list[Problem]:
    """Every record of a run of ``spec`` that would not fit (see the module docstring)."""
    return [*run_problems(spec, limits), *task_problems(spec, limits)]
