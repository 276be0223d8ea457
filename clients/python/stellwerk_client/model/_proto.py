"""Workflow specs ⇄ their contract message ``stellwerk.workflow.v1.WorkflowSpec``.

Parameters and metadata travel as JSON text, never ``google.protobuf.Struct`` (which would turn
every integer into a double). ``stellwerk.core.convert`` re-exports both functions for the
services.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.duration_pb2 import Duration

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_client.errors import Problem, WorkflowInvalidError

from ._parse import FAILED, parse_document

__all__ = ["spec_mapping_from_proto", "spec_to_proto"]

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


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _metadata_json(task: Any) -> str:
    """A task's metadata as text. ``TaskSpec`` has no field for ``compensation_task`` (the
    contract is not changed for it): it travels as ``metadata.compensation_task``, the design
    analysis's spelling, which the server reads the same way."""
    metadata = dict(task.metadata)
    if task.compensation_task is not None:
        metadata["compensation_task"] = task.compensation_task
    return _json_text(metadata) if metadata else ""


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
            metadata_json=_metadata_json(task),
        )
        if task.timeout is not None:
            item.timeout.CopyFrom(_duration(task.timeout))
        if task.heartbeat_timeout is not None:
            item.heartbeat_timeout.CopyFrom(_duration(task.heartbeat_timeout))
        if task.on_failure != "block":
            item.on_failure = str(task.on_failure)
        if task.alternative_task is not None:
            item.alternative_task = task.alternative_task
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
        if task.HasField("heartbeat_timeout"):
            item["heartbeat_timeout"] = task.heartbeat_timeout.ToNanoseconds() / 1e9
        if task.on_failure:
            item["on_failure"] = task.on_failure
        if task.alternative_task:
            item["alternative_task"] = task.alternative_task
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
