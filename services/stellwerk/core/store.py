"""Typed, compare-and-set access to the KV documents, with a bounded read cache.

The cache only saves reads: every write is a compare-and-set on the revision we last saw, so a
stale cache entry costs one failed write and one re-read, never a wrong decision (invariant 1:
memory is a cache, KV is the truth).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats.js.errors as jserr
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from stellwerk.core.errors import ConflictError, NotFoundError, UnavailableError
from stellwerk.core.publish import (
    NATS_FAILURES,
    Ack,
    JetStreamWriter,
    Message,
    kv_subject,
    publish_all,
)
from stellwerk.core.records import RunRecord, TaskRecord

__all__ = ["DocumentStore", "Versioned", "run_store", "task_store"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A document and the KV revision it was read or written at."""

    value: T
    revision: int


class DocumentStore(Generic[T]):
    """Documents of one kind in one bucket."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        cache_size: int = 50_000,
        writer: JetStreamWriter | None = None,
    ) -> None:
        self.kv = kv
        self._writer = writer
        self._encode = encode
        self._decode = decode
        self._cache: OrderedDict[str, Versioned[T]] = OrderedDict()
        self._cache_size = cache_size

    def _remember(self, key: str, item: Versioned[T]) -> Versioned[T]:
        self._cache[key] = item
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return item

    def forget(self, key: str) -> None:
        """Drop ``key`` from the cache."""
        self._cache.pop(key, None)

    def cached(self, key: str) -> Versioned[T] | None:
        """The cached copy of ``key``, if any (no I/O; may be stale)."""
        return self._cache.get(key)

    async def get(self, key: str, *, fresh: bool = False) -> Versioned[T] | None:
        """The document under ``key`` (``None`` if absent); ``fresh`` bypasses the cache."""
        if not fresh:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        try:
            entry = await self.kv.get(key)
        except jserr.KeyNotFoundError:
            self.forget(key)
            return None
        except NATS_FAILURES as exc:  # not now (503 in an election, a reconnect): retry later
            raise UnavailableError(f"NATS unavailable reading {key}: {exc}") from exc
        # A TTL/limit marker reads back as an entry without a value: treat it as absent.
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            self.forget(key)
            return None
        return self._remember(key, Versioned(self._decode(entry.value), entry.revision or 0))

    async def create(self, key: str, value: T) -> Versioned[T] | None:
        """Write ``value`` only if ``key`` is absent; ``None`` when it already exists."""
        try:
            revision = await self.kv.create(key, self._encode(value))
        except jserr.KeyWrongLastSequenceError:
            return None
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable writing {key}: {exc}") from exc
        return self._remember(key, Versioned(value, revision))

    async def create_many(
        self, nc: NatsClient, items: Sequence[tuple[str, T]]
    ) -> list[Versioned[T] | None]:
        """:meth:`create` for many keys, published back to back (``core.publish``); ``None`` for
        each key that already existed."""
        expect_new = {"Nats-Expected-Last-Subject-Sequence": "0"}
        acks = await publish_all(
            nc,
            [Message(kv_subject(self.kv, k), self._encode(v), expect_new) for k, v in items],
        )
        created: list[Versioned[T] | None] = []
        for (key, value), ack in zip(items, acks, strict=True):
            if ack.sequence is not None:
                created.append(self._remember(key, Versioned(value, ack.sequence)))
            elif ack.wrong_last_sequence:
                created.append(None)
            else:
                raise UnavailableError(f"NATS refused writing {key}: {ack.description}")
        return created

    async def put(self, key: str, value: T) -> Versioned[T]:
        """Unconditional write (only for documents with a single writer)."""
        try:
            revision = await self.kv.put(key, self._encode(value))
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable writing {key}: {exc}") from exc
        return self._remember(key, Versioned(value, revision))

    async def update(
        self, key: str, value: T, revision: int, *, encoded: bytes | None = None
    ) -> Versioned[T]:
        """Compare-and-set: write only if ``key`` is still at ``revision``; ``encoded`` is
        ``value`` encoded already (by a caller that had to measure it)."""
        if self._writer is not None:
            return await (await self.send_update(key, value, revision, encoded=encoded))
        data = self._encode(value) if encoded is None else encoded
        try:
            new_revision = await self.kv.update(key, data, last=revision)
        except jserr.KeyWrongLastSequenceError as exc:
            self.forget(key)
            raise ConflictError(f"{key} changed since revision {revision}") from exc
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable writing {key}: {exc}") from exc
        return self._remember(key, Versioned(value, new_revision))

    async def send_update(
        self, key: str, value: T, revision: int, *, encoded: bytes | None = None
    ) -> Coroutine[Any, Any, Versioned[T]]:
        """:meth:`update` in two steps: the write is sent when this returns, and awaiting what it
        returns gives the result (or ``ConflictError``). Writes sent one after another leave in
        one socket write (see ``JetStreamWriter.send``). Without a writer, nothing is sent
        before that second await. What it returns must be awaited or closed."""
        if self._writer is None:
            return self.update(key, value, revision, encoded=encoded)
        data = self._encode(value) if encoded is None else encoded
        headers = {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        sent = await self._writer.send(kv_subject(self.kv, key), data, headers)
        return self._updated(key, value, revision, sent)

    async def _updated(
        self, key: str, value: T, revision: int, sent: asyncio.Future[Ack]
    ) -> Versioned[T]:
        ack = await sent
        if ack.wrong_last_sequence:
            self.forget(key)
            raise ConflictError(f"{key} changed since revision {revision}")
        return self._remember(key, Versioned(value, ack.stored(f"writing {key}")))

    async def mutate(
        self,
        key: str,
        change: Callable[[T], T | None] | Callable[[T], Awaitable[T | None]],
        *,
        attempts: int = 50,
    ) -> tuple[Versioned[T], bool]:
        """Apply ``change`` with compare-and-set until it sticks.

        ``change`` returns the new document, or ``None`` for "nothing to do". Returns the current
        document and whether this call wrote it. Raises ``NotFoundError`` if the key is absent.
        """
        fresh = False
        for _ in range(attempts):
            current = await self.get(key, fresh=fresh)
            if current is None:
                raise NotFoundError(f"{key} does not exist")
            outcome = change(current.value)
            new = await outcome if asyncio.iscoroutine(outcome) else outcome
            if new is None:
                return current, False
            try:
                return await self.update(key, new, current.revision), True  # type: ignore[arg-type]
            except ConflictError:
                fresh = True
        raise ConflictError(f"{key}: gave up after {attempts} conflicting writes")

    async def delete(self, key: str) -> None:
        """Remove ``key`` and its history (idempotent)."""
        self.forget(key)
        try:
            await self.kv.purge(key)
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable deleting {key}: {exc}") from exc


def task_store(
    kv: KeyValue, *, cache_size: int = 50_000, writer: JetStreamWriter | None = None
) -> DocumentStore[TaskRecord]:
    """Store of task documents (``writer``: compare-and-set through it, for the hot path)."""
    return DocumentStore(
        kv,
        encode=TaskRecord.to_bytes,
        decode=TaskRecord.from_bytes,
        cache_size=cache_size,
        writer=writer,
    )


def run_store(
    kv: KeyValue, *, cache_size: int = 10_000, writer: JetStreamWriter | None = None
) -> DocumentStore[RunRecord]:
    """Store of run headers (``writer``: compare-and-set through it, for the hot path)."""
    return DocumentStore(
        kv,
        encode=RunRecord.to_bytes,
        decode=RunRecord.from_bytes,
        cache_size=cache_size,
        writer=writer,
    )
