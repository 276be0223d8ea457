"""Reporting outcomes: publish each with its deterministic id until JetStream has it, and count
it in the executor's metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from stellwerk.core import names, tracing
from stellwerk.core.jetstream import cancel_requested
from stellwerk.core.metrics import TASK_DURATION_BUCKETS, Counter, Gauge, Histogram, Registry
from stellwerk.core.publish import JetStreamWriter
from stellwerk.executor.methods._invoke import ABANDONED
from stellwerk_api.events.v1 import events_pb2

__all__ = ["OutcomeReporter", "TaskMetrics", "abandoned_threads"]

logger = logging.getLogger(__name__)


def abandoned_threads(registry: Registry) -> Gauge:
    """``stellwerk_abandoned_threads``: handler threads still running after their attempt was
    given up (a plain ``def`` handler past its deadline cannot be stopped)."""
    gauge = registry.gauge(
        "stellwerk_abandoned_threads",
        "Threads of plain def handlers still running after their attempt was given up "
        "(timeout, missed heartbeat, lost claim): a thread cannot be stopped",
    )
    gauge.set_function(lambda: ABANDONED.running)
    return gauge


@dataclass(frozen=True, slots=True)
class TaskMetrics:
    """What an executor measures about the attempts it reports."""

    tasks: Counter
    duration: Histogram
    abandoned: Gauge

    @classmethod
    def create(cls, registry: Registry) -> TaskMetrics:
        """Register the executor's task metrics in ``registry``."""
        return cls(
            tasks=registry.counter(
                "stellwerk_tasks",
                "Attempts this executor reported, by method and outcome (succeeded, failed)",
                labels=("method", "outcome"),
            ),
            duration=registry.histogram(
                "stellwerk_task_duration_seconds",
                "Handler time of the attempts this executor reported, by method",
                labels=("method",),
                buckets=TASK_DURATION_BUCKETS,
            ),
            abandoned=abandoned_threads(registry),
        )


class OutcomeReporter:
    """Publishes outcomes (the events stream keeps the first per attempt) and counts them."""

    def __init__(self, writer: JetStreamWriter, metrics: TaskMetrics | None) -> None:
        self._writer = writer
        self._metrics = metrics
        self.completed = 0
        self.failed = 0
        # Attempts whose outcome this executor is publishing right now (NATS may be away for
        # a while): a delivery of one of them must wait for the report, not run again.
        self._in_flight: set[tuple[str, str, int]] = set()

    def reporting(self, dispatch: events_pb2.TaskDispatch) -> bool:
        """Whether an outcome of ``dispatch``'s attempt is being published by this executor."""
        return (dispatch.run_id, dispatch.task_id, dispatch.attempt) in self._in_flight

    async def report(self, dispatch: events_pb2.TaskDispatch, event: events_pb2.TaskEvent) -> None:
        """Publish the outcome, retrying with the same id until JetStream has it."""
        attempt = (dispatch.run_id, dispatch.task_id, dispatch.attempt)
        self._in_flight.add(attempt)
        try:
            await self._publish(dispatch, event)
        finally:
            self._in_flight.discard(attempt)

    async def _publish(
        self, dispatch: events_pb2.TaskDispatch, event: events_pb2.TaskEvent
    ) -> None:
        msg_id = names.event_msg_id(
            dispatch.run_id, dispatch.task_id, dispatch.attempt, dispatch.generation
        )
        data = event.SerializeToString()
        headers = tracing.reporting(event, {"Nats-Msg-Id": msg_id})  # + the task span's context
        delay = 0.1
        while True:
            if cancel_requested():
                raise asyncio.CancelledError
            try:
                ack = await self._writer.publish(
                    names.event_subject(dispatch.run_id, dispatch.task_id, dispatch.attempt),
                    data,
                    headers,
                )
                if ack.subject_full:  # another run of this attempt reported first: that stands
                    logger.info("outcome %s not stored: this attempt reported already", msg_id)
                    return
                ack.stored(f"outcome {msg_id}")
                break
            except Exception as exc:  # NATS away or restarting: same id, so retrying is safe
                logger.warning("could not report %s (%s); retrying", msg_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        succeeded = event.outcome == events_pb2.TASK_OUTCOME_SUCCEEDED
        if succeeded:
            self.completed += 1
        else:
            self.failed += 1
        if self._metrics is not None:
            outcome = "succeeded" if succeeded else "failed"
            self._metrics.tasks.labels(dispatch.method, outcome).inc()
            if event.HasField("start_time") and event.HasField("end_time"):
                took = event.end_time.ToNanoseconds() - event.start_time.ToNanoseconds()
                self._metrics.duration.labels(dispatch.method).observe(max(0, took) / 1e9)
