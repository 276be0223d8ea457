"""Clients of the operator APIs: one executor's ``ExecutorService`` and the monitor's
``MonitorService`` (each at its own address)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from stellwerk_api.execution.v1 import executor_service_pb2 as exe
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as exe_grpc
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc

from ._channel import BaseClient, RetryConfig
from ._types import ExecutorInfo, Method, Overview

__all__ = ["ExecutorClient", "MonitorClient"]


class ExecutorClient(BaseClient):
    """Async client of one executor's ``ExecutorService`` (connect to the executor's address)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        timeout: float,
        retry: RetryConfig | None = None,
    ) -> None:
        super().__init__(channel, address, timeout, retry)
        self._stub = exe_grpc.ExecutorServiceStub(channel)

    async def list_methods(
        self,
        *,
        page_size: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 -- each page's gRPC deadline
    ) -> AsyncIterator[Method]:
        """Every method this executor runs, by name, fetching pages as the iteration goes."""
        token = ""
        while True:
            response = await self._unary(self._methods_page(page_size, token), timeout)
            for method in response.methods:
                yield Method.from_proto(method)
            token = response.next_page_token
            if not token:
                return

    def _methods_page(
        self, page_size: int, token: str
    ) -> Callable[[float], Awaitable[exe.ListMethodsResponse]]:
        request = exe.ListMethodsRequest(page_size=page_size, page_token=token)
        return lambda deadline: self._stub.ListMethods(request, timeout=deadline)

    async def all_methods(self) -> list[Method]:
        """Every method this executor runs, as one list."""
        return [method async for method in self.list_methods()]

    async def get_executor(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> ExecutorInfo:
        """The executor's identity, load and counters."""
        request = exe.GetExecutorRequest()
        response = await self._unary(lambda t: self._stub.GetExecutor(request, timeout=t), timeout)
        return ExecutorInfo.from_proto(response.executor)


class MonitorClient(BaseClient):
    """Async client of the monitor's ``MonitorService`` (connect to the monitor's address)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        timeout: float,
        retry: RetryConfig | None = None,
    ) -> None:
        super().__init__(channel, address, timeout, retry)
        self._stub = mon_grpc.MonitorServiceStub(channel)

    async def get_overview(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Overview:
        """Runs and tasks counted by state, and every executor seen recently."""
        request = mon.GetOverviewRequest()
        response = await self._unary(lambda t: self._stub.GetOverview(request, timeout=t), timeout)
        return Overview.from_proto(response)
