"""The resolvers' counts of resolution retries in ``stellwerk-runs``: published by each resolver
process, summed by the overview, and folded into one total once their resolver is gone.

Each resolver process publishes its count under ``resolution-retries.<resolver token>``
(:func:`~stellwerk.core.breakers.resolution_retries_key`); the id is fresh per process start
(host, pid and a random part), so a restarted resolver never overwrites its predecessor's count.
Left alone, that is one key for every resolver process that ever counted a retry, for good. So:

- **the resolver** (:class:`RetryCountPublisher`) writes its key when its count changed and at
  least every :data:`REFRESH_EVERY` seconds (a heartbeat: the message's store time says it
  lives), by compare-and-set on its last revision; and writes nothing while it has counted
  nothing;
- **the janitor** (:func:`fold_stale_counts`, every sweep) takes a key whose last write is older
  than :data:`STALE_AFTER` (ten heartbeats missed: the resolver is gone), deletes it by
  compare-and-set on the revision it read — a resolver that wrote meanwhile lives, and keeps its
  key — and adds its count to ``resolution-retries.retired`` (compare-and-set), then removes the
  delete marker. So there are at most as many keys as live resolvers, plus one, and the sum of
  them all (:func:`~stellwerk.core.breaker_book.resolution_retries`, GetOverview) stays the
  total of every retry ever counted;
- a resolver that was silent past :data:`STALE_AFTER` (NATS away from it for ten minutes) and
  comes back finds its key gone when its compare-and-set fails: what it had published was folded,
  so it counts that as published already and goes on from there — nothing is counted twice.

Precision: the counts are advisory. A monitor that dies between its delete and its addition loses
that resolver's count (one sweep's window); a resolver whose write took effect unacknowledged and
that then stays away past :data:`STALE_AFTER` counts that write's increase twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import nats.js.errors as jserr
from nats.js.kv import KeyValue

from stellwerk.core.breakers import RETIRED_RETRIES_KEY, resolution_retries_key
from stellwerk.core.errors import ConflictError

__all__ = [
    "REFRESH_EVERY",
    "STALE_AFTER",
    "RetryCountPublisher",
    "fold_stale_counts",
]

logger = logging.getLogger(__name__)

REFRESH_EVERY = 60.0
"""Seconds after which a resolver writes its count again though it did not change."""
STALE_AFTER = 10 * REFRESH_EVERY
"""A count not written for this long belongs to a resolver that is gone."""
_CAS_TRIES = 8
_OPERATION = "KV-Operation"


class RetryCountPublisher:
    """One resolver process's side: :meth:`publish` its count (call it every few seconds)."""

    def __init__(self, runs_kv: KeyValue, resolver_id: str) -> None:
        self._kv = runs_kv
        self.key = resolution_retries_key(resolver_id)
        self._folded = 0  # published counts the janitor folded into the retired total
        self._published = 0  # the value of this process's key, as last written
        self._revision: int | None = None  # of that write; None: no key (yet, or any more)
        self._written_at = 0.0

    async def publish(self, count: int, *, now: float | None = None) -> None:
        """Write ``count`` (this process's retries so far) if it changed or the heartbeat is
        due. Raises what NATS raises; the caller tries again on its next round."""
        now = time.monotonic() if now is None else now
        value = count - self._folded
        if self._revision is None and value == 0:
            return  # nothing counted (or nothing since the fold): no key
        if value == self._published and now - self._written_at < REFRESH_EVERY:
            return
        data = str(value).encode()
        try:
            if self._revision is None:
                self._revision = await self._kv.create(self.key, data)
            else:
                self._revision = await self._kv.update(self.key, data, last=self._revision)
        except jserr.KeyWrongLastSequenceError:
            await self._reconcile()
            return
        self._published, self._written_at = value, now

    async def _reconcile(self) -> None:
        """The key is not at the revision this process wrote last: it was folded (gone), or a
        write whose acknowledgement was lost took effect (then it holds that write)."""
        try:
            entry = await self._kv.get(self.key)
        except jserr.KeyNotFoundError:  # deleted (or a delete marker): folded by the janitor
            logger.warning(
                "resolution retry count %s was folded as stale (this resolver was silent); "
                "going on from there",
                self.key,
            )
            self._folded += self._published
            self._published, self._revision, self._written_at = 0, None, 0.0
            return
        self._revision = entry.revision
        self._published = _count(entry.value)


def _count(data: bytes | None) -> int:
    try:
        return int(data or b"0")
    except ValueError:
        return 0


def _stored_at(message: Any) -> float | None:
    stored: datetime.datetime | None = getattr(message, "time", None)
    return None if stored is None else stored.timestamp()


async def fold_stale_counts(
    runs_kv: KeyValue, *, now: float | None = None, stale_after: float = STALE_AFTER
) -> int:
    """The janitor's side: fold every count not written for ``stale_after`` seconds into
    ``resolution-retries.retired``; returns how many keys it folded."""
    now = time.time() if now is None else now
    js: Any = runs_kv._js  # KeyValue keeps its JetStream context and stream name private
    stream = f"KV_{runs_kv._name}"
    prefix = f"$KV.{runs_kv._name}."
    folded = 0
    # The stream's subjects rather than the bucket's keys: they show delete markers too.
    info = await js.stream_info(stream, subjects_filter=prefix + resolution_retries_key(None))
    for subject in sorted(info.state.subjects or {}):
        key = subject[len(prefix) :]
        if key == RETIRED_RETRIES_KEY:
            continue
        try:
            last = await js.get_msg(stream, subject=prefix + key)
        except jserr.NotFoundError:
            continue
        if (last.headers or {}).get(_OPERATION) is not None:
            # A delete marker left by a sweep cut short after its fold: remove it (only it).
            await js.purge_stream(stream, subject=prefix + key, seq=last.seq + 1)
            continue
        stored = _stored_at(last)
        if stored is None or stored + stale_after > now:
            continue  # its resolver lives (or the time is unknown: leave it)
        try:
            await runs_kv.delete(key, last=last.seq)
        except jserr.KeyWrongLastSequenceError:
            continue  # written since it was read: its resolver lives
        await _add_to_retired(runs_kv, _count(last.data))
        await _drop_marker(js, stream, prefix + key)
        folded += 1
        logger.info("folded the resolution retry count of gone resolver key %s", key)
    return folded


async def _add_to_retired(runs_kv: KeyValue, count: int) -> None:
    if count == 0:
        return
    for _ in range(_CAS_TRIES):
        try:
            entry = await runs_kv.get(RETIRED_RETRIES_KEY)
        except jserr.KeyNotFoundError:
            try:
                await runs_kv.create(RETIRED_RETRIES_KEY, str(count).encode())
                return
            except jserr.KeyWrongLastSequenceError:
                continue  # another monitor created it first
        try:
            total = _count(entry.value) + count
            await runs_kv.update(RETIRED_RETRIES_KEY, str(total).encode(), last=entry.revision)
            return
        except jserr.KeyWrongLastSequenceError:
            continue  # another monitor folded meanwhile
    raise ConflictError(f"could not add {count} to {RETIRED_RETRIES_KEY} in {_CAS_TRIES} tries")


async def _drop_marker(js: Any, stream: str, subject: str) -> None:
    """Remove the delete marker on ``subject``, and never a newer write (a resolver that came
    back): the purge takes only messages up to the marker's sequence."""
    try:
        last = await js.get_msg(stream, subject=subject)
    except jserr.NotFoundError:
        return
    if (last.headers or {}).get(_OPERATION) is not None:
        await js.purge_stream(stream, subject=subject, seq=last.seq + 1)
