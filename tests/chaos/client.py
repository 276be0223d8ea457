"""Talking to the resolvers while they die: every call fails over to the next resolver and is
retried until its deadline; submits carry a ``request_id`` so a retry cannot create a second run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import grpc

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as rpc

__all__ = ["Resolvers"]

_FATAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


class Resolvers:
    """gRPC stubs of every resolver slot (fixed addresses, so they survive restarts)."""

    def __init__(self, addresses: list[str]) -> None:
        self._channels = [grpc.aio.insecure_channel(a) for a in addresses]
        self._stubs: list[Any] = [rpc.WorkflowServiceStub(c) for c in self._channels]
        self._turn = itertools.cycle(range(len(self._stubs)))
        self.retries = 0
        self.last_errors: list[str] = []

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels:
            await channel.close(None)

    async def call(self, method: str, request: Any, *, deadline: float, timeout: float = 10) -> Any:
        """``method`` on the next resolver, failing over until ``deadline`` (monotonic)."""
        delay = 0.1
        while True:
            stub = self._stubs[next(self._turn)]
            try:
                return await getattr(stub, method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _FATAL or time.monotonic() > deadline:
                    raise
                self.retries += 1
                self.last_errors = [*self.last_errors[-9:], f"{exc.code().name}: {exc.details()}"]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def submit(self, document: str, request_id: str, *, deadline: float) -> pb.Run:
        """Submit (idempotently, by ``request_id``) and return the run."""
        request = api.StartRunRequest(
            document=document,
            document_format="json",
            request_id=request_id,
            allow_unregistered_methods=True,  # every executor may be dead at this moment
        )
        reply = await self.call("StartRun", request, deadline=deadline, timeout=15)
        run: pb.Run = reply.run
        return run

    async def cancel(self, run_id: str, *, deadline: float) -> pb.Run | None:
        """Cancel the run (idempotent); ``None`` if it had ended before (FAILED_PRECONDITION)."""
        request = api.CancelRunRequest(run_id=run_id, request_id=f"cancel-{run_id}")
        try:
            reply = await self.call("CancelRun", request, deadline=deadline, timeout=15)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return None
            raise
        run: pb.Run = reply.run
        return run

    async def get(self, run_id: str, *, full: bool = True, within: float = 60) -> pb.Run:
        """The run (with its tasks when ``full``)."""
        view = pb.RUN_VIEW_FULL if full else pb.RUN_VIEW_BASIC
        request = api.GetRunRequest(run_id=run_id, view=view)
        reply = await self.call("GetRun", request, deadline=time.monotonic() + within)
        run: pb.Run = reply.run
        return run

    async def count_runs(self, *, within: float = 60) -> int:
        """How many runs exist (all pages of ListRuns)."""
        total, token = 0, ""
        deadline = time.monotonic() + within
        while True:
            request = api.ListRunsRequest(page_size=500, page_token=token)
            reply = await self.call("ListRuns", request, deadline=deadline)
            total += len(reply.runs)
            token = reply.next_page_token
            if not token:
                return total
