"""Failure strategies: what a task's final failure means for its run (``on_failure``).

A failure is final once no retry is left (``_retry``). Then, by the task's strategy:

- ``block`` (the default): the task is FAILED; its dependents become BLOCKED (``_propagate``),
  independent branches run to their end, and the run ends FAILED.
- ``skip``: the task is SKIPPED, its error kept and no result; its dependents run, and every
  reference to its result resolves to ``null`` (``NULL_OUTPUT``); a SKIPPED sink does not fail
  the run.
- ``alternative``: the task is FAILED, but *hands off* instead of propagating: its
  ``alternative`` task (PENDING since the submit, never a root) is made DISPATCHED and
  dispatched (``Propagation._start_alternative``, a compare-and-set like any dependent's). The
  alternative holds the failed task's dependents (with the failed task's bit indexes) and sink
  place, so when it settles it sets their bits; references to the failed task follow
  ``alternative`` to it (``stand_in``), so ``${failed.result}`` is the alternative's result.

The strategy is applied to the record that settles the task, inside the same compare-and-set
that would have written FAILED, so it costs no step and no write more, and it is decided from
the task's document alone: every resolver that applies the outcome again (a redelivery) writes
the same state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stellwerk.core.blobs import LargeResult, StoredText
from stellwerk.core.model import NULL_OUTPUT
from stellwerk.core.records import TaskRecord, TaskState

__all__ = ["SKIP", "handed_off", "handoff_unfinished", "output_of", "settle_failure", "stand_in"]

SKIP = "skip"


def settle_failure(record: TaskRecord) -> TaskRecord:
    """``record`` — about to be written as its task's final state — with the task's failure
    strategy applied: a FAILED task under ``skip`` is SKIPPED (its error kept)."""
    if record.state is TaskState.FAILED and record.on_failure == SKIP:
        return record.evolve(state=TaskState.SKIPPED, result=None, has_result=False)
    return record


def handed_off(task: TaskRecord) -> bool:
    """Whether settled ``task`` passes its place to its alternative instead of propagating."""
    return task.state is TaskState.FAILED and task.alternative is not None


def stand_in(task: TaskRecord, *, failed: bool | None = None) -> str | None:
    """The task whose result stands in for ``task``'s: its alternative when it has failed for
    good (``failed`` overrides its recorded state: an outcome not yet recorded), else ``None``."""
    if task.alternative is None:
        return None
    if failed if failed is not None else task.state is TaskState.FAILED:
        return task.alternative
    return None


def handoff_unfinished(task: TaskRecord, tasks: Mapping[str, TaskRecord]) -> bool | None:
    """For a handed-off ``task`` (recovery's view): whether its alternative was never started
    (its hand-off was cut short); ``None`` if ``task`` did not hand off."""
    if not handed_off(task):
        return None
    alternative = tasks.get(task.alternative or "")
    return alternative is not None and alternative.state is TaskState.PENDING


def output_of(task: TaskRecord) -> Any:
    """What a dependent's references read from a settled dependency that lets it run: its
    result (a ``LargeResult`` when stored out of line), or ``NULL_OUTPUT`` (every reference
    ``null``) for a SKIPPED one."""
    if task.state is TaskState.SKIPPED:
        return NULL_OUTPUT
    if task.stored_result is not None:
        ref = StoredText.from_record(task.stored_result)
        return LargeResult.of(task.run_id, task.id, task.attempt, ref)
    return task.result
