"""``core.publish`` against a real nats-server: the same checks as ``js.publish``."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StreamConfig

from stellwerk.core import names
from stellwerk.core.errors import ConflictError, UnavailableError, WrongStateError
from stellwerk.core.jetstream import Topology, ensure_topology
from stellwerk.core.publish import JetStreamWriter, Message, publish_all
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore
from tests.support.polling import eventually


@pytest.fixture
async def topology(nc: NatsClient) -> Topology:
    return await ensure_topology(nc, Settings())


def _store(topology: Topology) -> DocumentStore[bytes]:
    return DocumentStore(topology.runs, encode=bytes, decode=bytes)


async def test_create_many_writes_every_key_in_order(nc: NatsClient, topology: Topology) -> None:
    store = _store(topology)
    items = [(f"bulk.k{i}", f"value {i}".encode()) for i in range(2500)]
    created = await store.create_many(nc, items)
    assert all(c is not None for c in created)
    revisions = [c.revision for c in created if c is not None]
    assert revisions == sorted(revisions)  # published back to back, stored in order
    for key, value in (items[0], items[1234], items[-1]):
        entry = await topology.runs.get(key)
        assert entry.value == value


async def test_create_many_leaves_existing_keys_alone(nc: NatsClient, topology: Topology) -> None:
    store = _store(topology)
    await topology.runs.put("bulk.taken", b"first")
    created = await store.create_many(nc, [("bulk.new", b"n"), ("bulk.taken", b"second")])
    assert created[0] is not None and created[1] is None
    assert (await topology.runs.get("bulk.taken")).value == b"first"


async def test_nothing_to_publish_is_no_round_trip(nc: NatsClient) -> None:
    assert await publish_all(nc, []) == []


async def test_refusals_come_back_per_message(nc: NatsClient, topology: Topology) -> None:
    del topology
    subject = names.dispatch_subject("m/x", "run-1", "task-1")
    acks = await publish_all(
        nc,
        [
            Message(subject, b"x", {"Nats-Msg-Id": "same"}),
            Message(subject, b"x", {"Nats-Msg-Id": "same"}),  # a duplicate: stored once
            Message(subject, b"y", {"Nats-Expected-Last-Subject-Sequence": "999"}),
        ],
    )
    assert acks[0].sequence is not None and acks[1].sequence == acks[0].sequence
    assert acks[2].sequence is None and acks[2].wrong_last_sequence


async def test_a_bucket_that_is_gone_is_unavailable(nc: NatsClient) -> None:
    js = nc.jetstream()
    store: DocumentStore[bytes] = DocumentStore(
        await js.create_key_value(bucket="short-lived"), encode=bytes, decode=bytes
    )
    await js.delete_key_value("short-lived")
    with pytest.raises(UnavailableError):
        await store.create_many(nc, [("gone", b"value")])


async def test_writer_publishes_and_reports_refusals(nc: NatsClient, topology: Topology) -> None:
    writer = topology.writer
    subject = names.dispatch_subject("m/x", "run-2", "task-1")
    first = await writer.publish(subject, b"x", {"Nats-Msg-Id": "one"})
    again = await writer.publish(subject, b"x", {"Nats-Msg-Id": "one"})
    assert first.sequence is not None and again.sequence == first.sequence  # deduplicated
    stale = await writer.publish(subject, b"y", {"Nats-Expected-Last-Subject-Sequence": "99"})
    assert stale.wrong_last_sequence
    with pytest.raises(UnavailableError, match="refused"):
        stale.stored("the test message")
    nowhere = await writer.publish("no.stream.here", b"z", None)
    assert nowhere.sequence is None and nowhere.error_code == 503


async def test_store_compare_and_set_through_the_writer(topology: Topology) -> None:
    store = DocumentStore(topology.runs, encode=bytes, decode=bytes, writer=topology.writer)
    created = await store.create("cas.key", b"v1")
    assert created is not None
    updated = await store.update("cas.key", b"v2", created.revision)
    assert (await topology.runs.get("cas.key")).value == b"v2"
    with pytest.raises(ConflictError):
        await store.update("cas.key", b"v3", created.revision)
    assert (await topology.runs.get("cas.key")).value == b"v2"
    assert updated.revision > created.revision


async def test_a_missing_acknowledgement_fails_after_the_deadline(nc: NatsClient) -> None:
    silent = await nc.subscribe("plain.subject")  # receives, never answers
    writer = await JetStreamWriter.open(nc, ack_within=0.4)
    try:
        with pytest.raises(UnavailableError, match="no acknowledgement"):
            await writer.publish("plain.subject", b"hello", None)
    finally:
        await writer.close()
        await silent.unsubscribe()


async def test_closing_fails_what_still_waits(nc: NatsClient) -> None:
    silent = await nc.subscribe("plain.subject")
    writer = await JetStreamWriter.open(nc, ack_within=60)
    waiting = asyncio.create_task(writer.publish("plain.subject", b"hello", None))

    async def went_out() -> bool:
        return silent.pending_msgs >= 1

    await eventually(went_out, message="the message went out")
    await writer.close()
    with pytest.raises(UnavailableError, match="closing"):
        await waiting
    await silent.unsubscribe()


async def test_the_events_stream_keeps_the_first_outcome_of_an_attempt(topology: Topology) -> None:
    writer = topology.writer
    subject = names.event_subject("run-3", "task-1", 1)
    first = await writer.publish(subject, b"first", {"Nats-Msg-Id": "e1"})
    repeat = await writer.publish(subject, b"first", {"Nats-Msg-Id": "e1"})
    rival = await writer.publish(subject, b"second", {"Nats-Msg-Id": "e2"})
    assert first.sequence is not None and repeat.sequence == first.sequence
    assert rival.subject_full and rival.sequence is None
    stored = await topology.js.get_last_msg(names.EVENTS_STREAM, subject)
    assert stored.data == b"first"
    next_attempt = await writer.publish(names.event_subject("run-3", "task-1", 2), b"x", None)
    assert next_attempt.sequence is not None


async def test_an_empty_events_stream_of_the_old_layout_is_replaced(nc: NatsClient) -> None:
    js = nc.jetstream()
    old = StreamConfig(
        name=names.EVENTS_STREAM,
        subjects=[names.EVENTS_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
    )
    await js.add_stream(old)
    await ensure_topology(nc, Settings())
    config = (await js.stream_info(names.EVENTS_STREAM)).config
    assert config.retention == RetentionPolicy.LIMITS
    assert config.max_msgs_per_subject == 1 and config.discard_new_per_subject


async def test_an_old_events_stream_with_messages_is_left_alone(nc: NatsClient) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=names.EVENTS_STREAM,
            subjects=[names.EVENTS_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
        )
    )
    await js.publish("stellwerk.events.run.task", b"pending")
    with pytest.raises(WrongStateError, match="still holds 1 messages"):
        await ensure_topology(nc, Settings())
    info = await js.stream_info(names.EVENTS_STREAM)
    assert info.config.retention == RetentionPolicy.WORK_QUEUE and info.state.messages == 1
