"""The ``compensate`` failure strategy: a run's saga.

A task under ``on_failure: compensate`` that fails for good (no retry left) starts its run's
saga. The steps, each a compare-and-set or a publish with a deterministic id, so each may run
twice and a crash between two leaves nothing that the next step (or the reconciler) does not
finish:

1. **mark** (:func:`begin_saga`): before the failed task's dependents are settled, the header
   records ``saga_cause`` (RUNNING stays). From then on no normal task starts: a dependent
   made ready settles BLOCKED instead of DISPATCHED (:func:`saga_halt`, read from the cached
   header — a resolver that has not seen the mark yet may still start one, which then runs and
   is compensated like any other completed task). Tasks already dispatched (retries
   included) run to their end.
2. **the normal part ends** (:func:`normal_part_ended`): the write that sets the header's last
   sink bit makes it COMPENSATING instead of FAILED.
3. **advance** (:meth:`Saga.advance`), after each step of the saga: the completed tasks that
   name a ``compensation`` are taken in reverse completion order (``ended_at``, the resolver's
   clock when it recorded COMPLETED; ties by the executor's end time, then id). The first
   whose compensation is PENDING gets it started (PENDING -> DISPATCHED, then its dispatch,
   id ``d:<run>:<task>:1:0``); one that is DISPATCHED is awaited (its retries are its own);
   settled ones (COMPLETED, or FAILED after their retries: reported, never dropped) are
   passed. When all are settled, the header goes COMPENSATING -> COMPENSATED, its error
   naming the compensations that failed.

The saga's progress is the task documents themselves, so repeating :meth:`Saga.advance` changes
nothing: the resolver calls it after applying a compensation's final outcome (or the last sink
of a saga run), the reconciler on every sweep of a COMPENSATING run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from stellwerk.core import names
from stellwerk.core.errors import ConflictError, StellwerkError, TaskError, UnavailableError
from stellwerk.core.limits import clip_error
from stellwerk.core.progress._dispatcher import Dispatcher
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore

__all__ = [
    "COMPENSATE",
    "COMPENSATION",
    "Saga",
    "begin_saga",
    "normal_part_ended",
    "saga_halt",
]

logger = logging.getLogger(__name__)

COMPENSATE = "compensate"
COMPENSATION = "compensation"
_CHUNK = 200  # task documents read side by side


def _starts_saga(task: TaskRecord) -> bool:
    return task.state is TaskState.FAILED and task.on_failure == COMPENSATE


async def begin_saga(runs: DocumentStore[RunRecord], settled: Iterable[TaskRecord]) -> None:
    """Step 1: mark the saga on the header of each run where a task of ``settled`` failed for
    good under ``compensate`` (nothing, and no I/O, for any other task). Called before the
    failed task's dependents and sink are settled, so the run cannot end FAILED first."""
    for task in settled:
        if not _starts_saga(task):
            continue

        def change(run: RunRecord, task: TaskRecord = task) -> RunRecord | None:
            if run.state is not RunState.RUNNING or run.saga_cause is not None:
                return None
            error = clip_error(f"task {task.id!r} failed: {task.error}")
            return run.evolve(saga_cause=task.id, failed=True, error=error)

        await runs.mutate(names.run_key(task.run_id), change)


def saga_halt(runs: DocumentStore[RunRecord], task: TaskRecord) -> TaskRecord | None:
    """``task``, about to start on the normal path, BLOCKED instead when its run's saga has
    begun (as far as the cached header tells); ``None`` when it may start."""
    cached = runs.cached(names.run_key(task.run_id))
    if cached is None or cached.value.saga_cause is None:
        return None
    reason = f"not started: task {cached.value.saga_cause!r} failed under on_failure: compensate"
    return task.evolve(state=TaskState.BLOCKED, error=reason, ended_at=time.time())


def normal_part_ended(run: RunRecord) -> RunRecord:
    """Step 2: the header whose last sink bit is set: COMPENSATING under a saga, else ended."""
    if run.saga_cause is not None:
        return run.evolve(state=RunState.COMPENSATING)
    return run.evolve(
        state=RunState.FAILED if run.failed else RunState.COMPLETED, ended_at=time.time()
    )


def saga_plan(tasks: Iterable[TaskRecord]) -> list[tuple[TaskRecord, str]]:
    """(completed task, its compensation's id), in the order the saga undoes them: reverse
    completion order."""
    done = [t for t in tasks if t.state is TaskState.COMPLETED and t.compensation is not None]

    def completion(task: TaskRecord) -> tuple[float, float, str]:
        executor_end = (task.history[-1].get("end") if task.history else None) or 0.0
        return (task.ended_at or 0.0, float(executor_end), task.id)

    done.sort(key=completion, reverse=True)
    return [(t, t.compensation or "") for t in done]


class Saga:
    """Moves a COMPENSATING run on (step 3 of the module docstring)."""

    def __init__(
        self,
        *,
        tasks: DocumentStore[TaskRecord],
        runs: DocumentStore[RunRecord],
        dispatcher: Dispatcher,
        params: Callable[[TaskRecord], Awaitable[dict[str, Any]]],
    ) -> None:
        self._tasks = tasks
        self._runs = runs
        self._dispatcher = dispatcher
        self._params = params

    async def after(self, settled: list[TaskRecord], *, may_republish: bool) -> None:
        """Advance the sagas that ``settled`` may move: where a compensation settled, or where
        the run's header (as cached once the sinks were set, by this batch or its
        propagation) reads COMPENSATING. No I/O for any other run."""
        due: set[str] = set()
        for task in settled:
            if task.role == COMPENSATION:
                due.add(task.run_id)
            elif task.run_id not in due:
                header = self._runs.cached(names.run_key(task.run_id))
                if header is not None and header.value.state is RunState.COMPENSATING:
                    due.add(task.run_id)
        for run_id in due:
            await self.advance(run_id, may_republish=may_republish)

    async def advance(self, run_id: str, *, may_republish: bool) -> RunRecord | None:
        """Start the next compensation, or end the saga; nothing if the run is not
        COMPENSATING. ``may_republish``: a compensation found DISPATCHED for its first try is
        published again (a crash may have cut its publish short; the dedup window drops a
        repeat). Returns the header as left."""
        key = names.run_key(run_id)
        while True:
            found = await self._runs.get(key, fresh=True)
            if found is None or found.value.state is not RunState.COMPENSATING:
                return None if found is None else found.value
            tasks = await self._run_tasks(run_id)
            active = next(
                (
                    c
                    for _, c_id in saga_plan(tasks.values())
                    if (c := tasks.get(c_id)) is not None and not c.state.settled
                ),
                None,
            )
            if active is None:
                return await self._end(run_id, tasks)
            if active.state is TaskState.PENDING:
                if await self._start(active):
                    return found.value
                continue  # lost a race, or failed at once: read again
            if may_republish and active.generation == 0 and active.retry_at is None:
                data = await self._dispatcher.build(active, await self._params(active))
                await self._dispatcher.publish(active, data)
            return found.value  # one at a time: wait for its outcome

    async def _start(self, compensation: TaskRecord) -> bool:
        """PENDING -> DISPATCHED, then its dispatch: ``True``. ``False`` if another writer
        came first, or if its dispatch cannot be built (a reference that does not resolve,
        too large): then it settles FAILED at once, reported by the saga's end."""
        key = names.task_key(compensation.run_id, compensation.id)
        current = await self._tasks.get(key, fresh=True)
        if current is None or current.value.state is not TaskState.PENDING:
            return False
        task = current.value
        new = task.evolve(
            state=TaskState.DISPATCHED, attempt=task.attempt + 1, dispatched_at=time.time()
        )
        data: bytes | None = None
        try:
            data = await self._dispatcher.build(new, await self._params(new))
        except (TaskError, StellwerkError) as exc:
            if isinstance(exc, UnavailableError):
                raise
            error = clip_error(str(exc))
            new = new.evolve(state=TaskState.FAILED, error=error, ended_at=time.time())
        try:
            await self._tasks.update(key, new, current.revision)
        except ConflictError:
            return False
        if data is None:
            return False
        # Written first: a crash before the publish leaves it DISPATCHED without a dispatch,
        # which the event's redelivery re-publishes (same id) or the reconciler re-dispatches.
        await self._dispatcher.publish(new, data)
        logger.info("saga of run %s: started %s", task.run_id, task.id)
        return True

    async def _end(self, run_id: str, tasks: dict[str, TaskRecord]) -> RunRecord | None:
        """Every compensation due has settled: COMPENSATING -> COMPENSATED, indexed for
        retention."""
        failed = [
            f"{c.id!r} ({c.error})"
            for _, c_id in saga_plan(tasks.values())
            if (c := tasks.get(c_id)) is not None and c.state is not TaskState.COMPLETED
        ]

        def change(run: RunRecord) -> RunRecord | None:
            if run.state is not RunState.COMPENSATING:
                return None
            error = run.error or ""
            if failed:
                error += f"; compensations failed: {', '.join(failed)}"
            return run.evolve(
                state=RunState.COMPENSATED, ended_at=time.time(), error=clip_error(error)
            )

        current, _ = await self._runs.mutate(names.run_key(run_id), change)
        run = current.value
        if run.state is RunState.COMPENSATED and run.ended_at is not None:
            await self._runs.kv.put(names.finished_key(int(run.ended_at), run.id), b"")
        return run

    async def _run_tasks(self, run_id: str) -> dict[str, TaskRecord]:
        """Every task document of the run, read fresh (a saga step is rare: O(tasks))."""
        entry = await self._runs.kv.get(names.order_key(run_id))
        order: list[str] = json.loads(entry.value or b"[]")
        found: dict[str, TaskRecord] = {}
        for start in range(0, len(order), _CHUNK):
            keys = [names.task_key(run_id, t) for t in order[start : start + _CHUNK]]
            for item in await asyncio.gather(*(self._tasks.get(k, fresh=True) for k in keys)):
                if item is not None:
                    found[item.value.id] = item.value
        return found
