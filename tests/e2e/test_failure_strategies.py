"""Failure strategies (``on_failure``) end to end on a small diamond, services as processes
against a real nats-server: ``a`` → ``b``, ``c`` → ``d``, where ``b`` fails for good."""

from __future__ import annotations

from typing import Any

import pytest

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done

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
