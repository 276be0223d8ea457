"""``executor._reporting.OutcomeReporter`` against a real nats-server: an outcome whose publish
cannot be stored yet stays *in flight* (the runner then hands back any delivery of the same
attempt instead of running it again) until JetStream has it."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from stellwerk.core import names
from stellwerk.core.jetstream import ensure_topology, last_message
from stellwerk.core.publish import JetStreamWriter
from stellwerk.core.settings import Settings
from stellwerk.executor._reporting import OutcomeReporter
from stellwerk_api.events.v1 import events_pb2
from tests.support.polling import eventually

RUN = "0123456789abcdef012345"


async def test_an_outcome_is_in_flight_until_jetstream_stores_it(nc: NatsClient) -> None:
    # No streams yet: every publish is refused (no responders), as while JetStream is away.
    writer = await JetStreamWriter.open(nc, ack_within=0.5)
    reporter = OutcomeReporter(writer, None)
    dispatch = events_pb2.TaskDispatch(run_id=RUN, task_id="t", attempt=2)
    other = events_pb2.TaskDispatch(run_id=RUN, task_id="t", attempt=1)
    event = events_pb2.TaskEvent(
        format_version=names.EVENT_FORMAT_VERSION,
        run_id=RUN,
        task_id="t",
        attempt=2,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json="1",
    )
    report = asyncio.create_task(reporter.report(dispatch, event))
    try:
        await eventually(lambda: _true(reporter.reporting(dispatch)), message="in flight")
        assert not reporter.reporting(other)  # another attempt of the task is not
        assert not report.done()
        topology = await ensure_topology(nc, Settings())  # JetStream can store it now
        await asyncio.wait_for(report, timeout=30)
        assert not reporter.reporting(dispatch)
        subject = names.event_subject(RUN, "t", 2)
        assert await last_message(topology.js, names.EVENTS_STREAM, subject) is not None
    finally:
        report.cancel()
        await asyncio.gather(report, return_exceptions=True)
        await writer.close()


async def _true(value: bool) -> bool:
    return value
