"""What a task outcome does to its run: record it, settle its dependents, dispatch the ready ones.

An outcome read from the events stream is final (the stream keeps the first per attempt). Each
step is a compare-and-set on one document, and each is idempotent, so handling the same event
twice (a redelivery after a crash) changes nothing:

1. the task's own document goes DISPATCHED -> COMPLETED/FAILED, for the attempt it is on;
2. side by side with 1, each dependent gets this task's bit set in its ``settled_deps`` bitmap;
   the write that sets the last bit also makes it DISPATCHED (or BLOCKED when a dependency
   failed), and its dispatch is published alongside that write (``core/progress/_propagate``);
3. after 1, a sink sets its bit in the run header; the write that sets the last bit ends the
   run, so a run reads as ended only once its tasks' documents say so.

The work is O(out-degree) per event; a failure spreads BLOCKED along dependents through the same
steps. A crash between any two steps leaves the event unacknowledged; its redelivery repeats the
steps, and each finds its work done or does it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from stellwerk.core import names
from stellwerk.core.errors import (
    ConflictError,
    NotFoundError,
    StellwerkError,
    TaskError,
    UnavailableError,
)
from stellwerk.core.limits import clip_error
from stellwerk.core.progress._cancel import CancelledRuns
from stellwerk.core.progress._concurrency import awaited_in_turn
from stellwerk.core.progress._dispatcher import Dispatcher
from stellwerk.core.progress._outcome import TOO_EARLY, Commit, Outcome, TooEarly, recorded
from stellwerk.core.progress._propagate import Propagation
from stellwerk.core.progress._saga import Saga
from stellwerk.core.progress._strategies import settle_failure
from stellwerk.core.records import RunRecord, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore, Versioned

__all__ = ["Progress"]

logger = logging.getLogger(__name__)


class _AskKv:
    """The cache cannot decide an outcome alone."""


_ASK_KV = _AskKv()


@dataclass(frozen=True, slots=True)
class _Resend:
    """The outcome's retry was recorded before: its dispatch may still be unpublished."""

    task: TaskRecord


def _decision(
    key: str, current: Versioned[TaskRecord], outcome: Outcome
) -> Commit | TaskRecord | TooEarly | _Resend | None:
    """What ``outcome`` means for its task: the write that records it, the task as recorded
    before (its consequences may still be due), its retry recorded before (its dispatch may
    still be due), ``TOO_EARLY`` if the task's dispatch is not recorded yet, or ``None`` when
    nothing follows."""
    task = current.value
    if not task.state.settled and outcome.attempt == task.attempt + 1:
        return TOO_EARLY  # its dispatch (a first one, or a retry) overtook the write recording it
    if (
        task.state is TaskState.DISPATCHED
        and task.attempt == outcome.attempt + 1
        and task.retry_at is not None
        and task.generation == 0
    ):
        return _Resend(task)  # its retry was recorded before (by us before a crash?)
    if task.attempt != outcome.attempt:
        return None  # a late result of an attempt that is no longer current
    if task.state.settled:
        return task  # recorded before (maybe by us, before a crash): finish what follows
    if task.state is not TaskState.DISPATCHED:
        return None
    return Commit(key, current.revision, outcome, recorded(task, outcome))


class Progress:
    """Applies outcomes to the KV documents of their runs; what follows from a settled task
    (dependents, dispatches, sinks) is its :class:`Propagation`'s work."""

    def __init__(
        self,
        *,
        tasks: DocumentStore[TaskRecord],
        runs: DocumentStore[RunRecord],
        dispatcher: Dispatcher,
        cancelled: CancelledRuns | None = None,
    ) -> None:
        self._tasks = tasks
        self._dispatcher = dispatcher
        self._propagation = Propagation(
            tasks=tasks, runs=runs, dispatcher=dispatcher, cancelled=cancelled
        )
        self.saga = Saga(
            tasks=tasks, runs=runs, dispatcher=dispatcher, params=self._propagation.params
        )
        """Moves runs in a saga on (``on_failure: compensate``; the reconciler uses it too)."""

    @property
    def dispatcher(self) -> Dispatcher:
        """Where this progress publishes dispatches."""
        return self._dispatcher

    async def propagate(self, settled: TaskRecord, *, may_republish: bool) -> None:
        """Settle the dependents (and the run, for sinks) of a task recorded as settled (the
        reconciler's repair of a propagation cut short)."""
        await self._propagation.propagate(settled, may_republish=may_republish)

    async def apply(self, outcome: Outcome, *, may_republish: bool) -> bool:
        """Record ``outcome`` and everything that follows from it (see :meth:`apply_many`);
        ``False`` if it came too early and must be offered again later."""
        return not await self.apply_many([outcome], may_republish=may_republish)

    async def apply_many(self, outcomes: list[Outcome], *, may_republish: bool) -> list[Outcome]:
        """Record several outcomes and everything that follows from them.

        An outcome that reaches us is committed already: the events stream keeps only the first
        outcome of each attempt. So its task's own document, its dependents' bits and the
        dispatches they make ready are written side by side — one round trip, not three — and
        a dependent's inputs come from the outcomes in hand. Grouped, so a batch costs one
        compare-and-set per touched document: twenty tasks of a fan-in finishing together set
        their twenty bits on the join in one write. ``may_republish`` allows re-sending a
        dispatch found written but maybe not published; callers pass it only while JetStream's
        dedup window still covers the original publish.

        Returns the outcomes that came too early: their task's dispatch is published together
        with the write that records it, so an outcome can overtake that write. The caller offers
        them again shortly (they are not lost, and not wrongly ignored).
        """
        unique: dict[tuple[str, str, int], Outcome] = {}
        for outcome in outcomes:  # repeats of one attempt are redeliveries of one message
            unique.setdefault((outcome.run_id, outcome.task_id, outcome.attempt), outcome)
        distinct = list(unique.values())
        if self._dispatcher.large is not None:  # a stored result must be there (forgeries)
            distinct = await self._dispatcher.large.confirmed(distinct)
        # Most outcomes are decided by the cache alone; only the rest cost a task and a read.
        decided: list[Commit | TaskRecord | TooEarly | _Resend | _AskKv | None] = [
            self._decide_cached(o) for o in distinct
        ]
        undecided = [i for i, d in enumerate(decided) if d is _ASK_KV]
        if undecided:
            found = await asyncio.gather(*(self._decide(distinct[i]) for i in undecided))
            for i, d in zip(undecided, found, strict=True):
                decided[i] = d
        early = [o for o, d in zip(distinct, decided, strict=True) if d is TOO_EARLY]
        # Measured before anything is written or propagated: a record that cannot be stored
        # turns into a failure, and the dependents must see that failure, not the result.
        commits = [self._fitted(d) for d in decided if isinstance(d, Commit)]
        retries: list[tuple[TaskRecord, bytes]] = []
        if any(not c.record.state.settled for c in commits):  # failures with attempts left
            commits = [await self._with_retry(c, retries) for c in commits]
        commits = [self._strategy_applied(c) for c in commits]
        if may_republish:
            for resend in decided:
                if isinstance(resend, _Resend):
                    data = await self._retry_dispatch(resend.task)
                    if isinstance(data, bytes):  # else the reconciler's redispatch fails it
                        retries.append((resend.task, data))
        settled = [d.record for d in commits if d.record.state.settled]
        settled += [d for d in decided if isinstance(d, TaskRecord)]
        # A retry's write and its dispatch go out side by side, like a dependent's (the
        # dispatch carries its due time; executors hand it back until then). The tasks' own
        # writes and the retries' dispatches are sent first and awaited last: on a chain they
        # leave in one socket write with the dependent's write and dispatch.
        sent: list[Coroutine[Any, Any, None]] = []
        try:
            for commit in commits:
                sent.append(self._write(commit, await self._send(commit)))
            for task, data in retries:
                sent.append(await self._dispatcher.send(task, data))
        except BaseException:
            for step in sent:
                step.close()
            raise
        propagated: BaseException | None = None
        try:
            await self._propagation.propagate_many(
                settled, may_republish=may_republish, with_sinks=False
            )
        except Exception as exc:  # the writes sent are awaited all the same
            propagated = exc
        except BaseException:
            for step in sent:
                step.close()
            raise
        for result in await awaited_in_turn(*sent):
            if isinstance(result, Exception):
                raise result
        if propagated is not None:
            raise propagated
        # Sinks last: the write that ends a run comes after its tasks' own documents, so a
        # reader that sees the run ended also sees every result.
        await self._propagation.settle_sinks_of(settled)
        await self.saga.after(settled, may_republish=may_republish)  # compensations due
        return early

    async def _retry_dispatch(self, task: TaskRecord) -> bytes | str:
        """The dispatch of ``task``'s retry, or why it cannot be built (a reference that does
        not resolve, a message too large)."""
        try:
            return await self._dispatcher.build(task, await self._propagation.params(task))
        except (TaskError, StellwerkError) as exc:
            if isinstance(exc, UnavailableError):
                raise
            return str(exc)

    async def _with_retry(self, commit: Commit, retries: list[tuple[TaskRecord, bytes]]) -> Commit:
        """``commit`` if it settles its task; a retry with its dispatch added to ``retries``;
        or, when the retry cannot be dispatched, the task's failure saying why (not retried:
        the same inputs would fail the same way)."""
        record = commit.record
        if record.state.settled:
            return commit
        data = await self._retry_dispatch(record)
        if isinstance(data, bytes):
            retries.append((record, data))
            return commit
        failed = record.evolve(
            state=TaskState.FAILED,
            attempt=record.attempt - 1,
            retry_at=None,
            ended_at=time.time(),
            error=clip_error(f"{record.error}; not retried: {data}"),
        )
        return self._fitted(replace(commit, record=failed, data=None))

    def _strategy_applied(self, commit: Commit) -> Commit:
        """``commit`` with its task's failure strategy applied to a final failure
        (``_strategies.settle_failure``: SKIPPED under ``skip``)."""
        record = settle_failure(commit.record)
        if record is commit.record:
            return commit
        return self._fitted(replace(commit, record=record, data=None))

    def _decide_cached(self, outcome: Outcome) -> Commit | TaskRecord | _AskKv:
        """:func:`_decision` on the cached document, where that is decisive (the common case):
        an outcome is never ignored or deferred on the word of the cache."""
        key = names.task_key(outcome.run_id, outcome.task_id)
        cached = self._tasks.cached(key)
        decision = None if cached is None else _decision(key, cached, outcome)
        return decision if isinstance(decision, Commit | TaskRecord) else _ASK_KV

    async def _decide(self, outcome: Outcome) -> Commit | TaskRecord | TooEarly | _Resend | None:
        """:func:`_decision` on a fresh read (the cache could not decide)."""
        key = names.task_key(outcome.run_id, outcome.task_id)
        current = await self._tasks.get(key, fresh=True)
        if current is None:
            # No document read: a replica that has not caught up answered (direct gets; a
            # cluster node that just rejoined), or the run was removed (the janitor purges its
            # events too). Ignored, the outcome of a task that exists would be lost; offered
            # again instead, like one that overtook its dispatch's write (a forged one is
            # dropped after its bounded offers).
            logger.info(
                "outcome for %s/%s before its document can be read; offered again",
                outcome.run_id,
                outcome.task_id,
            )
            return TOO_EARLY
        return _decision(key, current, outcome)

    def _fitted(self, commit: Commit) -> Commit:
        """``commit`` with its record encoded (the write needs those bytes anyway); a record
        that cannot be stored — too large for one message, say a result beyond what the
        submit left room for, or not encodable — is replaced by the task's failure saying
        why. Every resolver decides alike from the same outcome and document, and the event
        is applied instead of being redelivered for ever."""
        record = commit.record
        limit = self._dispatcher.limits.message
        try:
            data = record.to_bytes()
            if len(data) <= limit:
                return replace(commit, data=data)
            reason = (
                f"the task document with this outcome would be {len(data):,} bytes; this "
                f"deployment stores at most {limit:,} bytes per task document (NATS "
                f"max_payload {self._dispatcher.max_payload:,} bytes)"
            )
        except (TypeError, ValueError) as exc:  # orjson and json refuse it (lone surrogates)
            reason = f"the outcome cannot be stored: {exc}"
        logger.warning("%s failed: %s", commit.key, reason)
        failed = record.evolve(
            state=TaskState.FAILED, result=None, has_result=False, error=clip_error(reason)
        )
        return replace(commit, record=failed, data=failed.to_bytes())

    async def _send(self, commit: Commit) -> Coroutine[Any, Any, Versioned[TaskRecord]]:
        """The first compare-and-set of :meth:`_write`, sent now."""
        return await self._tasks.send_update(
            commit.key, commit.record, commit.revision, encoded=commit.data
        )

    async def _write(
        self, commit: Commit, sent: Coroutine[Any, Any, Versioned[TaskRecord]] | None = None
    ) -> None:
        """Record a committed outcome on its task's document (a compare-and-set, re-applied
        on a fresh copy when something else — a re-run count, a re-dispatch — wrote first);
        ``sent``: its first compare-and-set, sent already (:meth:`_send`)."""
        record, revision, data = commit.record, commit.revision, commit.data
        while True:
            try:
                if sent is not None:
                    first, sent = sent, None
                    await first
                else:
                    await self._tasks.update(commit.key, record, revision, encoded=data)
                return
            except ConflictError:
                current = await self._tasks.get(commit.key, fresh=True)
            if current is None:
                return
            task = current.value
            if task.state.settled or task.attempt != commit.outcome.attempt:
                if task.state.settled and task.state is not record.state:
                    logger.warning("%s was recorded %s; its stored outcome says %s",
                                   commit.key, task.state, record.state)  # fmt: skip
                return
            # Recorded as first decided (a failure for a record that did not fit).
            again = recorded(task, commit.outcome)
            if commit.record.state is not again.state:
                again = commit.record  # decided otherwise (a failure: did not fit, no retry)
            fitted = self._fitted(replace(commit, record=again, revision=current.revision))
            record, revision, data = fitted.record, fitted.revision, fitted.data

    async def dispatch_or_fail(self, task: TaskRecord, params: Awaitable[dict[str, Any]]) -> bool:
        """Publish ``task``'s dispatch with ``params`` (its resolved inputs, stored out of line
        when too large for one message); a dispatch that cannot be built — a reference that
        does not resolve, a message beyond every limit — fails the task instead, not retried
        (the same inputs would fail the same way). Returns whether it was dispatched."""
        try:
            data = await self._dispatcher.build(task, await params)
        except (TaskError, StellwerkError) as exc:
            if isinstance(exc, UnavailableError):
                raise
            await self.apply(
                Outcome(
                    run_id=task.run_id,
                    task_id=task.id,
                    attempt=task.attempt,
                    succeeded=False,
                    error=str(exc),
                    retryable=False,
                ),
                may_republish=False,
            )
            return False
        await self._dispatcher.publish(task, data)
        return True

    async def redispatch(self, observed: TaskRecord) -> bool:
        """Recovery: re-send a dispatch that was lost, under a new generation so JetStream's dedup
        window cannot drop it. Only one caller wins the compare-and-set; returns whether we did."""
        key = names.task_key(observed.run_id, observed.id)

        def change(task: TaskRecord) -> TaskRecord | None:
            if (
                task.state is not TaskState.DISPATCHED
                or task.attempt != observed.attempt
                or task.generation != observed.generation
            ):
                return None
            return task.evolve(generation=task.generation + 1, dispatched_at=time.time())

        try:
            current, wrote = await self._tasks.mutate(key, change)
        except NotFoundError:
            return False
        if not wrote:
            return False
        task = current.value
        if not await self.dispatch_or_fail(task, self._propagation.params(task)):
            return True
        logger.info(
            "re-dispatched %s/%s attempt %d as generation %d",
            task.run_id,
            task.id,
            task.attempt,
            task.generation,
        )
        return True
