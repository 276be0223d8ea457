"""Task documents that read as missing, against a real nats-server: never a null result, never a
lost outcome.

After a cluster node rejoined, a resolver read a dependency's document from a replica that had
not caught up (direct gets are served by any replica) and found nothing; the retry it built then
ran with ``[None]`` as its input and failed for good (``make cluster``, leader phase). The same
read for an outcome's own task ignored the outcome."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from stellwerk.core import names
from stellwerk.core.errors import UnavailableError
from stellwerk.core.jetstream import ensure_topology
from stellwerk.core.progress import Outcome, Progress
from stellwerk.core.progress._dispatcher import Dispatcher
from stellwerk.core.progress._inputs import Inputs
from stellwerk.core.records import TaskRecord, TaskState, new_bitmap
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore, run_store, task_store

RUN = "01a2500000000000000001"


def _dependent() -> TaskRecord:
    """A retry (attempt 2) whose parameters take ``dep``'s result."""
    return TaskRecord(
        run_id=RUN, id="t", name="t", method="test/sum", params={"inputs": ["${dep.result}"]},
        dependencies=["dep"], dependents=[], refs={"dep": "dep"}, sink_index=0,
        settled_deps=new_bitmap(1), state=TaskState.DISPATCHED, attempt=2,
    )  # fmt: skip


async def _inputs(nc: NatsClient) -> tuple[Inputs, DocumentStore[TaskRecord]]:
    topology = await ensure_topology(nc, Settings())
    tasks = task_store(topology.tasks)
    dispatcher = Dispatcher(topology.js, topology.writer, max_payload=nc.max_payload)
    return Inputs(tasks=tasks, dispatcher=dispatcher), tasks


async def test_a_dependency_without_a_readable_document_is_unavailable_not_null(
    nc: NatsClient,
) -> None:
    inputs, _ = await _inputs(nc)
    with pytest.raises(UnavailableError, match="'dep'"):
        await inputs.params(_dependent())


async def test_a_dependency_with_its_document_gives_its_result(nc: NatsClient) -> None:
    inputs, tasks = await _inputs(nc)
    dep = TaskRecord(
        run_id=RUN, id="dep", name="dep", method="test/sum", params={},
        dependencies=[], dependents=[("t", 0)], refs={}, sink_index=None,
        state=TaskState.COMPLETED, attempt=1, result=7, has_result=True,
    )  # fmt: skip
    await tasks.create(names.task_key(dep.run_id, dep.id), dep)
    params = await inputs.params(_dependent())
    assert params == {"inputs": [7]}


async def test_an_outcome_whose_task_document_reads_as_missing_is_offered_again(
    nc: NatsClient,
) -> None:
    topology = await ensure_topology(nc, Settings())
    progress = Progress(
        tasks=task_store(topology.tasks),
        runs=run_store(topology.runs),
        dispatcher=Dispatcher(topology.js, topology.writer, max_payload=nc.max_payload),
    )
    outcome = Outcome(run_id=RUN, task_id="t", attempt=1, succeeded=True, result=3)
    assert await progress.apply_many([outcome], may_republish=True) == [outcome]
