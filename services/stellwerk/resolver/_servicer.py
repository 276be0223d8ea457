"""``stellwerk.workflow.v1.WorkflowService``: the resolver's gRPC face."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from stellwerk.core.breaker_book import breaker_to_proto
from stellwerk.core.convert import run_to_proto, spec_mapping_from_proto, task_to_proto, timestamp
from stellwerk.core.errors import InvalidArgumentError, Problem, WorkflowInvalidError, shorten
from stellwerk.core.records import RunState
from stellwerk.resolver._breakers import breakers_of_run, held_by_breakers
from stellwerk.resolver._checkpoints import checkpoint_to_proto
from stellwerk.resolver._explain import Explainer, Wait
from stellwerk.resolver._operator import Operator
from stellwerk.resolver._queries import RunReader
from stellwerk.resolver._stored import StoredResults
from stellwerk.resolver._submit import Submitter
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

__all__ = ["WorkflowServicer"]

_FORMATS = {"", "yaml", "yml", "json"}
_STATE_FILTER = {
    pb.RUN_STATE_UNSPECIFIED: "",
    pb.RUN_STATE_RUNNING: RunState.RUNNING.value,
    pb.RUN_STATE_COMPLETED: RunState.COMPLETED.value,
    pb.RUN_STATE_FAILED: RunState.FAILED.value,
    pb.RUN_STATE_CANCELLED: RunState.CANCELLED.value,
    pb.RUN_STATE_COMPENSATING: RunState.COMPENSATING.value,
    pb.RUN_STATE_COMPENSATED: RunState.COMPENSATED.value,
}
_TASK_STATE = {
    "PENDING": pb.TASK_STATE_PENDING,
    "DISPATCHED": pb.TASK_STATE_DISPATCHED,
    "COMPLETED": pb.TASK_STATE_COMPLETED,
    "FAILED": pb.TASK_STATE_FAILED,
    "BLOCKED": pb.TASK_STATE_BLOCKED,
    "SKIPPED": pb.TASK_STATE_SKIPPED,
    "CANCELLED": pb.TASK_STATE_CANCELLED,
}
_MAX_REQUEST_ID = 256
_MAX_TASK_IDS = 1000
_MAX_TASK_ID = 200  # the longest task id a workflow may have
_MAX_VALIDATION_BYTES = 1024 * 1024

Context = grpc.aio.ServicerContext[Any, Any]


def _source(request: Any) -> tuple[str | dict[str, Any], str | None]:
    which = request.WhichOneof("source")
    if which == "workflow":  # the contract says the format is ignored here
        return spec_mapping_from_proto(request.workflow), None
    fmt = request.document_format.lower()
    if fmt not in _FORMATS:
        raise InvalidArgumentError(
            problems=[
                Problem(
                    None,
                    "document_format",
                    f"must be 'yaml', 'json' or empty, not {shorten(request.document_format)}",
                )
            ]
        )
    if which == "document":
        if not request.document.strip():
            raise WorkflowInvalidError(problems=[Problem(None, "document", "is empty")])
        return request.document, ("yaml" if fmt == "yml" else fmt) or None
    raise InvalidArgumentError(
        problems=[Problem(None, "source", "give either 'workflow' or 'document'")]
    )


def _validation_response(problems: tuple[Problem, ...]) -> api.ValidateWorkflowResponse:
    """Every problem, as long as they fit well inside a stock client's 4 MiB receive limit
    (echoed values are already shortened, so that is thousands of problems); past that, one
    last problem says how many more there are."""
    response = api.ValidateWorkflowResponse()
    size = 0
    for shown, p in enumerate(problems):
        if size > _MAX_VALIDATION_BYTES:
            response.problems.add(
                field="problems", message=f"and {len(problems) - shown} more problems not listed"
            )
            break
        item = response.problems.add(task=p.task or "", field=p.field, message=p.message)
        size += item.ByteSize() + 4
    return response


def _check_request_id(request_id: str) -> None:
    if len(request_id) > _MAX_REQUEST_ID:
        raise InvalidArgumentError(
            problems=[Problem(None, "request_id", f"is longer than {_MAX_REQUEST_ID} characters")]
        )


def _check_text(field: str, value: str) -> None:
    if len(value) > _MAX_REQUEST_ID:
        raise InvalidArgumentError(
            problems=[Problem(None, field, f"is longer than {_MAX_REQUEST_ID} characters")]
        )


def _check_task_ids(task_ids: Sequence[str]) -> None:
    """``from_task_ids``: shapes no task id has (unknown ids are the restart's to name)."""
    if len(task_ids) > _MAX_TASK_IDS:
        raise InvalidArgumentError(
            problems=[Problem(None, "from_task_ids", f"more than {_MAX_TASK_IDS} task ids")]
        )
    problems = [
        Problem(None, f"from_task_ids[{i}]", f"is no task id: {shorten(t)}")
        for i, t in enumerate(task_ids)
        if not t or len(t) > _MAX_TASK_ID
    ]
    if problems:
        raise InvalidArgumentError(problems=problems)


class WorkflowServicer(api_grpc.WorkflowServiceServicer):
    """Submit, read and watch workflow runs."""

    def __init__(
        self,
        *,
        submitter: Callable[[], Submitter],
        reader: Callable[[], RunReader],
        explainer: Callable[[], Explainer],
        operator: Callable[[], Operator],
        stored_results: Callable[[], StoredResults] | None = None,
    ) -> None:
        # Callables, because the parts exist only once NATS is connected; before that they raise
        # UnavailableError, which the interceptor maps to UNAVAILABLE.
        self._submitter = submitter
        self._reader = reader
        self._explainer = explainer
        self._operator = operator
        self._stored_results = stored_results  # GetRun reads results stored out of line

    async def StartRun(
        self, request: api.StartRunRequest, context: Context
    ) -> api.StartRunResponse:
        _check_request_id(request.request_id)
        source, fmt = _source(request)
        submitter = self._submitter()
        spec = await submitter.validate(
            source, document_format=fmt, allow_unregistered=request.allow_unregistered_methods
        )
        run = await submitter.submit(spec, request_id=request.request_id)
        return api.StartRunResponse(run=run_to_proto(run))

    async def ValidateWorkflow(
        self, request: api.ValidateWorkflowRequest, context: Context
    ) -> api.ValidateWorkflowResponse:
        source, fmt = _source(request)
        try:
            spec = await self._submitter().validate(
                source, document_format=fmt, allow_unregistered=request.allow_unregistered_methods
            )
        except WorkflowInvalidError as exc:
            return _validation_response(exc.problems)
        return api.ValidateWorkflowResponse(task_count=len(spec.tasks))

    async def GetRun(self, request: api.GetRunRequest, context: Context) -> api.GetRunResponse:
        reader = self._reader()
        run = await reader.header(request.run_id)
        full = request.view != pb.RUN_VIEW_BASIC
        tasks = await reader.tasks(run.id, as_of=run) if full else None
        message = run_to_proto(run, tasks)
        if tasks and self._stored_results is not None:
            await self._stored_results().inline(message, tasks)
        if tasks is not None:  # the breakers that concern it (full view only)
            for breaker in await breakers_of_run(reader.runs_kv, run.id, tasks):
                message.breakers.append(breaker_to_proto(breaker, time.time()))
        return api.GetRunResponse(run=message)

    async def ListRuns(
        self, request: api.ListRunsRequest, context: Context
    ) -> api.ListRunsResponse:
        state = _STATE_FILTER.get(request.state)
        if state is None:
            raise InvalidArgumentError(
                problems=[Problem(None, "state", f"unknown state {request.state}")]
            )
        runs, token = await self._reader().list(
            page_size=request.page_size, page_token=request.page_token, state=state
        )
        return api.ListRunsResponse(runs=[run_to_proto(r) for r in runs], next_page_token=token)

    async def WatchRun(
        self, request: api.WatchRunRequest, context: Context
    ) -> AsyncIterator[api.WatchRunResponse]:
        header, header_proto = None, None
        async for change in self._reader().watch(request.run_id):
            if change.run is not header:  # the header rarely changes: convert it once each time
                header, header_proto = change.run, run_to_proto(change.run)
            response = api.WatchRunResponse(run=header_proto)
            if change.task is not None:
                response.task.CopyFrom(task_to_proto(change.task))
            yield response

    async def ExplainRun(
        self, request: api.ExplainRunRequest, context: Context
    ) -> api.ExplainRunResponse:
        reader = self._reader()
        run = await reader.header(request.run_id)
        tasks = await reader.tasks(run.id, as_of=run)
        breakers = await breakers_of_run(reader.runs_kv, run.id, tasks)
        explained = held_by_breakers(await self._explainer()(run, tasks), tasks, breakers)
        response = api.ExplainRunResponse(run=run_to_proto(run))
        response.breakers.extend(breaker_to_proto(b, time.time()) for b in breakers)
        for item in explained:
            entry = response.tasks.add(
                task_id=item.task_id,
                state=pb.TASK_STATE_RETRY_WAIT
                if item.reason is Wait.RETRY
                else _TASK_STATE[item.state.value],
                reason=api.WaitReason.Value(f"WAIT_REASON_{item.reason.value}"),
                summary=item.summary,
                waiting_for=item.waiting_for,
                executor_id=item.executor_id,
                queue_position=item.queue_position,
            )
            if (since := timestamp(item.since)) is not None:
                entry.since_time.CopyFrom(since)
            if (until := timestamp(item.until)) is not None:
                entry.until_time.CopyFrom(until)
        return response

    async def CancelRun(
        self, request: api.CancelRunRequest, context: Context
    ) -> api.CancelRunResponse:
        _check_request_id(request.request_id)  # idempotent by itself: the id is not needed
        run = await self._operator().cancel(request.run_id)
        return api.CancelRunResponse(run=run_to_proto(run))

    async def RetryRun(
        self, request: api.RetryRunRequest, context: Context
    ) -> api.RetryRunResponse:
        _check_request_id(request.request_id)
        _check_task_ids(request.from_task_ids)
        run = await self._operator().retry(
            request.run_id, list(request.from_task_ids), request_id=request.request_id
        )
        return api.RetryRunResponse(run=run_to_proto(run))

    async def CreateCheckpoint(
        self, request: api.CreateCheckpointRequest, context: Context
    ) -> api.CreateCheckpointResponse:
        _check_request_id(request.request_id)
        _check_text("label", request.label)
        info = await self._operator().checkpoint(
            request.run_id, label=request.label, request_id=request.request_id
        )
        return api.CreateCheckpointResponse(checkpoint=checkpoint_to_proto(info))

    async def ListCheckpoints(
        self, request: api.ListCheckpointsRequest, context: Context
    ) -> api.ListCheckpointsResponse:
        found = await self._operator().checkpoints(request.run_id)
        return api.ListCheckpointsResponse(checkpoints=[checkpoint_to_proto(i) for i in found])

    async def RestoreCheckpoint(
        self, request: api.RestoreCheckpointRequest, context: Context
    ) -> api.RestoreCheckpointResponse:
        _check_request_id(request.request_id)
        run = await self._operator().restore(request.checkpoint_id, request_id=request.request_id)
        return api.RestoreCheckpointResponse(run=run_to_proto(run))
