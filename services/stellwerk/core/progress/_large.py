"""Large values on the resolver's side: results stored out of line (``core/blobs.py``) that a
dependent's parameters refer to, and parameters too large for one dispatch message.

Decided so: the resolver substitutes references as always, fetching a stored result when a
dependent needs its value (whole or a path into it: ``${t.result.field}`` needs the value, and
one rule for both is simpler than a marker the executor expands). When the substituted
parameters do not fit in one dispatch message, they are stored too (kind ``p``, under the
dependent's attempt) and the dispatch carries their reference; the executor fetches them before
running the handler. Both are bounded by ``STELLWERK_MAX_RESULT_BYTES``. The cost falls on
large values only: nothing changes for a hop whose values fit in a message.

Fetched values are kept in a small cache (a fan-out of dependents of one large result fetches
and parses it once): it only saves reads, since a stored text never changes under its name.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from stellwerk.core.blobs import PARAMS, BlobKey, BlobStore, LargeResult, StoredText
from stellwerk.core.errors import NonRetryableError
from stellwerk.core.limits import TooLargeError, clip_error
from stellwerk.core.progress._outcome import Outcome
from stellwerk.core.records import TaskRecord

__all__ = ["LargeValues"]

logger = logging.getLogger(__name__)

_CACHE_BYTES = 64 * 1024 * 1024  # parsed values kept, counted by their JSON text's size


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON")


class LargeValues:
    """Fetches stored results for dependents and stores parameters too large to send."""

    def __init__(self, blobs: BlobStore, *, max_bytes: int) -> None:
        self.blobs = blobs
        self.max_bytes = max_bytes
        """The deployment's cap on a stored text (``STELLWERK_MAX_RESULT_BYTES``)."""
        self._cache: OrderedDict[tuple[BlobKey, str], tuple[asyncio.Future[Any], int]] = (
            OrderedDict()
        )
        self._cached_bytes = 0

    async def value(self, large: LargeResult) -> Any:
        """The value of a stored result (fetched, checked against its digest, parsed).
        ``NonRetryableError`` naming the task when it cannot be read (removed, forged)."""
        key = (large.key, large.ref.sha256)
        entry = self._cache.get(key)
        if entry is None:
            entry = (asyncio.ensure_future(self._fetch(large)), large.ref.size)
            self._cache[key] = entry
            self._cached_bytes += large.ref.size
            while self._cached_bytes > _CACHE_BYTES and len(self._cache) > 1:
                _, (_, size) = self._cache.popitem(last=False)
                self._cached_bytes -= size
        else:
            self._cache.move_to_end(key)
        try:
            return await asyncio.shield(entry[0])
        except Exception:
            if self._cache.get(key) is entry:  # a failed read is not kept: NATS may come back
                del self._cache[key]
                self._cached_bytes -= large.ref.size
            raise

    async def _fetch(self, large: LargeResult) -> Any:
        text = await self.blobs.get(large.key, large.ref)
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise NonRetryableError(
                f"the stored result of task {large.key.task_id!r} is not JSON: {exc}"
            ) from None

    async def confirmed(self, outcomes: list[Outcome]) -> list[Outcome]:
        """``outcomes``, each success whose stored result is not there (a forged event: an
        executor stores a result before it reports it) turned into its task's failure saying
        so — in place, so callers that track outcomes by identity still find them. One lookup
        per stored result; nothing for the others."""
        for outcome in outcomes:
            large = outcome.result
            if not (outcome.succeeded and isinstance(large, LargeResult)):
                continue
            if await self.blobs.exists(large.key, large.ref):
                continue
            logger.warning(
                "outcome of %s/%s refers to a stored result that is not there",
                outcome.run_id,
                outcome.task_id,
            )
            outcome.succeeded, outcome.retryable, outcome.result = False, False, None
            outcome.error = clip_error(
                f"the outcome refers to a stored result of {large.ref.size:,} bytes (sha256 "
                f"{large.ref.sha256[:12]}…) that is not stored"
            )
        return outcomes

    async def store_params(self, task: TaskRecord, text: str) -> StoredText:
        """Store the substituted parameters of ``task``'s current attempt (too large for its
        dispatch); ``TooLargeError`` naming the cap beyond ``max_bytes``."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise TooLargeError(
                f"the parameters of task {task.id!r} with the results they refer to are "
                f"{size:,} bytes; this deployment passes at most {self.max_bytes:,} bytes "
                "(STELLWERK_MAX_RESULT_BYTES)"
            )
        try:
            return await self.blobs.put(BlobKey(task.run_id, PARAMS, task.id, task.attempt), text)
        except UnicodeEncodeError as exc:
            raise TooLargeError(
                f"the parameters of task {task.id!r} cannot be stored: {exc}"
            ) from None
