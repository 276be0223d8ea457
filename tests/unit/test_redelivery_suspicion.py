"""Which deliveries an executor checks before running them (``RedeliveryChecks.suspicious``).

The hot path — a first delivery of a first attempt, young, stored after the last reconnect — runs
without a lookup; everything that may repeat an attempt that ran already is checked."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from stellwerk.core.jetstream import Delivery
from stellwerk.executor._redelivery import RedeliveryChecks
from stellwerk_api.events.v1 import events_pb2

LEASE = 30.0


def _checks() -> RedeliveryChecks:
    # suspicious() decides from the delivery alone: no NATS behind it.
    return RedeliveryChecks(cast(Any, None), cast(Any, None), lease=LEASE)


def _dispatch(attempt: int = 1) -> events_pb2.TaskDispatch:
    return events_pb2.TaskDispatch(run_id="r", task_id="t", attempt=attempt)


def test_a_young_first_delivery_of_a_first_attempt_is_trusted() -> None:
    assert not _checks().suspicious(_dispatch(), Delivery(1, time.time() - 1))


def test_a_delivery_of_unknown_age_is_trusted() -> None:
    assert not _checks().suspicious(_dispatch(), Delivery(1, None))


@pytest.mark.parametrize(
    ("attempt", "delivery"),
    [
        (1, Delivery(2, None)),  # a redelivery
        (2, Delivery(1, None)),  # a retry, even as a first delivery
        (1, Delivery(1, time.time() - LEASE - 1)),  # older than the lease
    ],
)
def test_deliveries_that_may_repeat_an_attempt_are_checked(
    attempt: int, delivery: Delivery
) -> None:
    assert _checks().suspicious(_dispatch(attempt), delivery)


def test_a_message_stored_before_the_last_reconnect_is_checked() -> None:
    checks = _checks()
    stored = time.time() - 1
    assert not checks.suspicious(_dispatch(), Delivery(1, stored))
    checks.note_reconnect()
    assert checks.suspicious(_dispatch(), Delivery(1, stored))
    assert not checks.suspicious(_dispatch(), Delivery(1, time.time() + 0.01))
