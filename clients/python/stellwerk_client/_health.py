"""Waiting for a Stellwerk service to report SERVING on ``grpc.health.v1``."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._channel import open_channel

__all__ = ["HealthProbe", "wait_for_health"]

_PROBE_DEADLINE = 1.0
_PAUSE = 0.05


class HealthProbe:
    """A reusable channel to one service for repeated health checks."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = open_channel(address)
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    async def serving(self, *, deadline: float = _PROBE_DEADLINE) -> bool:
        """Whether the service answers SERVING for the overall service ``""`` right now."""
        request = health_pb2.HealthCheckRequest(service="")
        try:
            response = await self._stub.Check(request, timeout=deadline)
        except grpc.aio.AioRpcError:
            return False  # not listening yet, not registered yet, or shutting down
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 -- bounds a polling loop
        """Poll until SERVING (``True``) or until ``timeout`` seconds have passed (``False``)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, timeout)
        while True:
            remaining = end - loop.time()
            if await self.serving(deadline=max(0.05, min(_PROBE_DEADLINE, remaining))):
                return True
            if loop.time() + _PAUSE >= end:
                return False
            await asyncio.sleep(_PAUSE)

    async def close(self) -> None:
        """Close the channel."""
        with contextlib.suppress(Exception):
            await self._channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def wait_for_health(address: str, timeout: float) -> bool:  # noqa: ASYNC109
    """Whether the service at ``address`` reports SERVING within ``timeout`` seconds."""
    async with HealthProbe(address) as probe:
        return await probe.wait(timeout)
