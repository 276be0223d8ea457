"""Long-lived pull requests on one durable consumer: about no request per hop on a chain.

nats-py's ``fetch`` sends a pull request on every call (two when nothing is waiting: a
``no_wait`` probe, then a lingering one), and the executor and the resolver called it again as
soon as a delivery came, so each hop of a chain cost socket writes (and JetStream API requests
for nats-server) of its own, besides the outcome and the acknowledgement. Here the requests
stay open at the server (``expires`` ``REQUEST_SECONDS``) for as many deliveries as there is
room for; room that frees up is asked for again only once it is worth a request (a quarter of
the window) or nothing is outstanding, and the executor asks right before it publishes an
outcome, so the request rides in the same socket write. It is still a pull consumer:
deliveries, acknowledgements, nak/term and max deliveries are JetStream's, and the room is
bounded by the caller (free execution slots, events in flight) exactly like
``fetch(batch=free)`` was. Used by the executor (dispatch consumers) and the resolver (the
events consumer).

Accounting of what is outstanding is local and self-healing: a delivery takes one from the
oldest request (the server fills requests in order), a ``408`` (expired) removes the oldest
request, a request is forgotten a second after it expired anyway (a lost ``408``), and a
reconnect or a ``409`` (consumer gone, leadership change, too many waiting) forgets all of
them. Forgetting a request that is in fact still open can only bring a delivery more than
there is room for; it then queues for a slot, heartbeated, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Puller"]

logger = logging.getLogger(__name__)

REQUEST_SECONDS = 5.0
_FORGET_AFTER = 1.0  # a request is forgotten this long after it expired without a 408
_BACKOFF = 0.5


class Puller:
    """Keeps pull requests open on ``stream``'s consumer ``durable`` for ``room()`` deliveries;
    hands each delivery to ``deliver`` (synchronously, in arrival order)."""

    def __init__(
        self,
        nc: NatsClient,
        durable: str,
        *,
        stream: str,
        room: Callable[[], int],
        window: int,
        deliver: Callable[[Msg], None],
    ) -> None:
        self._nc = nc
        self._room = room
        self._deliver = deliver
        self._threshold = max(1, window // 4)
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._expires_ns = str(int(REQUEST_SECONDS * 1e9))
        self._requests: collections.deque[list[float]] = collections.deque()  # [sent, left]
        self._outstanding = 0
        self._wake = asyncio.Event()
        self._backoff = False
        self._sub: Subscription | None = None
        self.stopping = False

    @property
    def outstanding(self) -> int:
        """Deliveries asked for and not yet received (as far as this side knows)."""
        return self._outstanding

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Ask for deliveries while there is room, until ``stopped()`` or cancelled."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        try:
            while not stopped():
                if self._backoff:
                    self._backoff = False
                    await asyncio.sleep(_BACKOFF)
                try:
                    await self.refill()
                except Exception as exc:  # a dead loop would silently stop a method
                    logger.warning("pull request on %s failed (%s)", self._subject, exc)
                    await asyncio.sleep(_BACKOFF)
                    continue
                wait = REQUEST_SECONDS + _FORGET_AFTER
                if self._requests:
                    wait = max(0.05, self._requests[0][0] + wait - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            self.stopping = True
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def wake(self) -> None:
        """Room may have changed: let the loop ask, if a request is worth it now (a check, so
        that a chain's hop does not wake the loop for nothing)."""
        if not self._wake.is_set() and self._wanted(time.monotonic()) > 0:
            self._wake.set()

    def forget(self) -> None:
        """The requests may be gone (NATS reconnected): ask anew."""
        self._requests.clear()
        self._outstanding = 0
        self._wake.set()

    async def refill(self) -> None:
        """Ask for what there is room for, if it is worth a request (never waits for the server;
        the request goes out with whatever else is written next)."""
        now = time.monotonic()
        room = self._wanted(now)
        if room <= 0:
            return
        self._requests.append([now, room])
        self._outstanding += room
        payload = f'{{"batch":{room},"expires":{self._expires_ns}}}'.encode()
        await self._nc.publish(self._subject, payload, reply=self._inbox)

    def _wanted(self, now: float) -> int:
        """How many deliveries to ask for now (0: none, or not worth a request yet)."""
        horizon = now - REQUEST_SECONDS - _FORGET_AFTER
        while self._requests and self._requests[0][0] < horizon:
            self._outstanding -= int(self._requests.popleft()[1])
        room = self._room() - self._outstanding
        if room <= 0 or (self._outstanding and room < self._threshold):
            return 0
        return room

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if self._requests:
                head = self._requests[0]
                head[1] -= 1
                self._outstanding -= 1
                if head[1] <= 0:
                    self._requests.popleft()
            if self.stopping:
                with contextlib.suppress(Exception):
                    await msg.nak()  # hand it back at once
                return
            self._deliver(msg)
            return
        if status == "100":  # an idle heartbeat (none asked for)
            return
        if status in ("408", "404"):  # the oldest request expired (or found nothing)
            if self._requests and self._requests[0][0] + REQUEST_SECONDS <= time.monotonic() + 0.5:
                self._outstanding -= int(self._requests.popleft()[1])
            self._wake.set()
            return
        # 409 and the rest: the consumer was deleted, its leader changed, too many requests
        # waiting...: start over after a pause.
        logger.info(
            "pull on %s ended: %s %s",
            self._subject,
            status,
            msg.headers.get("Description", "") if msg.headers else "",
        )
        self._requests.clear()
        self._outstanding = 0
        self._backoff = True
        self._wake.set()
