"""Turning a validated workflow into the KV documents of a new run."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from stellwerk.core.model import WorkflowGraph, WorkflowSpec, find_references
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
    sink_index = {task_id: i for i, task_id in enumerate(graph.sinks)}
    now = time.time()
    tasks: list[TaskRecord] = []
    for task in spec.tasks:
        refs: dict[str, str] = {}
        for ref in find_references(task.params):
            target = spec.resolve_task_ref(ref.task)
            if target is not None:
                refs[ref.task] = target
        is_root = not task.dependencies
        tasks.append(
            TaskRecord(
                run_id=run_id,
                id=task.id,
                name=task.name,
                method=task.method,
                params=task.params,
                dependencies=list(task.dependencies),
                dependents=[(d, position[d][task.id]) for d in graph.dependents(task.id)],
                refs=refs,
                sink_index=sink_index.get(task.id),
                priority=str(task.priority),
                timeout=task.timeout,
                heartbeat_timeout=task.heartbeat_timeout,
                on_failure=None if task.on_failure == "block" else str(task.on_failure),
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
