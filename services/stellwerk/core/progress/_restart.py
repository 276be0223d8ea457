"""Restarting an ended run: ``RetryRun`` (run again what did not complete, or from chosen
tasks) and ``RestoreCheckpoint`` (rewind to a checkpoint) — the steps (see ARCHITECTURE.md
"Re-running and checkpoints"); *what* runs again is ``_rerun``'s.

1. **the commit**: the restart's intent under ``restart.<run>`` in the runs bucket — its number
   n (the header's ``restarts`` + 1), the tasks that run again, the checkpoint (a restore), the
   dispatch stream's sequence at the commit, the old end time, and the request ids of recent
   restarts (idempotency per ``request_id``). A compare-and-set on that key: of two concurrent
   restarts one commits, the other finds the run running.
2. the run's dispatches stored before the commit are purged (a cancelled run may have left
   some queued; the sequence bound spares the restart's own), and the cancel marker removed;
3. each task that runs again is reset, each task a restore rewinds is rewound (one
   compare-and-set per document, skipped when the document already carries restart n);
4. the old end's retention index removed, then the header: RUNNING with ``restarts`` = n and
   the sink bits of what runs again cleared (a compare-and-set, once);
5. the dispatches of the tasks made ready in 3.

A restart whose header still has ``restarts`` < n is unfinished: a repeated call finishes it
before anything else, and so does the reconciler (``Restarter.finish_unfinished``). Every step
is repeatable; the dispatches carry their deterministic ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field

import nats.js.errors as jserr
from nats.js import JetStreamContext

from stellwerk.core import names
from stellwerk.core.checkpoints import CheckpointInfo, CheckpointStore
from stellwerk.core.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    WrongStateError,
    shorten,
)
from stellwerk.core.kvscan import remove, snapshot
from stellwerk.core.progress._apply import Progress
from stellwerk.core.progress._cancel import CancelledRuns, Canceller
from stellwerk.core.progress._inputs import Inputs
from stellwerk.core.progress._rerun import (
    alternatives_of,
    rerun_set,
    reset,
    reset_alternative,
    restarted_header,
    restored,
)
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore

__all__ = ["Restarter"]

logger = logging.getLogger(__name__)

_CHUNK = 200  # task documents written side by side
_REQUESTS_KEPT = 100  # request ids of the latest restarts remembered for idempotency


@dataclass(frozen=True, slots=True)
class _Intent:
    """A committed restart (``restart.<run>``)."""

    n: int
    kind: str  # "retry" | "restore"
    tasks: list[str]
    checkpoint: str = ""
    purge_below: int = 0
    ended_at: float | None = None
    requests: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return json.dumps({"v": 1, **asdict(self)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Intent:
        doc = json.loads(data)
        doc.pop("v", None)
        return cls(**doc)


_RESTARTABLE = frozenset((RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED))


def _refuse_unended(run: RunRecord, what: str) -> None:
    """Only a run that ended COMPLETED, FAILED or CANCELLED restarts (a running one, or one
    whose saga runs or ran, is refused: FAILED_PRECONDITION)."""
    if run.state not in _RESTARTABLE:
        raise WrongStateError(
            f"run {run.id} is {run.state.value.lower()}; only a run that ended completed, "
            f"failed or cancelled can be {what}"
        )


def _request_hash(request_id: str) -> str:
    return hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: str
    tasks: set[str]
    checkpoint: str = ""


class Restarter:
    """Re-runs and restores of runs (see the module docstring)."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        runs: DocumentStore[RunRecord],
        tasks: DocumentStore[TaskRecord],
        progress: Progress,
        cancelled: CancelledRuns,
        canceller: Canceller,
        checkpoints: CheckpointStore,
    ) -> None:
        self._js = js
        self._runs = runs
        self._tasks = tasks
        self._progress = progress
        self._cancelled = cancelled
        self._canceller = canceller
        self._checkpoints = checkpoints
        # Only the inputs of the tasks it re-dispatches, not propagation: ``_inputs.py``.
        self._inputs = Inputs(tasks=tasks, dispatcher=progress.dispatcher)

    async def retry(self, run_id: str, from_ids: Iterable[str], *, request_id: str) -> RunRecord:
        """Run again what did not complete in ended run ``run_id`` (a checked id), and
        ``from_ids`` with everything downstream. ``WrongStateError`` for a running run or when
        nothing would run again; ``NotFoundError`` naming an unknown task."""
        wanted = list(dict.fromkeys(from_ids))

        async def plan(run: RunRecord) -> _Plan:
            _refuse_unended(run, "retried")
            current = await self._documents(run.id)
            unknown = [t for t in wanted if t not in current]
            if unknown:
                raise NotFoundError(
                    f"run {run.id} has no task {shorten(unknown[0])}"
                    + (f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else "")
                )
            chosen = rerun_set(current, wanted)
            if not chosen:
                raise WrongStateError(
                    f"run {run.id} completed every task; name tasks to run again (--from)"
                )
            return _Plan("retry", chosen)

        return await self._restart(run_id, request_id, plan, prepare=None)

    async def restore(self, info: CheckpointInfo, *, request_id: str) -> RunRecord:
        """Rewind the run of checkpoint ``info`` to it and resume it; a running run is first
        cancelled (as by ``CancelRun``)."""
        saved = await self._checkpoints.tasks(info)

        async def prepare(run: RunRecord) -> None:
            if run.state is RunState.RUNNING:
                with contextlib.suppress(WrongStateError):  # it ended meanwhile
                    await self._canceller.cancel(run.id)

        async def plan(run: RunRecord) -> _Plan:
            _refuse_unended(run, "restored")
            return _Plan("restore", rerun_set(saved, ()), checkpoint=info.id)

        return await self._restart(info.run_id, request_id, plan, prepare=prepare)

    async def _restart(
        self,
        run_id: str,
        request_id: str,
        plan: Callable[[RunRecord], Awaitable[_Plan]],
        *,
        prepare: Callable[[RunRecord], Awaitable[None]] | None,
    ) -> RunRecord:
        key = names.restart_key(run_id)
        asked = _request_hash(request_id) if request_id else ""
        for _ in range(20):
            run = await self._header(run_id)
            intent, revision = await self._intent(run_id)
            if intent is not None and intent.n > run.restarts:  # unfinished: finish it first
                await self._finish(run_id, intent)
                continue
            if asked and intent is not None and asked in intent.requests:
                return run  # this request restarted the run before
            if prepare is not None and run.state is RunState.RUNNING:
                await prepare(run)
                continue
            chosen = await plan(run)
            new = _Intent(
                n=run.restarts + 1,
                kind=chosen.kind,
                tasks=sorted(chosen.tasks),
                checkpoint=chosen.checkpoint,
                purge_below=await self._dispatch_sequence() + 1,
                ended_at=run.ended_at,
                requests=[*(intent.requests if intent else []), *([asked] if asked else [])][
                    -_REQUESTS_KEPT:
                ],
            )
            try:  # the commit
                if revision is None:
                    await self._runs.kv.create(key, new.to_bytes())
                else:
                    await self._runs.kv.update(key, new.to_bytes(), last=revision)
            except (jserr.KeyWrongLastSequenceError, jserr.BadRequestError):
                continue  # another restart committed first: look again
            except NATS_FAILURES as exc:
                raise UnavailableError(f"NATS unavailable restarting {run_id}: {exc}") from exc
            logger.info("run %s restart %d (%s): %d tasks", run_id, new.n, new.kind, len(new.tasks))
            await self._finish(run_id, new)
            return await self._header(run_id)
        raise ConflictError(f"run {run_id} keeps changing; try again")

    async def finish_unfinished(self, headers: Iterable[RunRecord]) -> list[str]:
        """The reconciler's part: finish every committed restart whose header does not carry
        it yet (its call died after the commit); returns the runs it moved."""
        intents = await snapshot(self._runs.kv, names.restart_key("*"))
        moved: list[str] = []
        for run in headers:
            data = intents.get(names.restart_key(run.id))
            intent = _Intent.from_bytes(data) if data else None
            if intent is not None and intent.n > run.restarts:
                logger.info("finishing restart %d of run %s", intent.n, run.id)
                await self._finish(run.id, intent)
                moved.append(run.id)
        return moved

    async def _finish(self, run_id: str, intent: _Intent) -> None:
        """Steps 2-5 (each repeatable)."""
        try:
            await self._js.purge_stream(
                names.DISPATCH_STREAM,
                subject=names.run_dispatches_filter(run_id),
                seq=intent.purge_below,
            )
            marker = names.cancel_key(run_id)
            try:
                entry = await self._runs.kv.get(marker)
                if entry.value:
                    await self._runs.kv.delete(marker)
            except jserr.KeyNotFoundError:
                pass
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable restarting {run_id}: {exc}") from exc
        self._cancelled.discard(run_id)
        saved = (
            await self._checkpoints.tasks(await self._checkpoints.require(intent.checkpoint))
            if intent.checkpoint
            else {}
        )
        rerun = set(intent.tasks)
        current = await self._documents(run_id)
        alternatives = alternatives_of(current)
        at = time.time()

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.restart >= intent.n:
                return None  # done before (a repeat)
            if task.id in rerun:
                if task.id in alternatives:
                    return reset_alternative(task, restart=intent.n)
                return reset(task, rerun, restart=intent.n, now=at)
            if task.id in saved:
                return restored(saved[task.id], task, restart=intent.n)
            return None

        ready: list[TaskRecord] = []
        ids = list(current)
        for start in range(0, len(ids), _CHUNK):
            keys = [names.task_key(run_id, t) for t in ids[start : start + _CHUNK]]
            written = await asyncio.gather(*(self._tasks.mutate(k, change) for k in keys))
            for versioned, _ in written:
                task = versioned.value
                if (
                    task.id in rerun
                    and task.restart == intent.n
                    and task.state is TaskState.DISPATCHED
                    and task.generation == 0
                    and task.retry_at is None
                ):
                    ready.append(task)
        if intent.ended_at is not None:  # the old end's retention index (no marker left)
            await remove(self._runs.kv, names.finished_key(int(intent.ended_at), run_id))
        sinks = {
            t.sink_index
            for t in current.values()
            if t.id in rerun and t.sink_index is not None and t.id not in alternatives
        }

        def header(run: RunRecord) -> RunRecord | None:
            if run.restarts >= intent.n:
                return None
            return restarted_header(run, sinks, restart=intent.n, now=time.time())

        updated, _ = await self._runs.mutate(names.run_key(run_id), header)
        run = updated.value
        if run.state is RunState.COMPLETED and run.ended_at is not None:  # nothing runs again
            await self._runs.kv.put(names.finished_key(int(run.ended_at), run_id), b"")
        await asyncio.gather(*(self._dispatch(task) for task in ready))

    async def _dispatch(self, task: TaskRecord) -> None:
        """Publish a ready task's dispatch (large parameters stored out of line, as on the
        normal path); one whose inputs cannot be resolved or sent fails."""
        await self._progress.dispatch_or_fail(task, self._inputs.params(task))

    async def _header(self, run_id: str) -> RunRecord:
        found = await self._runs.get(names.run_key(run_id), fresh=True)
        if found is None:
            raise NotFoundError(f"no workflow run {run_id}")
        return found.value

    async def _intent(self, run_id: str) -> tuple[_Intent | None, int | None]:
        try:
            entry = await self._runs.kv.get(names.restart_key(run_id))
        except jserr.KeyNotFoundError:
            return None, None
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable reading {run_id}: {exc}") from exc
        if not entry.value:
            return None, entry.revision
        return _Intent.from_bytes(entry.value), entry.revision

    async def _dispatch_sequence(self) -> int:
        try:
            info = await self._js.stream_info(names.DISPATCH_STREAM)
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable: {exc}") from exc
        return int(info.state.last_seq)

    async def _documents(self, run_id: str) -> dict[str, TaskRecord]:
        """The run's task documents, fresh from KV, by id in document order."""
        entry = await self._runs.kv.get(names.order_key(run_id))
        order: list[str] = json.loads(entry.value or b"[]")
        found: dict[str, TaskRecord] = {}
        for start in range(0, len(order), _CHUNK):
            chunk = order[start : start + _CHUNK]
            docs = await asyncio.gather(
                *(self._tasks.get(names.task_key(run_id, t), fresh=True) for t in chunk)
            )
            found.update((d.value.id, d.value) for d in docs if d is not None)
        return found
