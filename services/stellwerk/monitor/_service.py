"""The monitor process: overview of workflows and executors, and the janitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.jetstream import Topology
from stellwerk.core.lifecycle import Service
from stellwerk.core.settings import Settings
from stellwerk.monitor._janitor import Janitor
from stellwerk.monitor._overview import build_overview
from stellwerk.monitoring.v1 import monitor_service_pb2 as api
from stellwerk.monitoring.v1 import monitor_service_pb2_grpc as api_grpc

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
        self._sweeper: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_MonitorServiceServicer_to_server(_MonitorServicer(self), server)
        return [api.DESCRIPTOR.services_by_name["MonitorService"].full_name]

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        janitor = Janitor(
            runs=topology.runs,
            tasks=topology.tasks,
            executors=topology.executors,
            settings=self.settings,
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(janitor), name="janitor")

    async def stop_work(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep_forever(self, janitor: Janitor) -> None:
        while True:
            await asyncio.sleep(self.settings.janitor_interval)
            try:
                removed = await janitor.sweep()
                if removed:
                    logger.info("janitor removed %d runs", removed)
            except Exception:
                logger.exception("janitor sweep failed; next interval tries again")
