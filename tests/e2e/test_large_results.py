"""A result too large to store fails its task, naming the cap, instead of stalling the run
(issue 8, class 7). The suite's server allows 8 MiB messages, so the cap is core/limits'
``MAX_RESULT`` (512 KiB), below the 1,000,000-character parameters it accepts."""

from __future__ import annotations

import json
from typing import Any

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.e2e.helpers import submit, tasks_by_id, wait_done


async def test_echo_of_a_million_characters_fails_naming_the_result_cap(workflows: Any) -> None:
    document = json.dumps({"name": "echo-big", "tasks": [
        {"id": "echo", "method": "mcp/tool.echo", "params": {"message": "x" * 1_000_000}},
        {"id": "after", "method": "mcp/tool.echo", "dependencies": ["echo"],
         "params": {"message": "${echo.response}"}},
    ]})  # fmt: skip
    run = await submit(workflows, document, document_format="json")
    done = await wait_done(workflows, run.run_id, timeout=60)
    assert done.state == pb.RUN_STATE_FAILED, done.error
    tasks = tasks_by_id(done)
    assert tasks["echo"].state == pb.TASK_STATE_FAILED
    error = tasks["echo"].error
    assert error.startswith("the result is 1,0"), error
    assert error.endswith("bytes; this deployment stores at most 524,288 bytes per task result")
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED
