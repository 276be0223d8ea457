"""The monitor process: overview of workflows and executors, and the janitor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.blobs import BlobStore
from stellwerk.core.checkpoints import CheckpointStore
from stellwerk.core.jetstream import Topology
from stellwerk.core.lifecycle import Service, cancel_requested
from stellwerk.core.monitoring import Health, MonitorServicer, assess
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
from stellwerk.monitor._gauges import Gauges, refresh
from stellwerk.monitor._janitor import Janitor
from stellwerk.monitor._reconciler import Reconciler, SweepReport
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as api
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as api_grpc

__all__ = ["Monitor"]

logger = logging.getLogger(__name__)


class Monitor(Service):
    """Serves ``MonitorService`` from KV and sweeps what retention allows to remove."""

    name = "monitor"

    def __init__(self, settings: Settings, *, listen: str | None = None) -> None:
        super().__init__(settings, listen=listen or settings.monitor_listen)
        self._loops: list[asyncio.Task[None]] = []
        self._dispatcher: Dispatcher | None = None
        self.gauges = Gauges(self.metrics)
        self._moved: set[str] = set()
        self._cancelled = CancelledRuns()

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_MonitorServiceServicer_to_server(
            MonitorServicer(self._parts, self.settings), server
        )
        return [api.DESCRIPTOR.services_by_name["MonitorService"].full_name]

    def _parts(self) -> tuple[Topology, Dispatcher]:
        topology = self.topology  # raises UnavailableError before NATS is ready
        assert self._dispatcher is not None
        return topology, self._dispatcher

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        janitor = Janitor(
            js=topology.js,
            runs=topology.runs,
            tasks=topology.tasks,
            executors=topology.executors,
            checkpoints=topology.checkpoints,
            settings=self.settings,
        )
        runs = run_store(topology.runs, cache_size=1)
        self._dispatcher = Dispatcher(
            topology.js,
            topology.writer,
            max_payload=nc.max_payload,
            large=LargeValues(
                BlobStore(topology.js, topology.writer), max_bytes=self.settings.max_result_bytes
            ),
        )
        progress = Progress(
            tasks=task_store(topology.tasks, cache_size=1),
            runs=runs,
            dispatcher=self._dispatcher,
            cancelled=self._cancelled,
        )
        canceller = Canceller(
            runs=runs, tasks=task_store(topology.tasks, cache_size=1), cancelled=self._cancelled
        )
        restarter = Restarter(
            js=topology.js,
            runs=runs,
            tasks=task_store(topology.tasks, cache_size=1),
            progress=progress,
            cancelled=self._cancelled,
            canceller=canceller,
            checkpoints=CheckpointStore(
                topology.checkpoints, part_bytes=self._dispatcher.limits.message
            ),
        )
        reconciler = Reconciler(
            runs=topology.runs,
            tasks=topology.tasks,
            progress=progress,
            canceller=canceller,
            cancelled=self._cancelled,
            restarter=restarter,
            settings=self.settings,
        )
        self._loops = [
            self.supervise(self._cancelled.watch(topology.runs), name="cancel-watch"),
            self.supervise(
                _every(self.settings.janitor_interval, "janitor", janitor.sweep), name="janitor"
            ),
            self.supervise(
                _every(
                    self.settings.reconcile_interval,
                    "reconciler",
                    lambda: self._reconcile(reconciler),
                ),
                name="reconciler",
            ),
            self.supervise(
                _every(self.settings.gauge_interval, "gauges", self._refresh_gauges),
                name="gauges",
            ),
        ]

    def on_reconnected(self) -> None:
        self._cancelled.renew()  # the watch may have missed markers meanwhile

    async def _reconcile(self, reconciler: Reconciler) -> SweepReport:
        await self._cancelled.loaded()  # a cancelled run is finished, never re-driven
        report = await reconciler.sweep()
        self._moved = report.moved_runs
        return report

    async def _refresh_gauges(self) -> int:
        topology, dispatcher = self._parts()

        async def assessment() -> Health:
            return await assess(
                js=topology.js,
                runs=topology.runs,
                tasks=topology.tasks,
                dispatcher=dispatcher,
                settings=self.settings,
            )

        return await refresh(assessment, self.gauges, self._moved)

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
