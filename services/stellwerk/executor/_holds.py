"""Deliveries an executor hands back before running them, without spending an attempt: a retry
that is not due yet, and a task whose method's circuit breaker is open.

Both hand the delivery back with ``nak(delay)``, confirmed (``core/acks.py``), so the waiting
task stays where it was — its dispatch in the ``STELLWERK_DISPATCH`` work queue (on file,
surviving any restart) — and its attempt number does not move: nothing is reported, nothing
written to the task's document.

The breaker is looked up in the executor's :class:`~stellwerk.core.breaker_book.BreakerBook`
(a KV watch kept in memory), so a closed breaker costs a dict look-up. Only a HALF_OPEN
breaker costs a KV write: the executor that wins the compare-and-set on its ``trial`` runs the
one trial attempt; the others keep holding until its outcome closes or re-opens the breaker
(or the trial lapses after a cool-down without one: its executor died).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import OrderedDict

from nats.aio.msg import Msg

from stellwerk.core.acks import hand_back
from stellwerk.core.breaker_book import BreakerBook
from stellwerk.core.breakers import Breaker, BreakerState, method_scope, trial_taken
from stellwerk.core.errors import StellwerkError
from stellwerk_api.events.v1 import events_pb2

__all__ = ["Holds"]

logger = logging.getLogger(__name__)

_DUE = 0.002  # a retry this close to its due time runs now
_TRIAL_POLL = 1.0  # seconds between looks while another executor's trial runs
_REMEMBERED = 10_000  # attempts held here, remembered so their poison count is not skewed


def _attempt_id(dispatch: events_pb2.TaskDispatch) -> str:
    return f"{dispatch.run_id}/{dispatch.task_id}/{dispatch.attempt}"


class Holds:
    """Decides, per delivery, whether it waits; hands it back if so."""

    def __init__(self, breakers: BreakerBook | None = None) -> None:
        self.breakers = breakers if breakers is not None else BreakerBook()
        self._held: OrderedDict[str, None] = OrderedDict()

    def deferred(self, dispatch: events_pb2.TaskDispatch) -> bool:
        """Whether earlier deliveries of this attempt were handed back unrun (a retry that was
        not due, or one held here by a breaker): its delivery count then overstates its runs."""
        return dispatch.HasField("not_before") or _attempt_id(dispatch) in self._held

    async def hold(self, msg: Msg, dispatch: events_pb2.TaskDispatch) -> bool:
        """Hand ``msg`` back if its attempt must wait; ``True`` if it was handed back."""
        if dispatch.HasField("not_before"):  # a retry: hand it back until it is due
            wait = dispatch.not_before.ToNanoseconds() / 1e9 - time.time()
            if wait > _DUE:
                await _hand_back(msg, wait)
                return True
        breaker = self.breakers.get(method_scope(dispatch.method))
        if breaker is None or not breaker.open:  # the hot path: a dict look-up
            return False
        held = await self._breaker_wait(breaker, dispatch)
        if held is None:
            return False
        self._remember(dispatch)
        # Spread the returns a little, so held tasks do not all come back at one instant.
        await _hand_back(msg, held * (1 + random.random() * 0.1))
        return True

    async def _breaker_wait(
        self, breaker: Breaker, dispatch: events_pb2.TaskDispatch
    ) -> float | None:
        """Seconds to hold the attempt, or ``None`` to run it (the breaker's trial)."""
        now = time.time()
        state = breaker.state(now)
        if state is BreakerState.OPEN:
            assert breaker.retry_at is not None
            return breaker.retry_at - now
        trial = _attempt_id(dispatch)
        if breaker.trial == trial:
            return None  # ours (a redelivery of the trial)
        if breaker.trial_out(now):
            assert breaker.trial_until is not None
            return min(breaker.trial_until - now, _TRIAL_POLL)
        try:
            stored = await self.breakers.change(
                breaker.scope,
                lambda current: None if current is None else trial_taken(current, trial, now),
            )
        except StellwerkError as exc:  # NATS away: hold on, ask again shortly
            logger.warning("cannot take the trial of %s (%s)", breaker.scope, exc)
            return _TRIAL_POLL
        if stored is None or stored.state(now) is BreakerState.CLOSED or stored.trial == trial:
            if stored is not None and stored.trial == trial:
                logger.info("%s half-open: %s is its trial", breaker.scope, trial)
            return None
        if stored.state(now) is BreakerState.OPEN and stored.retry_at is not None:
            return stored.retry_at - now
        return _TRIAL_POLL

    def _remember(self, dispatch: events_pb2.TaskDispatch) -> None:
        self._held[_attempt_id(dispatch)] = None
        self._held.move_to_end(_attempt_id(dispatch))
        while len(self._held) > _REMEMBERED:
            self._held.popitem(last=False)


async def _hand_back(msg: Msg, delay: float) -> None:
    # Confirmed (core/acks.py): unconfirmed, it comes back only after the lease.
    with contextlib.suppress(Exception):
        await hand_back(msg, delay=max(delay, 0.01))
