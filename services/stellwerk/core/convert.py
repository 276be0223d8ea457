"""Conversions between the domain (KV records) and the contract messages.

The workflow spec's own conversion lives with the model in the client distribution
(``stellwerk_client.model``) and is re-exported here. Parameters,
results and metadata travel as JSON text, never ``google.protobuf.Struct`` (which would turn
every integer into a double).
"""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from stellwerk.core.records import RunRecord, TaskRecord, retry_waiting
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_client.model import spec_mapping_from_proto, spec_to_proto

__all__ = [
    "run_to_proto",
    "spec_mapping_from_proto",
    "spec_to_proto",
    "task_to_proto",
    "timestamp",
]

_RUN_STATE = {
    "RUNNING": pb.RUN_STATE_RUNNING,
    "COMPLETED": pb.RUN_STATE_COMPLETED,
    "FAILED": pb.RUN_STATE_FAILED,
    "CANCELLED": pb.RUN_STATE_CANCELLED,
    "COMPENSATING": pb.RUN_STATE_COMPENSATING,
    "COMPENSATED": pb.RUN_STATE_COMPENSATED,
}
_TASK_STATE = {
    "PENDING": pb.TASK_STATE_PENDING,
    "DISPATCHED": pb.TASK_STATE_DISPATCHED,
    "RUNNING": pb.TASK_STATE_RUNNING,
    "COMPLETED": pb.TASK_STATE_COMPLETED,
    "FAILED": pb.TASK_STATE_FAILED,
    "BLOCKED": pb.TASK_STATE_BLOCKED,
    "SKIPPED": pb.TASK_STATE_SKIPPED,
    "CANCELLED": pb.TASK_STATE_CANCELLED,
}


def timestamp(epoch: float | None) -> Timestamp | None:
    """A protobuf Timestamp for seconds since the epoch (``None`` stays ``None``)."""
    if epoch is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def task_to_proto(task: TaskRecord, *, running: bool = False) -> pb.TaskRun:
    """A task document as the ``TaskRun`` clients see."""
    waiting = retry_waiting(task, time.time())
    stored = task.stored_result if task.has_result else None
    state = pb.TASK_STATE_RUNNING if running else _TASK_STATE[task.state.value]
    message = pb.TaskRun(
        task_id=task.id,
        name=task.name,
        method=task.method,
        state=pb.TASK_STATE_RETRY_WAIT if waiting else state,
        # A result stored out of line shows its size here; GetRun fills in its text.
        result_json=_json_text(task.result) if task.has_result and not stored else "",
        result_size=int(stored["size"]) if stored else 0,
        attempts=task.attempt - 1 if waiting else task.attempt,
        error=task.error or "" if task.state.settled else "",
        dependencies=task.dependencies,
        executor_id=task.executor_id or "",
        role=task.role or "",
    )
    if (dispatched := timestamp(task.dispatched_at)) is not None:
        message.dispatch_time.CopyFrom(dispatched)
    if (ended := timestamp(task.ended_at)) is not None:
        message.end_time.CopyFrom(ended)
    if waiting and (due := timestamp(task.retry_at)) is not None:
        message.retry_time.CopyFrom(due)
    for entry in task.history:
        attempt = message.attempt_history.add(
            number=int(entry.get("n") or 0),
            executor_id=entry.get("executor") or "",
            error=entry.get("error") or "",
        )
        if (start := timestamp(entry.get("start"))) is not None:
            attempt.start_time.CopyFrom(start)
        if (end := timestamp(entry.get("end"))) is not None:
            attempt.end_time.CopyFrom(end)
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
        restarts=run.restarts,
    )
    if (created := timestamp(run.created_at)) is not None:
        message.create_time.CopyFrom(created)
    if (ended := timestamp(run.ended_at)) is not None:
        message.end_time.CopyFrom(ended)
    for task in tasks or ():
        message.tasks.append(task_to_proto(task))
    return message
