"""The live display of ``stellwerk run`` / ``watch`` in a terminal (rich): one row per task with
its state, attempt and duration, and a progress bar of finished tasks.

Plain output (stdout not a terminal) is one line per change instead; see ``_runs``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._types import Run, RunState, TaskRun, TaskState

__all__ = ["LiveRun"]

_STYLES = {
    TaskState.PENDING: "dim",
    TaskState.DISPATCHED: "cyan",
    TaskState.RUNNING: "bold yellow",
    TaskState.COMPLETED: "green",
    TaskState.FAILED: "bold red",
    TaskState.BLOCKED: "magenta",
    TaskState.RETRY_WAIT: "yellow",
    TaskState.SKIPPED: "dim red",
    TaskState.CANCELLED: "dim magenta",
}
_RUN_STYLES = {
    RunState.RUNNING: "bold yellow",
    RunState.COMPLETED: "bold green",
    RunState.FAILED: "bold red",
    RunState.CANCELLED: "bold magenta",
    RunState.COMPENSATING: "bold yellow",
    RunState.COMPENSATED: "bold red",
}
# Rows kept off the table in a short terminal: the title, the header, the bar and a margin.
_CHROME_LINES = 8


def _duration(task: TaskRun, now: datetime) -> str:
    if task.dispatched_at is None:
        return ""
    end = task.ended_at or (None if task.state.finished else now)
    if end is None:
        return ""
    return f"{max(0.0, (end - task.dispatched_at).total_seconds()):.2f}s"


class LiveRun:
    """Renders a run's tasks while it is followed; ``with LiveRun(console, run) as live:`` then
    :meth:`update` for each change. Leaves the last frame on the screen when it stops."""

    def __init__(self, console: Console, run: Run) -> None:
        self._console = console
        self._run = run
        self._tasks: dict[str, TaskRun] = {task.task_id: task for task in run.tasks}
        self._progress = Progress(
            TextColumn("[bold]tasks finished"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        total = max(run.task_count, len(self._tasks))
        self._bar = self._progress.add_task("tasks", total=total, completed=self._finished())
        self._live = Live(
            get_renderable=self._render,
            console=console,
            refresh_per_second=8,
            transient=False,
        )

    def _finished(self) -> int:
        return sum(1 for task in self._tasks.values() if task.state.finished)

    def update(self, run: Run, task: TaskRun | None) -> None:
        """Take one change: the run's header and the task that changed (if any)."""
        self._run = run
        if task is not None:
            known = self._tasks.get(task.task_id)
            # A watch item carries what changed; keep what an earlier, fuller read knew.
            if known is not None and task.dispatched_at is None:
                task = _merged(known, task)
            self._tasks[task.task_id] = task
            self._progress.update(self._bar, completed=self._finished())
        self._live.refresh()

    def _rows(self) -> list[TaskRun]:
        tasks = list(self._tasks.values())
        room = max(3, self._console.size.height - _CHROME_LINES)
        if len(tasks) <= room:
            return tasks
        # Too many to show: the unfinished ones first (what is happening), then the latest ends.
        active = [t for t in tasks if not t.state.finished]
        ended = sorted(
            (t for t in tasks if t.state.finished),
            key=lambda t: t.ended_at or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        return (active + ended)[: room - 1]

    def _render(self) -> RenderableType:
        now = datetime.now(UTC)
        title = self._run.workflow_name or self._run.workflow_id or ""
        heading = Text(f"run {self._run.run_id} ({title}): ", style="bold")
        heading.append(self._run.state.value, style=_RUN_STYLES.get(self._run.state, ""))
        table = Table(expand=False)
        table.add_column("task", overflow="fold")
        table.add_column("state")
        table.add_column("attempt", justify="right")
        table.add_column("duration", justify="right")
        rows = self._rows()
        for task in rows:
            state = Text(task.state.value, style=_STYLES.get(task.state, ""))
            attempt = str(task.attempts) if task.attempts else ""
            label = f"{task.task_id} ({task.role})" if task.role else task.task_id
            table.add_row(label, state, attempt, _duration(task, now))
        hidden = len(self._tasks) - len(rows)
        if hidden > 0:
            table.add_row(Text(f"... {hidden} more tasks", style="dim"), "", "", "")
        return Group(heading, table, self._progress)

    def __enter__(self) -> Self:
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.refresh()
        self._live.stop()


def _merged(known: TaskRun, change: TaskRun) -> TaskRun:
    return TaskRun(
        task_id=change.task_id,
        name=change.name or known.name,
        method=change.method or known.method,
        state=change.state,
        attempts=change.attempts or known.attempts,
        result=change.result,
        error=change.error,
        dependencies=change.dependencies or known.dependencies,
        dispatched_at=known.dispatched_at,
        ended_at=change.ended_at,
        executor_id=change.executor_id or known.executor_id,
    )
