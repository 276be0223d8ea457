"""Fixtures: a real nats-server on a free loopback port with a temp store (function scope by
default; ``nats_server_module`` shares one per module for the slower end-to-end suites)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stellwerk.core.natsd import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer.start_new(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nats_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer.start_new(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()
