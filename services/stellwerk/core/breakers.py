"""Circuit breakers: the record kept in KV and its state machine (pure, clock injected).

Two kinds guard Stellwerk (see ARCHITECTURE.md "Circuit breakers and resolution retries"):

- one per task **method** (scope ``method:<method>``), around its executions: the resolvers
  count the method's failed attempts (handler failures and timeouts — not ``NonRetryableError``,
  poison or too-large results, which say nothing about the method's health) in a sliding
  window; ``threshold`` of them open it. While it is open, executors hold the method's
  deliveries back (``nak`` with a delay) without spending attempts;
- one per **run** (scope ``run:<run id>``), around its dependency resolution: a resolver counts
  the passes that failed (after their in-place retries); ``threshold`` of them open it, and the
  run's outcomes are then handed back until the cool-down ends.

After the cool-down an OPEN breaker reads HALF_OPEN (derived from ``retry_at``, so no write
happens when it falls due, like RETRY_WAIT): one trial passes. A success closes the breaker
(its record is deleted), a failure while HALF_OPEN opens it again for another cool-down.

Every transition here is a function of the record, the observation and ``now``, so it can be
re-applied after a lost compare-and-set, and a repeated observation (a redelivered outcome, its
failure identified by run, task and attempt) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson

from stellwerk.core.names import decode_token, encode_token

__all__ = [
    "METHOD_SCOPE",
    "RETIRED_RETRIES_KEY",
    "RUN_SCOPE",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "breaker_key",
    "closed_by_success",
    "method_scope",
    "opened_by_failure",
    "resolution_retries_key",
    "run_scope",
    "scope_of_breaker_key",
    "trial_taken",
]

METHOD_SCOPE = "method:"
RUN_SCOPE = "run:"
_FORMAT_VERSION = 1


class BreakerState(StrEnum):
    """A breaker's state as readers see it (HALF_OPEN is derived from OPEN and the clock)."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and for how long: ``threshold`` failures within ``window`` seconds
    open it for ``cooldown`` seconds (``threshold`` 0: this kind of breaker is off)."""

    threshold: int
    window: float
    cooldown: float

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.window <= 0 or self.cooldown <= 0:
            raise ValueError(f"breaker policy out of bounds: {self}")

    @property
    def enabled(self) -> bool:
        """Whether breakers of this kind ever open."""
        return self.threshold > 0


@dataclass(frozen=True, slots=True)
class Breaker:
    """One breaker's record (``breaker.<kind>.<id>`` in ``stellwerk-runs``).

    ``failures`` holds ``(time, failure id)`` pairs of the current window (at most
    ``threshold`` of them: no more are needed to decide). ``trial`` names the attempt that was
    let through while HALF_OPEN and ``trial_until`` when, without an outcome, another may go.
    """

    scope: str
    open: bool = False
    failures: tuple[tuple[float, str], ...] = ()
    retry_at: float | None = None
    changed_at: float = 0.0
    cooldown: float = 0.0
    trial: str | None = None
    trial_until: float | None = None
    last_error: str = ""

    def state(self, now: float) -> BreakerState:
        """CLOSED, OPEN until ``retry_at``, HALF_OPEN from then on."""
        if not self.open:
            return BreakerState.CLOSED
        if self.retry_at is not None and now < self.retry_at:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def trial_out(self, now: float) -> bool:
        """Whether a HALF_OPEN breaker's trial is still under way (not lapsed)."""
        return self.trial is not None and self.trial_until is not None and now < self.trial_until

    def to_bytes(self) -> bytes:
        """The KV document."""
        return orjson.dumps(
            {
                "v": _FORMAT_VERSION,
                "scope": self.scope,
                "state": BreakerState.OPEN.value if self.open else BreakerState.CLOSED.value,
                "failures": [list(f) for f in self.failures],
                "retry_at": self.retry_at,
                "changed_at": self.changed_at,
                "cooldown": self.cooldown,
                "trial": self.trial,
                "trial_until": self.trial_until,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Breaker:
        """Read a KV document; ``ValueError`` if it is not one."""
        try:
            raw = orjson.loads(data)
            return cls(
                scope=str(raw["scope"]),
                open=raw["state"] == BreakerState.OPEN.value,
                failures=tuple((float(t), str(i)) for t, i in raw.get("failures", ())),
                retry_at=_float_or_none(raw.get("retry_at")),
                changed_at=float(raw.get("changed_at") or 0.0),
                cooldown=float(raw.get("cooldown") or 0.0),
                trial=raw.get("trial"),
                trial_until=_float_or_none(raw.get("trial_until")),
                last_error=str(raw.get("last_error") or ""),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a breaker record: {exc}") from exc


def method_scope(method: str) -> str:
    """The scope of a method's breaker."""
    return f"{METHOD_SCOPE}{method}"


def run_scope(run_id: str) -> str:
    """The scope of a run's resolution breaker."""
    return f"{RUN_SCOPE}{run_id}"


def breaker_key(scope: str) -> str:
    """Key of a breaker's record in ``stellwerk-runs``: ``breaker.method.<method token>`` for
    scope ``method:<method>``, ``breaker.run.<run>`` for ``run:<run>``; ``breaker.>`` matches
    them all. (Kept here rather than in ``names``, beside the record they hold.)"""
    kind, _, subject = scope.partition(":")
    token = encode_token(subject) if kind == "method" else subject
    return f"breaker.{kind}.{token}"


def scope_of_breaker_key(key: str) -> str:
    """The scope a :func:`breaker_key` was made from."""
    _, kind, token = key.split(".", 2)
    return f"{kind}:{decode_token(token) if kind == 'method' else token}"


def resolution_retries_key(resolver_id: str | None) -> str:
    """Where one resolver process publishes its count of resolution retries in
    ``stellwerk-runs`` (summed by the overview); ``None`` gives the filter of all of them,
    :data:`RETIRED_RETRIES_KEY` included (``core/retry_counts.py``)."""
    return f"resolution-retries.{'*' if resolver_id is None else encode_token(resolver_id)}"


RETIRED_RETRIES_KEY = "resolution-retries.retired"
"""The counts of resolvers that are gone, folded into one by the janitor. No resolver's key is
this one: resolver ids have at least 10 characters, so their tokens at least 14."""


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def opened_by_failure(
    breaker: Breaker | None,
    scope: str,
    failure_id: str,
    policy: BreakerPolicy,
    now: float,
    error: str = "",
) -> Breaker | None:
    """The record after a failure ``failure_id`` observed at ``now``; ``None`` if it changes
    nothing (seen before, the breaker is off, or it is OPEN and still cooling down: attempts
    that started before it opened prove nothing new)."""
    if not policy.enabled:
        return None
    current = breaker if breaker is not None else Breaker(scope=scope, changed_at=now)
    if any(seen == failure_id for _, seen in current.failures):
        return None
    state = current.state(now)
    if state is BreakerState.OPEN:
        return None
    if state is BreakerState.HALF_OPEN:  # the trial (or any attempt) failed: open again
        return _opened(current, ((now, failure_id),), policy, now, error)
    recent = tuple(f for f in current.failures if f[0] > now - policy.window)
    failures = (*recent, (now, failure_id))[-policy.threshold :]
    if len(failures) >= policy.threshold:
        return _opened(current, failures, policy, now, error)
    return replace(current, failures=failures, last_error=error or current.last_error)


def _opened(
    breaker: Breaker,
    failures: tuple[tuple[float, str], ...],
    policy: BreakerPolicy,
    now: float,
    error: str,
) -> Breaker:
    return replace(
        breaker,
        open=True,
        failures=failures,
        retry_at=now + policy.cooldown,
        changed_at=now,
        cooldown=policy.cooldown,
        trial=None,
        trial_until=None,
        last_error=error or breaker.last_error,
    )


def closed_by_success(breaker: Breaker | None) -> bool:
    """Whether a success must be written: it closes an OPEN or HALF_OPEN breaker (an attempt of
    the method worked, or a resolution pass of the run did). A CLOSED breaker keeps counting
    its window: a success in between does not forgive the failures around it."""
    return breaker is not None and breaker.open


def trial_taken(breaker: Breaker, trial_id: str, now: float) -> Breaker | None:
    """The record with ``trial_id`` as the HALF_OPEN breaker's one trial (it may go for one
    cool-down before another may be let through); ``None`` if it may not go now."""
    if breaker.state(now) is not BreakerState.HALF_OPEN:
        return None
    if breaker.trial_out(now) and breaker.trial != trial_id:
        return None
    return replace(breaker, trial=trial_id, trial_until=now + max(breaker.cooldown, 1.0))
