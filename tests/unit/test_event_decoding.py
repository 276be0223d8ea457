"""Task events and delivery subjects as the resolver and executor read them."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from stellwerk.core import names
from stellwerk.core.jetstream import delivery_of
from stellwerk.core.progress import decode_outcome
from stellwerk_api.events.v1 import events_pb2


def event(**fields: object) -> bytes:
    base: dict[str, object] = {
        "format_version": names.EVENT_FORMAT_VERSION,
        "run_id": "run-1",
        "task_id": "t",
        "attempt": 1,
        "outcome": events_pb2.TASK_OUTCOME_SUCCEEDED,
        "result_json": "1",
    }
    return events_pb2.TaskEvent(**{**base, **fields}).SerializeToString()  # type: ignore[arg-type]


def test_a_result_keeps_big_integers_exact() -> None:
    outcome = decode_outcome(event(result_json=str(2**70)))
    assert outcome.succeeded and outcome.result == 2**70


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"x": NaN}', "[1, Infinity]"])
def test_results_that_are_not_json_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_outcome(event(result_json=text))


@pytest.mark.parametrize(
    "fields",
    [
        {"format_version": 3},
        {"format_version": 0},
        {"run_id": ""},
        {"attempt": 0},
        {"outcome": 0},
        {"result_json": "{"},
    ],
)
def test_malformed_events_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        decode_outcome(event(**fields))


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="s", reply=reply)  # type: ignore[arg-type]


def test_delivery_read_from_both_ack_subject_forms() -> None:
    v1 = _msg("$JS.ACK.STREAM.consumer.3.10.9.1700000000123456789.0")
    v2 = _msg("$JS.ACK._.ACCHASH.STREAM.consumer.2.10.9.1700000000500000000.4.rnd")
    assert delivery_of(v1).num_delivered == 3
    assert delivery_of(v1).stored_at == pytest.approx(1700000000.123456789)
    assert delivery_of(v2).num_delivered == 2
    assert delivery_of(v2).stored_at == pytest.approx(1700000000.5)
    # agrees with nats-py's own parser
    assert v1.metadata.timestamp is not None
    assert delivery_of(v1).stored_at == pytest.approx(v1.metadata.timestamp.timestamp())


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.x", "$JS.ACK.a.b.c.d.e.f.g", "$JS.ACK.S.c.x.1.1.y.0"]
)
def test_unreadable_delivery_subjects_count_as_first_delivery(reply: str) -> None:
    delivery = delivery_of(_msg(reply))
    assert delivery.num_delivered == 1 and delivery.stored_at is None


def test_a_version_1_event_still_reads_its_run() -> None:
    # Version 1 called field 2 `workflow_id`; the number and type are the same, so an event
    # still in the stream across an upgrade keeps its run.
    outcome = decode_outcome(event(format_version=1))
    assert outcome.run_id == "run-1" and outcome.succeeded
