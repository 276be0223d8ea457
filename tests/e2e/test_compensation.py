"""The ``compensate`` failure strategy (saga) end to end, services as processes against a real
nats-server: on a diamond ``a`` → ``b``, ``c`` → ``d`` where ``b`` fails for good under
``on_failure: compensate``, the compensations of the completed tasks run one at a time in
reverse completion order, and the run ends COMPENSATED."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk.core import names
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState, bitmap_set
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures

STELLWERK = Path(sys.executable).parent / "stellwerk"

# ``side`` runs while ``b`` fails, so it completes last (after the saga began: tasks already
# running finish); ``after_side`` would start then, but no normal task starts in a saga.
DIAMOND = """
tasks:
  - {{id: a, method: test/ledger, params: {{value: 1}}, compensation_task: undo_a}}
  - id: b
    method: test/fail
    dependencies: [a]
    params: {{message: b broke}}
    retry: {{max_attempts: 2, backoff: fixed, base_delay: 0.1, jitter: false}}
    {strategy}
  - id: c
    method: test/ledger
    dependencies: [a]
    params: {{value: 10, inputs: ["${{a}}"]}}
    metadata: {{compensation_task: undo_c}}
  - {{id: d, method: test/ledger, dependencies: [b, c], compensation_task: undo_d}}
  - id: side
    method: test/ledger
    params: {{value: 5, seconds: 2}}
    compensation_task: undo_side
  - {{id: after_side, method: test/ledger, dependencies: [side]}}
  - id: undo_a
    method: {undo_a}
    dependencies: [a]
    params: {{value: 1000, inputs: ["${{a}}"]}}
    retry: {{max_attempts: 2, backoff: fixed, base_delay: 0.1, jitter: false}}
  - {{id: undo_b, method: test/ledger, params: {{value: 2000}}}}
  - id: undo_c
    method: {undo_c}
    dependencies: [c]
    params: {{value: 3000, inputs: ["${{c}}"], message: undo_c broke}}
    retry: {{max_attempts: 2, backoff: fixed, base_delay: 0.1, jitter: false}}
  - {{id: undo_d, method: test/ledger, params: {{value: 4000}}}}
  - id: undo_side
    method: test/ledger
    dependencies: [side]
    params: {{value: 5000, inputs: ["${{side}}"]}}
"""
COMPENSATE = "on_failure: compensate\n    compensation_task: undo_b"
COMPENSATE_METADATA = "metadata: {failure_strategy: compensate, compensation_task: undo_b}"


def diamond(
    strategy: str = COMPENSATE, undo_a: str = "test/ledger", undo_c: str = "test/ledger"
) -> str:
    return DIAMOND.format(strategy=strategy, undo_a=undo_a, undo_c=undo_c)


def states(run: pb.Run) -> dict[str, str]:
    return {t.task_id: pb.TaskState.Name(t.state).removeprefix("TASK_STATE_") for t in run.tasks}


async def started(cluster: Cluster) -> Any:  # noqa: F811
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    return await stub_for(resolver)


def start_order(cluster: Cluster) -> list[str]:  # noqa: F811
    """The tasks whose executions started, in the order they started."""
    executions = sorted(cluster.executions(), key=lambda e: e["t"])
    return [e["task"] for e in executions if e["ev"] == "start"]


@pytest.mark.parametrize("strategy", [COMPENSATE, COMPENSATE_METADATA], ids=["key", "metadata"])
async def test_compensations_run_in_reverse_completion_order_and_the_run_ends_compensated(
    cluster: Cluster,  # noqa: F811
    strategy: str,
) -> None:
    stub = await started(cluster)
    run = await wait_done(stub, (await submit(stub, diamond(strategy))).run_id)
    assert run.state == pb.RUN_STATE_COMPENSATED, run.error
    assert states(run) == {
        "a": "COMPLETED",
        "b": "FAILED",
        "c": "COMPLETED",
        "d": "BLOCKED",
        "side": "COMPLETED",
        "after_side": "BLOCKED",  # made ready in the saga: not started
        "undo_a": "COMPLETED",
        "undo_b": "PENDING",  # b never completed: nothing to undo
        "undo_c": "COMPLETED",
        "undo_d": "PENDING",
        "undo_side": "COMPLETED",
    }
    tasks = tasks_by_id(run)
    assert tasks["b"].attempts == 2 and "b broke" in tasks["b"].error  # retried first
    assert "'b'" in run.error and "b broke" in run.error
    assert "compensate" in tasks["after_side"].error
    # The compensation results are recorded, read from the tasks they undo.
    assert (result(tasks["undo_side"]), result(tasks["undo_c"]), result(tasks["undo_a"])) == (
        5005,
        3011,
        1001,
    )
    undoing = ("undo_a", "undo_b", "undo_c", "undo_d", "undo_side")
    assert {t: tasks[t].role for t in tasks if tasks[t].role} == dict.fromkeys(
        undoing, "compensation"
    )
    # Reverse completion order (side completed last, then c, then a), one at a time.
    executions = sorted(cluster.executions(), key=lambda e: e["t"])
    undo = [e for e in executions if e["task"].startswith("undo_")]
    assert [(e["task"], e["ev"]) for e in undo] == [
        ("undo_side", "start"),
        ("undo_side", "end"),
        ("undo_c", "start"),
        ("undo_c", "end"),
        ("undo_a", "start"),
        ("undo_a", "end"),
    ]
    side_end = next(e["t"] for e in executions if e["task"] == "side" and e["ev"] == "end")
    assert undo[0]["t"] >= side_end  # the saga waited for the task still running
    for task in ("a", "c", "side"):
        assert len(cluster.starts(task)) == 1
    assert not cluster.starts("d") and not cluster.starts("after_side")


async def test_a_failing_compensation_is_retried_reported_and_the_saga_goes_on(
    cluster: Cluster,  # noqa: F811
) -> None:
    stub = await started(cluster)
    document = diamond(undo_a="test/flaky", undo_c="test/ledger-fail")
    run = await wait_done(stub, (await submit(stub, document)).run_id)
    assert run.state == pb.RUN_STATE_COMPENSATED
    tasks = tasks_by_id(run)
    assert states(run)["undo_c"] == "FAILED" and tasks["undo_c"].attempts == 2
    assert states(run)["undo_a"] == "COMPLETED" and tasks["undo_a"].attempts == 2
    assert result(tasks["undo_a"]) == {"attempt": 2}  # test/flaky: its second attempt won
    assert "compensations failed: 'undo_c'" in run.error and "undo_c broke" in run.error
    assert "'b'" in run.error  # the cause stays first
    assert "undo_a" not in run.error.split("compensations failed")[1]
    # Every attempt ran, in saga order: undo_c's two, then undo_a's two.
    order = [task for task in start_order(cluster) if task.startswith("undo_")]
    assert order == ["undo_side", "undo_c", "undo_c", "undo_a", "undo_a"]


async def test_nothing_to_compensate_ends_compensated_at_once(
    cluster: Cluster,  # noqa: F811
) -> None:
    stub = await started(cluster)
    document = """
tasks:
  - {id: only, method: test/fail, on_failure: compensate, compensation_task: undo}
  - {id: undo, method: test/ledger}
"""
    run = await wait_done(stub, (await submit(stub, document)).run_id)
    assert run.state == pb.RUN_STATE_COMPENSATED
    assert states(run) == {"only": "FAILED", "undo": "PENDING"}
    assert run.HasField("end_time") and "'only'" in run.error
    assert not cluster.executions()


async def test_without_a_failure_compensations_never_run(cluster: Cluster) -> None:  # noqa: F811
    stub = await started(cluster)
    document = """
tasks:
  - {id: a, method: test/ledger, compensation_task: undo_a, on_failure: compensate}
  - {id: undo_a, method: test/ledger}
"""
    run = await wait_done(stub, (await submit(stub, document)).run_id)
    assert run.state == pb.RUN_STATE_COMPLETED
    assert states(run) == {"a": "COMPLETED", "undo_a": "PENDING"}  # never a root
    assert start_order(cluster) == ["a"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: nope}",
            "unknown compensation task 'nope'",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate}\n"
            "  - {id: x, method: test/noop, compensation_task: y}\n"
            "  - {id: y, method: test/noop, compensation_task: x}",
            "compensations cycle: 'x' -> 'y' -> 'x'",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: c}\n"
            "  - {id: c, method: test/noop, dependencies: [a]}\n"
            "  - {id: d, method: test/noop, dependencies: [c]}",
            "the compensation 'c' is on the normal path",
        ),
        (  # a root of the normal path named as a compensation
            "- {id: r, method: test/noop}\n"
            "  - {id: a, method: test/noop, dependencies: [r], on_failure: compensate,"
            " compensation_task: r}",
            "the compensation 'r' is on the normal path: 'a' depend on it",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: a}",
            "a task cannot be its own compensation",
        ),
        (
            "- {id: a, method: test/noop, compensation_task: u}\n  - {id: u, method: test/noop}",
            "no task has on_failure: compensate",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: u}\n"
            "  - {id: z, method: test/noop}\n"
            "  - {id: u, method: test/noop, dependencies: [z]}",
            "may depend only on 'a' and tasks it depends on; 'z' is not one",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: u}\n"
            "  - {id: u, method: test/noop, on_failure: skip}",
            "it takes no on_failure",
        ),
        (
            "- {id: a, method: test/noop, on_failure: compensate, compensation_task: 7}",
            "compensation_task",
        ),
        (
            "- {id: a, method: test/noop, compensation_task: u,"
            " metadata: {compensation_task: v}}\n"
            "  - {id: u, method: test/noop}\n  - {id: v, method: test/noop}",
            "compensation_task and metadata.compensation_task disagree",
        ),
    ],
    ids=[
        "unknown",
        "cyclic",
        "normal-path",
        "root",
        "itself",
        "never-runs",
        "dependency",
        "strategy",
        "not-an-id",
        "disagree",
    ],
)
async def test_bad_compensations_are_refused_and_change_nothing(
    workflows: Any, tasks: str, message: str
) -> None:
    before = await workflows.ListRuns(api.ListRunsRequest(page_size=1000), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit(workflows, f"tasks:\n  {tasks}\n")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    after = await workflows.ListRuns(api.ListRunsRequest(page_size=1000), timeout=10)
    assert len(after.runs) == len(before.runs)


async def test_run_and_watch_exit_1_for_a_compensated_run(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    path = tmp_path / "saga.yaml"
    path.write_text(
        "tasks:\n"
        "  - {id: a, method: test/noop, params: {value: 1}, compensation_task: undo}\n"
        "  - {id: b, method: test/fail, dependencies: [a], on_failure: compensate}\n"
        "  - {id: undo, method: test/noop, dependencies: [a], params: {value: undone}}\n"
    )
    address = ["--address", resolver.address]
    ran = subprocess.run(
        [str(STELLWERK), "run", *address, str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 1, ran.stderr
    document = json.loads(ran.stdout.strip().splitlines()[-1])
    assert document["state"] == "COMPENSATED"
    assert document["tasks"]["undo"]["role"] == "compensation"
    assert document["tasks"]["undo"]["result"] == "undone"
    watched = subprocess.run(
        [str(STELLWERK), "watch", *address, document["run_id"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert watched.returncode == 1, watched.stderr
    assert "COMPENSATED" in watched.stdout and "undo (compensation)" in watched.stdout


async def test_a_saga_cut_short_is_finished_by_the_reconciler(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """The resolver died right after the header went COMPENSATING, before any compensation
    started: the reconciler starts them in order and ends the run COMPENSATED."""
    first = await cluster.start("executor")  # registers the methods, then goes away
    first.terminate()
    resolver = await cluster.start("resolver")
    stub = await stub_for(resolver)
    document = """
tasks:
  - {id: a, method: test/ledger, params: {value: 1}, compensation_task: undo_a}
  - {id: c, method: test/ledger, dependencies: [a], params: {value: 2}, compensation_task: undo_c}
  - {id: b, method: test/fail, dependencies: [c], on_failure: compensate}
  - {id: undo_a, method: test/ledger, dependencies: [a], params: {value: 10, inputs: ["${a}"]}}
  - {id: undo_c, method: test/ledger, dependencies: [c], params: {value: 20, inputs: ["${c}"]}}
"""
    run_id = (await submit(stub, document)).run_id
    await js.purge_stream(names.DISPATCH_STREAM)
    tasks_kv = await js.key_value(names.TASKS_BUCKET)
    runs_kv = await js.key_value(names.RUNS_BUCKET)
    long_ago = time.time() - 60  # older than the reconciler's threshold

    async def rewrite(task_id: str, **changes: Any) -> None:
        entry = await tasks_kv.get(names.task_key(run_id, task_id))
        record = TaskRecord.from_bytes(entry.value).evolve(**changes)
        await tasks_kv.update(names.task_key(run_id, task_id), record.to_bytes(), entry.revision)

    done = {"state": TaskState.COMPLETED, "has_result": True, "attempt": 1}
    await rewrite("a", **done, result=1, ended_at=long_ago - 2)
    await rewrite("c", **done, result=2, ended_at=long_ago - 1, settled_deps=bitmap_set("00", 0))
    await rewrite(
        "b",
        state=TaskState.FAILED,
        attempt=1,
        error="b broke",
        ended_at=long_ago,
        settled_deps=bitmap_set("00", 0),
    )
    entry = await runs_kv.get(names.run_key(run_id))
    header = RunRecord.from_bytes(entry.value).evolve(
        state=RunState.COMPENSATING,
        saga_cause="b",
        failed=True,
        error="task 'b' failed: b broke",
        settled_sinks=bitmap_set("00", 0),
    )
    await runs_kv.update(names.run_key(run_id), header.to_bytes(), entry.revision)
    await cluster.start("executor")
    await cluster.start("monitor")
    finished = await wait_done(stub, run_id, timeout=60)
    assert finished.state == pb.RUN_STATE_COMPENSATED, finished.error
    assert states(finished) == {
        "a": "COMPLETED",
        "c": "COMPLETED",
        "b": "FAILED",
        "undo_a": "COMPLETED",
        "undo_c": "COMPLETED",
    }
    tasks = tasks_by_id(finished)
    assert (result(tasks["undo_c"]), result(tasks["undo_a"])) == (22, 11)
    assert [e for e in start_order(cluster) if e.startswith("undo_")] == ["undo_c", "undo_a"]
