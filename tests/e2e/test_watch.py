"""WatchRun against a live stack: what a watch sends (coalesced, nothing a client cannot see)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.e2e.helpers import submit

WIDTH = 24


def _fan_in() -> str:
    """``src`` -> WIDTH parallel adds -> ``join``, which depends on all of them."""
    tasks: list[dict[str, Any]] = [
        {"id": "src", "method": "mcp/tool.add", "params": {"a": 1, "b": 1}}
    ]
    middle = [f"m{i}" for i in range(WIDTH)]
    tasks += [
        {
            "id": m,
            "method": "mcp/tool.add",
            "params": {"a": "${src.result}", "b": i},
            "dependencies": ["src"],
        }
        for i, m in enumerate(middle)
    ]
    tasks.append(
        {
            "id": "join",
            "method": "mcp/tool.echo",
            "params": {"message": "done"},
            "dependencies": middle,
        }
    )
    return json.dumps({"name": "fan-in", "tasks": tasks})


async def test_a_watch_sends_each_visible_change_once_and_ends_with_every_end_state(
    workflows: Any,
) -> None:
    run = await submit(workflows, _fan_in(), document_format="json")
    sent: dict[str, list[int]] = {}
    last: Any = None
    async for change in workflows.WatchRun(api.WatchRunRequest(run_id=run.run_id), timeout=60):
        last = change
        if change.HasField("task"):
            sent.setdefault(change.task.task_id, []).append(change.task.state)
    assert last is not None and last.run.state == pb.RUN_STATE_COMPLETED
    assert not last.HasField("task")  # the stream's last message carries the ended run only
    assert set(sent) == {"src", "join", *(f"m{i}" for i in range(WIDTH))}
    assert all(states[-1] == pb.TASK_STATE_COMPLETED for states in sent.values()), sent
    # The join's dependency bits are set by several writes while it is PENDING; a client sees
    # nothing of them, so none is sent: no task shows the same state twice in a row.
    for task_id, states in sent.items():
        repeats = [a for a, b in itertools.pairwise(states) if a == b]
        assert not repeats, f"{task_id} sent {[pb.TaskState.Name(s) for s in states]}"
