"""python/execute end to end: the Gleitzeit-style python example runs through the stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done

ROOT = Path(__file__).resolve().parents[2]


async def test_python_only_example_passes_data_through_context(workflows: Any) -> None:
    run = await submit(workflows, (ROOT / "examples" / "python_only_workflow.yaml").read_text())
    done = await wait_done(workflows, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done
    tasks = tasks_by_id(done)
    numbers = result(tasks["generate_data"])["result"]["numbers"]
    total = result(tasks["calculate_sum"])["result"]
    assert total["sum"] == sum(numbers) and total["input_count"] == len(numbers)
    assert result(tasks["format_report"])["success"] is True


async def test_script_outside_the_allowed_dirs_fails_the_task(workflows: Any) -> None:
    document = "tasks: [{id: a, method: python/execute, params: {file: ../../../etc/passwd}}]"
    done = await wait_done(workflows, (await submit(workflows, document)).run_id)
    assert done.state == pb.RUN_STATE_FAILED
    assert "outside the allowed" in tasks_by_id(done)["a"].error
