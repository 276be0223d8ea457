"""What every client shares: one insecure channel, a deadline on every call, domain errors, and
retries of UNAVAILABLE (only) with tenacity."""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

import grpc
import tenacity

from ._tracing import client_interceptors
from .errors import DeadlineExceededError, InvalidArgumentError, Problem, UnavailableError
from .wire import GRPC_MAX_MESSAGE_BYTES, error_from_rpc

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "BaseClient",
    "RetryConfig",
    "call",
    "check_timeout",
    "default_address",
    "open_channel",
    "should_retry",
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


def should_retry(error: BaseException) -> bool:
    """Whether a failed call is worth repeating: UNAVAILABLE (the service or its NATS cannot be
    reached now) and nothing else.

    Not ``DeadlineExceededError`` although it is a kind of ``UnavailableError``: the server may
    be slow rather than gone, and repeating a slow call multiplies its load. Never invalid input,
    NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION or ABORTED (retried at a higher level, if at
    all).
    """
    return isinstance(error, UnavailableError) and not isinstance(error, DeadlineExceededError)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How a call that failed with UNAVAILABLE is repeated (exponential backoff with jitter)."""

    max_attempts: int = 4
    """Attempts in all, the first included (1: never retry)."""
    initial_delay: float = 0.1
    """Seconds before the first retry; doubled for each one after."""
    max_delay: float = 2.0
    """Longest pause between two attempts, in seconds."""

    def retrying(self) -> tenacity.AsyncRetrying:
        """A tenacity controller for one call."""
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(should_retry),
            stop=tenacity.stop_after_attempt(max(1, self.max_attempts)),
            wait=tenacity.wait_exponential(multiplier=self.initial_delay, max=self.max_delay)
            + tenacity.wait_random(0, self.initial_delay),
            reraise=True,
        )


class BaseClient:
    """An open channel with a per-call deadline and retries; an async context manager."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        timeout: float,
        retry: RetryConfig | None = None,
    ) -> None:
        self._channel = channel
        self.address = address
        """The ``HOST:PORT`` this client talks to."""
        self.timeout = check_timeout(timeout)
        """Default deadline of each unary call, in seconds."""
        # Not ``retry``: that name is Client.retry, the operator call that re-runs a run.
        self.retry_config = retry or RetryConfig()
        """How UNAVAILABLE is retried."""

    async def _unary(
        self,
        invoke: Callable[[float], Awaitable[_T]],
        timeout: float | None,  # noqa: ASYNC109 -- the gRPC deadline of each attempt
        *,
        retry: bool = True,
    ) -> _T:
        """Call ``invoke(deadline)``, mapping failures to domain errors; repeat UNAVAILABLE."""
        deadline = self.timeout if timeout is None else check_timeout(timeout)
        if not retry:
            return await call(invoke(deadline))
        async for attempt in self.retry_config.retrying():
            with attempt:
                return await call(invoke(deadline))
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 -- the deadline of each later call
        retry: RetryConfig | None = None,
    ) -> Self:
        """A client for ``address`` (default: env ``STELLWERK_ADDRESS``, else ``127.0.0.1:50051``).

        Args:
            address: ``HOST:PORT`` of the service.
            timeout: deadline of each call in seconds, unless the call names its own.
            retry: how calls that fail with UNAVAILABLE are repeated (default
                :class:`RetryConfig`; ``RetryConfig(max_attempts=1)`` never retries).

        Connecting is lazy, as in gRPC: an unreachable server shows up as ``UnavailableError``
        on the first call (after its retries) rather than here.
        """
        target = address or default_address()
        channel = open_channel(target)
        # Start the TCP/HTTP2 handshake now so that the first call does not pay for all of it.
        channel.get_state(try_to_connect=True)
        return cls(channel, target, timeout, retry)

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
