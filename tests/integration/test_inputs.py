"""``core.progress._inputs.Inputs`` against a real nats-server: a dependency whose document
cannot be read is never taken as a null result.

After a cluster node rejoined, a resolver read a dependency's document from a replica that had
not caught up (direct gets are served by any replica) and found nothing; the retry it built then
ran with ``[None]`` as its input and failed for good (``make cluster``, leader phase)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from stellwerk.core import names
from stellwerk.core.errors import UnavailableError
from stellwerk.core.jetstream import ensure_topology
from stellwerk.core.progress._dispatcher import Dispatcher
from stellwerk.core.progress._inputs import Inputs
from stellwerk.core.records import TaskRecord, TaskState, new_bitmap
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore, task_store

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
