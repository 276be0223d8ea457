"""The claims this executor holds: one per delivery whose attempt is running, kept by heartbeats.

The claim on an attempt is the work-queue delivery itself (see ``_runner.py``). Keeping it is
a responsibility of its own, apart from fetching, gating and reporting in the runner: the
heartbeats (``in_progress()`` every lease/3, noted in the claims bucket for ``explain``), the
gap check that gives a claim up when NATS was away for most of the lease, and the two ways a
claim ends early — its run was cancelled, or NATS reconnected and every claim held across the
gap may be someone else's now. The runner opens a claim per attempt and reads its flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.settings import Settings
from stellwerk_api.events.v1 import events_pb2

__all__ = ["Claim", "Claims"]


class _Heartbeat:
    """An attempt's heartbeat task, started only when its first beat is due: most attempts
    end sooner, and then cost a timer instead of a task that is created and cancelled."""

    __slots__ = ("_handle", "_task")

    def __init__(self, delay: float, beats: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(delay, self._start, beats)

    def _start(self, beats: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task = asyncio.create_task(beats())

    def stop(self) -> None:
        """No more beats. Not awaited: on Python 3.11, ``asyncio.wait_for`` (inside nats-py's
        requests) can swallow a cancellation that coincides with its reply, and a heartbeat
        that survived its cancel kept beating for ever while its attempt waited for it here —
        the delivery stayed "in progress", never redelivered, and the run never ended (chaos
        ``nats`` scenario). The loop also stops on ``claim.finished``; a beat already on its
        way after the acknowledgement is ignored by JetStream."""
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


class Claim:
    """The state of one delivery's claim while its attempt runs."""

    __slots__ = ("cancelled", "finished", "handed_back", "heartbeat", "lost", "run_id", "work")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.work: asyncio.Task[events_pb2.TaskEvent] | None = None
        self.heartbeat: _Heartbeat | None = None
        self.lost = False
        self.finished = False  # the attempt is past its handler: no more heartbeats
        self.cancelled = False  # its run was cancelled: acknowledge, report nothing
        self.handed_back = False  # its remote worker went away: give the delivery back now


class Claims:
    """The claims held right now, their heartbeats, and giving them up."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        settings: Settings,
        executor_id: str,
        kv: KeyValue | None,
    ) -> None:
        self._nc = nc
        self._settings = settings
        self._executor_id = executor_id
        self._kv = kv
        self._held: set[Claim] = set()

    def open(self, msg: Msg, dispatch: events_pb2.TaskDispatch) -> Claim:
        """Hold the claim on ``msg``'s delivery from now on; its first beat is a third of a
        lease away. Pair with :meth:`close`."""
        claim = Claim(dispatch.run_id)
        self._held.add(claim)
        since = time.monotonic()
        claim.heartbeat = _Heartbeat(
            self.beat_interval, lambda: self._heartbeat(msg, claim, dispatch, since)
        )
        return claim

    def close(self, claim: Claim) -> None:
        """The attempt is past its handler: stop beating and forget the claim."""
        claim.finished = True
        self._held.discard(claim)
        if claim.heartbeat is not None:
            claim.heartbeat.stop()

    @property
    def beat_interval(self) -> float:
        return max(0.2, self._settings.task_lease / 3)

    async def _heartbeat(
        self, msg: Msg, claim: Claim, dispatch: events_pb2.TaskDispatch, since: float
    ) -> None:
        """Keep the delivery ours; if NATS has been unreachable for most of the lease, the claim
        may already be someone else's: cancel the handler rather than run it twice at once.
        Each beat also notes who holds the claim, for ``explain`` (long attempts only: the first
        beat comes a third of a lease after ``since``, the start, when this task is started)."""
        lease = self._settings.task_lease
        last_sent = since
        while not claim.lost and not claim.finished:
            # Check the gap *before* heartbeating: a heartbeat after a long silence cannot
            # bring back a claim that may have lapsed meanwhile.
            if time.monotonic() - last_sent > 0.8 * lease:
                self._lose(claim)
                return
            if self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                    last_sent = time.monotonic()
                    if not claim.finished:
                        await self._note_claim(dispatch)
            await asyncio.sleep(self.beat_interval)

    async def _note_claim(self, dispatch: events_pb2.TaskDispatch) -> None:
        if self._kv is None:
            return
        record = {
            "executor": self._executor_id,
            "attempt": dispatch.attempt,
            "beat_at": time.time(),
            "lease": self._settings.task_lease,
        }
        key = names.claim_key(dispatch.run_id, dispatch.task_id)
        await self._kv.put(key, json.dumps(record).encode())

    @staticmethod
    def _lose(claim: Claim) -> None:
        claim.lost = True
        if claim.work is not None:
            claim.work.cancel()

    def cancel_run(self, run_id: str) -> None:
        """``run_id`` was cancelled: cancel the handlers of its attempts (a plain ``def``
        handler's thread is abandoned, a ``python/execute`` script killed)."""
        for claim in list(self._held):
            if claim.run_id == run_id:
                claim.cancelled = True
                if claim.work is not None:
                    claim.work.cancel()

    def drop_all(self) -> None:
        """Give up every claim held (see ``TaskRunner.drop_claims``)."""
        for claim in list(self._held):
            self._lose(claim)
