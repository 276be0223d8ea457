"""``Client``: submit workflows to the resolver, read and follow their runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

from ._channel import RetryConfig, check_timeout
from ._inspection import HealthReport, RunExplanation
from ._operations import OperatorCalls
from ._types import Run, RunChange, RunState, TaskRun, Validation
from .errors import InvalidArgumentError, Problem, UnavailableError
from .model import WorkflowSpec
from .wire import error_from_rpc

__all__ = ["WATCH_SEGMENT", "Client", "RunPage", "Workflow"]

WATCH_SEGMENT = 60.0
"""Longest single watch stream inside :meth:`Client.watch`, in seconds.

A stream whose connection dies silently would otherwise hang forever; renewing it costs one
message (the first message of a watch always carries the current state).
"""

Workflow = str | Path | WorkflowSpec
"""A workflow to submit or validate: its text (YAML or JSON), a file, or a spec built in code
(:class:`~stellwerk_client.WorkflowBuilder`, :func:`~stellwerk_client.model.load_workflow`)."""

_RECONNECT_WINDOW = 30.0
# A watch stream that breaks (its server restarted, a connection reset) is reopened; these are
# the codes of a break, not of an answer.
_BROKEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)
_Request = TypeVar("_Request", api.StartRunRequest, api.ValidateWorkflowRequest)


def _with_source(request: _Request, workflow: Workflow, document_format: str) -> _Request:
    if isinstance(workflow, WorkflowSpec):
        request.workflow.CopyFrom(workflow.to_proto())
        return request
    if isinstance(workflow, Path):
        try:
            text = workflow.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            message = f"cannot read {workflow}: {getattr(error, 'strerror', None) or error}"
            raise InvalidArgumentError(problems=[Problem(None, "path", message)]) from None
        if not document_format:
            document_format = "json" if workflow.suffix.lower() == ".json" else "yaml"
        workflow = text
    if not isinstance(workflow, str):
        message = f"expected document text, a Path or a WorkflowSpec, got {type(workflow).__name__}"
        raise InvalidArgumentError(problems=[Problem(None, "workflow", message)])
    request.document = workflow
    request.document_format = document_format
    return request


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of :meth:`Client.list_page`: runs newest first, and the next page's token
    (``""`` on the last page)."""

    runs: tuple[Run, ...]
    next_page_token: str


class Client(OperatorCalls):
    """Async client of the resolver's ``WorkflowService``.

    ``client = await Client.connect("127.0.0.1:50051")`` (or ``async with await
    Client.connect() as client``). Every call has a deadline (the client's ``timeout`` unless
    the call names one); calls that fail with UNAVAILABLE are retried (:class:`RetryConfig`),
    nothing else is; every failure is raised from :mod:`stellwerk_client.errors` — invalid input
    as ``InvalidArgumentError`` carrying every ``Problem`` of the ``BadRequest``. Results are
    :class:`Run`, :class:`TaskRun`, :class:`RunChange` and :class:`Validation` values.

    A client belongs to the event loop it was connected in (gRPC's rule); use
    :class:`SyncClient` from code without one.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        timeout: float,
        retry: RetryConfig | None = None,
    ) -> None:
        super().__init__(channel, address, timeout, retry)
        self._stub = api_grpc.WorkflowServiceStub(channel)
        # The resolver answers the monitor's API too: one address serves every call.
        self._monitor = mon_grpc.MonitorServiceStub(channel)

    async def submit(
        self,
        workflow: Workflow,
        *,
        document_format: str = "",
        request_id: str | None = None,
        allow_unregistered: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Run:
        """Start a new run of ``workflow``; returns it as just created (RUNNING, no tasks).

        Args:
            workflow: document text (``document_format`` ``"yaml"``, ``"json"`` or ``""`` to
                detect), a file path, or a :class:`WorkflowSpec`.
            request_id: idempotency key: a repeat returns the run the first submit created.
                Default: a fresh one, so that retries of this call start one run only.
            allow_unregistered: accept methods no executor has registered (yet).
            timeout: deadline of the call in seconds (default: the client's).

        Raises ``WorkflowInvalidError`` listing every problem if the workflow is invalid.
        """
        request = _with_source(
            api.StartRunRequest(
                request_id=request_id or uuid.uuid4().hex,
                allow_unregistered_methods=allow_unregistered,
            ),
            workflow,
            document_format,
        )
        response = await self._unary(lambda t: self._stub.StartRun(request, timeout=t), timeout)
        return Run.from_proto(response.run)

    async def get(
        self,
        run_id: str,
        *,
        tasks: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Run:
        """One run, with its tasks unless ``tasks=False``; ``NotFoundError`` if there is none."""
        view = pb.RUN_VIEW_FULL if tasks else pb.RUN_VIEW_BASIC
        request = api.GetRunRequest(run_id=run_id, view=view)
        response = await self._unary(lambda t: self._stub.GetRun(request, timeout=t), timeout)
        return Run.from_proto(response.run)

    async def list_page(
        self,
        *,
        state: RunState | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> RunPage:
        """One page of runs, newest first, without their tasks (``page_size`` 0: the server's
        default)."""
        request = api.ListRunsRequest(
            page_size=page_size,
            page_token=page_token,
            state=state.to_proto() if state is not None else pb.RUN_STATE_UNSPECIFIED,
        )
        response = await self._unary(lambda t: self._stub.ListRuns(request, timeout=t), timeout)
        runs = tuple(Run.from_proto(run) for run in response.runs)
        return RunPage(runs, response.next_page_token)

    async def list(
        self,
        *,
        state: RunState | None = None,
        page_size: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 -- each page's gRPC deadline
    ) -> AsyncIterator[Run]:
        """Every run, newest first, without tasks: ``async for run in client.list(): ...``.

        Pages are fetched as the iteration reaches them.
        """
        token = ""
        while True:
            page = await self.list_page(
                state=state, page_size=page_size, page_token=token, timeout=timeout
            )
            for run in page.runs:
                yield run
            token = page.next_page_token
            if not token:
                return

    async def cancel(
        self,
        run_id: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Run:
        """Cancel a running run: nothing more of it is dispatched or started, its running
        handlers are cancelled, its unfinished tasks become CANCELLED. Idempotent (a cancelled
        run is returned as it is). Returns the run (CANCELLED, without tasks).

        Raises ``NotFoundError`` if there is no such run, ``WrongStateError`` if it ended
        COMPLETED or FAILED."""
        request = api.CancelRunRequest(run_id=run_id, request_id=request_id or uuid.uuid4().hex)
        response = await self._unary(lambda t: self._stub.CancelRun(request, timeout=t), timeout)
        return Run.from_proto(response.run)

    async def explain(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> RunExplanation:
        """For each task of the run that has not ended, what it waits for (its dependencies, its
        queue, the executor holding its claim and until when, the failed task blocking it)."""
        request = api.ExplainRunRequest(run_id=run_id)
        response = await self._unary(lambda t: self._stub.ExplainRun(request, timeout=t), timeout)
        return RunExplanation.from_proto(response)

    async def health(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> HealthReport:
        """The installation's health checks (progress, queue depth, consistency)."""
        request = mon.GetHealthReportRequest()
        response = await self._unary(
            lambda t: self._monitor.GetHealthReport(request, timeout=t), timeout
        )
        return HealthReport.from_proto(response)

    async def validate(
        self,
        workflow: Workflow,
        *,
        document_format: str = "",
        allow_unregistered: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Validation:
        """Every problem the resolver finds in ``workflow``, methods against its executors'
        registrations included (``allow_unregistered`` skips that); it starts nothing."""
        request = _with_source(
            api.ValidateWorkflowRequest(allow_unregistered_methods=allow_unregistered),
            workflow,
            document_format,
        )
        response = await self._unary(
            lambda t: self._stub.ValidateWorkflow(request, timeout=t), timeout
        )
        problems = tuple(Problem(p.task or None, p.field, p.message) for p in response.problems)
        return Validation(problems, response.task_count)

    async def watch(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- spans several streams and reconnects
        reconnect_window: float = _RECONNECT_WINDOW,
    ) -> AsyncIterator[RunChange]:
        """Follow a run until it ends: first its current state, then one item per change.

        The watch stream is renewed every :data:`WATCH_SEGMENT` seconds and reopened when it
        breaks; after a reopen the first item repeats the current state, so a task's state may
        be seen twice. Ends after the item that shows the run finished. Raises
        ``TimeoutError`` when ``timeout`` seconds pass while the run is still RUNNING (the run
        goes on), ``NotFoundError`` for an unknown run, and ``UnavailableError`` when no stream
        could be opened for ``reconnect_window`` seconds in a row.
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
            stream = self._stub.WatchRun(
                api.WatchRunRequest(run_id=run_id), timeout=check_timeout(segment)
            )
            # None after a clean end of stream before the run ended (e.g. a server shutting down).
            failure: grpc.aio.AioRpcError | None = None
            ended = False
            try:
                async for item in stream:
                    broken_since, delay = None, 0.1
                    change = RunChange(
                        Run.from_proto(item.run),
                        TaskRun.from_proto(item.task) if item.HasField("task") else None,
                    )
                    yield change
                    # The stream's last message carries no task: changes that trail the
                    # run's end (its last tasks) come before it, with the ended run.
                    ended = change.run.finished
                    if ended and change.task is None:
                        return
                if ended:  # a server that ends the stream right after a task change
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
            await asyncio.sleep(pause)  # backoff before reopening a broken stream
            delay = min(delay * 2, 2.0)

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- spans several streams and reconnects
    ) -> Run:
        """Follow a run until it has ended and return it with every task.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the run goes on).
        """
        async for _ in self.watch(run_id, timeout=timeout):
            pass
        return await self.get(run_id, tasks=True)

    async def run(
        self,
        workflow: Workflow,
        *,
        request_id: str | None = None,
        allow_unregistered: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 -- how long to wait for the run's end
    ) -> Run:
        """Submit ``workflow`` and wait for its run to end (:meth:`submit` + :meth:`wait`)."""
        started = await self.submit(
            workflow, request_id=request_id, allow_unregistered=allow_unregistered
        )
        return await self.wait(started.run_id, timeout=timeout)
