"""The lifecycle every Stellwerk service shares: gRPC server first (so health answers at once),
then NATS with retry, then the service's own loops; SIGTERM drains and stops.

Health is NOT_SERVING until NATS is connected and the topology exists, and again while NATS is
disconnected, so an orchestrator routes nothing to a service that cannot act.

A service that can no longer act at all does not linger half alive: when a loop started with
:meth:`Service.supervise` ends on its own (an unexpected exception, or a return while nobody asked
it to stop), or NATS closes the connection for good (nats-py does so on any ``-ERR`` from the
server and never reconnects), the service goes NOT_SERVING, logs why, drains like on SIGTERM and
:meth:`Service.run` raises :class:`ServiceFailedError`, which makes the process exit non-zero so
that its supervisor restarts it (the shape of ``asyncio.TaskGroup``: the first failure ends all).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NatsClient

from stellwerk.core import tracing
from stellwerk.core.errors import StellwerkError, UnavailableError
from stellwerk.core.grpc_errors import DomainErrorInterceptor
from stellwerk.core.jetstream import Topology, cancel_requested, connect, ensure_topology
from stellwerk.core.limits import GRPC_MAX_MESSAGE_BYTES
from stellwerk.core.metrics import MetricsServer, Registry
from stellwerk.core.settings import Settings, parse_listen

__all__ = [
    "Service",
    "ServiceFailedError",
    "Supervise",
    "cancel_requested",
    "run_until_signalled",
]

logger = logging.getLogger(__name__)


class ServiceFailedError(StellwerkError):
    """The service lost something it cannot work without (a supervised loop ended, or NATS
    closed the connection for good); its process exits non-zero. Never sent over gRPC."""

    reason = "SERVICE_FAILED"


class Supervise(Protocol):
    """The shape of :meth:`Service.supervise`, for the parts of a service that start its loops."""

    def __call__(self, loop: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]: ...


class Service(ABC):
    """Base of the resolver, executor and monitor processes."""

    name: str = "service"

    def __init__(self, settings: Settings, *, listen: str) -> None:
        self.settings = settings
        self.listen = listen
        self.bound_port: int | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._nc: NatsClient | None = None
        self.metrics = Registry()
        self._metrics_server = MetricsServer(self.metrics)
        self._topology: Topology | None = None
        self._failure: ServiceFailedError | None = None
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._supervised: set[asyncio.Task[None]] = set()

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def register(self, server: grpc.aio.Server) -> list[str]:
        """Add this service's servicers; return their full service names."""

    @abstractmethod
    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        """Start background loops once NATS is ready (must return promptly)."""

    def on_reconnected(self) -> None:
        """Called when NATS comes back after a disconnect (default: nothing)."""
        return

    async def stop_work(self) -> None:
        """Stop background loops, draining what is in flight (bounded by the drain timeout)."""
        return

    # -- public --------------------------------------------------------------------------
    @property
    def topology(self) -> Topology:
        """Buckets and JetStream context; raises ``UnavailableError`` before NATS is ready."""
        if self._topology is None:
            raise UnavailableError(f"{self.name} is not connected to NATS yet")
        return self._topology

    @property
    def nc(self) -> NatsClient:
        """The NATS connection; raises ``UnavailableError`` before it exists."""
        if self._nc is None:
            raise UnavailableError(f"{self.name} is not connected to NATS yet")
        return self._nc

    async def wait_ready(self) -> None:
        """Return once NATS is connected and work has started."""
        await self._ready.wait()

    def supervise(self, loop: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``loop`` as a task the service cannot work without: if it ends before the service
        stops (with an exception, or by returning), the service fails (see :meth:`fail`).

        Loops keep retrying what is transient (NATS away for a moment) themselves; what reaches
        here is a bug or something a retry cannot mend. Once the service stops, however a loop
        ends is normal: cancelled, or a ``TimeoutError`` (nats-py turns cancellation into one).
        """
        task = asyncio.create_task(loop, name=name)
        self._supervised.add(task)
        task.add_done_callback(self._loop_ended)
        return task

    def fail(self, reason: str, cause: BaseException | None = None) -> None:
        """Stop the service as failed: health NOT_SERVING, drain, :meth:`run` raises
        :class:`ServiceFailedError`. Ignored once the service is stopping (only the first failure
        counts, and whatever ends during a requested stop is no failure)."""
        if self._stopping.is_set():
            return
        self._failure = ServiceFailedError(f"{self.name} failed: {reason}")
        self._failure.__cause__ = cause
        logger.error(
            "%s failed: %s; health NOT_SERVING, exiting so that its supervisor restarts it",
            self.name,
            reason,
            exc_info=cause,
        )
        self._stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`shutdown`; returns after a clean drain, raises
        :class:`ServiceFailedError` (after the same drain) when the service failed."""
        # Created here, not in __init__: grpc.aio binds to the loop that is running.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        tracing.configure(f"stellwerk-{self.name}")  # from OTEL_*; off when nothing is set
        self._server = grpc.aio.server(
            interceptors=[*tracing.server_interceptors(), DomainErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ],
        )
        service_names = self.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        host, port = parse_listen(self.listen)
        self.bound_port = self._server.add_insecure_port(f"{host}:{port}")
        await self._server.start()
        await self._set_health(service_names, serving=False)
        print(f"stellwerk {self.name} listening on {host}:{self.bound_port}", flush=True)  # noqa: T201
        if self.settings.metrics_listen:
            m_host, m_port = parse_listen(self.settings.metrics_listen)
            bound = await self._metrics_server.start(m_host, m_port)
            print(f"stellwerk {self.name} metrics on {m_host}:{bound}", flush=True)  # noqa: T201
        try:
            connected = await self._connect(service_names)
            if connected and not self._stopping.is_set():
                await self._set_health(service_names, serving=True)
                self._ready.set()
                logger.info("%s ready", self.name)
                await self._stopping.wait()
        finally:
            # From here on, whatever ends is part of stopping (also when run() is cancelled).
            self._stopping.set()
            await self._metrics_server.stop()
            # NOT_SERVING before the drain, so nothing new is routed here meanwhile.
            await self._health.enter_graceful_shutdown()
            await self.stop_work()
            await self._stop_supervised()
            await self._server.stop(grace=2.0)
            # Drop the server while the loop still runs: its finaliser schedules work on it.
            del self._server
            gc.collect()
            if self._topology is not None:
                await self._topology.writer.close()
            if self._nc is not None and not self._nc.is_closed:
                # With NATS away, close() may raise on the dead transport or wait on the
                # reconnect loop; neither may keep a stopping service alive.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._nc.close(), timeout=5)
            tracing.flush()  # export the spans still buffered (tracing on)
        if self._failure is not None:
            raise self._failure

    async def shutdown(self) -> None:
        """Ask :meth:`run` to drain and return (idempotent)."""
        self.request_stop()

    def request_stop(self) -> None:
        """Synchronous form of :meth:`shutdown`, safe to call from a signal handler."""
        self._stopping.set()

    async def __aenter__(self) -> Self:
        self._run_task = asyncio.create_task(self.run(), name=f"{self.name}-run")
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({self._run_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._run_task in done:
            waiter.cancel()
            self._run_task.result()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
        await self._run_task

    # -- internals -----------------------------------------------------------------------
    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        self._supervised.discard(task)
        if self._stopping.is_set() or task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.fail(f"its loop {task.get_name()!r} ended on its own")
        else:
            self.fail(f"its loop {task.get_name()!r} died: {exc!r}", exc)

    async def _stop_supervised(self) -> None:
        """Cancel the loops ``stop_work`` left running; how they end no longer matters."""
        for task in self._supervised:
            task.cancel()
        await asyncio.gather(*self._supervised, return_exceptions=True)

    async def _connect(self, service_names: list[str]) -> bool:
        async def on_disconnect() -> None:
            if self._stopping.is_set():
                return  # our own close on shutdown
            if self._nc is not None and self._nc.is_closed:
                return  # closed for good, not a disconnect: on_closed reports it
            logger.warning("%s lost NATS; health NOT_SERVING until it is back", self.name)
            await self._set_health(service_names, serving=False)

        async def on_reconnect() -> None:
            logger.info("%s reconnected to NATS", self.name)
            self.on_reconnected()
            await self._set_health(service_names, serving=True)

        async def on_closed() -> None:
            # Our own close on shutdown is ignored by fail(). Any other close is for good:
            # nats-py closes on an -ERR from the server (e.g. "maximum control line exceeded")
            # and never reconnects, so the service could only answer UNAVAILABLE from now on.
            error = self._nc.last_error if self._nc is not None else None
            self.fail(f"NATS closed the connection for good ({error or 'no error given'})")

        async def establish() -> None:
            self._nc = await connect(
                self.settings,
                name=f"stellwerk-{self.name}",
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
            )
            self._topology = await ensure_topology(self._nc, self.settings)
            await self.start_work(self._nc, self._topology)

        setup = asyncio.create_task(establish(), name=f"{self.name}-connect")
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({setup, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():
            setup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await setup
            return False
        stop.cancel()
        setup.result()
        return True

    async def _set_health(self, service_names: list[str], *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ["", *service_names]:
            await self._health.set(service, status)


def _dump_tasks() -> None:
    """SIGUSR1: log every asyncio task's stack (to see where a live process waits)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack()
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)) or "-"
        logger.warning("task %s: %s", task.get_name(), where)


async def run_until_signalled(service: Service) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then drain it."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await service.run()
