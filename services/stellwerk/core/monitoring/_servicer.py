"""``stellwerk.monitoring.v1.MonitorService``: served by the monitor, and by the resolver too, so
that the CLI reaches every command through one address."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from stellwerk.core.convert import timestamp
from stellwerk.core.jetstream import Topology
from stellwerk.core.monitoring._health import Health, assess
from stellwerk.core.monitoring._overview import build_overview
from stellwerk.core.progress import Dispatcher
from stellwerk.core.settings import Settings
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as api
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as api_grpc

__all__ = ["MonitorServicer", "health_response"]

Context = grpc.aio.ServicerContext[Any, Any]


def health_response(health: Health, now: float) -> api.GetHealthReportResponse:
    """The contract's form of an assessment."""
    response = api.GetHealthReportResponse(healthy=health.healthy)
    for check in health.checks:
        response.checks.add(
            name=check.name,
            status=api.CHECK_STATUS_OK if check.ok else api.CHECK_STATUS_FAILING,
            summary=check.summary,
            details=list(check.details),
        )
    for queue in health.queues:
        response.queues.add(
            stream=queue.stream,
            consumer=queue.consumer,
            pending=queue.pending,
            ack_pending=queue.ack_pending,
        )
    as_of = timestamp(now)
    assert as_of is not None
    response.as_of_time.CopyFrom(as_of)
    return response


class MonitorServicer(api_grpc.MonitorServiceServicer):
    """Overview and health, straight from KV and the streams (never another service's memory).

    ``parts`` gives the topology and a dispatcher once NATS is connected (and raises
    ``UnavailableError`` before, which the interceptor maps to UNAVAILABLE).
    """

    def __init__(self, parts: Callable[[], tuple[Topology, Dispatcher]], settings: Settings):
        self._parts = parts
        self._settings = settings

    async def GetOverview(
        self, request: api.GetOverviewRequest, context: Context
    ) -> api.GetOverviewResponse:
        topology, _ = self._parts()
        return await build_overview(
            runs=topology.runs, tasks=topology.tasks, executors=topology.executors
        )

    async def GetHealthReport(
        self, request: api.GetHealthReportRequest, context: Context
    ) -> api.GetHealthReportResponse:
        topology, dispatcher = self._parts()
        health = await assess(
            js=topology.js,
            runs=topology.runs,
            tasks=topology.tasks,
            dispatcher=dispatcher,
            settings=self._settings,
        )
        return health_response(health, time.time())
