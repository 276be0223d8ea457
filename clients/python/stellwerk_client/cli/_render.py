"""How runs look as plain lines and as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .._types import Run, TaskRun

__all__ = [
    "attempt_lines",
    "compact_json",
    "iso_time",
    "run_json",
    "run_summary",
    "task_change_line",
    "task_detail",
]


def iso_time(value: datetime | None) -> str | None:
    """``value`` in ISO 8601 (UTC), or ``None``."""
    return None if value is None else value.isoformat()


def compact_json(value: Any) -> str:
    """``value`` as one line of JSON without spaces after separators."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _task_json(task: TaskRun) -> dict[str, Any]:
    return {
        "state": task.state.value,
        "result": task.result,
        "attempts": task.attempts,
        "error": task.error,
        "name": task.name,
        "method": task.method,
        "executor": task.executor_id,
        "dispatched_at": iso_time(task.dispatched_at),
        "ended_at": iso_time(task.ended_at),
        "retry_at": iso_time(task.retry_at),
        "role": task.role,
        "attempt_history": [
            {
                "number": a.number,
                "executor": a.executor_id,
                "started_at": iso_time(a.started_at),
                "ended_at": iso_time(a.ended_at),
                "error": a.error,
            }
            for a in task.attempt_history
        ],
    }


def run_json(run: Run) -> dict[str, Any]:
    """The JSON document ``run``, ``status`` and ``watch`` print with ``--json``.

    ``id`` (= ``run_id``) and ``workflow`` (= ``workflow_id``, else ``workflow_name``) are the
    keys of the first release, kept as documented aliases for scripts that read them."""
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "workflow_name": run.workflow_name,
        "id": run.run_id,
        "workflow": run.workflow_id or run.workflow_name,
        "state": run.state.value,
        "tasks": {task.task_id: _task_json(task) for task in run.tasks},
        "created_at": iso_time(run.created_at),
        "ended_at": iso_time(run.ended_at),
        "error": run.error,
        "restarts": run.restarts,
    }


def task_change_line(task: TaskRun) -> str:
    """One line for a task that changed state while a run is followed."""
    line = f"  {task.task_id}: {task.state.value}"
    if task.attempts > 1:
        line += f" (attempt {task.attempts})"
    if task.error:
        line += f": {task.error}"
    return line


def task_detail(task: TaskRun) -> str:
    """A settled task's error, else its result as compact JSON, else nothing."""
    if task.error:
        return f"error: {task.error}"
    if task.result is not None:
        return compact_json(task.result)
    return ""


def run_summary(run: Run) -> list[str]:
    """The final report of a run: its state, then each task's state and result or error."""
    title = run.workflow_name or run.workflow_id
    lines = [f"run {run.run_id} ({title}): {run.state.value}"]
    if run.error:
        lines.append(f"  error: {run.error}")
    labels = [f"{t.task_id} ({t.role})" if t.role else t.task_id for t in run.tasks]
    width = max((len(label) for label in labels), default=0)
    for task, label in zip(run.tasks, labels, strict=True):
        detail = task_detail(task)
        if task.state.value == "RETRY_WAIT" and task.retry_at is not None:
            detail = f"attempt {task.attempts + 1} due {iso_time(task.retry_at)}"
        lines.append(f"  {label:<{width}}  {task.state.value:<10} {detail}".rstrip())
    return lines


def attempt_lines(run: Run) -> list[str]:
    """``status --attempts``: every attempt of every task (number, executor, start, end,
    error), and a waiting retry's due time."""
    lines = []
    for task in run.tasks:
        lines.append(f"  {task.task_id}: {task.state.value}, {task.attempts} attempt(s)")
        for a in task.attempt_history:
            took = ""
            if a.started_at is not None and a.ended_at is not None:
                took = f" ({(a.ended_at - a.started_at).total_seconds():.3f} s)"
            outcome = f"failed: {a.error}" if a.error else "succeeded"
            lines.append(
                f"    #{a.number} on {a.executor_id or '?'} {iso_time(a.started_at)} -> "
                f"{iso_time(a.ended_at)}{took}: {outcome}"
            )
        if task.retry_at is not None:
            lines.append(f"    #{task.attempts + 1} due {iso_time(task.retry_at)}")
    return lines
