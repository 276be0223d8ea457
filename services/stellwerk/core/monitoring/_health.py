"""The installation's health, read from KV and the streams: progress, queue depth, consistency.

Shared by the monitor (its gauges and ``GetHealthReport``) and the resolver (which answers
``GetHealthReport`` too, so that the CLI needs one address). Never on the hot path: a report
scans the run headers, the tasks of running runs and every Stellwerk consumer.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.kvscan import snapshot
from stellwerk.core.progress import Dispatcher, handoff_unfinished
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import RunRecord, TaskRecord, TaskState, bitmap_test
from stellwerk.core.settings import Settings

__all__ = ["Check", "Health", "Queue", "StuckRun", "assess"]

_DETAILS_SHOWN = 20
# The reconciler acts on tasks older than half the dedup window plus a second; a gap older
# than twice that means no reconciler is repairing it.
_REPAIR_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One health check: its name, whether it passes, a summary and bounded details."""

    name: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Queue:
    """Messages waiting in one consumer."""

    stream: str
    consumer: str
    pending: int
    ack_pending: int

    @property
    def depth(self) -> int:
        """Pending plus unacknowledged."""
        return self.pending + self.ack_pending


@dataclass(frozen=True, slots=True)
class StuckRun:
    """A RUNNING run whose tasks have not moved for ``idle`` seconds."""

    run_id: str
    idle: float


@dataclass
class Health:
    """Everything one assessment found."""

    runs_by_state: Counter[str] = field(default_factory=Counter)
    stuck: list[StuckRun] = field(default_factory=list)
    queues: list[Queue] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Whether every check passes."""
        return all(check.ok for check in self.checks)


async def assess(
    *,
    js: JetStreamContext,
    runs: KeyValue,
    tasks: KeyValue,
    dispatcher: Dispatcher,
    settings: Settings,
    now: float | None = None,
) -> Health:
    """Read KV and the streams once and judge them."""
    now = time.time() if now is None else now
    health = Health()
    running: list[RunRecord] = []
    for data in (await snapshot(runs, "run.*")).values():
        run = RunRecord.from_bytes(data)
        health.runs_by_state[run.state.value] += 1
        if not run.state.ended:  # RUNNING, or COMPENSATING (a saga moves it on)
            running.append(run)
    stale = (settings.dedup_window / 2 + 1.0) * _REPAIR_FACTOR
    for run in running:
        raw = await snapshot(tasks, names.task_prefix(run.id))
        records = {t.id: t for t in (TaskRecord.from_bytes(v) for v in raw.values())}
        # A retry due later is a run waiting by design, not standing still: its due time
        # counts as movement (it is stuck only if nothing happens once the retry is due).
        moved = max(
            [run.created_at, *(t.dispatched_at or 0 for t in records.values())]
            + [t.ended_at or 0 for t in records.values()]
            + [t.retry_at or 0 for t in records.values()]
        )
        if now - moved > settings.stuck_after:
            health.stuck.append(StuckRun(run.id, now - moved))
        health.gaps.extend(await _gaps(run, records, dispatcher, now, stale))
    health.queues = await _queues(js)
    health.checks = [
        _progress_check(health.stuck, settings.stuck_after),
        _queue_check(health.queues, settings.queue_depth_limit),
        _consistency_check(health.gaps),
    ]
    return health


async def _gaps(
    run: RunRecord,
    records: dict[str, TaskRecord],
    dispatcher: Dispatcher,
    now: float,
    stale: float,
) -> list[str]:
    """Tasks between two writes for longer than the reconciler needs to close the gap."""
    found = []
    for task in records.values():
        if task.state is TaskState.DISPATCHED and (task.dispatched_at or now) + stale < now:
            if not await dispatcher.already_sent(task):
                found.append(f"run {run.id} task {task.id!r}: dispatched, but no dispatch or "
                             "outcome is in the streams")  # fmt: skip
        elif task.state.settled and (task.ended_at or now) + stale < now:
            missing = [
                d for d, i in task.dependents
                if d in records and not bitmap_test(records[d].settled_deps, i)
            ]  # fmt: skip
            if task.sink_index is not None and not bitmap_test(run.settled_sinks, task.sink_index):
                missing.append("(the run header)")
            handoff = handoff_unfinished(task, records)
            if handoff is not None:  # its alternative has its place: it was due to start
                missing = [f"its alternative {task.alternative!r}"] if handoff else []
            if missing and not await dispatcher.outcome_waiting(task):
                found.append(
                    f"run {run.id} task {task.id!r}: settled, but {', '.join(missing[:3])} "
                    "never learnt of it"
                )
    return found


async def _queues(js: JetStreamContext) -> list[Queue]:
    found = []
    for stream in (names.DISPATCH_STREAM, names.EVENTS_STREAM):
        try:
            consumers = await js.consumers_info(stream)
        except NATS_FAILURES:
            continue
        for info in consumers:
            if not info.name or info.config.durable_name is None:
                continue  # ephemeral scans, not Stellwerk's own consumers
            found.append(
                Queue(stream, info.name, int(info.num_pending or 0), int(info.num_ack_pending or 0))
            )
    return sorted(found, key=lambda q: (q.stream, q.consumer))


def _bounded(lines: list[str]) -> tuple[str, ...]:
    shown = lines[:_DETAILS_SHOWN]
    if len(lines) > _DETAILS_SHOWN:
        shown.append(f"and {len(lines) - _DETAILS_SHOWN} more")
    return tuple(shown)


def _progress_check(stuck: list[StuckRun], after: float) -> Check:
    if not stuck:
        return Check("progress", True, f"no running run has stood still for {after:g} s")
    lines = [f"run {s.run_id}: no transition for {s.idle:.0f} s" for s in stuck]
    return Check("progress", False, f"{len(stuck)} run(s) stuck", _bounded(lines))


def _queue_check(queues: list[Queue], limit: int) -> Check:
    deep = [q for q in queues if q.depth > limit]
    if not deep:
        return Check("queue_depth", True, f"every consumer holds at most {limit} messages")
    lines = [f"{q.stream}/{q.consumer}: {q.pending} pending, {q.ack_pending} unacked" for q in deep]
    return Check("queue_depth", False, f"{len(deep)} consumer(s) above {limit}", _bounded(lines))


def _consistency_check(gaps: list[str]) -> Check:
    if not gaps:
        return Check("consistency", True, "KV and the streams agree")
    summary = f"{len(gaps)} task(s) left between two writes (is a monitor running?)"
    return Check("consistency", False, summary, _bounded(gaps))
