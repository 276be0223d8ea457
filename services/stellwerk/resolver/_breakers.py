"""Breakers as the read calls show them: the ones that concern a run (``GetRun`` in the full
view, ``ExplainRun``) and the tasks they hold (``WAIT_REASON_BREAKER``). Read fresh from KV,
never on the hot path."""

from __future__ import annotations

import time
from dataclasses import replace

from nats.js.kv import KeyValue

from stellwerk.core.breaker_book import read_breakers, visible_breakers
from stellwerk.core.breakers import Breaker, BreakerState, method_scope, run_scope
from stellwerk.core.records import TaskRecord, TaskState
from stellwerk.resolver._explain import Explanation, Wait

__all__ = ["breakers_of_run", "held_by_breakers"]

_Hold = tuple[str, float | None, float]  # summary, until, since

# What a task's explanation says while a breaker may be what holds it.
_HELD_BY_METHOD = (Wait.QUEUED, Wait.CLAIMED)
_HELD_BY_RUN = (Wait.REPORTED,)


async def breakers_of_run(
    runs_kv: KeyValue, run_id: str, tasks: list[TaskRecord], now: float | None = None
) -> list[Breaker]:
    """The breakers that concern the run and are not CLOSED: its resolution breaker and the
    breakers of the methods of its tasks that have not settled."""
    methods = sorted({t.method for t in tasks if not t.state.settled})
    scopes = [run_scope(run_id), *(method_scope(m) for m in methods)]
    found = await read_breakers(runs_kv, scopes)
    return visible_breakers(found, time.time() if now is None else now)


def held_by_breakers(
    explained: list[Explanation],
    tasks: list[TaskRecord],
    breakers: list[Breaker],
    now: float | None = None,
) -> list[Explanation]:
    """``explained`` with each task an open breaker holds said so: a dispatched task of a
    method whose breaker is OPEN (or HALF_OPEN with another attempt as its trial), and an
    outcome waiting while the run's resolution breaker is OPEN."""
    now = time.time() if now is None else now
    by_scope = {b.scope: b for b in breakers}
    by_id = {t.id: t for t in tasks}
    result = []
    for item in explained:
        task = by_id.get(item.task_id)
        held = None
        if task is not None and task.state is TaskState.DISPATCHED:
            if item.reason in _HELD_BY_METHOD:
                held = _method_hold(by_scope.get(method_scope(task.method)), task, now)
            elif item.reason in _HELD_BY_RUN:
                held = _run_hold(by_scope.get(run_scope(task.run_id)), now)
        if held is not None:
            summary, until, since = held
            item = replace(item, reason=Wait.BREAKER, summary=summary, until=until, since=since)
        result.append(item)
    return result


def _method_hold(breaker: Breaker | None, task: TaskRecord, now: float) -> _Hold | None:
    if breaker is None:
        return None
    state = breaker.state(now)
    trial = f"{task.run_id}/{task.id}/{task.attempt}"
    if state is BreakerState.OPEN and breaker.retry_at is not None:
        return (
            f"held by the open breaker of {task.method} ({len(breaker.failures)} failures); "
            f"a trial goes at {_clock(breaker.retry_at)}, attempt {task.attempt} is not spent "
            "meanwhile",
            breaker.retry_at,
            breaker.changed_at,
        )
    if state is BreakerState.HALF_OPEN and breaker.trial_out(now) and breaker.trial != trial:
        return (
            f"held by the half-open breaker of {task.method}: its trial ({breaker.trial}) "
            f"runs; attempt {task.attempt} is not spent meanwhile",
            breaker.trial_until,
            breaker.changed_at,
        )
    return None


def _run_hold(breaker: Breaker | None, now: float) -> _Hold | None:
    if breaker is None or breaker.state(now) is not BreakerState.OPEN or breaker.retry_at is None:
        return None
    return (
        f"its outcome waits: the run's resolution breaker is open after "
        f"{len(breaker.failures)} failed passes ({breaker.last_error}); it is tried again at "
        f"{_clock(breaker.retry_at)}",
        breaker.retry_at,
        breaker.changed_at,
    )


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
