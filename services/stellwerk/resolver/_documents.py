"""Turning a validated workflow into the KV documents of a new run."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from stellwerk.core.model import (
    WorkflowGraph,
    WorkflowSpec,
    alternatives,
    compensations,
    find_references,
    replaced_by,
)
from stellwerk.core.records import RunRecord, TaskRecord, TaskState, new_bitmap

__all__ = ["RunDocuments", "build_run_documents", "new_run_id"]


def new_run_id() -> str:
    """A fresh run id: milliseconds since the epoch then randomness, so ids sort by creation."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class RunDocuments:
    """Everything a submit writes: the header (written last: the commit point) and the tasks."""

    header: RunRecord
    tasks: list[TaskRecord]

    @property
    def order(self) -> list[str]:
        """Task ids in document order."""
        return [t.id for t in self.tasks]


def build_run_documents(
    spec: WorkflowSpec,
    *,
    run_id: str,
    request_id: str = "",
    request_key: str = "",
    trace: str | None = None,
) -> RunDocuments:
    """Lay out ``spec`` as documents: dependents with their bit index, sinks numbered, roots
    already DISPATCHED (attempt 1) so the submit needs no second write before dispatching them."""
    graph = WorkflowGraph.build(spec)
    position: dict[str, dict[str, int]] = {
        t.id: {dep: i for i, dep in enumerate(t.dependencies)} for t in spec.tasks
    }
    # Alternatives run only in place of the task they replace: never roots, dependents or
    # sinks of their own; they take over that task's dependents and sink place.
    stands_for = replaced_by(spec)
    alternative_of = {owner: alt for alt, owner in alternatives(spec).items()}
    # Compensations run only in the run's saga (``core/progress/_saga``): never roots,
    # dependents or sinks either, though they may depend on the task they undo.
    undoes = compensations(spec)
    compensation_of = {owner: undo for undo, owner in undoes.items()}
    roles = dict.fromkeys(stands_for, "alternative") | dict.fromkeys(undoes, "compensation")
    sinks = [
        t for t in graph.task_ids if t not in roles and all(d in roles for d in graph.dependents(t))
    ]
    sink_index = {task_id: i for i, task_id in enumerate(sinks)}

    def dependents(task_id: str) -> list[tuple[str, int]]:
        return [(d, position[d][task_id]) for d in graph.dependents(task_id) if d not in roles]

    now = time.time()
    tasks: list[TaskRecord] = []
    for task in spec.tasks:
        refs: dict[str, str] = {}
        for ref in find_references(task.params):
            target = spec.resolve_task_ref(ref.task)
            if target is not None:
                refs[ref.task] = target
        place = stands_for.get(task.id, task.id)  # whose dependents and sink place it has
        is_root = not task.dependencies and task.id not in roles
        tasks.append(
            TaskRecord(
                run_id=run_id,
                id=task.id,
                name=task.name,
                method=task.method,
                params=task.params,
                dependencies=list(task.dependencies),
                dependents=dependents(place),
                refs=refs,
                sink_index=sink_index.get(place),
                priority=str(task.priority),
                timeout=task.timeout,
                heartbeat_timeout=task.heartbeat_timeout,
                on_failure=None if task.on_failure == "block" else str(task.on_failure),
                alternative=alternative_of.get(task.id),
                compensation=compensation_of.get(task.id),
                role=roles.get(task.id),
                retry=task.retry.model_dump(mode="json") if task.retry is not None else None,
                metadata=task.metadata,
                state=TaskState.DISPATCHED if is_root else TaskState.PENDING,
                settled_deps=new_bitmap(len(task.dependencies)),
                attempt=1 if is_root else 0,
                dispatched_at=now if is_root else None,
                trace=trace,
            )
        )
    header = RunRecord(
        id=run_id,
        workflow_id=spec.id or "",
        name=spec.name,
        description=spec.description,
        task_count=len(tasks),
        sink_count=len(sink_index),
        created_at=now,
        request_id=request_id,
        request_key=request_key,
        metadata=spec.metadata,
        settled_sinks=new_bitmap(len(sink_index)),
        trace=trace,
    )
    return RunDocuments(header=header, tasks=tasks)
