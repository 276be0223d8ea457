"""The monitor process: overview of workflows and executors, and the janitor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.jetstream import Topology
from stellwerk.core.lifecycle import Service, cancel_requested
from stellwerk.core.progress import Dispatcher, Progress
from stellwerk.core.settings import Settings
from stellwerk.core.store import run_store, task_store
from stellwerk.monitor._janitor import Janitor
from stellwerk.monitor._overview import build_overview
from stellwerk.monitor._reconciler import Reconciler
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as api
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as api_grpc

__all__ = ["Monitor"]

logger = logging.getLogger(__name__)


class _MonitorServicer(api_grpc.MonitorServiceServicer):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def GetOverview(
        self, request: api.GetOverviewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.GetOverviewResponse:
        topology = self._monitor.topology
        return await build_overview(
            runs=topology.runs, tasks=topology.tasks, executors=topology.executors
        )


class Monitor(Service):
    """Serves ``MonitorService`` from KV and sweeps what retention allows to remove."""

    name = "monitor"

    def __init__(self, settings: Settings, *, listen: str | None = None) -> None:
        super().__init__(settings, listen=listen or settings.monitor_listen)
        self._loops: list[asyncio.Task[None]] = []

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_MonitorServiceServicer_to_server(_MonitorServicer(self), server)
        return [api.DESCRIPTOR.services_by_name["MonitorService"].full_name]

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        janitor = Janitor(
            js=topology.js,
            runs=topology.runs,
            tasks=topology.tasks,
            executors=topology.executors,
            settings=self.settings,
        )
        runs = run_store(topology.runs, cache_size=1)
        progress = Progress(
            tasks=task_store(topology.tasks, cache_size=1),
            runs=runs,
            dispatcher=Dispatcher(topology.js, topology.writer, max_payload=nc.max_payload),
        )
        reconciler = Reconciler(
            runs=topology.runs,
            tasks=topology.tasks,
            progress=progress,
            settings=self.settings,
        )
        self._loops = [
            self.supervise(
                _every(self.settings.janitor_interval, "janitor", janitor.sweep), name="janitor"
            ),
            self.supervise(
                _every(self.settings.reconcile_interval, "reconciler", reconciler.sweep),
                name="reconciler",
            ),
        ]

    async def stop_work(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)


async def _every(interval: float, what: str, sweep: Callable[[], Awaitable[object]]) -> None:
    """Run ``sweep`` every ``interval`` seconds; a failed sweep is logged and retried next time."""
    while not cancel_requested():
        await asyncio.sleep(interval)
        try:
            outcome = await sweep()
            logger.debug("%s sweep: %s", what, outcome)
        except Exception:
            logger.exception("%s sweep failed; the next interval tries again", what)
