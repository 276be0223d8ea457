"""The executor process: runs dispatched attempts and registers the methods it offers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core import names
from stellwerk.core.jetstream import Topology, ensure_dispatch_consumer
from stellwerk.core.lifecycle import Service, cancel_requested
from stellwerk.core.progress import CancelledRuns
from stellwerk.core.records import ExecutorRecord
from stellwerk.core.settings import Settings
from stellwerk.core.store import task_store
from stellwerk.executor._holds import Holds
from stellwerk.executor._reporting import TaskMetrics
from stellwerk.executor._runner import TaskRunner
from stellwerk.executor._servicer import ExecutorServicer
from stellwerk.executor._workers import WorkerHub, WorkerServicer
from stellwerk.executor.methods import MethodTable, build_method_table
from stellwerk_api.execution.v1 import executor_service_pb2 as api
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as api_grpc
from stellwerk_api.execution.v1 import worker_service_pb2, worker_service_pb2_grpc

__all__ = ["Executor"]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 10.0


class Executor(Service):
    """Runs the tasks of the methods in its table, at most ``executor_concurrency`` at once."""

    name = "executor"

    def __init__(
        self,
        settings: Settings,
        *,
        listen: str | None = None,
        handlers: Sequence[Callable[..., Any]] = (),
        table: MethodTable | None = None,
    ) -> None:
        """Prepare an executor; nothing connects until :meth:`run`.

        Args:
            settings: The service settings; ``handler_modules`` names modules to scan for
                ``@handler`` functions, ``script_dirs`` turns ``python/execute`` on.
            listen: The gRPC address, instead of ``settings.executor_listen``.
            handlers: Functions marked with ``@handler`` that this executor runs, besides those
                found in ``settings.handler_modules``.
            table: A prepared method table (tests); ``handlers`` and the settings' modules and
                script directories are then not looked at.

        Raises:
            InvalidArgumentError: a handler module cannot be imported or a given function is
                not a handler.
            AlreadyExistsError: two functions implement the same method, or one takes a
                built-in's name.
        """
        super().__init__(settings, listen=listen or settings.executor_listen)
        # Built before serving, so a bad handler module fails the start, not the first task.
        self.table = table or build_method_table(
            script_dirs=settings.script_dir_paths(),
            handlers=handlers,
            handler_modules=settings.handler_module_names(),
        )
        self.executor_id = settings.executor_id
        self.started_at = time.time()
        self._runner: TaskRunner | None = None
        self._task_metrics = TaskMetrics.create(self.metrics)
        self._registration: asyncio.Task[None] | None = None
        # The worker edge: methods served by remote workers over WorkerService (_workers.py).
        self.workers = WorkerHub(
            executor_id=self.executor_id, local_methods=self.table, lease=settings.task_lease
        )
        self._remote_loops: set[str] = set()
        self._registering = asyncio.Lock()
        self._topology: Topology | None = None
        self._cancelled = CancelledRuns()
        self._cancel_watch: asyncio.Task[None] | None = None
        self._holds = Holds()  # method breakers, watched in KV (executor/_holds.py)

    def register(self, server: grpc.aio.Server) -> list[str]:
        api_grpc.add_ExecutorServiceServicer_to_server(
            ExecutorServicer(
                executor_id=self.executor_id,
                table=self.table,
                concurrency=self.settings.executor_concurrency,
                started_at=self.started_at,
                counters=self._counters,
                remote=self.workers.infos,
            ),
            server,
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerServicer(self.workers), server
        )
        return [
            api.DESCRIPTOR.services_by_name["ExecutorService"].full_name,
            worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
        ]

    def _counters(self) -> tuple[int, int, int]:
        if self._runner is None:
            return 0, 0, 0
        return self._runner.running, self._runner.completed, self._runner.failed

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        # Sync handlers run in threads; one per slot, so a slot never waits for a thread.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(
                max_workers=self.settings.executor_concurrency, thread_name_prefix="handler"
            )
        )
        consumers = [
            await ensure_dispatch_consumer(topology.js, method, self.settings)
            for method in self.table.names()
        ]
        await self._register(topology)
        self._runner = TaskRunner(
            nc=nc,
            js=topology.js,
            writer=topology.writer,
            table=self.table,
            tasks=task_store(topology.tasks, cache_size=1),
            settings=self.settings,
            executor_id=self.executor_id,
            max_payload=nc.max_payload,
            metrics=self._task_metrics,
            claims=topology.claims,
            cancelled=self._cancelled,
            workers=self.workers,
            holds=self._holds,
        )
        self.supervise(self._holds.breakers.watch(topology.runs), name="breaker-watch")
        self._runner.start(consumers, self.supervise)
        self._cancel_watch = self.supervise(
            self._cancelled.watch(topology.runs), name="cancel-watch"
        )
        self._topology = topology
        self.workers.attach(self._remote_methods_changed)
        self._registration = self.supervise(self._keep_registered(topology), name="registration")

    def on_reconnected(self) -> None:
        # A single nats-server that restarted may redeliver what we hold (its delivery state is
        # saved lazily): give every claim up. On a replicated cluster (STELLWERK_REPLICAS > 1)
        # a reconnect is usually a failover to another node while the consumers live on, so
        # claims are kept; the heartbeat still gives one up after a gap of most of a lease.
        self._cancelled.renew()  # the watch may have missed markers meanwhile
        self._holds.breakers.renew()
        if self._runner is not None:
            self._runner.note_reconnect()
            if self.settings.replicas == 1:
                self._runner.drop_claims()

    async def _remote_methods_changed(self) -> None:
        """A worker brought a new method or the last one serving a method left: fetch loops for
        new methods, and the registration rewritten (before the worker hears it is registered,
        so a submit right after accepts its methods)."""
        assert self._runner is not None and self._topology is not None
        for method in sorted(self.workers.methods() - self._remote_loops):
            durable = await ensure_dispatch_consumer(self._topology.js, method, self.settings)
            self._runner.start_remote(durable, method, self.supervise)
            self._remote_loops.add(method)
        await self._register(self._topology)

    async def stop_work(self) -> None:
        if self._registration is not None:
            self._registration.cancel()
            # However it ended (a failure was reported when it happened), stopping goes on.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._registration
        if self._runner is not None:
            await self._runner.stop(self.settings.drain_timeout)
        if self._cancel_watch is not None:  # kept through the drain: cancels still apply
            self._cancel_watch.cancel()
        await self.workers.stop()

    async def _register(self, topology: Topology) -> None:
        record = ExecutorRecord(
            id=self.executor_id,
            methods=sorted({*self.table.names(), *self.workers.methods()}),
            started_at=self.started_at,
            last_seen=time.time(),
            concurrency=self.settings.executor_concurrency,
            listen=f"{self.listen.rpartition(':')[0]}:{self.bound_port}",
            heartbeat_interval=HEARTBEAT_INTERVAL,
        )
        async with self._registering:  # workers coming and going must not reorder the writes
            await topology.executors.put(names.encode_token(self.executor_id), record.to_bytes())

    async def _keep_registered(self, topology: Topology) -> None:
        while not cancel_requested():
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self._register(topology)
            except Exception as exc:  # NATS away for a moment: the next beat tries again
                logger.warning("could not refresh registration: %s", exc)
