"""Handing a JetStream delivery back, confirmed.

``Msg.nak`` is fire-and-forget: a publish to the delivery's reply subject. Sent while the
consumer's leader moves (a cluster node lost, a replica catching up), nobody is listening on that
subject and the nak is dropped without a word; the delivery then waits out its whole ack wait
(``STELLWERK_TASK_LEASE``, 30 s) before anyone sees it again. In ``make cluster`` a run's retry,
due 0.2 s after a failure that came just as the streams' leader was killed, ran 30.0 s later
(one ack wait) with nothing logged, and the run stood still for it: a dropped hand-back is the
explanation that fits.

A nak sent as a request is answered by the consumer's leader once it has applied it (nats-server
replies to acknowledgements that carry a reply subject, as for ``ack_sync``), so the executor can
tell "handed back" from "lost" and send it again until a leader takes it.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.msg import Msg

from stellwerk.core.publish import NATS_FAILURES

__all__ = ["hand_back"]

_ANSWER_WITHIN = 1.0  # seconds to wait for the leader's answer to one nak
_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 1.0


async def hand_back(msg: Msg, *, delay: float | None = None, patience: float = 15.0) -> bool:
    """Hand ``msg`` back (redelivered after ``delay`` seconds, at once without one) and wait for
    the server to confirm it, asking again with a growing pause for up to ``patience`` seconds.

    Returns whether it was confirmed. Unconfirmed is not lost work: the delivery still comes back
    after its ack wait; it only comes back late."""
    payload = b"-NAK"
    if delay:
        payload += b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
    # nats-py's Msg has ack_sync but no confirmed nak: the request goes through its client.
    client = msg._client
    give_up = time.monotonic() + patience
    pause = _FIRST_PAUSE
    while True:
        try:
            await client.request(msg.reply, payload, timeout=_ANSWER_WITHIN)
            return True
        except NATS_FAILURES:
            if time.monotonic() + pause > give_up:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
