"""A stack for the worker edge and the Go/TypeScript clients: nats-server, a resolver and two
executors as processes, with a short lease so that silent workers lose their claims quickly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stellwerk.core.natsd import NatsServer
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

LEASE = 3.0


@dataclass
class PolyglotStack:
    nats: NatsServer
    resolver: ServiceProcess
    executors: list[ServiceProcess]

    @property
    def address(self) -> str:
        """STELLWERK_ADDRESS: the resolver."""
        return self.resolver.address


@pytest.fixture(scope="module")
def stack(nats_server_module: NatsServer) -> Iterator[PolyglotStack]:
    url = nats_server_module.url
    env = {**HANDLER_ENV, "STELLWERK_TASK_LEASE": str(LEASE)}
    resolver = ServiceProcess("resolver", url, env=env).start()
    executors = [
        ServiceProcess("executor", url, env={**env, "STELLWERK_EXECUTOR_ID": f"poly-{i}"}).start()
        for i in range(2)
    ]
    try:
        yield PolyglotStack(nats_server_module, resolver, executors)
    finally:
        for proc in [resolver, *executors]:
            proc.terminate()


@pytest.fixture
async def ready(stack: PolyglotStack) -> PolyglotStack:
    for proc in [stack.resolver, *stack.executors]:
        await eventually(
            lambda p=proc: serving(p.address), timeout=60, message=f"{proc.service} SERVING"
        )
    return stack
