"""Reading runs for clients: get, list (paged), watch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.errors import (
    InvalidArgumentError,
    NotFoundError,
    Problem,
    UnavailableError,
    clip,
    shorten,
)
from stellwerk.core.jetstream import cancel_requested
from stellwerk.core.kvscan import list_keys
from stellwerk.core.progress import CANCELLED_ERROR
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.core.store import DocumentStore
from stellwerk.resolver._feed import KeyFeed

__all__ = ["WATCH_INTERVAL", "RunReader", "TaskChange"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_CHUNK = 500
# How long a watch waits, once its run has ended, for the last task changes to arrive.
_TRAILING_GRACE = 0.05
WATCH_INTERVAL = 0.025
"""A watch sends at most this often (seconds): what it coalesces, the resolver is spared."""


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
        """Changes of the run until it ends: first its current state, then the task changes,
        coalesced: sent at most every ``WATCH_INTERVAL`` seconds, each task's latest state only
        (a state it passed through within one interval is not sent), a change that shows
        nothing new (a dependency's bit in a PENDING task) not at all. A watch therefore costs
        the resolver about one message per task, whatever the run's pace."""
        run = await self.header(run_id)
        yield TaskChange(run, None)
        if run.state.ended:
            return
        queue: asyncio.Queue[tuple[str, str, bytes | None]] = asyncio.Queue()
        # Task documents change several times per hop: fetched in batches (see _feed), at most
        # every interval. The header changes about once per run: a plain KV watch.
        feed = await KeyFeed(self._tasks_kv, names.task_prefix(run_id)).open()
        run_watch = await self._runs_kv.watch(names.run_key(run_id), ignore_deletes=True)

        async def pump_tasks() -> None:
            while not cancel_requested():
                try:
                    changes = await feed.changes(wait=5)
                except TimeoutError:
                    queue.put_nowait(("tick", "", None))
                    continue
                except UnavailableError:
                    queue.put_nowait(("lost", "", None))
                    return
                for key, value in changes:
                    queue.put_nowait(("task", key, value))
                await asyncio.sleep(WATCH_INTERVAL)  # what comes meanwhile is the next batch

        async def pump(watcher: object, kind: str) -> None:
            while not cancel_requested():
                try:
                    # A missed update (watcher recreated after a NATS hiccup) costs one tick.
                    entry = await watcher.updates(timeout=5)  # type: ignore[attr-defined]
                except TimeoutError:  # nats-py also turns our cancellation into this
                    queue.put_nowait(("tick", "", None))
                    continue
                if entry is not None and entry.value:
                    queue.put_nowait((kind, entry.key, entry.value))

        pumps = [asyncio.create_task(pump_tasks()), asyncio.create_task(pump(run_watch, "run"))]
        shown: dict[str, tuple[Any, ...]] = {}  # task id -> what a change last showed of it
        loop = asyncio.get_running_loop()
        next_send = 0.0
        try:
            while True:
                batch = [await queue.get()]
                # Coalesce: wait out the interval since the last send, then take all that came.
                if (wait := next_send - loop.time()) > 0:
                    await asyncio.sleep(wait)
                while not queue.empty():
                    batch.append(queue.get_nowait())
                next_send = loop.time() + WATCH_INTERVAL
                latest: dict[str, bytes] = {}  # key -> raw document; only the last is decoded
                for kind, key, value in batch:
                    if kind == "lost":
                        raise UnavailableError("the watch lost its feed; watch again")
                    if kind == "tick":
                        run = await self.header(run_id)
                    elif kind == "run" and value is not None:
                        run = RunRecord.from_bytes(value)
                    elif value is not None:
                        latest[key] = value
                for value in latest.values():
                    task = TaskRecord.from_bytes(value)
                    if shown.get(task.id) != (seen := _shown(task)):
                        shown[task.id] = seen
                        yield TaskChange(run, task)
                if run.state.ended:
                    # The header is written after its tasks' documents, but the two watchers
                    # deliver independently: let the tasks' last changes arrive first...
                    async for change in _trailing_changes(queue, run):
                        if change.task is not None:
                            shown[change.task.id] = _shown(change.task)
                        yield change
                    # ...and whatever a loaded machine delivers later still, read it: the
                    # documents are final now, so the stream always ends with every end state.
                    # (Not needed when every task was shown settled: it never changes again.)
                    if not _all_shown_settled(shown, run):
                        for task in await self.tasks(run_id, as_of=run):
                            if shown.get(task.id) != _shown(task):
                                yield TaskChange(run, task)
                    yield TaskChange(run, None)
                    return
        finally:
            for p in pumps:
                p.cancel()
            for p in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await p
            await feed.close()
            with contextlib.suppress(Exception):
                await run_watch.stop()


def _all_shown_settled(shown: dict[str, tuple[Any, ...]], run: RunRecord) -> bool:
    """Whether the watch has shown every task of ``run`` in a settled state (which a cancel's
    ``as_of_header`` does not change either)."""
    return len(shown) >= run.task_count and all(seen[0].settled for seen in shown.values())


def _shown(task: TaskRecord) -> tuple[Any, ...]:
    """What a watcher sees of a task (``convert.task_to_proto``): a change of anything else
    (the bits of settled dependencies, a re-run count) is not sent."""
    return (
        task.state,
        task.attempt,
        task.error,
        task.executor_id,
        task.dispatched_at,
        task.ended_at,
        task.retry_at,
        task.has_result,
        len(task.history),
    )


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
    queue: asyncio.Queue[tuple[str, str, bytes | None]], run: RunRecord
) -> AsyncIterator[TaskChange]:
    """Task changes that arrive within ``_TRAILING_GRACE`` seconds of the run's end."""
    deadline = asyncio.get_running_loop().time() + _TRAILING_GRACE
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            kind, _key, value = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            return
        if kind == "task" and value is not None:
            yield TaskChange(run, TaskRecord.from_bytes(value))
