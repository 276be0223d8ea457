"""Reading a Prometheus histogram from ``/metrics`` text and estimating its quantiles."""

from __future__ import annotations

import asyncio
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HISTOGRAM",
    "Histogram",
    "fetch_histogram",
    "latency_figures",
    "parse_histogram",
    "settled_histogram",
]

HISTOGRAM = "stellwerk_dependency_resolution_seconds"

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LE = re.compile(r'le="([^"]*)"')


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (``inf`` last), with the sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made between ``earlier`` and this scrape."""
        before = dict(earlier.buckets)
        return Histogram(
            buckets=tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
            sum=self.sum - earlier.sum,
            count=self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile in the histogram's unit, interpolating linearly inside the bucket
        that holds it (as Prometheus' ``histogram_quantile`` does); ``None`` when empty. A
        quantile in the ``+Inf`` bucket is reported as the largest finite bound."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within [0, 1]")
        total = self.buckets[-1][1] if self.buckets else 0.0
        if total <= 0:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank and cumulative > below:
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - below) / (cumulative - below)
            lower, below = (upper if not math.isinf(upper) else lower), cumulative
        return lower

    def densities(self) -> list[tuple[float, float, float]]:
        """``(lower, upper, observations)`` per finite bucket (for charts)."""
        out: list[tuple[float, float, float]] = []
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if math.isinf(upper):
                break
            out.append((lower, upper, cumulative - below))
            lower, below = upper, cumulative
        return out


def parse_histogram(text: str, name: str) -> Histogram | None:
    """The histogram ``name`` in Prometheus text format, summed over all its label sets;
    ``None`` if the text has no bucket of it."""
    buckets: dict[float, float] = {}
    total_sum = 0.0
    total_count = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        metric, labels, raw = match.group("name"), match.group("labels") or "", match["value"]
        try:
            value = float(raw)
        except ValueError:
            continue
        if metric == f"{name}_bucket":
            le = _LE.search(labels)
            if le is None:
                continue
            try:
                bound = float(le.group(1))  # "+Inf" parses as inf
            except ValueError:
                continue
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif metric == f"{name}_sum":
            total_sum += value
        elif metric == f"{name}_count":
            total_count += value
    if not buckets:
        return None
    return Histogram(tuple(sorted(buckets.items())), total_sum, total_count)


def fetch_histogram(address: str, name: str, *, timeout: float = 5.0) -> Histogram | None:
    """Scrape ``http://address/metrics``; ``None`` if unreachable or the histogram is absent."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return parse_histogram(text, name)


async def settled_histogram(address: str | None) -> Histogram | None:
    """Scrape until two scrapes 100 ms apart agree (observations may trail the end by a hair)."""
    if address is None:
        return None
    previous = await asyncio.to_thread(fetch_histogram, address, HISTOGRAM)
    for _ in range(20):
        await asyncio.sleep(0.1)
        current = await asyncio.to_thread(fetch_histogram, address, HISTOGRAM)
        if current is None or previous is None or current.count == previous.count:
            return current
        previous = current
    return previous


def latency_figures(before: Histogram | None, after: Histogram | None) -> dict[str, Any]:
    """p50/p99/mean (ms) of the observations between two scrapes; ``None`` when unavailable."""
    if before is None or after is None:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "count": 0, "buckets": []}
    delta = after.minus(before)
    p50, p99 = delta.quantile(0.5), delta.quantile(0.99)
    return {
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "mean_ms": delta.sum / delta.count * 1000 if delta.count else None,
        "count": delta.count,
        "buckets": [[lo * 1000, hi * 1000, n] for lo, hi, n in delta.densities()],
    }
