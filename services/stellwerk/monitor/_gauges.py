"""The monitor's gauges, refreshed every ``STELLWERK_GAUGE_INTERVAL`` from one health
assessment: runs by state, stuck runs and the depth of every consumer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from stellwerk.core.metrics import Gauge, Registry
from stellwerk.core.monitoring import Health
from stellwerk.core.records import RunState

__all__ = ["Gauges", "refresh"]


class Gauges:
    """``stellwerk_workflows{state}``, ``stellwerk_stuck_workflows`` and
    ``stellwerk_queue_depth{stream,consumer}``."""

    def __init__(self, registry: Registry) -> None:
        self.workflows: Gauge = registry.gauge(
            "stellwerk_workflows", "Runs by state, as KV holds them", labels=("state",)
        )
        self.stuck: Gauge = registry.gauge(
            "stellwerk_stuck_workflows",
            "Running runs without a task transition for STELLWERK_STUCK_AFTER seconds, or that "
            "the reconciler had to move in its last sweep",
        )
        self.queue_depth: Gauge = registry.gauge(
            "stellwerk_queue_depth",
            "Messages waiting in a consumer: pending plus delivered and not yet acknowledged",
            labels=("stream", "consumer"),
        )
        self._queues: set[tuple[str, str]] = set()

    def update(self, health: Health, moved_runs: set[str]) -> None:
        """Set every gauge from ``health`` (and the reconciler's last moves)."""
        for state in RunState:
            self.workflows.labels(state.value).set(health.runs_by_state.get(state.value, 0))
        self.stuck.set(len({s.run_id for s in health.stuck} | moved_runs))
        seen = set()
        for queue in health.queues:
            seen.add((queue.stream, queue.consumer))
            self.queue_depth.labels(queue.stream, queue.consumer).set(queue.depth)
        for gone in self._queues - seen:  # a consumer removed since: drop its series
            self.queue_depth.remove(*gone)
        self._queues = seen


async def refresh(assess: Callable[[], Awaitable[Health]], gauges: Gauges, moved: set[str]) -> int:
    """One refresh; returns the number of stuck runs (for the sweep log)."""
    health = await assess()
    gauges.update(health, moved)
    return len(health.stuck)
