"""Running dispatched attempts: claim, heartbeat, invoke, report, acknowledge.

The claim on an attempt is the work-queue delivery itself (measured cheapest: no extra KV
round trip per task, see ARCHITECTURE.md): while the handler runs, ``in_progress()`` heartbeats
keep the delivery ours; if we die, the delivery times out after the lease and JetStream gives
it to another executor. The outcome is published with a deterministic ``Nats-Msg-Id`` *before*
the delivery is acknowledged, so a crash in between repeats the publish (dropped as duplicate),
never loses it. A redelivered dispatch (``num_delivered > 1``) first checks KV: an attempt whose
result is committed never runs again. An attempt of a cancelled run (``core/progress/_cancel``:
a set kept by a KV watch, no read per attempt) is acknowledged unrun, and its handler, if it
runs, is cancelled.

Methods served by remote workers (``_workers.py``) go through the same steps: their fetch loops
pull only while a connected worker has room, and the attempt is handed to the worker instead of
a local handler (no local slot). A worker that goes away mid-attempt hands the delivery back
(``nak``): JetStream redelivers it at once, and the redelivery checks above apply.

The runner owns fetching, slots and the steps of an attempt. Two responsibilities it uses live
beside it, each read on its own: ``_admission.py`` (what settles a delivery before it is claimed:
unreadable, cancelled, held, already done) and ``_claims.py`` (holding a claim: heartbeats, the
lease gap check, giving claims up on cancel or reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from stellwerk.core import names, tracing
from stellwerk.core.acks import hand_back
from stellwerk.core.blobs import BlobStore
from stellwerk.core.errors import StellwerkError
from stellwerk.core.lifecycle import Supervise, cancel_requested
from stellwerk.core.limits import Limits
from stellwerk.core.progress import CancelledRuns
from stellwerk.core.publish import JetStreamWriter
from stellwerk.core.puller import Puller
from stellwerk.core.records import TaskRecord
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore
from stellwerk.executor._admission import Admission, retry_later
from stellwerk.executor._claims import Claim, Claims
from stellwerk.executor._holds import Holds
from stellwerk.executor._outcomes import AttemptInvoker, now_ts
from stellwerk.executor._redelivery import RedeliveryChecks
from stellwerk.executor._reporting import OutcomeReporter, TaskMetrics
from stellwerk.executor._slots import Slots
from stellwerk.executor._workers import WorkerHub, WorkerLostError
from stellwerk.executor.methods import MethodTable
from stellwerk_api.events.v1 import events_pb2

__all__ = ["TaskRunner"]

logger = logging.getLogger(__name__)

_MAX_FETCH = 64
_NO_LOCK = contextlib.nullcontext()


class TaskRunner:
    """Fetch loops (one per method consumer) feeding a bounded pool of running attempts."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        writer: JetStreamWriter,
        table: MethodTable,
        tasks: DocumentStore[TaskRecord],
        settings: Settings,
        executor_id: str,
        max_payload: int,
        metrics: TaskMetrics | None = None,
        workers: WorkerHub | None = None,
        claims: KeyValue | None = None,
        cancelled: CancelledRuns | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.cancelled = cancelled if cancelled is not None else CancelledRuns()
        self.holds = holds if holds is not None else Holds()
        self.cancelled.listen(self._cancel_run)
        self._nc = nc
        self._js = js
        self._workers = workers
        self._redelivery = RedeliveryChecks(js, tasks, lease=settings.task_lease)
        self._invoker = AttemptInvoker(
            table=table,
            workers=workers,
            executor_id=executor_id,
            limits=Limits(max_payload),
            max_deliveries=settings.max_deliveries,
            blobs=BlobStore(js, writer),
            max_result_bytes=settings.max_result_bytes,
        )
        self._reporter = OutcomeReporter(writer, metrics)
        # What settles a delivery before it is claimed lives in ``_admission.py``.
        self._admission = Admission(
            cancelled=self.cancelled,
            holds=self.holds,
            redelivery=self._redelivery,
            reporter=self._reporter,
            executor_id=executor_id,
        )
        self._settings = settings
        self.executor_id = executor_id
        self.slots = Slots(settings.executor_concurrency)
        self._running: dict[asyncio.Task[None], Msg] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._suspects = asyncio.Lock()
        # Keeping claims (heartbeats, losing them) lives in ``_claims.py``; the runner only
        # opens one per attempt and acts on its flags.
        self._claims = Claims(nc=nc, settings=settings, executor_id=executor_id, kv=claims)
        self._pullers: list[Puller] = []
        # local deliveries (by id) that will take a slot and have not yet
        self._unslotted: set[int] = set()

    @property
    def completed(self) -> int:
        """Attempts this executor reported succeeded."""
        return self._reporter.completed

    @property
    def failed(self) -> int:
        """Attempts this executor reported failed."""
        return self._reporter.failed

    @property
    def running(self) -> int:
        """Attempts whose handler is running right now (not those queued for a slot)."""
        return self.slots.in_use

    def start(self, consumers: list[str], supervise: Supervise) -> None:
        """Start one fetch loop per durable consumer, under ``supervise`` (a loop that dies
        would silently stop its method while the executor still advertises it)."""
        for durable in consumers:
            self._loops.append(supervise(self._fetch_loop(durable), name=f"fetch-{durable}"))

    def start_remote(self, durable: str, method: str, supervise: Supervise) -> None:
        """Start the fetch loop of a method served by remote workers; it fetches only while one
        of them has room, and lives as long as the runner (idle while no worker serves it)."""
        loop = self._fetch_loop(durable, remote=method)
        self._loops.append(supervise(loop, name=f"fetch-{durable}"))

    async def stop(self, drain_timeout: float) -> None:
        """Stop fetching; let running attempts finish for up to ``drain_timeout`` seconds, then
        cancel the rest and hand their deliveries back (nak) so another executor takes them now."""
        self._stopping.set()
        for loop in self._loops:
            loop.cancel()
        # nats-py turns a cancelled fetch into TimeoutError; whatever a loop ends with, it ended.
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._running:
            await asyncio.wait(list(self._running), timeout=drain_timeout)
        for task, msg in list(self._running.items()):
            task.cancel()
            with contextlib.suppress(Exception):
                await msg.nak()
        if self._running:
            await asyncio.wait(list(self._running), timeout=5)

    async def _fetch_loop(self, durable: str, *, remote: str | None = None) -> None:
        # Know every cancelled run and open breaker before taking work.
        await asyncio.gather(self.cancelled.loaded(), self.holds.breakers.loaded())
        if remote is None:
            await self._pull_loop(durable)
            return
        sub = await self._js.pull_subscribe_bind(durable, stream=names.DISPATCH_STREAM)
        try:
            while not self._stopping.is_set() and not cancel_requested():
                if remote is not None and self._workers is not None:
                    free = await self._workers.wait_free(remote)
                else:
                    free = await self.slots.wait_free()
                try:
                    msgs = await sub.fetch(batch=min(free, _MAX_FETCH), timeout=1.0)
                except TimeoutError:  # nats-py raises both its own and asyncio's; both mean "none"
                    continue
                except Exception as exc:  # a dead fetch loop would silently stop a method
                    logger.warning("dispatch fetch on %s failed (%s); retrying", durable, exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(tracing.task_span(msg, self._attempt(msg)))
                    self._running[task] = msg
                    task.add_done_callback(self._finished)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull_loop(self, durable: str) -> None:
        """Deliveries of a locally served method through long-lived pull requests
        (``core/puller.py``): room is the free slots less the deliveries still waiting to take
        one."""
        window = min(self.slots.total, _MAX_FETCH)
        puller: Puller

        def room() -> int:
            return min(self.slots.free - len(self._unslotted), window)

        def deliver(msg: Msg) -> None:
            self._unslotted.add(id(msg))
            task = asyncio.create_task(tracing.task_span(msg, self._attempt(msg, puller)))
            self._running[task] = msg
            task.add_done_callback(self._finished)

        puller = Puller(
            self._nc,
            durable,
            stream=names.DISPATCH_STREAM,
            room=room,
            window=window,
            deliver=deliver,
        )
        self._pullers.append(puller)
        try:
            await puller.run(lambda: self._stopping.is_set() or cancel_requested())
        finally:
            self._pullers.remove(puller)

    def _finished(self, task: asyncio.Task[None]) -> None:
        msg = self._running.pop(task, None)
        if msg is not None:
            self._unslotted.discard(id(msg))
        for puller in self._pullers:
            puller.wake()
        if not task.cancelled() and task.exception() is not None:
            logger.error("attempt crashed the runner", exc_info=task.exception())

    async def _attempt(self, msg: Msg, puller: Puller | None = None) -> None:
        admitted = await self._admission.admit(msg)
        if admitted is None:  # answered already: unreadable, cancelled, held or done
            return
        dispatch, params, delivered = admitted.dispatch, admitted.params, admitted.delivered
        claim = self._claims.open(msg, dispatch)
        try:
            # A redelivered attempt may be the one that killed our predecessor: run such
            # suspects one at a time, so a poison task cannot take innocent ones down with it.
            # A retry handed back until due (or held by a breaker) is redelivered without
            # suspicion: those deliveries were no runs (one is taken off the re-run count).
            deferred = self.holds.deferred(dispatch)
            async with self._suspects if delivered > 1 and not deferred else _NO_LOCK:
                if delivered > 1:
                    try:
                        runs = await self._redelivery.count_run(dispatch)
                    except StellwerkError as exc:
                        await retry_later(msg, dispatch, "count the re-run of", exc)
                        return
                    if runs is None:  # committed meanwhile
                        await msg.ack()
                        return
                    runs -= 1 if deferred else 0
                    if runs > self._settings.max_deliveries:
                        poisoned = self._invoker.poisoned(dispatch, runs - 1)
                        await self._reporter.report(dispatch, poisoned)
                        await msg.ack()
                        return
                event = await self._run_claimed(dispatch, params, claim, msg)
        finally:
            self._claims.close(claim)
        if claim.cancelled:
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        if event is None:
            if claim.handed_back and not claim.lost:
                with contextlib.suppress(Exception):
                    await hand_back(msg)  # redelivered at once, to whichever worker has room
            return  # the claim was lost; the redelivery belongs to someone else
        if claim.lost:
            # The handler finished before the claim lapsed: report what it returned (the events
            # stream keeps the first outcome of an attempt, so this cannot overrule another
            # run), then acknowledge, so the message is not handed out again; a redelivery
            # someone already holds finds the outcome in its check.
            logger.warning(
                "lost the claim on %s/%s attempt %d after its handler returned; reporting "
                "its outcome",
                dispatch.run_id,
                dispatch.task_id,
                dispatch.attempt,
            )
            await self._reporter.report(dispatch, event)
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        if self._settings.fault_drop_events and random.random() < self._settings.fault_drop_events:
            logger.warning(
                "fault injection: dropping the outcome of %s/%s attempt %d",
                dispatch.run_id,
                dispatch.task_id,
                dispatch.attempt,
            )
            return  # as if we crashed here: no event, delivery left unacknowledged
        if puller is not None:
            # Its slot is free again: ask for the next delivery now, so the request leaves in
            # the same socket write as the outcome (a chain's next task is on its way).
            with contextlib.suppress(Exception):
                await puller.refill()
        await self._reporter.report(dispatch, event)
        await msg.ack()

    async def _run_claimed(
        self,
        dispatch: events_pb2.TaskDispatch,
        params: dict[str, Any],
        claim: Claim,
        msg: Msg,
    ) -> events_pb2.TaskEvent | None:
        """Queue for a slot, then run the handler; ``None`` if the claim was lost meanwhile.

        A method served by remote workers takes no local slot: the worker is its slot."""
        remote = self._invoker.is_remote(dispatch.method)
        if not remote:
            await self.slots.acquire()
            self._unslotted.discard(id(msg))
        try:
            if claim.lost:  # NATS vanished while we queued for a slot
                return None
            if dispatch.run_id in self.cancelled:  # cancelled while we queued
                claim.cancelled = True
                return None
            started = now_ts()
            invoker = self._invoker
            work = invoker.remote(dispatch) if remote else invoker.local(dispatch, params)
            claim.work = asyncio.create_task(work)
            try:
                event = await claim.work
            except WorkerLostError as exc:
                logger.warning(
                    "%s/%s attempt %d handed back: %s",
                    dispatch.run_id,
                    dispatch.task_id,
                    dispatch.attempt,
                    exc,
                )
                claim.handed_back = True
                return None
            except asyncio.CancelledError:
                if claim.cancelled:
                    logger.info(
                        "cancelled %s/%s attempt %d: its run was cancelled",
                        dispatch.run_id,
                        dispatch.task_id,
                        dispatch.attempt,
                    )
                    return None
                if not claim.lost:
                    raise
                logger.warning(
                    "lost the claim on %s/%s attempt %d (NATS unreachable longer than the "
                    "lease); abandoned it to the executor that gets the redelivery",
                    dispatch.run_id,
                    dispatch.task_id,
                    dispatch.attempt,
                )
                return None
        finally:
            if not remote:
                self.slots.release()
        event.start_time.CopyFrom(started)
        return event

    def _cancel_run(self, run_id: str) -> None:
        """``run_id`` was cancelled: cancel the handlers of its attempts (a plain ``def``
        handler's thread is abandoned, a ``python/execute`` script killed)."""
        self._claims.cancel_run(run_id)

    def note_reconnect(self) -> None:
        """NATS came back: distrust deliveries of messages stored before now (see
        ``RedeliveryChecks.suspicious``)."""
        self._redelivery.note_reconnect()
        for puller in self._pullers:
            puller.forget()

    def drop_claims(self) -> None:
        """NATS reconnected: a restarted server redelivers unacknowledged deliveries within about
        a lease whatever heartbeats it had, so every claim held across the gap may be someone
        else's now. Give them all up (their handlers are cancelled, nothing is reported)."""
        self._claims.drop_all()
