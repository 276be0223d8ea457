"""Small helpers for end-to-end tests: submit, wait, read results."""

from __future__ import annotations

import json
from typing import Any

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from tests.support.polling import eventually

TERMINAL = (pb.WORKFLOW_STATE_COMPLETED, pb.WORKFLOW_STATE_FAILED)


async def submit(stub: Any, document: str, **kwargs: Any) -> pb.WorkflowRun:
    reply = await stub.SubmitWorkflow(
        api.SubmitWorkflowRequest(document=document, **kwargs), timeout=30
    )
    return reply.workflow


async def wait_done(stub: Any, run_id: str, *, timeout: float = 60.0) -> pb.WorkflowRun:
    async def probe() -> bool:
        request = api.GetWorkflowRequest(id=run_id, view=pb.WORKFLOW_VIEW_BASIC)
        reply = await stub.GetWorkflow(request, timeout=30)
        return reply.workflow.state in TERMINAL

    await eventually(probe, timeout=timeout, interval=0.02, message=f"run {run_id} finished")
    reply = await stub.GetWorkflow(api.GetWorkflowRequest(id=run_id), timeout=60)
    return reply.workflow


def tasks_by_id(run: pb.WorkflowRun) -> dict[str, pb.TaskRun]:
    return {t.task_id: t for t in run.tasks}


def result(task: pb.TaskRun) -> Any:
    return json.loads(task.result_json) if task.result_json else None
