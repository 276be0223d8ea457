"""``ExplainRun``: for every task of a run that has not ended, what it waits for.

Everything comes from KV and the streams, read fresh: the task documents (dependencies, state,
attempt), the dispatch stream (is the attempt's dispatch still there; has the method's consumer
delivered it), the events stream (has the attempt reported), the claims bucket (which executor
heartbeats the attempt, and when its lease lapses). Never on the hot path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum

import nats.js.errors as jserr
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.jetstream import last_message
from stellwerk.core.progress import Dispatcher
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import RunRecord, TaskRecord, TaskState, retry_waiting

__all__ = ["Explainer", "Explanation", "Wait", "explain"]


class Wait(StrEnum):
    """What holds a task (the contract's ``WaitReason``)."""

    DEPENDENCIES = "DEPENDENCIES"
    QUEUED = "QUEUED"
    CLAIMED = "CLAIMED"
    RETRY = "RETRY"
    BREAKER = "BREAKER"  # set by _breakers.held_by_breakers
    BLOCKED = "BLOCKED"
    LOST = "LOST"
    REPORTED = "REPORTED"


@dataclass
class Explanation:
    """Why one task has not ended."""

    task_id: str
    state: TaskState
    reason: Wait
    summary: str
    waiting_for: list[str] = field(default_factory=list)
    since: float | None = None
    executor_id: str = ""
    until: float | None = None
    queue_position: int = 0


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


async def explain(
    run: RunRecord,
    tasks: list[TaskRecord],
    *,
    js: JetStreamContext,
    claims: KeyValue,
    dispatcher: Dispatcher,
    lease: float,
) -> list[Explanation]:
    """One explanation per task that has not completed or failed, in file order."""
    by_id = {t.id: t for t in tasks}
    found = []
    for task in tasks:
        if task.state is TaskState.PENDING:
            found.append(_pending(task, by_id))
        elif task.state is TaskState.BLOCKED:
            found.append(_blocked(task, by_id))
        elif retry_waiting(task, time.time()) and task.retry_at is not None:
            found.append(_retry(task, task.retry_at))
        elif task.state is TaskState.DISPATCHED:
            found.append(await _dispatched(task, js, claims, dispatcher, lease))
    return found


@dataclass(frozen=True, slots=True)
class Explainer:
    """:func:`explain` with the handles it needs."""

    js: JetStreamContext
    claims: KeyValue
    dispatcher: Dispatcher
    lease: float

    async def __call__(self, run: RunRecord, tasks: list[TaskRecord]) -> list[Explanation]:
        return await explain(
            run,
            tasks,
            js=self.js,
            claims=self.claims,
            dispatcher=self.dispatcher,
            lease=self.lease,
        )


def _retry(task: TaskRecord, due: float) -> Explanation:
    """An attempt failed and the next one waits for its due time (its dispatch is in the
    stream, handed back by executors until then)."""
    failed = task.history[-1] if task.history else {}
    return Explanation(
        task.id,
        task.state,
        Wait.RETRY,
        f"attempt {task.attempt - 1} failed ({failed.get('error') or task.error}); attempt "
        f"{task.attempt} is due at {_clock(due)}",
        since=failed.get("end"),
        until=due,
    )


def _pending(task: TaskRecord, by_id: dict[str, TaskRecord]) -> Explanation:
    unfinished = [d for d in task.dependencies if d in by_id and not by_id[d].state.settled]
    listed = ", ".join(unfinished[:10]) + (
        f" and {len(unfinished) - 10} more" * (len(unfinished) > 10)
    )
    return Explanation(
        task.id,
        task.state,
        Wait.DEPENDENCIES,
        f"waits for {listed}" if unfinished else "its dependencies are settled; dispatch follows",
        waiting_for=unfinished,
    )


def _blocked(task: TaskRecord, by_id: dict[str, TaskRecord]) -> Explanation:
    """Blocked: name the failed task at the root, following blocked dependencies up."""
    culprit, seen = task, set()
    while culprit.state is TaskState.BLOCKED and culprit.id not in seen:
        seen.add(culprit.id)
        ends = [by_id[d] for d in culprit.dependencies if d in by_id]
        bad = [d for d in ends if d.state in (TaskState.FAILED, TaskState.BLOCKED)]
        if not bad:
            break
        failed = [d for d in bad if d.state is TaskState.FAILED]
        culprit = (failed or bad)[0]
    root = culprit.id if culprit is not task else "?"
    return Explanation(
        task.id,
        task.state,
        Wait.BLOCKED,
        f"will not run: {root} failed" + (f" ({culprit.error})" if culprit.error else ""),
        waiting_for=[root],
        since=task.ended_at,
    )


async def _dispatched(
    task: TaskRecord,
    js: JetStreamContext,
    claims: KeyValue,
    dispatcher: Dispatcher,
    lease: float,
) -> Explanation:
    if await dispatcher.outcome_stored(task):
        return Explanation(
            task.id,
            task.state,
            Wait.REPORTED,
            f"attempt {task.attempt} has reported; a resolver applies its outcome next",
            since=task.dispatched_at,
        )
    subject = names.dispatch_subject(task.method, task.run_id, task.id)
    message = await last_message(js, names.DISPATCH_STREAM, subject)
    if message is None:
        return Explanation(
            task.id,
            task.state,
            Wait.LOST,
            "dispatched, but neither its dispatch nor an outcome is in the streams; the "
            "reconciler re-sends it (is a monitor running?)",
            since=task.dispatched_at,
        )
    queued_at = message.time.timestamp() if message.time is not None else task.dispatched_at
    try:
        info = await js.consumer_info(names.DISPATCH_STREAM, names.dispatch_consumer(task.method))
    except (jserr.NotFoundError, *NATS_FAILURES):
        info = None
    delivered = (
        info is not None
        and info.delivered is not None
        and ((message.seq or 0) <= (info.delivered.stream_seq or 0))
    )
    if not delivered:
        waiting = int(info.num_pending or 0) if info is not None else 0
        who = "no executor serves it yet" if info is None else f"{waiting} waiting"
        return Explanation(
            task.id,
            task.state,
            Wait.QUEUED,
            f"queued since {_clock(queued_at or time.time())} for {task.method} ({who})",
            since=queued_at,
            queue_position=waiting,
        )
    return await _claimed(task, claims, lease, queued_at)


async def _claimed(
    task: TaskRecord, claims: KeyValue, lease: float, queued_at: float | None
) -> Explanation:
    record: dict[str, object] = {}
    try:
        entry = await claims.get(names.claim_key(task.run_id, task.id))
        record = json.loads(entry.value or b"{}")
    except (jserr.KeyNotFoundError, ValueError):
        record = {}
    beat = record.get("beat_at")
    if record.get("attempt") == task.attempt and isinstance(beat, int | float):
        executor = str(record.get("executor", ""))
        until = float(beat) + float(str(record.get("lease", lease)))
        lapsed = until < time.time()
        state = "lapsed at" if lapsed else "lease until"
        return Explanation(
            task.id,
            task.state,
            Wait.CLAIMED,
            f"claimed by {executor}, last heartbeat {_clock(float(beat))}, {state} {_clock(until)}"
            + ("; another executor gets it next" if lapsed else ""),
            since=queued_at,
            executor_id=executor,
            until=until,
        )
    return Explanation(
        task.id,
        task.state,
        Wait.CLAIMED,
        f"delivered to an executor (attempt {task.attempt}); it has not heartbeated yet, so its "
        f"lease lapses at most {lease:g} s after delivery if it died",
        since=queued_at,
    )
