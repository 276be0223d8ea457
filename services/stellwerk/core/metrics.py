"""Prometheus metrics of one service process, with prometheus-client, served at ``/metrics``.

Each service owns a :class:`Registry` (a ``CollectorRegistry`` of its own, not the library's
global one), so several services in one test process never collide. ``GET /metrics`` on
``--metrics-listen`` / ``STELLWERK_METRICS_LISTEN`` returns the text exposition format, served
by a few lines of asyncio on the service's own loop (no thread, no second HTTP stack).

Every metric name is defined here, once: the services create them through the ``Registry``
methods, and the README lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "LATENCY_BUCKETS",
    "TASK_DURATION_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricsServer",
    "Registry",
]

# Fine around the 1 ms and 5 ms targets, so quantiles read from the buckets stay close to the truth.
LATENCY_BUCKETS = (
    0.0002, 0.0004, 0.0006, 0.0008, 0.0009, 0.001, 0.0011, 0.00125, 0.0015, 0.00175, 0.002,
    0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
TASK_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip


class Registry:
    """The metrics of one process; each constructor registers one metric family."""

    def __init__(self) -> None:
        self.collectors = CollectorRegistry(auto_describe=True)

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """A counter (``name`` without the ``_total`` suffix, which the library adds)."""
        return Counter(name, help_text, labelnames=labels, registry=self.collectors)

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge."""
        return Gauge(name, help_text, labelnames=labels, registry=self.collectors)

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """A histogram in seconds."""
        return Histogram(
            name, help_text, labelnames=labels, buckets=buckets, registry=self.collectors
        )

    def render(self) -> bytes:
        """The whole exposition."""
        return generate_latest(self.collectors)


class MetricsServer:
    """Serves ``registry`` at ``GET /metrics`` over plain HTTP/1.0."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(self._handle, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            ok = request.startswith(b"GET /metrics")
            body = self._registry.render() if ok else b"not found\n"
            status = b"200 OK" if ok else b"404 Not Found"
            kind = CONTENT_TYPE_LATEST.encode() if ok else b"text/plain"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind + b"\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
