"""Hostile input at the gRPC edge: every refusal is a bounded INVALID_ARGUMENT or NOT_FOUND, and
no request leaves a service unable to serve. The stubs are stock gRPC clients with default
options, so oversized trailers would fail here exactly as they fail for users."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_client.cli import main
from tests.e2e.conftest import Stack, serving
from tests.e2e.helpers import submit, wait_done

VALID = {
    "name": "ok",
    "tasks": [{"id": "a", "method": "mcp/tool.add", "params": {"a": 1, "b": 2}}],
}
# Stock clients refuse trailers beyond 8-16 KiB; ours stay far below.
TRAILER_BUDGET = 6 * 1024

HOSTILE_IDS = [
    "x" * 5000,
    "a" * 4096 + ".b",
    "ü",
    "run\tid",
    "run\nid",
    "run\x00id",
    "run\\id",
    "run%id",
    'run"id',
    "run,id",
    "run.>",
    "*",
    "",
    "0195f0a1b2c3d4e5f6a7b8",  # 22 characters, but not lowercase hex
    "0195f0a1b2c3d4e5f6a7b8c9",  # hex, wrong length
]


def rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def trailer_size(exc: grpc.aio.AioRpcError) -> int:
    size = len((exc.details() or "").encode())
    for key, value in exc.trailing_metadata() or ():
        size += len(key) + len(value)
    return size


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = rich_status(exc)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def violations(exc: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = rich_status(exc)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return list(bad.field_violations)
    return []


async def refused(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    assert trailer_size(caught.value) < TRAILER_BUDGET
    assert error_info(caught.value) is not None, "every refusal carries an ErrorInfo"
    return caught.value


async def assert_serving(stack: Stack, workflows: Any) -> None:
    """The resolver still does real work: health SERVING and a workflow runs to its end."""
    assert await serving(stack.resolver.address)
    run = await submit(workflows, json.dumps(VALID), document_format="json")
    done = await wait_done(workflows, run.run_id, timeout=30)
    assert done.state == pb.RUN_STATE_COMPLETED


@pytest.mark.parametrize("run_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
async def test_hostile_run_ids_are_not_found_and_the_resolver_keeps_serving(
    ready_stack: Stack, workflows: Any, run_id: str
) -> None:
    await refused(
        workflows.GetRun(api.GetRunRequest(run_id=run_id), timeout=10),
        grpc.StatusCode.NOT_FOUND,
    )
    stream = workflows.WatchRun(api.WatchRunRequest(run_id=run_id), timeout=10)
    await refused(stream.read(), grpc.StatusCode.NOT_FOUND)
    await assert_serving(ready_stack, workflows)


async def test_a_well_formed_id_of_no_run_is_not_found(workflows: Any) -> None:
    exc = await refused(
        workflows.GetRun(api.GetRunRequest(run_id="0" * 22), timeout=10),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "no workflow run" in (exc.details() or "")


def _tasks(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "method": "mcp/tool.add", **fields} for i in range(count)]


LARGE_REFUSALS = {
    "50 unknown methods": {"name": "m", "tasks": _tasks(50, method="nope/unknown")},
    "500 unknown dependencies": {
        "name": "d",
        "tasks": [
            {"id": "t", "method": "mcp/tool.add", "dependencies": [f"ghost{i}" for i in range(500)]}
        ],
    },
    "300 ids with control characters": {
        "name": "c",
        "tasks": [{"id": f"t\x01{i}" + "x" * 150, "method": "mcp/tool.add"} for i in range(300)],
    },
    "a 10,000-character method": {"name": "l", "tasks": _tasks(1, method="m" * 10_000)},
    "a 10,000-character dependency": {
        "name": "l",
        "tasks": [{"id": "t", "method": "mcp/tool.add", "dependencies": ["d" * 10_000]}],
    },
}


@pytest.mark.parametrize("name", list(LARGE_REFUSALS))
async def test_large_refusals_stay_small_and_validate_lists_every_problem(
    ready_stack: Stack, workflows: Any, name: str
) -> None:
    document = json.dumps(LARGE_REFUSALS[name])
    exc = await refused(
        workflows.StartRun(
            api.StartRunRequest(document=document, document_format="json"), timeout=30
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    listed = violations(exc)
    assert listed, "the problems travel as a BadRequest"
    assert all(len(v.description) <= 300 and len(v.field) <= 200 for v in listed)
    validated = await workflows.ValidateWorkflow(
        api.ValidateWorkflowRequest(document=document, document_format="json"), timeout=30
    )
    assert len(validated.problems) >= len(listed)
    assert all(len(p.message) < 1000 for p in validated.problems), "echoed values are cut"
    info = error_info(exc)
    assert info is not None
    total = int(info.metadata["problem_count"])
    assert total == len(validated.problems)
    if total > len(listed):
        assert listed[-1].description.startswith(f"and {total - len(listed) + 1} more")
    await assert_serving(ready_stack, workflows)


async def test_deep_params_json_is_invalid_argument(workflows: Any) -> None:
    spec = pb.WorkflowSpec(
        name="deep",
        tasks=[pb.TaskSpec(id="a", method="mcp/tool.add", params_json="[" * 10_000 + "]" * 10_000)],
    )
    exc = await refused(
        workflows.StartRun(api.StartRunRequest(workflow=spec), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert any("params_json" in v.field for v in violations(exc))


@pytest.mark.parametrize(
    "token",
    [
        "W" * 20_000,
        __import__("base64").urlsafe_b64encode(b"[" * 5000).decode(),
        __import__("base64").urlsafe_b64encode(b'{"after": "../x", "state": ""}').decode(),
        "%%%",
    ],
    ids=["long", "deep", "foreign-after", "not-base64"],
)
async def test_foreign_page_tokens_are_invalid_argument(workflows: Any, token: str) -> None:
    await refused(
        workflows.ListRuns(api.ListRunsRequest(page_token=token), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_structured_submit_ignores_the_document_format(workflows: Any) -> None:
    spec = pb.WorkflowSpec(
        name="fmt", tasks=[pb.TaskSpec(id="a", method="mcp/tool.add", params_json='{"a":1,"b":2}')]
    )
    reply = await workflows.StartRun(
        api.StartRunRequest(workflow=spec, document_format="xml"), timeout=10
    )
    done = await wait_done(workflows, reply.run.run_id, timeout=30)
    assert done.state == pb.RUN_STATE_COMPLETED


def _health_request() -> bytes:
    return health_pb2.HealthCheckRequest(service="").SerializeToString()


UNDECODABLE = {
    "corrupt wire format": b"\xff\xff\xff\xff\xff",
    "truncated field": b"\x0a\x10abc",
}


def bad_utf8_for(method: str) -> bytes | None:
    """A request whose first string field holds invalid UTF-8 (``None``: the message has none)."""
    found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    for field in found.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return bytes([field.number << 3 | 2, 2]) + b"\xc3\x28"
    return None


def _rpcs(stack: Stack) -> list[tuple[str, str, bool]]:
    """(address, full method, server-streaming) of every RPC each service serves."""
    resolver, executor, monitor = (
        stack.resolver.address,
        stack.executors[0].address,
        stack.monitor.address,
    )
    calls = [
        (resolver, "/stellwerk.workflow.v1.WorkflowService/StartRun", False),
        (resolver, "/stellwerk.workflow.v1.WorkflowService/GetRun", False),
        (resolver, "/stellwerk.workflow.v1.WorkflowService/ListRuns", False),
        (resolver, "/stellwerk.workflow.v1.WorkflowService/ValidateWorkflow", False),
        (resolver, "/stellwerk.workflow.v1.WorkflowService/WatchRun", True),
        (executor, "/stellwerk.execution.v1.ExecutorService/ListMethods", False),
        (executor, "/stellwerk.execution.v1.ExecutorService/GetExecutor", False),
        (monitor, "/stellwerk.monitoring.v1.MonitorService/GetOverview", False),
    ]
    for address in (resolver, executor, monitor):
        calls.append((address, "/grpc.health.v1.Health/Check", False))
        calls.append((address, "/grpc.health.v1.Health/Watch", True))
    return calls


@pytest.mark.parametrize("payload", [*UNDECODABLE, "bad UTF-8"])
async def test_undecodable_requests_are_invalid_argument_on_every_rpc(
    ready_stack: Stack, payload: str
) -> None:
    for address, method, streaming in _rpcs(ready_stack):
        data = UNDECODABLE.get(payload) or bad_utf8_for(method)
        if data is None:
            continue
        async with grpc.aio.insecure_channel(address) as channel:
            if streaming:
                call: Any = channel.unary_stream(method)(data, timeout=10)
                exc = await refused(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
            else:
                exc = await refused(
                    channel.unary_unary(method)(data, timeout=10),
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
            info = error_info(exc)
            assert info is not None and info.reason == "MALFORMED_REQUEST", method


async def test_undecodable_reflection_request_is_invalid_argument(ready_stack: Stack) -> None:
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    async with grpc.aio.insecure_channel(ready_stack.resolver.address) as channel:
        call: Any = channel.stream_stream(method)(iter([UNDECODABLE["corrupt wire format"]]))
        exc = await refused(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
        assert error_info(exc) is not None
    # A well-formed health check still answers on the same server.
    assert await serving(ready_stack.resolver.address)


async def test_cli_lists_a_large_refusal_and_exits_2(
    ready_stack: Stack, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "unknown.yaml"
    path.write_text(
        "name: u\ntasks:\n" + "".join(f"  - id: t{i}\n    method: no/such{i}\n" for i in range(50))
    )
    argv = ["run", str(path), "--address", ready_stack.resolver.address]
    assert await asyncio.to_thread(main, argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("task t0: method: unknown method 'no/such0'")
    assert lines[-1].startswith("problems: and ") and "ValidateWorkflow" in lines[-1]
    assert sum(len(line) for line in lines) < TRAILER_BUDGET


async def test_cli_status_of_a_long_id_exits_2_and_the_resolver_serves(
    ready_stack: Stack, workflows: Any
) -> None:
    argv = ["status", "a" * 5000, "--address", ready_stack.resolver.address]
    assert await asyncio.to_thread(main, argv) == 2
    await assert_serving(ready_stack, workflows)


async def test_health_watch_streams_through_the_interceptor(ready_stack: Stack) -> None:
    async with grpc.aio.insecure_channel(ready_stack.resolver.address) as channel:
        watch: Any = health_pb2_grpc.HealthStub(channel).Watch(  # type: ignore[no-untyped-call]
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


@pytest.mark.parametrize(
    ("params", "error"),
    [({}, "lone surrogate"), ({"raise": True}, "cannot open \\udcff.txt")],
    ids=["result", "error"],
)
async def test_handler_text_that_is_not_unicode_fails_the_task_cleanly(
    workflows: Any, params: dict[str, Any], error: str
) -> None:
    document = {
        "name": "surrogates",
        "tasks": [
            {"id": "a", "method": "test/surrogate", "params": params},
            {"id": "b", "method": "test/noop", "dependencies": ["a"]},
        ],
    }
    run = await submit(workflows, json.dumps(document), document_format="json")
    done = await wait_done(workflows, run.run_id, timeout=30)
    assert done.state == pb.RUN_STATE_FAILED
    tasks = {t.task_id: t for t in done.tasks}
    assert tasks["a"].state == pb.TASK_STATE_FAILED and error in tasks["a"].error
    assert tasks["b"].state == pb.TASK_STATE_BLOCKED
