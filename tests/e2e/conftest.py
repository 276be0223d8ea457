"""The stack as separate processes against one real nats-server per module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellwerk.core.natsd import NatsServer
from stellwerk_api.execution.v1 import executor_service_pb2_grpc
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HANDLER_ENV = {
    "PYTHONPATH": os.pathsep.join([str(FIXTURES), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    "STELLWERK_HANDLER_MODULES": "e2e_handlers",
    "STELLWERK_SCRIPT_DIRS": str(ROOT / "examples" / "scripts"),
}


@dataclass
class Stack:
    nats: NatsServer
    resolver: ServiceProcess
    executors: list[ServiceProcess]
    monitor: ServiceProcess


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def stack(nats_server_module: NatsServer) -> Iterator[Stack]:
    url = nats_server_module.url
    resolver = ServiceProcess("resolver", url, env=HANDLER_ENV).start()
    executors = [
        ServiceProcess(
            "executor", url, env={**HANDLER_ENV, "STELLWERK_EXECUTOR_ID": f"exec-{i}"}
        ).start()
        for i in range(2)
    ]
    monitor = ServiceProcess("monitor", url).start()
    everything = [resolver, *executors, monitor]
    try:
        yield Stack(nats_server_module, resolver, executors, monitor)
    finally:
        for proc in everything:
            proc.terminate()


@pytest.fixture
async def ready_stack(stack: Stack) -> Stack:
    for proc in [stack.resolver, *stack.executors, stack.monitor]:
        await eventually(
            lambda p=proc: serving(p.address), timeout=60, message=f"{proc.service} SERVING"
        )
    return stack


@pytest.fixture
async def workflows(
    ready_stack: Stack,
) -> AsyncIterator[workflow_service_pb2_grpc.WorkflowServiceAsyncStub]:
    async with grpc.aio.insecure_channel(ready_stack.resolver.address) as channel:
        yield workflow_service_pb2_grpc.WorkflowServiceStub(channel)  # type: ignore[misc]


@pytest.fixture
async def executor_api(
    ready_stack: Stack,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceAsyncStub]:
    async with grpc.aio.insecure_channel(ready_stack.executors[0].address) as channel:
        yield executor_service_pb2_grpc.ExecutorServiceStub(channel)  # type: ignore[misc]


@pytest.fixture
async def monitor_api(
    ready_stack: Stack,
) -> AsyncIterator[monitor_service_pb2_grpc.MonitorServiceAsyncStub]:
    async with grpc.aio.insecure_channel(ready_stack.monitor.address) as channel:
        yield monitor_service_pb2_grpc.MonitorServiceStub(channel)  # type: ignore[misc]
