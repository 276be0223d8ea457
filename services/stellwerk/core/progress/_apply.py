"""What a task outcome does to its run: commit it, settle its dependents, dispatch the ready ones.

Each step is a compare-and-set on one document, and each is idempotent, so handling the same
event twice (a redelivery after a crash, a republished duplicate) changes nothing:

1. the task's own document goes DISPATCHED -> COMPLETED/FAILED, only for the attempt it is on —
   the first result per (task, attempt) wins, later ones are ignored;
2. each dependent gets this task's bit set in its ``settled_deps`` bitmap; the write that sets the
   last bit also makes it DISPATCHED (or BLOCKED when a dependency failed), and the dispatch is
   published after that write;
3. a sink sets its bit in the run header; the write that sets the last bit ends the run.

The work is O(out-degree) per event; a failure spreads BLOCKED along dependents through the same
steps. A crash between any two steps leaves the event unacknowledged; its redelivery repeats the
steps, and each finds its work done or does it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from stellwerk.core import names
from stellwerk.core.errors import (
    ConflictError,
    NotFoundError,
    StellwerkError,
    TaskError,
    UnavailableError,
)
from stellwerk.core.progress._dispatcher import Dispatcher, resolve_params
from stellwerk.core.records import (
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
    bitmap_count,
    bitmap_set,
    bitmap_test,
)
from stellwerk.core.store import DocumentStore, Versioned

__all__ = ["Outcome", "Progress"]

logger = logging.getLogger(__name__)


def _blocked_reason(dep: TaskRecord) -> str:
    """Why a dependent of ``dep`` cannot run, naming the task that failed in the first place."""
    if dep.state is TaskState.BLOCKED and dep.error:
        return dep.error  # already names the root cause
    return f"dependency {dep.id!r} {dep.state.lower()}: {dep.error}"


class _TooEarly:
    """Marks an outcome whose task is not recorded as dispatched yet."""


_TOO_EARLY = _TooEarly()


class Outcome:
    """A reported result of one attempt (decoded from a ``TaskEvent``)."""

    __slots__ = ("attempt", "error", "executor_id", "result", "run_id", "succeeded", "task_id")

    def __init__(
        self,
        *,
        run_id: str,
        task_id: str,
        attempt: int,
        succeeded: bool,
        result: Any = None,
        error: str | None = None,
        executor_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.succeeded = succeeded
        self.result = result
        self.error = error
        self.executor_id = executor_id


class Progress:
    """Applies outcomes to the KV documents of their runs."""

    def __init__(
        self,
        *,
        tasks: DocumentStore[TaskRecord],
        runs: DocumentStore[RunRecord],
        dispatcher: Dispatcher,
    ) -> None:
        self._tasks = tasks
        self._runs = runs
        self._dispatcher = dispatcher

    @property
    def dispatcher(self) -> Dispatcher:
        """Where this progress publishes dispatches."""
        return self._dispatcher

    async def apply(self, outcome: Outcome, *, may_republish: bool) -> bool:
        """Record ``outcome`` and everything that follows from it (see :meth:`apply_many`);
        ``False`` if it came too early and must be offered again later."""
        return not await self.apply_many([outcome], may_republish=may_republish)

    async def apply_many(self, outcomes: list[Outcome], *, may_republish: bool) -> list[Outcome]:
        """Record several outcomes and everything that follows from them.

        Grouped, so a batch costs one compare-and-set per touched document: twenty tasks of a
        fan-in finishing together set their twenty bits on the join in one write.
        ``may_republish`` allows re-sending a dispatch found written but maybe not published;
        callers pass it only while JetStream's dedup window still covers the original publish.

        Returns the outcomes that came too early: their task's dispatch is published together
        with the write that records it, so an outcome can overtake that write. The caller offers
        them again shortly (they are not lost, and not wrongly ignored).
        """
        first: dict[tuple[str, str], Outcome] = {}
        repeats: list[Outcome] = []
        for outcome in outcomes:
            key = (outcome.run_id, outcome.task_id)
            if key in first:
                repeats.append(outcome)
            else:
                first[key] = outcome
        committed = list(await asyncio.gather(*(self._commit(o) for o in first.values())))
        for outcome in repeats:  # duplicates within one batch: after the first, one by one
            committed.append(await self._commit(outcome))
        ordered = [*first.values(), *repeats]
        early = [o for o, c in zip(ordered, committed, strict=True) if c is _TOO_EARLY]
        settled = [c for c in committed if isinstance(c, TaskRecord)]
        await self.propagate_many(settled, may_republish=may_republish)
        return early

    async def _commit(self, outcome: Outcome) -> TaskRecord | _TooEarly | None:
        """Commit ``outcome`` on its task (first result per attempt wins); returns the settled
        task whose consequences must follow, ``_TOO_EARLY`` if the task's dispatch is not
        recorded yet, or ``None`` when nothing follows."""
        key = names.task_key(outcome.run_id, outcome.task_id)
        fresh = False
        while True:
            current = await self._tasks.get(key, fresh=fresh)
            if current is None:
                logger.info(
                    "outcome for unknown task %s/%s ignored", outcome.run_id, outcome.task_id
                )
                return None
            task = current.value
            decisive = task.state.settled or (
                task.state is TaskState.DISPATCHED and task.attempt == outcome.attempt
            )
            if not decisive and not fresh:
                # Our cached copy may predate another resolver's writes: never ignore an
                # outcome on the word of the cache.
                fresh = True
                continue
            if task.state is TaskState.PENDING and outcome.attempt == task.attempt + 1:
                return _TOO_EARLY  # its dispatch overtook the write that records it
            if task.attempt != outcome.attempt:
                return None  # a late result of an attempt that is no longer current
            if task.state.settled:
                return task  # committed before (maybe by us, before a crash): finish what follows
            if task.state is not TaskState.DISPATCHED:
                return None
            committed = task.evolve(
                state=TaskState.COMPLETED if outcome.succeeded else TaskState.FAILED,
                result=outcome.result if outcome.succeeded else None,
                has_result=outcome.succeeded,
                error=None if outcome.succeeded else (outcome.error or "task failed"),
                executor_id=outcome.executor_id,
                ended_at=time.time(),
            )
            try:
                return (await self._tasks.update(key, committed, current.revision)).value
            except ConflictError:
                fresh = True

    async def propagate(self, settled: TaskRecord, *, may_republish: bool) -> None:
        """Settle the dependents (and the run, for sinks) of a settled task."""
        await self.propagate_many([settled], may_republish=may_republish)

    async def propagate_many(self, settled: list[TaskRecord], *, may_republish: bool) -> None:
        """Settle the dependents and sinks of settled tasks, one write per touched document;
        dependents this settles without running (BLOCKED, FAILED) propagate in the next round."""
        worklist = settled
        while worklist:
            groups: dict[tuple[str, str], list[tuple[TaskRecord, int]]] = defaultdict(list)
            sinks: dict[str, list[TaskRecord]] = defaultdict(list)
            for task in worklist:
                for dependent, index in task.dependents:
                    groups[(task.run_id, dependent)].append((task, index))
                if task.sink_index is not None:
                    sinks[task.run_id].append(task)
            results = await asyncio.gather(
                *(
                    self._settle_dependency(run_id, task_id, items, may_republish=may_republish)
                    for (run_id, task_id), items in groups.items()
                )
            )
            await asyncio.gather(
                *(self._settle_sinks(run_id, tasks) for run_id, tasks in sinks.items())
            )
            worklist = [r for r in results if r is not None]

    async def _settle_dependency(
        self,
        run_id: str,
        task_id: str,
        items: list[tuple[TaskRecord, int]],
        *,
        may_republish: bool,
    ) -> TaskRecord | None:
        """Set the bits of settled dependencies ``items`` on ``task_id``; returns the dependent if
        this settled it without running it (BLOCKED, or FAILED on an unresolvable reference)."""
        key = names.task_key(run_id, task_id)
        fresh = False
        while True:
            current = await self._tasks.get(key, fresh=fresh)
            if current is None:
                return None
            task = current.value
            new_items = [(d, i) for d, i in items if not bitmap_test(task.settled_deps, i)]
            if not new_items:
                return await self._already_settled(task, may_republish=may_republish)
            bits, failed, error = task.settled_deps, task.dep_failed, task.error
            for dep, index in new_items:
                bits = bitmap_set(bits, index)
                if dep.state is not TaskState.COMPLETED and not failed:
                    failed, error = True, _blocked_reason(dep)
            dispatch: bytes | None = None
            if bitmap_count(bits) < len(task.dependencies):
                new = task.evolve(settled_deps=bits, dep_failed=failed, error=error)
            elif failed:
                new = task.evolve(
                    settled_deps=bits,
                    dep_failed=True,
                    state=TaskState.BLOCKED,
                    error=error,
                    ended_at=time.time(),
                )
            else:
                new = task.evolve(
                    settled_deps=bits,
                    state=TaskState.DISPATCHED,
                    attempt=1,
                    dispatched_at=time.time(),
                )
                try:
                    dispatch = self._dispatcher.encode(new, await self._params(new))
                except (TaskError, StellwerkError) as exc:
                    if isinstance(exc, UnavailableError):
                        raise
                    new = new.evolve(state=TaskState.FAILED, error=str(exc), ended_at=time.time())
                    dispatch = None
            if dispatch is not None and may_republish:
                if await self._record_and_dispatch(key, new, current.revision, dispatch):
                    return None
                fresh = True
                continue
            try:
                await self._tasks.update(key, new, current.revision)
            except ConflictError:
                fresh = True
                continue
            if dispatch is not None:
                # Off the hot path (an old event, or recovery): an earlier pass may have sent
                # this dispatch beyond the dedup window's reach; never send it twice.
                if not await self._dispatcher.already_sent(new):
                    await self._dispatcher.publish(new, dispatch)
                return None
            return new if new.state.settled else None

    async def _record_and_dispatch(
        self, key: str, new: TaskRecord, revision: int, dispatch: bytes
    ) -> bool:
        """Write the DISPATCHED document and publish its dispatch at once: one round trip on the
        critical path instead of two. Returns ``False`` when the write lost a race (the caller
        re-reads and decides again).

        Publishing before the write is known to stick is safe because a dependency's bits only
        grow and its inputs are committed already: whoever wins the race dispatches the same
        attempt under the same message id, which JetStream drops as a duplicate. If the write
        fails for good, the event is redelivered and repeats both; an outcome that overtakes the
        write is deferred by the resolver, not dropped (see ``Progress.apply_many``)."""
        written, published = await asyncio.gather(
            self._tasks.update(key, new, revision),
            self._dispatcher.publish(new, dispatch),
            return_exceptions=True,
        )
        if isinstance(published, BaseException):
            raise published
        if isinstance(written, ConflictError):
            return False
        if isinstance(written, BaseException):
            raise written
        return True

    async def _already_settled(self, task: TaskRecord, *, may_republish: bool) -> TaskRecord | None:
        """Our bit was set before — by us before a crash, or by a duplicate. Redo what may have
        been cut short: the dispatch publish, or the propagation of a BLOCKED/FAILED dependent."""
        if not may_republish:
            return None
        if task.state is TaskState.DISPATCHED and task.generation == 0 and task.attempt == 1:
            # Re-read: if recovery re-dispatched it meanwhile, our generation-0 copy is stale.
            fresh = await self._tasks.get(names.task_key(task.run_id, task.id), fresh=True)
            if (
                fresh is None
                or fresh.value.generation != 0
                or fresh.value.state is not TaskState.DISPATCHED
            ):
                return None
            data = self._dispatcher.encode(fresh.value, await self._params(fresh.value))
            await self._dispatcher.publish(fresh.value, data)
            return None
        if task.state in (TaskState.BLOCKED, TaskState.FAILED):
            return task
        return None

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
        try:
            data = self._dispatcher.encode(task, await self._params(task))
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
                ),
                may_republish=False,
            )
            return True
        await self._dispatcher.publish(task, data)
        logger.info(
            "re-dispatched %s/%s attempt %d as generation %d",
            task.run_id,
            task.id,
            task.attempt,
            task.generation,
        )
        return True

    async def _params(self, task: TaskRecord) -> dict[str, Any]:
        targets = sorted(set(task.refs.values()))
        outputs: dict[str, Any] = {}
        if targets:  # most tasks reference nothing: no gather for them
            found = await asyncio.gather(*(self._completed(task.run_id, t) for t in targets))
            outputs = {
                t: (doc.value.result if doc is not None else None)
                for t, doc in zip(targets, found, strict=True)
            }
        return resolve_params(task, outputs.__getitem__)

    async def _completed(self, run_id: str, task_id: str) -> Versioned[TaskRecord] | None:
        """A dependency's document with its result: the cache only if it already holds it."""
        key = names.task_key(run_id, task_id)
        cached = await self._tasks.get(key)
        if cached is not None and cached.value.state is TaskState.COMPLETED:
            return cached
        return await self._tasks.get(key, fresh=True)

    async def _settle_sinks(self, run_id: str, tasks: list[TaskRecord]) -> None:
        key = names.run_key(run_id)

        def change(run: RunRecord) -> RunRecord | None:
            fresh = [t for t in tasks if not bitmap_test(run.settled_sinks, t.sink_index or 0)]
            if not fresh:
                return None
            bits, failed, error = run.settled_sinks, run.failed, run.error
            for task in fresh:
                bits = bitmap_set(bits, task.sink_index or 0)
                if task.state is not TaskState.COMPLETED:
                    failed = True
                    if error is None:
                        error = f"task {task.id!r} {task.state.lower()}: {task.error}"
            new = run.evolve(settled_sinks=bits, failed=failed, error=error)
            if bitmap_count(bits) == run.sink_count:
                new = new.evolve(
                    state=RunState.FAILED if new.failed else RunState.COMPLETED,
                    ended_at=time.time(),
                )
            return new

        try:
            current, _ = await self._runs.mutate(key, change)
        except NotFoundError:
            logger.warning("run %s vanished while its tasks settled", run_id)
            return
        run = current.value
        if run.state is not RunState.RUNNING and run.ended_at is not None:
            # Index the end for the retention janitor (idempotent: the key is derived from the run).
            await self._runs.kv.put(names.finished_key(int(run.ended_at), run.id), b"")
