"""A small Prometheus text endpoint: counters and histograms a service keeps about itself.

Deliberately tiny (no client library): ``GET /metrics`` on ``--metrics-listen`` /
``STELLWERK_METRICS_LISTEN`` returns the text exposition format.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Sequence

__all__ = ["Counter", "Histogram", "MetricsServer", "Registry"]

# Fine around the 1 ms and 5 ms targets, so quantiles read from the buckets stay close to the truth.
LATENCY_BUCKETS = (
    0.0002, 0.0004, 0.0006, 0.0008, 0.0009, 0.001, 0.0011, 0.00125, 0.0015, 0.00175, 0.002,
    0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Counter:
    """A monotonically increasing count."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def render(self) -> str:
        """Exposition text."""
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n"
        return f"{head}{self.name} {self.value}\n"


class Histogram:
    """Observations counted into cumulative buckets (seconds)."""

    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.help = help_text
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> str:
        """Exposition text."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.sum}")
        lines.append(f"{self.name}_count {self.count}")
        return "\n".join(lines) + "\n"


class Registry:
    """The metrics of one process."""

    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        """Create and register a counter."""
        metric = Counter(name, help_text)
        self._metrics.append(metric)
        return metric

    def histogram(self, name: str, help_text: str) -> Histogram:
        """Create and register a histogram."""
        metric = Histogram(name, help_text)
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The whole exposition."""
        return "".join(m.render() for m in self._metrics)


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
            body = self._registry.render().encode() if ok else b"not found\n"
            status = b"200 OK" if ok else b"404 Not Found"
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
