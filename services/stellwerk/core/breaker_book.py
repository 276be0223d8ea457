"""Where the circuit breakers live: their records in ``stellwerk-runs`` (``breaker.<kind>.<id>``),
the in-memory copy every resolver and executor keeps of them (:class:`BreakerBook`, a KV watch
like ``CancelledRuns``), their compare-and-set writes, and the reads of the inspection calls.

The book is a cache (invariant 1): the watch's first pass delivers every record, a broken
watch is made anew (and once a minute anyway), and a process that lost it rebuilds it from KV.
The hot path asks the book, never KV (invariant 5): an executor looks its method up in a dict
before it runs an attempt, a resolver looks up the run it applies outcomes of. KV is read and
written only where a breaker changes: a failure counted, a breaker opened or closed, a trial
let through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import nats.js.errors as jserr
from nats.js.kv import KeyValue

from stellwerk.core.breakers import (
    Breaker,
    BreakerState,
    breaker_key,
    resolution_retries_key,
    scope_of_breaker_key,
)
from stellwerk.core.convert import timestamp
from stellwerk.core.errors import UnavailableError
from stellwerk.core.kvscan import snapshot
from stellwerk.core.kvwatch import follow_keys
from stellwerk.core.publish import NATS_FAILURES
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = [
    "CLOSE",
    "BreakerBook",
    "all_breakers",
    "breaker_to_proto",
    "read_breakers",
    "resolution_retries",
    "visible_breakers",
]

logger = logging.getLogger(__name__)

CLOSE = object()
"""What a change returns to close a breaker (its record is deleted)."""

_WATCH_FILTER = "breaker.>"
_CAS_TRIES = 8

Change = Callable[[Breaker | None], Breaker | object | None]


class BreakerBook:
    """Every breaker record, by scope; changed through :meth:`change` (a compare-and-set)."""

    def __init__(self) -> None:
        self._breakers: dict[str, Breaker] = {}
        self._open = 0
        self._renew = asyncio.Event()
        self._loaded = asyncio.Event()
        self.kv: KeyValue | None = None

    def get(self, scope: str) -> Breaker | None:
        """The breaker of ``scope`` as last seen (``None``: closed, nothing counted)."""
        return self._breakers.get(scope)

    @property
    def any_open(self) -> bool:
        """Whether some breaker is OPEN or HALF_OPEN (else successes need no look-up at all)."""
        return self._open > 0

    def note(self, scope: str, breaker: Breaker | None) -> None:
        """Remember ``breaker`` (``None``: closed) — from the watch, or a write of ours."""
        before = self._breakers.pop(scope, None)
        if breaker is not None:
            self._breakers[scope] = breaker
        self._open += int(breaker is not None and breaker.open)
        self._open -= int(before is not None and before.open)

    async def loaded(self) -> None:
        """Wait until the watch's first pass is in."""
        await self._loaded.wait()

    def renew(self) -> None:
        """Make the watch anew (after a reconnect: it may have missed updates)."""
        self._renew.set()

    async def change(self, scope: str, change: Change) -> Breaker | None:
        """Apply ``change`` to the stored record of ``scope`` (``None`` if absent) with a
        compare-and-set, re-applied on a fresh copy when another process wrote first.
        ``change`` returns the new record, :data:`CLOSE`, or ``None`` for "no write". Returns
        the record as it stands afterwards. ``UnavailableError`` when NATS cannot take it."""
        assert self.kv is not None, "the book is not attached to the runs bucket"
        key = breaker_key(scope)
        for _ in range(_CAS_TRIES):
            try:
                current, revision = await self._read(key)
                new = change(current)
                if new is None:
                    self.note(scope, current)
                    return current
                if new is CLOSE:
                    if revision is not None:
                        await self.kv.delete(key, last=revision)
                    self.note(scope, None)
                    return None
                assert isinstance(new, Breaker)
                if revision is None:
                    await self.kv.create(key, new.to_bytes())
                else:
                    await self.kv.update(key, new.to_bytes(), last=revision)
                self.note(scope, new)
                return new
            except jserr.KeyWrongLastSequenceError:  # another process wrote first
                continue
            except NATS_FAILURES as exc:
                raise UnavailableError(f"NATS unavailable writing {key}: {exc}") from exc
        raise UnavailableError(f"{key}: gave up after {_CAS_TRIES} conflicting writes")

    async def _read(self, key: str) -> tuple[Breaker | None, int | None]:
        assert self.kv is not None
        try:
            entry = await self.kv.get(key)
        except jserr.KeyNotFoundError:
            return None, None
        if not entry.value:
            return None, entry.revision
        try:
            return Breaker.from_bytes(entry.value), entry.revision
        except ValueError:  # unreadable: start afresh over it
            logger.warning("unreadable breaker record %s replaced", key)
            return None, entry.revision

    async def watch(self, runs_kv: KeyValue) -> None:
        """Follow the records until cancelled (``core/kvwatch``)."""
        self.kv = runs_kv
        await follow_keys(
            runs_kv,
            _WATCH_FILTER,
            what="breakers",
            renew=self._renew,
            put=self._record_put,
            removed=lambda key: self.note(scope_of_breaker_key(key), None),
            first_pass=self._first_pass,
        )

    def _record_put(self, key: str, value: bytes) -> bool:
        try:
            breaker = Breaker.from_bytes(value)
        except ValueError:
            return False
        self.note(scope_of_breaker_key(key), breaker)
        return True

    def _first_pass(self, keys: set[str]) -> None:
        seen = {scope_of_breaker_key(k) for k in keys}
        for scope in set(self._breakers) - seen:  # removed meanwhile
            self.note(scope, None)
        self._loaded.set()


async def read_breakers(runs_kv: KeyValue, scopes: Iterable[str]) -> list[Breaker]:
    """The stored records of ``scopes`` (absent ones left out); off the hot path."""
    found = []
    for scope in scopes:
        try:
            entry = await runs_kv.get(breaker_key(scope))
        except jserr.KeyNotFoundError:
            continue
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable reading breakers: {exc}") from exc
        if entry.value:
            with contextlib.suppress(ValueError):
                found.append(Breaker.from_bytes(entry.value))
    return found


async def all_breakers(runs_kv: KeyValue) -> list[Breaker]:
    """Every stored breaker record (the overview)."""
    found = []
    for data in (await snapshot(runs_kv, _WATCH_FILTER)).values():
        with contextlib.suppress(ValueError):
            found.append(Breaker.from_bytes(data))
    return found


def visible_breakers(breakers: Iterable[Breaker], now: float) -> list[Breaker]:
    """The breakers that are not CLOSED, in scope order (what readers are shown)."""
    return sorted(
        (b for b in breakers if b.state(now) is not BreakerState.CLOSED), key=lambda b: b.scope
    )


async def resolution_retries(runs_kv: KeyValue) -> int:
    """The resolvers' published retry counts, summed (``resolution-retries.*``)."""
    total = 0
    for data in (await snapshot(runs_kv, resolution_retries_key(None))).values():
        with contextlib.suppress(ValueError):
            total += int(data)
    return total


def breaker_to_proto(breaker: Breaker, now: float) -> pb.CircuitBreaker:
    """The contract's ``CircuitBreaker`` of ``breaker`` as it reads at ``now``."""
    state = breaker.state(now)
    message = pb.CircuitBreaker(
        scope=breaker.scope,
        state=pb.BreakerState.Value(f"BREAKER_STATE_{state.value}"),
        failures=len(breaker.failures),
    )
    retry = timestamp(breaker.retry_at) if state is BreakerState.OPEN else None
    if retry is not None:
        message.retry_time.CopyFrom(retry)
    changed = timestamp(breaker.changed_at)
    if changed is not None:
        message.change_time.CopyFrom(changed)
    return message
