"""Turning a dispatched attempt into its outcome message: run the handler (local or on a remote
worker) under its deadlines, check the result's size, and fill in the ``TaskEvent``. Split from
``_runner`` (which owns claims, heartbeats and acknowledgements): nothing here touches NATS."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from stellwerk.core import names
from stellwerk.core.errors import NonRetryableError, TaskError
from stellwerk.core.handlers import Heartbeats, TaskContext
from stellwerk.core.limits import Limits, clip_error, result_too_large
from stellwerk.executor._workers import WorkerHub
from stellwerk.executor.methods import MethodTable
from stellwerk.executor.methods._invoke import with_deadline, with_heartbeat
from stellwerk_api.events.v1 import events_pb2

__all__ = ["AttemptInvoker", "now_ts"]

logger = logging.getLogger(__name__)


def now_ts() -> Timestamp:
    """Now, as a protobuf timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class AttemptInvoker:
    """Runs attempts and builds their outcome messages."""

    def __init__(
        self,
        *,
        table: MethodTable,
        workers: WorkerHub | None,
        executor_id: str,
        limits: Limits,
        max_deliveries: int,
    ) -> None:
        self._table = table
        self._workers = workers
        self._executor_id = executor_id
        self._limits = limits
        self._max_deliveries = max_deliveries

    def is_remote(self, method: str) -> bool:
        """Whether ``method`` is served by a remote worker rather than a local handler."""
        return self._workers is not None and method not in self._table

    def event_for(self, dispatch: events_pb2.TaskDispatch) -> events_pb2.TaskEvent:
        """An outcome message for ``dispatch``'s attempt, still without its outcome."""
        return events_pb2.TaskEvent(
            format_version=names.EVENT_FORMAT_VERSION,
            run_id=dispatch.run_id,
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            generation=dispatch.generation,
            executor_id=self._executor_id,
        )

    def poisoned(self, dispatch: events_pb2.TaskDispatch, runs: int) -> events_pb2.TaskEvent:
        """The outcome of an attempt that keeps killing its executors: failed, not run again."""
        event = self.event_for(dispatch)
        event.outcome = events_pb2.TASK_OUTCOME_FAILED
        event.non_retryable = True
        event.error = (
            f"attempt {dispatch.attempt} ran {runs} times and never finished: every "
            "executor that ran it died or lost its claim (poison task; limit "
            f"STELLWERK_MAX_DELIVERIES={self._max_deliveries})"
        )
        event.end_time.CopyFrom(now_ts())
        return event

    async def local(
        self, dispatch: events_pb2.TaskDispatch, params: dict[str, Any]
    ) -> events_pb2.TaskEvent:
        """Run the attempt with a local handler; its outcome, failed or succeeded."""
        beats = Heartbeats()
        ctx = TaskContext(
            run_id=dispatch.run_id,
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            idempotency_key=dispatch.idempotency_key,
            method=dispatch.method,
            heartbeats=beats,
        )
        timeout = dispatch.timeout.ToNanoseconds() / 1e9 if dispatch.HasField("timeout") else None
        silence = (
            dispatch.heartbeat_timeout.ToNanoseconds() / 1e9
            if dispatch.HasField("heartbeat_timeout")
            else None
        )
        event = self.event_for(dispatch)
        try:
            output = await with_heartbeat(
                dispatch.method,
                silence,
                beats,
                self._table.invoke(dispatch.method, params, ctx, timeout=timeout),
            )
            result_json = json.dumps(output, ensure_ascii=False, allow_nan=False)
            self._check_result_size(result_json)
        except TaskError as exc:
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(exc.message)
            event.non_retryable = isinstance(exc, NonRetryableError)
        except Exception as exc:  # a handler bug must fail its task, never the executor
            logger.exception("method %s raised", dispatch.method)
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(f"{type(exc).__name__}: {exc}")
        else:
            event.outcome = events_pb2.TASK_OUTCOME_SUCCEEDED
            event.result_json = result_json
        event.end_time.CopyFrom(now_ts())
        return event

    def _check_result_size(self, result_json: str) -> None:
        # Checked here, before publishing: the resolver could not store a larger result in
        # the task's document (see core/limits). Characters first: bytes only if it may be.
        limit = self._limits.result
        if len(result_json) > limit // 4:
            size = len(result_json.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise NonRetryableError(result_too_large(size, limit))

    async def remote(self, dispatch: events_pb2.TaskDispatch) -> events_pb2.TaskEvent:
        """Run the attempt on a connected worker; :class:`WorkerLostError` if it goes away."""
        assert self._workers is not None
        timeout = dispatch.timeout.ToNanoseconds() / 1e9 if dispatch.HasField("timeout") else None
        event = self.event_for(dispatch)
        try:
            outcome = await with_deadline(dispatch.method, timeout, self._workers.run(dispatch))
            if outcome.error is not None:
                raise TaskError(outcome.error)
            assert outcome.result_json is not None
            self._check_result_size(outcome.result_json)
        except TaskError as exc:
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(exc.message)
            event.non_retryable = isinstance(exc, NonRetryableError)
        else:
            event.outcome = events_pb2.TASK_OUTCOME_SUCCEEDED
            event.result_json = outcome.result_json
        event.end_time.CopyFrom(now_ts())
        return event
