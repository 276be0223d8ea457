"""A service that can no longer work ends, instead of lingering half alive: a background loop that
dies, or a NATS connection closed for good, makes it NOT_SERVING and ends ``run()`` with
``ServiceFailedError`` (the process exits non-zero, so its supervisor restarts it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient

from stellwerk.core.jetstream import Topology
from stellwerk.core.lifecycle import Service, ServiceFailedError
from stellwerk.core.natsd import NatsServer
from stellwerk.core.settings import Settings
from stellwerk.executor import Executor
from stellwerk.monitor import Monitor
from stellwerk.resolver import Resolver
from tests.e2e.conftest import serving
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LISTEN = "127.0.0.1:0"


class InjectedError(RuntimeError):
    """What a loop dies of in these tests."""


class _Hooked(Service):
    """Test hooks over a service: ``trip`` makes the supervised loop whose name starts with
    ``target`` die of :class:`InjectedError` (the real loop runs until then), and ``stop_work``
    waits for ``release``, so a test can look at health while the service drains."""

    target: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trip = asyncio.Event()
        self.release = asyncio.Event()

    def supervise(self, loop: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        if self.target is not None and name.startswith(self.target):
            loop = _dies_when(self.trip, loop)
        return super().supervise(loop, name=name)

    async def stop_work(self) -> None:
        await self.release.wait()
        await super().stop_work()


async def _set(event: asyncio.Event) -> None:
    event.set()


async def _dies_when(trip: asyncio.Event, loop: Coroutine[Any, Any, None]) -> None:
    inner = asyncio.ensure_future(loop)
    try:
        await trip.wait()
    finally:
        inner.cancel()
        await asyncio.gather(inner, return_exceptions=True)
    raise InjectedError("injected into the loop")


class _Executor(_Hooked, Executor):
    pass


class _Resolver(_Hooked, Resolver):
    pass


class _Monitor(_Hooked, Monitor):
    pass


def _settings(nats: NatsServer) -> Settings:
    return Settings(nats_url=nats.url, executor_id="supervision-test")


@contextlib.asynccontextmanager
async def _running(service: _Hooked) -> AsyncIterator[asyncio.Task[None]]:
    """``service.run()`` as a task, once ready; stopped whatever the test ends with."""
    run = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.wait_ready())
    try:
        await asyncio.wait({run, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await run  # raises what ended it (or the test times out)
        yield run
    finally:
        ready.cancel()
        service.release.set()
        await service.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, timeout=30)


async def _health(service: Service) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.bound_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(reply.status)


async def _fails_with_health_not_serving(
    service: _Hooked, run: asyncio.Task[None], cause: Callable[[], Coroutine[Any, Any, None]]
) -> ServiceFailedError:
    """Cause the failure: health must turn NOT_SERVING (while the service drains) and ``run()``
    must end with ``ServiceFailedError``, each within a deadline."""
    assert await _health(service) == SERVING
    await cause()

    async def not_serving() -> bool:
        return bool(await _health(service) == NOT_SERVING)

    await eventually(not_serving, timeout=30, message="health NOT_SERVING")
    assert not run.done()
    service.release.set()
    with pytest.raises(ServiceFailedError) as failure:
        await asyncio.wait_for(run, timeout=60)
    return failure.value


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        (_Executor, "fetch-"),
        (_Executor, "registration"),
        (_Resolver, "resolver-events"),
        (_Monitor, "janitor"),
        (_Monitor, "reconciler"),
    ],
)
async def test_a_loop_that_dies_fails_the_service(
    nats_server_module: NatsServer, kind: type[_Hooked], target: str
) -> None:
    service = kind(_settings(nats_server_module), listen=LISTEN)
    service.target = target
    async with _running(service) as run:
        failure = await _fails_with_health_not_serving(service, run, lambda: _set(service.trip))
        assert target in str(failure)
        assert isinstance(failure.__cause__, InjectedError)


class _OneLoop(_Hooked):
    """A bare service with one supervised loop of a given shape."""

    name = "one-loop"

    def __init__(
        self, settings: Settings, loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    ) -> None:
        super().__init__(settings, listen=LISTEN)
        self._loop = loop

    def register(self, server: grpc.aio.Server) -> list[str]:
        return []

    async def start_work(self, nc: NatsClient, topology: Topology) -> None:
        self.supervise(self._loop(self.trip), name="the-loop")


async def _returns_when_tripped(trip: asyncio.Event) -> None:
    await trip.wait()


async def test_a_loop_that_returns_on_its_own_fails_the_service(
    nats_server_module: NatsServer,
) -> None:
    service = _OneLoop(_settings(nats_server_module), _returns_when_tripped)
    async with _running(service) as run:
        failure = await _fails_with_health_not_serving(service, run, lambda: _set(service.trip))
        assert "ended on its own" in str(failure)


async def _timeout_when_cancelled(trip: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise TimeoutError from None  # what nats-py makes of a cancelled fetch


async def _returns_when_cancelled(trip: asyncio.Event) -> None:
    # The shape of `while not cancel_requested(): ...` after such a TimeoutError.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


@pytest.mark.parametrize("loop", [_timeout_when_cancelled, _returns_when_cancelled])
async def test_loops_ending_on_shutdown_are_no_failure(
    nats_server_module: NatsServer, loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> None:
    service = _OneLoop(_settings(nats_server_module), loop)
    async with _running(service) as run:
        service.release.set()
        await service.shutdown()
        await asyncio.wait_for(run, timeout=30)  # returns: no ServiceFailedError


@pytest.mark.parametrize("kind", [_Resolver, _Executor, _Monitor])
async def test_an_err_from_nats_fails_the_service(
    nats_server_module: NatsServer, kind: type[_Hooked]
) -> None:
    service = kind(_settings(nats_server_module), listen=LISTEN)
    async with _running(service) as run:

        async def protocol_violation() -> None:
            # A subject beyond the server's 4 KiB control line: the server answers -ERR, and
            # nats-py closes the connection for good (it never reconnects after an -ERR).
            await service.nc.publish("stellwerk.test." + "x" * 5000, b"")

        failure = await _fails_with_health_not_serving(service, run, protocol_violation)
        assert "maximum control line exceeded" in str(failure)
        assert service.nc.is_closed


async def test_resolver_process_exits_non_zero_when_nats_closes_its_connection(
    nats_server: NatsServer,
) -> None:
    resolver = ServiceProcess("resolver", nats_server.url).start()
    try:
        await eventually(lambda: serving(resolver.address), timeout=60, message="SERVING")
        # From outside: the server now answers the resolver's next protocol line (its events
        # fetch, every second) with -ERR 'maximum control line exceeded'.
        nats_server.max_control_line = 32
        await asyncio.to_thread(nats_server.reload)

        async def exited() -> bool:
            assert resolver.process is not None
            return resolver.process.poll() is not None

        await eventually(exited, timeout=60, message="resolver exited")
        assert resolver.process is not None
        assert resolver.process.returncode == 1, resolver.logs()
        assert "maximum control line exceeded" in resolver.logs()
    finally:
        resolver.kill()


async def test_a_service_waits_for_jetstream_instead_of_exiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Services started together with a fresh cluster reach it before it can create streams
    (the cluster test saw a monitor exit on a ``stream_info`` timeout at start). A server
    without JetStream answers no-responders in the same way: the service must keep trying,
    NOT_SERVING meanwhile, and get ready once JetStream answers."""
    server = NatsServer(store_dir=tmp_path, jetstream=False)
    await asyncio.to_thread(server.start)
    service = _Monitor(_settings(server), listen=LISTEN)
    service.release.set()  # no hook: stopping must not wait for the test
    run = asyncio.create_task(service.run())
    try:

        async def retrying_or_ended() -> bool:
            return run.done() or "JetStream not ready" in caplog.text

        with caplog.at_level(logging.WARNING):
            await eventually(retrying_or_ended, timeout=60, message="a retried topology setup")
        assert not run.done(), f"the service ended instead of waiting: {run.exception()!r}"
        server.kill()
        server.jetstream = True
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(service.wait_ready(), timeout=60)
        assert await _health(service) == SERVING
    finally:
        await service.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, timeout=30)
        server.stop()
