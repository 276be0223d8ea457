"""The client against the real stack (services as processes, a real nats-server): typed
results, pages, watch, validate, operator calls, the sync wrapper."""

from __future__ import annotations

import asyncio

import pytest

from stellwerk_client import (
    Client,
    ExecutorClient,
    MonitorClient,
    NotFoundError,
    RunState,
    SyncClient,
    TaskState,
    WorkflowBuilder,
    WorkflowInvalidError,
    WrongStateError,
)
from tests.e2e.conftest import Stack


def _numbers() -> WorkflowBuilder:
    flow = WorkflowBuilder("numbers", id="numbers-1")
    add = flow.task("add", "mcp/tool.add", {"a": 40, "b": 2})
    flow.task("double", "mcp/tool.multiply", {"a": add["result"], "b": 2})
    return flow


async def test_submit_watch_get_list_validate(ready_stack: Stack) -> None:
    async with await Client.connect(ready_stack.resolver.address, timeout=10) as client:
        started = await client.submit(_numbers().build())
        assert (started.workflow_id, started.task_count) == ("numbers-1", 2)
        changes = [change async for change in client.watch(started.run_id, timeout=60)]
        assert changes[-1].run.state is RunState.COMPLETED
        seen = {(c.task.task_id, c.task.state) for c in changes if c.task is not None}
        # The first change is the current state; a run that ended before the watch opened
        # (two quick tasks can) has only that, without task changes.
        if not changes[0].run.finished:
            assert ("double", TaskState.COMPLETED) in seen
        run = await client.get(started.run_id)
        assert run.results["double"]["result"] == 84
        assert type(run.results["double"]["result"]) is int
        assert run.task("add").duration is not None

        second = await client.run(_numbers().build(), timeout=60)
        listed = [r.run_id async for r in client.list(page_size=1, state=RunState.COMPLETED)]
        assert {started.run_id, second.run_id} <= set(listed)

        verdict = await client.validate("tasks: [{id: a, method: no/such.method}]")
        assert not verdict.valid
        assert [(p.task, p.field) for p in verdict.problems] == [("a", "method")]
        with pytest.raises(WorkflowInvalidError) as refused:
            await client.submit("tasks: [{id: a, method: no/such.method}]")
        assert refused.value.problems[0].task == "a"
        with pytest.raises(NotFoundError):
            await client.get("0" * 22)


async def test_operator_calls_return_typed_values(ready_stack: Stack) -> None:
    async with await ExecutorClient.connect(ready_stack.executors[0].address) as executor:
        info = await executor.get_executor()
        methods = await executor.all_methods()
    assert info.id == "exec-0" and info.concurrency > 0
    assert "mcp/tool.add" in {m.name for m in methods}
    assert {m.kind for m in methods} >= {"BUILTIN"}
    async with await MonitorClient.connect(ready_stack.monitor.address) as monitor:
        overview = await monitor.get_overview()
    assert {e.id for e in overview.executors} >= {"exec-0", "exec-1"}


async def test_the_sync_client_runs_a_built_workflow(ready_stack: Stack) -> None:
    def blocking() -> tuple[RunState, int]:
        with SyncClient.connect(ready_stack.resolver.address) as client:
            run = client.run(_numbers().build(), timeout=60)
            listed = sum(1 for _ in client.list(page_size=2))
        return run.state, listed

    state, listed = await asyncio.to_thread(blocking)
    assert state is RunState.COMPLETED and listed >= 1


async def test_cancel_a_running_run(ready_stack: Stack) -> None:
    document = "tasks:\n  - {id: slow, method: test/cancellable, params: {seconds: 60}}\n"
    async with await Client.connect(ready_stack.resolver.address, timeout=10) as client:
        started = await client.submit(document)
        cancelled = await client.cancel(started.run_id)
        assert cancelled.state is RunState.CANCELLED and cancelled.state.finished
        run = await client.wait(started.run_id, timeout=30)
        assert run.state is RunState.CANCELLED
        assert run.task("slow").state is TaskState.CANCELLED and run.task("slow").state.finished
        again = await client.cancel(started.run_id)  # idempotent
        assert again.state is RunState.CANCELLED and again.ended_at == cancelled.ended_at
        done = await client.run(_numbers().build(), timeout=60)
        with pytest.raises(WrongStateError):
            await client.cancel(done.run_id)
        with pytest.raises(NotFoundError):
            await client.cancel("0" * 22)

    def blocking() -> RunState:
        with SyncClient.connect(ready_stack.resolver.address) as sync:
            return sync.cancel(started.run_id).state

    assert await asyncio.to_thread(blocking) is RunState.CANCELLED
