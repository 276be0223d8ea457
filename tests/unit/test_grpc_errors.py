"""Failed calls become domain errors: a deadline is told apart from an unreachable service.

A real ``grpc.aio`` server on loopback (no NATS): one method that never answers, one that
raises a domain error through the interceptor every Stellwerk server uses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from stellwerk.core.errors import (
    DeadlineExceededError,
    NotFoundError,
    StellwerkError,
    UnavailableError,
)
from stellwerk.core.grpc_errors import DomainErrorInterceptor, error_from_rpc
from stellwerk_client.cli._common import EXIT_UNAVAILABLE, exit_for_error

_SERVICE = "stellwerk.test.Probe"


async def _never_answers(request: bytes, context: Any) -> bytes:
    await asyncio.Event().wait()  # ended by the caller's deadline
    return b""


async def _raises(request: bytes, context: Any) -> bytes:
    kind = {b"deadline": DeadlineExceededError, b"not_found": NotFoundError}[request]
    raise kind(f"raised {request.decode()}")


@pytest.fixture
async def address() -> AsyncIterator[str]:
    handlers = {
        "Hang": grpc.unary_unary_rpc_method_handler(_never_answers),
        "Raise": grpc.unary_unary_rpc_method_handler(_raises),
    }
    server = grpc.aio.server(interceptors=[DomainErrorInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def _call(address: str, method: str, request: bytes, timeout: float) -> StellwerkError:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/{_SERVICE}/{method}", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, timeout=timeout)
    return error_from_rpc(info.value)


async def test_a_call_that_outlives_its_deadline_is_deadline_exceeded(address: str) -> None:
    error = await _call(address, "Hang", b"", timeout=0.2)

    assert type(error) is DeadlineExceededError
    # Still a kind of unavailable: code that retries or reports an unreachable service holds.
    assert isinstance(error, UnavailableError)
    assert error.reason == "DEADLINE_EXCEEDED"


async def test_an_unreachable_service_is_unavailable_not_a_deadline() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
        error = await _call(dead, "Hang", b"", timeout=10)

    assert type(error) is UnavailableError


async def test_a_deadline_error_raised_by_a_server_keeps_its_kind(address: str) -> None:
    deadline = await _call(address, "Raise", b"deadline", timeout=10)
    not_found = await _call(address, "Raise", b"not_found", timeout=10)

    assert type(deadline) is DeadlineExceededError
    assert deadline.message == "raised deadline"
    assert type(not_found) is NotFoundError


def test_the_cli_says_no_answer_in_time_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    error = DeadlineExceededError("Deadline Exceeded")

    code = exit_for_error(error, prog="stellwerk status", address="h:1", as_json=False)

    assert code == EXIT_UNAVAILABLE == 3
    assert capsys.readouterr().err == (
        "stellwerk status: the resolver at h:1 did not answer in time: Deadline Exceeded\n"
    )


def test_the_cli_still_says_unavailable_for_an_unreachable_resolver(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = exit_for_error(UnavailableError("down"), prog="stellwerk", address="h:1", as_json=False)

    assert code == EXIT_UNAVAILABLE
    assert "is unavailable: down" in capsys.readouterr().err
