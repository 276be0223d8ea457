"""Resilient resolution: transient NATS/KV errors retried in place, a circuit breaker per run
around its resolution, and the counting of the method breakers (``core/breakers.py``).

- **Retries in place.** A resolution pass that fails on a transient error (NATS unavailable, a
  compare-and-set lost too often) is tried again at once with exponential backoff (tenacity,
  ``STELLWERK_RESOLUTION_ATTEMPTS`` tries in all) before its events are handed back. Each
  pass is idempotent (every step a compare-and-set or a publish with a deterministic id), so
  trying again changes nothing that the first try did. The wait happens in the run's own
  worker, so other runs' events are applied meanwhile. A permanent error (a document that
  cannot be read, a bug) is not retried in place: its events are handed back as before.
- **The run's breaker.** A pass that failed after its tries counts toward the run's breaker;
  ``STELLWERK_BREAKER_RUN_THRESHOLD`` such failures within the window open it: the run's
  events are then handed back until the cool-down ends instead of hammering a resolution that
  keeps failing. HALF_OPEN, the next pass is the trial; a pass that succeeds closes it.
- **The method breakers.** After a pass, its failed attempts (handler failures and timeouts;
  not ``NonRetryableError``, poison or too-large results) are counted on their method's
  breaker, and a success closes an open one. Nothing is read or written for a success while
  no breaker is open, so the hot path is unchanged (invariant 5).

Every retry counts in ``stellwerk_resolution_retries``; each resolver also publishes its count
under ``resolution-retries.<resolver>`` in ``stellwerk-runs``, which the overview sums, and the
janitor folds the counts of resolvers that are gone into one (``core/retry_counts.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from nats.js.kv import KeyValue
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from stellwerk.core import names
from stellwerk.core.breaker_book import CLOSE, BreakerBook
from stellwerk.core.breakers import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    closed_by_success,
    method_scope,
    opened_by_failure,
    run_scope,
)
from stellwerk.core.errors import ConflictError, StellwerkError, UnavailableError
from stellwerk.core.lifecycle import cancel_requested
from stellwerk.core.limits import clip_error
from stellwerk.core.metrics import Counter
from stellwerk.core.progress import Outcome
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import TaskRecord
from stellwerk.core.retry_counts import RetryCountPublisher
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore

__all__ = ["ResolutionGuard"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = (UnavailableError, ConflictError, *NATS_FAILURES)
"""Errors a resolution pass is tried again for in place: NATS could not do it *now*."""
_PUBLISH_EVERY = 2.0  # seconds between publications of the retry count


class ResolutionGuard:
    """Wraps the resolver's passes; one per resolver process."""

    def __init__(
        self,
        *,
        book: BreakerBook,
        tasks: DocumentStore[TaskRecord],
        settings: Settings,
        retries: Counter,
    ) -> None:
        self.book = book
        self._tasks = tasks
        self._attempts = settings.resolution_attempts
        self._run_policy = BreakerPolicy(
            settings.breaker_run_threshold,
            settings.breaker_run_window,
            settings.breaker_run_cooldown,
        )
        self._method_policy = BreakerPolicy(
            settings.breaker_method_threshold,
            settings.breaker_method_window,
            settings.breaker_method_cooldown,
        )
        self._retries = retries
        self.retry_count = 0
        # Fresh per process start: host and pid alone repeat when a container restarts (pid 1,
        # same host name), and a new process would then overwrite its predecessor's count.
        self.resolver_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"

    def count(self, events: int) -> None:
        """``events`` events must be tried again (in place, or handed back)."""
        self.retry_count += events
        self._retries.inc(events)

    def held(self, run_id: str) -> float | None:
        """Seconds to hand the run's events back for while its breaker is OPEN; ``None`` to
        apply them (CLOSED, or HALF_OPEN: this pass is the trial)."""
        breaker = self.book.get(run_scope(run_id))
        if breaker is None or not breaker.open:
            return None
        now = time.time()
        if breaker.state(now) is BreakerState.OPEN and breaker.retry_at is not None:
            return breaker.retry_at - now
        return None

    async def apply(self, events: int, call: Callable[[], Awaitable[T]]) -> T:
        """Run one resolution pass of ``events`` events, trying again in place on transient
        errors; raises the last error when the tries are used up (or at once if permanent)."""

        def counted(state: RetryCallState) -> None:
            self.count(events)
            logger.info(
                "resolution pass failed (%s); trying again",
                state.outcome and state.outcome.exception(),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(initial=0.05, max=1.0, jitter=0.05),
            retry=retry_if_exception_type(TRANSIENT),
            before_sleep=counted,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def run_failed(self, run_id: str, error: BaseException) -> None:
        """A pass of ``run_id`` failed after its tries: count it on the run's breaker. When KV
        cannot take the record (NATS away), this resolver still holds the run by its own count."""
        now = time.time()
        scope = run_scope(run_id)
        failure = f"{self.resolver_id}@{now:.6f}"
        text = clip_error(str(error) or type(error).__name__)

        def change(current: Breaker | None) -> Breaker | None:
            return opened_by_failure(current, scope, failure, self._run_policy, now, text)

        try:
            stored = await self.book.change(scope, change)
        except StellwerkError as exc:
            logger.warning("cannot record the resolution failure of run %s: %s", run_id, exc)
            local = change(self.book.get(scope))
            if local is not None:
                self.book.note(scope, local)
            return
        if stored is not None and stored.open and stored.changed_at == now:
            logger.warning(
                "run %s: resolution breaker OPEN until %.3f", run_id, stored.retry_at or 0
            )

    async def applied(self, run_id: str, outcomes: Iterable[Outcome]) -> None:
        """A pass of ``run_id`` succeeded: close the run's breaker if it was counting, and
        count the outcomes on their methods' breakers. A breaker write that fails is logged
        and left: breakers are advisory, and a trial that lapses brings the next one."""
        try:
            if self.book.get(run_scope(run_id)) is not None:
                await self.book.change(
                    run_scope(run_id), lambda cur: None if cur is None else CLOSE
                )
                logger.info("run %s: resolution breaker closed", run_id)
            await self._count_methods(list(outcomes))
        except StellwerkError as exc:
            logger.warning("breaker bookkeeping of run %s left undone: %s", run_id, exc)

    async def _count_methods(self, outcomes: list[Outcome]) -> None:
        if not self._method_policy.enabled and not self.book.any_open:
            return
        failed = [o for o in outcomes if not o.succeeded and o.retryable]
        succeeded = [o for o in outcomes if o.succeeded] if self.book.any_open else []
        if not failed and not succeeded:
            return  # the hot path: nothing to look up
        by_method: dict[str, tuple[list[Outcome], list[Outcome]]] = {}
        for outcome in failed + succeeded:
            method = await self._method_of(outcome)
            if method is None:
                continue
            fails, wins = by_method.setdefault(method, ([], []))
            (wins if outcome.succeeded else fails).append(outcome)
        now = time.time()
        for method, (fails, wins) in by_method.items():
            scope = method_scope(method)
            if wins and closed_by_success(self.book.get(scope)):
                await self.book.change(scope, lambda cur: CLOSE if closed_by_success(cur) else None)
                logger.info("%s breaker closed by a success", scope)
            if fails and self._method_policy.enabled:
                await self.book.change(scope, self._failures_counted(scope, fails, now))

    def _failures_counted(
        self, scope: str, fails: list[Outcome], now: float
    ) -> Callable[[Breaker | None], Breaker | None]:
        def change(current: Breaker | None) -> Breaker | None:
            changed = None
            for outcome in fails:
                failure = f"{outcome.run_id}/{outcome.task_id}/{outcome.attempt}"
                error = clip_error(outcome.error or "")
                new = opened_by_failure(
                    changed or current, scope, failure, self._method_policy, now, error
                )
                changed = new or changed
            return changed

        return change

    async def _method_of(self, outcome: Outcome) -> str | None:
        """The method of the outcome's task: from the cache the pass just filled, else KV."""
        key = names.task_key(outcome.run_id, outcome.task_id)
        found = self._tasks.cached(key) or await self._tasks.get(key)
        return None if found is None else found.value.method

    async def publish_count(self, runs_kv: KeyValue) -> None:
        """Publish this resolver's retry count for the overview whenever it changed, and once a
        minute as a sign of life (``core/retry_counts.py``: the janitor folds the counts of
        resolvers that are gone)."""
        publisher = RetryCountPublisher(runs_kv, self.resolver_id)
        while not cancel_requested():
            await asyncio.sleep(_PUBLISH_EVERY)
            try:
                await publisher.publish(self.retry_count)
            except Exception as exc:  # NATS away: the next round publishes it
                logger.debug("cannot publish the resolution retry count: %s", exc)
