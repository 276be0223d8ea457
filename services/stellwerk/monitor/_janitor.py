"""Removing what must not grow without bound: finished runs past their retention, the parts of
submits that crashed before their commit point, executor registrations long unseen, and the
resolution retry counts of resolvers that are gone (folded into one, ``core/retry_counts.py``)."""

from __future__ import annotations

import json
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from stellwerk.core import names
from stellwerk.core.breakers import breaker_key, run_scope
from stellwerk.core.kvscan import list_keys, remove, snapshot
from stellwerk.core.records import ExecutorRecord, RunRecord, RunState
from stellwerk.core.retry_counts import fold_stale_counts
from stellwerk.core.settings import Settings

__all__ = ["Janitor"]

logger = logging.getLogger(__name__)


class Janitor:
    """One sweep removes every run whose end is older than the retention. Every step is
    idempotent, so several monitors may sweep at once."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        runs: KeyValue,
        tasks: KeyValue,
        executors: KeyValue,
        settings: Settings,
        checkpoints: KeyValue | None = None,
    ) -> None:
        self._checkpoints = checkpoints
        self._js = js
        self._runs = runs
        self._tasks = tasks
        self._executors = executors
        self._settings = settings

    async def sweep(self, *, now: float | None = None) -> int:
        """Run one sweep; returns the number of runs removed."""
        now = time.time() if now is None else now
        removed = 0
        for key in await list_keys(self._runs, "fin.>"):
            _, end, run_id = key.split(".", 2)
            if int(end) + self._settings.retention <= now:
                if await self._running(run_id):  # restarted: the index outlived its end
                    await remove(self._runs, key)
                    continue
                await self._remove_run(run_id)
                await remove(self._runs, key)
                removed += 1
        for key, data in (await snapshot(self._runs, "staging.*")).items():
            run_id = key.split(".", 1)[1]
            since = float(json.loads(data).get("since", 0))
            if since + self._settings.staging_grace <= now:
                if await self._has_header(run_id):
                    await remove(self._runs, key)  # committed; only the marker was left behind
                    continue
                logger.info("removing parts of submit %s that never committed", run_id)
                await self._remove_run(run_id)
                removed += 1
        for key, data in (await snapshot(self._executors, ">")).items():
            record = ExecutorRecord.from_bytes(data)
            if record.last_seen + self._settings.retention <= now:
                await remove(self._executors, key)
        await fold_stale_counts(self._runs, now=now)
        return removed

    async def _running(self, run_id: str) -> bool:
        """Whether the run is running again (a RetryRun or restore after this end)."""
        try:
            entry = await self._runs.get(names.run_key(run_id))
        except KeyNotFoundError:
            return False
        running = entry.value is not None and RunRecord.from_bytes(entry.value).state
        return running is RunState.RUNNING

    async def _has_header(self, run_id: str) -> bool:
        return bool(await list_keys(self._runs, names.run_key(run_id)))

    async def _remove_run(self, run_id: str) -> None:
        header_keys = await list_keys(self._runs, names.run_key(run_id))
        request_key = ""
        if header_keys:
            entry = await self._runs.get(names.run_key(run_id))
            if entry.value:
                request_key = RunRecord.from_bytes(entry.value).request_key
        await remove(self._tasks, names.task_prefix(run_id))
        if self._checkpoints is not None:  # before the header: a cut-short sweep finds them
            await remove(self._checkpoints, names.run_checkpoints_filter(run_id))
        await self._js.purge_stream(names.EVENTS_STREAM, subject=names.run_events_filter(run_id))
        # Its large results and parameters, with whatever a crashed executor left there.
        await self._js.purge_stream(names.BLOBS_STREAM, subject=names.run_blobs_filter(run_id))
        # The header goes after the tasks and outcomes, the staging marker last: a sweep cut
        # short by a crash still finds the run through whatever is left.
        for key in (
            request_key,
            names.order_key(run_id),
            names.cancel_key(run_id),
            names.restart_key(run_id),
            breaker_key(run_scope(run_id)),  # left behind when the run ended with it open
            names.run_key(run_id),
            names.staging_key(run_id),
        ):
            if key:
                await remove(self._runs, key)
