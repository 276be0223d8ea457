"""Settling what follows from settled tasks: dependents' bits, the dispatches they make ready,
the sinks' bits that end a run.

Each step is a compare-and-set on one document and idempotent; the work is O(out-degree) per
settled task, and a failure spreads BLOCKED along dependents through the same steps.

Two things this uses live beside it: resolving a ready dependent's parameters from its
dependencies' results (``_inputs.py``, also used by the restarter) and the generic shapes of
running steps side by side (``_concurrency.py``; ``awaited_in_turn`` and ``run_all`` are still
exported here).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
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
from stellwerk.core.progress._concurrency import awaited_in_turn, run_all, side_by_side
from stellwerk.core.progress._dispatcher import Dispatcher
from stellwerk.core.progress._inputs import Inputs
from stellwerk.core.progress._saga import begin_saga, normal_part_ended, saga_halt
from stellwerk.core.progress._strategies import (
    handed_off,
    settle_failure,
)
from stellwerk.core.records import (
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
    bitmap_count,
    bitmap_set,
    bitmap_test,
)
from stellwerk.core.store import DocumentStore

__all__ = ["Propagation", "awaited_in_turn", "run_all"]

logger = logging.getLogger(__name__)


def _blocked_reason(dep: TaskRecord) -> str:
    """Why a dependent of ``dep`` cannot run, naming the task that failed in the first place."""
    if dep.state is TaskState.BLOCKED and dep.error:
        return dep.error  # already names the root cause
    return clip_error(f"dependency {dep.id!r} {dep.state.lower()}: {dep.error}")


class Propagation:
    """Propagates settled tasks to their dependents and runs (see the module docstring).

    :class:`~stellwerk.core.progress.Progress` holds one and adds applying outcomes."""

    def __init__(
        self,
        *,
        tasks: DocumentStore[TaskRecord],
        runs: DocumentStore[RunRecord],
        dispatcher: Dispatcher,
        cancelled: CancelledRuns | None = None,
    ) -> None:
        self._tasks = tasks
        self._runs = runs
        self._dispatcher = dispatcher
        self._cancelled = cancelled if cancelled is not None else CancelledRuns()
        # Reading dependencies' results for the dispatches built here is ``_inputs.py``'s.
        self._inputs = Inputs(tasks=tasks, dispatcher=dispatcher)

    async def propagate(self, settled: TaskRecord, *, may_republish: bool) -> None:
        """Settle the dependents (and the run, for sinks) of a settled task."""
        await self.propagate_many([settled], may_republish=may_republish)

    async def propagate_many(
        self, settled: list[TaskRecord], *, may_republish: bool, with_sinks: bool = True
    ) -> None:
        """Settle the dependents and sinks of settled tasks, one write per touched document;
        dependents this settles without running (BLOCKED, FAILED) propagate in the next round.
        ``settled`` may hold outcomes not yet recorded on their own documents (they are
        committed in the events stream): dependents take their inputs from them, and with
        ``with_sinks=False`` their sink bits are left to the caller, for after that record."""
        known: dict[tuple[str, str], TaskRecord] = {}
        worklist = settled
        first_round = True
        while worklist:
            await begin_saga(self._runs, worklist)  # before its failure blocks anything
            groups: dict[tuple[str, str], list[tuple[TaskRecord, int]]] = defaultdict(list)
            sinks: dict[str, list[TaskRecord]] = defaultdict(list)
            handoffs: list[TaskRecord] = []
            for task in worklist:
                known[(task.run_id, task.id)] = task
                if handed_off(task):  # its alternative takes its place (dependents, sink)
                    handoffs.append(task)
                    continue
                for dependent, index in task.dependents:
                    groups[(task.run_id, dependent)].append((task, index))
                if task.sink_index is not None and (with_sinks or not first_round):
                    sinks[task.run_id].append(task)
            first_round = False
            results = await side_by_side(
                *(
                    self._settle_dependency(
                        run_id, task_id, items, may_republish=may_republish, known=known
                    )
                    for (run_id, task_id), items in groups.items()
                ),
                *(self._settle_sinks(run_id, tasks) for run_id, tasks in sinks.items()),
                *(
                    self._start_alternative(task, may_republish=may_republish, known=known)
                    for task in handoffs
                ),
            )
            for result in results:
                if isinstance(result, Exception):
                    raise result
            worklist = [r for r in results if isinstance(r, TaskRecord)]

    async def _settle_dependency(
        self,
        run_id: str,
        task_id: str,
        items: list[tuple[TaskRecord, int]],
        *,
        may_republish: bool,
        known: Mapping[tuple[str, str], TaskRecord],
    ) -> TaskRecord | None:
        """Set the bits of settled dependencies ``items`` on ``task_id``; returns the dependent if
        this settled it without running it (BLOCKED, or FAILED on an unresolvable reference).

        Nothing for a cancelled run: ``CancelRun`` settles its tasks CANCELLED itself."""
        if run_id in self._cancelled:
            return None
        key = names.task_key(run_id, task_id)
        fresh = False
        while True:
            current = await self._tasks.get(key, fresh=fresh)
            if current is None:
                return None
            task = current.value
            if task.state is TaskState.CANCELLED:  # its run was cancelled: it stays so
                return None
            current_items = [(d, i) for d, i in items if d.restart >= task.restart]  # else stale
            new_items = [(d, i) for d, i in current_items if not bitmap_test(task.settled_deps, i)]
            if not new_items:
                if not fresh:  # the cache's word; a restart may have reset the task
                    fresh = True
                    continue
                return await self._already_settled(task, may_republish=may_republish)
            bits, failed, error = task.settled_deps, task.dep_failed, task.error
            for dep, index in new_items:
                bits = bitmap_set(bits, index)
                if not dep.state.lets_dependents_run and not failed:
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
                new, dispatch = await self._ready(task.evolve(settled_deps=bits), known)
            written = await self._store(key, new, current.revision, dispatch, may_republish)
            if written is None:
                fresh = True
                continue
            return written if isinstance(written, TaskRecord) else None

    async def _ready(
        self, task: TaskRecord, known: Mapping[tuple[str, str], TaskRecord]
    ) -> tuple[TaskRecord, bytes | None]:
        """``task`` DISPATCHED for its first attempt with its dispatch; or, when that cannot
        be built (a reference that does not resolve, a message too large), settled as failed
        (by its failure strategy) without one; BLOCKED when its run's saga has begun."""
        if (halted := saga_halt(self._runs, task)) is not None:
            return halted, None
        attempt = task.attempt + 1  # a re-run goes on from its last attempt (RetryRun)
        new = task.evolve(state=TaskState.DISPATCHED, attempt=attempt, dispatched_at=time.time())
        try:
            return new, await self._dispatcher.build(new, await self._inputs.params(new, known))
        except (TaskError, StellwerkError) as exc:
            if isinstance(exc, UnavailableError):
                raise
            failed = new.evolve(
                state=TaskState.FAILED, error=clip_error(str(exc)), ended_at=time.time()
            )
            return settle_failure(failed), None

    async def _store(
        self, key: str, new: TaskRecord, revision: int, dispatch: bytes | None, may_republish: bool
    ) -> TaskRecord | bool | None:
        """Write ``new`` at ``revision`` and publish ``dispatch`` if any. ``None`` when the
        write lost a race (re-read and decide again); ``new`` when this settled it without
        running (its propagation is due); else ``False``."""
        if dispatch is not None and may_republish:
            if await self._record_and_dispatch(key, new, revision, dispatch):
                return False
            return None
        try:
            await self._tasks.update(key, new, revision)
        except ConflictError:
            return None
        if dispatch is not None:
            # Off the hot path (an old event, or recovery): an earlier pass may have sent
            # this dispatch beyond the dedup window's reach; never send it twice.
            if not await self._dispatcher.already_sent(new):
                await self._dispatcher.publish(new, dispatch)
            return False
        return new if new.state.settled else False

    async def _start_alternative(
        self,
        failed: TaskRecord,
        *,
        may_republish: bool,
        known: Mapping[tuple[str, str], TaskRecord],
    ) -> TaskRecord | None:
        """Hand a task that failed for good over to its alternative: PENDING -> DISPATCHED
        with its dispatch (a compare-and-set; found started, only what may have been cut short
        is redone). Returns the alternative if this settled it without running."""
        if failed.run_id in self._cancelled:  # CancelRun settles its tasks itself
            return None
        key = names.task_key(failed.run_id, failed.alternative or "")
        fresh = False
        while True:
            current = await self._tasks.get(key, fresh=fresh)
            if current is None:
                return None
            task = current.value
            if task.restart > failed.restart:  # ``failed`` predates the restart: stale
                return None
            if task.state is not TaskState.PENDING:
                if not fresh:  # the cache's word; a restart may have reset the task
                    fresh = True
                    continue
                return await self._already_settled(task, may_republish=may_republish)
            new, dispatch = await self._ready(task, known)
            written = await self._store(key, new, current.revision, dispatch, may_republish)
            if written is None:
                fresh = True
                continue
            return written if isinstance(written, TaskRecord) else None

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
        written_now = await self._tasks.send_update(key, new, revision)
        try:
            published_now = await self._dispatcher.send(new, dispatch)
        except BaseException:
            written_now.close()
            raise
        written, published = await awaited_in_turn(written_now, published_now)
        if isinstance(published, Exception):
            raise published
        if isinstance(written, ConflictError):
            return False
        if isinstance(written, Exception):
            raise written
        return True

    async def params(
        self, task: TaskRecord, known: Mapping[tuple[str, str], TaskRecord] | None = None
    ) -> dict[str, Any]:
        """``task``'s params with its references resolved (see ``_inputs.Inputs.params``)."""
        return await self._inputs.params(task, known)

    async def _already_settled(self, task: TaskRecord, *, may_republish: bool) -> TaskRecord | None:
        """Our bit was set before — by us before a crash, or by a duplicate. Redo what may have
        been cut short: the dispatch publish, or the propagation of a BLOCKED/FAILED dependent."""
        if not may_republish:
            return None
        if task.state is TaskState.DISPATCHED and task.generation == 0 and task.retry_at is None:
            # Re-read: if recovery re-dispatched it meanwhile, our generation-0 copy is stale.
            fresh = await self._tasks.get(names.task_key(task.run_id, task.id), fresh=True)
            if (
                fresh is None
                or fresh.value.generation != 0
                or fresh.value.state is not TaskState.DISPATCHED
            ):
                return None
            data = await self._dispatcher.build(fresh.value, await self._inputs.params(fresh.value))
            await self._dispatcher.publish(fresh.value, data)
            return None
        if task.state in (TaskState.BLOCKED, TaskState.FAILED, TaskState.SKIPPED):
            return task
        return None

    async def settle_sinks_of(self, settled: list[TaskRecord]) -> None:
        """Set the sink bits of the sinks among ``settled`` in their runs' headers."""
        by_run: dict[str, list[TaskRecord]] = defaultdict(list)
        for task in settled:
            if task.sink_index is not None:
                by_run[task.run_id].append(task)
        await run_all(*(self._settle_sinks(run_id, tasks) for run_id, tasks in by_run.items()))

    async def _settle_sinks(self, run_id: str, tasks: list[TaskRecord]) -> None:
        key = names.run_key(run_id)

        def change(run: RunRecord) -> RunRecord | None:
            if run.state is not RunState.RUNNING:  # cancelled: it ended so
                return None
            current = [t for t in tasks if t.restart >= run.restarts]  # older copies: stale
            fresh = [t for t in current if not bitmap_test(run.settled_sinks, t.sink_index or 0)]
            if not fresh:
                return None
            bits, failed, error = run.settled_sinks, run.failed, run.error
            for task in fresh:
                bits = bitmap_set(bits, task.sink_index or 0)
                if not task.state.lets_dependents_run:
                    failed = True
                    if error is None:
                        error = clip_error(f"task {task.id!r} {task.state.lower()}: {task.error}")
            new = run.evolve(settled_sinks=bits, failed=failed, error=error)
            if bitmap_count(bits) == run.sink_count:
                new = normal_part_ended(new)  # COMPENSATING under a saga
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
