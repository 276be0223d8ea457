"""Consuming task events: fetch continuously, apply each run's events in batches.

Events of different runs are applied concurrently (up to ``max_in_flight`` messages held);
events of one run by one worker, which takes every event of that run that queued up while it
was busy and applies them together (one compare-and-set per touched document, see
``Progress.apply_many``). The fetch loop does not wait for any of it, so one slow run does not
delay the others, and under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from stellwerk.core import names, tracing
from stellwerk.core.acks import hand_back
from stellwerk.core.jetstream import delivery_of
from stellwerk.core.lifecycle import cancel_requested
from stellwerk.core.metrics import LATENCY_BUCKETS, Counter, Histogram, Registry
from stellwerk.core.progress import Outcome, Progress, decode_outcome, unreadable_outcome
from stellwerk.resolver._resilience import ResolutionGuard

__all__ = ["EventConsumer", "EventMetrics"]

logger = logging.getLogger(__name__)

_FETCH_BATCH = 256
_EARLY_MAX_DELIVERIES = 300


@dataclass(frozen=True, slots=True)
class EventMetrics:
    """What the resolver measures about the events it applies."""

    resolution: Histogram
    lag: Histogram
    applied: Counter
    retries: Counter

    @classmethod
    def create(cls, registry: Registry) -> EventMetrics:
        """Register the resolver's event metrics in ``registry``."""
        return cls(
            resolution=registry.histogram(
                "stellwerk_dependency_resolution_seconds",
                "Per task event: from its receipt to the acknowledged dispatch of the "
                "dependents it made ready (dependency-resolution latency)",
            ),
            lag=registry.histogram(
                "stellwerk_event_processing_lag_seconds",
                "Per task event: from its storage in the events stream to its receipt by a "
                "resolver (event processing lag)",
                buckets=(*LATENCY_BUCKETS[:-1], 5.0, 10.0, 30.0, 60.0, 300.0),
            ),
            applied=registry.counter(
                "stellwerk_events_applied", "Task events applied to their runs"
            ),
            retries=registry.counter(
                "stellwerk_resolution_retries",
                "Task events whose application must be tried again, in place or handed back "
                "(NATS unavailable, a compare-and-set lost too often, a pass that failed, or an "
                "outcome ahead of its dispatch record)",
            ),
        )


class EventConsumer:
    """Feeds the ``resolver`` durable consumer's events to :class:`Progress`."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        progress: Progress,
        dedup_window: float,
        metrics: EventMetrics,
        guard: ResolutionGuard,
        max_in_flight: int = 512,
    ) -> None:
        self._guard = guard  # retries in place, breakers (_resilience.py)
        self._js = js
        self._progress = progress
        self._dedup_window = dedup_window
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._queues: dict[str, list[tuple[Msg, float]]] = {}
        self._held = 0

    async def run(self) -> None:
        """Consume until cancelled; in-flight events are then left to finish or be redelivered."""
        sub = await self._js.pull_subscribe_bind(
            names.RESOLVER_CONSUMER, stream=names.EVENTS_STREAM
        )
        try:
            while not cancel_requested():
                free = self._max_in_flight - self._held
                if free <= 0:
                    self._room.clear()
                    await self._room.wait()
                    continue
                try:
                    msgs = await sub.fetch(batch=min(free, _FETCH_BATCH), timeout=1.0)
                except TimeoutError:  # nats-py raises both its own and asyncio's; both mean "none"
                    continue
                except Exception as exc:  # the loop must outlive any hiccup of NATS
                    logger.warning("event fetch failed (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                received = time.perf_counter()
                self._held += len(msgs)
                wall = time.time()
                for msg in msgs:
                    stored_at = delivery_of(msg).stored_at
                    if stored_at is not None:
                        self._metrics.lag.observe(max(0.0, wall - stored_at))
                    run_id = names.run_of_event_subject(msg.subject)
                    queue = self._queues.get(run_id)
                    if queue is not None:  # that run's worker is busy: it takes this one next
                        queue.append((msg, received))
                        continue
                    self._queues[run_id] = [(msg, received)]
                    worker = asyncio.create_task(self._drain(run_id))
                    self._in_flight.add(worker)
                    worker.add_done_callback(self._done)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=5)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()

    async def _drain(self, run_id: str) -> None:
        """Apply the run's queued events, batch after batch, until none are left."""
        queue = self._queues[run_id]
        try:
            while queue:
                batch = queue[:]
                queue.clear()
                try:
                    with tracing.resolving(batch):  # a stellwerk.resolve span (tracing on)
                        await self._apply(batch)
                finally:
                    self._held -= len(batch)
                    self._room.set()
        finally:
            del self._queues[run_id]

    async def _apply(self, batch: list[tuple[Msg, float]]) -> None:
        readable: list[tuple[Msg, float, Outcome]] = []
        max_result = self._progress.dispatcher.limits.result
        max_stored = self._progress.dispatcher.max_stored
        for msg, received in batch:
            try:
                outcome = decode_outcome(msg.data, max_result=max_result, max_stored=max_stored)
                readable.append((msg, received, outcome))
            except (ValueError, UnicodeDecodeError) as exc:
                # Being the first event of its attempt, it is that attempt's outcome: failing
                # the task settles the run; dropping it would leave the run waiting for ever.
                failed = unreadable_outcome(msg.subject, str(exc))
                logger.error("unreadable task event on %s: %s", msg.subject, exc)
                if failed is not None:
                    readable.append((msg, received, failed))
                    continue
                with contextlib.suppress(Exception):
                    await msg.term()
        if not readable:
            return
        oldest = min(
            (t for t in (delivery_of(m).stored_at for m, _, _ in readable) if t is not None),
            default=time.time(),
        )
        run_id = readable[0][2].run_id
        held = self._guard.held(run_id)
        if held is not None:  # the run's resolution breaker is open: back after its cool-down
            await _hand_back([msg for msg, _, _ in readable], held)
            return
        outcomes = [outcome for _, _, outcome in readable]
        try:
            # Re-sending a dispatch is only safe while the dedup window still covers the first
            # send (see core/progress and the reconciler).
            early = await self._guard.apply(
                len(readable),
                lambda: self._progress.apply_many(
                    outcomes, may_republish=time.time() - oldest < self._dedup_window / 2
                ),
            )
        except Exception as exc:  # NATS away, a lost race run out of retries, a bug
            logger.warning(
                "%d event(s) of run %s not applied yet (%s); they will be redelivered",
                len(readable),
                readable[0][2].run_id,
                exc,
            )
            await self._guard.run_failed(run_id, exc)
            self._guard.count(len(readable))
            await _hand_back([msg for msg, _, _ in readable], self._guard.held(run_id) or 1.0)
            return
        await self._guard.applied(run_id, outcomes)  # breakers: nothing to do on the hot path
        now = time.perf_counter()
        early_ids = {id(outcome) for outcome in early}
        for msg, received, outcome in readable:
            if id(outcome) in early_ids and await self._offer_again(msg, outcome):
                self._guard.count(1)
                continue
            self._metrics.resolution.observe(now - received)
            self._metrics.applied.inc()
            with contextlib.suppress(Exception):  # unacknowledged = redelivered: harmless
                await msg.ack()

    async def _offer_again(self, msg: Msg, outcome: Outcome) -> bool:
        """An outcome that overtook the write recording its dispatch: redeliver it shortly, with
        backoff. That write follows within a redelivery of the event that makes it; only a forged
        event stays early through ``_EARLY_MAX_DELIVERIES`` offers (about ten minutes of running
        resolvers; counted in deliveries, not age, so a resolver outage does not expire it). Then
        it is dropped: returns ``False`` (acknowledge it)."""
        tries = delivery_of(msg).num_delivered
        if tries >= _EARLY_MAX_DELIVERIES:
            logger.error(
                "dropping an outcome of %s/%s attempt %d: its task was never dispatched",
                outcome.run_id,
                outcome.task_id,
                outcome.attempt,
            )
            return False
        with contextlib.suppress(Exception):
            await hand_back(msg, delay=min(0.01 * 2 ** min(tries, 10), 2.0))
        return True


async def _hand_back(msgs: list[Msg], delay: float) -> None:
    """Hand events back, confirmed (``core/acks.py``): these are handed back while NATS is
    failing over, when a plain nak is most likely lost and the event would wait out the whole
    ack wait (30 s; the retries they carry with them, found re-sent by the reconciler first)."""
    await asyncio.gather(
        *(hand_back(msg, delay=max(delay, 0.01)) for msg in msgs), return_exceptions=True
    )
