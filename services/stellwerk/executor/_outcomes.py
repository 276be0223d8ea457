"""Turning a dispatched attempt into its outcome message: run the handler (local or on a remote
worker) under its deadlines, check the result's size, and fill in the ``TaskEvent``. Split from
``_runner`` (which owns claims, heartbeats and acknowledgements).

Large values (``core/blobs.py``) are the one NATS work here: parameters the dispatch refers to
are fetched before the handler runs, and a result too large to travel inline is stored before
the outcome that refers to it is built — so the outcome's publish stays the commit, and a crash
in between leaves only chunks that a re-run writes again (same text: same subjects) or that
the janitor removes with the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from stellwerk.core import names
from stellwerk.core.blobs import PARAMS, RESULT, BlobKey, BlobStore, StoredText
from stellwerk.core.errors import NonRetryableError, TaskError, UnavailableError
from stellwerk.core.handlers import Heartbeats, TaskContext
from stellwerk.core.limits import Limits, clip_error, result_over_cap, result_too_large
from stellwerk.executor._workers import WorkerHub
from stellwerk.executor.methods import MethodTable
from stellwerk.executor.methods._invoke import with_deadline, with_heartbeat
from stellwerk_api.events.v1 import events_pb2

__all__ = ["AttemptInvoker", "now_ts"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


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
        blobs: BlobStore | None = None,
        max_result_bytes: int | None = None,
    ) -> None:
        self._table = table
        self._workers = workers
        self._executor_id = executor_id
        self._limits = limits
        self._max_deliveries = max_deliveries
        self._blobs = blobs  # without it, results must fit inline (Limits.result)
        self._max_result = max_result_bytes if max_result_bytes is not None else limits.result

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
            if dispatch.HasField("stored_params"):
                params = await self._stored_params(dispatch)
            output = await with_heartbeat(
                dispatch.method,
                silence,
                beats,
                self._table.invoke(dispatch.method, params, ctx, timeout=timeout),
            )
            result_json = json.dumps(output, ensure_ascii=False, allow_nan=False)
            stored = await self._placed(dispatch, result_json)
        except TaskError as exc:
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(exc.message)
            event.non_retryable = isinstance(exc, NonRetryableError)
        except Exception as exc:  # a handler bug must fail its task, never the executor
            logger.exception("method %s raised", dispatch.method)
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(f"{type(exc).__name__}: {exc}")
        else:
            _succeeded(event, result_json, stored)
        event.end_time.CopyFrom(now_ts())
        return event

    async def _placed(
        self, dispatch: events_pb2.TaskDispatch, result_json: str
    ) -> StoredText | None:
        """Where the result goes: inline (``None``) when it fits its outcome and its task's
        document (``Limits.result``), else stored (its reference) up to the deployment's cap;
        beyond the cap, ``NonRetryableError`` naming it. Characters first: bytes only if the
        result may be large (a character is 1 to 4 bytes)."""
        inline = self._limits.result
        if len(result_json) <= min(inline, self._max_result) // 4:
            return None
        size = len(result_json.encode("utf-8", "surrogatepass"))
        if size > self._max_result:
            raise NonRetryableError(result_over_cap(size, self._max_result))
        if size <= inline:
            return None
        if self._blobs is None:
            raise NonRetryableError(result_too_large(size, inline))
        key = BlobKey(dispatch.run_id, RESULT, dispatch.task_id, dispatch.attempt)
        try:
            result_json.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NonRetryableError(f"the result cannot be stored: {exc}") from None
        return await _retrying(lambda: self._blobs_or_fail().put(key, result_json))

    async def _stored_params(self, dispatch: events_pb2.TaskDispatch) -> dict[str, Any]:
        """The parameters a dispatch refers to (stored by the resolver because they did not
        fit); ``NonRetryableError`` if they cannot be read — a forged or damaged dispatch, or
        its run removed."""
        try:
            ref = StoredText.from_proto(dispatch.stored_params, max_size=self._max_result)
        except ValueError as exc:
            why = f"the dispatch's stored parameters cannot be used: {exc}"
            raise NonRetryableError(why) from None
        key = BlobKey(dispatch.run_id, PARAMS, dispatch.task_id, dispatch.attempt)
        text = await _retrying(lambda: self._blobs_or_fail().get(key, ref))
        params = json.loads(text)
        if not isinstance(params, dict):
            raise NonRetryableError("the dispatch's stored parameters are not a JSON object")
        dispatch.params_json = text  # a remote worker receives them from the dispatch
        dispatch.ClearField("stored_params")
        return params

    def _blobs_or_fail(self) -> BlobStore:
        if self._blobs is None:
            raise NonRetryableError("this executor cannot read or store large values")
        return self._blobs

    async def remote(self, dispatch: events_pb2.TaskDispatch) -> events_pb2.TaskEvent:
        """Run the attempt on a connected worker; :class:`WorkerLostError` if it goes away."""
        assert self._workers is not None
        timeout = dispatch.timeout.ToNanoseconds() / 1e9 if dispatch.HasField("timeout") else None
        event = self.event_for(dispatch)
        try:
            if dispatch.HasField("stored_params"):
                await self._stored_params(dispatch)  # into dispatch.params_json for the worker
            outcome = await with_deadline(dispatch.method, timeout, self._workers.run(dispatch))
            if outcome.error is not None:
                raise TaskError(outcome.error)
            assert outcome.result_json is not None
            stored = await self._placed(dispatch, outcome.result_json)
        except TaskError as exc:
            event.outcome = events_pb2.TASK_OUTCOME_FAILED
            event.error = clip_error(exc.message)
            event.non_retryable = isinstance(exc, NonRetryableError)
        else:
            _succeeded(event, outcome.result_json, stored)
        event.end_time.CopyFrom(now_ts())
        return event


def _succeeded(event: events_pb2.TaskEvent, result_json: str, stored: StoredText | None) -> None:
    event.outcome = events_pb2.TASK_OUTCOME_SUCCEEDED
    if stored is None:
        event.result_json = result_json
    else:
        event.stored_result.CopyFrom(stored.to_proto())


async def _retrying(step: Callable[[], Awaitable[_T]]) -> _T:
    """``step()`` until NATS takes it: a large value is stored or read as part of the attempt,
    under its claim (a lost claim cancels us), so waiting out an outage is right."""
    delay = 0.1
    while True:
        try:
            return await step()
        except UnavailableError as exc:
            logger.warning("large value: %s; retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
