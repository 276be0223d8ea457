"""The worker edge (WorkerService) through its raw contract: claims, hand-backs, registration."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from stellwerk_api.execution.v1 import executor_service_pb2 as exe
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as exe_grpc
from stellwerk_api.execution.v1 import worker_service_pb2 as wapi
from stellwerk_api.execution.v1 import worker_service_pb2_grpc as wapi_grpc
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc
from stellwerk_client import ExecutorClient
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.polyglot.conftest import LEASE, PolyglotStack
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(90)


class RawWorker:
    """A worker speaking the contract by hand; heartbeats unless ``silent``."""

    def __init__(self, address: str, methods: list[str], *, silent: bool = False) -> None:
        self.address = address
        self.methods = methods
        self.silent = silent
        self.tasks: asyncio.Queue[wapi.WorkerTask] = asyncio.Queue()
        self.cancelled: list[str] = []
        self._outbox: asyncio.Queue[wapi.ConnectRequest | None] = asyncio.Queue()
        self._channel = grpc.aio.insecure_channel(address)
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.registered: wapi.WorkerRegistered | None = None

    async def _requests(self) -> AsyncIterator[wapi.ConnectRequest]:
        yield wapi.ConnectRequest(
            register=wapi.WorkerRegistration(
                worker_id="raw", methods=self.methods, concurrency=2, sdk="test/raw"
            )
        )
        while (message := await self._outbox.get()) is not None:
            yield message

    async def connect(self) -> RawWorker:
        stub = wapi_grpc.WorkerServiceStub(self._channel)
        self._call = stub.Connect(self._requests())
        first = await self._call.read()
        assert first.WhichOneof("message") == "registered", first
        self.registered = first.registered
        self._tasks.append(asyncio.create_task(self._read()))
        if not self.silent:
            self._tasks.append(asyncio.create_task(self._beat()))
        return self

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (message := await self._call.read()) is not grpc.aio.EOF:
                if message.WhichOneof("message") == "task":
                    await self.tasks.put(message.task)
                elif message.WhichOneof("message") == "cancellation":
                    self.cancelled.append(message.cancellation.task_token)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(LEASE / 4)
            await self._outbox.put(wapi.ConnectRequest(heartbeat=wapi.WorkerHeartbeat()))

    async def next_task(self, timeout: float = 30) -> wapi.WorkerTask:
        return await asyncio.wait_for(self.tasks.get(), timeout)

    async def answer(self, task: wapi.WorkerTask, value: Any) -> None:
        await self._outbox.put(
            wapi.ConnectRequest(
                result=wapi.TaskResult(task_token=task.task_token, result_json=json.dumps(value))
            )
        )

    async def fail(self, task: wapi.WorkerTask, message: str) -> None:
        await self._outbox.put(
            wapi.ConnectRequest(
                failure=wapi.TaskFailure(task_token=task.task_token, message=message)
            )
        )

    async def drop(self) -> None:
        """Vanish as a killed process would: the call is cancelled, nothing more is sent."""
        for task in self._tasks:
            task.cancel()
        if self._call is not None:
            self._call.cancel()
        await self._channel.close()

    async def close(self) -> None:
        await self._outbox.put(None)
        await self.drop()


@pytest.fixture
async def workflows(
    ready: PolyglotStack,
) -> AsyncIterator[workflow_service_pb2_grpc.WorkflowServiceAsyncStub]:
    async with grpc.aio.insecure_channel(ready.address) as channel:
        yield workflow_service_pb2_grpc.WorkflowServiceStub(channel)  # type: ignore[misc]


def _doc(method: str) -> str:
    return json.dumps(
        {
            "name": "remote",
            "tasks": [
                {"id": "remote", "method": method, "params": {"n": 21}},
                {
                    "id": "echo",
                    "method": "mcp/tool.echo",
                    "dependencies": ["remote"],
                    "params": {"message": "twice: ${remote.doubled}"},
                },
            ],
        }
    )


async def test_a_worker_runs_its_method_and_results_flow_by_reference(
    ready: PolyglotStack, workflows: Any
) -> None:
    worker = await RawWorker(ready.executors[0].address, ["raw/double.a"]).connect()
    try:
        # Registered before `registered` was sent: the submit's method check accepts it.
        run = await submit(workflows, _doc("raw/double.a"))
        task = await worker.next_task()
        assert (task.run_id, task.task_id, task.method, task.attempt) == (
            run.run_id,
            "remote",
            "raw/double.a",
            1,
        )
        assert json.loads(task.params_json) == {"n": 21}
        assert task.idempotency_key
        await worker.answer(task, {"doubled": 42})
        done = await wait_done(workflows, run.run_id)
        assert done.state == pb.RUN_STATE_COMPLETED, done.error
        assert result(tasks_by_id(done)["echo"])["response"] == "twice: 42"
        assert tasks_by_id(done)["remote"].executor_id == "poly-0"
    finally:
        await worker.close()


async def test_a_failure_from_the_worker_fails_the_task(
    ready: PolyglotStack, workflows: Any
) -> None:
    worker = await RawWorker(ready.executors[1].address, ["raw/fails"]).connect()
    try:
        run = await submit(workflows, _doc("raw/fails"))
        await worker.fail(await worker.next_task(), "card declined")
        done = await wait_done(workflows, run.run_id)
        assert done.state == pb.RUN_STATE_FAILED
        assert tasks_by_id(done)["remote"].error == "card declined"
        assert tasks_by_id(done)["echo"].state == pb.TASK_STATE_BLOCKED
    finally:
        await worker.close()


@pytest.mark.parametrize("how", ["disconnects", "goes silent"])
async def test_a_worker_that_dies_mid_task_loses_it_and_another_completes_it_once(
    ready: PolyglotStack, workflows: Any, how: str
) -> None:
    method = f"raw/handover.{how.replace(' ', '_')}"
    first = await RawWorker(
        ready.executors[0].address, [method], silent=how == "goes silent"
    ).connect()
    run = await submit(workflows, _doc(method))
    taken = await first.next_task()
    # A second worker, on the other executor, joins while the first holds the attempt.
    second = await RawWorker(ready.executors[1].address, [method]).connect()
    try:
        if how == "disconnects":
            await first.drop()
        handed = await second.next_task(timeout=4 * LEASE)
        assert (handed.run_id, handed.task_id, handed.attempt) == (run.run_id, "remote", 1)
        assert handed.idempotency_key == taken.idempotency_key
        await second.answer(handed, {"doubled": 2})
        done = await wait_done(workflows, run.run_id)
        assert done.state == pb.RUN_STATE_COMPLETED, done.error
        assert result(tasks_by_id(done)["remote"]) == {"doubled": 2}
        assert tasks_by_id(done)["remote"].executor_id == "poly-1"
        # Exactly once: nobody is handed the attempt again.
        with pytest.raises(TimeoutError):
            await second.next_task(timeout=LEASE)
        if how == "goes silent":
            # The silent worker's late answer is moot: the outcome stays.
            await first.answer(taken, {"doubled": -1})
            again = await wait_done(workflows, run.run_id)
            assert result(tasks_by_id(again)["remote"]) == {"doubled": 2}
    finally:
        await first.close()
        await second.close()


def _details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status in the trailers")


async def test_bad_registrations_are_refused_with_rich_status(ready: PolyglotStack) -> None:
    async with grpc.aio.insecure_channel(ready.executors[0].address) as channel:
        stub = wapi_grpc.WorkerServiceStub(channel)

        async def refusal(*messages: wapi.ConnectRequest) -> grpc.aio.AioRpcError:
            async def requests() -> AsyncIterator[wapi.ConnectRequest]:
                for message in messages:
                    yield message

            call = stub.Connect(requests())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            return caught.value

        bad = await refusal(
            wapi.ConnectRequest(register=wapi.WorkerRegistration(methods=["ok/x", "bad name"]))
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = _details(bad)
        violations = error_details_pb2.BadRequest()
        assert details.details[1].Unpack(violations)
        assert [v.field for v in violations.field_violations] == ["register.methods[1]"]

        first = await refusal(wapi.ConnectRequest(heartbeat=wapi.WorkerHeartbeat()))
        assert first.code() == grpc.StatusCode.INVALID_ARGUMENT

        builtin = await refusal(
            wapi.ConnectRequest(register=wapi.WorkerRegistration(methods=["mcp/tool.add"]))
        )
        assert builtin.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_details_pb2.ErrorInfo()
        assert _details(builtin).details[0].Unpack(info)
        assert info.metadata["method"] == "mcp/tool.add"


async def test_remote_methods_are_registered_while_served(
    ready: PolyglotStack, workflows: Any
) -> None:
    from stellwerk_api.workflow.v1 import workflow_service_pb2 as api

    async def refused() -> bool:
        reply = await workflows.ValidateWorkflow(
            api.ValidateWorkflowRequest(document=_doc("raw/registered")), timeout=10
        )
        return any("raw/registered" in p.message for p in reply.problems)

    assert await refused()
    worker = await RawWorker(ready.executors[0].address, ["raw/registered"]).connect()
    assert not await refused()
    await worker.close()

    # The resolver caches registrations briefly; the executor rewrote its own at once.
    await eventually(refused, timeout=30, message="method dropped from the registration")


async def test_list_methods_and_get_executor_show_remote_methods_while_served(
    ready: PolyglotStack,
) -> None:
    address = ready.executors[0].address
    async with (
        await ExecutorClient.connect(address, timeout=10) as executor,
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = exe_grpc.ExecutorServiceStub(channel)

        async def remote() -> dict[str, str]:
            methods = await executor.all_methods()
            return {m.name: m.description for m in methods if m.kind == "REMOTE"}

        own = await executor.all_methods()
        assert own and not await remote()
        worker = await RawWorker(address, ["raw/listed.b", "raw/listed.a"]).connect()
        other = await RawWorker(address, ["raw/listed.a"]).connect()
        try:
            assert await remote() == {
                "raw/listed.a": "served by workers raw (test/raw), raw (test/raw)",
                "raw/listed.b": "served by worker raw (test/raw)",
            }
            names = [m.name async for m in executor.list_methods(page_size=1)]  # pages of one
            assert names == sorted({m.name for m in own} | {"raw/listed.a", "raw/listed.b"})
            info = await executor.get_executor()
            assert list(info.methods) == names
            # A page token naming a remote method whose workers left meanwhile still pages on.
            await worker.close()
            await eventually(
                lambda: _without(remote, "raw/listed.b"), timeout=30, message="b unlisted"
            )
            reply = await stub.ListMethods(
                exe.ListMethodsRequest(page_size=1000, page_token="raw/listed.b"), timeout=10
            )
            assert [m.name for m in reply.methods] == [n for n in names if n > "raw/listed.b"]
        finally:
            await worker.close()
            await other.close()
        await eventually(lambda: _without(remote, "raw/listed.a"), timeout=30, message="a unlisted")


async def _without(remote: Any, method: str) -> bool:
    return method not in await remote()
