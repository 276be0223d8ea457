"""What a restart of a run (``RetryRun``, ``RestoreCheckpoint``) runs again, and the documents
it writes — pure functions; the steps that write them are ``_restart.Restarter``'s.

A task's place in a run is held by a *normal* task and the chain of its alternatives
(``on_failure: alternative``). The place is **done** when the normal task COMPLETED, or it
FAILED and handed off to an alternative whose own place is done (an alternative that completed
stands in). Every other place — FAILED, BLOCKED, SKIPPED, CANCELLED, or never started — runs
again, and so does every place downstream of one that runs again (its inputs may change: a
SKIPPED task's dependents ran with ``null``). That set is closed downward, so a task that keeps
its result depends only on tasks that keep theirs.

Readiness without counters stays exact: a task that runs again gets the bits of its
dependencies that keep their results set and the bits of those that run again cleared; the
header gets the sink bits of the places that keep their results set and the others cleared.
Attempt numbers never go back: a task that runs again continues after its last attempt, so its
next attempt has a new idempotency key and a new outcome subject (the events stream keeps the
first outcome per attempt). Its retry policy starts over (``attempt_base``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stellwerk.core.progress._retry import max_attempts
from stellwerk.core.records import (
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
    bitmap_count,
    bitmap_set,
    new_bitmap,
)

__all__ = [
    "alternatives_of",
    "place_of",
    "rerun_set",
    "reset",
    "reset_alternative",
    "restarted_header",
    "restored",
]

_HISTORY_KEPT = 10
"""Attempt history entries a task keeps across re-runs (its record has room for ten)."""


def _owners(tasks: Mapping[str, TaskRecord]) -> dict[str, str]:
    """alternative id -> the task whose place it would take."""
    return {t.alternative: t.id for t in tasks.values() if t.alternative is not None}


def _role(task: TaskRecord) -> str | None:
    role: str | None = getattr(task, "role", None)  # documents written before roles: none
    return role


def alternatives_of(tasks: Mapping[str, TaskRecord]) -> set[str]:
    """The tasks named as another's alternative (they run only on a hand-off)."""
    return set(_owners(tasks))


def place_of(task_id: str, tasks: Mapping[str, TaskRecord]) -> str:
    """The normal task whose place ``task_id`` holds (itself, unless it is an alternative)."""
    owners = _owners(tasks)
    seen = {task_id}
    while task_id in owners and owners[task_id] not in seen:
        task_id = owners[task_id]
        seen.add(task_id)
    return task_id


def _chain(task_id: str, tasks: Mapping[str, TaskRecord]) -> list[str]:
    """``task_id`` and its alternatives, in order."""
    chain = [task_id]
    while (alternative := tasks[chain[-1]].alternative) is not None and alternative in tasks:
        if alternative in chain:
            break
        chain.append(alternative)
    return chain


def _done(task_id: str, tasks: Mapping[str, TaskRecord]) -> bool:
    """Whether the place held by normal task ``task_id`` ended well (see the module doc)."""
    for member in _chain(task_id, tasks):
        state = tasks[member].state
        if state is TaskState.COMPLETED:
            return True
        if state is not TaskState.FAILED or tasks[member].alternative is None:
            return False
    return False


def rerun_set(tasks: Mapping[str, TaskRecord], from_ids: Iterable[str] = ()) -> set[str]:
    """Every task that runs again: the places not done, those of ``from_ids`` (known task ids;
    an alternative stands for the place it holds), everything downstream of them, and the
    alternatives of each such place."""
    owners = _owners(tasks)
    # Compensation tasks (a saga's, ``role``) run only on that path: never a place of their own.
    normal = [t for t in tasks if t not in owners and _role(tasks[t]) != "compensation"]
    todo = [t for t in normal if not _done(t, tasks)]
    todo += [place_of(t, tasks) for t in from_ids]
    places: set[str] = set()
    while todo:
        task_id = todo.pop()
        if task_id in places:
            continue
        places.add(task_id)
        todo.extend(d for d, _ in tasks[task_id].dependents if d in tasks)
    return {member for place in places for member in _chain(place, tasks)}


def reset(task: TaskRecord, rerun: set[str], *, restart: int, now: float) -> TaskRecord:
    """``task`` (one of ``rerun``) ready to run again: its dependencies that keep their result
    have their bits set, the others not; DISPATCHED for its next attempt when none runs again
    (its dispatch follows), else PENDING. An alternative waits PENDING for its hand-off."""
    bits = new_bitmap(len(task.dependencies))
    for index, dependency in enumerate(task.dependencies):
        if dependency not in rerun:
            bits = bitmap_set(bits, index)
    kept = max(0, _HISTORY_KEPT - max_attempts(task))
    ready = bitmap_count(bits) == len(task.dependencies)
    return task.evolve(
        state=TaskState.DISPATCHED if ready else TaskState.PENDING,
        attempt=task.attempt + 1 if ready else task.attempt,
        attempt_base=task.attempt,
        generation=0,
        reruns=0,
        settled_deps=bits,
        dep_failed=False,
        result=None,
        has_result=False,
        error=None,
        executor_id=None,
        dispatched_at=now if ready else None,
        ended_at=None,
        retry_at=None,
        history=task.history[-kept:] if kept else [],
        restart=restart,
    )


def reset_alternative(task: TaskRecord, *, restart: int) -> TaskRecord:
    """An alternative whose place runs again: PENDING until a hand-off starts it."""
    kept = max(0, _HISTORY_KEPT - max_attempts(task))
    return task.evolve(
        state=TaskState.PENDING,
        attempt_base=task.attempt,
        generation=0,
        reruns=0,
        dep_failed=False,
        result=None,
        has_result=False,
        error=None,
        executor_id=None,
        dispatched_at=None,
        ended_at=None,
        retry_at=None,
        history=task.history[-kept:] if kept else [],
        restart=restart,
    )


def restored(saved: TaskRecord, current: TaskRecord, *, restart: int) -> TaskRecord | None:
    """``current`` rewound to ``saved`` (its copy in a checkpoint, a place that keeps its
    result); ``None`` if nothing changed since. Attempt numbers never go back."""
    if (
        saved.state is current.state
        and saved.attempt == current.attempt
        and saved.has_result == current.has_result
        and saved.result == current.result
    ):
        return None
    return saved.evolve(
        attempt=max(saved.attempt, current.attempt),
        generation=current.generation,
        restart=restart,
    )


def restarted_header(
    run: RunRecord, sinks_rerun: Iterable[int], *, restart: int, now: float
) -> RunRecord:
    """The header of a run restarted with the sinks ``sinks_rerun`` running again: RUNNING (or
    COMPLETED at once, should no sink run again), the others' bits set."""
    bits = new_bitmap(run.sink_count)
    rerun = set(sinks_rerun)
    for index in range(run.sink_count):
        if index not in rerun:
            bits = bitmap_set(bits, index)
    ended = bitmap_count(bits) == run.sink_count
    return run.evolve(
        state=RunState.COMPLETED if ended else RunState.RUNNING,
        settled_sinks=bits,
        failed=False,
        error=None,
        ended_at=now if ended else None,
        restarts=restart,
    )
