"""Writing many messages to JetStream at once: one reply subscription, acknowledgements together.

``js.publish`` is a request per message (a reply future, a timer, an acknowledgement object); a
10,000-task submit spent most of its time there. Here each message carries its index in its
reply subject, one subscription collects the acknowledgements, and one deadline covers them all.
The messages are the same as ``js.publish`` / ``kv.create`` would send, so the server applies the
same checks (``Nats-Msg-Id`` dedup, expected last subject sequence).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from stellwerk.core.errors import UnavailableError

__all__ = ["Ack", "Message", "kv_subject", "publish_all"]

# JetStream's "wrong last sequence" error codes: the key exists (create) or moved on (update).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


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
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise UnavailableError(
            f"JetStream did not acknowledge {missing} of {len(messages)} messages: {exc!r}"
        ) from exc
    return [ack for ack in acks if ack is not None]
