"""Small helpers for end-to-end tests: submit, wait, read results."""

from __future__ import annotations

import json
from typing import Any

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.support.polling import eventually

TERMINAL = (
    pb.RUN_STATE_COMPLETED,
    pb.RUN_STATE_FAILED,
    pb.RUN_STATE_CANCELLED,
    pb.RUN_STATE_COMPENSATED,
)


async def submit(stub: Any, document: str, **kwargs: Any) -> pb.Run:
    reply = await stub.StartRun(api.StartRunRequest(document=document, **kwargs), timeout=30)
    return reply.run


async def wait_done(stub: Any, run_id: str, *, timeout: float = 60.0) -> pb.Run:
    async def probe() -> bool:
        request = api.GetRunRequest(run_id=run_id, view=pb.RUN_VIEW_BASIC)
        reply = await stub.GetRun(request, timeout=30)
        return reply.run.state in TERMINAL

    await eventually(probe, timeout=timeout, interval=0.02, message=f"run {run_id} finished")
    reply = await stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=60)
    return reply.run


def tasks_by_id(run: pb.Run) -> dict[str, pb.TaskRun]:
    return {t.task_id: t for t in run.tasks}


def result(task: pb.TaskRun) -> Any:
    return json.loads(task.result_json) if task.result_json else None
