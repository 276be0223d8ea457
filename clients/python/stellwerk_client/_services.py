"""Small clients of the executor's and the monitor's introspection APIs."""

from __future__ import annotations

import grpc

from stellwerk_api.execution.v1 import executor_service_pb2 as exe
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as exe_grpc
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc

from ._channel import BaseClient, call

__all__ = ["ExecutorClient", "MonitorClient"]


class ExecutorClient(BaseClient):
    """Async client of one executor's ``ExecutorService`` (connect to the executor's address)."""

    def __init__(self, channel: grpc.aio.Channel, address: str, timeout: float) -> None:
        super().__init__(channel, address, timeout)
        self._stub = exe_grpc.ExecutorServiceStub(channel)

    async def list_methods(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[exe.Method], str]:
        """One page of the methods this executor runs (by name) and the next page's token."""
        request = exe.ListMethodsRequest(page_size=page_size, page_token=page_token)
        response = await call(self._stub.ListMethods(request, timeout=self.timeout))
        return list(response.methods), response.next_page_token

    async def all_methods(self) -> list[exe.Method]:
        """Every method this executor runs, across all pages."""
        methods: list[exe.Method] = []
        token = ""
        while True:
            page, token = await self.list_methods(page_token=token)
            methods.extend(page)
            if not token:
                return methods

    async def get_executor(self) -> exe.Executor:
        """The executor's identity, load and counters."""
        request = exe.GetExecutorRequest()
        response = await call(self._stub.GetExecutor(request, timeout=self.timeout))
        return response.executor


class MonitorClient(BaseClient):
    """Async client of the monitor's ``MonitorService`` (connect to the monitor's address)."""

    def __init__(self, channel: grpc.aio.Channel, address: str, timeout: float) -> None:
        super().__init__(channel, address, timeout)
        self._stub = mon_grpc.MonitorServiceStub(channel)

    async def get_overview(self) -> mon.GetOverviewResponse:
        """Runs and tasks counted by state, and every executor seen recently."""
        request = mon.GetOverviewRequest()
        return await call(self._stub.GetOverview(request, timeout=self.timeout))
