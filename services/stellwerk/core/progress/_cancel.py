"""Cancelling runs: the steps (:class:`Canceller`), and which runs are cancelled — a cache of the
``cancel.<run>`` markers kept by a KV watch (:class:`CancelledRuns`).

A cancel is committed by its marker ``cancel.<run>`` in the runs bucket. Resolvers, executors
and monitors watch the markers (``cancel.*``) and keep the ids in memory, so the hot path asks a
set instead of KV (invariant 5): a resolver dispatches no dependent of a cancelled run, an
executor starts no attempt of one and cancels the handlers of its attempts that run, the
reconciler finishes the cancel of a run whose header still reads RUNNING. The set is a cache
(invariant 1): a restarted service rebuilds it from the watch's first pass, which delivers
every marker there is; deleting a marker (the janitor, with the run) removes the id again.
A watch that broke (NATS away) is made anew, which delivers every marker once more. Services
start fetching work only once the first pass is in (:meth:`CancelledRuns.loaded`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.errors import NotFoundError, WrongStateError
from stellwerk.core.kvwatch import follow_keys
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore

__all__ = ["CANCELLED_ERROR", "CancelledRuns", "Canceller"]

CANCELLED_ERROR = "run cancelled"
_CHUNK = 200  # task documents cancelled side by side

logger = logging.getLogger(__name__)


class CancelledRuns:
    """Ids of cancelled runs (a cache of the markers); listeners hear of each new one."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []
        self._renew = asyncio.Event()
        self._loaded = asyncio.Event()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def discard(self, run_id: str) -> None:
        """Forget ``run_id`` (its marker was removed)."""
        self._ids.discard(run_id)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(run_id)`` for every run that becomes cancelled from now on."""
        self._listeners.append(listener)

    def add(self, run_id: str) -> None:
        """Note ``run_id`` as cancelled (from a marker, or a cancel this process committed)."""
        if run_id in self._ids:
            return
        self._ids.add(run_id)
        for listener in self._listeners:
            try:
                listener(run_id)
            except Exception:  # a listener's bug must not stop the watch
                logger.exception("cancel listener failed for run %s", run_id)

    async def loaded(self) -> None:
        """Wait until the watch's first pass has delivered every marker (a service starts no
        work before: a restarted executor must not run a queued attempt of a cancelled run)."""
        await self._loaded.wait()

    def renew(self) -> None:
        """Make the watch anew (after a reconnect: a watch may have missed updates)."""
        self._renew.set()

    async def watch(self, runs_kv: KeyValue) -> None:
        """Follow the markers until cancelled (``core/kvwatch``)."""
        await follow_keys(
            runs_kv,
            names.cancel_key("*"),
            what="cancel markers",
            renew=self._renew,
            put=self._marker_put,
            removed=lambda key: self._ids.discard(_run_of(key)),
            first_pass=self._first_pass,
        )

    def _marker_put(self, key: str, value: bytes) -> bool:
        self.add(_run_of(key))
        return True

    def _first_pass(self, keys: set[str]) -> None:
        self._ids &= {_run_of(k) for k in keys}  # forget markers removed meanwhile
        self._loaded.set()


def _run_of(marker_key: str) -> str:
    return marker_key.rpartition(".")[2]


class Canceller:
    """The steps of a cancel (see ARCHITECTURE.md "Cancelling a run"), each repeatable:

    1. the marker ``cancel.<run>`` — the commit: from the moment it is stored, the watches tell
       every resolver, executor and monitor, and the cancel is finished by whoever gets there
       (the ``CancelRun`` that wrote it, a repeated one, or the reconciler, which finishes the
       cancel of every RUNNING run that has a marker);
    2. the header RUNNING → CANCELLED (a compare-and-set, with the end time);
    3. every task that has not settled → CANCELLED; the end indexed for retention.

    A run that ended COMPLETED or FAILED is refused before the marker is written; one that ends
    so while the marker is written (its last outcome won the race) gets its marker removed.
    """

    def __init__(
        self,
        *,
        runs: DocumentStore[RunRecord],
        tasks: DocumentStore[TaskRecord],
        cancelled: CancelledRuns,
    ) -> None:
        self._runs = runs
        self._tasks = tasks
        self._cancelled = cancelled

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel ``run_id`` (a checked run id); ``WrongStateError`` if it ended otherwise."""
        key = names.run_key(run_id)
        found = await self._runs.get(key, fresh=True)
        if found is None:
            raise NotFoundError(f"no workflow run {run_id}")
        _refuse_ended(found.value)
        await self._runs.kv.put(names.cancel_key(run_id), b"1")  # the commit
        self._cancelled.add(run_id)
        try:
            current, _ = await self._runs.mutate(key, _cancelled_header)
        except WrongStateError:  # it ended meanwhile: no cancel
            await self._runs.kv.delete(names.cancel_key(run_id))
            self._cancelled.discard(run_id)
            raise
        run = current.value
        ended = run.ended_at or time.time()
        await self._cancel_tasks(run_id, ended)
        await self._runs.kv.put(names.finished_key(int(ended), run_id), b"")
        return run

    async def _cancel_tasks(self, run_id: str, at: float) -> None:
        def change(task: TaskRecord) -> TaskRecord | None:
            if task.state.settled:
                return None
            return task.evolve(
                state=TaskState.CANCELLED, error=CANCELLED_ERROR, ended_at=at, retry_at=None
            )

        entry = await self._runs.kv.get(names.order_key(run_id))
        order: list[str] = json.loads(entry.value or b"[]")
        for start in range(0, len(order), _CHUNK):
            keys = [names.task_key(run_id, t) for t in order[start : start + _CHUNK]]
            await asyncio.gather(*(self._tasks.mutate(k, change) for k in keys))


def _refuse_ended(run: RunRecord) -> None:
    if run.state is RunState.COMPENSATING:  # a saga's compensations are never dropped
        raise WrongStateError(f"run {run.id} is compensating; only a running run can be cancelled")
    if run.state.ended and run.state is not RunState.CANCELLED:
        raise WrongStateError(
            f"run {run.id} ended {run.state.value}; only a running run can be cancelled"
        )


def _cancelled_header(run: RunRecord) -> RunRecord | None:
    if run.state is RunState.CANCELLED:
        return None  # cancelled before: what follows may have been cut short
    _refuse_ended(run)
    return run.evolve(
        state=RunState.CANCELLED, ended_at=time.time(), error="cancelled by an operator"
    )
