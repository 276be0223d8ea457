"""Admitting a delivery: whether a dispatch fetched from the work queue becomes a claimed attempt.

Every check that may settle a delivery *before* anything runs lives here, apart from the
runner's claims, slots and reporting: a dispatch this executor cannot read is terminated; one
of a cancelled run is acknowledged unrun; a retry not yet due, or one whose method's breaker is
open, is held (``_holds.py``); and a delivery that may repeat an attempt
(``RedeliveryChecks.suspicious``) is acknowledged when the attempt has reported or is settled,
or handed back (``nak``) while that cannot be told yet. Whatever is not admitted has been
answered on its delivery already; what is admitted, the runner claims and runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from stellwerk.core import names, tracing
from stellwerk.core.acks import hand_back
from stellwerk.core.errors import StellwerkError
from stellwerk.core.jetstream import delivery_of
from stellwerk.core.progress import CancelledRuns
from stellwerk.executor._holds import Holds
from stellwerk.executor._redelivery import RedeliveryChecks
from stellwerk.executor._reporting import OutcomeReporter
from stellwerk_api.events.v1 import events_pb2

__all__ = ["Admission", "Admitted", "retry_later"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A delivery to run: its dispatch, parameters and how often JetStream delivered it."""

    dispatch: events_pb2.TaskDispatch
    params: dict[str, Any]
    delivered: int


class Admission:
    """The checks a delivery passes before it is claimed and run."""

    def __init__(
        self,
        *,
        cancelled: CancelledRuns,
        holds: Holds,
        redelivery: RedeliveryChecks,
        reporter: OutcomeReporter,
        executor_id: str,
    ) -> None:
        self._cancelled = cancelled
        self._holds = holds
        self._redelivery = redelivery
        self._reporter = reporter
        self._executor_id = executor_id

    async def admit(self, msg: Msg) -> Admitted | None:
        """The delivery to run, or ``None`` when it was answered (term, ack, nak or held)."""
        dispatch = events_pb2.TaskDispatch()
        try:
            dispatch.ParseFromString(msg.data)
            if (
                dispatch.format_version not in names.READABLE_FORMAT_VERSIONS
                or not dispatch.run_id
                or dispatch.attempt < 1
            ):
                raise ValueError("not a dispatch this executor understands")
            params = json.loads(dispatch.params_json or "{}")
            if not isinstance(params, dict):
                raise ValueError("params are not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            logger.error("terminating unreadable dispatch on %s: %s", msg.subject, exc)
            await msg.term()
            return None
        if dispatch.run_id in self._cancelled:  # its run was cancelled: never started
            await msg.ack()
            return None
        if await self._holds.hold(msg, dispatch):  # a retry not due, or its method's breaker
            return None
        tracing.task_started(dispatch, self._executor_id)
        delivery = delivery_of(msg)
        suspicious = self._redelivery.suspicious(dispatch, delivery)
        if suspicious and not await self._check_suspect(msg, dispatch):
            return None
        return Admitted(dispatch, params, delivery.num_delivered)

    async def _check_suspect(self, msg: Msg, dispatch: events_pb2.TaskDispatch) -> bool:
        """Whether a delivery that may repeat an attempt may run; if not, it was answered."""
        if self._reporter.reporting(dispatch):  # our report of it is still on its way
            with contextlib.suppress(Exception):
                await hand_back(msg, delay=1.0)
            return False
        try:
            done = await self._redelivery.already_done(dispatch)
        except StellwerkError as exc:
            await retry_later(msg, dispatch, "check", exc)
            return False
        if done is None:  # its dispatch overtook the write recording it: ask again soon
            with contextlib.suppress(Exception):
                await hand_back(msg, delay=0.5)
            return False
        if done:
            await msg.ack()
            return False
        return True


async def retry_later(
    msg: Msg, dispatch: events_pb2.TaskDispatch, step: str, exc: StellwerkError
) -> None:
    """A ``step`` before the run could not be made (NATS failing over: a cluster node lost, a
    restart): hand the delivery back for a moment. Left unanswered, it would come back only
    after a whole lease (20 s without progress in the cluster test)."""
    logger.warning(
        "cannot %s %s/%s (%s); retrying later", step, dispatch.run_id, dispatch.task_id, exc
    )
    with contextlib.suppress(Exception):
        await hand_back(msg, delay=1.0)
