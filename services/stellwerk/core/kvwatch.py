"""Keeping a few KV keys in memory through a watch (cancel markers, breaker records), so the hot
path asks a dict or a set instead of KV (invariant 5).

A watch's first pass delivers every key there is, then an end marker; after that each change.
A broken watch (NATS away) is made anew, and so is one asked to (``renew``, after a reconnect:
updates may have been missed) or older than ``RENEW_AFTER`` — each new first pass also tells
which keys were removed while nobody watched (``first_pass`` gets the keys it saw).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
from nats.js.kv import KeyValue

from stellwerk.core.lifecycle import cancel_requested

__all__ = ["POLL", "RENEW_AFTER", "follow_keys"]

logger = logging.getLogger(__name__)

POLL = 5.0
"""Seconds a watch waits for an update before checking that it still stands."""
RENEW_AFTER = 60.0
"""A watch is made anew this often even when nothing seemed wrong."""


async def follow_keys(
    kv: KeyValue,
    key_filter: str,
    *,
    what: str,
    renew: asyncio.Event,
    put: Callable[[str, bytes], bool],
    removed: Callable[[str], None],
    first_pass: Callable[[set[str]], None],
) -> None:
    """Follow the keys of ``kv`` matching ``key_filter`` until cancelled: ``put(key, value)``
    for each value (returning whether it was taken: only taken keys count as seen),
    ``removed(key)`` for each deletion, and ``first_pass(seen keys)`` at the end of each first
    pass. ``what`` names the keys in the log when the watch cannot be made."""
    while not cancel_requested():
        try:
            watcher = await kv.watch(key_filter)
        except Exception as exc:  # NATS away: try again
            logger.warning("cannot watch %s (%s); retrying", what, exc)
            await asyncio.sleep(1.0)
            continue
        renew.clear()
        try:
            await _follow(watcher, renew, put, removed, first_pass)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


async def _follow(
    watcher: KeyValue.KeyWatcher,
    renew: asyncio.Event,
    put: Callable[[str, bytes], bool],
    removed: Callable[[str], None],
    first_pass: Callable[[set[str]], None],
) -> None:
    seen: set[str] | None = set()  # keys of the first pass (until its end marker)
    loop = asyncio.get_running_loop()
    ends = loop.time() + RENEW_AFTER
    while not renew.is_set() and not cancel_requested() and loop.time() < ends:
        try:
            entry = await watcher.updates(timeout=POLL)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        if entry is None:  # the end of the first pass
            if seen is not None:
                first_pass(seen)
            seen = None
            continue
        if not isinstance(entry, KeyValue.Entry):  # the watcher was stopped
            return
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            removed(entry.key)
            continue
        if put(entry.key, entry.value) and seen is not None:
            seen.add(entry.key)
