"""Checkpoints end to end (CreateCheckpoint, ListCheckpoints, RestoreCheckpoint): services as
processes against a real nats-server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk.core import names
from stellwerk.core.breakers import breaker_key, run_scope
from stellwerk.core.kvscan import list_keys
from stellwerk.core.settings import Settings
from stellwerk.monitor._janitor import Janitor
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.e2e.test_rerun import retry
from tests.support.polling import eventually


def _document(flag: Path) -> str:
    """``a`` -> ``s`` (fails while ``flag`` exists) -> ``c`` (1 + a's result)."""
    return (
        "tasks:\n"
        "  - {id: a, method: test/ledger, params: {value: 1}}\n"
        f"  - {{id: s, method: test/switch, dependencies: [a], params: {{flag: '{flag}'}}}}\n"
        "  - {id: c, method: test/ledger, dependencies: [s, a], params: {inputs: ['${a}']}}\n"
    )


async def checkpoint(stub: Any, run_id: str, label: str = "", request_id: str = "") -> Any:
    request = api.CreateCheckpointRequest(run_id=run_id, label=label, request_id=request_id)
    return (await stub.CreateCheckpoint(request, timeout=30)).checkpoint


async def restore(stub: Any, checkpoint_id: str, request_id: str = "") -> pb.Run:
    request = api.RestoreCheckpointRequest(checkpoint_id=checkpoint_id, request_id=request_id)
    return (await stub.RestoreCheckpoint(request, timeout=30)).run


async def wait_restarted(stub: Any, run_id: str, restarts: int) -> pb.Run:
    async def ended_again() -> bool:
        run = (await stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=30)).run
        return run.restarts == restarts and run.state != pb.RUN_STATE_RUNNING

    await eventually(ended_again, timeout=60, message=f"restart {restarts} ended")
    return (await stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=30)).run


def _attempts(cluster: Cluster, task: str) -> list[int]:  # noqa: F811
    return [e["attempt"] for e in cluster.starts(task)]


async def test_checkpoint_progress_restore_gives_the_same_results_again(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    flag = tmp_path / "down"
    flag.write_text("")
    run = await submit(stub, _document(flag))
    assert (await wait_done(stub, run.run_id)).state == pb.RUN_STATE_FAILED

    first = await checkpoint(stub, run.run_id, label="before the fix", request_id="cp-1")
    assert (first.run_id, first.completed_tasks, first.label) == (run.run_id, 1, "before the fix")
    assert first.run_state == pb.RUN_STATE_FAILED and names.is_checkpoint_id(first.checkpoint_id)
    again = await checkpoint(stub, run.run_id, label="ignored", request_id="cp-1")  # idempotent
    assert again == first

    flag.unlink()
    await retry(stub, run.run_id)  # more progress: the run completes
    done = await wait_restarted(stub, run.run_id, 1)
    assert done.state == pb.RUN_STATE_COMPLETED
    results = {t.task_id: result(t) for t in done.tasks}
    assert results == {"a": 1, "s": {"attempt": 2}, "c": 2}
    second = await checkpoint(stub, run.run_id)
    assert second.completed_tasks == 3 and second.run_state == pb.RUN_STATE_COMPLETED
    listed = await stub.ListCheckpoints(api.ListCheckpointsRequest(run_id=run.run_id), timeout=30)
    assert [c.checkpoint_id for c in listed.checkpoints] == [
        first.checkpoint_id,
        second.checkpoint_id,
    ]

    rewound = await restore(stub, first.checkpoint_id, request_id="restore-1")
    assert rewound.restarts == 2
    restored = await wait_restarted(stub, run.run_id, 2)
    assert restored.state == pb.RUN_STATE_COMPLETED, restored.error
    tasks = tasks_by_id(restored)
    # The tasks that completed after the checkpoint ran again, as new attempts; the one
    # completed before it kept its result and did not run again.
    assert _attempts(cluster, "s") == [1, 2, 3]
    assert _attempts(cluster, "c") == [1, 2]
    assert _attempts(cluster, "a") == [1]
    assert (result(tasks["a"]), result(tasks["c"])) == (1, 2)  # the same results again
    assert len({e["key"] for e in cluster.starts("c")}) == 2

    repeated = await restore(stub, first.checkpoint_id, request_id="restore-1")
    assert repeated.restarts == 2  # idempotent per request_id
    # A checkpoint of a completed run: restoring it runs nothing (every task completed then).
    whole = await restore(stub, second.checkpoint_id)
    assert whole.restarts == 3 and whole.state == pb.RUN_STATE_COMPLETED
    assert _attempts(cluster, "c") == [1, 2]

    # The janitor removes a run's checkpoints with the run.
    checkpoints_kv = await js.key_value(names.CHECKPOINTS_BUCKET)
    assert await list_keys(checkpoints_kv, f"{run.run_id}.>")
    janitor = Janitor(
        js=js,
        runs=await js.key_value(names.RUNS_BUCKET),
        tasks=await js.key_value(names.TASKS_BUCKET),
        executors=await js.key_value(names.EXECUTORS_BUCKET),
        checkpoints=checkpoints_kv,
        settings=Settings(retention=0.001),
    )
    assert await janitor.sweep(now=time.time() + 5) >= 1
    assert await list_keys(checkpoints_kv, f"{run.run_id}.>") == []
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    assert await list_keys(runs_kv, f"*.{run.run_id}") == []


async def test_restoring_a_running_run_cancels_it_first(
    cluster: Cluster,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    document = (
        "tasks:\n"
        "  - {id: a, method: test/ledger}\n"
        "  - {id: slow, method: test/cancellable, dependencies: [a], params: {seconds: 60}}\n"
    )
    run = await submit(stub, document)

    async def slow_running() -> bool:
        return bool(cluster.starts("slow"))

    await eventually(slow_running, message="slow running")
    taken = await checkpoint(stub, run.run_id)
    assert taken.run_state == pb.RUN_STATE_RUNNING and taken.completed_tasks == 1
    rewound = await restore(stub, taken.checkpoint_id)
    assert rewound.state == pb.RUN_STATE_RUNNING and rewound.restarts == 1

    async def ran_again() -> bool:
        cancelled = any(e["ev"] == "cancelled" for e in cluster.executions())
        return cancelled and _attempts(cluster, "slow") == [1, 2]

    await eventually(ran_again, message="the running handler was cancelled and ran again")
    assert _attempts(cluster, "a") == [1]
    await stub.CancelRun(api.CancelRunRequest(run_id=run.run_id), timeout=30)


async def test_checkpoint_calls_refuse_bad_input_and_change_nothing(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    run = await submit(stub, "tasks:\n  - {id: a, method: test/ledger}\n")
    await wait_done(stub, run.run_id)

    async def code(call: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        return refused.value.code()

    nf, bad = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    for hostile in ("", "nope", "../" * 2000, "0" * 22, "*", "a.b", run.run_id.upper()):
        assert await code(checkpoint(stub, hostile)) == nf, hostile
        listing = stub.ListCheckpoints(api.ListCheckpointsRequest(run_id=hostile), timeout=30)
        assert await code(listing) == nf, hostile
        assert await code(restore(stub, hostile)) == nf, hostile
    assert await code(restore(stub, run.run_id)) == nf  # a run id is no checkpoint id
    assert await code(checkpoint(stub, run.run_id, label="l" * 257)) == bad
    assert await code(checkpoint(stub, run.run_id, request_id="r" * 257)) == bad
    taken = await checkpoint(stub, run.run_id)
    assert await code(restore(stub, taken.checkpoint_id, request_id="r" * 257)) == bad

    checkpoints_kv = await js.key_value(names.CHECKPOINTS_BUCKET)
    assert len(await list_keys(checkpoints_kv, ">")) == 2  # the one taken: a part, its meta
    header = (await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=30)).run
    assert header.restarts == 0 and header.state == pb.RUN_STATE_COMPLETED


async def test_the_janitor_removes_a_runs_breaker_record_with_the_run(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """A run that ended while its resolution breaker was open leaves the breaker's record in
    stellwerk-runs; the janitor removes it with the run (nothing else would)."""
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    run = await submit(stub, "tasks: [{id: a, method: test/noop}]")
    await wait_done(stub, run.run_id)
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    record = breaker_key(run_scope(run.run_id))
    await runs_kv.put(record, b'{"state": "OPEN"}')
    janitor = Janitor(
        js=js,
        runs=runs_kv,
        tasks=await js.key_value(names.TASKS_BUCKET),
        executors=await js.key_value(names.EXECUTORS_BUCKET),
        settings=Settings(retention=0.001),
    )
    assert await janitor.sweep(now=time.time() + 5) >= 1
    assert await list_keys(runs_kv, record) == []
