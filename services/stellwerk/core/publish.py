"""Publishing to JetStream and awaiting its acknowledgements, cheaper than ``js.publish``.

``js.publish`` is a request per message: random reply tokens (an ``os.urandom`` call each), a
timer and an extra future per message, an acknowledgement object. That was over a quarter of the
resolver's CPU per task, and most of a 10,000-task submit. Here:

- :class:`JetStreamWriter` (the hot path): one wildcard reply subscription per connection, a
  counter for reply tokens, one sweeper task for every deadline;
- :func:`publish_all` (bulk): each message carries its index in its reply subject, one
  subscription collects the acknowledgements, one deadline covers them all.

The messages are the same as ``js.publish`` / ``kv.update`` would send, so the server applies the
same checks (``Nats-Msg-Id`` dedup, expected last subject sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from stellwerk.core.errors import UnavailableError

__all__ = ["NATS_FAILURES", "Ack", "JetStreamWriter", "Message", "kv_subject", "publish_all"]

NATS_FAILURES = (nats.errors.Error, TimeoutError, OSError)
"""What a NATS call raises when NATS could not do it *now* (server away, connection closed or
reconnecting, no reply in time; sockets raise ``OSError``). Such a failure is "unavailable":
the caller may repeat the call. Defined here, the lowest module that talks to NATS, so that
``jetstream`` and ``store`` (which import this one) share it."""

# JetStream's "wrong last sequence" error codes: the key exists (create) or moved on (update).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
# "maximum messages per subject exceeded" on a stream that discards new messages per subject.
SUBJECT_FULL = 10077


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """JetStream's answer to one message: its stream sequence, or the error it refused it with."""

    sequence: int | None
    error_code: int | None = None
    description: str = ""

    @property
    def wrong_last_sequence(self) -> bool:
        """Refused by an expected-last-sequence check (a create of an existing key)."""
        return self.error_code in WRONG_LAST_SEQUENCE

    @property
    def subject_full(self) -> bool:
        """Refused because the subject already holds its one message (an outcome was first)."""
        return self.error_code == SUBJECT_FULL

    def stored(self, what: str) -> int:
        """The stream sequence; raises ``UnavailableError`` naming ``what`` if refused."""
        if self.sequence is None:
            raise UnavailableError(f"JetStream refused {what}: {self.description}")
        return self.sequence


def kv_subject(kv: KeyValue, key: str) -> str:
    """The subject a write of ``key`` in ``kv`` is published on (``$KV.<bucket>.<key>``)."""
    # nats-py keeps the bucket's subject prefix private; it is part of the KV wire protocol.
    return f"{kv._pre}{key}"


def _ack_of(msg: Msg) -> Ack:
    if msg.headers and msg.headers.get("Status") == "503":
        return Ack(None, 503, "no responders: the stream is unavailable")
    try:
        reply = json.loads(msg.data)
    except ValueError:
        return Ack(None, -1, f"unreadable acknowledgement {msg.data[:80]!r}")
    error = reply.get("error")
    if error is not None:
        return Ack(None, int(error.get("err_code", -1)), str(error.get("description", "")))
    return Ack(int(reply["seq"]))


async def publish_all(
    nc: NatsClient, messages: Sequence[Message], *, ack_within: float = 10.0
) -> list[Ack]:
    """Publish ``messages`` back to back; returns their acknowledgements in the same order.

    Raises ``UnavailableError`` when NATS cannot take them or not every acknowledgement arrives
    within ``ack_within`` seconds (then some may have been stored: callers must be able to repeat).
    """
    if not messages:
        return []
    acks: list[Ack | None] = [None] * len(messages)
    missing = len(messages)
    complete: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    inbox = nc.new_inbox()
    prefix = len(inbox) + 1

    async def collect(msg: Msg) -> None:
        nonlocal missing
        index = int(msg.subject[prefix:])
        if acks[index] is None:
            acks[index] = _ack_of(msg)
            missing -= 1
            if missing == 0 and not complete.done():
                complete.set_result(None)

    try:
        sub = await nc.subscribe(f"{inbox}.*", cb=collect)
        try:
            for index, message in enumerate(messages):
                await nc.publish(
                    message.subject, message.data, reply=f"{inbox}.{index}", headers=message.headers
                )
            await asyncio.wait_for(complete, ack_within)
        finally:
            await sub.unsubscribe()
    except NATS_FAILURES as exc:
        raise UnavailableError(
            f"JetStream did not acknowledge {missing} of {len(messages)} messages: {exc!r}"
        ) from exc
    return [ack for ack in acks if ack is not None]


class JetStreamWriter:
    """Publishes single messages to JetStream and awaits each acknowledgement.

    Open one per connection (:meth:`open`); :meth:`close` before closing the connection. A
    message whose acknowledgement does not arrive within ``ack_within`` seconds (NATS away, a
    reconnect lost it) fails with ``UnavailableError``; it may still have been stored, so callers
    repeat it under the same message id or expected sequence, as with ``js.publish``.
    """

    def __init__(self, nc: NatsClient, *, ack_within: float) -> None:
        self._nc = nc
        self._ack_within = ack_within
        self._inbox = nc.new_inbox()
        self._token_at = len(self._inbox) + 1
        self._waiting: dict[str, tuple[asyncio.Future[Ack], float]] = {}
        self._issued = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._subscription: Any = None

    @classmethod
    async def open(cls, nc: NatsClient, *, ack_within: float = 10.0) -> JetStreamWriter:
        """A writer whose reply subscription is in place."""
        writer = cls(nc, ack_within=ack_within)
        writer._subscription = await nc.subscribe(f"{writer._inbox}.*", cb=writer._on_ack)
        writer._sweeper = asyncio.create_task(writer._sweep(), name="jetstream-ack-deadlines")
        return writer

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> Ack:
        """Publish one message; its acknowledgement (refusals come back as ``Ack`` errors)."""
        future = await self.send(subject, data, headers)
        try:
            return await future
        except NATS_FAILURES as exc:
            raise UnavailableError(f"could not publish to {subject}: {exc!r}") from exc

    async def send(
        self, subject: str, data: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[Ack]:
        """Publish one message and return at once; the future gets its acknowledgement (or
        ``UnavailableError`` after ``ack_within``). Messages sent one after another without
        awaiting anything in between leave in one socket write: nats-py's flusher writes
        whatever is pending when it next runs, and it runs only when the caller awaits."""
        self._issued += 1
        token = str(self._issued)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, time.monotonic() + self._ack_within)
        future.add_done_callback(partial(self._forget, token))
        try:
            await self._nc.publish(subject, data, reply=f"{self._inbox}.{token}", headers=headers)
        except NATS_FAILURES as exc:
            future.cancel()
            raise UnavailableError(f"could not publish to {subject}: {exc!r}") from exc
        return future

    def _forget(self, token: str, _: asyncio.Future[Ack]) -> None:
        self._waiting.pop(token, None)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.get(msg.subject[self._token_at :])
        if entry is not None and not entry[0].done():
            entry[0].set_result(_ack_of(msg))

    async def _sweep(self) -> None:
        """Fail what waited too long: one task for every deadline, not a timer per message."""
        while True:
            await asyncio.sleep(self._ack_within / 4)
            now = time.monotonic()
            for future, deadline in list(self._waiting.values()):
                if deadline < now and not future.done():
                    future.set_exception(
                        UnavailableError(f"no acknowledgement within {self._ack_within:g} s")
                    )

    async def close(self) -> None:
        """Stop the sweeper and the subscription; whatever still waits fails as unavailable."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(UnavailableError("the connection is closing"))
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
