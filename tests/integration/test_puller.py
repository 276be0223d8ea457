"""``core.puller.Puller`` against a real nats-server: long-lived pull requests deliver no
more than there is room for, ask again when room frees up, and ask anew after their requests
expired."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from stellwerk.core import names
from stellwerk.core import puller as _puller
from stellwerk.core.jetstream import ensure_dispatch_consumer, ensure_topology
from stellwerk.core.puller import Puller
from stellwerk.core.settings import Settings
from tests.support.polling import eventually

METHOD = "test/pull"
RUN = "0123456789abcdef012345"


async def _dispatch(js: JetStreamContext, n: int) -> None:
    for i in range(n):
        await js.publish(names.dispatch_subject(METHOD, RUN, f"t{i}"), b"x")


async def _true(value: bool) -> bool:
    return value


async def test_deliveries_never_exceed_the_room_and_resume_when_it_grows(nc: NatsClient) -> None:
    topology = await ensure_topology(nc, Settings())
    durable = await ensure_dispatch_consumer(topology.js, METHOD, Settings())
    room = 2
    got: list[Msg] = []
    puller = Puller(
        nc,
        durable,
        stream=names.DISPATCH_STREAM,
        room=lambda: room - len(got),
        window=8,
        deliver=got.append,
    )
    loop = asyncio.create_task(puller.run(lambda: False))
    try:
        await _dispatch(topology.js, 5)
        await eventually(lambda: _true(len(got) == 2), message="two deliveries")
        # Nothing more is asked for: the server holds no request and keeps three waiting.
        info = await topology.js.consumer_info(names.DISPATCH_STREAM, durable)
        assert (info.num_waiting, info.num_pending, info.num_ack_pending) == (0, 3, 2)
        assert len(got) == 2 and puller.outstanding == 0
        room = 5
        puller.wake()
        await eventually(lambda: _true(len(got) == 5), message="the rest once there is room")
        for msg in got:
            await msg.ack()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_expired_requests_are_asked_for_again(
    nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_puller, "REQUEST_SECONDS", 0.3)
    topology = await ensure_topology(nc, Settings())
    durable = await ensure_dispatch_consumer(topology.js, METHOD, Settings())
    got: list[Msg] = []
    puller = Puller(
        nc, durable, stream=names.DISPATCH_STREAM, room=lambda: 4, window=4, deliver=got.append
    )
    sent: list[int] = []
    refill = puller.refill

    async def counted() -> None:
        before = puller.outstanding
        await refill()
        if puller.outstanding > before:
            sent.append(puller.outstanding - before)

    monkeypatch.setattr(puller, "refill", counted)
    loop = asyncio.create_task(puller.run(lambda: False))
    try:
        # The first request expires unused (its 408 arrives); a second one is sent.
        await eventually(lambda: _true(len(sent) >= 2), message="a request after expiry")
        await _dispatch(topology.js, 1)
        await eventually(lambda: _true(len(got) == 1), message="delivered to the new request")
        await got[0].ack()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
