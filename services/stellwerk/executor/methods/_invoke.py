"""Calling one task implementation: deadlines, threads, error wrapping, JSON checks."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from stellwerk.core.errors import TaskError
from stellwerk.core.handlers import HandlerDefinition, Heartbeats, TaskContext

__all__ = [
    "ABANDONED",
    "AbandonedThreads",
    "call_handler",
    "ensure_json",
    "exception_message",
    "with_deadline",
    "with_heartbeat",
]

T = TypeVar("T")

# Deeper structures are refused rather than risking a RecursionError somewhere downstream.
_MAX_DEPTH = 200


def exception_message(exc: BaseException) -> str:
    """The message recorded on a task that failed with ``exc``: ``"ValueError: bad input"``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def with_deadline(method: str, time_limit: float | None, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, failing the task when it takes longer than ``time_limit`` seconds.

    ``asyncio.timeout`` (rather than ``wait_for``) keeps the call inside the current asyncio task,
    so a ``TimeoutError`` that the implementation itself raises is not mistaken for the deadline.
    """
    deadline = asyncio.timeout(time_limit)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise TaskError(
                f"{method} timed out after {time_limit:g} s (the task's timeout)"
            ) from None
        raise


async def with_heartbeat(
    method: str, limit: float | None, beats: Heartbeats, awaitable: Awaitable[T]
) -> T:
    """Await ``awaitable``, failing the attempt when its handler goes ``limit`` seconds without
    ``ctx.heartbeat()`` (the task's ``heartbeat_timeout``)."""
    if limit is None:
        return await awaitable
    work = asyncio.ensure_future(awaitable)
    try:
        while True:
            silent = time.monotonic() - beats.last
            if silent >= limit:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                raise TaskError(
                    f"{method} timed out: no heartbeat for {limit:g} s (the task's "
                    "heartbeat_timeout)"
                )
            done, _ = await asyncio.wait({work}, timeout=limit - silent)
            if done:
                return work.result()
    finally:
        if not work.done():
            work.cancel()


class AbandonedThreads:
    """Threads of plain ``def`` handlers whose attempt was given up (deadline, missed
    heartbeat, lost claim) while they ran: a thread cannot be stopped, so it runs on until its
    function returns. ``running`` counts those still running, ``total`` all there were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.total = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread of its own, counted here if its caller stops waiting.

        A daemon thread per call, not the loop's shared pool: abandoned threads would fill the
        pool (a handful of workers on a small machine) and stop every later plain ``def``
        handler, and the pool's threads are joined at exit, so one stuck handler would keep a
        stopping executor alive."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        state = {"finished": False, "abandoned": False}
        context = contextvars.copy_context()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def target() -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                value = context.run(fn, *args)
            except BaseException as exc:  # handed to the caller, which decides
                error = exc
            with self._lock:
                state["finished"] = True
                if state["abandoned"]:
                    self.running -= 1
                    return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=target, name="stellwerk-handler", daemon=True).start()
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                if not state["finished"]:
                    state["abandoned"] = True
                    self.running += 1
                    self.total += 1
            raise


ABANDONED = AbandonedThreads()
"""This process's abandoned handler threads (the executor's ``stellwerk_abandoned_threads``)."""


async def call_handler(entry: HandlerDefinition, params: dict[str, Any], ctx: TaskContext) -> Any:
    """Run a handler and turn anything it raises into a :class:`TaskError`.

    Sync handlers run in a worker thread so the event loop (and the heartbeats that keep the
    attempt's claim alive) keeps running; note that a thread cannot be stopped, so a sync handler
    that outlives its deadline keeps running in the background until it returns.
    A ``TaskError`` raised on purpose by a handler keeps its message.
    """
    args: tuple[Any, ...] = (params, ctx) if entry.wants_ctx else (params,)
    try:
        if entry.is_async:
            result = await entry.fn(*args)
        else:
            result = await ABANDONED.run(entry.fn, *args)
            # A sync wrapper around an async function (e.g. a plain decorator) hands back an
            # awaitable; finishing it here is kinder than reporting a coroutine object.
            if inspect.isawaitable(result):
                result = await result
    except TaskError:
        raise
    # SystemExit too: a handler calling sys.exit() must fail its task, not stop the executor.
    except (Exception, SystemExit) as exc:
        raise TaskError(exception_message(exc)) from exc
    return result


def ensure_json(value: Any) -> Any:
    """Return ``value`` as plain JSON data, or raise :class:`TaskError` saying what is wrong.

    Refused: values ``json`` cannot encode, NaN and infinities, non-string dict keys (``json``
    would silently turn ``{1: "a"}`` into ``{"1": "a"}``) and circular or absurdly deep nesting.
    Tuples become lists.
    """
    try:
        # Encoded to UTF-8 on purpose: a lone surrogate in a string passes json.dumps but no
        # message or document can carry it.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        plain = json.loads(text)
    except UnicodeEncodeError as exc:
        raise TaskError(_not_json(f"a string holds a lone surrogate ({exc.reason})")) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise TaskError(_not_json(_find_problem(value) or str(exc))) from exc
    # Fast path: when the decoded copy equals the original, no key was converted.
    if plain != value:
        problem = _find_problem(value)
        if problem is not None:
            raise TaskError(_not_json(problem))
    return plain


def _not_json(detail: str) -> str:
    return f"handler returned a value that is not JSON-serialisable: {detail}"


def _find_problem(value: Any, path: str = "$", depth: int = 0) -> str | None:
    """Describe the first part of ``value`` that is not plain JSON, or return ``None``."""
    if depth > _MAX_DEPTH:
        return f"{path} is nested deeper than {_MAX_DEPTH} levels (or circular)"
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r} (NaN or infinity)"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key {key!r} of type {type(key).__name__}, not a string"
            problem = _find_problem(item, f"{path}.{key}", depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{path} is of type {type(value).__name__}"
