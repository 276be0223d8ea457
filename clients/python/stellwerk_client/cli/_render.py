"""How runs look on the terminal and as JSON."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = [
    "compact_json",
    "iso_time",
    "parse_json_text",
    "run_json",
    "run_state",
    "run_summary",
    "task_change_line",
    "task_state",
]


def run_state(state: pb.RunState.ValueType) -> str:
    """``RUNNING``, ``COMPLETED``, ``FAILED`` (``UNSPECIFIED`` for an unset state)."""
    return _enum_name(pb.RunState, int(state), "RUN_STATE_")


def task_state(state: pb.TaskState.ValueType) -> str:
    """``PENDING``, ``DISPATCHED``, ``RUNNING``, ``COMPLETED``, ``FAILED`` or ``BLOCKED``."""
    return _enum_name(pb.TaskState, int(state), "TASK_STATE_")


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:  # a newer server may send a state this client does not know
        return str(value)


def iso_time(message: Any, field: str) -> str | None:
    """The timestamp ``field`` of ``message`` in ISO 8601 (UTC), or ``None`` when unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC).isoformat()


def parse_json_text(text: str) -> Any:
    """A ``*_json`` field's value with its JSON types (``""`` is ``None``).

    Text that is not JSON (which a correct server never sends) is returned as it is.
    """
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def compact_json(value: Any) -> str:
    """``value`` as one line of JSON without spaces after separators."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _task_json(task: pb.TaskRun) -> dict[str, Any]:
    return {
        "state": task_state(task.state),
        "result": parse_json_text(task.result_json),
        "attempts": task.attempts,
        "error": task.error or None,
        "name": task.name,
        "method": task.method,
        "executor": task.executor_id or None,
        "dispatched_at": iso_time(task, "dispatch_time"),
        "ended_at": iso_time(task, "end_time"),
    }


def run_json(run: pb.Run) -> dict[str, Any]:
    """The JSON document ``run``, ``status`` and ``watch`` print with ``--json``.

    ``id`` (= ``run_id``) and ``workflow`` (= ``workflow_id``, else ``workflow_name``) are the
    keys of the first release, kept as documented aliases for scripts that read them."""
    workflow = run.workflow_id or run.workflow_name
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id or None,
        "workflow_name": run.workflow_name,
        "id": run.run_id,
        "workflow": workflow,
        "state": run_state(run.state),
        "tasks": {task.task_id: _task_json(task) for task in run.tasks},
        "created_at": iso_time(run, "create_time"),
        "ended_at": iso_time(run, "end_time"),
        "error": run.error or None,
    }


def task_change_line(task: pb.TaskRun) -> str:
    """One line for a task that changed state while a run is followed."""
    line = f"  {task.task_id}: {task_state(task.state)}"
    if task.attempts > 1:
        line += f" (attempt {task.attempts})"
    if task.error:
        line += f": {task.error}"
    return line


def run_summary(run: pb.Run) -> list[str]:
    """The final report of a run: its state, then each task's state and result or error."""
    title = run.workflow_name or run.workflow_id
    lines = [f"run {run.run_id} ({title}): {run_state(run.state)}"]
    if run.error:
        lines.append(f"  error: {run.error}")
    width = max((len(task.task_id) for task in run.tasks), default=0)
    for task in run.tasks:
        state = task_state(task.state)
        if task.error:
            detail = f"error: {task.error}"
        elif task.result_json:
            detail = compact_json(parse_json_text(task.result_json))
        else:
            detail = ""
        lines.append(f"  {task.task_id:<{width}}  {state:<10} {detail}".rstrip())
    return lines
