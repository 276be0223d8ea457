"""What every client shares: one insecure channel, a default deadline, domain errors."""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable
from types import TracebackType
from typing import Self, TypeVar

import grpc

from ._tracing import client_interceptors
from .errors import InvalidArgumentError, Problem
from .wire import GRPC_MAX_MESSAGE_BYTES, error_from_rpc

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "BaseClient",
    "call",
    "check_timeout",
    "default_address",
    "open_channel",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""The resolver's address when neither an argument nor ``STELLWERK_ADDRESS`` names one."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a unary call may take unless the client was connected with another ``timeout``."""

_T = TypeVar("_T")


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to ``address`` (``HOST:PORT``); must be called inside a running loop."""
    return grpc.aio.insecure_channel(
        address,
        interceptors=client_interceptors(),  # OpenTelemetry, when the application traces
        options=[
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ],
    )


async def call(awaitable: Awaitable[_T]) -> _T:
    """Await one RPC; a failure raises its domain error (UNAVAILABLE: ``UnavailableError``)."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from exc


def check_timeout(timeout: float) -> float:
    """``timeout`` if it is a usable deadline in seconds, else ``InvalidArgumentError``."""
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        message = f"must be a positive number of seconds, got {timeout!r}"
        raise InvalidArgumentError(problems=[Problem(None, "timeout", message)])
    return float(timeout)


def default_address() -> str:
    """The resolver's ``HOST:PORT``: ``STELLWERK_ADDRESS``, else :data:`DEFAULT_ADDRESS`."""
    return os.environ.get("STELLWERK_ADDRESS", "").strip() or DEFAULT_ADDRESS


class BaseClient:
    """An open channel with a default per-call deadline; an async context manager."""

    def __init__(self, channel: grpc.aio.Channel, address: str, timeout: float) -> None:
        self._channel = channel
        self.address = address
        """The ``HOST:PORT`` this client talks to."""
        self.timeout = check_timeout(timeout)
        """Deadline of each unary call, in seconds."""

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 -- the deadline of each later call
    ) -> Self:
        """A client for ``address`` (default: env ``STELLWERK_ADDRESS``, else ``127.0.0.1:50051``).

        Connecting is lazy, as in gRPC: an unreachable server shows up as ``UnavailableError``
        on the first call, at once, rather than here.
        """
        target = address or default_address()
        channel = open_channel(target)
        # Start the TCP/HTTP2 handshake now so that the first call does not pay for all of it.
        channel.get_state(try_to_connect=True)
        return cls(channel, target, timeout)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
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
