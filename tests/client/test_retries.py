"""Only UNAVAILABLE is retried (tenacity), every call has a deadline, and errors are the domain
tree with the BadRequest problems on them: against an in-process fake resolver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc
from stellwerk_client import (
    Client,
    DeadlineExceededError,
    NotFoundError,
    Problem,
    RetryConfig,
    RunState,
    SyncClient,
    UnavailableError,
    WorkflowInvalidError,
)
from stellwerk_client.errors import StellwerkError
from stellwerk_client.wire import STATUS_DETAILS_KEY, status_for

RUN_ID = "0195f0a1b2c3d4e5f6a7b8"
FAST = RetryConfig(max_attempts=4, initial_delay=0.01, max_delay=0.02)


class Scripted(api_grpc.WorkflowServiceServicer):
    """Fails each call with the next scripted error, then answers."""

    def __init__(self) -> None:
        self.failures: list[StellwerkError | str] = []
        self.calls = 0
        self.requests: list[Any] = []

    def _fail(self, context: Any) -> None:
        self.calls += 1
        if not self.failures:
            return
        failure = self.failures.pop(0)
        if failure == "slow":
            time.sleep(1)
            return
        assert isinstance(failure, StellwerkError)
        code, status = status_for(failure)
        context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
        context.abort(code, failure.message)

    def GetRun(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._fail(context)
        run = pb.Run(run_id=request.run_id, workflow_name="w", state=pb.RUN_STATE_COMPLETED)
        run.tasks.add(task_id="t", state=pb.TASK_STATE_COMPLETED, result_json='{"n": 100}')
        return api.GetRunResponse(run=run)

    def StartRun(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self._fail(context)
        run = pb.Run(run_id=RUN_ID, workflow_name="w", state=pb.RUN_STATE_RUNNING)
        return api.StartRunResponse(run=run)


@pytest.fixture
def fake() -> Iterator[tuple[Scripted, str]]:
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_grpc.add_WorkflowServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


async def test_unavailable_is_retried_and_the_result_is_typed(fake: tuple[Scripted, str]) -> None:
    servicer, address = fake
    servicer.failures = [UnavailableError("NATS is down"), UnavailableError("still down")]
    async with await Client.connect(address, retry=FAST) as client:
        run = await client.get(RUN_ID)
    assert servicer.calls == 3
    assert (run.state, run.task("t").result) == (RunState.COMPLETED, {"n": 100})


async def test_unavailable_gives_up_after_max_attempts(fake: tuple[Scripted, str]) -> None:
    servicer, address = fake
    servicer.failures = [UnavailableError("down")] * 10
    async with await Client.connect(address, retry=FAST) as client:
        with pytest.raises(UnavailableError, match="down"):
            await client.get(RUN_ID)
    assert servicer.calls == 4


@pytest.mark.parametrize(
    "error",
    [
        NotFoundError("no run"),
        WorkflowInvalidError(problems=[Problem("a", "method", "unknown method")]),
    ],
    ids=["not-found", "invalid"],
)
async def test_nothing_else_is_retried(fake: tuple[Scripted, str], error: StellwerkError) -> None:
    servicer, address = fake
    servicer.failures = [error]
    async with await Client.connect(address, retry=FAST) as client:
        with pytest.raises(type(error)) as caught:
            await client.get(RUN_ID)
    assert servicer.calls == 1
    if isinstance(error, WorkflowInvalidError):
        assert caught.value.problems == error.problems  # type: ignore[attr-defined]


async def test_a_deadline_is_not_retried(fake: tuple[Scripted, str]) -> None:
    servicer, address = fake
    servicer.failures = ["slow"]
    async with await Client.connect(address, retry=FAST, timeout=0.2) as client:
        with pytest.raises(DeadlineExceededError):
            await client.get(RUN_ID)
        assert servicer.calls == 1
        assert (await client.get(RUN_ID, timeout=5)).run_id == RUN_ID


async def test_a_retried_submit_carries_one_request_id(fake: tuple[Scripted, str]) -> None:
    servicer, address = fake
    servicer.failures = [UnavailableError("down")]
    async with await Client.connect(address, retry=FAST) as client:
        await client.submit("tasks: [{id: a, method: m/x}]")
    first, second = servicer.requests
    assert first.request_id and first.request_id == second.request_id


def test_the_sync_client_makes_the_same_calls(fake: tuple[Scripted, str]) -> None:
    servicer, address = fake
    servicer.failures = [UnavailableError("down")]
    with SyncClient.connect(address, retry=FAST) as client:
        assert client.get(RUN_ID).state is RunState.COMPLETED
        assert client.submit("tasks: [{id: a, method: m/x}]").run_id == RUN_ID
        with pytest.raises(NotFoundError):
            servicer.failures = [NotFoundError("gone")]
            client.get(RUN_ID)
    assert servicer.calls == 4
