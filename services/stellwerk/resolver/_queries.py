"""Reading runs for clients: get, list (paged), watch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator

from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.errors import InvalidArgumentError, NotFoundError, Problem, clip, shorten
from stellwerk.core.jetstream import cancel_requested
from stellwerk.core.kvscan import list_keys
from stellwerk.core.progress import CANCELLED_ERROR
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore

__all__ = ["RunReader", "TaskChange"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_CHUNK = 500
# How long a watch waits, once its run has ended, for the last task changes to arrive.
_TRAILING_GRACE = 0.05


class TaskChange:
    """One step of a watch: the current header and, when a task changed, that task."""

    __slots__ = ("run", "task")

    def __init__(self, run: RunRecord, task: TaskRecord | None) -> None:
        self.run = run
        self.task = task


def _encode_token(after: str, state: str) -> str:
    raw = json.dumps({"after": after, "state": state}).encode()
    return base64.urlsafe_b64encode(raw).decode()


_MAX_TOKEN_CHARS = 256


def _decode_token(token: str, state: str) -> str:
    foreign = InvalidArgumentError(
        problems=[Problem(None, "page_token", "is not a token this server issued")]
    )
    if len(token) > _MAX_TOKEN_CHARS:
        raise foreign
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        after, token_state = doc["after"], doc["state"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise foreign from None
    if not isinstance(after, str) or not names.is_run_id(after):
        raise foreign
    if token_state != state:
        raise InvalidArgumentError(
            problems=[Problem(None, "page_token", "belongs to a different query (filter changed)")]
        )
    return after


def _no_run(run_id: str, why: str = "") -> NotFoundError:
    shown = shorten(run_id, 40)
    message = f"no workflow run {shown}" + (f" ({why})" if why else "")
    return NotFoundError(message, metadata={"id": clip(run_id, 40)})


class RunReader:
    """Read access to runs; always fresh reads (clients must see the truth, not our cache)."""

    def __init__(
        self,
        *,
        runs_kv: KeyValue,
        tasks_kv: KeyValue,
        runs: DocumentStore[RunRecord],
        tasks: DocumentStore[TaskRecord],
    ) -> None:
        self._runs_kv = runs_kv
        self.runs_kv = runs_kv  # for the breakers' reads (_breakers.py)
        self._tasks_kv = tasks_kv
        self._runs = runs
        self._tasks = tasks

    async def header(self, run_id: str) -> RunRecord:
        """The run header; ``NotFoundError`` if there is no such (committed) run."""
        if not names.is_run_id(run_id):
            # Never a key or subject: NATS refuses some characters and closes the connection
            # on a control line over 4 KiB. A run id has a known shape; nothing else is one.
            raise _no_run(run_id, "run ids are 22 lowercase hex digits")
        found = await self._runs.get(names.run_key(run_id), fresh=True)
        if found is None:
            raise _no_run(run_id)
        return found.value

    async def tasks(self, run_id: str, *, as_of: RunRecord | None = None) -> list[TaskRecord]:
        """The run's tasks in document order; with ``as_of`` (the run's header), as that header
        says they are (see :func:`as_of_header`)."""
        entry = await self._runs_kv.get(names.order_key(run_id))
        order: list[str] = json.loads(entry.value or b"[]")
        records: list[TaskRecord] = []
        for start in range(0, len(order), _CHUNK):
            chunk = order[start : start + _CHUNK]
            found = await asyncio.gather(
                *(self._tasks.get(names.task_key(run_id, t), fresh=True) for t in chunk)
            )
            records.extend(d.value for d in found if d is not None)
        if as_of is not None:
            records = [as_of_header(as_of, t) for t in records]
        return records

    async def list(
        self, *, page_size: int, page_token: str, state: str
    ) -> tuple[list[RunRecord], str]:
        """One page of runs, newest first, optionally filtered by state."""
        if page_size < 0:
            raise InvalidArgumentError(
                problems=[Problem(None, "page_size", "must not be negative")]
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token, state) if page_token else None
        ids = sorted(
            (k[len("run.") :] for k in await list_keys(self._runs_kv, "run.*")), reverse=True
        )
        if after is not None:
            ids = [i for i in ids if i < after]
        page: list[RunRecord] = []
        last = ""
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            found = await asyncio.gather(
                *(self._runs.get(names.run_key(i), fresh=True) for i in chunk)
            )
            for run_id, doc in zip(chunk, found, strict=True):
                last = run_id
                if doc is None or (state and doc.value.state.value != state):
                    continue
                page.append(doc.value)
                if len(page) == size:
                    more = run_id != ids[-1]
                    return page, _encode_token(run_id, state) if more else ""
        del last
        return page, ""

    async def watch(self, run_id: str) -> AsyncIterator[TaskChange]:
        """Changes of the run until it ends: first its current state, then each task change."""
        run = await self.header(run_id)
        yield TaskChange(run, None)
        if run.state.ended:
            return
        queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        task_watch = await self._tasks_kv.watch(names.task_prefix(run_id), ignore_deletes=True)
        run_watch = await self._runs_kv.watch(names.run_key(run_id), ignore_deletes=True)

        async def pump(watcher: object, kind: str) -> None:
            while not cancel_requested():
                try:
                    # A missed update (watcher recreated after a NATS hiccup) costs one tick.
                    entry = await watcher.updates(timeout=5)  # type: ignore[attr-defined]
                except TimeoutError:  # nats-py also turns our cancellation into this
                    queue.put_nowait(("tick", None))
                    continue
                if entry is not None and entry.value:
                    queue.put_nowait((kind, entry.value))

        pumps = [
            asyncio.create_task(pump(task_watch, "task")),
            asyncio.create_task(pump(run_watch, "run")),
        ]
        sent: dict[str, str] = {}  # task id -> the state a change last carried
        try:
            while True:
                kind, value = await queue.get()
                if kind == "tick":
                    run = await self.header(run_id)
                elif kind == "run" and value is not None:
                    run = RunRecord.from_bytes(value)
                elif value is not None:
                    task = TaskRecord.from_bytes(value)
                    sent[task.id] = task.state.value
                    yield TaskChange(run, task)
                    continue
                if run.state.ended:
                    # The header is written after its tasks' documents, but the two watchers
                    # deliver independently: let the tasks' last changes arrive first...
                    async for change in _trailing_changes(queue, run):
                        if change.task is not None:
                            sent[change.task.id] = change.task.state.value
                        yield change
                    # ...and whatever a loaded machine delivers later still, read it: the
                    # documents are final now, so the stream always ends with every end state.
                    for task in await self.tasks(run_id, as_of=run):
                        if sent.get(task.id) != task.state.value:
                            yield TaskChange(run, task)
                    yield TaskChange(run, None)
                    return
        finally:
            for p in pumps:
                p.cancel()
            for p in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await p
            for w in (task_watch, run_watch):
                with contextlib.suppress(Exception):
                    await w.stop()


def as_of_header(run: RunRecord, task: TaskRecord) -> TaskRecord:
    """``task`` as its run's header says it is. A cancel writes the header CANCELLED before the
    documents of the tasks it stops (``core/progress/_cancel``), so a reader can see the run
    ended with tasks that read DISPATCHED for a moment: those are cancelled already (the cancel
    is committed), and are shown so."""
    if run.state is RunState.CANCELLED and not task.state.settled:
        return task.evolve(
            state=TaskState.CANCELLED, error=CANCELLED_ERROR, ended_at=run.ended_at, retry_at=None
        )
    return task


async def _trailing_changes(
    queue: asyncio.Queue[tuple[str, bytes | None]], run: RunRecord
) -> AsyncIterator[TaskChange]:
    """Task changes that arrive within ``_TRAILING_GRACE`` seconds of the run's end."""
    deadline = asyncio.get_running_loop().time() + _TRAILING_GRACE
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            kind, value = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            return
        if kind == "task" and value is not None:
            yield TaskChange(run, TaskRecord.from_bytes(value))
