"""What Stellwerk keeps in its KV buckets: the run header and one document per task.

These are the single source of truth (invariant 1). Every change of state is a compare-and-set
on a document's KV revision (invariant 2). Documents carry a format version ``v``; a reader
refuses versions it does not know rather than guessing.

Readiness of a task is tracked without counters, so that repeating a step changes nothing:
a task holds a bitmap with one bit per dependency ("this dependency is settled"), and the run
header one bit per sink task. Setting a bit twice is a no-op, unlike incrementing a counter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Self

import orjson

from stellwerk.core.errors import StellwerkError

__all__ = [
    "FORMAT_VERSION",
    "ExecutorRecord",
    "RunRecord",
    "RunState",
    "TaskRecord",
    "TaskState",
    "bitmap_count",
    "bitmap_set",
    "bitmap_test",
    "dumps",
    "loads",
    "new_bitmap",
    "retry_waiting",
]

FORMAT_VERSION = 1


class TaskState(StrEnum):
    """Stored task states (RUNNING is derived, not stored: it would cost a write per task)."""

    PENDING = "PENDING"
    DISPATCHED = "DISPATCHED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"
    SKIPPED = "SKIPPED"
    """Failed for good under ``on_failure: skip``: ``error`` kept, no result; dependents run
    and references to its result resolve to ``null``."""
    CANCELLED = "CANCELLED"
    """Its run was cancelled before it ended (``CancelRun``)."""

    @property
    def settled(self) -> bool:
        """A settled task never changes again."""
        return self in _SETTLED

    @property
    def lets_dependents_run(self) -> bool:
        """Whether dependents of a task settled in this state run (COMPLETED, SKIPPED)."""
        return self in (TaskState.COMPLETED, TaskState.SKIPPED)


_SETTLED = frozenset(
    (
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.BLOCKED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
    )
)


def retry_waiting(task: TaskRecord, now: float) -> bool:
    """Whether ``task``'s current attempt is a retry that is not due yet (reads as RETRY_WAIT)."""
    return task.state is TaskState.DISPATCHED and task.retry_at is not None and task.retry_at > now


class RunState(StrEnum):
    """Workflow run states."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    """Cancelled by an operator: nothing more of it is dispatched or started."""
    COMPENSATING = "COMPENSATING"
    """A task under ``on_failure: compensate`` failed and the normal part ended: the
    compensations of the completed tasks run, one at a time (``core/progress/_saga``)."""
    COMPENSATED = "COMPENSATED"
    """The saga ended: every compensation due ran (``error`` names any that failed)."""

    @property
    def ended(self) -> bool:
        """Whether the run has ended (nothing of it runs any more)."""
        return self not in (RunState.RUNNING, RunState.COMPENSATING)


def dumps(value: Any) -> bytes:
    """Compact JSON; ints stay exact.

    orjson first (record encoding was the resolver's largest single cost in stdlib ``json``);
    what it refuses — integers beyond 64 bits — goes through ``json``. orjson would write NaN as
    ``null``, so none may get here: specs and task outcomes are checked for NaN where they enter.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()


def loads(data: bytes) -> Any:
    """Parse JSON bytes (stdlib: orjson would turn integers beyond 64 bits into floats)."""
    return json.loads(data)


def new_bitmap(size: int) -> str:
    """A hex bitmap of ``size`` cleared bits."""
    return "0" * (2 * ((size + 7) // 8))


def bitmap_set(bitmap: str, index: int) -> str:
    """Return ``bitmap`` with bit ``index`` set (idempotent)."""
    raw = bytearray.fromhex(bitmap)
    raw[index // 8] |= 1 << (index % 8)
    return raw.hex()


def bitmap_test(bitmap: str, index: int) -> bool:
    """Whether bit ``index`` is set."""
    return bool(bytes.fromhex(bitmap)[index // 8] & (1 << (index % 8)))


def bitmap_count(bitmap: str) -> int:
    """Number of set bits."""
    return int.from_bytes(bytes.fromhex(bitmap), "little").bit_count()


def _shallow(record: Any) -> dict[str, Any]:
    # dataclasses.asdict deep-copies params and results on every write; JSON encoding only
    # needs to read them.
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _check_version(doc: dict[str, Any], kind: str) -> None:
    if doc.get("v") != FORMAT_VERSION:
        raise StellwerkError(f"{kind} document has unknown format version {doc.get('v')!r}")


class _Document:
    """JSON (de)serialisation shared by the KV documents; subclasses revive their enums."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        """Serialise for KV."""
        doc = _shallow(self)
        doc["v"] = FORMAT_VERSION
        if doc.get("trace", "") is None:  # written only with tracing on (readers before it)
            del doc["trace"]
        if doc.get("retry_at", "") is None:  # written only when there is one
            del doc["retry_at"]
        if doc.get("history", None) == []:
            del doc["history"]
        if doc.get("heartbeat_timeout", "") is None:
            del doc["heartbeat_timeout"]
        if doc.get("on_failure", "") is None:  # written only when not the default, block
            del doc["on_failure"]
        for optional in ("alternative", "compensation", "role", "saga_cause"):
            if doc.get(optional, "") is None:  # written only when set
                del doc[optional]
        for counter in ("restart", "attempt_base", "restarts"):  # written once not 0
            if doc.get(counter, None) == 0:
                del doc[counter]
        if doc.get("stored_result", "") is None:  # written only for a large result
            del doc["stored_result"]
        return dumps(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a KV value; refuses a format version it does not know."""
        doc = loads(data)
        _check_version(doc, cls.__name__)
        doc.pop("v")
        return cls(**cls._revive(doc))

    @classmethod
    def _revive(cls, doc: dict[str, Any]) -> dict[str, Any]:
        return doc


@dataclass(frozen=True, slots=True)
class TaskRecord(_Document):
    """One task of one run, as stored under ``names.task_key``."""

    run_id: str
    id: str
    name: str
    method: str
    params: dict[str, Any]
    dependencies: list[str]
    dependents: list[tuple[str, int]]
    """(dependent task id, index of this task in that dependent's ``dependencies``)."""
    refs: dict[str, str]
    """Reference token used in ``params`` -> the task id it names."""
    sink_index: int | None
    priority: str = "normal"
    timeout: float | None = None
    retry: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    state: TaskState = TaskState.PENDING
    settled_deps: str = ""
    dep_failed: bool = False
    attempt: int = 0
    generation: int = 0
    reruns: int = 0
    """Runs of the current attempt after a redelivery (counted toward the poison limit)."""
    result: Any = None
    has_result: bool = False
    error: str | None = None
    executor_id: str | None = None
    dispatched_at: float | None = None
    ended_at: float | None = None
    trace: str | None = None
    """W3C ``traceparent`` of the run's submit (tracing on): dispatches without a span at hand
    join the run's trace through it (``core/tracing``)."""
    retry_at: float | None = None
    """When the current attempt, a retry, is due (epoch seconds); ``None`` for a first attempt.
    Until then the task reads as RETRY_WAIT (derived, like RUNNING)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The attempts that ended: ``{"n", "executor", "start", "end", "error"}`` each."""
    heartbeat_timeout: float | None = None
    """Longest time a handler may go without ``ctx.heartbeat()``; ``None`` = no limit."""
    on_failure: str | None = None
    """The task's failure strategy when not the default ``block``: ``skip``, ``alternative``."""
    alternative: str | None = None
    """Under ``alternative``: the task that runs when this one has failed for good (it takes
    this task's place: its ``dependents`` and ``sink_index`` are this task's)."""
    stored_result: dict[str, Any] | None = None
    """A result too large to keep inline (``has_result`` set, ``result`` ``None``): its
    reference in ``STELLWERK_BLOBS`` (``core/blobs.StoredText``: size, sha256, chunk size)."""
    restart: int = 0
    """The run restart (``RunRecord.restarts``: a RetryRun or RestoreCheckpoint) that last
    reset or restored this document; a copy of it from before that restart (another
    process's cache) never settles anything (``core/progress/_propagate``)."""
    attempt_base: int = 0
    """Attempts made before the latest restart re-ran this task: its retry policy counts
    attempts from here, so a re-run gets the policy's whole budget again."""
    compensation: str | None = None
    """The task that undoes this one in the run's saga, if this one completed."""
    role: str | None = None
    """``alternative`` or ``compensation`` for a task that runs only on that path (never a
    root, nobody's dependent, no sink); ``None`` on the normal path."""

    def evolve(self, **changes: Any) -> TaskRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    @classmethod
    def _revive(cls, doc: dict[str, Any]) -> dict[str, Any]:
        doc["state"] = TaskState(doc["state"])
        doc["dependents"] = [(d[0], int(d[1])) for d in doc["dependents"]]
        return doc


@dataclass(frozen=True, slots=True)
class RunRecord(_Document):
    """The header of one run, under ``names.run_key``; its creation commits a submit."""

    id: str
    workflow_id: str
    name: str
    description: str
    task_count: int
    sink_count: int
    created_at: float
    request_id: str = ""
    request_key: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    state: RunState = RunState.RUNNING
    settled_sinks: str = ""
    failed: bool = False
    error: str | None = None
    ended_at: float | None = None
    trace: str | None = None
    """W3C ``traceparent`` of the submit (tracing on): the run's trace."""
    restarts: int = 0
    """How many restarts (RetryRun, RestoreCheckpoint) have been applied to the run."""
    saga_cause: str | None = None
    """The task under ``on_failure: compensate`` whose failure started the saga: once set, no
    normal task is started any more, and the normal part's end is COMPENSATING."""

    def evolve(self, **changes: Any) -> RunRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    @classmethod
    def _revive(cls, doc: dict[str, Any]) -> dict[str, Any]:
        doc["state"] = RunState(doc["state"])
        return doc


@dataclass(frozen=True, slots=True)
class ExecutorRecord(_Document):
    """An executor's registration in the executors bucket, refreshed while it lives."""

    id: str
    methods: list[str]
    started_at: float
    last_seen: float
    concurrency: int
    listen: str = ""
    heartbeat_interval: float = 10.0

    def alive(self, now: float) -> bool:
        """Seen within three heartbeat intervals."""
        return now - self.last_seen <= 3 * self.heartbeat_interval
