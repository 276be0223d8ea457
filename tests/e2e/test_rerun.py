"""RetryRun end to end: services as processes against a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk.core import names
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.support.polling import eventually


def _document(flag: Path) -> str:
    """``a`` -> ``s`` (fails while ``flag`` exists; 2 attempts) -> ``b``; ``c`` -> ``d`` apart."""
    return (
        "tasks:\n"
        "  - {id: a, method: test/ledger, params: {value: 1}}\n"
        f"  - id: s\n    method: test/switch\n    params: {{flag: '{flag}'}}\n"
        "    dependencies: [a]\n"
        "    retry: {max_attempts: 2, backoff: fixed, base_delay: 0.1, jitter: false}\n"
        "  - {id: b, method: test/ledger, dependencies: [s, a], params: {inputs: ['${a}']}}\n"
        "  - {id: c, method: test/ledger, params: {value: 5}}\n"
        "  - {id: d, method: test/ledger, dependencies: [c], params: {inputs: ['${c}']}}\n"
    )


async def retry(stub: Any, run_id: str, *from_ids: str, request_id: str = "") -> pb.Run:
    request = api.RetryRunRequest(run_id=run_id, from_task_ids=from_ids, request_id=request_id)
    return (await stub.RetryRun(request, timeout=30)).run


def _attempts(cluster: Cluster, task: str) -> list[int]:  # noqa: F811
    return [e["attempt"] for e in cluster.starts(task)]


async def test_retry_runs_the_failed_part_again_with_new_attempts(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    flag = tmp_path / "down"
    flag.write_text("")
    run = await submit(stub, _document(flag))
    failed = await wait_done(stub, run.run_id)
    assert failed.state == pb.RUN_STATE_FAILED
    states = {t.task_id: t.state for t in failed.tasks}
    assert states == {
        "a": pb.TASK_STATE_COMPLETED,
        "s": pb.TASK_STATE_FAILED,
        "b": pb.TASK_STATE_BLOCKED,
        "c": pb.TASK_STATE_COMPLETED,
        "d": pb.TASK_STATE_COMPLETED,
    }
    assert _attempts(cluster, "s") == [1, 2]  # its retry policy was spent

    flag.unlink()  # the dependency is back
    again = await retry(stub, run.run_id, request_id="retry-1")
    assert again.state in (pb.RUN_STATE_RUNNING, pb.RUN_STATE_COMPLETED)
    assert again.restarts == 1
    done = await wait_done(stub, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    assert {t.state for t in done.tasks} == {pb.TASK_STATE_COMPLETED}
    # The failed task goes on after its last attempt (new idempotency keys), with its retry
    # policy's budget anew; the blocked one runs for the first time.
    assert _attempts(cluster, "s") == [1, 2, 3]
    assert result(tasks["s"]) == {"attempt": 3}
    assert tasks["s"].attempts == 3
    assert _attempts(cluster, "b") == [1]
    assert result(tasks["b"]) == 2  # 1 + a's kept result
    keys = [e["key"] for e in cluster.starts("s")]
    assert len(set(keys)) == 3
    # Completed tasks keep their results and are not executed again.
    for task in ("a", "c", "d"):
        assert len(cluster.starts(task)) == 1, task
    assert result(tasks["d"]) == 6
    assert done.restarts == 1

    # Idempotent per request_id: the same request changes nothing more.
    repeated = await retry(stub, run.run_id, request_id="retry-1")
    assert repeated.restarts == 1
    assert repeated.state == pb.RUN_STATE_COMPLETED
    assert _attempts(cluster, "s") == [1, 2, 3]


async def test_retry_from_a_task_reruns_it_and_its_downstream_only(
    cluster: Cluster,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    document = (
        "tasks:\n"
        "  - {id: a, method: test/ledger, params: {value: 1}}\n"
        "  - {id: b, method: test/ledger, dependencies: [a], params: {inputs: ['${a}']}}\n"
        "  - {id: c, method: test/ledger, dependencies: [b], params: {inputs: ['${b}']}}\n"
        "  - {id: x, method: test/ledger, params: {value: 7}}\n"
    )
    run = await submit(stub, document)
    assert (await wait_done(stub, run.run_id)).state == pb.RUN_STATE_COMPLETED

    # A completed run with nothing named has nothing to run again.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await retry(stub, run.run_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    again = await retry(stub, run.run_id, "b", "b")
    assert again.restarts == 1
    done = await wait_done(stub, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert _attempts(cluster, "b") == [1, 2]
    assert _attempts(cluster, "c") == [1, 2]
    assert _attempts(cluster, "a") == [1]
    assert _attempts(cluster, "x") == [1]
    tasks = tasks_by_id(done)
    assert (result(tasks["b"]), result(tasks["c"])) == (2, 3)
    assert tasks["a"].attempts == 1 and tasks["c"].attempts == 2


async def test_retry_refuses_bad_input_and_changes_nothing(
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
    await wait_done(stub, run.run_id)

    async def code_of(request: api.RetryRunRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RetryRun(request, timeout=30)
        return refused.value.code(), refused.value.details() or ""

    nf = grpc.StatusCode.NOT_FOUND
    bad = grpc.StatusCode.INVALID_ARGUMENT
    for run_id in ("", "nope", "../" * 2000, "0" * 22, run.run_id.upper(), "a.b.*"):
        assert (await code_of(api.RetryRunRequest(run_id=run_id)))[0] == nf, run_id
    code, details = await code_of(api.RetryRunRequest(run_id=run.run_id, from_task_ids=["zz"]))
    assert code == nf and "zz" in details
    for hostile in ("", "x" * 201):
        request = api.RetryRunRequest(run_id=run.run_id, from_task_ids=["a", hostile])
        code, details = await code_of(request)
        assert code == bad and "from_task_ids[1]" in details
    many = api.RetryRunRequest(run_id=run.run_id, from_task_ids=["a"] * 1001)
    assert (await code_of(many))[0] == bad
    long_id = api.RetryRunRequest(run_id=run.run_id, request_id="r" * 257)
    assert (await code_of(long_id))[0] == bad

    runs_kv = await js.key_value(names.RUNS_BUCKET)
    header = json.loads((await runs_kv.get(names.run_key(run.run_id))).value)
    assert header["state"] == "FAILED" and "restarts" not in header
    assert not [k for k in await runs_kv.keys() if k.startswith("restart.")]

    # A running run is refused.
    slow = await submit(stub, "tasks:\n  - {id: t, method: test/cancellable}\n")
    code, details = await code_of(api.RetryRunRequest(run_id=slow.run_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "running" in details
    await stub.CancelRun(api.CancelRunRequest(run_id=slow.run_id), timeout=30)


async def test_retry_of_a_cancelled_run_runs_the_cancelled_part(
    cluster: Cluster,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    document = (
        "tasks:\n"
        "  - {id: a, method: test/ledger}\n"
        "  - {id: slow, method: test/cancellable, dependencies: [a], params: {seconds: 60}}\n"
        "  - {id: z, method: test/ledger, dependencies: [slow]}\n"
    )
    run = await submit(stub, document)

    async def slow_running() -> bool:
        return bool(cluster.starts("slow"))

    await eventually(slow_running, message="slow running")
    await stub.CancelRun(api.CancelRunRequest(run_id=run.run_id), timeout=30)
    again = await retry(stub, run.run_id, request_id="after-cancel")
    assert again.state == pb.RUN_STATE_RUNNING and again.restarts == 1

    async def slow_again() -> bool:
        return [e["attempt"] for e in cluster.starts("slow")] == [1, 2]

    await eventually(slow_again, message="the cancelled task runs again as attempt 2")
    assert _attempts(cluster, "a") == [1]
    await stub.CancelRun(api.CancelRunRequest(run_id=run.run_id), timeout=30)


async def test_reconciler_finishes_a_retry_cut_short_after_its_commit(
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
    failed = await wait_done(stub, run.run_id)
    flag.unlink()
    # A RetryRun that died right after its commit: the intent is stored, nothing else.
    intent = {
        "v": 1,
        "n": 1,
        "kind": "retry",
        "tasks": ["b", "s"],
        "checkpoint": "",
        "purge_below": 0,
        "ended_at": failed.end_time.ToNanoseconds() / 1e9,
        "requests": [],
    }
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    await runs_kv.put(names.restart_key(run.run_id), json.dumps(intent).encode())
    await cluster.start("monitor")

    async def finished_again() -> bool:
        reply = await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=30)
        return reply.run.restarts == 1 and reply.run.state == pb.RUN_STATE_COMPLETED

    await eventually(finished_again, timeout=60, message="the monitor finished the retry")
    assert _attempts(cluster, "s") == [1, 2, 3]
    assert _attempts(cluster, "a") == [1]
