"""Consuming task events: fetch continuously, apply each run's events in arrival order.

Events of different runs are applied concurrently (up to ``max_in_flight``); events of one run
one at a time, in the order they arrived, because they touch the same documents and running them
concurrently would only buy compare-and-set conflicts. The fetch loop does not wait for a batch
to finish before fetching more, so one slow run does not delay the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from stellwerk.core import names
from stellwerk.core.lifecycle import cancel_requested
from stellwerk.core.metrics import Counter, Histogram
from stellwerk.core.progress import Outcome, Progress
from stellwerk.events.v1 import events_pb2

__all__ = ["EventConsumer", "decode_outcome"]

logger = logging.getLogger(__name__)

_FETCH_BATCH = 256


def decode_outcome(data: bytes) -> Outcome:
    """A ``TaskEvent`` as an ``Outcome``; raises ``ValueError`` on a message we cannot read."""
    event = events_pb2.TaskEvent()
    event.ParseFromString(data)
    if event.format_version != 1:
        raise ValueError(f"unknown event format version {event.format_version}")
    if not event.workflow_id or not event.task_id or event.attempt < 1:
        raise ValueError("event lacks workflow_id, task_id or attempt")
    succeeded = event.outcome == events_pb2.TASK_OUTCOME_SUCCEEDED
    if not succeeded and event.outcome != events_pb2.TASK_OUTCOME_FAILED:
        raise ValueError(f"unknown outcome {event.outcome}")
    return Outcome(
        run_id=event.workflow_id,
        task_id=event.task_id,
        attempt=event.attempt,
        succeeded=succeeded,
        result=json.loads(event.result_json) if succeeded and event.result_json else None,
        error=event.error or None,
        executor_id=event.executor_id or None,
    )


class EventConsumer:
    """Feeds the ``resolver`` durable consumer's events to :class:`Progress`."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        progress: Progress,
        dedup_window: float,
        resolution: Histogram,
        applied: Counter,
        max_in_flight: int = 512,
    ) -> None:
        self._js = js
        self._progress = progress
        self._dedup_window = dedup_window
        self._resolution = resolution
        self._applied = applied
        self._max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._runs: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self) -> None:
        """Consume until cancelled; in-flight events are then left to finish or be redelivered."""
        sub = await self._js.pull_subscribe_bind(
            names.RESOLVER_CONSUMER, stream=names.EVENTS_STREAM
        )
        try:
            while not cancel_requested():
                free = self._max_in_flight - len(self._in_flight)
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
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg, received))
                    self._in_flight.add(task)
                    task.add_done_callback(self._done)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=5)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()

    async def _handle(self, msg: Msg, received: float) -> None:
        run_id = names.run_of_event_subject(msg.subject)
        lock, users = self._runs.get(run_id, (asyncio.Lock(), 0))
        self._runs[run_id] = (lock, users + 1)
        try:
            async with lock:
                await self._apply(msg, received)
        finally:
            lock, users = self._runs[run_id]
            if users <= 1:
                del self._runs[run_id]
            else:
                self._runs[run_id] = (lock, users - 1)

    async def _apply(self, msg: Msg, received: float) -> None:
        try:
            outcome = decode_outcome(msg.data)
        except (ValueError, UnicodeDecodeError) as exc:
            logger.error("dropping unreadable task event on %s: %s", msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.term()
            return
        sent = msg.metadata.timestamp
        age = time.time() - sent.timestamp() if sent else 0.0
        try:
            # Re-sending a dispatch is only safe while the dedup window still covers the first
            # send (see core/progress and the reconciler).
            await self._progress.apply(outcome, may_republish=age < self._dedup_window / 2)
        except Exception as exc:  # NATS away, a lost race run out of retries, a bug
            logger.warning(
                "event for %s/%s not applied yet (%s); it will be redelivered",
                outcome.run_id,
                outcome.task_id,
                exc,
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        self._resolution.observe(time.perf_counter() - received)
        self._applied.inc()
        with contextlib.suppress(Exception):  # unacknowledged = redelivered: harmless
            await msg.ack()
