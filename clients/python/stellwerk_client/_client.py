"""``WorkflowClient``: submit workflows to the resolver and follow their runs."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

from ._channel import BaseClient, call, check_timeout
from .errors import InvalidArgumentError, Problem, UnavailableError
from .wire import error_from_rpc

__all__ = ["WATCH_SEGMENT", "WorkflowClient"]

WATCH_SEGMENT = 60.0
"""Longest single watch stream inside :meth:`WorkflowClient.follow`, in seconds.

A stream whose connection dies silently would otherwise hang forever; renewing it costs one
message (the first message of a watch always carries the current state).
"""

_RECONNECT_WINDOW = 30.0
_BROKEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)
_Request = TypeVar("_Request", api.StartRunRequest, api.ValidateWorkflowRequest)


def _with_source(
    request: _Request,
    document: str | None,
    workflow: pb.WorkflowSpec | None,
    document_format: str,
) -> _Request:
    if (document is None) == (workflow is None):
        message = "give either a document or a workflow, not both"
        raise InvalidArgumentError(problems=[Problem(None, "source", message)])
    if document is not None:
        request.document = document
        request.document_format = document_format
    elif workflow is not None:
        request.workflow.CopyFrom(workflow)
    return request


class WorkflowClient(BaseClient):
    """Async client of the resolver's ``WorkflowService``.

    ``await WorkflowClient.connect(address)`` or ``async with await WorkflowClient.connect()``.
    Every unary call has a deadline (the client's ``timeout``); every failure is raised as a
    domain error from ``stellwerk_client.errors`` (``UnavailableError`` when the resolver or its
    NATS cannot be reached).
    """

    def __init__(self, channel: grpc.aio.Channel, address: str, timeout: float) -> None:
        super().__init__(channel, address, timeout)
        self._stub = api_grpc.WorkflowServiceStub(channel)

    async def submit(
        self,
        document: str | None = None,
        *,
        workflow: pb.WorkflowSpec | None = None,
        document_format: str = "",
        request_id: str = "",
        allow_unregistered: bool = False,
    ) -> pb.Run:
        """Start a new run of a workflow given as file text (``document``) or as a spec.

        ``document_format`` is ``"yaml"``, ``"json"`` or ``""`` (detect). A repeated
        ``request_id`` returns the run its first submit created. Raises
        ``WorkflowInvalidError`` listing every problem if the workflow is invalid.
        """
        request = _with_source(
            api.StartRunRequest(
                request_id=request_id, allow_unregistered_methods=allow_unregistered
            ),
            document,
            workflow,
            document_format,
        )
        response = await call(self._stub.StartRun(request, timeout=self.timeout))
        return response.run

    async def get(self, run_id: str, *, full: bool = True) -> pb.Run:
        """One run, with its tasks unless ``full=False``; ``NotFoundError`` if there is none."""
        view = pb.RUN_VIEW_FULL if full else pb.RUN_VIEW_BASIC
        request = api.GetRunRequest(run_id=run_id, view=view)
        response = await call(self._stub.GetRun(request, timeout=self.timeout))
        return response.run

    async def list(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        state: pb.RunState.ValueType = pb.RUN_STATE_UNSPECIFIED,
    ) -> tuple[builtins.list[pb.Run], str]:
        """One page of runs (newest first, without tasks) and the token of the next page."""
        request = api.ListRunsRequest(page_size=page_size, page_token=page_token, state=state)
        response = await call(self._stub.ListRuns(request, timeout=self.timeout))
        return builtins.list(response.runs), response.next_page_token

    async def validate(
        self,
        document: str | None = None,
        *,
        workflow: pb.WorkflowSpec | None = None,
        document_format: str = "",
        allow_unregistered: bool = False,
    ) -> builtins.list[Problem]:
        """Every problem the resolver finds in a workflow (methods included); empty = valid."""
        request = _with_source(
            api.ValidateWorkflowRequest(allow_unregistered_methods=allow_unregistered),
            document,
            workflow,
            document_format,
        )
        response = await call(self._stub.ValidateWorkflow(request, timeout=self.timeout))
        return [Problem(p.task or None, p.field, p.message) for p in response.problems]

    async def watch(
        self,
        run_id: str,
        *,
        timeout: float = WATCH_SEGMENT,  # noqa: ASYNC109 -- becomes the stream's gRPC deadline
    ) -> AsyncIterator[api.WatchRunResponse]:
        """One watch stream: the run's current state, then one message per change.

        Ends when the run is COMPLETED or FAILED. ``timeout`` is the stream's deadline; when
        it passes the stream fails with ``UnavailableError`` (see :meth:`follow`, which
        renews streams and survives broken connections).
        """
        stream = self._stub.WatchRun(
            api.WatchRunRequest(run_id=run_id), timeout=check_timeout(timeout)
        )
        try:
            async for item in stream:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            stream.cancel()

    async def follow(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- spans several streams and reconnects
        reconnect_window: float = _RECONNECT_WINDOW,
    ) -> AsyncIterator[api.WatchRunResponse]:
        """Watch a run until it ends, renewing the stream whenever it breaks or expires.

        After a reconnect the first message repeats the current state, so a consumer may see
        a state twice. Raises ``TimeoutError`` when ``timeout`` seconds pass while the run is
        still RUNNING, and ``UnavailableError`` when no stream could be opened for
        ``reconnect_window`` seconds in a row.
        """
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + max(0.0, timeout)
        broken_since: float | None = None
        delay = 0.1
        while True:
            remaining = None if end is None else end - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"run {run_id!r} still running after {timeout} s")
            segment = WATCH_SEGMENT if remaining is None else min(remaining, WATCH_SEGMENT)
            stream = self._stub.WatchRun(api.WatchRunRequest(run_id=run_id), timeout=segment)
            # None after a clean end of stream before the run ended (e.g. a server shutting down).
            failure: grpc.aio.AioRpcError | None = None
            try:
                async for item in stream:
                    broken_since, delay = None, 0.1
                    yield item
                    if item.run.state != pb.RUN_STATE_RUNNING:
                        return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the segment ended; the loop head decides about the timeout
                if exc.code() not in _BROKEN:
                    raise error_from_rpc(exc) from exc
                failure = exc
            finally:
                stream.cancel()
            now = loop.time()
            broken_since = now if broken_since is None else broken_since
            if now - broken_since >= reconnect_window:
                if failure is not None:
                    raise error_from_rpc(failure) from failure
                raise UnavailableError(f"the watch of run {run_id!r} keeps ending early")
            pause = delay if end is None else min(delay, max(0.0, end - now))
            await asyncio.sleep(pause)
            delay = min(delay * 2, 2.0)

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- spans several streams and reconnects
    ) -> pb.Run:
        """Follow a run until it is no longer RUNNING and return it with every task.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the run goes on).
        """
        async for _ in self.follow(run_id, timeout=timeout):
            pass
        return await self.get(run_id, full=True)
