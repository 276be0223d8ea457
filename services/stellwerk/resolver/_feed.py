"""A run's task documents as a watch reads them: changes fetched in batches, not pushed one by one.

A ``KeyValue.watch`` is a push consumer: every write of every task document wakes the resolver
(a socket read, a parse, a loop pass), which on a chain is several wake-ups per hop, taken from
the resolution loop while a user merely follows the run. This feed is a pull consumer on the
run's keys instead (last value per key first, then every change; no acknowledgements): the
watch asks for one change, and when it comes, for everything that arrived meanwhile, in one
reply. A watch that asks at most every few milliseconds wakes the resolver a few times per
interval, whatever the run's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from stellwerk.core.errors import UnavailableError

__all__ = ["KeyFeed"]

_STATUS = "Status"
_NO_MESSAGES = "404"
_EXPIRED = "408"
_HEARTBEAT = "100"
_OPERATION = "KV-Operation"
_DRAIN_BATCH = 1000
# Left behind by a resolver that died while watching: the server removes it after this.
_INACTIVE_THRESHOLD = 30.0
# How long a drain (a no-wait request) may take before the feed gives up on the server.
_DRAIN_TIMEOUT = 10.0


class KeyFeed:
    """Changes of the KV keys matching a pattern, as ``(key, value)`` lists; deletions left out.

    Use :meth:`open`, then :meth:`changes` repeatedly, then :meth:`close`."""

    def __init__(self, kv: KeyValue, pattern: str) -> None:
        # KeyValue keeps its JetStream context and bucket name private; the bucket's stream and
        # subjects follow the KV naming convention (as in core/kvscan).
        self._js: Any = kv._js
        bucket: str = kv._name
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._pattern = pattern
        self._consumer = ""
        self._inbox = ""
        self._sub: Any = None
        self._arrived: list[tuple[str, bytes]] = []
        self._wanted = 0  # messages the current request may still bring
        self._signal = asyncio.Event()
        self._status = ""  # the status that ended the current request, if any

    async def open(self) -> KeyFeed:
        """Create the consumer (its first deliveries: every key's current value)."""
        info = await self._js.add_consumer(
            self._stream,
            config=ConsumerConfig(
                filter_subject=self._prefix + self._pattern,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                inactive_threshold=_INACTIVE_THRESHOLD,
            ),
        )
        self._consumer = info.name
        nc = self._js._nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._receive)
        return self

    async def changes(self, *, wait: float) -> list[tuple[str, bytes]]:
        """The changes since the last call: waits up to ``wait`` seconds for the first one
        (``TimeoutError`` if none came), then takes everything else already there.

        Raises ``UnavailableError`` when the server answers the request with an error (the
        consumer was removed, e.g. by a restart of nats-server): the watch ends and the client
        opens a new one."""
        if not self._arrived:
            await self._request({"batch": 1, "expires": int(wait * 1e9)}, wanted=1)
            with contextlib.suppress(TimeoutError):  # expired: the server's 408 says so too
                await asyncio.wait_for(self._signal.wait(), wait + 1.0)
            if not self._arrived:
                self._raise_for_status()
                raise TimeoutError
        await self._request({"batch": _DRAIN_BATCH, "no_wait": True}, wanted=_DRAIN_BATCH)
        try:
            await asyncio.wait_for(self._signal.wait(), _DRAIN_TIMEOUT)
        except TimeoutError:
            raise UnavailableError("the watch's consumer did not answer") from None
        if self._status not in ("", _NO_MESSAGES, _EXPIRED):
            self._raise_for_status()
        found, self._arrived = self._arrived, []
        return found

    async def close(self) -> None:
        """Unsubscribe and delete the consumer (best effort: it expires on its own anyway)."""
        with contextlib.suppress(Exception):
            if self._sub is not None:
                await self._sub.unsubscribe()
        with contextlib.suppress(Exception):
            if self._consumer:
                await self._js.delete_consumer(self._stream, self._consumer)

    async def _request(self, body: dict[str, Any], *, wanted: int) -> None:
        self._signal.clear()
        self._status = ""
        self._wanted = wanted
        await self._js._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}",
            json.dumps(body).encode(),
            reply=self._inbox,
        )

    async def _receive(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get(_STATUS, "")
        if status == _HEARTBEAT:
            return
        if status:  # the request ended: nothing (more) there, expired, or an error
            self._status = status
            self._signal.set()
            return
        if msg.data and headers.get(_OPERATION) not in ("DEL", "PURGE"):
            self._arrived.append((msg.subject[len(self._prefix) :], msg.data))
        self._wanted -= 1
        if self._wanted <= 0:
            self._signal.set()

    def _raise_for_status(self) -> None:
        if self._status not in ("", _NO_MESSAGES, _EXPIRED):
            raise UnavailableError(f"the watch's consumer answered {self._status}")
