"""``stellwerk.execution.v1.ExecutorService``: what this executor runs and how it is doing.

The methods are its own (the method table) and those its connected task workers serve right
now (``WorkerHub.infos``, kind REMOTE); the two never share a name (a worker cannot register a
method of the table).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from stellwerk.core.convert import timestamp
from stellwerk.core.errors import InvalidArgumentError, Problem
from stellwerk.executor._workers import is_method_name
from stellwerk.executor.methods import MethodInfo, MethodKind, MethodTable
from stellwerk_api.execution.v1 import executor_service_pb2 as api
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as api_grpc

__all__ = ["ExecutorServicer"]

_KINDS = {
    MethodKind.BUILTIN: api.METHOD_KIND_BUILTIN,
    MethodKind.HANDLER: api.METHOD_KIND_HANDLER,
    MethodKind.SCRIPT: api.METHOD_KIND_SCRIPT,
    MethodKind.REMOTE: api.METHOD_KIND_REMOTE,
}
_DEFAULT_PAGE = 100
_MAX_PAGE = 1000

Context = grpc.aio.ServicerContext[Any, Any]


class ExecutorServicer(api_grpc.ExecutorServiceServicer):
    """Reports this executor's methods and load."""

    def __init__(
        self,
        *,
        executor_id: str,
        table: MethodTable,
        concurrency: int,
        started_at: float,
        counters: Callable[[], tuple[int, int, int]],
        remote: Callable[[], list[MethodInfo]] = list,
    ) -> None:
        self._id = executor_id
        self._table = table
        self._remote = remote
        self._concurrency = concurrency
        self._started_at = started_at
        self._counters = counters

    async def ListMethods(
        self, request: api.ListMethodsRequest, context: Context
    ) -> api.ListMethodsResponse:
        if request.page_size < 0:
            raise InvalidArgumentError(
                problems=[Problem(None, "page_size", "must not be negative")]
            )
        size = min(request.page_size or _DEFAULT_PAGE, _MAX_PAGE)
        infos = self._infos()
        names = [i.name for i in infos]
        start = 0
        if request.page_token:
            # The token is the last name of the previous page. A remote method may have left
            # since (its workers disconnected): then the page starts after where it was.
            token = request.page_token
            if token not in names and not is_method_name(token):
                raise InvalidArgumentError(
                    problems=[Problem(None, "page_token", "is not a token this server issued")]
                )
            start = bisect.bisect_right(names, token)
        page = infos[start : start + size]
        more = start + size < len(infos)
        return api.ListMethodsResponse(
            methods=[
                api.Method(name=i.name, kind=_KINDS[i.kind], description=i.description)
                for i in page
            ],
            next_page_token=page[-1].name if more and page else "",
        )

    def _infos(self) -> list[MethodInfo]:
        """Every method this executor runs now, its own and its workers', sorted by name."""
        return sorted([*self._table.infos(), *self._remote()], key=lambda i: i.name)

    async def GetExecutor(
        self, request: api.GetExecutorRequest, context: Context
    ) -> api.GetExecutorResponse:
        running, completed, failed = self._counters()
        uptime = Duration()
        uptime.FromNanoseconds(int((time.time() - self._started_at) * 1e9))
        executor = api.Executor(
            id=self._id,
            uptime=uptime,
            tasks_running=running,
            concurrency=self._concurrency,
            methods=[i.name for i in self._infos()],
            tasks_completed=completed,
            tasks_failed=failed,
        )
        started = timestamp(self._started_at)
        assert started is not None
        executor.start_time.CopyFrom(started)
        return api.GetExecutorResponse(executor=executor)
