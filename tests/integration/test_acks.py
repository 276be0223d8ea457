"""``core.acks.hand_back`` against a real nats-server: a hand-back is confirmed by the consumer,
redelivers after its delay, and is sent again while nobody answers on the delivery's reply
subject (a consumer whose leader is moving), instead of being lost like a plain ``nak``."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from stellwerk.core.acks import hand_back

SUBJECT = "acks.t"


async def _one_delivery(nc: NatsClient) -> tuple[Msg, JetStreamContext.PullSubscription]:
    js = nc.jetstream()
    await js.add_stream(name="ACKS", subjects=["acks.>"])
    await js.publish(SUBJECT, b"x")
    sub = await js.pull_subscribe(SUBJECT, durable="c", config=ConsumerConfig(ack_wait=30))
    [msg] = await sub.fetch(1, timeout=5)
    return msg, sub


async def test_a_confirmed_hand_back_redelivers_after_its_delay(nc: NatsClient) -> None:
    msg, sub = await _one_delivery(nc)
    handed = time.monotonic()
    assert await hand_back(msg, delay=0.5)
    [again] = await sub.fetch(1, timeout=10)
    assert again.metadata.num_delivered == 2
    # After the delay, far sooner than the 30 s ack wait of a lost one.
    assert 0.4 < time.monotonic() - handed < 10


async def test_a_hand_back_nobody_answers_is_sent_again_until_answered(nc: NatsClient) -> None:
    """Nobody listens on the reply subject at first (as while a consumer's leader is elected):
    a plain nak would be dropped. The hand-back asks again until a listener answers."""
    msg = Msg(nc, subject=SUBJECT, reply="acks.leader.reply", data=b"")
    received: list[bytes] = []

    async def leader_appears() -> None:
        await asyncio.sleep(0.5)  # the election: nobody answers meanwhile

        async def answer(request: Msg) -> None:
            received.append(request.data)
            await request.respond(b"")

        await nc.subscribe("acks.leader.reply", cb=answer)

    election = asyncio.create_task(leader_appears())
    assert await hand_back(msg, delay=2.0, patience=10)
    await election
    assert received == [b'-NAK {"delay": 2000000000}']


async def test_a_hand_back_nobody_ever_answers_gives_up_after_its_patience(
    nc: NatsClient,
) -> None:
    msg = Msg(nc, subject=SUBJECT, reply="acks.nobody", data=b"")
    started = time.monotonic()
    assert not await hand_back(msg, patience=0.5)
    assert time.monotonic() - started < 5
