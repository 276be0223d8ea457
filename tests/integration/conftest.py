"""Fixtures of the integration tests: a client connected to the test's own nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from stellwerk.core.natsd import NatsServer


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    """A NATS client on ``nats_server``, closed after the test."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()
