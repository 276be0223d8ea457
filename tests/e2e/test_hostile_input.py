"""Hostile input at the gRPC edge: every refusal is a bounded INVALID_ARGUMENT or NOT_FOUND, and
no request leaves a service unable to serve. The stubs are stock gRPC clients with default
options, so oversized trailers would fail here exactly as they fail for users."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from stellwerk_api.execution.v1 import worker_service_pb2 as worker_api
from stellwerk_api.execution.v1 import worker_service_pb2_grpc
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


UNDECODABLE = {
    "corrupt wire format": b"\xff\xff\xff\xff\xff",
    "truncated field": b"\x0a\x10abc",
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def bad_utf8_for(message: Descriptor, depth: int = 3) -> bytes | None:
    """A ``message`` whose first string field (looked for in nested messages too, so that a
    request made of oneofs of messages, like a worker's ``ConnectRequest``, has one) holds
    invalid UTF-8; ``None``: the message has no string field within ``depth`` levels."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return _length_delimited(field.number, b"\xc3\x28")
    if depth > 1:
        for field in message.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                inner = bad_utf8_for(field.message_type, depth - 1)
                if inner is not None:
                    return _length_delimited(field.number, inner)
    return None


@dataclass(frozen=True)
class Rpc:
    """One RPC as a live server serves it (found through its server reflection)."""

    address: str
    method: str  # "/package.Service/Method"
    client_streaming: bool
    server_streaming: bool
    request: Descriptor

    def call(self, channel: grpc.aio.Channel, data: bytes) -> Any:
        """Send ``data`` as the request (the only message of a client stream), undecoded."""
        if self.client_streaming:
            make = channel.stream_stream if self.server_streaming else channel.stream_unary
            return make(self.method)(iter([data]), timeout=10)
        make = channel.unary_stream if self.server_streaming else channel.unary_unary
        return make(self.method)(data, timeout=10)


def _reflect(address: str) -> list[Rpc]:
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        return [
            Rpc(
                address,
                f"/{service.full_name}/{method.name}",
                method.client_streaming,
                method.server_streaming,
                method.input_type,
            )
            for name in sorted(database.get_services())
            for service in [pool.FindServiceByName(name)]
            for method in service.methods
        ]


async def served_rpcs(stack: Stack) -> list[Rpc]:
    """Every RPC of every service that each live server serves, as its server reflection lists
    them: a service or RPC added later is covered without touching this test."""
    addresses = [stack.resolver.address, stack.executors[0].address, stack.monitor.address]
    found = await asyncio.gather(*(asyncio.to_thread(_reflect, a) for a in addresses))
    return [rpc for rpcs in found for rpc in rpcs]


WORKFLOW_RPCS = [
    f"/stellwerk.workflow.v1.WorkflowService/{name}"
    for name in (
        "StartRun",
        "GetRun",
        "ListRuns",
        "WatchRun",
        "ValidateWorkflow",
        "ExplainRun",
        "CancelRun",
        "RetryRun",
        "CreateCheckpoint",
        "ListCheckpoints",
        "RestoreCheckpoint",
    )
]
CONNECT = "/stellwerk.execution.v1.WorkerService/Connect"
KNOWN_RPCS = {
    "resolver": [
        *WORKFLOW_RPCS,
        "/stellwerk.monitoring.v1.MonitorService/GetOverview",
        "/stellwerk.monitoring.v1.MonitorService/GetHealthReport",
    ],
    "executor": [
        "/stellwerk.execution.v1.ExecutorService/ListMethods",
        "/stellwerk.execution.v1.ExecutorService/GetExecutor",
        CONNECT,
    ],
    "monitor": [
        "/stellwerk.monitoring.v1.MonitorService/GetOverview",
        "/stellwerk.monitoring.v1.MonitorService/GetHealthReport",
    ],
}
EVERY_SERVER = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


async def test_reflection_lists_every_known_rpc(ready_stack: Stack) -> None:
    rpcs = await served_rpcs(ready_stack)
    for service, proc in [
        ("resolver", ready_stack.resolver),
        ("executor", ready_stack.executors[0]),
        ("monitor", ready_stack.monitor),
    ]:
        served = {r.method for r in rpcs if r.address == proc.address}
        missing = {*KNOWN_RPCS[service], *EVERY_SERVER} - served
        assert not missing, f"{service} does not list {sorted(missing)}"
    connect = next(r for r in rpcs if r.method == CONNECT)
    assert connect.client_streaming and connect.server_streaming


@pytest.mark.parametrize("payload", [*UNDECODABLE, "bad UTF-8"])
async def test_undecodable_requests_are_invalid_argument_on_every_rpc(
    ready_stack: Stack, payload: str
) -> None:
    rpcs = await served_rpcs(ready_stack)
    assert len(rpcs) >= 25, [r.method for r in rpcs]
    tried = []
    for rpc in rpcs:
        data = UNDECODABLE.get(payload) or bad_utf8_for(rpc.request)
        if data is None:
            continue  # a message without any string field (e.g. GetOverviewRequest)
        tried.append(rpc.method)
        async with grpc.aio.insecure_channel(rpc.address) as channel:
            call = rpc.call(channel, data)
            if rpc.server_streaming:
                exc = await refused(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
            else:
                exc = await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
            info = error_info(exc)
            assert info is not None and info.reason == "MALFORMED_REQUEST", rpc.method
    if payload == "bad UTF-8":  # the newer RPCs all take a string somewhere
        missed = {*WORKFLOW_RPCS, CONNECT} - set(tried)
        assert not missed, f"no string field found to spoil in {sorted(missed)}"
    for proc in [ready_stack.resolver, *ready_stack.executors, ready_stack.monitor]:
        assert await serving(proc.address), proc.service


@pytest.mark.parametrize("payload", [*UNDECODABLE, "bad UTF-8"])
async def test_an_undecodable_message_inside_a_worker_session_is_invalid_argument(
    ready_stack: Stack, payload: str
) -> None:
    """A bidirectional stream checks every message, not only the first: a worker that
    registered and then sends bytes that do not decode gets INVALID_ARGUMENT, its session
    ends, and the executor serves on."""
    register = worker_api.ConnectRequest(
        register=worker_api.WorkerRegistration(worker_id="hostile", methods=["hostile/only"])
    ).SerializeToString()
    data = UNDECODABLE.get(payload) or bad_utf8_for(worker_api.ConnectRequest.DESCRIPTOR)
    assert data is not None
    sent = asyncio.Event()

    async def messages() -> Any:
        yield register
        await sent.wait()  # the second message only after the session is open
        yield data

    address = ready_stack.executors[0].address
    async with grpc.aio.insecure_channel(address) as channel:
        call: Any = channel.stream_stream(CONNECT)(messages(), timeout=10)
        first = worker_api.ConnectResponse.FromString(await call.read())
        assert first.WhichOneof("message") == "registered"
        sent.set()
        exc = await refused(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
        info = error_info(exc)
        assert info is not None and info.reason == "MALFORMED_REQUEST"
    assert await serving(address)


async def test_a_worker_may_serve_a_method_of_the_longest_name(ready_stack: Stack) -> None:
    """A method may have 200 characters; its consumer's name must still fit nats-server's 255
    (it answered UNKNOWN, "consumer name is too long", before such names were hashed)."""
    register = worker_api.ConnectRequest(
        register=worker_api.WorkerRegistration(worker_id="long", methods=["m" * 200])
    )
    async with grpc.aio.insecure_channel(ready_stack.executors[0].address) as channel:
        stub: Any = worker_service_pb2_grpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Connect(iter([register]), timeout=10)
        first = await call.read()
        assert first.WhichOneof("message") == "registered"
        call.cancel()


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
