"""The chaos scenarios and their short (``make test``) and long (``make chaos``) sizes.

* ``services`` — SIGKILL random resolvers, executors and the monitor while workflows run;
* ``nats`` — SIGKILL nats-server itself (``sync_interval: always``) and restart it on the same
  store dir and ports;
* ``drops`` — no kills; executors "lose" 10 % of their outcomes (``STELLWERK_FAULT_DROP_EVENTS``),
  so only recovery can finish those workflows;
* ``fan-in`` — 200 parallel tasks finishing at the same instant into one join, with 2 resolvers,
  every outcome event republished several times: the join runs exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LONG", "SHORT", "SHORT_SETTINGS", "Scenario"]

SHORT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("STELLWERK_TASK_LEASE", "2"),
    ("STELLWERK_RECONCILE_INTERVAL", "1"),
    ("STELLWERK_DEDUP_WINDOW", "10"),
    ("STELLWERK_MAX_DELIVERIES", "50"),  # kills cause redeliveries; poison handling is elsewhere
    ("STELLWERK_DRAIN_TIMEOUT", "1"),
    ("STELLWERK_JANITOR_INTERVAL", "5"),
)
"""Short leases and intervals, so that each kill costs seconds, not half a minute."""


@dataclass(frozen=True)
class Scenario:
    """One chaos run: what to submit, what to kill, which faults to inject."""

    name: str
    workflows: int = 0
    """Random 10-task DAGs to submit."""
    failing: int = 0
    """How many of them have a task told to fail."""
    cancels: int = 0
    """How many of the others are cancelled a moment (0.1-1 s) after their submit."""
    kills: int = 0
    kinds: tuple[tuple[str, float], ...] = ()
    """(service kind, weight) to choose victims from: resolver, executor, monitor, nats."""
    down_time: tuple[float, float] = (0.2, 1.5)
    """Seconds a victim stays dead before it is restarted (uniform)."""
    min_uptime: float = 0.0
    """Seconds a restarted victim lives at least before it is killed again (0: it may die while
    it is still recovering, before its clients even reconnected)."""
    submit_spread: float = 8.0
    """Submissions are spread evenly over this many seconds; kills over the same span."""
    sync_always: bool = False
    drop_events: float = 0.0
    fan_in: int = 0
    """Width of the fan-in workflow (0: none)."""
    replay: int = 0
    """Republish every outcome event this many times (with fresh message ids)."""
    sleep: float = 0.3
    """Each handler sleeps a random 0..sleep seconds."""
    slow_every: int = 0
    """Every n-th workflow sleeps up to ``slow_sleep`` instead (0: none), so that some handlers
    outlive an outage longer than the lease and the executor must give their claims up."""
    slow_sleep: float = 4.0
    concurrency: int = 8
    resolvers: int = 2
    executors: int = 3
    finish_timeout: float = 60.0
    """Seconds after the last kill (or submit) within which every workflow must be over."""
    settings: tuple[tuple[str, str], ...] = SHORT_SETTINGS


_SERVICES = (("executor", 3.0), ("resolver", 2.0), ("monitor", 1.0))

SHORT: dict[str, Scenario] = {
    "services": Scenario(
        "services",
        workflows=40,
        failing=4,
        cancels=6,
        kills=6,
        kinds=_SERVICES,
        submit_spread=10.0,
    ),
    "nats": Scenario(
        "nats",
        workflows=16,
        failing=2,
        kills=2,
        kinds=(("nats", 1.0),),
        down_time=(0.5, 2.5),
        submit_spread=8.0,
        sync_always=True,
        sleep=0.6,
        slow_every=4,
        slow_sleep=3.5,
        min_uptime=2.0,  # the long run also kills a server that is still recovering
    ),
    "drops": Scenario("drops", workflows=16, failing=2, drop_events=0.1, submit_spread=4.0),
    "fan-in": Scenario("fan-in", fan_in=200, replay=3, concurrency=80, sleep=0.0),
}

LONG: dict[str, Scenario] = {
    "services": Scenario(
        "services",
        workflows=200,
        failing=20,
        cancels=20,
        kills=28,
        kinds=_SERVICES,
        submit_spread=100.0,
        finish_timeout=180.0,
    ),
    "nats": Scenario(
        "nats",
        workflows=60,
        failing=6,
        kills=6,
        kinds=(("nats", 1.0),),
        down_time=(0.5, 3.0),
        submit_spread=40.0,
        sync_always=True,
        sleep=1.0,
        slow_every=3,
        finish_timeout=180.0,
    ),
    "drops": Scenario("drops", workflows=60, failing=6, drop_events=0.1, submit_spread=20.0),
    "fan-in": Scenario("fan-in", fan_in=200, replay=5, concurrency=80, sleep=0.0),
}
