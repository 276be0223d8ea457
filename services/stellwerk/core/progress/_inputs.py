"""A task's inputs: its parameters with every ``${...}`` reference resolved from the results of
the dependencies it names.

Reading a dependency's result is a responsibility of its own, apart from setting bits in
``_propagate.py``: the result may be in the outcomes in hand, the cache, KV, or only in the
events stream (an outcome committed there and not yet recorded on its document), stored out of
line, or stand in for by an alternative's. ``Propagation`` holds one to build the dispatches of
the dependents it makes ready; the restarter uses one on its own for the tasks it re-dispatches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stellwerk.core import names
from stellwerk.core.errors import StellwerkError, UnavailableError
from stellwerk.core.progress._dispatcher import Dispatcher, resolve_params
from stellwerk.core.progress._strategies import output_of, stand_in
from stellwerk.core.records import TaskRecord
from stellwerk.core.store import DocumentStore

__all__ = ["Inputs"]


@dataclass(frozen=True, slots=True)
class _StandIn:
    """A dependency's result is its alternative's (``task_id``)."""

    task_id: str


class Inputs:
    """Resolves a task's parameters from its dependencies' results."""

    def __init__(self, *, tasks: DocumentStore[TaskRecord], dispatcher: Dispatcher) -> None:
        self._tasks = tasks
        self._dispatcher = dispatcher

    async def params(
        self, task: TaskRecord, known: Mapping[tuple[str, str], TaskRecord] | None = None
    ) -> dict[str, Any]:
        """``task``'s params with its references resolved from the settled tasks in ``known``,
        else from KV or the stored outcomes."""
        targets = sorted(set(task.refs.values()))
        outputs: dict[str, Any] = {}
        known = known or {}
        if len(targets) == 1 or all(self._in_hand(task.run_id, t, known) for t in targets):
            # No gather: it costs a task per target and a turn of the event loop before the
            # dispatch is sent, which then leaves in a socket write of its own.
            for target in targets:
                outputs[target] = await self._result_of(task.run_id, target, known, task.restart)
        elif targets:  # most tasks reference nothing: no gather for them
            found = await asyncio.gather(
                *(self._result_of(task.run_id, t, known, task.restart) for t in targets)
            )
            outputs = dict(zip(targets, found, strict=True))
        return resolve_params(task, outputs.__getitem__)

    def _in_hand(
        self, run_id: str, task_id: str, known: Mapping[tuple[str, str], TaskRecord]
    ) -> bool:
        """Whether ``task_id``'s document is among the outcomes in hand or cached (its output
        is read without I/O, unless it was stored out of line or replaced by an alternative's)."""
        return (run_id, task_id) in known or self._tasks.cached(
            names.task_key(run_id, task_id)
        ) is not None

    async def _result_of(
        self, run_id: str, task_id: str, known: Mapping[tuple[str, str], TaskRecord], since: int
    ) -> Any:
        """A settled dependency's output (see :meth:`_output`); for one that failed and handed
        off to an alternative, the alternative's (along a chain of them: validated acyclic)."""
        seen = {task_id}
        while isinstance(found := await self._output(run_id, task_id, known, since), _StandIn):
            task_id = found.task_id
            if task_id in seen:
                raise StellwerkError(f"alternatives of {task_id!r} form a cycle")
            seen.add(task_id)
        return await self._dispatcher.output(found)  # a result stored out of line: fetched

    async def _output(
        self, run_id: str, task_id: str, known: Mapping[tuple[str, str], TaskRecord], since: int
    ) -> Any:
        """A settled dependency's output: from the outcomes in hand, the cache, KV, or — when
        its document does not record it yet — its committed outcome in the events stream;
        ``_StandIn`` when its alternative's result stands in for its own."""
        hit = known.get((run_id, task_id))
        key = names.task_key(run_id, task_id)
        cached = await self._tasks.get(key) if hit is None else None
        if cached is not None and cached.value.restart < since:  # maybe from before a restart
            cached = None
        for record in (hit, cached.value if cached is not None else None):
            if record is not None and (alternative := stand_in(record)) is not None:
                return _StandIn(alternative)
            if record is not None and record.state.lets_dependents_run:
                return output_of(record)
        found = await self._tasks.get(key, fresh=True)
        if found is None:
            # A dependency whose dependent is being dispatched has a document: none read means
            # a replica that has not caught up answered (the buckets allow direct gets, served
            # by any replica: a cluster node that just rejoined), or the run is being removed.
            # Either way not a result: taken as null, a retry ran with [None] for its input
            # after a node rejoined (make cluster). Unavailable: the pass is tried again.
            raise UnavailableError(f"the document of {task_id!r} is not readable")
        if (alternative := stand_in(found.value)) is not None:
            return _StandIn(alternative)
        if found.value.state.lets_dependents_run:
            return output_of(found.value)
        outcome = await self._dispatcher.outcome_of(run_id, task_id, found.value.attempt)
        failed = outcome is not None and not outcome.succeeded
        if failed and (alternative := stand_in(found.value, failed=True)) is not None:
            return _StandIn(alternative)
        if outcome is None or not outcome.succeeded:
            raise UnavailableError(f"the result of {task_id!r} is not readable yet")
        return outcome.result
