"""The resolver process: WorkflowService over gRPC plus the task-event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.jetstream import Topology, ensure_resolver_consumer
from stellwerk.core.lifecycle import Service
from stellwerk.core.progress import Dispatcher, Progress
from stellwerk.core.settings import Settings
from stellwerk.core.store import run_store, task_store
from stellwerk.resolver._events import EventConsumer
from stellwerk.resolver._queries import RunReader
from stellwerk.resolver._servicer import WorkflowServicer
from stellwerk.resolver._submit import Submitter
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

__all__ = ["Resolver"]

logger = logging.getLogger(__name__)


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
        tasks = task_store(topology.tasks, writer=topology.writer)
        runs = run_store(topology.runs, writer=topology.writer)
        dispatcher = Dispatcher(topology.js, topology.writer, max_payload=nc.max_payload)
        self._progress = Progress(tasks=tasks, runs=runs, dispatcher=dispatcher)
        self._submitter = Submitter(
            nc=self.nc,
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
        consumer = EventConsumer(
            js=topology.js,
            progress=self._progress,
            dedup_window=self.settings.dedup_window,
            resolution=self._resolution,
            applied=self._events,
        )
        self._loop_task = self.supervise(consumer.run(), name="resolver-events")

    async def stop_work(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            # However it ended (a failure was reported when it happened), stopping goes on.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
