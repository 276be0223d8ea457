"""Records larger than a NATS message, against a stack on a server with NATS's default
``max_payload`` of 1 MiB (issue 8, classes 6 and 7; limits in core/limits.py).

Workflows whose records would not fit are refused by validation and submit alike, naming the
field and the limit, and leave no key behind; an outcome whose application can never succeed
ends its task instead of being redelivered for ever.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import nats
import pytest

from stellwerk.core import names, natsd
from stellwerk.core.kvscan import list_keys
from stellwerk.core.natsd import NatsServer
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import submit, tasks_by_id, wait_done
from tests.support.polling import eventually

MIB = 1024 * 1024
# What core/limits derives from 1 MiB: one message less 1 KiB of headers; half for a result;
# a task definition gets the rest less 16 KiB of bookkeeping; a run header 16 KiB less.
RESULT_LIMIT = (MIB - 1024) // 2
TASK_LIMIT = MIB - 1024 - RESULT_LIMIT - 16 * 1024
HEADER_LIMIT = MIB - 1024 - 16 * 1024


@pytest.fixture(scope="module")
def nats_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Replaces the suite's server (8 MiB) for this module: NATS's default message size."""
    with mock.patch.object(natsd, "MAX_PAYLOAD", MIB):
        server = NatsServer.start_new(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(ready_stack: Any) -> AsyncIterator[Any]:
    client = await nats.connect(ready_stack.nats.url)
    yield client
    await client.close()


async def _keys(nc: Any) -> set[str]:
    js = nc.jetstream()
    runs = await list_keys(await js.key_value(names.RUNS_BUCKET), ">")
    tasks = await list_keys(await js.key_value(names.TASKS_BUCKET), ">")
    return {*runs, *tasks}


def _document(**workflow: Any) -> str:
    return json.dumps({"name": "big", "tasks": [{"id": "a", "method": "mcp/tool.echo"}],
                       **workflow})  # fmt: skip


BIG_TASK = {
    "id": "a",
    "method": "mcp/tool.echo",
    "params": {"message": "p" * 600_000},
    "metadata": {"note": "m" * 600_000},
}
CASES = {
    "params+metadata": (
        _document(tasks=[BIG_TASK]),
        ("a", "params", f"at most {TASK_LIMIT:,} bytes per task definition"),
    ),
    "description": (
        _document(description="d" * (2 * MIB)),
        ("", "description", f"at most {HEADER_LIMIT:,} bytes per run header"),
    ),
    "name": (
        _document(name="n" * (2 * MIB)),
        ("", "name", f"at most {HEADER_LIMIT:,} bytes per run header"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_records_beyond_max_payload_are_refused_by_validate_and_submit_alike(
    workflows: Any, nc: Any, case: str
) -> None:
    document, (task, field, limit) = CASES[case]
    checked = await workflows.ValidateWorkflow(
        api.ValidateWorkflowRequest(document=document, document_format="json"), timeout=60
    )
    found = [(p.task, p.field) for p in checked.problems]
    assert (task, field) in found, checked.problems
    message = next(p.message for p in checked.problems if (p.task, p.field) == (task, field))
    assert limit in message and "max_payload 1,048,576 bytes" in message

    before = await _keys(nc)
    request_id = f"oversized-{case}"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(workflows, document, document_format="json", request_id=request_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert field in (refused.value.details() or "") and limit in (refused.value.details() or "")
    # Nothing written: no req.*, staging.*, order.*, run.* or task key appeared.
    assert await _keys(nc) == before
    assert names.request_key(request_id) not in before


async def _waiting_task(workflows: Any, params: dict[str, Any] | None = None) -> pb.Run:
    """A run whose task ``slow`` waits for an executor that never comes; ``after`` needs it."""
    document = json.dumps({"name": "forged", "tasks": [
        {"id": "slow", "method": "test/nobody", "params": params or {}},
        {"id": "after", "method": "mcp/tool.echo", "dependencies": ["slow"],
         "params": {"message": "${slow}"}},
    ]})  # fmt: skip
    return await submit(
        workflows, document, document_format="json", allow_unregistered_methods=True
    )


async def _report(nc: Any, run_id: str, data: bytes) -> None:
    ack = await nc.jetstream().publish(
        names.event_subject(run_id, "slow", 1),
        data,
        headers={"Nats-Msg-Id": names.event_msg_id(run_id, "slow", 1, 0)},
    )
    assert ack.seq


async def _all_acknowledged(nc: Any) -> bool:
    info = await nc.jetstream().consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


def _success(run_id: str, result_json: str) -> bytes:
    return events_pb2.TaskEvent(
        format_version=2,
        run_id=run_id,
        task_id="slow",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json=result_json,
        executor_id="forger",
    ).SerializeToString()


async def _failed_with(workflows: Any, run_id: str, *fragments: str) -> None:
    done = await wait_done(workflows, run_id, timeout=30)
    assert done.state == pb.RUN_STATE_FAILED, done
    tasks = tasks_by_id(done)
    assert tasks["slow"].state == pb.TASK_STATE_FAILED
    for fragment in fragments:
        assert fragment in tasks["slow"].error, tasks["slow"].error
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED


async def test_outcome_whose_document_would_not_fit_fails_its_task_instead_of_stalling(
    workflows: Any, nc: Any
) -> None:
    # 500,000 characters of "1e5", within the result limit, but each number is stored as
    # 100000.0: the document would outgrow one message. Nothing can ever store it.
    run = await _waiting_task(workflows)
    numbers = "[" + ",".join(["1e5"] * 125_000) + "]"
    assert len(numbers) < RESULT_LIMIT
    await _report(nc, run.run_id, _success(run.run_id, numbers))
    await _failed_with(
        workflows, run.run_id, "the task document with this outcome would be", "1,047,552 bytes"
    )
    await eventually(lambda: _all_acknowledged(nc), timeout=10, message="event acknowledged")


async def test_outcome_with_a_result_beyond_the_cap_fails_its_task(workflows: Any, nc: Any) -> None:
    run = await _waiting_task(workflows)
    await _report(nc, run.run_id, _success(run.run_id, json.dumps("x" * 600_000)))
    await _failed_with(
        workflows,
        run.run_id,
        f"the result is 600,002 bytes; this deployment stores at most {RESULT_LIMIT:,} bytes",
    )
    await eventually(lambda: _all_acknowledged(nc), timeout=10, message="event acknowledged")


async def test_unreadable_outcome_fails_its_task_instead_of_being_dropped(
    workflows: Any, nc: Any
) -> None:
    run = await _waiting_task(workflows)
    await _report(nc, run.run_id, b"\xff\xfe not a TaskEvent")
    await _failed_with(workflows, run.run_id, "the outcome of attempt 1 could not be read")
    await eventually(lambda: _all_acknowledged(nc), timeout=10, message="event acknowledged")


def test_module_runs_at_the_nats_default_payload(stack: Any) -> None:
    config = Path(stack.nats.store_dir / "nats.conf").read_text()
    assert f"max_payload: {MIB}\n" in config
