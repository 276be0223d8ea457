"""Retries: whether a failed attempt is tried again, and when.

A task's ``retry`` policy (the workflow's ``retry`` block, stored on its document) gives the
number of attempts and the delay before each retry. The delay is decided from the failed
attempt's outcome alone — its end time on the executor's clock and a jitter drawn from a
generator seeded with (run, task, attempt) — so every resolver that applies the same outcome,
before or after a crash, writes the same due time and publishes the same dispatch.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from stellwerk.core.limits import clip_error
from stellwerk.core.records import TaskRecord, TaskState

__all__ = ["JITTER", "attempt_entry", "retry_delay", "retry_of"]

HISTORY_ERROR_CHARS = 300
"""An error as kept in the attempt history (the task's own ``error`` keeps up to 2,000): ten
attempts stay within the 16 KiB a task document keeps for bookkeeping."""

JITTER = 0.2
"""With ``jitter``, each delay loses a random part of up to this share of it (so a delay never
exceeds its backoff value nor ``max_delay``, and never falls below 80 % of it)."""


def retry_delay(policy: dict[str, Any], failed: int, *, seed: str = "") -> float:
    """Seconds to wait after failed attempt number ``failed`` (1-based) before the next."""
    base = float(policy.get("base_delay", 1.0))
    backoff = str(policy.get("backoff", "exponential")).lower()
    if backoff == "fixed":
        delay = base
    elif backoff == "linear":
        delay = base * failed
    else:
        delay = base * 2.0 ** min(failed - 1, 30)
    delay = min(delay, float(policy.get("max_delay", 300.0)))
    if policy.get("jitter", True):
        digest = hashlib.sha256(f"{seed}\x00{failed}".encode()).digest()
        delay *= 1.0 - JITTER * random.Random(digest).random()
    return delay


def max_attempts(task: TaskRecord) -> int:
    """How many attempts ``task`` may make (1 without a policy)."""
    if not task.retry:
        return 1
    return int(task.retry.get("max_attempts", 3))


def attempt_entry(
    attempt: int,
    *,
    executor: str | None,
    start: float | None,
    end: float | None,
    error: str | None,
) -> dict[str, Any]:
    """One entry of a task's attempt history."""
    if error is not None and len(error) > HISTORY_ERROR_CHARS:
        error = error[: HISTORY_ERROR_CHARS - 3] + "..."
    return {"n": attempt, "executor": executor, "start": start, "end": end, "error": error}


def retry_of(
    task: TaskRecord,
    *,
    error: str | None,
    executor: str | None,
    start: float | None,
    end: float | None,
    retryable: bool,
) -> TaskRecord | None:
    """``task`` moved on to its next attempt after its current one failed with ``error``, due
    after the policy's delay; ``None`` when the failure is final (not retryable, or no attempt
    left)."""
    made = task.attempt - task.attempt_base  # a re-run (RetryRun) starts a fresh budget
    if not retryable or made >= max_attempts(task):
        return None
    assert task.retry is not None
    ended = end if end is not None else time.time()
    delay = retry_delay(task.retry, made, seed=f"{task.run_id}\x00{task.id}")
    clipped = clip_error(error or "task failed")
    return task.evolve(
        state=TaskState.DISPATCHED,
        attempt=task.attempt + 1,
        generation=0,
        reruns=0,
        retry_at=ended + delay,
        dispatched_at=time.time(),
        error=clipped,
        executor_id=executor,
        history=[
            *task.history,
            attempt_entry(task.attempt, executor=executor, start=start, end=end, error=clipped),
        ],
    )
