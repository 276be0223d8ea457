"""Failure strategies (``on_failure``) end to end on a small diamond, services as processes
against a real nats-server: ``a`` → ``b``, ``c`` → ``d``, where ``b`` fails for good."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stellwerk.core import names
from stellwerk.core.records import TaskRecord, TaskState, bitmap_set
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures

DIAMOND = """
tasks:
  - id: a
    method: test/noop
    params: {{value: {{x: 1}}}}
  - id: b
    method: test/fail
    dependencies: [a]
    params: {{message: b broke}}
    retry: {{max_attempts: 2, backoff: fixed, base_delay: 0.1, jitter: false}}
    {strategy}
  - id: c
    method: test/noop
    dependencies: [a]
    params: {{value: c-done}}
  - id: d
    method: test/identity
    dependencies: [b, c]
    params: {{whole: "${{b}}", deep: "${{b.result.x.y}}", text: "b=${{b.result}}", c: "${{c}}"}}
  - id: side
    method: test/noop
    params: {{value: independent}}
"""


def states(run: pb.Run) -> dict[str, str]:
    return {t.task_id: pb.TaskState.Name(t.state) for t in run.tasks}


async def test_block_fails_the_task_blocks_its_dependents_and_the_run(workflows: Any) -> None:
    run = await wait_done(workflows, (await submit(workflows, DIAMOND.format(strategy=""))).run_id)
    assert states(run) == {
        "a": "TASK_STATE_COMPLETED",
        "b": "TASK_STATE_FAILED",
        "c": "TASK_STATE_COMPLETED",
        "d": "TASK_STATE_BLOCKED",
        "side": "TASK_STATE_COMPLETED",
    }
    assert run.state == pb.RUN_STATE_FAILED
    tasks = tasks_by_id(run)
    assert tasks["b"].attempts == 2  # retries exhausted first
    assert "b broke" in tasks["b"].error
    assert "'b'" in tasks["d"].error


@pytest.mark.parametrize(
    "strategy", ["on_failure: skip", "metadata: {failure_strategy: skip}"], ids=["key", "metadata"]
)
async def test_skip_lets_dependents_run_with_null_for_its_result(
    workflows: Any, strategy: str
) -> None:
    document = DIAMOND.format(strategy=strategy)
    run = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert states(run) == {
        "a": "TASK_STATE_COMPLETED",
        "b": "TASK_STATE_SKIPPED",
        "c": "TASK_STATE_COMPLETED",
        "d": "TASK_STATE_COMPLETED",
        "side": "TASK_STATE_COMPLETED",
    }
    assert run.state == pb.RUN_STATE_COMPLETED, run.error
    tasks = tasks_by_id(run)
    assert tasks["b"].attempts == 2  # retried first; skipped only once no attempt was left
    assert "b broke" in tasks["b"].error  # its error kept
    assert not tasks["b"].result_json
    assert result(tasks["d"])["params"] == {
        "whole": None,
        "deep": None,
        "text": "b=null",
        "c": "c-done",
    }


async def test_a_skipped_sink_does_not_fail_the_run(workflows: Any) -> None:
    document = """
tasks:
  - id: only
    method: test/fail
    on_failure: skip
"""
    run = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert states(run) == {"only": "TASK_STATE_SKIPPED"}
    assert run.state == pb.RUN_STATE_COMPLETED


ALTERNATIVE = (
    DIAMOND.format(strategy="on_failure: alternative\n    alternative_task: b_alt")
    + """
  - id: b_alt
    method: test/noop
    dependencies: [a]
    params: {value: {x: {y: "from the alternative"}}}
"""
)


async def test_alternative_runs_instead_and_its_result_stands_in(workflows: Any) -> None:
    run = await wait_done(workflows, (await submit(workflows, ALTERNATIVE)).run_id)
    assert states(run) == {
        "a": "TASK_STATE_COMPLETED",
        "b": "TASK_STATE_FAILED",
        "c": "TASK_STATE_COMPLETED",
        "d": "TASK_STATE_COMPLETED",
        "side": "TASK_STATE_COMPLETED",
        "b_alt": "TASK_STATE_COMPLETED",
    }
    assert run.state == pb.RUN_STATE_COMPLETED, run.error
    tasks = tasks_by_id(run)
    assert tasks["b"].attempts == 2 and "b broke" in tasks["b"].error
    stand_in = {"x": {"y": "from the alternative"}}
    assert result(tasks["d"])["params"] == {
        "whole": stand_in,
        "deep": "from the alternative",
        "text": 'b={"x": {"y": "from the alternative"}}',
        "c": "c-done",
    }
    # it ran only once b had failed for good
    b_end = tasks["b"].attempt_history[-1].end_time.ToNanoseconds()
    assert tasks["b_alt"].attempt_history[0].start_time.ToNanoseconds() >= b_end


async def test_an_alternative_is_never_a_root_and_waits_unused(workflows: Any) -> None:
    document = """
tasks:
  - id: ok
    method: test/noop
    params: {value: 1}
    on_failure: alternative
    alternative_task: spare
  - id: spare
    method: test/noop
    params: {value: 2}
"""
    run = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert run.state == pb.RUN_STATE_COMPLETED
    assert states(run) == {"ok": "TASK_STATE_COMPLETED", "spare": "TASK_STATE_PENDING"}


async def test_a_failing_alternative_blocks_the_dependents_and_fails_the_run(
    workflows: Any,
) -> None:
    document = ALTERNATIVE.replace(
        "    method: test/noop\n    dependencies: [a]\n    params: {value: {x:",
        "    method: test/fail\n    dependencies: [a]\n    params: {x:",
    ).replace('"from the alternative"}}}', '"from the alternative"}}')
    run = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert states(run) == {
        "a": "TASK_STATE_COMPLETED",
        "b": "TASK_STATE_FAILED",
        "c": "TASK_STATE_COMPLETED",
        "d": "TASK_STATE_BLOCKED",
        "side": "TASK_STATE_COMPLETED",
        "b_alt": "TASK_STATE_FAILED",
    }
    assert run.state == pb.RUN_STATE_FAILED
    assert "'b_alt'" in tasks_by_id(run)["d"].error


async def test_a_hand_off_cut_short_is_finished_by_the_reconciler(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """The resolver died after recording b's final failure, before starting its alternative:
    the reconciler starts it (once), and the run ends as if nothing had happened."""
    first = await cluster.start("executor")  # registers the methods, then goes away
    first.terminate()
    resolver = await cluster.start("resolver")
    stub = await stub_for(resolver)
    document = """
tasks:
  - {id: a, method: test/ledger, params: {value: 1}}
  - {id: b, method: test/fail, dependencies: [a], on_failure: alternative, alternative_task: x}
  - {id: x, method: test/ledger, dependencies: [a], params: {value: 7, inputs: ["${a}"]}}
  - {id: d, method: test/ledger, dependencies: [b], params: {value: 100, inputs: ["${b}"]}}
"""
    run_id = (await submit(stub, document)).run_id
    await js.purge_stream(names.DISPATCH_STREAM)
    kv = await js.key_value(names.TASKS_BUCKET)
    long_ago = time.time() - 60  # older than the reconciler's threshold

    async def rewrite(task_id: str, **changes: Any) -> None:
        entry = await kv.get(names.task_key(run_id, task_id))
        record = TaskRecord.from_bytes(entry.value).evolve(**changes)
        await kv.update(names.task_key(run_id, task_id), record.to_bytes(), entry.revision)

    await rewrite("a", state=TaskState.COMPLETED, result=1, has_result=True, ended_at=long_ago)
    await rewrite(
        "b",
        settled_deps=bitmap_set("00", 0),
        state=TaskState.FAILED,
        attempt=1,
        error="b broke",
        dispatched_at=long_ago,
        ended_at=long_ago,
    )
    await cluster.start("executor")
    await cluster.start("monitor")
    done = await wait_done(stub, run_id, timeout=60)
    assert states(done) == {
        "a": "TASK_STATE_COMPLETED",
        "b": "TASK_STATE_FAILED",
        "x": "TASK_STATE_COMPLETED",
        "d": "TASK_STATE_COMPLETED",
    }
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    assert result(tasks["x"]) == 8 and result(tasks["d"]) == 108  # d read x's result for b
    assert len(cluster.starts("x")) == 1 and len(cluster.starts("a")) == 0
