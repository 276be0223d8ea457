"""Checks a redelivered attempt passes before it runs again (off the hot path: redeliveries only).

A redelivery means an executor died, lost its claim, or a restarted nats-server handed the
delivery out again (:meth:`RedeliveryChecks.suspicious` says which deliveries are checked). The
attempt may be over already — its outcome stored in the events stream
(the truth) or recorded in KV — and then it must not run again; if it does run again, the run is
counted in KV toward the poison limit.
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext

from stellwerk.core import names
from stellwerk.core.jetstream import Delivery, last_message
from stellwerk.core.records import TaskRecord
from stellwerk.core.store import DocumentStore
from stellwerk_api.events.v1 import events_pb2

__all__ = ["RedeliveryChecks"]


class RedeliveryChecks:
    """Which deliveries to distrust, and the KV and stream lookups that check them."""

    def __init__(
        self, js: JetStreamContext, tasks: DocumentStore[TaskRecord], *, lease: float
    ) -> None:
        self._js = js
        self._tasks = tasks
        self._lease = lease
        self._reconnected_at = 0.0

    def note_reconnect(self) -> None:
        """NATS came back: whatever was stored before now may be handed out again as new."""
        self._reconnected_at = time.time()

    def suspicious(self, dispatch: events_pb2.TaskDispatch, delivery: Delivery) -> bool:
        """Whether this delivery may repeat an attempt that ran already, so that it is checked
        before it runs. The hot path (a first delivery of a first attempt, stored after our last
        reconnect and younger than a lease) is trusted without a lookup. Distrusted:

        - a redelivery (``num_delivered > 1``);
        - a retry (attempt > 1): it was handed back until due (``nak`` with a delay), and chaos
          runs saw such deliveries come back *after* their acknowledgement, as first
          deliveries, when a nats-server restarted or a cluster node holding the consumer or
          the task bucket died. Retries are rare, so checking each costs nothing measurable;
        - a message older than the lease, or stored before our last reconnect: a restarted
          nats-server saves delivery state lazily and can hand out again what it delivered
          (and we acknowledged) just before the crash, with the count reset to one.
        """
        if delivery.num_delivered > 1 or dispatch.attempt > 1:
            return True
        stored = delivery.stored_at
        if stored is None:
            return False
        return time.time() - stored > self._lease or stored <= self._reconnected_at

    async def count_run(self, dispatch: events_pb2.TaskDispatch) -> int | None:
        """Record in KV that a redelivered attempt is about to run again; returns how many runs
        that makes (the first delivery counts as one), or ``None`` if the attempt is over. Only
        runs that really start are counted, so a delivery that waited in our queue while a
        poison task killed us is not blamed."""
        key = names.task_key(dispatch.run_id, dispatch.task_id)

        def change(task: TaskRecord) -> TaskRecord | None:
            if task.state.settled or task.attempt != dispatch.attempt:
                return None
            return task.evolve(reruns=task.reruns + 1)

        current, wrote = await self._tasks.mutate(key, change)
        return 1 + current.value.reruns if wrote else None

    async def already_done(self, dispatch: events_pb2.TaskDispatch) -> bool | None:
        """On redelivery only (off the hot path): is this attempt over already? ``None`` while
        the task is not recorded as dispatched yet (the resolver publishes a dispatch together
        with the write that records it)."""
        reported = names.event_subject(dispatch.run_id, dispatch.task_id, dispatch.attempt)
        if await last_message(self._js, names.EVENTS_STREAM, reported) is not None:
            return True  # an outcome of this attempt is stored: it stands, whatever KV says yet
        found = await self._tasks.get(names.task_key(dispatch.run_id, dispatch.task_id), fresh=True)
        if found is None:
            return True  # the run is gone (retention or abandoned submit)
        task = found.value
        if not task.state.settled and dispatch.attempt == task.attempt + 1:
            return None  # a first dispatch or a retry, published beside the write recording it
        return (
            task.state.settled
            or task.attempt != dispatch.attempt
            or task.generation > dispatch.generation
        )
