"""Publishing task attempts to the dispatch work queue."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import nats.js.errors as jserr
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from stellwerk.core import names, tracing
from stellwerk.core.blobs import LargeResult, StoredText
from stellwerk.core.errors import ReferenceResolutionError, StellwerkError, UnavailableError
from stellwerk.core.jetstream import last_message
from stellwerk.core.limits import Limits, TooLargeError
from stellwerk.core.model import substitute
from stellwerk.core.progress._large import LargeValues
from stellwerk.core.progress._outcome import Outcome, decode_outcome
from stellwerk.core.publish import NATS_FAILURES, Ack, JetStreamWriter
from stellwerk.core.records import TaskRecord
from stellwerk_api.events.v1 import events_pb2

__all__ = ["Dispatcher", "resolve_params"]

logger = logging.getLogger(__name__)


def resolve_params(task: TaskRecord, outputs: Callable[[str], Any]) -> dict[str, Any]:
    """``task.params`` with every ``${...}`` replaced; ``outputs(task_id)`` gives a dependency's
    output. Raises ``ReferenceResolutionError`` naming the reference that does not resolve."""

    def lookup(token: str) -> Any:
        target = task.refs.get(token)
        if target is None:
            raise ReferenceResolutionError(token, f"reference to unknown task {token!r}")
        return outputs(target)

    resolved = substitute(task.params, lookup)
    if not isinstance(resolved, dict):  # pragma: no cover - substitute keeps the shape
        raise StellwerkError("parameters did not stay a mapping")
    return resolved


class Dispatcher:
    """Builds ``TaskDispatch`` messages and publishes them with deterministic ids."""

    def __init__(
        self,
        js: JetStreamContext,
        writer: JetStreamWriter,
        *,
        max_payload: int,
        large: LargeValues | None = None,
    ) -> None:
        self._js = js
        self._writer = writer
        self.max_payload = max_payload
        self.limits = Limits(max_payload)
        self.large = large
        """Stored results and parameters (``_large``); without it, values must fit inline."""

    async def output(self, found: Any) -> Any:
        """A dependency's output as its dependents' references read it: a result stored out
        of line (``LargeResult``) is fetched and parsed."""
        if not isinstance(found, LargeResult):
            return found
        if self.large is None:
            raise StellwerkError("a stored result cannot be read here (no blob store)")
        return await self.large.value(found)

    async def build(self, task: TaskRecord, params: dict[str, Any]) -> bytes:
        """The dispatch message of ``task``'s current attempt (see :meth:`encode`); parameters
        too large for one message are stored first and the dispatch refers to them."""
        text = json.dumps(params, ensure_ascii=False, allow_nan=False)
        try:
            return self._encoded(task, text, None)
        except TooLargeError:
            if self.large is None:
                raise
        return self._encoded(task, "", await self.large.store_params(task, text))

    def encode(self, task: TaskRecord, params: dict[str, Any]) -> bytes:
        """The dispatch message of ``task``'s current attempt; raises ``StellwerkError`` if it
        would exceed the server's message size limit."""
        return self._encoded(task, json.dumps(params, ensure_ascii=False, allow_nan=False), None)

    def _encoded(self, task: TaskRecord, params_json: str, stored: StoredText | None) -> bytes:
        message = events_pb2.TaskDispatch(
            format_version=names.EVENT_FORMAT_VERSION,
            run_id=task.run_id,
            task_id=task.id,
            attempt=task.attempt,
            generation=task.generation,
            method=task.method,
            params_json=params_json,
            idempotency_key=names.idempotency_key(task.run_id, task.id, task.attempt),
            dispatch_time=Timestamp(seconds=int(time.time())),
        )
        if task.timeout is not None:
            message.timeout.CopyFrom(
                Duration(seconds=int(task.timeout), nanos=int((task.timeout % 1) * 1e9))
            )
        if task.retry_at is not None:
            message.not_before.FromNanoseconds(int(task.retry_at * 1e9))
        if task.heartbeat_timeout is not None:
            message.heartbeat_timeout.FromNanoseconds(int(task.heartbeat_timeout * 1e9))
        if stored is not None:
            message.stored_params.CopyFrom(stored.to_proto())
        data = message.SerializeToString()
        if len(data) > self.limits.message:
            raise TooLargeError(
                f"the dispatch of task {task.id!r} (its parameters with the results they "
                f"refer to) is {len(data):,} bytes; this deployment sends at most "
                f"{self.limits.message:,} bytes per message (NATS max_payload "
                f"{self.max_payload:,} bytes)"
            )
        return data

    @property
    def max_stored(self) -> int:
        """Largest stored result an outcome may refer to (``STELLWERK_MAX_RESULT_BYTES``)."""
        return self.large.max_bytes if self.large is not None else self.limits.result

    async def publish(self, task: TaskRecord, data: bytes) -> None:
        """Publish one dispatch; a repeat within the dedup window is dropped by JetStream."""
        await (await self.send(task, data))

    async def send(self, task: TaskRecord, data: bytes) -> Coroutine[Any, Any, None]:
        """:meth:`publish` in two steps: the dispatch is sent when this returns (in the same
        socket write as whatever else is sent before the caller awaits, see
        ``JetStreamWriter.send``); awaiting what it returns awaits JetStream's acknowledgement.
        What it returns must be awaited or closed."""
        msg_id = names.dispatch_msg_id(task.run_id, task.id, task.attempt, task.generation)
        headers = {"Nats-Msg-Id": msg_id}
        with tracing.dispatching(task, headers):  # nothing with tracing off
            try:
                sent = await self._writer.send(
                    names.dispatch_subject(task.method, task.run_id, task.id), data, headers
                )
            except UnavailableError as exc:
                raise UnavailableError(f"could not dispatch {task.id!r}: {exc}") from exc
        return self._stored(task, sent)

    async def _stored(self, task: TaskRecord, sent: asyncio.Future[Ack]) -> None:
        try:
            ack = await sent
        except UnavailableError as exc:
            raise UnavailableError(f"could not dispatch {task.id!r}: {exc}") from exc
        ack.stored(f"the dispatch of {task.id!r}")

    async def dispatch_waiting(self, task: TaskRecord) -> bool:
        """Whether a dispatch of ``task`` waits (or is being worked on) in the dispatch stream."""
        subject = names.dispatch_subject(task.method, task.run_id, task.id)
        return await last_message(self._js, names.DISPATCH_STREAM, subject) is not None

    async def outcome_of(self, run_id: str, task_id: str, attempt: int) -> Outcome | None:
        """The committed outcome of one attempt, or ``None`` if it has not reported."""
        found = await last_message(
            self._js, names.EVENTS_STREAM, names.event_subject(run_id, task_id, attempt)
        )
        if found is None or not found.data:
            return None
        try:
            return decode_outcome(
                found.data, max_result=self.limits.result, max_stored=self.max_stored
            )
        except (ValueError, UnicodeDecodeError):
            return None

    async def outcome_stored(self, task: TaskRecord) -> bool:
        """Whether the current attempt of ``task`` has reported (acknowledged or not)."""
        subject = names.event_subject(task.run_id, task.id, task.attempt)
        return await last_message(self._js, names.EVENTS_STREAM, subject) is not None

    async def outcome_waiting(self, task: TaskRecord) -> bool:
        """Whether an outcome of ``task`` is stored but maybe not applied yet: above the
        resolvers' acknowledgement floor (conservative: acknowledged messages above the floor
        count as waiting until the floor passes them)."""
        subject = names.event_subject(task.run_id, task.id, task.attempt)
        found = await last_message(self._js, names.EVENTS_STREAM, subject)
        if found is None:
            return False
        try:
            info = await self._js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
        except jserr.NotFoundError:
            return True  # no resolver has consumed anything yet
        except NATS_FAILURES as exc:
            raise UnavailableError(f"could not read the resolvers' consumer: {exc}") from exc
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return (found.seq or 0) > (floor or 0)

    async def already_sent(self, task: TaskRecord) -> bool:
        """Whether ``task``'s dispatch is on its way or its attempt has reported already (two
        lookups by subject: for recovery paths only)."""
        return await self.dispatch_waiting(task) or await self.outcome_stored(task)

    async def publish_many(self, items: Iterable[tuple[TaskRecord, bytes]]) -> None:
        """Publish several dispatches concurrently (in bounded chunks)."""
        batch = list(items)
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            await asyncio.gather(*(self.publish(task, data) for task, data in chunk))
