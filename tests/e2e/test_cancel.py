"""CancelRun end to end: services as processes against a real nats-server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk.core import names
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.support.polling import eventually

FIXTURE_SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "scripts"

# Two slots: two of the roots run, four wait in the queue, `after` waits for `a`.
ROOTS = ["a", "b", "c", "d", "e", "f"]
DOCUMENT = (
    "tasks:\n"
    + "".join(
        f"  - {{id: {t}, method: test/cancellable, params: {{seconds: 60}}}}\n" for t in ROOTS
    )
    + "  - {id: after, method: test/ledger, dependencies: [a]}\n"
)


async def cancel(stub: Any, run_id: str) -> pb.Run:
    reply = await stub.CancelRun(api.CancelRunRequest(run_id=run_id, request_id="op"), timeout=30)
    return reply.run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cancel_stops_running_handlers_and_starts_nothing_after(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor", STELLWERK_EXECUTOR_CONCURRENCY="2")
    stub = await stub_for(resolver)
    run = await submit(stub, DOCUMENT)

    def started() -> set[str]:
        return {e["task"] for e in cluster.executions() if e["ev"] == "start"}

    async def two_running() -> bool:
        return len(started()) == 2

    await eventually(two_running, message="two handlers running")
    running = started()
    cancelled = await cancel(stub, run.run_id)
    assert cancelled.state == pb.RUN_STATE_CANCELLED
    committed = cancelled.end_time.ToNanoseconds() / 1e9

    async def handlers_saw_it() -> bool:
        seen = {e["task"] for e in cluster.executions() if e["ev"] == "cancelled"}
        return seen == running

    await eventually(handlers_saw_it, message="running handlers cancelled")

    async def queue_drained() -> bool:  # queued attempts were taken and acknowledged unrun
        info = await js.stream_info(names.DISPATCH_STREAM)
        return bool(info.state.messages == 0)

    await eventually(queue_drained, message="queued dispatches dropped")
    starts = [e for e in cluster.executions() if e["ev"] == "start"]
    assert {e["task"] for e in starts} == running and len(starts) == 2
    assert all(e["t"] < committed for e in starts)
    assert not [e for e in cluster.executions() if e["ev"] == "end"]

    done = (await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=10)).run
    assert done.state == pb.RUN_STATE_CANCELLED
    assert {t.task_id: t.state for t in done.tasks} == dict.fromkeys(
        [*ROOTS, "after"], pb.TASK_STATE_CANCELLED
    )

    # An outcome that arrives after the cancel (a handler that finished anyway) is stored,
    # but dispatches nothing and does not end the run otherwise.
    late = events_pb2.TaskEvent(
        format_version=2,
        run_id=run.run_id,
        task_id="a",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json="1",
        executor_id="late",
    )
    await js.publish(names.event_subject(run.run_id, "a", 1), late.SerializeToString())

    async def applied() -> bool:
        info = await js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(applied, message="late outcome consumed")
    again = (await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=10)).run
    assert again.state == pb.RUN_STATE_CANCELLED
    assert tasks_by_id(again)["after"].state == pb.TASK_STATE_CANCELLED
    assert (await js.stream_info(names.DISPATCH_STREAM)).state.messages == 0
    assert not cluster.starts("after")

    # Idempotent: a repeated cancel returns the run as it is.
    repeated = await cancel(stub, run.run_id)
    assert repeated.state == pb.RUN_STATE_CANCELLED
    assert repeated.end_time == cancelled.end_time


async def test_cancel_kills_a_python_execute_script(cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    resolver = await cluster.start("resolver")
    await cluster.start("executor", STELLWERK_SCRIPT_DIRS=str(FIXTURE_SCRIPTS))
    stub = await stub_for(resolver)
    pid_file = tmp_path / "pids"
    document = f"""
tasks:
  - id: script
    method: python/execute
    params: {{file: sleeper.py, context: {{pid_file: "{pid_file}"}}}}
"""
    run = await submit(stub, document)
    await eventually(lambda: _exists(pid_file), message="script started")
    script, child = (int(p) for p in pid_file.read_text().split())
    assert (await cancel(stub, run.run_id)).state == pb.RUN_STATE_CANCELLED

    async def killed() -> bool:
        return not _alive(script) and not _alive(child)

    await eventually(killed, timeout=15, message="script and its child killed")


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_cancel_refuses_ended_runs_and_unknown_ids(cluster: Cluster) -> None:  # noqa: F811
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    done = await wait_done(stub, (await submit(stub, "tasks: [{id: a, method: test/noop}]")).run_id)
    assert done.state == pb.RUN_STATE_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cancel(stub, done.run_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await stub.GetRun(api.GetRunRequest(run_id=done.run_id))).run.state == (
        pb.RUN_STATE_COMPLETED
    )
    for bad in ("0" * 22, "not-a-run"):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await cancel(stub, bad)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reconciler_finishes_a_cancel_cut_short_after_its_commit(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    run = await submit(stub, DOCUMENT)
    await eventually(lambda: _any_start(cluster), message="a handler running")
    # A CancelRun that died right after its commit: the marker is stored, nothing else.
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    await runs_kv.put(names.cancel_key(run.run_id), b"1")

    async def handlers_cancelled() -> bool:
        return any(e["ev"] == "cancelled" for e in cluster.executions())

    await eventually(handlers_cancelled, message="executors cancelled the running handlers")
    await cluster.start("monitor")
    done = await wait_done(stub, run.run_id, timeout=30)
    assert done.state == pb.RUN_STATE_CANCELLED
    assert {t.state for t in done.tasks} == {pb.TASK_STATE_CANCELLED}
    assert not [e for e in cluster.executions() if e["ev"] == "end"]


async def _any_start(cluster: Cluster) -> bool:  # noqa: F811
    return any(e["ev"] == "start" for e in cluster.executions())
