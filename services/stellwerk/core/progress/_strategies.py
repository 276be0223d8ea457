"""Failure strategies: what a task's final failure means for its run (``on_failure``).

A failure is final once no retry is left (``_retry``). Then, by the task's strategy:

- ``block`` (the default): the task is FAILED; its dependents become BLOCKED (``_propagate``),
  independent branches run to their end, and the run ends FAILED.
- ``skip``: the task is SKIPPED, its error kept and no result; its dependents run, and every
  reference to its result resolves to ``null`` (``NULL_OUTPUT``); a SKIPPED sink does not fail
  the run.

The strategy is applied to the record that settles the task, inside the same compare-and-set
that would have written FAILED, so it costs no step and no write more, and it is decided from
the task's document alone: every resolver that applies the outcome again (a redelivery) writes
the same state.
"""

from __future__ import annotations

from typing import Any

from stellwerk.core.model import NULL_OUTPUT
from stellwerk.core.records import TaskRecord, TaskState

__all__ = ["SKIP", "output_of", "settle_failure"]

SKIP = "skip"


def settle_failure(record: TaskRecord) -> TaskRecord:
    """``record`` — about to be written as its task's final state — with the task's failure
    strategy applied: a FAILED task under ``skip`` is SKIPPED (its error kept)."""
    if record.state is TaskState.FAILED and record.on_failure == SKIP:
        return record.evolve(state=TaskState.SKIPPED, result=None, has_result=False)
    return record


def output_of(task: TaskRecord) -> Any:
    """What a dependent's references read from a settled dependency that lets it run: its
    result, or ``NULL_OUTPUT`` (every reference ``null``) for a SKIPPED one."""
    return NULL_OUTPUT if task.state is TaskState.SKIPPED else task.result
