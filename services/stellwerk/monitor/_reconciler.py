"""Finding runs that a crash left between two writes, and moving them on.

A sweep looks at every RUNNING run and, for each task, asks whether something is still on its way
to move it: a dispatch waiting or held in ``STELLWERK_DISPATCH``, or an outcome waiting in
``STELLWERK_EVENTS`` (both are looked up by the task's own subject). Two gaps need action:

- DISPATCHED, but neither a dispatch nor an outcome exists: the dispatch was lost (a crash between
  the state write and the publish, or its message vanished). Re-dispatch it under the next
  generation, so JetStream's dedup window cannot drop the re-send.
- settled, but a dependent lacks its bit (or the header lacks its sink bit) and no outcome is
  waiting: the propagation was cut short. Propagate again (idempotent).

Before those, restarts (RetryRun, RestoreCheckpoint) committed but not finished — their intent
``restart.<run>`` ahead of the header's ``restarts`` — are finished (``Restarter``).
A COMPENSATING run (``on_failure: compensate``) has its saga moved on first
(``Saga.advance``: the next compensation started, or the saga ended), then the same checks.

Both act only on tasks older than ``stale_after``: half the dedup window plus a margin. The
resolver re-sends a cut-short dispatch only while its event is younger than half the window, so the
two never re-send the same attempt at once. Every action is a compare-and-set or idempotent, so
several monitors may sweep concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.errors import WrongStateError
from stellwerk.core.kvscan import list_keys, snapshot
from stellwerk.core.progress import (
    CancelledRuns,
    Canceller,
    Progress,
    Restarter,
    handoff_unfinished,
)
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState, bitmap_test
from stellwerk.core.settings import Settings

__all__ = ["Reconciler", "SweepReport"]

logger = logging.getLogger(__name__)

_MARGIN = 1.0


@dataclass
class SweepReport:
    """What one sweep saw and did."""

    runs: int = 0
    redispatched: int = 0
    repropagated: int = 0
    moved_runs: set[str] = field(default_factory=set)
    """Runs this sweep had to move on (they count as stuck until the next sweep)."""


class Reconciler:
    """Re-drives stuck runs; see the module docstring."""

    def __init__(
        self,
        *,
        runs: KeyValue,
        tasks: KeyValue,
        progress: Progress,
        settings: Settings,
        canceller: Canceller | None = None,
        cancelled: CancelledRuns | None = None,
        restarter: Restarter | None = None,
    ) -> None:
        self._restarter = restarter
        self._runs = runs
        self._tasks = tasks
        self._progress = progress
        self._canceller = canceller
        self._cancelled = cancelled if cancelled is not None else CancelledRuns()
        self.stale_after = settings.dedup_window / 2 + _MARGIN

    async def sweep(self, *, now: float | None = None) -> SweepReport:
        """One pass over the running runs."""
        now = time.time() if now is None else now
        report = SweepReport()
        headers = [RunRecord.from_bytes(d) for d in (await snapshot(self._runs, "run.*")).values()]
        if self._restarter is not None:  # restarts cut short after their commit: finish them
            restarted = await self._restarter.finish_unfinished(headers)
            report.moved_runs.update(restarted)  # their headers changed: next sweep's
            headers = [h for h in headers if h.id not in restarted]
        for run in headers:
            if run.state is RunState.COMPENSATING:  # a saga: its steps, then lost dispatches
                report.runs += 1
                await self._progress.saga.advance(run.id, may_republish=False)
                await self._reconcile_run(run, now, report)
                continue
            if run.state is not RunState.RUNNING:
                continue
            report.runs += 1
            if run.id in self._cancelled and await self._marker_stands(run.id):
                # Its cancel was cut short after the commit (and no restart removed it): finish
                if self._canceller is not None:
                    logger.info("finishing the cancel of run %s", run.id)
                    with contextlib.suppress(WrongStateError):  # it ended first
                        await self._canceller.cancel(run.id)
                    report.moved_runs.add(run.id)
                continue
            await self._reconcile_run(run, now, report)
        return report

    async def _marker_stands(self, run_id: str) -> bool:
        """Whether ``run_id``'s cancel marker is in KV (a restart removes it; our set hears of
        that through a watch, which may lag behind the restarted header)."""
        return bool(await list_keys(self._runs, names.cancel_key(run_id)))

    async def _reconcile_run(self, run: RunRecord, now: float, report: SweepReport) -> None:
        raw = await snapshot(self._tasks, names.task_prefix(run.id))
        tasks = {t.id: t for t in (TaskRecord.from_bytes(v) for v in raw.values())}
        for task in tasks.values():
            if task.state is TaskState.DISPATCHED:
                if (task.dispatched_at or 0) + self.stale_after > now:
                    continue
                if await self._progress.dispatcher.already_sent(task):
                    continue
                if await self._progress.redispatch(task):
                    report.redispatched += 1
                    report.moved_runs.add(run.id)
            elif task.state.settled and self._unpropagated(task, tasks, run):
                if (task.ended_at or 0) + self.stale_after > now:
                    continue
                if await self._progress.dispatcher.outcome_waiting(task):
                    continue
                logger.info("re-propagating %s/%s", run.id, task.id)
                await self._progress.propagate(task, may_republish=False)
                report.repropagated += 1
                report.moved_runs.add(run.id)

    @staticmethod
    def _unpropagated(task: TaskRecord, tasks: dict[str, TaskRecord], run: RunRecord) -> bool:
        handoff = handoff_unfinished(task, tasks)
        if handoff is not None:  # its alternative has its place: was it started?
            return handoff
        for dependent, index in task.dependents:
            other = tasks.get(dependent)
            if other is not None and not bitmap_test(other.settled_deps, index):
                return True
        return task.sink_index is not None and not bitmap_test(run.settled_sinks, task.sink_index)
