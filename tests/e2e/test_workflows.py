"""End to end: client → resolver → JetStream → executors → JetStream → resolver, as processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "simple_mcp_workflow.yaml").read_text()


def bad_request(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return [(v.field, v.description) for v in bad.field_violations]
    return []


async def test_example_workflow_runs_with_gleitzeit_results(workflows: Any) -> None:
    run = await submit(workflows, EXAMPLE)
    assert run.state == pb.RUN_STATE_RUNNING
    done = await wait_done(workflows, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done
    tasks = tasks_by_id(done)
    assert (
        result(tasks["combine_results"])["response"]
        == "Hello from Simple MCP! | Sum was 100 | Product is 200"
    )
    assert result(tasks["calculate_sum"]) == {
        "response": "100",
        "result": 100,
        "calculation": "42 + 58 = 100",
    }
    assert result(tasks["calculate_product"])["result"] == 200
    assert result(tasks["echo_test"]) == {
        "response": "Hello from Simple MCP!",
        "echoed": True,
        "length": 22,
    }
    assert all(t.attempts == 1 for t in done.tasks)
    assert {t.executor_id for t in done.tasks} <= {"exec-0", "exec-1"}


async def test_structured_submit_with_unicode_ids_and_exact_ints(workflows: Any) -> None:
    big = 2**70 + 1
    spec = pb.WorkflowSpec(name="unicode")
    spec.tasks.add(id="Größe berechnen", method="test/noop", params_json=json.dumps({"value": big}))
    spec.tasks.add(
        id="日本 語",
        method="test/identity",
        dependencies=["Größe berechnen"],
        params_json=json.dumps({"n": "${Größe berechnen}", "s": "n=${Größe berechnen}"}),
    )
    reply = await workflows.StartRun(api.StartRunRequest(workflow=spec), timeout=30)
    done = await wait_done(workflows, reply.run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done
    out = result(tasks_by_id(done)["日本 語"])
    assert out["params"] == {"n": big, "s": f"n={big}"}
    assert out["task"] == "日本 語"


async def test_retried_submit_with_request_id_returns_the_same_run(workflows: Any) -> None:
    first = await submit(workflows, EXAMPLE, request_id="req-42")
    second = await submit(workflows, EXAMPLE, request_id="req-42")
    other = await submit(workflows, EXAMPLE, request_id="req-43")
    assert first.run_id == second.run_id != other.run_id
    done = await wait_done(workflows, first.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert all(t.attempts == 1 for t in done.tasks)


async def test_failed_task_blocks_dependents_and_fails_the_run(workflows: Any) -> None:
    document = """
name: failing
tasks:
  - {id: boom, method: test/fail, params: {message: "kaputt"}}
  - {id: after, method: test/noop, dependencies: [boom], params: {value: "${boom}"}}
  - {id: later, method: test/noop, dependencies: [after]}
  - {id: fine, method: test/noop, params: {value: 7}}
  - {id: join, method: test/noop, dependencies: [fine, later]}
"""
    done = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert done.state == pb.RUN_STATE_FAILED
    tasks = tasks_by_id(done)
    assert tasks["boom"].state == pb.TASK_STATE_FAILED
    assert "kaputt" in tasks["boom"].error
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED
    assert tasks["later"].state == pb.TASK_STATE_BLOCKED
    assert tasks["join"].state == pb.TASK_STATE_BLOCKED
    assert tasks["fine"].state == pb.TASK_STATE_COMPLETED
    assert result(tasks["fine"]) == 7
    assert "boom" in done.error


async def test_unresolvable_reference_fails_the_task_naming_it(workflows: Any) -> None:
    document = """
name: badref
tasks:
  - {id: a, method: test/noop, params: {value: {x: 1}}}
  - {id: b, method: test/noop, dependencies: [a], params: {value: "${a.result.y}"}}
"""
    done = await wait_done(workflows, (await submit(workflows, document)).run_id)
    task = tasks_by_id(done)["b"]
    assert task.state == pb.TASK_STATE_FAILED
    assert "a.result.y" in task.error and "x" in task.error


async def test_handler_returning_non_json_fails_its_task(workflows: Any) -> None:
    done = await wait_done(
        workflows, (await submit(workflows, "tasks: [{id: a, method: test/not-json}]")).run_id
    )
    assert done.state == pb.RUN_STATE_FAILED
    assert "JSON" in tasks_by_id(done)["a"].error


async def test_invalid_workflows_are_refused_with_every_problem(workflows: Any) -> None:
    document = """
name: bad
tasks:
  - {id: a, method: test/noop, dependencies: [c]}
  - {id: c, method: test/noop, dependencies: [a], priority: [1]}
  - {id: d, method: nobody/has-this, timeout: -5, colour: red}
"""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(workflows, document)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(info.value)
    text = " ".join(f"{f} {d}" for f, d in violations)
    assert len(violations) >= 5, violations
    assert "a -> c -> a" in text or "c -> a -> c" in text
    assert "nobody/has-this" in text and "mcp/tool.echo" in text  # names the known methods
    assert "colour" in text and "timeout" in text and "priority" in text


@pytest.mark.parametrize(
    "document",
    [
        "tasks: [",
        "- just\n- a list\n",
        "tasks: {a: 1}",
        "name: empty\ntasks: []\n",
        "type: batch\ntasks: []",
    ],
)
async def test_malformed_documents_are_invalid_argument(workflows: Any, document: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(workflows, document)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(info.value)


async def test_request_without_source_is_invalid_argument(workflows: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await workflows.StartRun(api.StartRunRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await workflows.StartRun(
            api.StartRunRequest(document="tasks: []", document_format="xml"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    spec = pb.WorkflowSpec(name="x")
    spec.tasks.add(id="a", method="test/noop", params_json="{not json")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await workflows.StartRun(api.StartRunRequest(workflow=spec), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any("params_json" in f for f, _ in bad_request(info.value))


async def test_two_mib_parameter_is_refused_naming_the_limit(workflows: Any) -> None:
    document = json.dumps(
        {
            "name": "big",
            "tasks": [
                {"id": "a", "method": "test/noop", "params": {"value": "x" * (2 * 1024 * 1024)}}
            ],
        }
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(workflows, document)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MiB" in info.value.details() or "bytes" in info.value.details()


async def test_unknown_ids_are_not_found(workflows: Any) -> None:
    for run_id in ["nope", "", "a.b", "x y", "*"]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await workflows.GetRun(api.GetRunRequest(run_id=run_id), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unregistered_method_allowed_on_request_waits_for_a_worker(workflows: Any) -> None:
    document = "name: later\ntasks: [{id: a, method: later/worker}]"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(workflows, document)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    run = await submit(workflows, document, allow_unregistered_methods=True)
    reply = await workflows.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=10)
    assert reply.run.state == pb.RUN_STATE_RUNNING
    assert reply.run.tasks[0].state == pb.TASK_STATE_DISPATCHED


async def test_validate_reports_problems_without_writing(workflows: Any) -> None:
    reply = await workflows.ValidateWorkflow(
        api.ValidateWorkflowRequest(document=EXAMPLE), timeout=10
    )
    assert not reply.problems and reply.task_count == 4
    reply = await workflows.ValidateWorkflow(
        api.ValidateWorkflowRequest(document="tasks: [{id: a, method: m/x, dependencies: [zz]}]"),
        timeout=10,
    )
    fields = {(p.task, p.field) for p in reply.problems}
    assert ("a", "dependencies") in fields
    assert ("a", "method") in fields


async def test_watch_streams_changes_until_the_run_ends(workflows: Any) -> None:
    run = await submit(workflows, EXAMPLE)
    seen: list[Any] = []
    async for change in workflows.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=60):
        seen.append(change)
    assert seen[-1].run.state == pb.RUN_STATE_COMPLETED
    assert {c.task.task_id for c in seen if c.HasField("task")} >= {"combine_results"}


async def test_list_pages_through_runs(workflows: Any) -> None:
    ids = {(await submit(workflows, EXAMPLE)).run_id for _ in range(3)}
    found: set[str] = set()
    token = ""
    pages = 0
    while True:
        reply = await workflows.ListRuns(
            api.ListRunsRequest(page_size=2, page_token=token), timeout=10
        )
        assert len(reply.runs) <= 2
        found |= {w.run_id for w in reply.runs}
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert ids <= found and pages >= 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await workflows.ListRuns(api.ListRunsRequest(page_size=-1), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await workflows.ListRuns(api.ListRunsRequest(page_token="garbage!"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_chain_of_100_tasks(workflows: Any) -> None:
    tasks = [{"id": "t0", "method": "mcp/tool.add", "params": {"a": 0, "b": 1}}]
    tasks += [
        {
            "id": f"t{i}",
            "method": "mcp/tool.add",
            "dependencies": [f"t{i - 1}"],
            "params": {"a": f"${{t{i - 1}.result}}", "b": 1},
        }
        for i in range(1, 100)
    ]
    started = time.perf_counter()
    run = await submit(workflows, json.dumps({"name": "chain", "tasks": tasks}))
    done = await wait_done(workflows, run.run_id, timeout=120)
    elapsed = time.perf_counter() - started
    assert done.state == pb.RUN_STATE_COMPLETED
    assert result(tasks_by_id(done)["t99"])["result"] == 100
    print(f"\n100-task chain end to end: {elapsed:.2f} s ({elapsed * 10:.1f} ms per task)")


async def test_ten_thousand_task_workflow_validates_and_runs(workflows: Any) -> None:
    tasks = [{"id": "root", "method": "test/noop", "params": {"value": 1}}]
    tasks += [
        {"id": f"leaf {i}", "method": "test/noop", "dependencies": ["root"]} for i in range(9_998)
    ]
    tasks += [
        {
            "id": "join",
            "method": "test/noop",
            "dependencies": [f"leaf {i}" for i in range(0, 9_998, 7)],
        }
    ]
    run = await submit(workflows, json.dumps({"name": "ten-k", "tasks": tasks}))
    assert run.task_count == 10_000
    done = await wait_done(workflows, run.run_id, timeout=300)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert len(done.tasks) == 10_000
