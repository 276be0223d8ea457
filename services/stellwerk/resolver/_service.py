"""The resolver process: WorkflowService over gRPC plus the task-event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from stellwerk.core import names
from stellwerk.core.jetstream import Topology, ensure_resolver_consumer
from stellwerk.core.lifecycle import Service, cancel_requested
from stellwerk.core.progress import Dispatcher, Outcome, Progress
from stellwerk.core.settings import Settings
from stellwerk.core.store import run_store, task_store
from stellwerk.events.v1 import events_pb2
from stellwerk.resolver._queries import RunReader
from stellwerk.resolver._servicer import WorkflowServicer
from stellwerk.resolver._submit import Submitter
from stellwerk.workflow.v1 import workflow_service_pb2 as api
from stellwerk.workflow.v1 import workflow_service_pb2_grpc as api_grpc

__all__ = ["Resolver"]

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


class Resolver(Service):
    """Accepts workflows and moves them on as their tasks finish."""

    name = "resolver"

    def __init__(self, settings: Settings, *, listen: str | None = None) -> None:
        super().__init__(settings, listen=listen or settings.resolver_listen)
        self._submitter: Submitter | None = None
        self._reader: RunReader | None = None
        self._progress: Progress | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._resolution = self.metrics.histogram(
            "stellwerk_resolution_seconds",
            "Per task event: from its receipt to the acknowledged dispatch of the dependents it "
            "made ready (dependency-resolution latency)",
        )
        self._events = self.metrics.counter(
            "stellwerk_events_applied_total", "Task events applied to their runs"
        )

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_WorkflowServiceServicer_to_server(
            WorkflowServicer(submitter=self._get_submitter, reader=self._get_reader), server
        )
        return [api.DESCRIPTOR.services_by_name["WorkflowService"].full_name]

    def _get_submitter(self) -> Submitter:
        if self._submitter is None:
            _ = self.topology  # raises UnavailableError
        assert self._submitter is not None
        return self._submitter

    def _get_reader(self) -> RunReader:
        if self._reader is None:
            _ = self.topology
        assert self._reader is not None
        return self._reader

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        tasks = task_store(topology.tasks)
        runs = run_store(topology.runs)
        dispatcher = Dispatcher(topology.js, max_payload=nc.max_payload)
        self._progress = Progress(tasks=tasks, runs=runs, dispatcher=dispatcher)
        self._submitter = Submitter(
            runs_kv=topology.runs,
            executors_kv=topology.executors,
            tasks=tasks,
            runs=runs,
            dispatcher=dispatcher,
            settings=self.settings,
        )
        # Readers get their own stores: their reads are fresh anyway, and they must not evict
        # the event loop's working set.
        self._reader = RunReader(
            runs_kv=topology.runs,
            tasks_kv=topology.tasks,
            runs=run_store(topology.runs, cache_size=1),
            tasks=task_store(topology.tasks, cache_size=1),
        )
        await ensure_resolver_consumer(topology.js, self.settings)
        self._loop_task = asyncio.create_task(self._consume(topology), name="resolver-events")

    async def stop_work(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _consume(self, topology: Topology) -> None:
        sub = await topology.js.pull_subscribe_bind(
            names.RESOLVER_CONSUMER, stream=names.EVENTS_STREAM
        )
        try:
            while not cancel_requested():
                try:
                    msgs = await sub.fetch(batch=_FETCH_BATCH, timeout=1.0)
                except TimeoutError:  # nats-py raises both its own and asyncio's; both mean "none"
                    continue
                except Exception as exc:  # the loop must outlive any hiccup of NATS
                    logger.warning("event fetch failed (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                by_run: dict[str, list[Msg]] = defaultdict(list)
                received = time.perf_counter()
                for msg in msgs:
                    by_run[names.run_of_event_subject(msg.subject)].append(msg)
                await asyncio.gather(
                    *(self._handle_run(batch, received) for batch in by_run.values()),
                    return_exceptions=True,
                )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle_run(self, msgs: list[Msg], received: float) -> None:
        # One run's events in order, one at a time: they touch the same documents, so running
        # them concurrently would only buy compare-and-set conflicts.
        assert self._progress is not None
        for msg in msgs:
            try:
                outcome = decode_outcome(msg.data)
            except (ValueError, UnicodeDecodeError) as exc:
                logger.error("dropping unreadable task event on %s: %s", msg.subject, exc)
                await msg.term()
                continue
            age = (
                time.time() - msg.metadata.timestamp.timestamp() if msg.metadata.timestamp else 0.0
            )
            try:
                await self._progress.apply(
                    outcome, may_republish=age < self.settings.dedup_window / 2
                )
            except Exception as exc:  # NATS away, a lost race run out of retries, a bug
                logger.warning(
                    "event for %s/%s not applied yet (%s); it will be redelivered",
                    outcome.run_id,
                    outcome.task_id,
                    exc,
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
                continue
            self._resolution.observe(time.perf_counter() - received)
            self._events.inc()
            with contextlib.suppress(Exception):  # unacknowledged = redelivered: harmless
                await msg.ack()
