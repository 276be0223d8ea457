"""Submitting the same document again reuses its parsed spec, never skipping a check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from stellwerk.core.errors import WorkflowInvalidError
from stellwerk.core.jetstream import ensure_topology
from stellwerk.core.natsd import NatsServer
from stellwerk.core.progress import Dispatcher
from stellwerk.core.settings import Settings
from stellwerk.core.store import run_store, task_store
from stellwerk.resolver._submit import Submitter

DOC = "tasks:\n  - {id: a, method: demo/unregistered, params: {x: 1}}\n"


@pytest.fixture
async def submitter(nats_server: NatsServer) -> AsyncIterator[Submitter]:
    nc: NatsClient = await nats.connect(nats_server.url)
    topology = await ensure_topology(nc, Settings())
    yield Submitter(
        nc=nc,
        runs_kv=topology.runs,
        executors_kv=topology.executors,
        tasks=task_store(topology.tasks),
        runs=run_store(topology.runs),
        dispatcher=Dispatcher(topology.js, topology.writer, max_payload=nc.max_payload),
        settings=Settings(),
    )
    await topology.writer.close()
    await nc.close()


async def test_a_document_is_parsed_once(submitter: Submitter) -> None:
    first = await submitter.validate(DOC, document_format=None, allow_unregistered=True)
    again = await submitter.validate(DOC, document_format=None, allow_unregistered=True)
    assert again is first
    other = await submitter.validate(
        DOC + "# changed\n", document_format=None, allow_unregistered=True
    )
    assert other is not first


async def test_a_cached_document_still_has_its_methods_checked(submitter: Submitter) -> None:
    await submitter.validate(DOC, document_format=None, allow_unregistered=True)
    with pytest.raises(WorkflowInvalidError, match="unknown method 'demo/unregistered'"):
        await submitter.validate(DOC, document_format=None, allow_unregistered=False)


async def test_invalid_documents_are_refused_every_time(submitter: Submitter) -> None:
    bad = "tasks:\n  - {id: a, method: demo/x, dependencies: [missing]}\n"
    for _ in range(2):
        with pytest.raises(WorkflowInvalidError) as refused:
            await submitter.validate(bad, document_format=None, allow_unregistered=True)
        assert any("missing" in p.message for p in refused.value.problems)


async def test_runs_from_one_cached_spec_are_independent(submitter: Submitter) -> None:
    spec = await submitter.validate(DOC, document_format=None, allow_unregistered=True)
    one = await submitter.submit(spec)
    two = await submitter.submit(await submitter.validate(DOC, document_format=None,
                                                          allow_unregistered=True))  # fmt: skip
    assert one.id != two.id and one.task_count == two.task_count == 1
