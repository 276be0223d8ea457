"""Conversions between the domain (workflow model, KV records) and the contract messages.

Kept in one module so that the wire shape of every type is decided in one place. Parameters,
results and metadata travel as JSON text, never ``google.protobuf.Struct`` (which would turn
every integer into a double).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from stellwerk.core.errors import Problem, WorkflowInvalidError
from stellwerk.core.model._parse import FAILED, parse_document
from stellwerk.core.records import RunRecord, TaskRecord
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = [
    "run_to_proto",
    "spec_mapping_from_proto",
    "spec_to_proto",
    "task_to_proto",
    "timestamp",
]

_PRIORITY_TO_PB = {
    "urgent": pb.PRIORITY_URGENT,
    "high": pb.PRIORITY_HIGH,
    "normal": pb.PRIORITY_NORMAL,
    "low": pb.PRIORITY_LOW,
}
_PRIORITY_FROM_PB = {v: k for k, v in _PRIORITY_TO_PB.items()}
_BACKOFF_TO_PB = {
    "exponential": pb.BACKOFF_EXPONENTIAL,
    "linear": pb.BACKOFF_LINEAR,
    "fixed": pb.BACKOFF_FIXED,
}
_BACKOFF_FROM_PB = {v: k for k, v in _BACKOFF_TO_PB.items()}
_RUN_STATE = {
    "RUNNING": pb.RUN_STATE_RUNNING,
    "COMPLETED": pb.RUN_STATE_COMPLETED,
    "FAILED": pb.RUN_STATE_FAILED,
}
_TASK_STATE = {
    "PENDING": pb.TASK_STATE_PENDING,
    "DISPATCHED": pb.TASK_STATE_DISPATCHED,
    "RUNNING": pb.TASK_STATE_RUNNING,
    "COMPLETED": pb.TASK_STATE_COMPLETED,
    "FAILED": pb.TASK_STATE_FAILED,
    "BLOCKED": pb.TASK_STATE_BLOCKED,
}


def timestamp(epoch: float | None) -> Timestamp | None:
    """A protobuf Timestamp for seconds since the epoch (``None`` stays ``None``)."""
    if epoch is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def spec_to_proto(spec: Any) -> pb.WorkflowSpec:
    """A ``WorkflowSpec`` model as its contract message."""
    message = pb.WorkflowSpec(
        id=spec.id or "",
        name=spec.name,
        description=spec.description,
        metadata_json=_json_text(spec.metadata) if spec.metadata else "",
    )
    for task in spec.tasks:
        item = message.tasks.add(
            id=task.id,
            name=task.name,
            method=task.method,
            protocol=task.protocol,
            params_json=_json_text(task.params),
            dependencies=list(task.dependencies),
            priority=_PRIORITY_TO_PB[str(task.priority)],
            metadata_json=_json_text(task.metadata) if task.metadata else "",
        )
        if task.timeout is not None:
            item.timeout.CopyFrom(_duration(task.timeout))
        if task.retry is not None:
            item.retry.max_attempts = task.retry.max_attempts
            item.retry.backoff = _BACKOFF_TO_PB[str(task.retry.backoff)]
            item.retry.base_delay.CopyFrom(_duration(task.retry.base_delay))
            item.retry.max_delay.CopyFrom(_duration(task.retry.max_delay))
            item.retry.jitter = task.retry.jitter
    return message


def _parse_json(text: str, *, task: str | None, field: str, problems: list[Problem]) -> Any:
    """A JSON field of a structured submit, read with the document path's defences (nesting,
    duplicate keys, huge numbers), its problems re-labelled with the field."""
    if not text:
        return {}
    found: list[Problem] = []
    value = parse_document(text, "json", found)
    if value is FAILED or found:
        problems.extend(
            Problem(task=task, field=field, message=f"is not valid JSON: {p.message}")
            for p in found
        )
        return {}
    return value


def spec_mapping_from_proto(message: pb.WorkflowSpec) -> dict[str, Any]:
    """The workflow document (the same mapping a YAML file gives) for a contract message, so a
    structured submit goes through exactly the validation a file does. Raises
    ``WorkflowInvalidError`` for fields that cannot even be read (bad JSON, unknown enums)."""
    problems: list[Problem] = []
    doc: dict[str, Any] = {"name": message.name} if message.name else {}
    if message.id:
        doc["id"] = message.id
    if message.description:
        doc["description"] = message.description
    if message.metadata_json:
        doc["metadata"] = _parse_json(
            message.metadata_json, task=None, field="metadata_json", problems=problems
        )
    tasks: list[dict[str, Any]] = []
    for position, task in enumerate(message.tasks):
        label = task.id or task.name or f"#{position}"
        item: dict[str, Any] = {}
        for key in ("id", "name", "method", "protocol"):
            if getattr(task, key):
                item[key] = getattr(task, key)
        item["params"] = _parse_json(
            task.params_json, task=label, field="params_json", problems=problems
        )
        if task.dependencies:
            item["dependencies"] = list(task.dependencies)
        if task.priority != pb.PRIORITY_UNSPECIFIED:
            if task.priority not in _PRIORITY_FROM_PB:
                problems.append(
                    Problem(
                        task=label,
                        field="priority",
                        message=f"unknown priority value {task.priority}",
                    )
                )
            else:
                item["priority"] = _PRIORITY_FROM_PB[task.priority]
        if task.HasField("timeout"):
            item["timeout"] = task.timeout.ToNanoseconds() / 1e9
        if task.HasField("retry"):
            retry: dict[str, Any] = {}
            if task.retry.max_attempts:
                retry["max_attempts"] = task.retry.max_attempts
            if task.retry.backoff != pb.BACKOFF_UNSPECIFIED:
                if task.retry.backoff not in _BACKOFF_FROM_PB:
                    problems.append(
                        Problem(
                            task=label,
                            field="retry.backoff",
                            message=f"unknown backoff value {task.retry.backoff}",
                        )
                    )
                else:
                    retry["backoff"] = _BACKOFF_FROM_PB[task.retry.backoff]
            if task.retry.HasField("base_delay"):
                retry["base_delay"] = task.retry.base_delay.ToNanoseconds() / 1e9
            if task.retry.HasField("max_delay"):
                retry["max_delay"] = task.retry.max_delay.ToNanoseconds() / 1e9
            if task.retry.HasField("jitter"):
                retry["jitter"] = task.retry.jitter
            item["retry"] = retry
        if task.metadata_json:
            item["metadata"] = _parse_json(
                task.metadata_json, task=label, field="metadata_json", problems=problems
            )
        tasks.append(item)
    doc["tasks"] = tasks
    if problems:
        raise WorkflowInvalidError(problems=problems)
    return doc


def task_to_proto(task: TaskRecord, *, running: bool = False) -> pb.TaskRun:
    """A task document as the ``TaskRun`` clients see."""
    message = pb.TaskRun(
        task_id=task.id,
        name=task.name,
        method=task.method,
        state=pb.TASK_STATE_RUNNING if running else _TASK_STATE[task.state.value],
        result_json=_json_text(task.result) if task.has_result else "",
        attempts=task.attempt,
        error=task.error or "" if task.state.settled else "",
        dependencies=task.dependencies,
        executor_id=task.executor_id or "",
    )
    if (dispatched := timestamp(task.dispatched_at)) is not None:
        message.dispatch_time.CopyFrom(dispatched)
    if (ended := timestamp(task.ended_at)) is not None:
        message.end_time.CopyFrom(ended)
    return message


def run_to_proto(run: RunRecord, tasks: list[TaskRecord] | None = None) -> pb.Run:
    """A run header (and, for the full view, its tasks) as the ``Run`` clients see."""
    message = pb.Run(
        run_id=run.id,
        workflow_id=run.workflow_id,
        workflow_name=run.name,
        description=run.description,
        state=_RUN_STATE[run.state.value],
        task_count=run.task_count,
        request_id=run.request_id,
        error=run.error or "" if run.state.value != "RUNNING" else "",
    )
    if (created := timestamp(run.created_at)) is not None:
        message.create_time.CopyFrom(created)
    if (ended := timestamp(run.ended_at)) is not None:
        message.end_time.CopyFrom(ended)
    for task in tasks or ():
        message.tasks.append(task_to_proto(task))
    return message
