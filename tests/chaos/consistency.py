"""State consistency: for every unfinished task, does KV agree with what the streams hold, and
what will move it on?

KV (read through ``GetRun`` FULL) says where a task is; the two work queues say what is
still in flight: a dispatch message for the task (pending for an executor, or delivered and not
yet acknowledged) or an outcome event (waiting for a resolver). Each unfinished task gets one
*path to progress*:

* ``waiting on dependencies`` — PENDING and some dependency is not settled;
* ``delivery pending`` / ``delivery in progress`` — its dispatch is in the stream, not yet
  delivered / delivered and unacknowledged (an executor runs it, or the lease will expire);
* ``outcome waiting for a resolver`` — its own (or, when PENDING, a dependency's) event is in
  the stream;
* ``reconciler needed`` — nothing in flight would move it: only the reconciler can;
* ``moved on during the check`` — it changed between the KV read and the stream read.

A run whose tasks are all settled but which is not over is classified the same way by the
events of its tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from stellwerk.core import names
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.chaos.workload import METHOD

__all__ = [
    "DELIVERY_IN_PROGRESS",
    "DELIVERY_PENDING",
    "MOVED_ON",
    "OUTCOME_WAITING",
    "RECONCILER_NEEDED",
    "WAITING_ON_DEPENDENCIES",
    "Finding",
    "classify",
    "stream_leftovers",
    "summary",
]

WAITING_ON_DEPENDENCIES = "waiting on dependencies"
DELIVERY_PENDING = "delivery pending"
DELIVERY_IN_PROGRESS = "delivery in progress"
OUTCOME_WAITING = "outcome waiting for a resolver"
RECONCILER_NEEDED = "reconciler needed"
MOVED_ON = "moved on during the check"

SETTLED = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_BLOCKED)
TERMINAL = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED)

ReadRun = Callable[[str], Awaitable[pb.Run]]


@dataclass(frozen=True)
class Finding:
    """One unfinished task (``task`` empty: the run header) and its path to progress."""

    run: str
    task: str
    state: str
    path: str


async def _subjects(js: JetStreamContext, stream: str) -> set[str]:
    info = await js.stream_info(stream, subjects_filter=">")
    return set((info.state.subjects or {}).keys())


class _Outcomes:
    """Which outcomes are stored but maybe not applied yet: the events stream keeps every
    outcome, so "waiting" means above the resolvers' acknowledgement floor (conservative)."""

    def __init__(self, js: JetStreamContext, stored: set[str], floor: int) -> None:
        self._js = js
        self._stored = stored
        self._floor = floor

    @classmethod
    async def read(cls, js: JetStreamContext) -> _Outcomes:
        try:
            info = await js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
        except NotFoundError:
            floor = 0
        return cls(js, await _subjects(js, names.EVENTS_STREAM), floor or 0)

    async def waiting(self, run_id: str, task: pb.TaskRun | None) -> bool:
        if task is None or task.attempts < 1:
            return False
        subject = names.event_subject(run_id, task.task_id, task.attempts)
        if subject not in self._stored:
            return False
        try:
            msg = await self._js.get_last_msg(names.EVENTS_STREAM, subject)
        except NotFoundError:  # the run was removed meanwhile
            return False
        return (msg.seq or 0) > self._floor


async def classify(js: JetStreamContext, runs: Iterable[str], read: ReadRun) -> list[Finding]:
    """Classify every unfinished task of ``runs`` (and every unfinished run with none left)."""
    snapshots = {run_id: await read(run_id) for run_id in runs}
    dispatches = await _subjects(js, names.DISPATCH_STREAM)
    events = await _Outcomes.read(js)
    consumer = await js.consumer_info(names.DISPATCH_STREAM, names.dispatch_consumer(METHOD))
    delivered = consumer.delivered.stream_seq if consumer.delivered else 0
    findings: list[Finding] = []
    for run_id, run in snapshots.items():
        if run.state in TERMINAL:
            continue
        tasks = {t.task_id: t for t in run.tasks}
        open_tasks = [t for t in run.tasks if t.state not in SETTLED]
        for task in open_tasks:
            path = await _path(js, run_id, task, tasks, dispatches, events, delivered)
            findings.append(Finding(run_id, task.task_id, pb.TaskState.Name(task.state), path))
        if not open_tasks:
            waiting = [await events.waiting(run_id, t) for t in tasks.values()]
            path = OUTCOME_WAITING if any(waiting) else RECONCILER_NEEDED
            findings.append(Finding(run_id, "", pb.RunState.Name(run.state), path))
    return await _recheck(findings, snapshots, read)


async def _path(
    js: JetStreamContext,
    run_id: str,
    task: pb.TaskRun,
    tasks: dict[str, pb.TaskRun],
    dispatches: set[str],
    events: _Outcomes,
    delivered: int,
) -> str:
    if task.state == pb.TASK_STATE_PENDING:
        if any(tasks[d].state not in SETTLED for d in task.dependencies if d in tasks):
            return WAITING_ON_DEPENDENCIES
        for dep in task.dependencies:
            if await events.waiting(run_id, tasks.get(dep)):
                return OUTCOME_WAITING
        return RECONCILER_NEEDED
    if await events.waiting(run_id, task):
        return OUTCOME_WAITING
    subject = names.dispatch_subject(METHOD, run_id, task.task_id)
    if subject in dispatches:
        try:
            msg = await js.get_last_msg(names.DISPATCH_STREAM, subject)
        except NotFoundError:  # acknowledged since the stream listing
            return MOVED_ON
        dispatch = events_pb2.TaskDispatch()
        dispatch.ParseFromString(msg.data or b"")
        if dispatch.attempt != task.attempts:
            return RECONCILER_NEEDED  # only a stale attempt's dispatch is in flight
        return DELIVERY_PENDING if (msg.seq or 0) > delivered else DELIVERY_IN_PROGRESS
    return RECONCILER_NEEDED


async def _recheck(
    findings: list[Finding], before: dict[str, pb.Run], read: ReadRun
) -> list[Finding]:
    """Re-read runs with a task seemingly stuck: one that moved on was merely caught mid-step."""
    suspicious = {f.run for f in findings if f.path == RECONCILER_NEEDED}
    after = {run_id: await read(run_id) for run_id in suspicious}
    checked = []
    for f in findings:
        if f.path == RECONCILER_NEEDED and _changed(before[f.run], after[f.run], f.task):
            f = Finding(f.run, f.task, f.state, MOVED_ON)
        checked.append(f)
    return checked


def _changed(old: pb.Run, new: pb.Run, task_id: str) -> bool:
    if not task_id:
        return bool(old.state != new.state)
    was = {t.task_id: (t.state, t.attempts) for t in old.tasks}
    now = {t.task_id: (t.state, t.attempts) for t in new.tasks}
    return was.get(task_id) != now.get(task_id)


def summary(findings: Iterable[Finding]) -> Counter[str]:
    """How many unfinished tasks have each path to progress."""
    return Counter(f.path for f in findings)


async def stream_leftovers(js: JetStreamContext) -> dict[str, int]:
    """Work not done yet: messages in the dispatch queue; outcomes the resolvers have not
    acknowledged (the events stream keeps every outcome, so its size says nothing)."""
    dispatch = await js.stream_info(names.DISPATCH_STREAM)
    try:
        resolvers = await js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
        unapplied = resolvers.num_pending + resolvers.num_ack_pending
    except NotFoundError:
        unapplied = (await js.stream_info(names.EVENTS_STREAM)).state.messages
    return {names.DISPATCH_STREAM: dispatch.state.messages, names.EVENTS_STREAM: unapplied}
