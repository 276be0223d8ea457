"""The resolver process: WorkflowService over gRPC plus the task-event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.blobs import BlobStore
from stellwerk.core.breaker_book import BreakerBook
from stellwerk.core.checkpoints import CheckpointStore
from stellwerk.core.jetstream import Topology, ensure_resolver_consumer
from stellwerk.core.lifecycle import Service
from stellwerk.core.monitoring import MonitorServicer
from stellwerk.core.progress import (
    CancelledRuns,
    Canceller,
    Dispatcher,
    LargeValues,
    Progress,
    Restarter,
)
from stellwerk.core.settings import Settings
from stellwerk.core.store import run_store, task_store
from stellwerk.resolver._events import EventConsumer, EventMetrics
from stellwerk.resolver._explain import Explainer
from stellwerk.resolver._operator import Operator
from stellwerk.resolver._queries import RunReader
from stellwerk.resolver._resilience import ResolutionGuard
from stellwerk.resolver._servicer import WorkflowServicer
from stellwerk.resolver._stored import StoredResults
from stellwerk.resolver._submit import Submitter
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as monitor_api
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as monitor_api_grpc
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
        self._operator: Operator | None = None
        self._cancelled = CancelledRuns()
        self._cancel_watch: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._event_metrics = EventMetrics.create(self.metrics)
        self._breakers = BreakerBook()  # run and method breakers, watched in KV

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_WorkflowServiceServicer_to_server(
            WorkflowServicer(
                submitter=self._get_submitter,
                reader=self._get_reader,
                explainer=self._get_explainer,
                operator=self._get_operator,
                stored_results=self._get_stored_results,
            ),
            server,
        )
        # The monitor's API too, so one address (the resolver's) answers every CLI command.
        monitor_api_grpc.add_MonitorServiceServicer_to_server(
            MonitorServicer(self._monitor_parts, self.settings), server
        )
        return [
            api.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
            monitor_api.DESCRIPTOR.services_by_name["MonitorService"].full_name,
        ]

    def _get_explainer(self) -> Explainer:
        topology, dispatcher = self._monitor_parts()
        return Explainer(
            js=topology.js,
            claims=topology.claims,
            dispatcher=dispatcher,
            lease=self.settings.task_lease,
        )

    def _monitor_parts(self) -> tuple[Topology, Dispatcher]:
        topology = self.topology  # raises UnavailableError before NATS is ready
        assert self._progress is not None
        return topology, self._progress.dispatcher

    def _get_stored_results(self) -> StoredResults:
        _, dispatcher = self._monitor_parts()  # raises UnavailableError before NATS is ready
        assert dispatcher.large is not None
        return StoredResults(dispatcher.large.blobs)

    def _get_submitter(self) -> Submitter:
        if self._submitter is None:
            _ = self.topology  # raises UnavailableError
        assert self._submitter is not None
        return self._submitter

    def _get_operator(self) -> Operator:
        if self._operator is None:
            _ = self.topology
        assert self._operator is not None
        return self._operator

    def on_reconnected(self) -> None:
        self._cancelled.renew()  # the watch may have missed markers meanwhile
        self._breakers.renew()

    def _get_reader(self) -> RunReader:
        if self._reader is None:
            _ = self.topology
        assert self._reader is not None
        return self._reader

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        tasks = task_store(topology.tasks, writer=topology.writer)
        runs = run_store(topology.runs, writer=topology.writer)
        dispatcher = Dispatcher(
            topology.js,
            topology.writer,
            max_payload=nc.max_payload,
            large=LargeValues(
                BlobStore(topology.js, topology.writer), max_bytes=self.settings.max_result_bytes
            ),
        )
        self._progress = Progress(
            tasks=tasks, runs=runs, dispatcher=dispatcher, cancelled=self._cancelled
        )
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
        checkpoints = CheckpointStore(
            topology.checkpoints, part_bytes=self._progress.dispatcher.limits.message
        )
        canceller = Canceller(
            runs=run_store(topology.runs, cache_size=1),
            tasks=task_store(topology.tasks, cache_size=1),
            cancelled=self._cancelled,
        )
        # Restarts write through the event loop's stores, so its caches see them at once.
        restarter = Restarter(
            js=topology.js,
            runs=runs,
            tasks=tasks,
            progress=self._progress,
            cancelled=self._cancelled,
            canceller=canceller,
            checkpoints=checkpoints,
        )
        self._operator = Operator(
            reader=self._reader,
            canceller=canceller,
            restarter=restarter,
            checkpoints=checkpoints,
        )
        self._cancel_watch = self.supervise(
            self._cancelled.watch(topology.runs), name="cancel-watch"
        )
        await ensure_resolver_consumer(topology.js, self.settings)
        guard = ResolutionGuard(
            book=self._breakers,
            tasks=tasks,
            settings=self.settings,
            retries=self._event_metrics.retries,
        )
        self.supervise(self._breakers.watch(topology.runs), name="breaker-watch")
        self.supervise(guard.publish_count(topology.runs), name="retry-count")
        consumer = EventConsumer(
            js=topology.js,
            progress=self._progress,
            dedup_window=self.settings.dedup_window,
            metrics=self._event_metrics,
            guard=guard,
        )
        self._loop_task = self.supervise(self._consume(consumer), name="resolver-events")

    async def _consume(self, consumer: EventConsumer) -> None:
        # Know every cancelled run and breaker before applying outcomes.
        await asyncio.gather(self._cancelled.loaded(), self._breakers.loaded())
        await consumer.run()

    async def stop_work(self) -> None:
        if self._cancel_watch is not None:
            self._cancel_watch.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            # However it ended (a failure was reported when it happened), stopping goes on.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
