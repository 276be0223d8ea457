"""Checkpoints of runs (``WorkflowCheckpoint``): a saved copy of every task document of a run,
in the ``stellwerk-checkpoints`` bucket.

Why a KV bucket and not the object store: a run's documents can exceed one message, so they are
written in parts of at most one message each (``<run>.<checkpoint>.<i>``), and the checkpoint's
description (``<run>.<checkpoint>.meta``) is *created* after them — that creation commits the
checkpoint, and a compare-and-create makes a repeated request (same id) find it instead of
writing a second one. The object store has no such create, and leaves chunks of a put cut
short without an owner; here, parts without a description are only ever overwritten by a
repeat or removed with the run (``<run>.>``, one purge by subject).

A checkpoint's id has the shape of a run id (22 lowercase hex digits): made from the run id and
the ``request_id`` when one is given (so a retried call finds its checkpoint), else from the
time and randomness.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import nats.js.errors as jserr
from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.errors import NotFoundError, UnavailableError, shorten
from stellwerk.core.kvscan import list_keys, remove, snapshot
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import RunRecord, TaskRecord, TaskState

__all__ = ["CheckpointInfo", "CheckpointStore", "checkpoint_id_for"]


def checkpoint_id_for(run_id: str, request_id: str) -> str:
    """The id of a new checkpoint of ``run_id``: derived from ``request_id`` when given."""
    if request_id:
        return hashlib.sha256(f"{run_id}\x00{request_id}".encode()).hexdigest()[:22]
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A checkpoint's description (what ``ListCheckpoints`` shows)."""

    id: str
    run_id: str
    created_at: float
    run_state: str
    completed_tasks: int
    label: str
    parts: int

    def to_bytes(self) -> bytes:
        """Serialise for KV."""
        return json.dumps({"v": 1, **{k: getattr(self, k) for k in self.__slots__}}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CheckpointInfo:
        """Parse a KV value."""
        doc = json.loads(data)
        doc.pop("v", None)
        return cls(**doc)


class CheckpointStore:
    """Writes and reads checkpoints; every read of a checkpoint id checks its shape first."""

    def __init__(self, kv: KeyValue, *, part_bytes: int) -> None:
        self.kv = kv
        self._part_bytes = part_bytes

    async def create(
        self, run: RunRecord, tasks: list[TaskRecord], *, checkpoint_id: str, label: str
    ) -> CheckpointInfo:
        """Save ``tasks`` (the run's documents) as checkpoint ``checkpoint_id``; a checkpoint
        with that id already there (a repeated request) is returned as it is."""
        existing = await self.info(checkpoint_id)
        if existing is not None:
            return existing
        parts = self._parts(tasks)
        try:
            for index, part in enumerate(parts):
                await self.kv.put(names.checkpoint_part_key(run.id, checkpoint_id, index), part)
            info = CheckpointInfo(
                id=checkpoint_id,
                run_id=run.id,
                created_at=time.time(),
                run_state=run.state.value,
                completed_tasks=sum(t.state is TaskState.COMPLETED for t in tasks),
                label=label,
                parts=len(parts),
            )
            try:  # the commit
                await self.kv.create(names.checkpoint_key(run.id, checkpoint_id), info.to_bytes())
            except jserr.KeyWrongLastSequenceError:  # a repeat of the same request got there
                found = await self.info(checkpoint_id)
                if found is None:
                    raise UnavailableError("checkpoint vanished while written") from None
                return found
        except NATS_FAILURES as exc:
            raise UnavailableError(f"NATS unavailable writing a checkpoint: {exc}") from exc
        return info

    def _parts(self, tasks: list[TaskRecord]) -> list[bytes]:
        """The documents as JSON lists of at most ``part_bytes`` each (a document fits one
        message by itself, so a part holds at least one)."""
        parts: list[bytes] = []
        current: list[bytes] = []
        size = 2
        for task in tasks:
            data = task.to_bytes()
            if current and size + len(data) + 1 > self._part_bytes:
                parts.append(b"[" + b",".join(current) + b"]")
                current, size = [], 2
            current.append(data)
            size += len(data) + 1
        parts.append(b"[" + b",".join(current) + b"]")
        return parts

    async def info(self, checkpoint_id: str) -> CheckpointInfo | None:
        """The description of checkpoint ``checkpoint_id``; ``None`` if there is none."""
        if not names.is_checkpoint_id(checkpoint_id):
            return None  # never a key or subject
        found = await snapshot(self.kv, names.checkpoint_lookup(checkpoint_id))
        for data in found.values():
            return CheckpointInfo.from_bytes(data)
        return None

    async def require(self, checkpoint_id: str) -> CheckpointInfo:
        """:meth:`info`, or ``NotFoundError`` naming the id."""
        info = await self.info(checkpoint_id)
        if info is None:
            reason = "" if names.is_checkpoint_id(checkpoint_id) else " (ids are 22 hex digits)"
            raise NotFoundError(f"no checkpoint {shorten(checkpoint_id)}{reason}")
        return info

    async def list(self, run_id: str) -> list[CheckpointInfo]:
        """The checkpoints of ``run_id`` (a checked run id), oldest first."""
        found = await snapshot(self.kv, f"{run_id}.*.meta")
        infos = [CheckpointInfo.from_bytes(d) for d in found.values()]
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    async def tasks(self, info: CheckpointInfo) -> dict[str, TaskRecord]:
        """The task documents saved in checkpoint ``info``, by task id."""
        saved: dict[str, TaskRecord] = {}
        for index in range(info.parts):
            try:
                entry = await self.kv.get(names.checkpoint_part_key(info.run_id, info.id, index))
            except jserr.KeyNotFoundError as exc:
                raise NotFoundError(f"checkpoint {info.id} is incomplete") from exc
            except NATS_FAILURES as exc:
                raise UnavailableError(f"NATS unavailable reading a checkpoint: {exc}") from exc
            for raw in json.loads(entry.value or b"[]"):
                task = TaskRecord.from_bytes(json.dumps(raw).encode())
                saved[task.id] = task
        return saved

    async def remove_run(self, run_id: str) -> None:
        """Remove every checkpoint of ``run_id`` (the janitor, with the run)."""
        if await list_keys(self.kv, names.run_checkpoints_filter(run_id)):
            await remove(self.kv, names.run_checkpoints_filter(run_id))
