"""Accepting a workflow: validate it, write its run with a single commit point, dispatch roots.

The write order is what makes a crash or refusal half way harmless:
``req.<hash>`` (idempotency) -> ``staging.<run>`` marker -> task documents -> ``order.<run>`` ->
``run.<run>`` header (the commit point) -> staging marker removed -> root dispatches.
Readers only see runs with a header; the janitor removes the parts of any run whose staging
marker outlived the grace period without a header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

import nats.errors
import nats.js.errors as jserr
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from stellwerk.core import names, tracing
from stellwerk.core.errors import (
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
    clip,
    shorten,
)
from stellwerk.core.kvscan import remove, snapshot
from stellwerk.core.model import MAX_ID_LENGTH, WorkflowSpec, load_workflow, read_document
from stellwerk.core.progress import Dispatcher, resolve_params
from stellwerk.core.publish import NATS_FAILURES
from stellwerk.core.records import ExecutorRecord, RunRecord, TaskRecord, TaskState, dumps
from stellwerk.core.settings import Settings
from stellwerk.core.store import DocumentStore
from stellwerk.resolver._documents import build_run_documents, new_run_id
from stellwerk.resolver._sizes import size_problems

__all__ = ["Submitter"]

logger = logging.getLogger(__name__)

_CHUNK = 2000
_SPEC_CACHE = 64
_SPEC_CACHE_MAX_BYTES = 256 * 1024
_METHODS_TTL = 2.0
_METHODS_LISTED = 12


def method_problems(tasks: list[tuple[str, Any]], known: set[str]) -> list[Problem]:
    """A problem per task whose method no executor registered, listing (some of) the known
    ones; the listing is bounded so that 50 such tasks still make a short error."""
    names_ = sorted(known)
    listing = ", ".join(names_[:_METHODS_LISTED]) or "none (no executor has registered yet)"
    if len(names_) > _METHODS_LISTED:
        listing += f" and {len(names_) - _METHODS_LISTED} more"
    return [
        Problem(
            clip(label, MAX_ID_LENGTH),
            "method",
            f"unknown method {shorten(method)}: no executor registered it; known methods: "
            f"{listing} (submit with allow_unregistered_methods for workers that start later)",
        )
        for label, method in tasks
        if isinstance(method, str) and method and method not in known
    ]


def raw_tasks(source: str | Mapping[str, Any], fmt: str | None) -> list[tuple[str, Any]]:
    """(label, method) of each task of a document that failed to load — best effort, so one
    refusal can list unknown methods beside the structural problems."""
    doc: Any = source
    if isinstance(source, str):
        try:
            doc = read_document(source, cast(Any, fmt))
        except WorkflowInvalidError:
            return []
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tasks"), list):
        return []
    found = []
    for position, task in enumerate(doc["tasks"]):
        if isinstance(task, Mapping):
            label = task.get("id") or task.get("name") or f"#{position}"
            found.append((str(label), task.get("method")))
    return found


class Submitter:
    """Validates and writes new runs."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        runs_kv: KeyValue,
        executors_kv: KeyValue,
        tasks: DocumentStore[TaskRecord],
        runs: DocumentStore[RunRecord],
        dispatcher: Dispatcher,
        settings: Settings,
    ) -> None:
        self._nc = nc
        self._runs_kv = runs_kv
        self._executors_kv = executors_kv
        self._tasks = tasks
        self._runs = runs
        self._dispatcher = dispatcher
        self._settings = settings
        self._methods: set[str] = set()
        self._specs: OrderedDict[tuple[bytes, str], WorkflowSpec] = OrderedDict()
        self._methods_read_at = -_METHODS_TTL

    async def known_methods(self, *, wanted: set[str] | None = None) -> set[str]:
        """Every method some executor has registered.

        Read at most once per ``_METHODS_TTL`` (a scan per submit would cost a consumer each);
        re-read at once when a wanted method is missing, so a just-started executor counts.
        """
        now = time.monotonic()
        fresh = now - self._methods_read_at < _METHODS_TTL
        if fresh and (wanted is None or wanted <= self._methods):
            return self._methods
        methods: set[str] = set()
        for data in (await snapshot(self._executors_kv, ">")).values():
            try:
                methods.update(ExecutorRecord.from_bytes(data).methods)
            except (StellwerkError, ValueError, TypeError, KeyError):
                logger.warning("ignoring an unreadable executor registration")
        self._methods, self._methods_read_at = methods, now
        return methods

    async def validate(
        self,
        source: str | Mapping[str, Any],
        *,
        document_format: str | None,
        allow_unregistered: bool,
    ) -> WorkflowSpec:
        """Load and fully validate; raises ``WorkflowInvalidError`` listing every problem.

        Documents submitted again (the same text, say a workflow file run over and over) are
        parsed once: the spec of a valid document is kept (``_SPEC_CACHE`` entries, documents
        up to ``_SPEC_CACHE_MAX_BYTES``). Specs are read-only, so runs can share one; the method
        check against the executors' registrations still runs on every submit.
        """
        fmt: Any = document_format or None
        cache_key: tuple[bytes, str] | None = None
        if isinstance(source, str) and len(source) <= _SPEC_CACHE_MAX_BYTES:
            cache_key = (hashlib.sha256(source.encode()).digest(), document_format or "")
            cached = self._specs.get(cache_key)
            if cached is not None:
                self._specs.move_to_end(cache_key)
                await self._check_methods(cached, allow_unregistered)
                return cached
        try:
            spec = load_workflow(source, format=fmt)
        except WorkflowInvalidError as exc:
            raw = raw_tasks(source, fmt)
            known = None if allow_unregistered else await self.known_methods()
            extra = method_problems(raw, known) if known is not None else []
            raise WorkflowInvalidError(problems=[*exc.problems, *extra]) from None
        await self._check_methods(spec, allow_unregistered)
        self._check_sizes(spec)
        if cache_key is not None:
            self._specs[cache_key] = spec
            if len(self._specs) > _SPEC_CACHE:
                self._specs.popitem(last=False)
        return spec

    async def _check_methods(self, spec: WorkflowSpec, allow_unregistered: bool) -> None:
        if allow_unregistered:
            return
        known = await self.known_methods(wanted={t.method for t in spec.tasks})
        problems = method_problems([(t.id, t.method) for t in spec.tasks], known)
        if problems:
            raise WorkflowInvalidError(problems=problems)

    def _check_sizes(self, spec: WorkflowSpec) -> None:
        """Refuse a run any of whose records would exceed the server's message size: found out
        half way through the writes, that would be a partial run and an error that invites a
        retry (see ``_sizes``)."""
        problems = size_problems(spec, self._dispatcher.limits)
        if problems:
            raise WorkflowInvalidError(problems=problems)

    async def submit(self, spec: WorkflowSpec, *, request_id: str = "") -> RunRecord:
        """Write a new run of ``spec`` and dispatch its roots; a retried ``request_id`` returns the
        run the first call created."""
        request_key = names.request_key(request_id) if request_id else ""
        run_id = new_run_id()
        claimed = False
        if request_id:
            existing = await self._claim_request(request_key, run_id)
            claimed = existing is None
            if existing is not None:
                run_id = existing
                header = await self._runs.get(names.run_key(run_id), fresh=True)
                if header is not None:
                    await self._redispatch_roots(header.value)
                    return header.value
        tracing.note_run(run_id)
        docs = build_run_documents(
            spec,
            run_id=run_id,
            request_id=request_id,
            request_key=request_key,
            trace=tracing.traceparent(),  # the run's trace, for dispatches made later
        )
        try:
            await self._runs_kv.put(names.staging_key(run_id), dumps({"since": time.time()}))
            for start in range(0, len(docs.tasks), _CHUNK):
                chunk = docs.tasks[start : start + _CHUNK]
                await self._tasks.create_many(
                    self._nc, [(names.task_key(run_id, t.id), t) for t in chunk]
                )
            await self._runs_kv.put(names.order_key(run_id), dumps(docs.order))
            created = await self._runs.create(names.run_key(run_id), docs.header)
        except (StellwerkError, *NATS_FAILURES) as exc:
            # A request key this call bound goes too, so a retry starts afresh (one bound by
            # an earlier call stays: that call's run may still be committing).
            await self._abandon(run_id, request_key if claimed else "")
            if isinstance(exc, StellwerkError):
                raise
            if isinstance(exc, nats.errors.MaxPayloadError):  # _check_sizes missed a record:
                raise WorkflowInvalidError(  # retrying cannot help, so not UNAVAILABLE
                    problems=[Problem(None, "document", f"a record of the run is too large: {exc}")]
                ) from exc
            raise UnavailableError(f"could not write run {run_id}: {exc}") from exc
        if created is None:  # a concurrent retry of the same request committed first
            header = await self._runs.get(names.run_key(run_id), fresh=True)
            assert header is not None
            return header.value
        try:
            await remove(self._runs_kv, names.staging_key(run_id))
        except Exception:  # the janitor only purges runs without a header, so this is cosmetic
            logger.debug("could not remove staging marker of %s", run_id)
        await self._dispatch_roots(docs.tasks)
        return created.value

    async def _claim_request(self, request_key: str, run_id: str) -> str | None:
        """Bind ``request_key`` to ``run_id``; returns the run it was already bound to, if any."""
        try:
            await self._runs_kv.create(request_key, run_id.encode())
        except jserr.KeyWrongLastSequenceError:
            entry = await self._runs_kv.get(request_key)
            if entry.value:
                return entry.value.decode()
        return None

    async def _dispatch_roots(self, tasks: list[TaskRecord]) -> None:
        ready: list[tuple[TaskRecord, bytes]] = []
        for task in tasks:
            if task.state is TaskState.DISPATCHED:
                params = resolve_params(task, lambda _tid: None)
                ready.append((task, self._dispatcher.encode(task, params)))
        await self._dispatcher.publish_many(ready)

    async def _redispatch_roots(self, run: RunRecord) -> None:
        """A retried submit re-sends root dispatches a crash may have cut short — only while the
        dedup window still drops them if they were sent (invariant 2)."""
        if time.time() - run.created_at > self._settings.dedup_window / 2:
            return
        order_entry = await self._runs_kv.get(names.order_key(run.id))
        order = json.loads(order_entry.value or b"[]")
        found = await asyncio.gather(*(self._tasks.get(names.task_key(run.id, t)) for t in order))
        roots = [
            d.value
            for d in found
            if d is not None
            and not d.value.dependencies
            and d.value.state is TaskState.DISPATCHED
            and d.value.generation == 0
        ]
        await self._dispatch_roots(roots)

    async def _abandon(self, run_id: str, request_key: str = "") -> None:
        """Best-effort removal of a run that failed before its commit point."""
        try:
            if request_key:
                await remove(self._runs_kv, request_key)
            await remove(self._tasks.kv, names.task_prefix(run_id))
            await remove(self._runs_kv, names.order_key(run_id))
            await remove(self._runs_kv, names.staging_key(run_id))
        except Exception:  # the janitor finishes the job from the staging marker
            logger.warning("could not clean up abandoned run %s; the janitor will", run_id)
