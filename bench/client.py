"""The WorkflowService calls the benchmark's workloads make, and its workflow files."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench import shapes
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc

__all__ = ["METHOD", "RPC_TIMEOUT", "Client", "document"]

METHOD = "bench/noop"
TERMINAL = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED)
RPC_TIMEOUT = 120.0


def document(
    name: str, nodes: list[shapes.Node], params: dict[str, dict[str, Any]] | None = None
) -> str:
    """A workflow file (JSON) of ``nodes``; ``params`` gives (method, params) overrides."""
    tasks = []
    for node in nodes:
        task: dict[str, Any] = {"id": node.id, "method": METHOD}
        if params and node.id in params:
            task.update(params[node.id])
        if node.deps:
            task["dependencies"] = list(node.deps)
        tasks.append(task)
    return json.dumps({"name": name, "tasks": tasks})


def _seconds(ts: Any) -> float:
    return float(ts.ToNanoseconds()) / 1e9


class Client:
    """The WorkflowService calls the workloads need."""

    def __init__(self, stub: wf_grpc.WorkflowServiceAsyncStub) -> None:
        self.stub = stub

    async def submit(self, doc: str, *, skip_method_check: bool = False) -> str:
        request = api.StartRunRequest(
            document=doc, document_format="json", allow_unregistered_methods=skip_method_check
        )
        reply = await self.stub.StartRun(request, timeout=RPC_TIMEOUT)
        return str(reply.run.run_id)

    async def ended(self, run_id: str, *, within: float, interval: float) -> float:
        """Poll until the run ends; returns its ``end_time`` (epoch seconds)."""
        deadline = time.monotonic() + within
        request = api.GetRunRequest(run_id=run_id, view=pb.RUN_VIEW_BASIC)
        while True:
            run = (await self.stub.GetRun(request, timeout=RPC_TIMEOUT)).run
            if run.state in TERMINAL:
                if run.state != pb.RUN_STATE_COMPLETED:
                    raise RuntimeError(f"run {run_id} ended {pb.RunState.Name(run.state)}")
                return _seconds(run.end_time)
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still running after {within} s")
            await asyncio.sleep(interval)

    async def all_ended(self, run_ids: list[str], *, within: float = 600.0) -> float:
        """The latest ``end_time`` of ``run_ids``, asking about one run at a time."""
        deadline = time.monotonic() + within
        last = 0.0
        for run_id in run_ids:
            left = max(1.0, deadline - time.monotonic())
            last = max(last, await self.ended(run_id, within=left, interval=0.1))
        return last
